"""The public Presence API: the mesh graph, observers, metadata and connection handlers.

Mirrors the reference ``presence()`` API: :class:`Presence` with ``graph()``,
``observe()``, ``set_peer_metadata()``, ``set_connection_request_handler()``
and friends; :class:`PresenceGraph`, :class:`Peer` and :class:`Connection` are
the immutable values it hands out. Errors live in :mod:`agent.core.errors`
(also available here as ``errors``).
"""

from agent.api.authorization import (
    AsyncConnectionRequestHandler,
    ConnectionRequestAuthorization,
    ConnectionRequestHandler,
)
from agent.api.observer import PresenceObserver
from agent.api.presence import EngineDriver, MetadataStore, Presence
from agent.core import errors
from agent.core.errors import MetadataError, MetadataTooLargeError, PresenceError
from agent.core.events import ConnectionRequest
from agent.core.graph import Connection, GraphDiff, Peer, PresenceGraph
from agent.core.records import ConnectionType

__all__ = [
    "AsyncConnectionRequestHandler",
    "Connection",
    "ConnectionRequest",
    "ConnectionRequestAuthorization",
    "ConnectionRequestHandler",
    "ConnectionType",
    "EngineDriver",
    "GraphDiff",
    "MetadataError",
    "MetadataStore",
    "MetadataTooLargeError",
    "Peer",
    "Presence",
    "PresenceError",
    "PresenceGraph",
    "PresenceObserver",
    "errors",
]
