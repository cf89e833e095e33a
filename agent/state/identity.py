"""This peer's identity: an Ed25519 key pair kept in ``<state_dir>/identity.key``.

The key *is* the peer: its public half is the ``peer_key_string`` every other
peer knows this device by, and it signs every record this device publishes. So
the key file is created once and then only ever read. Anything wrong with an
existing file -- unreadable, empty, truncated, not an Ed25519 key, or readable
by group/other -- raises :class:`IdentityError` and leaves the file untouched:
silently making a new key would silently make a new peer.

A key is made only in a state directory without a store: if ``identity.key``
is missing but ``state.sqlite3`` exists, the key that store belongs to was
lost, and :class:`IdentityError` is raised before anything is written (a new
key would silently inherit that store's records, metadata and counter).

File format: the private key in PEM PKCS#8, unencrypted (the 32-byte Ed25519
seed inside), mode 0600, in a state directory of mode 0700. That file is always
the same 48-byte DER (RFC 8410) in one 64-character base64 line, so it is written
and read here byte for byte, exactly as ``cryptography`` writes it::

    -----BEGIN PRIVATE KEY-----
    base64( 30 2E 02 01 00 30 05 06 03 2B 65 70 04 22 04 20 <seed 32> )
    -----END PRIVATE KEY-----

Any other PEM (another tool's layout of an Ed25519 key, an encrypted key, another
algorithm) goes to ``cryptography``'s general loader, which judges it as before.
Why: the general loader's package (``serialization``, with SSH keys, RSA, DSA, EC and
ciphers behind it) costs an agent about 1 MB of memory it otherwise never uses.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InternalError, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.errors import PresenceError
from agent.core.keys import peer_key_string
from agent.state.layout import (
    GROUP_OTHER_BITS,
    IDENTITY_FILE_NAME,
    STORE_FILE_NAME,
    ensure_state_dir,
    fsync_dir,
    new_private_file,
)

#: An Ed25519 PKCS#8 PEM is ~120 bytes; anything much larger is not our key.
_MAX_KEY_FILE_BYTES: Final = 16 * 1024
#: PKCS#8 v1 of an Ed25519 key (RFC 8410) up to its 32-byte seed: SEQUENCE { INTEGER 0,
#: SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
_PKCS8_ED25519: Final = bytes.fromhex("302e020100300506032b657004220420")
_PEM_BEGIN: Final = b"-----BEGIN PRIVATE KEY-----\n"
_PEM_END: Final = b"\n-----END PRIVATE KEY-----\n"
#: 48 bytes of DER are exactly 64 base64 characters: one PEM line.
_PEM_BYTES: Final = len(_PEM_BEGIN) + 64 + len(_PEM_END)


class IdentityError(PresenceError):
    """The identity key file cannot be used, or is missing beside its store. Nothing was written."""


@dataclass(frozen=True)
class Identity:
    """This peer's key pair. Equality and repr use the public key only."""

    private_key: Ed25519PrivateKey = field(compare=False, repr=False)
    public_key: bytes  # raw 32 bytes

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> Identity:
        """The identity of an existing private key."""
        return cls(private_key=private_key, public_key=private_key.public_key().public_bytes_raw())

    @property
    def peer_key_string(self) -> str:
        """The text form other peers and applications know this peer by."""
        return peer_key_string(self.public_key)


def generate_identity() -> Identity:
    """A fresh in-memory identity (for the simulator and tests); nothing is written."""
    return Identity.from_private_key(Ed25519PrivateKey.generate())


def load_or_create_identity(state_dir: Path) -> Identity:
    """Load this peer's identity from ``state_dir``, creating it on first start.

    Raises :class:`IdentityError` (naming the file) if the key file exists but is
    unusable. Group/other permission bits on the key file are refused rather than
    warned about or fixed: the key may already have been read by someone else,
    and only the operator can judge that, so they must ``chmod 600`` it knowingly.
    A missing key next to an existing store is refused too (nothing is written):
    the store belongs to the lost key, not to a new one.
    """
    ensure_state_dir(state_dir)
    path = state_dir / IDENTITY_FILE_NAME
    if path.exists() or path.is_symlink():
        return _load(path)
    store = state_dir / STORE_FILE_NAME
    if store.exists() or store.is_symlink():
        raise IdentityError(
            f"identity key file {path} is missing, but the state store {store} it belongs to exists. "
            "No new key was made: it would silently take over that store's records, metadata and "
            f"counter as a different peer. Restore {path} from a backup, or move {store} away "
            "to start fresh as a new peer."
        )
    identity = generate_identity()
    if not _publish(path, _encode(identity.private_key)):
        # Another process created the key between our check and our write: use theirs.
        return _load(path)
    return identity


def _encode(private_key: Ed25519PrivateKey) -> bytes:
    """The key file's bytes: the PEM PKCS#8 ``cryptography`` writes, byte for byte."""
    return _PEM_BEGIN + base64.b64encode(_PKCS8_ED25519 + private_key.private_bytes_raw()) + _PEM_END


def _decode(data: bytes) -> object:
    """The private key in a key file: the layout :func:`_encode` writes is read here, anything
    else by ``cryptography``'s general PEM loader (which raises for what it cannot read)."""
    if len(data) == _PEM_BYTES and data.startswith(_PEM_BEGIN) and data.endswith(_PEM_END):
        try:
            der = base64.b64decode(data[len(_PEM_BEGIN) : -len(_PEM_END)], validate=True)
        except binascii.Error:
            der = b""
        if len(der) == len(_PKCS8_ED25519) + 32 and der.startswith(_PKCS8_ED25519):
            return Ed25519PrivateKey.from_private_bytes(der[len(_PKCS8_ED25519) :])
    from cryptography.hazmat.primitives import serialization  # only here: see the module docstring

    return serialization.load_pem_private_key(data, password=None)


def _refuse(path: Path, problem: str, advice: str) -> IdentityError:
    return IdentityError(
        f"identity key file {path} {problem}. It was NOT replaced: a new key would make "
        f"this device a different peer on the mesh. {advice}"
    )


_RESTORE_ADVICE: Final = (
    "Restore it from a backup, or delete it yourself to start deliberately as a new peer."
)


def _load(path: Path) -> Identity:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "is not a regular file", _RESTORE_ADVICE)
        if os.name == "posix" and st.st_mode & GROUP_OTHER_BITS:
            raise _refuse(
                path,
                f"has permissions {stat.S_IMODE(st.st_mode):04o}; group/other may not access it",
                f"Run 'chmod 600 {path}' once you are sure the key has not been exposed.",
            )
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror or exc})", _RESTORE_ADVICE) from None
    if not data.strip():
        raise _refuse(path, "is empty", _RESTORE_ADVICE)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise _refuse(path, "is far too large to be a key", _RESTORE_ADVICE)
    try:
        key = _decode(data)
    except (ValueError, TypeError, UnsupportedAlgorithm, InternalError) as exc:  # OpenSSL on some damaged DER
        # TypeError: the PEM is encrypted; ValueError: damaged or truncated.
        raise _refuse(path, f"is not a readable PEM private key ({exc})", _RESTORE_ADVICE) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _refuse(path, f"holds a {type(key).__name__}, not an Ed25519 private key", _RESTORE_ADVICE)
    return Identity.from_private_key(key)


def _publish(path: Path, data: bytes) -> bool:
    """Durably and atomically create ``path`` with ``data`` (mode 0600).

    Returns False, writing nothing, if ``path`` appeared meanwhile. The key is
    written to a new private file (mode 0600) and fsynced first, so a crash
    never leaves a half-written key. It is then published with ``os.link``,
    which, unlike ``os.replace``, fails rather than clobbers an existing key.
    """
    directory = path.parent
    fd, tmp = new_private_file(directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # Filesystems without hard links (e.g. FAT): atomic, but may clobber a
            # key created in the same instant by a second agent on this directory.
            os.replace(tmp, path)
        fsync_dir(directory)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
