"""Ed25519 (RFC 8032 §5.1): keys from a 32-byte seed, signing and verification.

Byte layout (RFC 8032): a seed is 32 random bytes; a public key is the 32-byte
encoding of the point A = [a]B (y little-endian, the sign of x in the top bit); a
signature is 64 bytes, R (a point encoding) then S (a little-endian scalar < L).
Signatures are deterministic, so they are byte-identical to every other RFC 8032
implementation's (``cryptography``, libsodium) for the same seed and message.

    key = SigningKey(seed)             # hashes the seed once
    key.public_key                     # 32 bytes
    sig = key.sign(message)            # 64 bytes
    verify(key.public_key, message, sig)   # True / False, never raises on bad input

Arithmetic is on plain Python ints (MicroPython's big ints) modulo p = 2**255 - 19,
with points in extended coordinates (X:Y:Z:T). [s]B, the costly part of signing,
uses a fixed-base table: for j = 0..31 and k = 1..8 the point k * 256**j * B in the
"affine Niels" form (y+x, y-x, 2dxy), 256 points of three 32-byte little-endian
field elements packed into one 24,576-byte ``bytes`` (built on first use, in
``base_table()``; ``set_base_table(blob)`` installs one saved to flash, so a node
need not rebuild it after each boot). With it [s]B is 64 additions and 4 doublings
(signed radix-16 digits, as in ref10). Verification adds a variable-base [k]A
(4-bit signed window: 252 doublings, 64 additions).

Verification is cofactorless, like libsodium's (the host's verifier): it accepts
exactly when S < L, A and R decode to points not of small order (order dividing 8),
and encode([S]B - [k]A) == R, with k = SHA-512(R || A || M) mod L; anything else,
including a key or R that does not decode, is False, not an exception.

Not constant-time: big-int arithmetic in Python never is. A node signs its own
records a few times an hour; do not expose it as a signing oracle.

Where a native Ed25519 is importable it is used instead (``NATIVE``): on CPython
PyNaCl's libsodium bindings (the virtual nodes of the tests run under CPython).
"""

from sha512 import sha512

try:
    from nacl import bindings as _nacl
except ImportError:
    _nacl = None

NATIVE = _nacl is not None

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
D2 = (2 * D) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
_BY = (4 * pow(5, P - 2, P)) % P  # y of the base point B


class Ed25519Error(ValueError):
    """A key or seed of the wrong shape (signing); verification returns False instead."""


# ---------------------------------------------------------------- points


def _recover_x(y, sign):
    """x with the given sign bit on the curve at y, or None (RFC 8032 §5.1.3)."""
    if y >= P:
        return None
    y2 = y * y % P
    u = (y2 - 1) % P
    v = (D * y2 + 1) % P
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vx2 = v * x % P * x % P
    if vx2 != u:
        if vx2 != (P - u) % P:
            return None
        x = x * SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def _decode(data):
    """An encoded point as extended coordinates, or None."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def _encode(point):
    x, y, z, _ = point
    zi = pow(z, P - 2, P)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    s = x1 + y1
    e = (h - s * s) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _add(p, q):
    """p + q, both in extended coordinates."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 % P * t2 % P
    d = 2 * z1 * z2 % P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _add_niels(p, ypx, ymx, xy2d):
    """p + q where q is affine, given as (y+x, y-x, 2dxy)."""
    x1, y1, z1, t1 = p
    a = (y1 - x1) * ymx % P
    b = (y1 + x1) * ypx % P
    c = t1 * xy2d % P
    d = 2 * z1
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


_IDENTITY = (0, 1, 1, 0)
_B = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % P)


def _small_order(point):
    """True for the eight points of order dividing 8 ([8]point is the identity: x == 0)."""
    return _double(_double(_double(point)))[0] == 0


def _radix16(scalar):
    """64 signed digits e[i] in -8..8 with scalar = sum(e[i] * 16**i); scalar < 2**255."""
    e = [(scalar >> (4 * i)) & 15 for i in range(64)]
    carry = 0
    for i in range(63):
        e[i] += carry
        carry = (e[i] + 8) >> 4
        e[i] -= carry << 4
    e[63] += carry
    return e


# ---------------------------------------------------------------- fixed-base table

_TABLE_BYTES = 32 * 8 * 96
_table = None


def _build_table():
    points = []
    base = _B
    for _ in range(32):
        multiple = base
        for k in range(8):
            points.append(multiple)
            if k < 7:
                multiple = _add(multiple, base)
        for _ in range(8):
            base = _double(base)
    # Affine coordinates with one inversion for all 256 points (Montgomery's trick).
    prefix = []
    acc = 1
    for pt in points:
        prefix.append(acc)
        acc = acc * pt[2] % P
    inv = pow(acc, P - 2, P)
    out = bytearray(_TABLE_BYTES)
    for i in range(len(points) - 1, -1, -1):
        x, y, z, _ = points[i]
        zi = inv * prefix[i] % P
        inv = inv * z % P
        x = x * zi % P
        y = y * zi % P
        o = 96 * i
        out[o : o + 32] = ((y + x) % P).to_bytes(32, "little")
        out[o + 32 : o + 64] = ((y - x) % P).to_bytes(32, "little")
        out[o + 64 : o + 96] = (x * y % P * D2 % P).to_bytes(32, "little")
    return bytes(out)


def base_table():
    """The fixed-base table (24,576 bytes), built on first use; save it to skip the build."""
    global _table
    if _table is None:
        _table = _build_table()
    return _table


def set_base_table(blob):
    """Install a table saved from ``base_table()``; raises Ed25519Error if it is not one."""
    global _table
    blob = bytes(blob)
    if len(blob) != _TABLE_BYTES:
        raise Ed25519Error("a base table is %d bytes, got %d" % (_TABLE_BYTES, len(blob)))
    x, y = _B[0], _B[1]
    first = ((y + x) % P).to_bytes(32, "little") + ((y - x) % P).to_bytes(32, "little")
    if blob[:64] != first:
        raise Ed25519Error("not an Ed25519 base table (its first point is not B)")
    _table = blob


def _base_mul(scalar):
    """[scalar]B for 0 <= scalar < 2**255, from the fixed-base table."""
    table = base_table()
    e = _radix16(scalar)
    acc = _IDENTITY
    for half in (1, 0):
        if half == 0:
            for _ in range(4):
                acc = _double(acc)
        for j in range(32):
            digit = e[2 * j + half]
            if digit == 0:
                continue
            o = 96 * (8 * j + abs(digit) - 1)
            ypx = int.from_bytes(table[o : o + 32], "little")
            ymx = int.from_bytes(table[o + 32 : o + 64], "little")
            xy2d = int.from_bytes(table[o + 64 : o + 96], "little")
            if digit < 0:
                ypx, ymx, xy2d = ymx, ypx, P - xy2d
            acc = _add_niels(acc, ypx, ymx, xy2d)
    return acc


def _mul(scalar, point):
    """[scalar]point for 0 <= scalar < 2**255 (4-bit signed window)."""
    multiples = [point]
    for _ in range(7):
        multiples.append(_add(multiples[-1], point))
    acc = _IDENTITY
    e = _radix16(scalar)
    for i in range(63, -1, -1):
        acc = _double(_double(_double(_double(acc))))
        digit = e[i]
        if digit > 0:
            acc = _add(acc, multiples[digit - 1])
        elif digit < 0:
            x, y, z, t = multiples[-digit - 1]
            acc = _add(acc, (P - x, y, z, P - t))
    return acc


# ---------------------------------------------------------------- keys, signing, verifying


class SigningKey:
    """An Ed25519 private key from its 32-byte seed (RFC 8032 §5.1.5)."""

    def __init__(self, seed):
        seed = bytes(seed)
        if len(seed) != 32:
            raise Ed25519Error("an Ed25519 seed is 32 bytes, got %d" % len(seed))
        self._seed = seed
        if _nacl is not None:
            self.public_key, self._sk = _nacl.crypto_sign_seed_keypair(seed)
            return
        h = sha512(seed)
        a = int.from_bytes(h[:32], "little")
        a &= (1 << 254) - 8
        a |= 1 << 254
        self._a = a
        self._prefix = h[32:]
        self.public_key = _encode(_base_mul(a))

    def sign(self, message):
        """The 64-byte signature of ``message`` (RFC 8032 §5.1.6)."""
        message = bytes(message)
        if _nacl is not None:
            return _nacl.crypto_sign(message, self._sk)[:64]
        r = int.from_bytes(sha512(self._prefix + message), "little") % L
        big_r = _encode(_base_mul(r))
        k = int.from_bytes(sha512(big_r + self.public_key + message), "little") % L
        s = (r + k * self._a) % L
        return big_r + s.to_bytes(32, "little")


def public_key(seed):
    """The 32-byte public key of a 32-byte seed."""
    return SigningKey(seed).public_key


def verify(public, message, signature):
    """True when ``signature`` is a valid signature of ``message`` by ``public`` (RFC 8032 §5.1.7)."""
    public = bytes(public)
    signature = bytes(signature)
    message = bytes(message)
    if len(public) != 32 or len(signature) != 64:
        return False
    if _nacl is not None:
        try:
            _nacl.crypto_sign_open(signature + message, public)
            return True
        except Exception:
            return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    a = _decode(public)
    r = _decode(signature[:32])
    if a is None or r is None or _small_order(a) or _small_order(r):
        return False
    k = int.from_bytes(sha512(signature[:32] + public + message), "little") % L
    x, y, z, t = a
    check = _add(_base_mul(s), _mul(k, (P - x, y, z, P - t)))
    return _encode(check) == signature[:32]
