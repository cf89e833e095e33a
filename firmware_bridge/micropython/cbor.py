"""The deterministic CBOR (RFC 8949) subset of records and messages: encoder and bounded decoder.

Supported values, and what they encode as (major type, then the shortest head):

    int          0 (unsigned) or 1 (negative), -2**64 .. 2**64 - 1
    bytes        2 (byte string)
    str          3 (text string, UTF-8)
    list, tuple  4 (array)
    dict         5 (map): keys sorted by (length, bytes) of their encodings, as
                 the host's ``cbor2.dumps(..., canonical=True)`` sorts them; for the
                 text keys of metadata that is also RFC 8949 §4.2.1's order
    Tag(18, v)   6 (tag 18, COSE_Sign1); no other tag
    False, True, None   F4, F5, F6

Heads are always the shortest form: a value < 24 in the head byte itself, then 1, 2,
4 or 8 following big-endian bytes (18 = 0x12, 24 = 18 18, 500 = 19 01 F4). No
indefinite lengths. Floats are not supported: MicroPython on ESP32 and RP2040 has
single-precision floats, which cannot reproduce the host's doubles, so a node's
metadata holds ints, strings, booleans, null, lists and objects only.

``decode`` accepts only what ``encode`` would produce, so a value it accepts re-encodes
to the same bytes (what the host checks by re-encoding): a non-shortest head, an
indefinite length, unsorted or duplicate map keys, invalid UTF-8 (overlong forms,
surrogates, beyond U+10FFFF), another tag, a float, an undefined or other simple
value, nesting deeper than ``max_depth``, input longer than ``max_bytes``, a length
beyond the end, or bytes after the value raise ``CBORError`` naming the offset.
"""

#: Defaults of ``decode``: a signed record is at most 4096 bytes, and a card nests
#: array > metadata map > 16 levels of metadata (agent/core/limits.py).
MAX_BYTES = 4096
MAX_DEPTH = 18


class CBORError(ValueError):
    """Bytes that are not deterministic CBOR of the subset, or a value outside it."""


class Tag:
    """A tagged value; only tag 18 (COSE_Sign1) is in the subset."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


# ---------------------------------------------------------------- encoding


def head(major, value):
    """The shortest head of a major type (0..7) and argument (0 .. 2**64 - 1)."""
    top = major << 5
    if value < 24:
        return bytes((top | value,))
    if value < 0x100:
        return bytes((top | 24, value))
    if value < 0x10000:
        return bytes((top | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((top | 26,)) + value.to_bytes(4, "big")
    if value < 0x10000000000000000:
        return bytes((top | 27,)) + value.to_bytes(8, "big")
    raise CBORError("integer %d does not fit 64 bits" % value)


def _map_key(encoded):
    return (len(encoded), encoded)


def _encode(value, out):
    if value is None:
        out.append(b"\xf6")
    elif value is False:
        out.append(b"\xf4")
    elif value is True:
        out.append(b"\xf5")
    elif isinstance(value, int):
        out.append(head(0, value) if value >= 0 else head(1, -1 - value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append(head(2, len(value)))
        out.append(bytes(value))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(head(3, len(data)))
        out.append(data)
    elif isinstance(value, (list, tuple)):
        out.append(head(4, len(value)))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        items = []
        for k, v in value.items():
            items.append((encode(k), v))
        items.sort(key=lambda kv: _map_key(kv[0]))
        out.append(head(5, len(items)))
        for i, (k, v) in enumerate(items):
            if i and items[i - 1][0] == k:
                raise CBORError("map has two keys that encode the same")
            out.append(k)
            _encode(v, out)
    elif isinstance(value, Tag):
        if value.tag != 18:
            raise CBORError("tag %d is not in the subset (only 18, COSE_Sign1)" % value.tag)
        out.append(b"\xd2")
        _encode(value.value, out)
    elif isinstance(value, float):
        raise CBORError("floats are not supported on the node (use an int or a string)")
    else:
        raise CBORError("cannot encode a %s" % type(value).__name__)


def encode(value):
    """The deterministic CBOR bytes of ``value``; raises CBORError outside the subset."""
    out = []
    _encode(value, out)
    return b"".join(out)


# ---------------------------------------------------------------- decoding


def check_utf8(data, start, end):
    """Raise CBORError unless data[start:end] is well-formed UTF-8 (RFC 3629)."""
    i = start
    while i < end:
        c = data[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            n = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF  # no overlong forms, no surrogates
        elif 0xF0 <= c <= 0xF4:
            n = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF  # nothing beyond U+10FFFF
        else:
            raise CBORError("invalid UTF-8 at offset %d" % i)
        if i + n >= end:
            raise CBORError("truncated UTF-8 at offset %d" % i)
        if not lo <= data[i + 1] <= hi:
            raise CBORError("invalid UTF-8 at offset %d" % i)
        for j in range(i + 2, i + n + 1):
            if not 0x80 <= data[j] <= 0xBF:
                raise CBORError("invalid UTF-8 at offset %d" % i)
        i += n + 1


class _Decoder:
    def __init__(self, data, max_depth):
        self.data = data
        self.max_depth = max_depth

    def _argument(self, i):
        """(major, argument, offset after the head) of the head at i, shortest form only."""
        data = self.data
        if i >= len(data):
            raise CBORError("truncated at offset %d" % i)
        b = data[i]
        major = b >> 5
        info = b & 31
        if info < 24:
            return major, info, i + 1
        if info > 27:
            if info == 31:
                raise CBORError("indefinite length at offset %d (not deterministic)" % i)
            raise CBORError("reserved head 0x%02x at offset %d" % (b, i))
        if major == 7:
            return major, info, i + 1  # floats and simple values: judged by the caller
        size = 1 << (info - 24)
        end = i + 1 + size
        if end > len(data):
            raise CBORError("truncated head at offset %d" % i)
        value = int.from_bytes(data[i + 1 : end], "big")
        if value < (24 if size == 1 else 1 << (4 * size)):
            raise CBORError("non-shortest head at offset %d (not deterministic)" % i)
        return major, value, end

    def value(self, i, depth):
        """(value, offset after it) of the item at i."""
        data = self.data
        start = i
        major, arg, i = self._argument(i)
        if major == 0:
            return arg, i
        if major == 1:
            return -1 - arg, i
        if major in (2, 3):
            end = i + arg
            if end > len(data):
                raise CBORError("string at offset %d runs past the end" % start)
            if major == 2:
                return bytes(data[i:end]), end
            check_utf8(data, i, end)
            return bytes(data[i:end]).decode("utf-8"), end
        if major in (4, 5):
            if depth >= self.max_depth:
                raise CBORError("nesting deeper than %d at offset %d" % (self.max_depth, start))
            if arg * (2 if major == 5 else 1) > len(data) - i:
                raise CBORError("container at offset %d claims more items than bytes left" % start)
            if major == 4:
                items = []
                for _ in range(arg):
                    item, i = self.value(i, depth + 1)
                    items.append(item)
                return items, i
            result = {}
            previous = None
            for _ in range(arg):
                key_start = i
                key, i = self.value(i, depth + 1)
                if not isinstance(key, (int, bytes, str)) or key is True or key is False:
                    raise CBORError("map key at offset %d is not an int, bytes or text" % key_start)
                encoded = _map_key(data[key_start:i])
                if previous is not None and not previous < encoded:
                    raise CBORError("map keys at offset %d are unsorted or repeated" % key_start)
                previous = encoded
                item, i = self.value(i, depth + 1)
                result[key] = item
            return result, i
        if major == 6:
            if arg != 18:
                raise CBORError("tag %d at offset %d is not in the subset (only 18)" % (arg, start))
            if depth >= self.max_depth:
                raise CBORError("nesting deeper than %d at offset %d" % (self.max_depth, start))
            item, i = self.value(i, depth + 1)
            return Tag(18, item), i
        # major 7
        if arg == 20:
            return False, i
        if arg == 21:
            return True, i
        if arg == 22:
            return None, i
        if arg in (25, 26, 27):
            raise CBORError("float at offset %d: floats are not supported on the node" % start)
        raise CBORError("simple value at offset %d is not false, true or null" % start)


def decode(data, max_depth=MAX_DEPTH, max_bytes=MAX_BYTES):
    """The one value ``data`` holds; raises CBORError for anything ``encode`` would not produce."""
    if len(data) > max_bytes:
        raise CBORError("%d bytes exceeds the %d-byte limit" % (len(data), max_bytes))
    value, end = _Decoder(bytes(data), max_depth).value(0, 0)
    if end != len(data):
        raise CBORError("%d bytes after the value at offset %d" % (len(data) - end, end))
    return value
