"""A fleet CA's directory: the offline CA key, the certificates it issued, its revocation list.

Layout of ``DIR`` (mode 0700; keep it offline, on the operator's machine)::

    ca.key               the CA's Ed25519 key, PEM PKCS#8, 0600; created once, never replaced
    counters.json        {"next_serial": N, "next_revocation_counter": M}
    certs/<serial>.cert  each certificate issued, its COSE_Sign1 bytes (serial zero-padded to 10 digits)
    revoked.cose         the newest revocation list (absent until the first revoke)
    mesh.key             the fleet's mesh key: 32 random bytes, 0600, made once by ``init``; copied
                         to every device beside its certificate (it seals radio frames,
                         agent.core.mesh_seal); a secret, unlike everything else the CA hands out
    lock                 held (flock) by every command, so two never interleave

**Serials and list counters are never reused**, even after ``kill -9``: the
next value is reserved in ``counters.json`` (written whole to a temporary file,
fsynced, renamed, directory fsynced) *before* it is signed, as the agent's
store reserves record counters (docs/ARCHITECTURE.md §6); a crash in between
burns a number, never repeats one. A certificate file is created with
``os.link`` (never clobbers) and ``revoked.cose`` replaced atomically, so
every file is whole. A ``counters.json`` missing beside ``ca.key``, or
damaged, is refused, never guessed: one line says which file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.certs import (
    Certificate,
    CertificateError,
    RevocationList,
    issue_certificate,
    open_certificate,
    raw_public_key,
    sign_revocation_list,
    verify_revocation_list,
)
from agent.core.errors import PresenceError
from agent.core.limits import MAX_COUNTER, MAX_RECORD_BYTES, MAX_REVOKED_SERIALS
from agent.core.mesh_seal import MESH_KEY_BYTES
from agent.core.records import Metadata
from agent.state.layout import GROUP_OTHER_BITS, ensure_state_dir, fsync_dir

CA_KEY_FILE: Final = "ca.key"
COUNTERS_FILE: Final = "counters.json"
CERTS_DIR: Final = "certs"
REVOCATION_FILE: Final = "revoked.cose"
MESH_KEY_FILE: Final = "mesh.key"
LOCK_FILE: Final = "lock"
CERT_SUFFIX: Final = ".cert"
_CERT_NAME: Final = re.compile(r"[0-9]{10}\.cert")
_MAX_SMALL_FILE_BYTES: Final = 16 * 1024
#: ``issue --days``: from one day to a hundred years (expiry stays a uint32 until 2106).
MAX_CERTIFICATE_DAYS: Final = 36_500
DAY_SECONDS: Final = 86_400


class FleetCaError(PresenceError):
    """The CA directory cannot be used as asked; nothing was changed (exit 1)."""


class FleetCaInputError(FleetCaError):
    """The command's input is wrong (an unknown serial, bad days); nothing was changed (exit 2)."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """One certificate this CA issued, as ``list`` shows it."""

    certificate: Certificate
    path: Path
    revoked: bool


class FleetCa:
    """An open CA directory (use :func:`init_ca` or :func:`open_ca`, inside ``with``: it holds the lock)."""

    def __init__(self, directory: Path, private_key: Ed25519PrivateKey, lock_fd: int) -> None:
        self.directory = directory
        self.private_key = private_key
        self.public_key = raw_public_key(private_key)
        self._lock_fd = lock_fd

    def __enter__(self) -> FleetCa:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._lock_fd)

    # ------------------------------------------------------------ reading

    def revocation_list(self) -> RevocationList | None:
        path = self.directory / REVOCATION_FILE
        if not path.exists():
            return None
        try:
            return verify_revocation_list(_read_small(path), [self.public_key])
        except CertificateError as exc:
            raise FleetCaError(f"revocation list {path} is damaged ({exc.reason}: {exc.detail})") from None

    def certificates(self) -> list[IssuedCertificate]:
        """Every certificate issued, by serial."""
        revoked = self.revocation_list()
        serials = revoked.serials if revoked is not None else frozenset()
        found = []
        for path in sorted((self.directory / CERTS_DIR).iterdir()):
            if not _CERT_NAME.fullmatch(path.name):
                continue
            try:
                cert = open_certificate(_read_small(path), [self.public_key])
            except CertificateError as exc:
                raise FleetCaError(
                    f"certificate file {path} is damaged ({exc.reason}: {exc.detail})"
                ) from None
            if cert.serial != int(path.stem):
                raise FleetCaError(
                    f"certificate file {path} holds serial {cert.serial}, not {int(path.stem)}"
                )
            found.append(IssuedCertificate(cert, path, cert.serial in serials))
        return found

    # ------------------------------------------------------------ writing

    def issue(
        self, device_key: bytes, metadata: Metadata, days: int, now: int | None = None
    ) -> IssuedCertificate:
        """Sign and store a certificate under the next serial (reserved durably first)."""
        if not 1 <= days <= MAX_CERTIFICATE_DAYS:
            raise FleetCaInputError(f"--days must be 1..{MAX_CERTIFICATE_DAYS}, got {days}")
        issued_at = int(time.time()) if now is None else now
        expiry = issued_at + days * DAY_SECONDS
        if expiry > MAX_COUNTER:
            raise FleetCaInputError(f"an expiry {days} days from now does not fit a uint32")
        try:  # everything the certificate could refuse, before a serial is spent
            issue_certificate(self.private_key, 0, device_key, metadata, issued_at, expiry)
        except ValueError as exc:  # MetadataError is one: the CLI reports it as bad input
            if isinstance(exc, PresenceError):
                raise
            raise FleetCaInputError(str(exc)) from None
        serial = self._reserve("next_serial")
        cert = issue_certificate(self.private_key, serial, device_key, metadata, issued_at, expiry)
        path = self.directory / CERTS_DIR / f"{serial:010d}{CERT_SUFFIX}"
        if not _create(path, cert.raw, 0o644):
            raise FleetCaError(f"{path} already exists: serial {serial} was issued outside this CA's counter")
        return IssuedCertificate(cert, path, False)

    def revoke(self, serial: int, now: int | None = None) -> RevocationList | None:
        """Add ``serial`` to the revocation list and re-sign it; ``None`` if it was already revoked."""
        if not any(issued.certificate.serial == serial for issued in self.certificates()):
            raise FleetCaInputError(f"this CA issued no certificate with serial {serial}")
        current = self.revocation_list()
        serials = set(current.serials) if current is not None else set()
        if serial in serials:
            return None
        serials.add(serial)
        if len(serials) > MAX_REVOKED_SERIALS:
            raise FleetCaError(
                f"the revocation list is full ({MAX_REVOKED_SERIALS} serials); rotate to a new CA"
            )
        counter = self._reserve("next_revocation_counter")
        revocations = sign_revocation_list(
            self.private_key, counter, int(time.time()) if now is None else now, serials
        )
        _replace(self.directory / REVOCATION_FILE, revocations.raw, 0o644)
        return revocations

    def _counters(self) -> dict[str, int]:
        path = self.directory / COUNTERS_FILE
        if not path.exists():
            raise FleetCaError(
                f"{path} is missing beside {self.directory / CA_KEY_FILE}: serials could repeat. "
                "Restore it from a backup; nothing was changed."
            )
        try:
            value = json.loads(_read_small(path))
        except (ValueError, UnicodeDecodeError):
            value = None
        if (
            not isinstance(value, dict)
            or set(value) != {"next_serial", "next_revocation_counter"}
            or not all(type(v) is int and 1 <= v <= MAX_COUNTER for v in value.values())
        ):
            raise FleetCaError(f"{path} is damaged: serials could repeat. Restore it from a backup.")
        return value

    def _reserve(self, name: str) -> int:
        counters = self._counters()
        value = counters[name]
        if value >= MAX_COUNTER:
            raise FleetCaError(f"this CA's {name.replace('_', ' ')} is exhausted; rotate to a new CA")
        counters[name] = value + 1
        _replace(self.directory / COUNTERS_FILE, _counters_json(counters), 0o600)
        return value


# ---------------------------------------------------------------- opening


def revocation_path(directory: Path) -> Path:
    """Where a CA directory keeps its newest revocation list (the file to distribute)."""
    return directory / REVOCATION_FILE


def init_ca(directory: Path) -> FleetCa:
    """Make a new CA in ``directory``; :class:`FleetCaError` if one (or a part of one) is there already."""
    ensure_state_dir(directory)
    lock_fd = _lock(directory)
    try:
        for name in (CA_KEY_FILE, COUNTERS_FILE, REVOCATION_FILE, CERTS_DIR):
            if (directory / name).exists() or (directory / name).is_symlink():
                raise FleetCaError(
                    f"{directory / name} exists: {directory} already holds a CA. It was NOT replaced "
                    "(a new key would orphan every certificate it issued); use another --dir."
                )
        (directory / CERTS_DIR).mkdir(mode=0o700)
        _replace(
            directory / COUNTERS_FILE, _counters_json({"next_serial": 1, "next_revocation_counter": 1}), 0o600
        )
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if not _create(directory / CA_KEY_FILE, pem, 0o600):
            raise FleetCaError(f"{directory / CA_KEY_FILE} appeared meanwhile; it was NOT replaced")
        _create(directory / MESH_KEY_FILE, os.urandom(MESH_KEY_BYTES), 0o600)
        return FleetCa(directory, key, lock_fd)
    except BaseException:
        os.close(lock_fd)
        raise


def open_ca(directory: Path) -> FleetCa:
    """Open an existing CA directory; :class:`FleetCaError` naming the file if it cannot be used."""
    path = directory / CA_KEY_FILE
    if not path.exists():
        raise FleetCaError(
            f"{directory} holds no CA ({path} is missing); run 'fleet-ca init --dir {directory}'"
        )
    lock_fd = _lock(directory)
    try:
        return FleetCa(directory, _load_key(path), lock_fd)
    except BaseException:
        os.close(lock_fd)
        raise


def _load_key(path: Path) -> Ed25519PrivateKey:
    st = path.stat()
    if os.name == "posix" and st.st_mode & GROUP_OTHER_BITS:
        raise FleetCaError(
            f"CA key {path} has permissions {stat.S_IMODE(st.st_mode):04o}; group/other may not access it. "
            f"Run 'chmod 600 {path}' once you are sure the key has not been exposed."
        )
    try:
        key = serialization.load_pem_private_key(_read_small(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FleetCaError(f"CA key {path} is not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetCaError(f"CA key {path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


# ---------------------------------------------------------------- files


def _lock(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FleetCaError(f"another fleet-ca command is using {directory}; try again") from None
    return fd


def _read_small(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(max(_MAX_SMALL_FILE_BYTES, MAX_RECORD_BYTES) + 1)
    except OSError as exc:
        raise FleetCaError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_SMALL_FILE_BYTES:
        raise FleetCaError(f"{path} is far too large to be a CA file")
    return data


def _counters_json(counters: dict[str, int]) -> bytes:
    return (json.dumps(counters, sort_keys=True) + "\n").encode("ascii")


@contextlib.contextmanager
def _temp_file(path: Path, data: bytes, mode: int) -> Iterator[Path]:
    """A fsynced temporary file with ``data`` beside ``path``, removed afterwards if still there."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _create(path: Path, data: bytes, mode: int) -> bool:
    """Durably create ``path`` whole; False (nothing written) if it exists."""
    with _temp_file(path, data, mode) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    fsync_dir(path.parent)
    return True


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Durably replace ``path`` whole (readers see the old bytes or the new, never a mix)."""
    with _temp_file(path, data, mode) as tmp:
        os.replace(tmp, path)
    fsync_dir(path.parent)
