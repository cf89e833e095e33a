"""``python -m bench [--quick] [--only FIGS] [--out DIR] [--doc FILE]``: run the benchmark suite.

Writes ``DIR/results.json`` (default ``bench/``) and regenerates ``FILE``
(default ``docs/PERFORMANCE.md``) with PNG plots in ``perf/`` beside it.
Progress goes to stderr, a summary table to stdout. ``--only`` measures some
figures and marks the others "not run": for trying one figure, not for the
committed page. ``--only FIGS --merge`` instead keeps the other figures' results
from the existing ``results.json`` (same mode), and the page says which run
measured which figure.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import (
    ingest,
    lanmesh,
    lora,
    machine,
    mirror,
    processes,
    propagation,
    radio_field,
    report,
    sizes,
    trust_figure,
)
from bench.common import FULL, QUICK, Mode, progress

ROOT = Path(__file__).resolve().parents[1]
FIGURES: dict[str, Callable[[Mode], dict[str, Any]]] = {
    "fig1": lambda mode: sizes.run(),
    "fig2": ingest.run,
    "fig3": propagation.run,
    "fig4": lora.run,
    "fig5": processes.run,
    "fig6": lanmesh.run,
    "fig7": mirror.run,
    "fig8": radio_field.run,
    "fig9": trust_figure.run,
}
FIGURE_KEYS = tuple(FIGURES)


def run(quick: bool, only: Sequence[str] = FIGURE_KEYS) -> dict[str, Any]:
    """Measure the figures in ``only`` (every one by default); the whole results document."""
    mode = QUICK if quick else FULL
    started = time.perf_counter()
    progress(f"{mode.name} mode")
    figures: dict[str, Any] = {}
    for key, measure in FIGURES.items():
        if key in only:
            figures[key] = measure(mode)
        else:
            figures[key] = {"status": report.NOT_RUN, "title": f"Figure {key[3:]}", "goals": []}
    return {
        "schema_version": 1,
        "mode": mode.name,
        "machine": machine.describe(ROOT),
        "duration_s": round(time.perf_counter() - started, 1),
        "figures": figures,
    }


def merge(results: dict[str, Any], previous: dict[str, Any], only: Sequence[str]) -> dict[str, Any]:
    """``results`` with every figure not in ``only`` taken from ``previous``, each labelled with its run."""
    if previous.get("mode") != results["mode"]:
        raise SystemExit(
            f"bench: --merge needs {results['mode']} results to merge into, not {previous.get('mode')}"
        )
    figures = {}
    for key, figure in results["figures"].items():
        if key in only:
            figures[key] = {**figure, "run": report.run_of(results)}
        else:
            kept = previous["figures"].get(key, figure)
            figures[key] = {**kept, "run": kept.get("run", report.run_of(previous))}
    return {**results, "figures": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short CI run (seconds, not minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="directory for results.json")
    parser.add_argument(
        "--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md", help="markdown page to write"
    )
    parser.add_argument(
        "--only", default=",".join(FIGURE_KEYS), help="comma-separated figures to measure (fig1,...,fig6)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: keep the other figures' results from the existing results.json",
    )
    args = parser.parse_args(argv)
    only = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = sorted(set(only) - set(FIGURE_KEYS))
    if unknown or not only:
        parser.error(f"--only takes some of {', '.join(FIGURE_KEYS)}; got {args.only!r}")
    results = run(args.quick, only)
    out_file = args.out / "results.json"
    if args.merge:
        results = merge(results, json.loads(out_file.read_text(encoding="utf-8")), only)
    if not report.finite(results):
        raise SystemExit("bench: a measured value is not finite; refusing to write results")
    args.out.mkdir(parents=True, exist_ok=True)
    out_file.write_text(
        json.dumps(results, indent=1, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    progress(f"wrote {out_file}")
    report.write_doc(results, args.doc)
    progress(f"wrote {args.doc}")
    print(report.summary_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
