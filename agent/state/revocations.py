"""Revocation lists this agent accepted, kept in its state directory so a restart still refuses.

One file per trusted CA, ``<state_dir>/revoked.<ca_key_id hex>.cose`` (the
CA's 8-byte key id as 16 hex digits; the raw COSE_Sign1 list, byte for byte as
the CA signed it, ≤ :data:`~agent.core.limits.MAX_REVOCATION_LIST_BYTES`). It
is written whenever the engine accepts a newer list of that CA, from the mesh
or from the operator, before the runtime sends it on
(:meth:`agent.state.local_peer.LocalPeer.save_revocation_lists`): written to a
temporary file in the same directory, fsynced, renamed over the old one, the
directory fsynced. So the file holds the old list or the new one, whole, even
after ``kill -9`` or a power cut; the list itself carries the CA's signature,
so the file needs no checksum of its own.

At start (:func:`load_received_lists`, after the operator's ``revoked.cose``)
each trusted CA's file, if present, is verified again against the CA keys and
the newest list wins: one not newer than the operator's is ``stale`` and
ignored. Files of CAs no longer trusted (after a rotation) are never read.
A file that does not verify stops the agent with one line naming it
(:class:`~agent.state.trust_files.TrustFileError`): starting without it would
silently readmit the devices it revokes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

from agent.core.certs import CertificateError, FleetTrust, RevocationList, TrustReason
from agent.core.limits import MAX_REVOCATION_LIST_BYTES
from agent.state.layout import fsync_dir, new_private_file

__all__ = ["RECEIVED_LIST_PREFIX", "ReceivedListError", "load_received_lists", "received_list_path", "save"]

#: Received lists are ``revoked.<ca id hex>.cose`` beside the operator's ``revoked.cose``.
RECEIVED_LIST_PREFIX: Final = "revoked."
_SUFFIX: Final = ".cose"


class ReceivedListError(ValueError):
    """A received list in the state directory does not verify (the message names the file)."""


def received_list_path(state_dir: Path, ca_key_id: bytes) -> Path:
    """Where the newest list of the CA with key id ``ca_key_id`` is kept."""
    return state_dir / f"{RECEIVED_LIST_PREFIX}{ca_key_id.hex()}{_SUFFIX}"


def save(state_dir: Path, revocations: RevocationList) -> Path:
    """Durably replace this CA's kept list with ``revocations`` (see the module docstring)."""
    path = received_list_path(state_dir, revocations.ca_key_id)
    fd, tmp = new_private_file(state_dir, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(revocations.raw)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(state_dir)
    return path


def load_received_lists(state_dir: Path, fleet: FleetTrust) -> FleetTrust:
    """``fleet`` with each trusted CA's kept list in place of an older one held."""
    for ca_id in fleet.ca_keys:
        path = received_list_path(state_dir, ca_id)
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_REVOCATION_LIST_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ReceivedListError(f"cannot read received revocation list {path}: {exc.strerror}") from None
        try:
            fleet = fleet.with_revocation_list(raw)[0]
        except CertificateError as exc:
            if exc.reason is TrustReason.STALE:
                continue  # the operator's list is as new or newer
            raise ReceivedListError(
                f"received revocation list {path} does not verify ({exc.reason}: {exc.detail}); "
                "replace it with the CA's revoked.cose, or delete it (the mesh floods the newest list again, "
                "but until then the devices it revoked are admitted)"
            ) from None
    return fleet
