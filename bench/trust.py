"""What fleet trust and sealed links cost: a LAN handshake, and every frame after it.

    python -m bench.trust [--repetitions 200] [--out bench/trust.json]

Two in-process engines on a zero-latency in-memory wire (LAN link spec, no
send budget) run the real handshake: HELLO, PROOF, ACCEPT and the first
SUMMARY (the links records follow on a 50 ms timer, not counted). Measured per
handshake, from both ``link_up`` calls until both ends are established and
nothing is left to send:

* **time**: CPU time of the whole exchange on this machine (both engines; the
  wire adds none), so it is the handshake's own cost: signatures (PROOF, the
  card, with trust on the certificate's CA signature too) and encoding;
* **bytes** and **frames** both engines sent (``bytes.sent``).

Two shapes: a **first contact** (each card sent whole in HELLO, so with trust
on it carries the certificate, about 190 bytes more, and two more signatures
are checked on each side) and a **rejoin** (the same two engines again on a
new link: cards sent by reference, the held certificate only re-judged).
Three configurations: trust off with sealing off (plain links, as before
sealed links), trust off with the default sealing (both ends offer: sealed,
authenticated only) and trust on (sealing required, encrypted). They alternate,
pair by pair, so drift in the machine's load hits all alike; the figures are
medians.

**Per frame** (``frames``): on an established pair, each end's keepalive
timer fires and its SUMMARY goes across (the commonest frame on a quiet link),
``--frames`` times per block; a block of each mode (plain, authenticated,
encrypted) in turn, the order rotating, and the median of the blocks' CPU time
per frame is reported, with the bytes per frame. **Seal and open** times
:mod:`agent.core.session` alone on frames of 12, 223 and 1400 bytes (a SUMMARY,
a links record's RECORDS frame, a full LAN frame).

**LoRa** (``lora``): what the fleet mesh key's seal (:mod:`agent.core.mesh_seal`,
16 bytes a frame) costs on the air, by the Semtech time-on-air formula at SF7
and SF12 (125 kHz, 4/5): a broadcast SUMMARY keepalive (20 bytes plain) and a
full frame; and seal plus open of a medium frame on this CPU.

A measurement, not a test: nothing is asserted. Prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.airtime import LoRaModulation
from agent.core.certs import FleetTrust, issue_certificate, raw_public_key
from agent.core.engine import Engine, EngineConfig, LinkSpec, Membership
from agent.core.events import ConnectionRequested
from agent.core.medium import MEDIUM_HEADER_BYTES
from agent.core.mesh_seal import MESH_OVERHEAD, MeshSeal
from agent.core.records import ConnectionType, make_card
from agent.core.session import Sealing, SessionOffer, derive_session
from agent.core.wire import SEALED_OVERHEAD
from agent.state.store import MemoryCounter
from bench.common import median, progress, rounded

NOW: Final = float(int(time.time()))
DEFAULT_OUT: Final = Path(__file__).with_name("trust.json")
METADATA: Final = {"site": "depot-3", "role": "gateway", "serial": "S-0017"}
_links = itertools.count(1)


class Pair:
    """Two engines and the wire between them; ``ca`` set: both with trust on, certified by it."""

    def __init__(self, ca: Ed25519PrivateKey | None, config: EngineConfig | None = None) -> None:
        self.engines = [self._engine(ca, serial, config) for serial in (1, 2)]
        self.link = 0
        self.now = NOW

    @staticmethod
    def _engine(ca: Ed25519PrivateKey | None, serial: int, config: EngineConfig | None) -> Engine:
        private = Ed25519PrivateKey.generate()
        public = raw_public_key(private)
        membership = None
        if ca is not None:
            cert = issue_certificate(ca, serial, public, METADATA, int(NOW) - 60, int(NOW) + 86_400)
            membership = Membership(FleetTrust.of([raw_public_key(ca)]), cert.raw)
        return Engine(
            private_key=private,
            public_key=public,
            counters=MemoryCounter(),
            card=make_card(f"pi-{serial:02d}", "Linux", "0.1.0", {}),
            now=NOW,
            rng=os.urandom,
            membership=membership,
            config=config,
        )

    def handshake(self) -> tuple[float, int, int]:
        """One handshake on a new link: (CPU seconds, bytes sent, frames sent) by both engines."""
        a, b = self.engines
        link = self.link = next(_links)
        before = [(e.stats["bytes.sent"], e.stats["frames.sent"]) for e in self.engines]
        started = time.process_time()
        a.link_up(link, LinkSpec(ConnectionType.ACCESS_POINT, expected_peer=b.public_key), NOW)
        b.link_up(link, LinkSpec(ConnectionType.ACCESS_POINT, expected_peer=a.public_key), NOW)
        self._pump(link)
        elapsed = time.process_time() - started
        if not all(any(item[0] == link for item in e.established_links()) for e in self.engines):
            raise RuntimeError("the handshake did not complete")
        sent = [(e.stats["bytes.sent"], e.stats["frames.sent"]) for e in self.engines]
        data = sum(s[0] - p[0] for s, p in zip(sent, before, strict=True))
        frames = sum(s[1] - p[1] for s, p in zip(sent, before, strict=True))
        return elapsed, data, frames

    def _pump(self, link: int, now: float = NOW) -> None:
        a, b = self.engines
        other = {id(a): b, id(b): a}
        for _ in range(10_000):
            moved = False
            for engine in self.engines:
                while (event := engine.next_event()) is not None:
                    if isinstance(event, ConnectionRequested):
                        engine.decide(event.link, True, now)
                        moved = True
                for _, frame in engine.datagrams_to_send(now):
                    other[id(engine)].receive(link, frame, now)
                    moved = True
            if not moved:
                return
        raise RuntimeError("the engines never went quiet")

    def keepalives(self, count: int) -> tuple[float, int, int]:
        """``count`` keepalive rounds on the established link: (CPU seconds, bytes, frames)."""
        before = [(e.stats["bytes.sent"], e.stats["frames.sent"]) for e in self.engines]
        started = time.process_time()
        for _ in range(count):
            self.now += 1.0  # the keepalive interval: each end sends its SUMMARY
            for engine in self.engines:
                engine.handle_timer(self.now)
            self._pump(self.link, self.now)
        elapsed = time.process_time() - started
        sent = [(e.stats["bytes.sent"], e.stats["frames.sent"]) for e in self.engines]
        data = sum(s[0] - p[0] for s, p in zip(sent, before, strict=True))
        frames = sum(s[1] - p[1] for s, p in zip(sent, before, strict=True))
        return elapsed, data, frames

    def drop(self) -> None:
        """The link goes down at both ends (each keeps the other's card)."""
        for engine in self.engines:
            engine.link_down(self.link, NOW)


#: The handshake configurations: (trust, sealing) -> engine config (``None``: the defaults).
HANDSHAKES: Final[dict[tuple[str, str], EngineConfig | None]] = {
    ("off", "off"): EngineConfig(sealing=Sealing.OFF),
    ("off", "authenticated"): None,
    ("on", "encrypted"): None,
}
#: The per-frame modes: sealing and encryption of an established trust-off pair.
FRAME_MODES: Final[dict[str, EngineConfig]] = {
    "plain": EngineConfig(sealing=Sealing.OFF),
    "authenticated": EngineConfig(sealing=Sealing.OFFER, encrypt=False),
    "encrypted": EngineConfig(sealing=Sealing.OFFER, encrypt=True),
}
SEAL_SIZES: Final = (12, 223, 1400)


def measure(
    repetitions: int, frames: int = 200, on_progress: Callable[[str], None] = progress
) -> dict[str, Any]:
    ca = Ed25519PrivateKey.generate()
    keys = list(HANDSHAKES)
    samples: dict[tuple[str, str, str], list[tuple[float, int, int]]] = {
        (trust, sealing, shape): [] for trust, sealing in keys for shape in ("first contact", "rejoin")
    }
    for i in range(repetitions):
        for trust, sealing in keys[i % 3 :] + keys[: i % 3]:
            pair = Pair(ca if trust == "on" else None, HANDSHAKES[(trust, sealing)])
            samples[(trust, sealing, "first contact")].append(pair.handshake())
            pair.drop()
            samples[(trust, sealing, "rejoin")].append(pair.handshake())
        if (i + 1) % 50 == 0:
            on_progress(f"trust: {i + 1}/{repetitions} pairs")
    rows = []
    for (trust, sealing, shape), values in samples.items():
        rows.append(
            {
                "trust": trust,
                "sealing": sealing,
                "handshake": shape,
                "median_ms": rounded(median([v[0] for v in values]) * 1000),
                "bytes": int(median([v[1] for v in values])),
                "frames": int(median([v[2] for v in values])),
                "samples": len(values),
            }
        )
    return {
        "what": "LAN handshake of two in-process engines, both ends, until established and quiet",
        "repetitions": repetitions,
        "certificate_metadata": METADATA,
        "rows": rows,
        "frames": measure_frames(max(10, repetitions // 4), frames, on_progress),
        "seal": measure_seal(repetitions * 10),
        "seal_overhead_bytes": SEALED_OVERHEAD,
        "lora": measure_lora(repetitions * 10),
    }


def measure_frames(blocks: int, per_block: int, on_progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """CPU time and bytes per keepalive frame on an established link, by mode, blocks interleaved."""
    pairs = {}
    for mode, config in FRAME_MODES.items():
        pair = Pair(None, config)
        pair.handshake()
        pairs[mode] = pair
    modes = list(FRAME_MODES)
    samples: dict[str, list[tuple[float, int]]] = {mode: [] for mode in modes}
    for i in range(blocks):
        for mode in modes[i % 3 :] + modes[: i % 3]:
            elapsed, data, count = pairs[mode].keepalives(per_block)
            samples[mode].append((elapsed / count, data // count))
        if (i + 1) % 10 == 0:
            on_progress(f"frames: {i + 1}/{blocks} blocks")
    plain = median([v[0] for v in samples["plain"]])
    return [
        {
            "mode": mode,
            "median_us_per_frame": rounded(median([v[0] for v in values]) * 1e6),
            "ratio_to_plain": rounded(median([v[0] for v in values]) / plain),
            "bytes_per_frame": int(median([v[1] for v in values])),
            "blocks": len(values),
            "frames_per_block": per_block * 2,
        }
        for mode, values in samples.items()
    ]


def measure_seal(repetitions: int) -> list[dict[str, Any]]:
    """Seal and open alone, by frame size and mode: median microseconds of one seal plus its open."""
    a_offer, b_offer = SessionOffer.from_seed(os.urandom(32)), SessionOffer.from_seed(os.urandom(32))
    rows = []
    for encrypt in (False, True):
        a = derive_session(
            a_offer, b_offer.public, own_key=b"a" * 32, remote_key=b"b" * 32,
            own_nonce=b"1" * 16, remote_nonce=b"2" * 16, encrypt=encrypt,
        )  # fmt: skip
        b = derive_session(
            b_offer, a_offer.public, own_key=b"b" * 32, remote_key=b"a" * 32,
            own_nonce=b"2" * 16, remote_nonce=b"1" * 16, encrypt=encrypt,
        )  # fmt: skip
        for size in SEAL_SIZES:
            inner = os.urandom(size)
            times = []
            for _ in range(repetitions):
                started = time.perf_counter()
                b.open(a.seal(inner))
                times.append(time.perf_counter() - started)
            rows.append(
                {
                    "mode": "encrypted" if encrypt else "authenticated",
                    "frame_bytes": size,
                    "median_us": rounded(median(times) * 1e6),
                    "samples": repetitions,
                }
            )
    return rows


def measure_lora(repetitions: int) -> dict[str, Any]:
    """Airtime of plain and mesh-sealed frames at SF7 and SF12, and the seal's CPU per frame."""
    summary = MEDIUM_HEADER_BYTES + 12  # ids, frame byte, CBOR array, type, 8-byte summary
    rows = []
    for sf in (7, 12):
        modulation = LoRaModulation(sf=sf)
        for frame, plain in (("SUMMARY", summary), ("full frame", modulation.mtu - MESH_OVERHEAD)):
            rows.append(
                {
                    "sf": sf,
                    "frame": frame,
                    "plain_bytes": plain,
                    "sealed_bytes": plain + MESH_OVERHEAD,
                    "plain_ms": rounded(modulation.airtime(plain) * 1000),
                    "sealed_ms": rounded(modulation.airtime(plain + MESH_OVERHEAD) * 1000),
                }
            )
    key = os.urandom(32)
    cpu = []
    for encrypt in (False, True):
        sender, receiver = MeshSeal(key, b"SEND", 1, encrypt), MeshSeal(key, b"RECV", 1, encrypt)
        for size in (summary, 200):
            data = b"SEND" + bytes(4) + os.urandom(size - MEDIUM_HEADER_BYTES)
            times = []
            for _ in range(repetitions):
                started = time.perf_counter()
                receiver.open(sender.seal(data))
                times.append(time.perf_counter() - started)
            mode = "encrypted" if encrypt else "authenticated"
            cpu.append({"mode": mode, "frame_bytes": size, "median_us": rounded(median(times) * 1e6)})
    return {"overhead_bytes": MESH_OVERHEAD, "airtime": rows, "seal": cpu}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'trust':<6} {'sealing':<14} {'handshake':<14} {'median ms':>10} {'bytes':>7} {'frames':>7}"]
    for row in result["rows"]:
        trust, sealing, shape, ms = row["trust"], row["sealing"], row["handshake"], row["median_ms"]
        lines.append(f"{trust:<6} {sealing:<14} {shape:<14} {ms:>10} {row['bytes']:>7} {row['frames']:>7}")
    lines += ["", f"{'per frame':<14} {'us/frame':>9} {'x plain':>8} {'bytes':>6}"]
    for row in result["frames"]:
        us, ratio, size = row["median_us_per_frame"], row["ratio_to_plain"], row["bytes_per_frame"]
        lines.append(f"{row['mode']:<14} {us:>9} {ratio:>8} {size:>6}")
    lines += ["", f"{'seal + open':<14} {'bytes':>6} {'us':>8}"]
    for row in result["seal"]:
        lines.append(f"{row['mode']:<14} {row['frame_bytes']:>6} {row['median_us']:>8}")
    lora = result["lora"]
    lines += ["", f"{'LoRa':<4} {'frame':<11} {'bytes':>11} {'airtime ms':>18}"]
    for row in lora["airtime"]:
        sizes = f"{row['plain_bytes']} -> {row['sealed_bytes']}"
        times = f"{row['plain_ms']} -> {row['sealed_ms']}"
        lines.append(f"SF{row['sf']:<2} {row['frame']:<11} {sizes:>11} {times:>18}")
    for row in lora["seal"]:
        lines.append(f"mesh seal + open {row['mode']:<14} {row['frame_bytes']:>4} B {row['median_us']:>8} us")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trust", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=200, help="pairs per configuration")
    parser.add_argument("--frames", type=int, default=200, help="keepalive rounds per block")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    args = parser.parse_args(argv)
    result = measure(args.repetitions, args.frames)
    print(table(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
