"""Figure 2: how fast one core takes in signed records through the real engine.

Subject: an :class:`~agent.core.engine.Engine` with two established links (the
records arrive on one; each accepted record is queued for flooding on the
other) is fed RECORDS frames, built with :func:`~agent.core.wire.encode_message`
and ``FRAME_WHOLE`` exactly as a neighbour would send them, through
:meth:`Engine.receive`. Every record is new: a card and a links record from
each of many distinct keys, all signed before any timing starts. Each record
is decoded (frame, message, COSE envelope, payload), checked, verified and
merged.

Baseline, in the same run: a bare loop of
``Ed25519PublicKey.from_public_bytes(pk).verify(sig, sig_structure)`` over the
same records, with the envelopes opened and the signed bytes built beforehand.

Duplicates: the same frames fed again to the same engine (flood echoes), which
the engine drops by a byte-exact lookup.

Subject and baseline alternate (their order flips every repetition); each
repetition builds a fresh engine outside the timed region.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from agent.core import cose
from agent.core.engine import Engine, LinkSpec
from agent.core.events import ConnectionRequested
from agent.core.records import (
    ConnectionType,
    LinkEntry,
    Links,
    make_card,
    open_record,
    sign_record,
    verify_record,
)
from agent.core.wire import FRAME_WHOLE, MessageType, encode_message
from agent.state.store import MemoryCounter
from bench.common import TIMES, Mode, goal, median, progress, ratio, rounded

RATIO_GOAL = 0.8
DUPLICATE_GOAL = 20.0
BASELINE = (
    "bare loop of Ed25519PublicKey.from_public_bytes(pk).verify(sig, sig_structure) on the same records"
)
NOW = 1_800_000_000.0
MTU = 1400
SOURCE = "source"
OTHER = "other"


def _keypair(rng: random.Random) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def make_records(keys: int, seed: int = 1) -> list[bytes]:
    """A card and a links record (4 radio connections) from each of ``keys`` distinct keys."""
    rng = random.Random(seed)
    pairs = [_keypair(rng) for _ in range(keys)]
    records = []
    for i, (private, public) in enumerate(pairs):
        card = make_card(f"node-{i:05d}", "Linux", __version__, {})
        records.append(sign_record(private, public, 1, int(NOW + 86400), card).raw)
        neighbours = sorted({pairs[rng.randrange(keys)][1][:8] for _ in range(4)})
        links = Links(
            tuple(LinkEntry(pid, ConnectionType.RADIO, rng.randrange(1, 3000)) for pid in neighbours)
        )
        records.append(sign_record(private, public, 2, int(NOW + 86400), links).raw)
    return records


def pack_frames(records: list[bytes], mtu: int = MTU) -> list[bytes]:
    """RECORDS frames of at most ``mtu`` bytes, packed greedily like the engine packs them."""
    frames: list[bytes] = []
    batch: list[bytes] = []
    for raw in records:
        candidate = bytes([FRAME_WHOLE]) + encode_message(MessageType.RECORDS, *batch, raw)
        if batch and len(candidate) > mtu:
            frames.append(bytes([FRAME_WHOLE]) + encode_message(MessageType.RECORDS, *batch))
            batch = []
        batch.append(raw)
    if batch:
        frames.append(bytes([FRAME_WHOLE]) + encode_message(MessageType.RECORDS, *batch))
    if any(len(frame) > mtu for frame in frames):
        raise ValueError("a record does not fit one frame")
    return frames


def _engine(rng: random.Random, name: str) -> Engine:
    private, public = _keypair(rng)
    return Engine(
        private_key=private,
        public_key=public,
        counters=MemoryCounter(),
        card=make_card(name, "Linux", __version__, {}),
        now=NOW,
        rng=rng.randbytes,
    )


def _connect(a: Engine, link_a: str, b: Engine, link_b: str) -> None:
    """Run the real handshake between two engines until both sides are established."""
    a.link_up(link_a, LinkSpec(ConnectionType.ACCESS_POINT, mtu=MTU, expected_peer=b.public_key), NOW)
    b.link_up(link_b, LinkSpec(ConnectionType.ACCESS_POINT, mtu=MTU, expected_peer=a.public_key), NOW)
    ends = ((a, b, link_b), (b, a, link_a))
    for _ in range(20):
        for sender, receiver, receiver_link in ends:
            while (event := sender.next_event()) is not None:
                if isinstance(event, ConnectionRequested):
                    sender.decide(event.link, True, NOW)
            for _, frame in sender.datagrams_to_send(NOW):
                receiver.receive(receiver_link, frame, NOW)
        if any(link == link_a for link, _, _ in a.established_links()) and any(
            link == link_b for link, _, _ in b.established_links()
        ):
            return
    raise RuntimeError("benchmark engines did not complete their handshake")


def subject_engine(seed: int) -> Engine:
    """An engine with two established links: ``source`` (records arrive) and ``other``."""
    rng = random.Random(seed)
    engine = _engine(rng, "bench-subject")
    _connect(engine, SOURCE, _engine(rng, "bench-source"), "to-subject")
    _connect(engine, OTHER, _engine(rng, "bench-other"), "to-subject")
    return engine


def _time_receive(engine: Engine, frames: list[bytes]) -> float:
    gc.collect()
    receive = engine.receive
    start = time.perf_counter()
    for frame in frames:
        receive(SOURCE, frame, NOW)
    return time.perf_counter() - start


def _time_verify(items: list[tuple[bytes, bytes, bytes]]) -> float:
    gc.collect()
    load = Ed25519PublicKey.from_public_bytes
    start = time.perf_counter()
    for public_key, signature, signed in items:
        load(public_key).verify(signature, signed)
    return time.perf_counter() - start


def _time_codec(records: list[bytes]) -> float:
    """Decode, check and verify each record as the engine's codec does, without the engine."""
    gc.collect()
    start = time.perf_counter()
    for raw in records:
        verify_record(open_record(raw), raw)
    return time.perf_counter() - start


def run(mode: Mode) -> dict[str, Any]:
    """Interleaved repetitions of subject, duplicates and baseline; rates in records per second."""
    progress(f"figure 2: signing {2 * mode.ingest_keys} records from {mode.ingest_keys} keys")
    records = make_records(mode.ingest_keys)
    frames = pack_frames(records)
    items = []
    for raw in records:
        envelope = open_record(raw)  # parsed outside the timing: the baseline only verifies
        items.append((envelope.public_key, envelope.signature, cose.sig_structure(envelope.payload)))
    n = len(records)
    subject: list[float] = []
    duplicates: list[float] = []
    baseline: list[float] = []
    codec: list[float] = []  # where the time goes: the codec alone, beside the baseline
    for rep in range(mode.ingest_repetitions):
        engine = subject_engine(seed=100 + rep)
        before = engine.stats.copy()

        def measure_subject(engine: Engine = engine) -> None:
            elapsed = _time_receive(engine, frames)
            subject.append(n / elapsed)
            elapsed = _time_receive(engine, frames)
            duplicates.append(n / elapsed)

        def measure_baseline() -> None:
            baseline.append(n / _time_verify(items))
            codec.append(n / _time_codec(records))

        order = (measure_subject, measure_baseline) if rep % 2 == 0 else (measure_baseline, measure_subject)
        for step in order:
            step()
        accepted = engine.stats["records.accepted"] - before["records.accepted"]
        dropped = engine.stats["records.duplicate"] - before["records.duplicate"]
        if accepted != n or dropped != n:
            raise RuntimeError(f"ingest run accepted {accepted} and dropped {dropped} of {n} records")
        progress(
            f"figure 2: repetition {rep + 1}/{mode.ingest_repetitions}: engine {subject[-1]:,.0f}/s, "
            f"bare verify {baseline[-1]:,.0f}/s, duplicates {duplicates[-1]:,.0f}/s"
        )
    subject_median = median(subject)
    baseline_median = median(baseline)
    duplicate_median = median(duplicates)
    ingest_ratio = ratio(subject_median, baseline_median)
    duplicate_ratio = ratio(duplicate_median, baseline_median)
    pair_ratios = [s / b for s, b in zip(subject, baseline, strict=True)]
    return {
        "title": "Ingest: signed records decoded, verified and merged per second on one core",
        "goal": (
            f"engine rate ≥ {RATIO_GOAL} {TIMES} bare verify rate; "
            f"duplicates dropped ≥ {DUPLICATE_GOAL:g} {TIMES} bare verify rate"
        ),
        "baseline": BASELINE,
        "repetitions": mode.ingest_repetitions,
        "records_per_repetition": n,
        "distinct_keys": mode.ingest_keys,
        "frames_per_repetition": len(frames),
        "mean_record_bytes": rounded(sum(len(r) for r in records) / n, 1),
        "link_mtu": MTU,
        "subject_records_per_s": [rounded(v, 1) for v in subject],
        "baseline_verifies_per_s": [rounded(v, 1) for v in baseline],
        "duplicates_per_s": [rounded(v, 1) for v in duplicates],
        "median_subject_records_per_s": rounded(subject_median, 1),
        "median_baseline_verifies_per_s": rounded(baseline_median, 1),
        "median_duplicates_per_s": rounded(duplicate_median, 1),
        "median_subject_us_per_record": rounded(1e6 / subject_median, 2),
        "median_baseline_us_per_verify": rounded(1e6 / baseline_median, 2),
        "median_codec_us_per_record": rounded(1e6 / median(codec), 2),
        "ratio_subject_to_baseline": rounded(ingest_ratio),
        "ratio_subject_to_baseline_pairwise_median": rounded(median(pair_ratios)),
        "ratio_duplicates_to_baseline": rounded(duplicate_ratio),
        "goals": [
            goal(
                "engine ingest rate / bare verify rate", ingest_ratio, RATIO_GOAL, at_most=False, unit=TIMES
            ),
            goal(
                "duplicate drop rate / bare verify rate",
                duplicate_ratio,
                DUPLICATE_GOAL,
                at_most=False,
                unit=TIMES,
            ),
        ],
    }
