"""Specification of the Ed25519 verifier (agent.core.ed25519, libsodium through PyNaCl).

It accepts exactly the RFC 8032 signatures, agrees with OpenSSL (``cryptography``)
on every honest signature and every ordinary tampering, accepts everything our
own signer makes, and is stricter than OpenSSL on degenerate inputs: a
non-canonical S, a small-order R and a small-order public key are all refused.
It answers ``False`` for anything it refuses and never raises.
"""

from __future__ import annotations

import hashlib
import random

import nacl.bindings
import nacl.exceptions
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK

from agent.core import cose, ed25519
from agent.core.errors import RecordError
from agent.core.limits import HANDSHAKE_CONTEXT
from agent.core.records import (
    SMALL_ORDER_KEYS,
    decode_record,
    load_public_key,
    make_card,
    open_record,
    sign_record,
    verify_record,
)

#: The order of the Ed25519 base point.
L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = b"\x01" + b"\x00" * 31

#: RFC 8032 §7.1: (secret key, public key, message, signature), TEST 1, 2, 3 and SHA(abc).
RFC8032_VECTORS = {
    "TEST 1": (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    "TEST 2": (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    "TEST 3": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    "TEST SHA(abc)": (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
}


def vector(name: str) -> tuple[bytes, bytes, bytes, bytes]:
    return tuple(bytes.fromhex(part) for part in RFC8032_VECTORS[name])  # type: ignore[return-value]


def key_pair(seed: bytes) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def openssl_verifies(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# ================================================================ RFC 8032


@pytest.mark.parametrize("name", sorted(RFC8032_VECTORS))
def test_the_rfc_8032_vectors_verify(name: str) -> None:
    _, public_key, message, signature = vector(name)

    assert ed25519.verify(public_key, message, signature)
    assert ed25519.verify_signed(public_key, signature + message)


@pytest.mark.parametrize("name", sorted(RFC8032_VECTORS))
def test_our_signer_reproduces_the_rfc_8032_signatures(name: str) -> None:
    secret, public_key, message, signature = vector(name)
    private, derived = key_pair(secret)

    assert derived == public_key
    assert private.sign(message) == signature


@pytest.mark.parametrize("name", sorted(RFC8032_VECTORS))
def test_a_flipped_bit_anywhere_is_refused(name: str) -> None:
    _, public_key, message, signature = vector(name)
    for bit in (0, 7, 100, 8 * 31 + 6):
        assert not ed25519.verify(flip_bit(public_key, bit), message, signature)
    for bit in (0, 7, 8 * 32, 8 * 63 + 7):
        assert not ed25519.verify(public_key, message, flip_bit(signature, bit))
    for bit in (0, 8 * len(message) - 1) if message else ():
        assert not ed25519.verify(public_key, flip_bit(message, bit), signature)
    assert not ed25519.verify(public_key, message + b"\x00", signature)


# ================================================================ agreement with OpenSSL


@QUICK
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300), bit=st.integers(0, 2047))
def test_agrees_with_openssl_on_random_keys_messages_and_corruptions(
    seed: bytes, message: bytes, bit: int
) -> None:
    private, public_key = key_pair(seed)
    signature = private.sign(message)
    assert ed25519.verify(public_key, message, signature) is openssl_verifies(public_key, message, signature)
    assert ed25519.verify(public_key, message, signature)

    corrupted = flip_bit(signature, bit % 512)
    assert ed25519.verify(public_key, message, corrupted) is openssl_verifies(public_key, message, corrupted)
    assert not ed25519.verify(public_key, message, corrupted)


def test_agrees_with_openssl_on_many_random_signatures() -> None:
    rng = random.Random(8032)
    for _ in range(200):
        private, public_key = key_pair(rng.randbytes(32))
        message = rng.randbytes(rng.randrange(0, 200))
        signature = private.sign(message)
        other = rng.randbytes(64)
        for sig in (signature, other):
            assert ed25519.verify(public_key, message, sig) is openssl_verifies(public_key, message, sig)


def test_the_lowest_overhead_call_agrees_with_pynacls_public_one() -> None:
    _, public_key, message, signature = vector("TEST 3")
    assert nacl.bindings.crypto_sign_open(signature + message, public_key) == message
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.bindings.crypto_sign_open(flip_bit(signature, 9) + message, public_key)
    assert ed25519.verify(public_key, message, signature)
    assert not ed25519.verify(public_key, message, flip_bit(signature, 9))


# ================================================================ stricter than OpenSSL


def test_a_non_canonical_s_is_refused() -> None:
    _, public_key, message, signature = vector("TEST 2")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")  # the same S modulo L

    assert not ed25519.verify(public_key, message, malleated)
    assert not openssl_verifies(public_key, message, malleated)  # OpenSSL checks S < L too


def test_a_small_order_public_key_is_refused() -> None:
    # With the identity as key, R = identity and S = 0 satisfy the equation for any
    # message: OpenSSL (which skips the small-order check) accepts it (cryptography 50), libsodium does not.
    for message in (b"", b"anything at all"):
        assert not ed25519.verify(IDENTITY, message, IDENTITY + b"\x00" * 32)
    for key in SMALL_ORDER_KEYS:
        assert not ed25519.verify(key, b"m", key + b"\x00" * 32)


def _clamped_scalar(seed: bytes) -> int:
    digest = bytearray(hashlib.sha512(seed).digest()[:32])
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    return int.from_bytes(digest, "little")


def test_a_small_order_r_crafted_by_the_key_holder_is_refused() -> None:
    # R = identity and S = k·a (k = H(R ‖ A ‖ M)) gives [S]B - [k]A = identity = R, so the
    # cofactorless equation holds: OpenSSL accepts this (cryptography 50); libsodium refuses a small-order R.
    secret, public_key, message, _ = vector("TEST 3")
    k = int.from_bytes(hashlib.sha512(IDENTITY + public_key + message).digest(), "little") % L
    crafted = IDENTITY + (k * _clamped_scalar(secret) % L).to_bytes(32, "little")

    assert not ed25519.verify(public_key, message, crafted)


# ================================================================ bad input of the right types


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (b"", b""),
        (b"\x00" * 31, b"\x00" * 64),
        (b"\x00" * 33, b"\x00" * 64),
        (vector("TEST 1")[1], b"\x00" * 63),
        (vector("TEST 1")[1], b"\x00" * 65),
        (b"\xff" * 32, b"\xff" * 64),  # not a point, S far above L
    ],
)
def test_bad_input_is_false_and_never_raises(public_key: bytes, signature: bytes) -> None:
    assert ed25519.verify(public_key, b"message", signature) is False
    assert ed25519.verify_signed(public_key, signature + b"message") is False
    assert ed25519.verify_signed(public_key, b"\x00" * 10) is False


# ================================================================ records and proofs


def test_every_record_our_signer_makes_verifies() -> None:
    rng = random.Random(1)
    for i in range(50):
        private, public_key = key_pair(rng.randbytes(32))
        record = sign_record(private, public_key, i, 2**32 - 1, make_card(f"n{i}", "Linux", "0.1.0", {}))
        envelope = open_record(record.raw)
        assert ed25519.verify(public_key, cose.sig_structure(envelope.payload), envelope.signature)
        assert decode_record(record.raw) == record


def test_a_handshake_proof_verifies_with_the_raw_key() -> None:
    private, remote_key = key_pair(b"\x07" * 32)
    _, own_key = key_pair(b"\x08" * 32)
    nonce = bytes(range(16))
    proof = private.sign(HANDSHAKE_CONTEXT + nonce + remote_key + own_key)

    assert ed25519.verify(remote_key, HANDSHAKE_CONTEXT + nonce + remote_key + own_key, proof)
    assert not ed25519.verify(remote_key, HANDSHAKE_CONTEXT + nonce + own_key + remote_key, proof)


def test_verify_record_needs_no_loaded_key() -> None:
    private, public_key = key_pair(b"\x09" * 32)
    record = sign_record(private, public_key, 1, 2**32 - 1, make_card("n", "Linux", "0.1.0", {}))

    assert verify_record(open_record(record.raw), record.raw) == record


def test_load_public_key_still_refuses_small_order_keys() -> None:
    for key in SMALL_ORDER_KEYS:
        with pytest.raises(RecordError) as info:
            load_public_key(key)
        assert info.value.reason == "malformed"
