"""X25519 key agreement (RFC 7748) through libsodium, for the sessions of sealed links.

What it wraps: libsodium's ``crypto_scalarmult_base`` (a private scalar's public
point) and ``crypto_scalarmult`` (the shared secret), through PyNaCl's cffi module
as :mod:`agent.core.ed25519` does. Both clamp the scalar as RFC 7748 §5 says, so a
key pair and a secret are byte for byte what any other X25519 computes (the tests
check RFC 7748 §6.1's vectors). ``crypto_scalarmult`` refuses a result of all
zeros (the remote sent a small-order point), which :func:`shared_secret` raises as
``ValueError``, as ``cryptography``'s ``exchange`` does.

Why not ``cryptography``'s X25519: its key constructors import the OpenSSL backend's
Python bindings on first use (some 1,000 attributes copied into a module, with the
EC and RSA modules behind them), about 0.4 MB an agent paid at its first link and
then kept; libsodium is loaded already, for every record's signature.
"""

from __future__ import annotations

from typing import Final

from nacl._sodium import ffi, lib

from agent.core.limits import SESSION_KEY_BYTES

_SCALAR_BYTES: Final = 32
if lib.crypto_scalarmult_bytes() != SESSION_KEY_BYTES or lib.crypto_scalarmult_scalarbytes() != _SCALAR_BYTES:
    raise ImportError("this libsodium's X25519 sizes are not RFC 7748's")


def public_key(private: bytes) -> bytes:
    """The public key of a 32-byte private scalar (clamped as RFC 7748 says)."""
    if len(private) != _SCALAR_BYTES:
        raise ValueError(f"an X25519 private key is {_SCALAR_BYTES} bytes")
    out = ffi.new("unsigned char[]", SESSION_KEY_BYTES)
    if lib.crypto_scalarmult_base(out, private) != 0:
        raise ValueError("libsodium refused the X25519 private key")
    return bytes(ffi.buffer(out))


def shared_secret(private: bytes, remote_public: bytes) -> bytes:
    """X25519(``private``, ``remote_public``); ``ValueError`` if either has the wrong length or the
    secret is all zeros (a small-order remote point agrees no key)."""
    if len(private) != _SCALAR_BYTES or len(remote_public) != SESSION_KEY_BYTES:
        raise ValueError(f"X25519 keys are {SESSION_KEY_BYTES} bytes")
    out = ffi.new("unsigned char[]", SESSION_KEY_BYTES)
    if lib.crypto_scalarmult(out, private, remote_public) != 0:
        raise ValueError("the remote X25519 key is of small order: the shared secret would be all zeros")
    return bytes(ffi.buffer(out))
