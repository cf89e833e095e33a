"""``python -m agent.bench [--quick] [--out DIR] [--doc FILE]``: run the benchmark suite.

Writes ``DIR/results.json`` (default ``bench/``) and regenerates ``FILE``
(default ``docs/PERFORMANCE.md``) with PNG plots in ``perf/`` beside it.
Progress goes to stderr, a summary table to stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from agent.bench import ingest, lora, machine, propagation, report, sizes
from agent.bench.common import FULL, QUICK, progress

ROOT = Path(__file__).resolve().parents[2]
FIGURE_KEYS = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6")


def run(quick: bool) -> dict[str, Any]:
    """Measure every figure of this part of the suite; the whole results document."""
    mode = QUICK if quick else FULL
    started = time.perf_counter()
    progress(f"{mode.name} mode")
    figures: dict[str, Any] = {
        "fig1": sizes.run(),
        "fig2": ingest.run(mode),
        "fig3": propagation.run(mode),
        "fig4": lora.run(mode),
    }
    for key in report.NOT_YET_MEASURED:
        figures[key] = {"status": "not yet measured", "title": f"Figure {key[3:]}", "goals": []}
    return {
        "schema_version": 1,
        "mode": mode.name,
        "machine": machine.describe(ROOT),
        "duration_s": round(time.perf_counter() - started, 1),
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short CI run (seconds, not minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="directory for results.json")
    parser.add_argument(
        "--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md", help="markdown page to write"
    )
    args = parser.parse_args(argv)
    results = run(args.quick)
    if not report.finite(results):
        raise SystemExit("bench: a measured value is not finite; refusing to write results")
    args.out.mkdir(parents=True, exist_ok=True)
    out_file = args.out / "results.json"
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
