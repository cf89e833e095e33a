"""Figure 2: how fast one core takes in signed records through the real engine.

Subject: an :class:`~agent.core.engine.Engine` with two established links (the
records arrive on one; each accepted record is queued for flooding on the
other) is fed RECORDS frames, built with :func:`~agent.core.wire.encode_message`
and ``FRAME_WHOLE`` exactly as a neighbour would send them, through
:meth:`Engine.receive`. Every record is new: a card and a links record from
each of many distinct keys, all signed before any timing starts. Each record
is decoded (frame, message, COSE envelope, payload), checked, verified and
merged.

Baseline: the fastest raw verify loop, ``ed25519.verify(pk, sig_structure, sig)``
(:mod:`agent.core.ed25519`, libsodium: the very call the engine's codec makes)
over the same records, with the envelopes opened and the signed bytes built
beforehand. A second, informational baseline runs the old OpenSSL loop,
``Ed25519PublicKey.from_public_bytes(pk).verify(sig, sig_structure)``, and the
codec alone (``open_record`` + ``verify_record``) says how the subject's time
splits between decoding and the engine.

Interleaving: each repetition cuts the frames into small batches; for every batch
the subject, the baseline, the OpenSSL loop and the codec run on that batch's
records one after another, in an order that flips from batch to batch, so that
machine load hits them alike. A repetition's rate for each is its records over
its summed batch times; the ratio is taken per repetition, and medians and
spreads (min, max, quartiles) are reported over the repetitions.

Duplicates: the same frames fed again to the same engine (flood echoes), which
the engine drops by a byte-exact lookup. Each repetition builds a fresh engine
outside the timed region.

The links are plain (``sealing`` off), so the frames are exactly the records'
bytes: this figure is the record path. What sealing adds per frame (one open,
5-7 us) is measured by ``python -m bench.trust``.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from agent.core import cose, ed25519
from agent.core.engine import Engine, EngineConfig, LinkSpec
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
from agent.core.session import Sealing
from agent.core.wire import FRAME_WHOLE, MessageType, encode_message
from agent.state.store import MemoryCounter
from bench.common import TIMES, Mode, goal, median, progress, ratio, rounded

RATIO_GOAL = 0.8
DUPLICATE_GOAL = 20.0
BASELINE = (
    "bare loop of ed25519.verify(pk, sig_structure, sig) (agent.core.ed25519: libsodium, the call the "
    "engine makes) on the same records"
)
OPENSSL_BASELINE = (
    "bare loop of Ed25519PublicKey.from_public_bytes(pk).verify(sig, sig_structure) (cryptography: OpenSSL) "
    "on the same records"
)
NOW = 1_800_000_000.0
MTU = 1400
SOURCE = "source"
OTHER = "other"
#: Frames per interleaved batch (about 200 records, some 12 ms of each measurement).
BATCH_FRAMES = 25

#: A signature input: (raw public key, signed bytes, signature).
SignedItem = tuple[bytes, bytes, bytes]


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
        config=EngineConfig(sealing=Sealing.OFF),
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


def _timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _receive(engine: Engine, frames: Sequence[bytes]) -> None:
    receive = engine.receive
    for frame in frames:
        receive(SOURCE, frame, NOW)


def _verify_sodium(items: Sequence[SignedItem]) -> None:
    verify = ed25519.verify
    for public_key, signed, signature in items:
        if not verify(public_key, signed, signature):
            raise RuntimeError("a benchmark signature does not verify")


def _verify_openssl(items: Sequence[SignedItem]) -> None:
    load = Ed25519PublicKey.from_public_bytes
    for public_key, signed, signature in items:
        load(public_key).verify(signature, signed)


def _codec(records: Sequence[bytes]) -> None:
    """Decode, check and verify each record as the engine's codec does, without the engine."""
    for raw in records:
        verify_record(open_record(raw), raw)


def _batches(records: list[bytes], frames: list[bytes]) -> list[tuple[list[bytes], list[bytes]]]:
    """Consecutive (frames, the records they carry) batches of ``BATCH_FRAMES`` frames."""
    batches = []
    done = 0
    for start in range(0, len(frames), BATCH_FRAMES):
        chunk = frames[start : start + BATCH_FRAMES]
        carried = sum(frame.count(b"\xd2\x84\x43\xa1\x01\x27\xa0") for frame in chunk)
        batches.append((chunk, records[done : done + carried]))
        done += carried
    if done != len(records):
        raise RuntimeError("could not split the frames into batches of their records")
    return batches


def spread(values: Sequence[float], digits: int = 4) -> dict[str, float | None]:
    """Median, quartiles and extremes of repeated measurements, for the results file."""
    quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {
        "median": rounded(median(values), digits),
        "q1": rounded(quartiles[0], digits),
        "q3": rounded(quartiles[2], digits),
        "min": rounded(min(values), digits),
        "max": rounded(max(values), digits),
    }


def run(mode: Mode) -> dict[str, Any]:
    """Repetitions of subject, baselines and duplicates, interleaved in batches; rates in records/s."""
    progress(f"figure 2: signing {2 * mode.ingest_keys} records from {mode.ingest_keys} keys")
    records = make_records(mode.ingest_keys)
    frames = pack_frames(records)
    batches = []
    for chunk, carried in _batches(records, frames):
        items = []
        for raw in carried:
            envelope = open_record(raw)  # parsed outside the timing: the baselines only verify
            items.append((envelope.public_key, cose.sig_structure(envelope.payload), envelope.signature))
        batches.append((chunk, carried, items))
    n = len(records)
    subject: list[float] = []
    duplicates: list[float] = []
    baseline: list[float] = []
    openssl: list[float] = []
    codec: list[float] = []  # where the time goes: the codec alone, beside the baseline
    for rep in range(mode.ingest_repetitions):
        engine = subject_engine(seed=100 + rep)
        before = engine.stats.copy()
        gc.collect()  # once per repetition: a collection before every batch would evict the caches
        spent = {"subject": 0.0, "baseline": 0.0, "openssl": 0.0, "codec": 0.0}
        for index, (chunk, carried, items) in enumerate(batches):
            steps: list[tuple[str, Callable[[], object]]] = [
                ("subject", partial(_receive, engine, chunk)),
                ("baseline", partial(_verify_sodium, items)),
                ("openssl", partial(_verify_openssl, items)),
                ("codec", partial(_codec, carried)),
            ]
            if (rep + index) % 2:
                steps.reverse()
            for name, step in steps:
                spent[name] += _timed(step)
        gc.collect()
        duplicates.append(n / _timed(partial(_receive, engine, frames)))
        subject.append(n / spent["subject"])
        baseline.append(n / spent["baseline"])
        openssl.append(n / spent["openssl"])
        codec.append(n / spent["codec"])
        accepted = engine.stats["records.accepted"] - before["records.accepted"]
        dropped = engine.stats["records.duplicate"] - before["records.duplicate"]
        if accepted != n or dropped != n:
            raise RuntimeError(f"ingest run accepted {accepted} and dropped {dropped} of {n} records")
        progress(
            f"figure 2: repetition {rep + 1}/{mode.ingest_repetitions}: engine {subject[-1]:,.0f}/s, "
            f"libsodium verify {baseline[-1]:,.0f}/s, OpenSSL verify {openssl[-1]:,.0f}/s, "
            f"duplicates {duplicates[-1]:,.0f}/s"
        )
    subject_median = median(subject)
    baseline_median = median(baseline)
    duplicate_median = median(duplicates)
    pair_ratios = [s / b for s, b in zip(subject, baseline, strict=True)]
    ingest_ratio = median(pair_ratios)
    duplicate_ratio = ratio(duplicate_median, baseline_median)
    return {
        "title": "Ingest: signed records decoded, verified and merged per second on one core",
        "goal": (
            f"engine rate ≥ {RATIO_GOAL} {TIMES} bare verify rate; "
            f"duplicates dropped ≥ {DUPLICATE_GOAL:g} {TIMES} bare verify rate"
        ),
        "baseline": BASELINE,
        "second_baseline": OPENSSL_BASELINE,
        "repetitions": mode.ingest_repetitions,
        "records_per_repetition": n,
        "distinct_keys": mode.ingest_keys,
        "frames_per_repetition": len(frames),
        "frames_per_batch": BATCH_FRAMES,
        "batches_per_repetition": len(batches),
        "mean_record_bytes": rounded(sum(len(r) for r in records) / n, 1),
        "link_mtu": MTU,
        "subject_records_per_s": [rounded(v, 1) for v in subject],
        "baseline_verifies_per_s": [rounded(v, 1) for v in baseline],
        "openssl_verifies_per_s": [rounded(v, 1) for v in openssl],
        "codec_records_per_s": [rounded(v, 1) for v in codec],
        "duplicates_per_s": [rounded(v, 1) for v in duplicates],
        "median_subject_records_per_s": rounded(subject_median, 1),
        "median_baseline_verifies_per_s": rounded(baseline_median, 1),
        "median_openssl_verifies_per_s": rounded(median(openssl), 1),
        "median_duplicates_per_s": rounded(duplicate_median, 1),
        "median_subject_us_per_record": rounded(1e6 / subject_median, 2),
        "median_baseline_us_per_verify": rounded(1e6 / baseline_median, 2),
        "median_openssl_us_per_verify": rounded(1e6 / median(openssl), 2),
        "median_codec_us_per_record": rounded(1e6 / median(codec), 2),
        "subject_spread": spread(subject, 1),
        "baseline_spread": spread(baseline, 1),
        "openssl_spread": spread(openssl, 1),
        "ratio_spread": spread(pair_ratios),
        "ratio_subject_to_baseline": rounded(ingest_ratio),
        "ratio_of_medians": rounded(ratio(subject_median, baseline_median)),
        "ratio_subject_to_openssl": rounded(median([s / o for s, o in zip(subject, openssl, strict=True)])),
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
