"""The identity key file: created once, reused, and never silently replaced."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.core.errors import PresenceError
from agent.state.identity import (
    IDENTITY_FILE_NAME,
    Identity,
    IdentityError,
    _encode,
    _publish,
    generate_identity,
    load_or_create_identity,
)
from agent.state.layout import STORE_FILE_NAME

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_private_key_file_and_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "nested" / "state"
    identity = load_or_create_identity(state_dir)

    key_file = state_dir / IDENTITY_FILE_NAME
    assert mode(state_dir) == 0o700
    assert mode(key_file) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert len(identity.public_key) == 32
    assert sorted(p.name for p in state_dir.iterdir()) == [IDENTITY_FILE_NAME]  # no temp left


def test_reopen_returns_same_key(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path)
    before = (tmp_path / IDENTITY_FILE_NAME).read_bytes()
    second = load_or_create_identity(tmp_path)

    assert second == first
    assert second.public_key == first.public_key
    assert second.peer_key_string == first.peer_key_string
    assert (tmp_path / IDENTITY_FILE_NAME).read_bytes() == before
    # The loaded private key really is the same key: it signs for the old public key.
    signature = second.private_key.sign(b"hello")
    first.private_key.public_key().verify(signature, b"hello")


def test_peer_key_string_form(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path)
    text = identity.peer_key_string
    assert text.startswith("pk")
    assert len(text) == 45
    assert load_or_create_identity(tmp_path).peer_key_string == text


def test_existing_loose_dir_is_tightened(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)
    load_or_create_identity(state_dir)
    assert mode(state_dir) == 0o700


def test_generate_identity_is_fresh_and_in_memory(tmp_path: Path) -> None:
    a, b = generate_identity(), generate_identity()
    assert a != b
    assert a.peer_key_string != b.peer_key_string
    assert Identity.from_private_key(a.private_key) == a
    assert "private_key" not in repr(a)


def test_the_key_file_is_byte_for_byte_the_pem_cryptography_writes() -> None:
    for _ in range(20):
        key = generate_identity().private_key
        expected = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        assert _encode(key) == expected


@pytest.mark.parametrize(
    "layout",
    [
        lambda pem: pem.rstrip(b"\n"),  # no final newline
        lambda pem: pem.replace(b"\n", b"\r\n"),  # CRLF lines
        lambda pem: b"# written by hand\n" + pem,  # text before the PEM block
    ],
    ids=["no-final-newline", "crlf", "text-before"],
)
def test_a_key_file_in_another_pem_layout_loads_the_same_key(
    tmp_path: Path, layout: Callable[[bytes], bytes]
) -> None:
    identity = load_or_create_identity(tmp_path / "state")
    key_file = tmp_path / "state" / IDENTITY_FILE_NAME
    os.chmod(key_file, 0o600)
    key_file.write_bytes(layout(key_file.read_bytes()))
    assert load_or_create_identity(tmp_path / "state") == identity


def _bad_base64_pem(tmp_path: Path) -> bytes:
    load_or_create_identity(tmp_path / "donor")
    good = (tmp_path / "donor" / IDENTITY_FILE_NAME).read_bytes()
    return good[:40] + b"!" + good[41:]  # the exact layout, one character outside base64


def _ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_ed25519_pem() -> bytes:
    return generate_identity().private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def _truncated_pem(tmp_path: Path) -> bytes:
    load_or_create_identity(tmp_path / "donor")
    good = (tmp_path / "donor" / IDENTITY_FILE_NAME).read_bytes()
    return good[: len(good) // 2]


@pytest.mark.parametrize(
    "kind",
    ["garbage", "empty", "whitespace", "truncated", "bad_base64", "ec_key", "encrypted", "public_key"],
)
def test_damaged_key_file_is_refused_and_left_unchanged(tmp_path: Path, kind: str) -> None:
    makers: dict[str, Callable[[], bytes]] = {
        "garbage": lambda: os.urandom(100),
        "empty": lambda: b"",
        "whitespace": lambda: b"\n\n",
        "truncated": lambda: _truncated_pem(tmp_path),
        "bad_base64": lambda: _bad_base64_pem(tmp_path),
        "ec_key": _ec_key_pem,
        "encrypted": _encrypted_ed25519_pem,
        "public_key": lambda: (
            generate_identity()
            .private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        ),
    }
    contents = makers[kind]()
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    key_file = state_dir / IDENTITY_FILE_NAME
    key_file.write_bytes(contents)
    os.chmod(key_file, 0o600)

    with pytest.raises(IdentityError) as info:
        load_or_create_identity(state_dir)

    message = str(info.value)
    assert str(key_file) in message
    assert "NOT replaced" in message
    assert isinstance(info.value, PresenceError)
    assert key_file.read_bytes() == contents
    assert mode(key_file) == 0o600
    assert sorted(p.name for p in state_dir.iterdir()) == [IDENTITY_FILE_NAME]


@pytest.mark.parametrize("loose_mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(tmp_path: Path, loose_mode: int) -> None:
    load_or_create_identity(tmp_path)
    key_file = tmp_path / IDENTITY_FILE_NAME
    before = key_file.read_bytes()
    os.chmod(key_file, loose_mode)

    with pytest.raises(IdentityError) as info:
        load_or_create_identity(tmp_path)

    assert str(key_file) in str(info.value)
    assert "chmod 600" in str(info.value)
    assert key_file.read_bytes() == before
    assert mode(key_file) == loose_mode  # we do not "fix" it behind the operator's back


def test_unreadable_key_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_or_create_identity(tmp_path)
    key_file = tmp_path / IDENTITY_FILE_NAME
    before = key_file.read_bytes()

    def deny(self: Path, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    # chmod 000 would not stop root (tests may run as root), so refuse at open().
    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", deny)
        with pytest.raises(IdentityError, match="cannot be read") as info:
            load_or_create_identity(tmp_path)
    assert str(key_file) in str(info.value)
    assert key_file.read_bytes() == before


def test_key_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE_NAME).mkdir(mode=0o700)
    with pytest.raises(IdentityError, match="not a regular file"):
        load_or_create_identity(tmp_path)


def test_publish_never_clobbers_an_existing_file(tmp_path: Path) -> None:
    # The race where another process creates the key between our check and write.
    target = tmp_path / IDENTITY_FILE_NAME
    target.write_bytes(b"theirs")
    assert _publish(target, b"ours") is False
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [IDENTITY_FILE_NAME]


def test_a_missing_key_beside_an_existing_store_is_refused_and_no_key_is_made(tmp_path: Path) -> None:
    # The store belongs to the lost key: a new key would silently take over its
    # records, metadata and counter as a different peer.
    store = tmp_path / STORE_FILE_NAME
    store.write_bytes(b"a store")
    with pytest.raises(IdentityError) as info:
        load_or_create_identity(tmp_path)
    message = str(info.value)
    assert str(tmp_path / IDENTITY_FILE_NAME) in message and str(store) in message
    assert "Restore" in message and "move" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [STORE_FILE_NAME]


def test_a_key_file_that_makes_openssl_fail_internally_is_a_one_line_identity_error(tmp_path: Path) -> None:
    """Found by the identity fuzz target: some damaged DER inside a PEM raised cryptography's
    InternalError past the loader."""
    from agent.state.identity import IdentityError, load_or_create_identity

    bad = (Path(__file__).parent / "fuzz/corpus/identity/crash-openssl-internal-error").read_bytes()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = state / "identity.key"
    key.write_bytes(bad)
    key.chmod(0o600)
    with pytest.raises(IdentityError):
        load_or_create_identity(state)
