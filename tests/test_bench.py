"""The benchmark suite runs and writes well-formed results. No timing is ever asserted here."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.sim import LinkModel, line
from bench import machine
from bench.baseline import CARD, LINKS, GossipMesh
from bench.simtap import BenchSimulation, summarize

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} in results.json")


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
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    doc = out / "docs" / "PERFORMANCE.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--doc", str(doc)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "results.json", doc, proc.stdout


def test_quick_mode_writes_well_formed_results(quick_run: tuple[Path, Path, str]) -> None:
    results_file, _, _ = quick_run
    results = json.loads(results_file.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    assert results["mode"] == "quick"
    for key in ("cpu_model", "cores", "python", "platform", "date", "git_commit"):
        assert key in results["machine"]
    assert results["machine"]["cores"] >= 1
    figures = results["figures"]
    assert set(figures) == set(MEASURED)
    for key in MEASURED:
        figure = figures[key]
        for field in ("title", "goal", "baseline", "repetitions"):
            assert figure[field], (key, field)
    for key in ("fig1", "fig2", "fig4", "fig6", "fig9"):
        for goal in figures[key]["goals"]:
            assert isinstance(goal["met"], bool), goal
    assert all(math.isfinite(x) for x in _numbers(results))

    sizes = {row["record"]: row for row in figures["fig1"]["rows"]}
    assert sizes["card, no metadata"]["cose_bytes"] > 0
    assert all(row["json_bytes"] > 0 for row in sizes.values())
    ingest = figures["fig2"]
    repetitions = ingest["repetitions"]
    assert len(ingest["subject_records_per_s"]) == repetitions == len(ingest["baseline_verifies_per_s"])
    assert ingest["ratio_subject_to_baseline"] > 0
    propagation = figures["fig3"]
    assert {(m["topology"], m["peers"]) for m in propagation["medians"]} == {
        (t, n) for t in ("random_geometric", "grid", "line") for n in (10, 100)
    }
    for median in propagation["medians"]:
        for change in ("metadata", "link_add", "link_remove", "kill"):
            assert median[change]["subject"]["median_time_s"] > 0
            assert median[change]["baseline"]["median_time_s"] > 0
    lora = figures["fig4"]
    assert [c["loss"] for c in lora["conditions"]] == [0.0, 0.1]
    for condition in lora["conditions"]:
        assert condition["medians"]["quiet_hour"]["card_bytes"] > 0

    processes = figures["fig5"]
    (held,) = processes["memory"]["sizes"]  # quick mode: one size, no numeric goal for it
    assert held["remote_peers"] == 200
    for run in held["runs"]:
        assert run["graph_remote_peers"] == 200
        assert run["rss_bytes"] > 0 and run["idle_rss_bytes"] > 0
    startup = processes["startup"]
    assert len(startup["agent_first_beacon_s"]) == startup["repetitions"]
    assert all(b["median_s"] > 0 for b in startup["baselines"].values())
    observer = processes["observer"]
    assert len(observer["receive_to_callback_s"]) == observer["changes"] > 0
    assert {g["met"] for g in processes["goals"] if g["unit"] == "MB"} == {None}  # no 1,000 / 10,000 here
    lan = figures["fig6"]
    assert [m["agents"] for m in lan["medians"]] == [4]
    for median in lan["medians"]:
        for key in ("all_see_all_s", "sigkill_left_every_graph_s", "sigstop_left_every_graph_s"):
            assert median[f"median_{key}"] > 0
    mqtt = figures["fig7"]  # CI installs mosquitto, so the figure is measured there
    assert mqtt["own_view_ms"] > 0 and mqtt["remote_view_ms"] > 0 and mqtt["broker_floor_ms"] > 0
    field = figures["fig8"]
    (radio,) = field["fields"]  # quick mode: one small SF7 field
    assert radio["formation"]["curve"][0][0] == 0 and radio["formation"]["fraction_held"] > 0
    for change in ("metadata", "link"):
        assert radio["changes"][change]["per_link_transmissions_per_node"] > 0
    assert 0 < radio["duty_cycle"]["max_fraction"] <= radio["duty_cycle"]["allowance"]
    assert [r["peers"] for r in field["leaves"]] == [10, 100]
    assert all(isinstance(g["met"], bool) for g in field["goals"])
    trust = figures["fig9"]
    sf7 = [r for r in trust["lora_handshakes"] if r["sf"] == 7]
    assert [r["config"] for r in sf7] == ["trust off", "mesh key", "trust on"]
    assert all(r["completed"] == r["runs"] for r in sf7)  # SF7 at 1 %: every handshake completes
    assert [r["link"] for r in trust["ingest"]["rows"]] == ["plain", "authenticated", "encrypted", "baseline"]


def test_quick_mode_writes_the_page_and_a_summary(quick_run: tuple[Path, Path, str]) -> None:
    _, doc, stdout = quick_run
    text = doc.read_text(encoding="utf-8")
    for number in range(1, 10):
        assert f"## Figure {number}: " in text
    assert "Left out of this run" not in text
    assert "Baseline:" in text
    plots = sorted(p.name for p in (doc.parent / "perf").glob("*.png"))
    if importlib.util.find_spec("matplotlib") is not None:
        assert plots == [
            "fig1_record_sizes.png",
            "fig2_ingest.png",
            "fig3_propagation.png",
            "fig4_lora.png",
            "fig5_processes.png",
            "fig6_lan.png",
            "fig8_radio_field.png",
        ]
    else:
        assert "matplotlib is not importable" in text
    assert stdout.splitlines()[0].split()[:3] == ["figure", "measure", "subject"]


def test_gossip_baseline_spreads_a_change_and_pays_for_full_state() -> None:
    model = LinkModel()
    mesh = GossipMesh(4, [(0, 1, model), (1, 2, model), (2, 3, model)], [(150, 130)] * 4, seed=3)
    mesh.run_until(1.0)
    smallest = mesh.state_message_bytes(0)
    version = mesh.set_record(0, CARD, 160)
    took = mesh.run_until_all_hold({(0, CARD): version}, timeout=600)
    assert took is not None and took >= 3 * model.latency
    assert mesh.state_message_bytes(3) == 150 * 3 + 160 + 130 * 4 + 3 * 8 + 4
    totals = mesh.totals()
    assert totals["bytes"] >= totals["messages"] * (smallest + 1)  # every message is the full state

    detected = mesh.kill(3, {2: 118})
    assert set(detected) == {2}
    took = mesh.run_until_all_hold({(2, LINKS): mesh.version_of(2, LINKS) + 1}, timeout=600)
    assert took is not None and took >= mesh.config.dead_interval - mesh.config.keepalive_interval


def test_frame_tap_sees_handshake_and_records() -> None:
    sim = BenchSimulation(seed=5, tap=True)
    sim.build(line(3))
    sim.run_for(2.0)
    summary = summarize(sim.tapped)
    sim.close()
    assert summary.frames == len(sim.tapped) > 0
    assert {"HELLO", "PROOF", "ACCEPT", "RECORDS", "SUMMARY"} <= set(summary.bytes_by_type)
    assert summary.records_by_kind["CARD_IN_HELLO"] == 4  # two links, a HELLO each way
    assert summary.records_by_kind["LINKS"] > 0


def test_machine_description_reads_cpuinfo_and_git_files(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n", encoding="utf-8")
    assert machine.cpu_model(cpuinfo) == "Raspberry Pi 4 Model B Rev 1.4"
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    assert machine.git_commit(repo) is None
    (repo / ".git" / "packed-refs").write_text("abc123 refs/heads/main\n", encoding="utf-8")
    assert machine.git_commit(repo) == "abc123"
    (repo / ".git" / "refs" / "heads" / "main").write_text("def456\n", encoding="utf-8")
    assert machine.git_commit(repo) == "def456"
    assert machine.git_commit(tmp_path / "nowhere") is None


def test_merging_one_figure_keeps_the_others_and_says_which_run_measured_each() -> None:
    from bench import report
    from bench.__main__ import merge

    def results(commit: str, value: int) -> dict[str, Any]:
        return {
            "mode": "full",
            "machine": {"date": f"day-{commit}", "git_commit": commit, "cpu_model": "cpu"},
            "figures": {key: {"title": key, "value": value} for key in ("fig1", "fig2")},
        }

    merged = merge(results("new", 2), results("old", 1), ["fig2"])

    assert merged["figures"]["fig1"]["value"] == 1 and merged["figures"]["fig2"]["value"] == 2
    assert merged["figures"]["fig1"]["run"] == {"date": "day-old", "git_commit": "old", "cpu_model": "cpu"}
    assert merged["figures"]["fig2"]["run"] == {"date": "day-new", "git_commit": "new", "cpu_model": "cpu"}
    assert report._runs(merged) == {("day-old", "old", "cpu"): ["fig1"], ("day-new", "new", "cpu"): ["fig2"]}
    with pytest.raises(SystemExit):
        merge(results("new", 2), {**results("old", 1), "mode": "quick"}, ["fig2"])
