"""Fleet trust's files, read when the agent starts: CA keys, this device's certificate, a revocation list.

``[trust]`` (:mod:`agent.core.trust_settings`) names them:

* each CA key is a key string (``pk…``, what ``presence-agent fleet-ca init``
  prints) or a file whose first line is one;
* the certificate is the file ``presence-agent fleet-ca issue`` wrote (its raw
  COSE_Sign1 bytes), by default ``<state_dir>/device.cert``;
* a revocation list (``presence-agent fleet-ca revoke`` writes the CA's
  ``revoked.cose``) is optional, by default ``<state_dir>/revoked.cose`` if
  present; the mesh floods newer ones, and the newest list accepted per CA is
  kept in the state directory (:mod:`agent.state.revocations`) and read after
  it, newest winning.

The agent refuses to start, with one line naming the file and what to do
(:class:`TrustFileError`, exit 2), when a file is missing or unreadable, a CA
key is not one, the certificate is not a certificate from a trusted CA or is
for another key, or a revocation list (the operator's, or one kept) does not verify. A certificate that is
only expired, not yet valid or revoked does not stop the agent: the engine says
so in the log, and peers refuse it until it is renewed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from agent.core.certs import CertificateError, FleetTrust, TrustReason, open_certificate
from agent.core.errors import PeerKeyError, PresenceError
from agent.core.keys import peer_key_string, public_key_from_string
from agent.core.limits import MAX_CERTIFICATE_BYTES
from agent.core.mesh_seal import MESH_KEY_BYTES
from agent.core.trust import Membership
from agent.core.trust_settings import (
    CERTIFICATE_FILE,
    MESH_KEY_FILE,
    REVOCATION_LIST_FILE,
    TrustSettings,
    is_key_string,
)
from agent.state.revocations import ReceivedListError, load_received_lists

__all__ = ["TrustFileError", "load_fleet_trust", "load_membership", "load_mesh_key"]

#: Key files are one line; nothing this small needs more.
_MAX_KEY_FILE_BYTES: Final = 1024


class TrustFileError(PresenceError, ValueError):
    """A ``[trust]`` file cannot be used; the agent did not start (exit 2)."""


def load_membership(settings: TrustSettings, state_dir: Path, public_key: bytes) -> Membership | None:
    """The membership that turns trust on in this device's engine, or ``None`` with trust off."""
    if not settings.enabled:
        return None
    fleet = _fleet(settings)
    certificate = _certificate(settings, state_dir, fleet, public_key)
    fleet = _with_revocation_list(settings, state_dir, fleet)
    try:
        fleet = load_received_lists(state_dir, fleet)
    except ReceivedListError as exc:
        raise TrustFileError(str(exc)) from None
    return Membership(fleet, certificate)


def load_mesh_key(settings: TrustSettings, state_dir: Path) -> bytes | None:
    """The fleet's mesh key (``[trust] mesh_key``, else ``<state_dir>/mesh.key`` if present), or
    ``None``: radio frames are then not sealed. With or without a CA."""
    if settings.mesh_key:
        path = Path(settings.mesh_key).expanduser()
    else:
        path = state_dir / MESH_KEY_FILE
        if not path.exists():
            return None
    if os.name == "posix" and path.exists() and path.stat().st_mode & 0o077:
        raise TrustFileError(f"mesh key {path} is readable by group or others: chmod 600 it (it is a secret)")
    key = _read(path, MESH_KEY_BYTES, "a mesh key")
    if len(key) != MESH_KEY_BYTES:
        raise TrustFileError(
            f"{path} is not a mesh key ({MESH_KEY_BYTES} bytes, as `fleet-ca init` writes it)"
        )
    return key


def load_fleet_trust(settings: TrustSettings) -> FleetTrust | None:
    """The CA keys and the revocation list ``settings`` names, for a viewer (``presence-agent fleet``);
    ``None`` without a CA. No state directory: only an explicit ``revocation_list`` is read."""
    if not settings.enabled:
        return None
    fleet = _fleet(settings)
    if not settings.revocation_list:
        return fleet
    return _with_revocation_list(settings, Path(), fleet)


def _fleet(settings: TrustSettings) -> FleetTrust:
    try:
        return FleetTrust.of([_ca_key(text) for text in settings.ca_keys])
    except TrustFileError:
        raise
    except ValueError as exc:
        raise TrustFileError(f"[trust] ca_keys: {exc}") from None


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise TrustFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise TrustFileError(f"{what} {path} is over {limit} bytes: not {what}")
    return data


def _ca_key(text: str) -> bytes:
    if is_key_string(text):
        return public_key_from_string(text)  # checked by the configuration already
    path = Path(text).expanduser()
    try:
        line = _read(path, _MAX_KEY_FILE_BYTES, "the CA key file").decode("utf-8").strip()
        return public_key_from_string(line)
    except (UnicodeDecodeError, PeerKeyError):
        raise TrustFileError(
            f"CA key file {path} does not hold a key string (the line `presence-agent fleet-ca init` prints)"
        ) from None


def _certificate(settings: TrustSettings, state_dir: Path, fleet: FleetTrust, public_key: bytes) -> bytes:
    path = Path(settings.certificate).expanduser() if settings.certificate else state_dir / CERTIFICATE_FILE
    mine = peer_key_string(public_key)
    if not path.exists():
        raise TrustFileError(
            f"trust is on but this device has no certificate at {path}: issue one with "
            f"`presence-agent fleet-ca issue --device-key {mine} ...` and copy it there"
        )
    raw = _read(path, MAX_CERTIFICATE_BYTES, "a certificate")
    try:
        cert = open_certificate(raw, fleet.ca_keys)
    except CertificateError as exc:
        if exc.reason is TrustReason.UNKNOWN_CA:
            raise TrustFileError(f"certificate {path} is from a CA [trust] ca_keys does not name") from None
        raise TrustFileError(f"{path} is not a usable certificate ({exc.reason}: {exc.detail})") from None
    if cert.device_key != public_key:
        raise TrustFileError(
            f"certificate {path} is for device {cert.device_key_string}, not this device ({mine})"
        )
    return raw


def _with_revocation_list(settings: TrustSettings, state_dir: Path, fleet: FleetTrust) -> FleetTrust:
    if settings.revocation_list:
        path = Path(settings.revocation_list).expanduser()
    else:
        path = state_dir / REVOCATION_LIST_FILE
        if not path.exists():
            return fleet
    raw = _read(path, MAX_CERTIFICATE_BYTES, "a revocation list")
    try:
        return fleet.with_revocation_list(raw)[0]
    except CertificateError as exc:
        raise TrustFileError(f"revocation list {path} is refused ({exc.reason}: {exc.detail})") from None
