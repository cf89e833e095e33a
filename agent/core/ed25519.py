"""Ed25519 signature verification (RFC 8032) through libsodium, the one verifier every agent uses.

What it wraps: libsodium's ``crypto_sign_open`` as bundled with PyNaCl, called
through PyNaCl's own cffi module (``nacl._sodium.lib``) with both output pointers
NULL. libsodium then verifies the detached signature in place and copies nothing:
it is the lowest-overhead call PyNaCl offers (this PyNaCl has no public detached
verify; ``nacl.bindings.crypto_sign_open`` allocates an output buffer, copies the
message and raises on failure, ``nacl.signing.VerifyKey`` adds an object on top).

Why: every record an agent takes in is verified once, so the verifier bounds
ingest. Measured side by side on one core (medians of interleaved batches of
100, ~150-byte messages): OpenSSL through ``cryptography``, key loaded per call,
74.7 µs; libsodium through ``VerifyKey.verify`` 46.3 µs,
``nacl.bindings.crypto_sign_open`` 45.2 µs, this call 44.2 µs. Signing stays with
``cryptography`` (keys on disk and the engine's private key are its objects, and
an agent signs a few records an hour, not thousands a second).

The rules libsodium applies (``crypto_sign_ed25519_verify_detached``, built
without ``ED25519_COMPAT``), all before any curve arithmetic:

* **S must be canonical**: ``S < L`` (the group order). A signature with
  ``S + L`` in place of ``S`` is rejected, which makes signatures non-malleable.
* **R must not be of small order** (the eight points of order 1, 2, 4, 8, in
  any encoding).
* **A, the public key, must be a canonical encoding** (``y < p``) and **not of
  small order**.
* Then the cofactorless equation: ``[S]B - [k]A`` is encoded and compared byte
  for byte with ``R``, so a non-canonically encoded ``R`` never matches.

OpenSSL (``cryptography``) also rejects ``S ≥ L`` and also compares the encoded
``R``, with the same cofactorless equation, so for every honest signature and
every ordinary forgery attempt the two agree. They disagree only on inputs that
a key's own holder crafts or that name a degenerate key: OpenSSL accepts a small-order
(or identity) public key with a matching "signature" (the identity key and
``R = identity, S = 0`` verify for *any* message), and accepts ``R`` = the
identity point with ``S = k·a`` from the real private key. libsodium rejects
both. Since every agent uses this verifier, stricter is safe: all agents reach
the same verdict on every record, and the records our own signer (RFC 8032
deterministic signing in OpenSSL) makes always satisfy these rules. Records
already refuse small-order keys as ``malformed`` before any signature check
(``records.SMALL_ORDER_KEYS``), so the one disagreement a record can hit is a
key holder's deliberately degenerate ``R``: such records are now
``bad_signature`` everywhere.

No fallback to another implementation exists on purpose: two verifiers could
reach different verdicts on the edge cases above, and the mesh relies on every
agent accepting exactly the same records.
"""

from __future__ import annotations

from typing import Final

# The cffi module under nacl.bindings, called directly; nacl.bindings itself is not
# imported (its thirty modules cost an agent 1.1 MB of RSS and nothing here uses them).
from nacl._sodium import ffi, lib

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64

if lib.sodium_init() < 0:  # CPU feature selection; 1 means already done, which is fine
    raise ImportError("libsodium failed to initialise (sodium_init)")

_NULL: Final = ffi.NULL
_open: Final = lib.crypto_sign_open


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    Returns ``False`` (never raises) for a wrong signature, a key or signature of
    the wrong length, a non-canonical S, a small-order or non-canonical R or key.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    signed = signature + message
    status: int = _open(_NULL, _NULL, signed, len(signed), public_key)
    return status == 0


def verify_signed(public_key: bytes, signed: bytes) -> bool:
    """Like :func:`verify` for ``signature ‖ message`` in one byte string (NaCl's signed-message form).

    Callers that build the signed bytes anyway (the COSE Sig_structure) save a copy.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signed) < SIGNATURE_BYTES:
        return False
    status: int = _open(_NULL, _NULL, signed, len(signed), public_key)
    return status == 0
