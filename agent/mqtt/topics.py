"""The MQTT topic layout: every topic the mirror writes and the fleet view reads, defined here once.

Under ``topic_root`` (default ``presence``) each agent owns one subtree, named by
its peer key string (``pk`` + base64url, safe in topics)::

    <root>/agents/<agent>/status                 "online" | "offline" (the last will)      retained
    <root>/agents/<agent>/graph                  JSON: the agent's whole graph view         retained
    <root>/agents/<agent>/peers/<peer>/state     JSON: one peer as the agent sees it        retained
    <root>/agents/<agent>/peers/<peer>/card      the peer's signed card, raw COSE bytes     retained
    <root>/agents/<agent>/peers/<peer>/links     the peer's signed links record, raw bytes  retained
    <root>/agents/<agent>/peers/<peer>/presence  "ON" | "OFF" (only with Home Assistant)    retained

and with Home Assistant discovery enabled, one config per (agent, peer) under
the discovery prefix: ``<prefix>/binary_sensor/<agent id>/<peer id>/config``
(ids are the 16 hex digits of the key's first 8 bytes).

Why per agent: each agent sees the mesh from its own place (hops differ), and an
agent that dies takes exactly its own view with it (its status turns
``offline``), without racing other agents over shared topics. The records are the
same bytes everywhere and verify against the key in the topic.

A peer that leaves has its ``state``, ``card`` and ``links`` cleared (an empty
retained publish deletes a retained message), so no ghost peers stay on the broker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from agent.core.keys import peer_id, public_key_from_string
from agent.core.records import RecordKind

#: Default ``[mqtt] topic_root``.
DEFAULT_TOPIC_ROOT: Final = "presence"
#: Default Home Assistant discovery prefix.
DEFAULT_DISCOVERY_PREFIX: Final = "homeassistant"
#: Payloads of the status topic.
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
#: Payloads of the Home Assistant presence topic.
PRESENT: Final = b"ON"
ABSENT: Final = b"OFF"

#: Characters MQTT gives a meaning in topic names or filters.
_RESERVED_CHARS: Final = frozenset("+#\0")


class TopicKind(enum.Enum):
    """What a topic under an agent's subtree carries."""

    STATUS = "status"
    GRAPH = "graph"
    STATE = "state"
    CARD = "card"
    LINKS = "links"
    PRESENCE = "presence"


#: Topic kind of each signed record kind, and back.
RECORD_TOPIC: Final = {RecordKind.CARD: TopicKind.CARD, RecordKind.LINKS: TopicKind.LINKS}
TOPIC_RECORD: Final = {kind: record for record, kind in RECORD_TOPIC.items()}

_AGENT_KINDS: Final = frozenset({TopicKind.STATUS, TopicKind.GRAPH})


def check_topic_root(root: str) -> str | None:
    """Why ``root`` cannot be a topic root, or ``None`` when it can."""
    if not root:
        return "must not be empty"
    if root.startswith("/") or root.endswith("/") or "//" in root:
        return "must not start or end with '/' or contain an empty level"
    if bad := sorted(_RESERVED_CHARS & set(root)):
        return f"must not contain {', '.join(repr(c) for c in bad)}"
    if root.startswith("$"):
        return "must not start with '$' (reserved for the broker)"
    return None


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic of the layout, split into its parts (``peer`` is ``None`` for agent topics)."""

    agent: str
    kind: TopicKind
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """The layout under one topic root."""

    root: str = DEFAULT_TOPIC_ROOT
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX

    def __post_init__(self) -> None:
        for name, value in (("topic root", self.root), ("discovery prefix", self.discovery_prefix)):
            if (problem := check_topic_root(value)) is not None:
                raise ValueError(f"{name} {value!r} {problem}")

    # ------------------------------------------------------------ topics

    def agent_prefix(self, agent: str) -> str:
        return f"{self.root}/agents/{agent}"

    def agent_topic(self, agent: str, kind: TopicKind) -> str:
        assert kind in _AGENT_KINDS, kind
        return f"{self.agent_prefix(agent)}/{kind.value}"

    def peer_topic(self, agent: str, peer: str, kind: TopicKind) -> str:
        assert kind not in _AGENT_KINDS, kind
        return f"{self.agent_prefix(agent)}/peers/{peer}/{kind.value}"

    def discovery_topic(self, agent: str, peer: str) -> str:
        return f"{self.discovery_prefix}/binary_sensor/{short_id(agent)}/{short_id(peer)}/config"

    # ------------------------------------------------------------ filters

    def agent_filter(self, agent: str) -> str:
        """Everything one agent owns under the root."""
        return f"{self.agent_prefix(agent)}/#"

    def fleet_filters(self) -> tuple[str, ...]:
        """What the fleet view subscribes to: every status and every signed record."""
        any_agent = f"{self.root}/agents/+"
        return (
            f"{any_agent}/{TopicKind.STATUS.value}",
            f"{any_agent}/peers/+/{TopicKind.CARD.value}",
            f"{any_agent}/peers/+/{TopicKind.LINKS.value}",
        )

    # ------------------------------------------------------------ parsing

    def parse(self, topic: str) -> ParsedTopic | None:
        """Split a topic of this layout; ``None`` for anything else (never raises)."""
        prefix = f"{self.root}/agents/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if not all(parts):
            return None  # an empty agent or peer level
        try:
            if len(parts) == 2 and TopicKind(parts[1]) in _AGENT_KINDS:
                return ParsedTopic(parts[0], TopicKind(parts[1]))
            if len(parts) == 4 and parts[1] == "peers" and TopicKind(parts[3]) not in _AGENT_KINDS:
                return ParsedTopic(parts[0], TopicKind(parts[3]), parts[2])
        except ValueError:
            return None
        return None


def short_id(peer_key: str) -> str:
    """The 16-hex-digit peer id of a peer key string (Home Assistant object ids)."""
    try:
        return peer_id(public_key_from_string(peer_key)).hex()
    except ValueError:
        # Not a key (only in hand-made topics); still a stable, topic-safe id.
        return peer_key.encode("utf-8").hex()[:16]
