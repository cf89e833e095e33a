"""``python -m bench.reliability [--quick] [--only NAMES [--merge]] [--out FILE] [--doc FILE]``.

Runs the hostile scenarios one after another (never two at once), prints a
summary table on stdout and progress on stderr, writes the results
(default ``bench/reliability.json``) and regenerates the page (default
``docs/RELIABILITY.md``, plots in ``docs/reliability/``). ``--only`` runs some
scenarios and marks the others "not run": for trying one, not for the
committed page; with ``--merge`` it keeps the others from the results file
instead (re-measure one scenario into the committed page; each scenario's
section names when it ran). A scenario that fails to run (an exception, not a missed goal)
is reported as an error and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import machine
from bench.processes import warm_bytecode_cache
from bench.reliability import clients, crashes, floods, joining, links, report
from bench.reliability.common import FULL, QUICK, Plan, Result, progress

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS: dict[str, Callable[[Plan], Result]] = {
    "forged": floods.forged,
    "beacons": floods.beacons,
    "connections": links.connections,
    "hostile_links": links.hostile_links,
    "control": clients.control,
    "big_join": joining.big_join,
    "kill9": crashes.kill9,
    "sybil": floods.sybil,
}


def run(quick: bool, only: Sequence[str] = tuple(SCENARIOS)) -> dict[str, Any]:
    """Run the scenarios in ``only``; the whole results document."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    progress(f"{plan.name} mode: {', '.join(k for k in SCENARIOS if k in only)}")
    warm_bytecode_cache()
    scenarios: dict[str, Any] = {}
    for key, scenario in SCENARIOS.items():
        if key not in only:
            scenarios[key] = {"key": key, "status": report.NOT_RUN}
            continue
        progress(f"--- {key}")
        began = time.perf_counter()
        try:
            ran_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            scenarios[key] = {**scenario(plan).to_json(), "status": report.RAN, "ran_at": ran_at}
        except Exception as exc:  # a scenario that could not run is reported, and the rest go on
            progress(f"{key} failed to run: {exc!r}")
            scenarios[key] = {
                "key": key,
                "status": report.ERROR,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:],
            }
        progress(f"--- {key}: {time.perf_counter() - began:.0f} s")
    return {
        "schema_version": 1,
        "mode": plan.name,
        "machine": machine.describe(ROOT),
        "duration_s": round(time.perf_counter() - started, 1),
        "scenarios": scenarios,
    }


def merged(results: dict[str, Any], previous_file: Path, only: Sequence[str]) -> dict[str, Any]:
    """``results`` with every scenario not in ``only`` taken from ``previous_file`` (same mode)."""
    try:
        previous = json.loads(previous_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--merge: cannot read {previous_file}: {exc}") from None
    if previous.get("mode") != results["mode"]:
        raise SystemExit(
            f"--merge: {previous_file} holds a {previous.get('mode')!r} run, this is {results['mode']!r}"
        )
    scenarios = dict(previous.get("scenarios", {}))
    scenarios.update({key: results["scenarios"][key] for key in only})
    return {**results, "scenarios": {key: scenarios.get(key, results["scenarios"][key]) for key in SCENARIOS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: checks the script works")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "reliability.json", help="results file to write"
    )
    parser.add_argument(
        "--doc", type=Path, default=ROOT / "docs" / "RELIABILITY.md", help="markdown page to write"
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated scenarios ({', '.join(SCENARIOS)})"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the other scenarios' results from --out (with --only)"
    )
    args = parser.parse_args(argv)
    only = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown or not only:
        parser.error(f"--only takes some of {', '.join(SCENARIOS)}; got {args.only!r}")
    results = run(args.quick, only)
    if args.merge:
        results = merged(results, args.out, only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(results, indent=1, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    progress(f"wrote {args.out}")
    report.write_doc(results, args.doc, args.out)
    progress(f"wrote {args.doc}")
    print(report.summary_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
