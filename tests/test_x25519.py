"""X25519 through libsodium: RFC 7748's vectors, the same keys and secrets as OpenSSL, small-order refusal."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.core import x25519

# RFC 7748 §6.1
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_rfc_7748_key_pairs_and_shared_secret() -> None:
    assert x25519.public_key(ALICE_PRIVATE) == ALICE_PUBLIC
    assert x25519.public_key(BOB_PRIVATE) == BOB_PUBLIC
    assert x25519.shared_secret(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    assert x25519.shared_secret(BOB_PRIVATE, ALICE_PUBLIC) == SHARED


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_keys_and_secrets_are_those_openssl_computes(mine: bytes, theirs: bytes) -> None:
    ours, remote = X25519PrivateKey.from_private_bytes(mine), X25519PrivateKey.from_private_bytes(theirs)
    assert x25519.public_key(mine) == ours.public_key().public_bytes_raw()
    remote_public = remote.public_key().public_bytes_raw()
    assert x25519.shared_secret(mine, remote_public) == ours.exchange(remote.public_key())


@pytest.mark.parametrize("point", [bytes(32), b"\x01" + bytes(31)])
def test_a_small_order_point_agrees_no_secret(point: bytes) -> None:
    with pytest.raises(ValueError, match="small order"):
        x25519.shared_secret(ALICE_PRIVATE, point)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_keys_of_the_wrong_length_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        x25519.public_key(bytes(size))
    with pytest.raises(ValueError, match="32 bytes"):
        x25519.shared_secret(ALICE_PRIVATE, bytes(size))
