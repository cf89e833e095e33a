"""Shared hypothesis strategies and fixtures-as-functions for the codec specs.

Import as ``from strategies import ...`` (pytest puts ``tests/`` on ``sys.path``
because the folder is not a package).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from agent.core.errors import MetadataError
from agent.core.graph import Connection, Peer, PresenceGraph
from agent.core.keys import peer_key_string
from agent.core.limits import (
    MAX_CONNECTIONS_PER_RECORD,
    MAX_COUNTER,
    PEER_ID_BYTES,
    PUBLIC_KEY_BYTES,
)
from agent.core.records import (
    Card,
    ConnectionType,
    LinkEntry,
    Links,
    freeze_metadata,
    make_card,
    validate_metadata,
)

#: Modest example counts keep the codec specs well under the suite's time budget.
QUICK = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- keys


def key_pair(seed: int = 1) -> tuple[Ed25519PrivateKey, bytes]:
    """A deterministic Ed25519 key pair (private key, raw 32-byte public key)."""
    private = Ed25519PrivateKey.from_private_bytes(seed.to_bytes(PUBLIC_KEY_BYTES, "big"))
    return private, raw_public_key(private)


def raw_public_key(private: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of a private key."""
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


private_keys = st.binary(min_size=32, max_size=32).map(Ed25519PrivateKey.from_private_bytes)
raw_keys = st.binary(min_size=PUBLIC_KEY_BYTES, max_size=PUBLIC_KEY_BYTES)
peer_key_strings = raw_keys.map(peer_key_string)

#: Counters and expiries are uint32 on the wire.
uint32s = st.integers(min_value=0, max_value=MAX_COUNTER)


# ---------------------------------------------------------------- metadata

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=16),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=16,
)


def _is_valid_metadata(value: dict[str, Any]) -> bool:
    try:
        validate_metadata(value)
    except MetadataError:
        return False  # e.g. a chain of one-element lists nested past the depth limit
    return True


#: Arbitrary JSON objects, comfortably inside every metadata budget.
metadata_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6).filter(_is_valid_metadata)

#: Names as a user or an OS might supply them: any unicode, sometimes too long.
unicode_names = st.text(max_size=80)

cards = st.builds(
    make_card,
    device_name=unicode_names,
    os=unicode_names,
    agent_version=st.text(max_size=20),
    metadata=metadata_objects,
)


def reorder_keys(value: Any) -> Any:
    """The same JSON value with every object's keys inserted in reverse order."""
    if isinstance(value, dict):
        return {k: reorder_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder_keys(v) for v in value]
    return value


# ---------------------------------------------------------------- links

peer_ids = st.binary(min_size=PEER_ID_BYTES, max_size=PEER_ID_BYTES)
connection_types = st.sampled_from(list(ConnectionType))
#: Distances in decimetres, including values beyond the uint16 that saturate.
distances_dm = st.one_of(st.none(), st.integers(min_value=0, max_value=200_000))

link_entries = st.builds(
    LinkEntry,
    peer_id=peer_ids,
    connection_type=connection_types,
    distance_dm=distances_dm,
)
links_bodies = st.lists(link_entries, max_size=MAX_CONNECTIONS_PER_RECORD).map(
    lambda entries: Links(tuple(entries))
)

bodies: st.SearchStrategy[Card | Links] = st.one_of(cards, links_bodies)


# ---------------------------------------------------------------- graph values


def peer(
    key: str,
    *,
    name: str = "pi",
    connections: tuple[Connection, ...] = (),
    metadata: dict[str, Any] | None = None,
    hops: int = 1,
) -> Peer:
    """A peer value with sensible defaults for graph specs."""
    return Peer(
        peer_key_string=key,
        device_name=name,
        os="Linux",
        connections=connections,
        peer_metadata=freeze_metadata(metadata or {}),
        identity_service_metadata={},
        hops=hops,
    )


@st.composite
def presence_graphs(draw: st.DrawFn, names_strategy: st.SearchStrategy[str] = unicode_names) -> PresenceGraph:
    """A local peer, up to five remotes, and up to eight distinct connections among them."""
    keys = draw(st.lists(peer_key_strings, min_size=1, max_size=6, unique=True))
    connections: dict[str, Connection] = {}
    if len(keys) > 1:
        for _ in range(draw(st.integers(0, 8))):
            a, b = draw(st.lists(st.sampled_from(keys), min_size=2, max_size=2, unique=True))
            distance = draw(st.one_of(st.none(), st.floats(0, 6553.5)))
            c = Connection.between(a, b, draw(connection_types), distance)
            connections.setdefault(c.id, c)
    names = draw(st.lists(names_strategy, min_size=len(keys), max_size=len(keys)))
    peers = [
        peer(
            key,
            name=name,
            metadata=draw(metadata_objects),
            connections=tuple(
                c for c in connections.values() if key in (c.peer_key_string1, c.peer_key_string2)
            ),
            hops=0 if i == 0 else 1,
        )
        for i, (key, name) in enumerate(zip(keys, names, strict=True))
    ]
    return PresenceGraph(peers[0], tuple(peers[1:]))
