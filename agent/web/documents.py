"""The page's document: one JSON shape for an agent's graph and for the fleet's merged graph.

The page draws whatever it is given in this shape, so the agent view and the
fleet view are the same page::

    {"kind": "agent" | "fleet",
     "title": "pi-kitchen",                       # what the page's heading names
     "self": "pk..." | null,                      # the local peer (the fleet has none)
     "status": "" | "one line",                   # why the picture may be stale ("agent unreachable")
     "peers": [{"key", "name", "os", "version", "hops": int | null, "metadata": {...},
                "records": [{"kind": "card" | "links", "counter": int, "expiry": int (Unix s)}],
                "seen_by": ["pk...", ...] | null,   # fleet only: which online agents list it
                "agent": {"online": bool, "peer_count": int} | null}],   # fleet: it mirrors a view
     "links": [{"id", "a", "b", "type": "WebSocket" | "Bluetooth" | "Radio" | ..., "distance": m | null}],
     "rejections": [{"topic", "agent", "peer", "reason", "detail"}]}   # fleet only; [] otherwise

Counters and expiry come from the peer's signed records as the agent holds them
(``graph --json``'s ``signed_records``, parsed here without the signature check:
the agent has verified them; the page shows, it does not judge). The fleet's
merged graph already carries the counters it shows, but no expiry.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any, Final

from agent.core.errors import RecordError
from agent.core.records import RecordKind, open_record

AGENT: Final = "agent"
FLEET: Final = "fleet"

_KIND_NAMES: Final = {RecordKind.CARD: "card", RecordKind.LINKS: "links"}


def agent_document(graph: Mapping[str, Any], *, status: str = "") -> dict[str, Any]:
    """The page document of a control-socket graph (``{"local_peer": ..., "remote_peers": [...]}``)."""
    local = graph["local_peer"]
    peers = [local, *graph["remote_peers"]]
    links: dict[str, dict[str, Any]] = {}
    for peer in peers:
        for c in peer["connections"]:
            links.setdefault(c["id"], _link(c))
    return {
        "kind": AGENT,
        "title": local.get("device_name") or local["peer_key_string"][:12],
        "self": local["peer_key_string"],
        "status": status,
        "peers": [_agent_peer(p) for p in peers],
        "links": [links[k] for k in sorted(links)],
        "rejections": [],
    }


def fleet_document(
    graph: Mapping[str, Any], rejections: Iterable[Mapping[str, Any]] = (), *, title: str = "fleet"
) -> dict[str, Any]:
    """The page document of :meth:`FleetGraph.to_json` and the fleet's recent rejections (as dicts)."""
    agents = {a["peer_key_string"]: a for a in graph["agents"]}
    peers = []
    for p in graph["peers"]:
        records = [
            {"kind": kind, "counter": p[f"{kind}_counter"], "expiry": None}
            for kind in ("card", "links")
            if p.get(f"{kind}_counter") is not None
        ]
        agent = agents.get(p["peer_key_string"])
        peers.append(
            {
                "key": p["peer_key_string"],
                "name": p["device_name"],
                "os": p["os"],
                "version": p["agent_version"],
                "hops": None,
                "metadata": p["peer_metadata"],
                "records": records,
                "seen_by": list(p["seen_by"]),
                "agent": {"online": agent["online"], "peer_count": agent["peer_count"]} if agent else None,
            }
        )
    return {
        "kind": FLEET,
        "title": title,
        "self": None,
        "status": "",
        "peers": peers,
        "links": [_link(c) for c in graph["connections"]],
        "rejections": [
            {k: r.get(k) for k in ("topic", "agent", "peer", "reason", "detail")} for r in rejections
        ],
    }


def unreachable_document(title: str, status: str) -> dict[str, Any]:
    """An empty picture that says why (the agent is not running yet, say)."""
    return {
        "kind": AGENT,
        "title": title,
        "self": None,
        "status": status,
        "peers": [],
        "links": [],
        "rejections": [],
    }


def _link(c: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "a": c["peer_key_string1"],
        "b": c["peer_key_string2"],
        "type": c["connection_type"],
        "distance": c.get("approximate_distance_in_meters"),
    }


def _agent_peer(p: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": p["peer_key_string"],
        "name": p["device_name"],
        "os": p["os"],
        "version": p.get("agent_version", ""),
        "hops": p["hops"],
        "metadata": p["peer_metadata"],
        "records": [r for r in map(record_summary, p.get("signed_records", ())) if r is not None],
        "seen_by": None,
        "agent": None,
    }


def record_summary(encoded: str) -> dict[str, Any] | None:
    """``{"kind", "counter", "expiry"}`` of one base64 signed record; ``None`` if it does not parse."""
    try:
        envelope = open_record(base64.b64decode(encoded, validate=True))
    except (RecordError, binascii.Error, ValueError):
        return None
    return {"kind": _KIND_NAMES[envelope.kind], "counter": envelope.counter, "expiry": envelope.expiry}
