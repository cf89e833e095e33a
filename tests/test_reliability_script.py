"""The reliability script runs and writes well-formed results and a page. No figure is asserted here:
a missed goal is the script's finding, not a test failure."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import RecordError
from agent.core.limits import MAX_MESSAGE_BYTES
from agent.core.records import open_record, verify_record
from agent.core.wire import decode_message
from bench.reliability.common import Goal, percentile
from bench.reliability.peer import forged_cards, records_frames, sybil_cards

ROOT = Path(__file__).resolve().parents[1]
RUN = ("forged", "kill9")


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    out = tmp_path_factory.mktemp("reliability")
    doc = out / "docs" / "RELIABILITY.md"
    argv = ["-m", "bench.reliability", "--quick", "--only", ",".join(RUN)]
    argv += ["--out", str(out / "reliability.json"), "--doc", str(doc)]
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "reliability.json").read_text(encoding="utf-8"))
    return results, doc.read_text(encoding="utf-8"), proc.stdout


def test_the_quick_run_measures_what_it_was_asked_and_marks_the_rest(
    quick_run: tuple[dict[str, Any], str, str],
) -> None:
    results, _, _ = quick_run
    assert results["mode"] == "quick"
    scenarios = results["scenarios"]
    assert {k for k, s in scenarios.items() if s["status"] == "ran"} == set(RUN)
    assert {s["status"] for k, s in scenarios.items() if k not in RUN} == {"not run"}
    for key in RUN:
        scenario = scenarios[key]
        for field in ("title", "goal", "method", "policy"):
            assert scenario[field], (key, field)
        assert scenario["goals"] and all(isinstance(g["met"], bool) for g in scenario["goals"])
    assert scenarios["forged"]["details"]["rejected_bad_signature"] == 10_000
    assert scenarios["forged"]["series"]["target"]["rss_mb"]
    assert scenarios["kill9"]["details"]["writes_reported_done"] > 0
    assert all(math.isfinite(x) for x in _numbers(results))


def test_the_quick_run_writes_the_page_and_a_summary(quick_run: tuple[dict[str, Any], str, str]) -> None:
    results, page, stdout = quick_run
    assert "## Scenarios at a glance" in page
    for key in RUN:
        assert f"## {results['scenarios'][key]['title']}" in page
    assert "## sybil: not run" in page
    assert stdout.splitlines()[0].split()[:3] == ["scenario", "measure", "measured"]


def test_forged_cards_decode_and_fail_only_their_signature() -> None:
    for raw in forged_cards(50):
        envelope = open_record(raw)  # well-formed: only the signature is wrong
        with pytest.raises(RecordError, match="bad_signature"):
            verify_record(envelope, raw)
    keys = {open_record(raw).public_key for raw in forged_cards(200)}
    assert len(keys) == 200  # a fresh key each


def test_sybil_cards_are_genuine_and_frames_fit_the_mtu() -> None:
    cards = list(sybil_cards(20, 100))
    for raw in cards:
        verify_record(open_record(raw), raw)
    frames = list(records_frames(cards * 100, 16384))
    assert all(len(f) - 4 <= 16384 for f in frames)
    assert sum(len(decode_message(f[5:])[1]) for f in frames) == 2000
    assert all(len(f) <= MAX_MESSAGE_BYTES for f in frames)


def test_goals_and_percentiles() -> None:
    assert Goal("x", 5.0, 5.0).met and not Goal("x", 5.1, 5.0).met
    assert Goal("x", 100.0, 100.0, at_most=False).met and not Goal("x", 99.0, 100.0, at_most=False).met
    assert Goal("x", None, 1.0).met is False  # not measured is a miss, never a pass
    assert percentile([0.1, 0.2, 0.3, 0.4], 0.5) == 0.2
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([], 0.99) is None
