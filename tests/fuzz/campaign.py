"""The long fuzzing run behind ``scripts/fuzz``: every target (or those named) for N minutes each.

Each target runs as ``python -m tests.fuzz.run`` (one libFuzzer process, a
few at a time), growing ``OUT/corpus/<target>/`` from the committed seeds
(``tests/fuzz/corpus/<target>/``, only read). A crash, hang (``-timeout``) or
memory blow-up (``-rss_limit_mb``) is saved as ``OUT/crashes/<target>/crash-*``
(``timeout-*``, ``oom-*``) and the target restarts on its grown corpus until its
time is up. ``--merge`` then adds to the committed corpus the grown inputs that
reach new coverage (libFuzzer ``-merge=1``). Progress is one line per target
every ``--progress`` seconds; at the end a table (target, executions, exec/s,
corpus size, crashes) and ``OUT/summary.json``.

Replay a finding with ``python -m tests.fuzz.run TARGET OUT/crashes/TARGET/crash-...``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, TextIO

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parents[1]
SEEDS: Final = HERE / "corpus"
#: Per-input limits: a hang or a blow-up is a finding, not a stall.
LIBFUZZER_LIMITS: Final = ("-timeout=10", "-rss_limit_mb=2048", "-max_len=8192")
_EXECS: Final = re.compile(r"^#(\d+)\s")
_STAT: Final = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT: Final = re.compile(r"Test unit written to (\S+)")


DICTS: Final = HERE / "dicts"


def fuzz_command(target: str, *args: str) -> list[str]:
    """The command running ``target`` under atheris with libFuzzer ``args`` (and its dictionary, if any)."""
    dictionary = DICTS / f"{target}.dict"
    extra = [f"-dict={dictionary}"] if dictionary.is_file() else []
    return [sys.executable, "-m", "tests.fuzz.run", target, *extra, *args]


def target_names() -> list[str]:
    out = subprocess.run(fuzz_command("--list"), cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


@dataclass
class Result:
    target: str
    seconds: float = 0.0
    executions: int = 0
    exec_per_second: float = 0.0
    corpus_files: int = 0
    crashes: list[str] = field(default_factory=list)
    restarts: int = 0
    merged: int | None = None


def _run_once(
    target: str, seconds: int, corpus: Path, crashes: Path, log: TextIO, state: dict[str, int]
) -> str:
    """One libFuzzer process; returns the artifact it wrote ("" if it ran to its time)."""
    command = fuzz_command(
        target,
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        *LIBFUZZER_LIMITS,
        str(corpus),
        str(SEEDS / target),
    )
    artifact = ""
    base = state["executions"]
    with subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, errors="replace"
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.write(line)
            if (m := _EXECS.match(line)) is not None:
                state["executions"] = base + int(m.group(1))
            elif (m := _STAT.match(line)) is not None and m.group(1) == "number_of_executed_units":
                state["executions"] = base + int(m.group(2))
            elif (m := _ARTIFACT.search(line)) is not None:
                artifact = m.group(1)
    return artifact


def run_target(target: str, minutes: float, out: Path, state: dict[str, int]) -> Result:
    corpus, crashes = out / "corpus" / target, out / "crashes" / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    result = Result(target)
    start = time.monotonic()
    deadline = start + minutes * 60
    with (out / "logs" / f"{target}.log").open("a") as log:
        while (left := int(deadline - time.monotonic())) > 0:
            artifact = _run_once(target, left, corpus, crashes, log, state)
            if not artifact:
                break
            result.crashes.append(artifact)
            result.restarts += 1
            if len(result.crashes) >= 20:
                break  # the same bug over and over: report it, stop burning time
    result.seconds = round(time.monotonic() - start, 1)
    result.executions = state["executions"]
    result.exec_per_second = round(result.executions / result.seconds, 1) if result.seconds else 0.0
    result.corpus_files = sum(1 for _ in corpus.iterdir())
    return result


def merge(target: str, out: Path) -> int:
    """Add to the committed corpus the grown inputs with new coverage; how many were added."""
    before = sum(1 for _ in (SEEDS / target).iterdir())
    subprocess.run(
        fuzz_command(
            target, "-merge=1", *LIBFUZZER_LIMITS, str(SEEDS / target), str(out / "corpus" / target)
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return sum(1 for _ in (SEEDS / target).iterdir()) - before


def table(results: list[Result]) -> str:
    rows = [("target", "executions", "exec/s", "corpus", "crashes")]
    rows += [
        (r.target, f"{r.executions:,}", f"{r.exec_per_second:,.0f}", str(r.corpus_files), str(len(r.crashes)))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--minutes", type=float, default=10.0, help="per target (default 10)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="targets at once (default: cores)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz", help="default build/fuzz")
    parser.add_argument("--merge", action="store_true", help="merge new coverage into tests/fuzz/corpus")
    parser.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines")
    args = parser.parse_args(argv)
    known = target_names()
    targets = args.targets or known
    if unknown := sorted(set(targets) - set(known)):
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(known)}")
    out: Path = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    states = {t: {"executions": 0} for t in targets}
    results: dict[str, Result] = {}
    pending = list(targets)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                target = pending.pop(0)
            results[target] = run_target(target, args.minutes, out, states[target])

    print(
        f"fuzzing {len(targets)} target(s) for {args.minutes:g} min each, {args.jobs} at a time; out: {out}"
    )
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, args.jobs))]
    for thread in workers:
        thread.start()
    started = time.monotonic()
    while any(thread.is_alive() for thread in workers):
        for thread in workers:
            thread.join(timeout=args.progress / len(workers))
        running = [t for t in targets if t not in results and states[t]["executions"]]
        line = ", ".join(f"{t} {states[t]['executions']:,}" for t in running)
        print(f"[{time.monotonic() - started:6.0f} s] executions: {line or '(starting)'}", flush=True)
    ordered = [results[t] for t in targets]
    if args.merge:
        for result in ordered:
            result.merged = merge(result.target, out)
            print(f"merged {result.merged} input(s) into tests/fuzz/corpus/{result.target}")
    print(table(ordered))
    summary = {"minutes_per_target": args.minutes, "targets": [asdict(r) for r in ordered]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    for result in ordered:
        for crash in result.crashes:
            print(f"FINDING {result.target}: python -m tests.fuzz.run {result.target} {crash}")
    return 1 if any(r.crashes for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
