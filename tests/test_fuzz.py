"""The short form of the fuzzing campaign (issue 13): every decoder, every committed seed, a bounded run.

Three checks, the long run being ``scripts/fuzz`` (``tests/fuzz/campaign.py``):

- the committed corpus (``tests/fuzz/corpus/<target>/``) is what
  ``python -m tests.fuzz.seeds`` generates from the real encoders, plus
  inputs merged in by ``scripts/fuzz --merge``;
- every file of it replays through its target without breaking the target's
  contract (deterministic; a regression of any input a run ever kept fails here);
- every target runs under atheris, coverage-guided, for a few seconds (all of
  them at once, as many at a time as there are cores) and must end without a
  finding.

atheris is a dev dependency: if it is missing these tests fail, they never skip.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fuzz import seeds
from fuzz.campaign import LIBFUZZER_LIMITS, ROOT, SEEDS, fuzz_command
from fuzz.targets import TARGETS

#: Seconds of coverage-guided fuzzing per target in the suite (plus about 1.5 s of start-up).
SHORT_RUN_SECONDS = 3

CORPUS_FILES = sorted(path for path in SEEDS.glob("*/*") if path.is_file())


def test_every_target_has_seeds_and_every_corpus_folder_a_target() -> None:
    assert sorted(seeds.GENERATORS) == sorted(TARGETS)
    assert sorted(p.name for p in SEEDS.iterdir()) == sorted(TARGETS)


def test_the_committed_seeds_are_what_the_generator_writes() -> None:
    assert seeds.main(["--check"]) == 0, "run `python -m tests.fuzz.seeds` and commit tests/fuzz/corpus/"


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[f"{p.parent.name}/{p.name}" for p in CORPUS_FILES])
def test_every_corpus_input_keeps_its_targets_contract(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())


def _atheris_present() -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.fail(
            "atheris is not installed, so nothing was fuzzed: `pip install -e '.[dev]'` "
            "(scripts/bootstrap does; wheels exist for CPython 3.11-3.13 on x86-64)"
        )


@pytest.fixture(scope="module")
def short_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every target fuzzed for :data:`SHORT_RUN_SECONDS` on a fresh copy of its corpus, cores at a time."""
    _atheris_present()
    root = tmp_path_factory.mktemp("fuzz")

    def run(target: str) -> subprocess.CompletedProcess[str]:
        grown = root / "corpus" / target
        grown.mkdir(parents=True)
        command = fuzz_command(
            target,
            f"-max_total_time={SHORT_RUN_SECONDS}",
            f"-artifact_prefix={root}/{target}-",
            "-print_final_stats=1",
            *LIBFUZZER_LIMITS,
            str(grown),
            str(SEEDS / target),
        )
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        yield dict(zip(TARGETS, pool.map(run, TARGETS), strict=True))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_coverage_guided_run_finds_nothing(
    target: str, short_runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = short_runs[target]
    artifacts = [line.split()[-1] for line in result.stderr.splitlines() if "Test unit written to" in line]
    found = "".join(
        f"\ninput (base64): {base64.b64encode(Path(a).read_bytes()).decode()}"
        for a in artifacts
        if Path(a).exists()
    )
    tail = "\n".join(result.stderr.splitlines()[-40:])
    assert result.returncode == 0, f"{target}: a finding (exit {result.returncode}){found}\n{tail}"
    assert "stat::number_of_executed_units" in result.stderr, f"{target}: libFuzzer did not run\n{tail}"
