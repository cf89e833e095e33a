"""Figure 8 runs each radio field several times: how the runs become one result (no timing here)."""

from __future__ import annotations

from typing import Any

from bench.radio_field import summarise_runs


def _change(ratio: float | None, worst: float | None, sends: float | None) -> dict[str, Any]:
    return {
        "ratio_to_hop_optimal": ratio,
        "worst_ratio_to_hop_optimal": worst,
        "transmissions_per_node": sends,
        "time_s": None if ratio is None else ratio * 10,
        "changes": 5,
    }


def _run(
    seed: int, *, quiet: float, ratio: float | None, duty: float, held: float, gone: float | None
) -> dict[str, Any]:
    return {
        "label": "30 Pis, SF7",
        "seed": 4,
        "simulator_seed": seed,
        "formation": {"fraction_held": held, "hours": 2.0, "curve": [[0.0, 0.0], [2.0, held]]},
        "quiet_hour": {"max_airtime_s": quiet, "links_dead": 1 if quiet > 3.6 else 0},
        "changes": {
            "metadata": _change(ratio, None if ratio is None else ratio + 1, 0.9),
            "link": _change(1.5, 1.8, None if ratio is None else 0.8),
        },
        "departure": {"time_s": gone, "limit_s": 900.0},
        "duty_cycle": {"max_fraction": duty},
    }


RUNS = [
    _run(4, quiet=5.9, ratio=2.4, duty=0.004, held=1.0, gone=500.0),
    _run(7923, quiet=3.2, ratio=None, duty=0.006, held=0.97, gone=None),
    _run(15842, quiet=3.3, ratio=1.9, duty=0.005, held=1.0, gone=300.0),
]


def test_one_run_is_its_own_result() -> None:
    assert summarise_runs(RUNS[:1]) == {**RUNS[0], "runs": 1}


def test_each_figure_is_the_median_runs_whole_section_beside_every_runs_value() -> None:
    out = summarise_runs(RUNS)
    assert out["runs"] == 3 and out["simulator_seeds"] == [4, 7923, 15842]
    assert out["quiet_hour"]["max_airtime_s"] == 3.3 and out["quiet_hour"]["links_dead"] == 0
    assert out["quiet_hour"]["max_airtime_runs_s"] == [5.9, 3.2, 3.3]
    assert out["quiet_hour"]["links_dead_runs"] == [1, 0, 0]


def test_a_change_that_never_reached_everyone_ranks_slowest_and_leaves_no_worst() -> None:
    metadata = summarise_runs(RUNS)["changes"]["metadata"]
    assert metadata["ratio_to_hop_optimal"] == 2.4  # 1.9, 2.4, never
    assert metadata["time_s"] == 24.0  # the same run's time
    assert metadata["ratio_runs"] == [2.4, None, 1.9]
    assert metadata["worst_ratio_to_hop_optimal"] is None
    assert metadata["changes"] == 15


def test_transmissions_are_the_median_of_the_runs_that_reached_everyone() -> None:
    link = summarise_runs(RUNS)["changes"]["link"]
    assert link["transmissions_per_node"] == 0.8
    assert link["transmissions_per_node_runs"] == [0.8, None, 0.8]
    assert link["worst_ratio_to_hop_optimal"] == 1.8


def test_the_duty_cycle_is_the_worst_runs_and_the_formation_the_least_formed_runs() -> None:
    out = summarise_runs(RUNS)
    assert out["duty_cycle"]["max_fraction"] == 0.006
    assert out["duty_cycle"]["max_fraction_runs"] == [0.004, 0.006, 0.005]
    assert out["formation"]["fraction_held"] == 0.97


def test_a_departure_never_seen_ranks_last() -> None:
    departure = summarise_runs(RUNS)["departure"]
    assert departure["time_s"] == 500.0
    assert departure["time_runs_s"] == [500.0, None, 300.0]
