"""Assemble this device's engine from its state directory, and persist what it learns.

The one place that joins identity (key file), store (SQLite) and the pure
engine; the runtime and the simulator's persistent peers both start here.

Order matters: the identity is loaded first, and made only if the directory
has no store (a store whose key is missing is refused before a key is written);
the store is then opened for that identity, and refused if it belongs to
another. Either refusal leaves the directory exactly as it was.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import __version__
from agent.core.engine import Engine, EngineConfig, RecordCodec, same_clock
from agent.core.errors import MetadataError
from agent.core.records import Metadata, make_card, parse_metadata_json
from agent.core.trust_settings import TrustSettings
from agent.state import revocations
from agent.state.identity import Identity, load_or_create_identity
from agent.state.store import StateStore, StoreError
from agent.state.trust_files import load_membership, load_mesh_key


@dataclass(eq=False)
class LocalPeer:
    """This device's identity, persistent store and engine, opened together."""

    identity: Identity
    store: StateStore
    engine: Engine
    state_dir: Path
    #: The engine's ``revocation_version`` the state directory holds (lists read at start count as held).
    saved_revocation_version: int = 0

    def flush(self) -> None:
        """Persist the records the engine accepted or dropped since the last flush, and new
        revocation lists."""
        saved, deleted = self.engine.take_dirty_records()
        if saved:
            self.store.save_records(saved)
        if deleted:
            self.store.delete_records(deleted)
        self.save_revocation_lists()

    def save_revocation_lists(self) -> None:
        """Make the revocation lists the engine accepted since the last call durable
        (:mod:`agent.state.revocations`); one int compared when there are none. ``OSError`` if a
        write fails: the next call tries again."""
        version = self.engine.revocation_version
        if version == self.saved_revocation_version:
            return
        for held in self.engine.revocation_lists:
            path = revocations.received_list_path(self.state_dir, held.ca_key_id)
            if not path.exists() or path.read_bytes() != held.raw:
                revocations.save(self.state_dir, held)
        self.saved_revocation_version = version

    def close(self) -> None:
        """Flush and close the store. The engine must not be used afterwards."""
        self.flush()
        self.store.close()


def open_local_peer(
    state_dir: Path,
    *,
    now: float,
    device_name: str | None = None,
    os_name: str | None = None,
    config: EngineConfig | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    codec: RecordCodec | None = None,
    wall: Callable[[float], float] = same_clock,
    trust: TrustSettings | None = None,
) -> LocalPeer:
    """Open (or create) the state in ``state_dir`` and build the engine on it.

    The device name given here is remembered; without one, the remembered name
    or else the host name is used. ``now`` is the engine's (monotonic) clock and
    ``wall`` maps it to Unix time (default: the same clock). Metadata, counter and held records come from
    the store, so a restart republishes the same card with a higher counter.

    ``trust`` (``[trust]``) turns fleet trust on when it names a CA: its files are read here.

    Raises :class:`~agent.state.identity.IdentityError` if the key file is unusable, or missing
    beside an existing store, :class:`~agent.state.store.StoreError` if the store is damaged
    or belongs to another identity, and :class:`~agent.state.trust_files.TrustFileError` if a
    ``[trust]`` file is unusable; each names the files and leaves them unchanged.
    """
    identity = load_or_create_identity(state_dir)  # refuses to make a key beside an existing store
    membership = load_membership(trust, state_dir, identity.public_key) if trust is not None else None
    mesh_key = load_mesh_key(trust, state_dir) if trust is not None else None
    store = StateStore.open(state_dir, identity.public_key)  # refuses another identity's store
    try:
        if device_name:
            store.save_device_name(device_name)
        name = device_name or store.load_device_name() or socket.gethostname()
        metadata = _stored_metadata(store)
        card = make_card(name, os_name or platform.system(), __version__, metadata)
        engine = Engine(
            private_key=identity.private_key,
            public_key=identity.public_key,
            counters=store,
            card=card,
            now=now,
            rng=rng,
            config=config,
            codec=codec,
            held_records=store.load_records(),
            wall=wall,
            membership=membership,
            mesh_key=mesh_key,
        )
    except BaseException:
        store.close()
        raise
    return LocalPeer(identity, store, engine, state_dir, engine.revocation_version)


def _stored_metadata(store: StateStore) -> Metadata:
    """The metadata the store keeps; text this agent would refuse is a damaged store."""
    try:
        return parse_metadata_json(store.load_metadata_json() or "{}")
    except MetadataError as exc:
        raise StoreError(
            f"state store {store.path} holds metadata this agent refuses ({exc}). It was not "
            "modified; restore it from a backup, or move it aside to start with an empty store."
        ) from None


__all__ = ["LocalPeer", "open_local_peer"]
