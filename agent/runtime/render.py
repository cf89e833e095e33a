"""Human and machine renderings of graph documents (the control socket's JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from agent.core.graph import Connection, Peer, PresenceGraph
from agent.core.records import ConnectionType, freeze_metadata

_METADATA_WIDTH = 40


def graph_from_document(document: dict[str, Any]) -> PresenceGraph:
    """Rebuild a PresenceGraph from its JSON document."""

    def peer(item: dict[str, Any]) -> Peer:
        return Peer(
            peer_key_string=item["peer_key_string"],
            device_name=item["device_name"],
            os=item["os"],
            connections=tuple(
                Connection(
                    c["id"],
                    c["peer_key_string1"],
                    c["peer_key_string2"],
                    ConnectionType(c["connection_type"]),
                    c["approximate_distance_in_meters"],
                )
                for c in item["connections"]
            ),
            peer_metadata=freeze_metadata(item["peer_metadata"]),
            identity_service_metadata=freeze_metadata(item["identity_service_metadata"]),
            hops=item["hops"],
            agent_version=item.get("agent_version", ""),
        )

    return PresenceGraph(peer(document["local_peer"]), tuple(peer(p) for p in document["remote_peers"]))


def _summary(metadata: dict[str, Any]) -> str:
    text = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False) if metadata else "-"
    return text if len(text) <= _METADATA_WIDTH else text[: _METADATA_WIDTH - 1] + "…"


def graph_table(document: dict[str, Any]) -> str:
    """A table a person reads at a glance: one row per peer, the local one first."""
    rows = [("PEER", "NAME", "OS", "HOPS", "CONNECTIONS", "METADATA")]
    for item in [document["local_peer"], *document["remote_peers"]]:
        types: dict[str, int] = {}
        for c in item["connections"]:
            types[c["connection_type"]] = types.get(c["connection_type"], 0) + 1
        rows.append(
            (
                item["peer_key_string"][:12] + "…",
                item["device_name"] or "?",
                item["os"] or "?",
                "self" if item["hops"] == 0 else str(item["hops"]),
                ", ".join(f"{n}x {t}" for t, n in sorted(types.items())) or "-",
                _summary(item["peer_metadata"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    count = len(document["remote_peers"])
    lines.append(f"{count} remote peer{'s' if count != 1 else ''}")
    return "\n".join(lines)


def change_lines(
    previous: dict[str, Any] | None, document: dict[str, Any], *, as_json: bool
) -> Iterator[str]:
    """One line per change between two graph documents (the first graph: one line per peer)."""
    new = graph_from_document(document)
    old = graph_from_document(previous) if previous is not None else None
    diff = new.diff(old)
    events: list[dict[str, Any]] = []
    events += [
        {"event": "joined", "peer": p.peer_key_string, "name": p.device_name, "hops": p.hops}
        for p in diff.joined
    ]
    events += [{"event": "left", "peer": p.peer_key_string, "name": p.device_name} for p in diff.left]
    events += [{"event": "changed", "peer": p.peer_key_string, "name": p.device_name} for p in diff.changed]
    events += [{"event": "link_up", "connection": c.id} for c in diff.connections_added]
    events += [{"event": "link_down", "connection": c.id} for c in diff.connections_removed]
    for event in events:
        if as_json:
            yield json.dumps(event, ensure_ascii=False)
        else:
            detail = event.get("name") or ""
            subject = event.get("peer", event.get("connection", ""))
            yield f"{event['event']:<9} {subject} {detail}".rstrip()


def _distance(meters: float | None) -> str:
    if meters is None:
        return "-"
    return f"{meters / 1000:.1f} km" if meters >= 1000 else f"{meters:.0f} m"


def connections_table(document: dict[str, Any]) -> str:
    """One row per connection in the graph (each once): both ends' names, its type and distance."""
    peers = [document["local_peer"], *document["remote_peers"]]
    names: dict[str, str] = {
        p["peer_key_string"]: p["device_name"] or p["peer_key_string"][:12] + "…" for p in peers
    }
    seen: dict[str, dict[str, Any]] = {}
    for peer in peers:
        for connection in peer["connections"]:
            seen.setdefault(connection["id"], connection)

    def name(key: str) -> str:
        return names.get(key, key[:12] + "…")

    body = sorted(
        (
            *sorted((name(c["peer_key_string1"]), name(c["peer_key_string2"]))),
            c["connection_type"],
            _distance(c["approximate_distance_in_meters"]),
        )
        for c in seen.values()
    )
    rows = [("FROM", "TO", "TYPE", "DISTANCE"), *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def status_text(answer: dict[str, Any]) -> str:
    """``presence-agent status`` for a person: the transports' reports, the mirror, then every
    non-zero counter (the control socket's ``status`` answer)."""
    lines = [f"peer     {answer['peer_key_string']}"]
    for report in answer.get("transports", []):
        if report.get("transport") == "radio":
            for port in report["ports"]:
                if port["up"]:
                    lines.append(
                        f"radio    {port['port']}: {port['radio']} dongle {port['dongle_id']}, "
                        f"firmware {port['firmware']}, MTU {port['mtu']}"
                    )
                else:
                    lines.append(f"radio    {port['port']}: no dongle up (watching the port)")
        elif report.get("transport") == "ble":
            connected = report["connected"]
            lines.append(
                f"ble      {len(connected)} of {report['max_connections']} connections"
                + (f": {', '.join(connected)}" if connected else "")
            )
            for node in report["waiting"]:
                lines.append(
                    f"ble      waiting for a slot: {node['peer_id']} (for {node['waiting_s']:g} s; "
                    "[ble] max_connections)"
                )
    mqtt = answer.get("mqtt")
    lines.append(f"mqtt     {mqtt['state']} ({mqtt['broker']})" if mqtt else "mqtt     off")
    counters = sorted((k, v) for k, v in answer["stats"].items() if v)
    width = max((len(k) for k, _ in counters), default=0)
    lines.append("counters (non-zero):")
    lines += [f"  {k.ljust(width)}  {v}" for k, v in counters]
    return "\n".join(lines)


class LiveTable:
    """What the demos print as a mesh forms: a table each time it changes, stamped with the seconds
    since ``started`` (a monotonic time), and one line the first time everyone is seen."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.shown = ""
        #: Seconds from ``started`` to the first :meth:`seen` that was true, or None.
        self.all_seen_at: float | None = None

    def show(self, table: str) -> None:
        if table != self.shown:
            print(f"[{time.monotonic() - self.started:6.2f} s]\n{table}\n", flush=True)
            self.shown = table

    def seen(self, everyone: bool, what: str) -> None:
        """Print ``what`` and the time, once, the first time ``everyone`` holds."""
        if self.all_seen_at is None and everyone:
            self.all_seen_at = time.monotonic() - self.started
            print(f"{what} after {self.all_seen_at:.2f} s\n", flush=True)
