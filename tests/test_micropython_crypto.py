"""The node library's SHA-512 and Ed25519 under real MicroPython (tests/micropython_support.py).

One MicroPython run per module: the host builds every case, the batch script computes them all and
prints one JSON object, and each test checks its part against FIPS 180 / RFC 8032 vectors and
against hashlib and ``cryptography`` on the host.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from micropython_support import FIRMWARE, require_micropython, run_batch

#: FIPS 180-2 appendix C: SHA-512 of "abc", of "", and of the 896-bit two-block message.
FIPS_896 = (
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
    b"mnopqrstnopqrstu"
)
SHA512_VECTORS = {
    b"abc": "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    b"": "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    FIPS_896: "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
    "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
}

#: RFC 8032 §7.1: (name, secret key, public key, message, signature), all hex.
RFC8032 = [
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
        "d25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
        "387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc659"
        "4a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST 1024",
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
        "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
        "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
        "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
        "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
        "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
        "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
        "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
        "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
        "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
        "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
        "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
        "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
        "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
        "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
        "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
        "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
        "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
        "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
        "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
        "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
        "c60c905c15fc910840b94c00a0b9d0",
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b"
        "5e8fcd4f681e30a6ac00a9704a188a03",
    ),
    (
        "TEST SHA(abc)",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        hashlib.sha512(b"abc").hexdigest(),
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e030"
        "3dca179c138ac17ad9bef1177331a704",
    ),
]

#: A point of order 8: as a key or R it is refused, as libsodium refuses it.
SMALL_ORDER_POINT = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")

#: The group order: S + L is the same scalar, a non-canonical S every verifier must refuse.
L = 2**252 + 27742317777372353535851937790883648493

rng = random.Random(8032)
#: Lengths around SHA-512's 112-byte padding boundary and 128-byte blocks, then random ones.
SHA_LENGTHS = (1, 55, 111, 112, 113, 127, 128, 129, 239, 240, 256, 1000, 4096, rng.randrange(5000))
SHA_INPUTS = [rng.randbytes(n) for n in SHA_LENGTHS]
MESSAGE_LENGTHS = (0, 1, 31, 64, 200, 1500)
SEEDS_AND_MESSAGES = [(rng.randbytes(32), rng.randbytes(rng.choice(MESSAGE_LENGTHS))) for _ in range(16)]

BATCH = """
import sha512, ed25519

def flip(data, bit):
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)

out = {"native_sha512": sha512.NATIVE, "native_ed25519": ed25519.NATIVE}
out["sha"] = [sha512.sha512(bytes.fromhex(h)).hex() for h in INPUT["sha"]]
pieces = [bytes.fromhex(h) for h in INPUT["sha"]]
h = sha512.SHA512()
for piece in pieces:
    h.update(piece)
out["incremental"] = h.digest().hex()

out["sign"] = []
for seed, msg in INPUT["sign"]:
    key = ed25519.SigningKey(bytes.fromhex(seed))
    m = bytes.fromhex(msg)
    sig = key.sign(m)
    pk = key.public_key
    out["sign"].append({
        "public": pk.hex(),
        "signature": sig.hex(),
        "verifies": ed25519.verify(pk, m, sig),
        "flipped_r": ed25519.verify(pk, m, flip(sig, 3)),
        "flipped_s": ed25519.verify(pk, m, flip(sig, 300)),
        "flipped_message": ed25519.verify(pk, flip(m, 0) if m else b"x", sig),
        "flipped_key": ed25519.verify(flip(pk, 9), m, sig),
    })
out["verify"] = [
    ed25519.verify(bytes.fromhex(p), bytes.fromhex(m), bytes.fromhex(s)) for p, m, s in INPUT["verify"]
]
errors = []
for bad in (b"", bytes(31), bytes(33)):
    try:
        ed25519.SigningKey(bad)
        errors.append("accepted")
    except ed25519.Ed25519Error as exc:
        errors.append(str(exc))
table = ed25519.base_table()
ed25519.set_base_table(table)
for bad in (table[:-1], bytes(len(table))):
    try:
        ed25519.set_base_table(bad)
        errors.append("accepted")
    except ed25519.Ed25519Error as exc:
        errors.append(str(exc))
out["errors"] = errors
out["table_sha512"] = sha512.sha512(table).hex()
print(json.dumps(out))
"""


def host_sign(seed: bytes, message: bytes) -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes_raw(), key.sign(message)


def verify_cases() -> list[tuple[str, str, str]]:
    """(public, message, signature) hex triples: host-made valid ones, then ones that must fail."""
    cases = []
    for seed, message in SEEDS_AND_MESSAGES[:6]:
        public, sig = host_sign(seed, message)
        cases.append((public.hex(), message.hex(), sig.hex()))
    public, sig = host_sign(SEEDS_AND_MESSAGES[0][0], b"m")
    s_plus_l = (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
    bad = [
        (public, b"m", sig[:32] + s_plus_l),  # non-canonical S
        (public, b"m", sig[:63]),  # short signature
        (public[:31], b"m", sig),  # short key
        (b"\xff" * 32, b"m", sig),  # key not on the curve (y >= p)
        (public, b"m", b"\xff" * 32 + sig[32:]),  # R does not decode
        (bytes.fromhex("01" + "00" * 31), b"m", bytes.fromhex("01" + "00" * 63)),  # identity key, zero S
        (public, b"m", SMALL_ORDER_POINT + sig[32:]),  # R of small order (libsodium refuses it)
    ]
    return cases + [(p.hex(), m.hex(), s.hex()) for p, m, s in bad]


@pytest.fixture(scope="module")
def results() -> Any:
    require_micropython()
    inputs = {
        "sha": [m.hex() for m in [*SHA512_VECTORS, *SHA_INPUTS]],
        "sign": [(sk, msg) for _, sk, _, msg, _ in RFC8032]
        + [(s.hex(), m.hex()) for s, m in SEEDS_AND_MESSAGES],
        "verify": verify_cases(),
    }
    return run_batch(BATCH, inputs)


def test_micropython_has_neither_sha512_nor_ed25519_natively(results: Any) -> None:
    # So everything below exercised the pure-Python code, not a native shortcut.
    assert results["native_sha512"] is False
    assert results["native_ed25519"] is False


def test_sha512_matches_fips_180_vectors(results: Any) -> None:
    assert results["sha"][: len(SHA512_VECTORS)] == list(SHA512_VECTORS.values())


def test_sha512_matches_hashlib_at_block_boundaries_and_random_lengths(results: Any) -> None:
    expected = [hashlib.sha512(m).hexdigest() for m in SHA_INPUTS]
    assert results["sha"][len(SHA512_VECTORS) :] == expected
    assert results["incremental"] == hashlib.sha512(b"".join([*SHA512_VECTORS, *SHA_INPUTS])).hexdigest()


@pytest.mark.parametrize("index", range(len(RFC8032)), ids=[v[0] for v in RFC8032])
def test_ed25519_rfc8032_vectors(results: Any, index: int) -> None:
    _, _, public, _, signature = RFC8032[index]
    got = results["sign"][index]
    assert (got["public"], got["signature"]) == (public, signature)
    assert got["verifies"] is True
    assert not any(got[k] for k in ("flipped_r", "flipped_s", "flipped_message", "flipped_key"))


def test_ed25519_signatures_are_byte_identical_to_cryptography(results: Any) -> None:
    got = results["sign"][len(RFC8032) :]
    assert len(got) == len(SEEDS_AND_MESSAGES)
    for (seed, message), item in zip(SEEDS_AND_MESSAGES, got, strict=True):
        public, sig = host_sign(seed, message)
        assert (item["public"], item["signature"]) == (public.hex(), sig.hex())
        assert item["verifies"] is True
        assert not any(item[k] for k in ("flipped_r", "flipped_s", "flipped_message", "flipped_key"))


def test_ed25519_verifies_host_signatures_and_refuses_malformed_ones(results: Any) -> None:
    assert results["verify"] == [True] * 6 + [False] * 7


def test_malformed_keys_and_tables_raise_ed25519_error(results: Any) -> None:
    seeds, tables = results["errors"][:3], results["errors"][3:]
    assert all("seed is 32 bytes" in e for e in seeds), seeds
    assert "a base table is 24576 bytes" in tables[0]
    assert "first point is not B" in tables[1]


def test_the_same_sources_run_under_cpython(results: Any) -> None:
    """The virtual nodes of the BLE tests import these files under CPython: same bytes there."""
    script = f"""
import sys, json, hashlib
sys.path.insert(0, {str(FIRMWARE)!r})
import ed25519, sha512
ed25519._nacl = None  # the pure code, not PyNaCl
sha512._native = None
seed, msg = bytes.fromhex({RFC8032[2][1]!r}), bytes.fromhex({RFC8032[2][3]!r})
key = ed25519.SigningKey(seed)
print(json.dumps([key.sign(msg).hex(), ed25519.verify(key.public_key, msg, key.sign(msg)),
                  sha512.sha512(ed25519.base_table()).hex(), sha512.sha512(b"abc").hex()]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, cwd=Path.cwd()
    )
    sig, ok, table, abc = __import__("json").loads(done.stdout)
    assert (sig, ok) == (RFC8032[2][4], True)
    assert table == results["table_sha512"]
    assert abc == SHA512_VECTORS[b"abc"]
