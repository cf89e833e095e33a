"""What the mirror publishes: the retained payload of every topic, built from a snapshot (pure).

The mirror diffs two of these maps and publishes only the topics whose bytes
changed; a topic that disappeared is published empty, which deletes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent import __version__
from agent.core.graph import Peer, PresenceGraph
from agent.core.records import Record
from agent.mqtt.topics import ABSENT, ONLINE, PRESENT, RECORD_TOPIC, TopicKind, TopicLayout, short_id


@dataclass(frozen=True, slots=True)
class MirrorSnapshot:
    """The agent's view at one instant: its graph and the signed records it holds for each peer shown."""

    graph: PresenceGraph
    records: Mapping[str, tuple[Record, ...]]
    taken_at: float


@dataclass(frozen=True, slots=True)
class MirrorOptions:
    layout: TopicLayout = field(default_factory=TopicLayout)
    homeassistant: bool = False


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, the one encoding of every JSON payload the mirror publishes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def peer_state(peer: Peer, *, agent: str, last_change: float) -> dict[str, Any]:
    """A peer's retained state: the API's field names, plus who observed it and when it last changed."""
    return {**peer.to_json(), "present": True, "last_change": round(last_change, 3), "observed_by": agent}


def build_messages(
    options: MirrorOptions,
    snapshot: MirrorSnapshot,
    *,
    last_change: Mapping[str, float],
    departed: Mapping[str, Peer] = {},
) -> dict[str, bytes]:
    """Every retained topic the agent should hold on the broker for ``snapshot``, with its payload.

    ``last_change`` gives each shown peer's last change time (default: the
    snapshot's time); ``departed`` are peers that left and stay on Home
    Assistant as absent (ignored without Home Assistant).
    """
    layout = options.layout
    graph = snapshot.graph
    agent = graph.local_peer.peer_key_string
    messages: dict[str, bytes] = {
        layout.agent_topic(agent, TopicKind.STATUS): ONLINE,
        layout.agent_topic(agent, TopicKind.GRAPH): dumps(
            {"agent": agent, "updated_at": round(snapshot.taken_at, 3), **graph.to_json()}
        ),
    }
    for peer in graph.peers():
        key = peer.peer_key_string
        changed = last_change.get(key, snapshot.taken_at)
        messages[layout.peer_topic(agent, key, TopicKind.STATE)] = dumps(
            peer_state(peer, agent=agent, last_change=changed)
        )
        for record in snapshot.records.get(key, ()):
            messages[layout.peer_topic(agent, key, RECORD_TOPIC[record.kind])] = record.raw
        if options.homeassistant:
            messages.update(_homeassistant(layout, agent, peer, PRESENT))
    if options.homeassistant:
        for peer in departed.values():
            messages.update(_homeassistant(layout, agent, peer, ABSENT))
    return messages


def _homeassistant(layout: TopicLayout, agent: str, peer: Peer, state: bytes) -> dict[str, bytes]:
    """Discovery config (a ``presence`` binary sensor on a device per peer) and its state."""
    key = peer.peer_key_string
    presence_topic = layout.peer_topic(agent, key, TopicKind.PRESENCE)
    config = {
        "name": f"Presence via {short_id(agent)[:8]}",
        "unique_id": f"presence_{short_id(key)}_via_{short_id(agent)}",
        "device_class": "presence",
        "state_topic": presence_topic,
        "payload_on": PRESENT.decode(),
        "payload_off": ABSENT.decode(),
        "availability_topic": layout.agent_topic(agent, TopicKind.STATUS),
        "payload_available": "online",
        "payload_not_available": "offline",
        # One device per peer: every agent's entity for it lands on the same device.
        "device": {
            "identifiers": [f"presence_{short_id(key)}"],
            "name": peer.device_name or key[:12],
            "model": peer.os or "presence peer",
            "manufacturer": "presence-agent",
            # Home Assistant refuses a null sw_version: leave it out until the card says.
            **({"sw_version": peer.agent_version} if peer.agent_version else {}),
        },
        "origin": {"name": "presence-agent", "sw": __version__},
    }
    return {layout.discovery_topic(agent, key): dumps(config), presence_topic: state}
