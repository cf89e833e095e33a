"""Figure 1: signed record sizes, beside the same content as signed JSON.

Every record is signed at the widest counter and expiry encodings (uint32
maximum), so the sizes are upper bounds for real records with the same
content. The baseline renders the same content the way a JSON API naturally
would: compact JSON (no spaces), field names spelled out, the public key, peer
ids and the 64-byte signature in standard base64, distances in metres.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.core.errors import MetadataError
from agent.core.limits import MAX_COUNTER, MAX_RECORD_BYTES
from agent.core.records import (
    Card,
    ConnectionType,
    LinkEntry,
    Links,
    Record,
    check_card_budget,
    make_card,
    sign_record,
    thaw_metadata,
    validate_metadata,
    worst_case_card_size,
)
from bench.common import goal, progress, ratio, rounded

CARD_GOAL_BYTES = 160
LINKS8_GOAL_BYTES = 233
CONNECTION_COUNTS = (1, 4, 8, 16)
BASELINE = "the same content as compact JSON with a base64 Ed25519 signature"


def _key(seed: int) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _signature(record: Record) -> bytes:
    return record.raw[-64:]


def card_json(record: Record) -> bytes:
    """The card's content as a JSON API would naturally carry it."""
    body = record.body
    assert isinstance(body, Card)
    doc = {
        "kind": "card",
        "public_key": _b64(record.public_key),
        "counter": record.counter,
        "expiry": record.expiry,
        "device_name": body.device_name,
        "os": body.os,
        "agent_version": body.agent_version,
        "metadata": thaw_metadata(body.metadata),
        "signature": _b64(_signature(record)),
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def links_json(record: Record) -> bytes:
    """The links record's content as a JSON API would naturally carry it."""
    body = record.body
    assert isinstance(body, Links)
    connections: list[dict[str, Any]] = []
    for entry in body.entries:
        item: dict[str, Any] = {"peer_id": _b64(entry.peer_id), "type": entry.connection_type.value}
        if entry.distance_dm is not None:
            item["distance_m"] = entry.distance_dm / 10
        connections.append(item)
    doc = {
        "kind": "links",
        "public_key": _b64(record.public_key),
        "counter": record.counter,
        "expiry": record.expiry,
        "connections": connections,
        "signature": _b64(_signature(record)),
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fits(public_key: bytes, metadata: dict[str, Any]) -> bool:
    try:
        validate_metadata(metadata)
        check_card_budget(public_key, make_card("pi-kitchen-01", "Linux", "0.1.0", metadata))
    except MetadataError:
        return False
    return True


def _pad_to_limit(public_key: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    low, high = 0, MAX_RECORD_BYTES  # the longest notes string that still fits
    while low < high:
        mid = (low + high + 1) // 2
        if _fits(public_key, {**metadata, "notes": "n" * mid}):
            low = mid
        else:
            high = mid - 1
    return {**metadata, "notes": "n" * low}


def sensor_metadata(public_key: bytes) -> dict[str, Any]:
    """Plausible metadata (a list of sensors, then a notes string) grown until nothing more fits.

    The 4096-byte limit on the metadata's compact JSON is what stops it.
    """
    sensors: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {"app_version": "1.2.4", "role": "gateway", "sensors": sensors}
    while True:
        i = len(sensors)
        sensors.append({"id": i, "kind": "temperature", "unit": "C", "value": 21.5 + i / 10})
        if not _fits(public_key, metadata):
            sensors.pop()
            break
    return _pad_to_limit(public_key, metadata)


def text_metadata(public_key: bytes) -> dict[str, Any]:
    """The longest single text value that fits: the 4096-byte signed-card limit stops it."""
    return _pad_to_limit(public_key, {})


def _row(name: str, record: Record, as_json: bytes) -> dict[str, Any]:
    return {
        "record": name,
        "cose_bytes": len(record.raw),
        "json_bytes": len(as_json),
        "ratio_cose_to_json": rounded(ratio(len(record.raw), len(as_json))),
    }


def run() -> dict[str, Any]:
    """Sign each record at the widest counter and expiry; measure it and its JSON twin."""
    progress("figure 1: record sizes")
    private, public = _key(1)
    rows = []
    card = sign_record(
        private, public, MAX_COUNTER, MAX_COUNTER, make_card("pi-kitchen-01", "Linux", "0.1.0", {})
    )
    rows.append(_row("card, no metadata", card, card_json(card)))
    limit_sizes = []
    limit_metadata: dict[str, dict[str, Any]] = {}
    for label, metadata in (
        ("sensor list, JSON limit binds", sensor_metadata(public)),
        ("one text value, card limit binds", text_metadata(public)),
    ):
        body = make_card("pi-kitchen-01", "Linux", "0.1.0", metadata)
        limit_card = sign_record(private, public, MAX_COUNTER, MAX_COUNTER, body)
        assert len(limit_card.raw) == worst_case_card_size(public, body)
        limit_sizes.append(len(limit_card.raw))
        rows.append(_row(f"card at the metadata limit ({label})", limit_card, card_json(limit_card)))
        limit_metadata[label] = {
            "metadata_json_bytes": len(json.dumps(metadata, separators=(",", ":")).encode("utf-8")),
            "sensors": len(metadata.get("sensors", ())),
        }
    neighbours = [_key(10 + i)[1] for i in range(max(CONNECTION_COUNTS))]
    links_sizes: dict[int, int] = {}
    for count in CONNECTION_COUNTS:
        entries = tuple(
            LinkEntry(neighbours[i][:8], ConnectionType.RADIO, 125 + 37 * i) for i in range(count)
        )
        record = sign_record(private, public, MAX_COUNTER, MAX_COUNTER, Links(entries))
        links_sizes[count] = len(record.raw)
        plural = "s" if count > 1 else ""
        rows.append(_row(f"links, {count} connection{plural} with distances", record, links_json(record)))
    return {
        "title": "Record sizes",
        "goal": (
            f"card with no metadata ≤ {CARD_GOAL_BYTES} B; card at the metadata limit ≤ "
            f"{MAX_RECORD_BYTES} B; links record with 8 connections ≤ {LINKS8_GOAL_BYTES} B"
        ),
        "baseline": BASELINE,
        "repetitions": 1,
        "repetitions_note": "sizes are deterministic: one measurement each",
        "counter_and_expiry": MAX_COUNTER,
        "limit_metadata": limit_metadata,
        "rows": rows,
        "goals": [
            goal("card, no metadata", len(card.raw), CARD_GOAL_BYTES, at_most=True, unit="B"),
            goal("card at the metadata limit", max(limit_sizes), MAX_RECORD_BYTES, at_most=True, unit="B"),
            goal("links, 8 connections", links_sizes[8], LINKS8_GOAL_BYTES, at_most=True, unit="B"),
        ],
    }
