"""Figure 9's section of docs/PERFORMANCE.md and its lines in the summary table (bench/report.py
calls :func:`section` and :func:`summary`; :mod:`bench.trust_figure` measures)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TIMES = "\u00d7"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _n(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _lan(fig: dict[str, Any], trust: str, shape: str) -> dict[str, Any]:
    rows = fig["lan"]["rows"]
    row: dict[str, Any] = next(r for r in rows if r["trust"] == trust and r["handshake"] == shape)
    return row


def section(fig: dict[str, Any]) -> list[str]:
    lan, lora, ingest = fig["lan"], fig["lora_handshakes"], fig["ingest"]
    out = [
        f"## Figure 9: {fig['title']}",
        "",
        "Fleet trust (issue 15) beside the same measures without it; the method is in "
        "`bench/trust_figure.py` and `bench/trust.py`. **Goals** (set with the figure: the issue names "
        "none) are in the table at the top.",
        "",
        f"**Handshakes on the LAN**: two in-process engines on a zero-latency wire, CPU time of both "
        f"ends until established and quiet, {lan['repetitions']} pairs per configuration, interleaved; "
        "medians. Trust on puts the certificate in each card (first contact: sent whole in HELLO) and "
        "requires sealed, encrypted links.",
        "",
    ]
    out += _table(
        ["trust", "links", "handshake", "CPU (ms)", "bytes", "frames"],
        [
            [
                r["trust"],
                r["sealing"],
                r["handshake"],
                _n(r["median_ms"], 3),
                f"{r['bytes']}",
                f"{r['frames']}",
            ]
            for r in lan["rows"]
        ],
    )
    out += [
        "**Handshakes on LoRa** (the simulator: two engines 800 m apart, 125 kHz, EU868 g1 1 % duty "
        "cycle, keepalives sized to a tenth of it): simulated seconds from the first frame on the air "
        'until both hold the link, and what the two sent meanwhile; medians over seeds. "mesh key" '
        "seals every radio frame (16 bytes); trust on adds the certificates (the HELLOs go in fragments) "
        "and encrypts.",
        "",
    ]
    rows = []
    for r in lora:
        if r["completed"]:
            took = f"{_n(r['median_s'])} s"
            sent = f"{r['median_frames']} / {r['median_bytes']} B / {_n(r['median_airtime_s'])} s"
        else:
            took = f"not within {fig['lora_timeout_s'] / 3600:g} h"
            sent = f"{_n(r['airtime_s_at_timeout'])} s of airtime by then"
        note = "; ".join(r["errors"]) if r["errors"] else ""
        rows.append([f"SF{r['sf']}", r["config"], f"{r['completed']}/{r['runs']}", took, sent, note])
    header = ["SF", "configuration", "completed", "time (median)", "frames / bytes / airtime", "error"]
    out += _table(header, rows)
    incomplete = [r for r in lora if r["completed"] < r["runs"]]
    if incomplete:
        out += [
            "**Not completed** above is the duty cycle, not a lost frame: at SF12 a full 255-byte frame "
            "is about 9 s of airtime, more than the interface's general budget (the 1 % allowance's "
            "presence share less the keepalive reserve, about 7.2 s an hour), so a full-size sealed frame "
            "(a fragment of a HELLO carrying a certificate) can never be sent and the engine raises "
            "`DwellTimeError` (a crash in a runtime agent). With the mesh key alone the sealed HELLO "
            "(189 bytes, 6.9 s) takes nearly all of an hour's 7.2 s, the PROOF that should follow does not "
            "fit, and the next hour the HELLO round is sent again first: the PROOFs never go (a livelock: "
            "one HELLO an hour from each reaches the air, no PROOF ever does). Without the seal the HELLO is "
            "16 bytes "
            "shorter and the PROOF goes in the next hour, hence the 3,600 s. Trust on LoRa is measured to "
            "work at SF7; SF12 at 1 % needs interfaces that cap frames to their budget and a handshake "
            "that lets a PROOF go before a repeated HELLO.",
            "",
        ]
    out += [
        "**Per frame on LoRa**: the mesh seal's 16 bytes (8-byte counter, 8-byte tag) by the "
        "time-on-air formula, and the seal plus open of a medium frame on this CPU.",
        "",
    ]
    out += _table(
        ["SF", "frame", "bytes plain -> sealed", "airtime plain -> sealed (ms)", f"{TIMES}"],
        [
            [
                f"SF{r['sf']}",
                r["frame"],
                f"{r['plain_bytes']} -> {r['sealed_bytes']}",
                f"{_n(r['plain_ms'], 1)} -> {_n(r['sealed_ms'], 1)}",
                f"{r['sealed_ms'] / r['plain_ms']:.2f}",
            ]
            for r in lan["lora"]["airtime"]
        ],
    )
    out += _table(
        ["mesh seal + open", "frame bytes", "median (us)"],
        [[r["mode"], str(r["frame_bytes"]), _n(r["median_us"], 1)] for r in lan["lora"]["seal"]],
    )
    out += [
        "**Per frame on a LAN link** (keepalive SUMMARYs on an established pair, blocks interleaved): "
        "CPU per frame of both ends and bytes per frame.",
        "",
    ]
    out += _table(
        ["link", "us / frame", f"{TIMES} plain", "bytes / frame"],
        [
            [r["mode"], _n(r["median_us_per_frame"], 1), _n(r["ratio_to_plain"]), str(r["bytes_per_frame"])]
            for r in lan["frames"]
        ],
    )
    out += [
        f"**Ingest with MACs**: figure 2's subject engine taking in {ingest['records_per_repetition']:,} "
        f"new signed records ({ingest['distinct_keys']:,} keys) in the RECORDS frames a real source "
        f"engine sends it on a plain, an authenticated or an encrypted sealed link ({ingest['link_mtu']}-"
        f"byte MTU), against the {ingest['baseline']}; batches interleaved, {ingest['repetitions']} "
        "repetitions, medians.",
        "",
    ]
    out += _table(
        ["subject", "records/s", "us / record", f"{TIMES} bare verify", "bytes on the link"],
        [
            [
                r["link"] if r["link"] != "baseline" else "bare verify (baseline)",
                _n(r["median_records_per_s"], 0),
                _n(r["median_us_per_record"]),
                _n(r["ratio_to_baseline"]),
                "-" if r["frame_bytes"] is None else f"{r['frame_bytes']:,}",
            ]
            for r in ingest["rows"]
        ],
    )
    out += [
        f"An encrypted link ingests at {_n(ingest['ratio_encrypted_to_plain'])} {TIMES} the plain link's "
        "rate: one open per frame of many records is small beside a signature check per record.",
        "",
    ]
    return out


def summary(fig: dict[str, Any]) -> list[tuple[str, ...]]:
    on = _lan(fig, "on", "first contact")
    off = _lan(fig, "off", "first contact")
    ingest = {r["link"]: r for r in fig["ingest"]["rows"]}
    return [
        (
            "9 trust",
            "LAN first contact, trust on (off)",
            f"{_n(on['median_ms'], 3)} ms",
            f"{_n(off['median_ms'], 3)} ms",
            f"{on['median_ms'] / off['median_ms']:.2f}" if off["median_ms"] else "-",
        ),
        (
            "9 trust",
            "ingest, encrypted link (bare verify)",
            f"{_n(ingest['encrypted']['median_records_per_s'], 0)}/s",
            f"{_n(ingest['baseline']['median_records_per_s'], 0)}/s",
            _n(ingest["encrypted"]["ratio_to_baseline"]),
        ),
    ]
