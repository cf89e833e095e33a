"""Small shared pieces of the benchmark suite: modes, progress lines, medians, goals."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The multiplication sign, for goals and ratios in the report.
TIMES = "\u00d7"


@dataclass(frozen=True, slots=True)
class Mode:
    """How much work each figure does: ``quick`` (CI: seconds) or ``full`` (minutes)."""

    name: str
    #: Figure 2: distinct signing keys (each contributes a card and a links record).
    ingest_keys: int
    #: Figure 2: interleaved repetitions of subject and baseline.
    ingest_repetitions: int
    #: Figure 3: mesh sizes and, for each, how many seeds (independent runs).
    mesh_sizes: tuple[int, ...]
    seeds_by_size: tuple[tuple[int, int], ...]
    #: Figure 3: metadata changes (from distinct origins) per run.
    metadata_changes: int
    #: Figure 4: seeds for the lossy LoRa line (the loss-free line is deterministic: one seed).
    lora_seeds: int
    #: Figure 8: independent runs of each radio field (simulator seeds; the field stays the same).
    field_runs: int

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    def seeds_for(self, n: int) -> int:
        return dict(self.seeds_by_size).get(n, 1)


QUICK = Mode(
    name="quick",
    ingest_keys=300,
    ingest_repetitions=7,
    mesh_sizes=(10, 100),
    seeds_by_size=((10, 2), (100, 1)),
    metadata_changes=2,
    lora_seeds=2,
    field_runs=1,
)

FULL = Mode(
    name="full",
    ingest_keys=2000,
    ingest_repetitions=7,
    mesh_sizes=(10, 100, 1000),
    seeds_by_size=((10, 5), (100, 3), (1000, 1)),
    metadata_changes=3,
    lora_seeds=9,
    field_runs=3,
)


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries the summary table), in one write: figure 8's
    worker processes share the stream, and print's separate newline let their lines run together."""
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def median(values: Sequence[float]) -> float:
    """The median of measured values (there is always at least one)."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is zero."""
    if denominator == 0:
        return None
    return numerator / denominator


def rounded(value: float | None, digits: int = 4) -> float | None:
    """Round for the results file: ``digits`` decimals, or as many significant digits below 1.

    ``None`` (a value that could not be measured) stays ``None``.
    """
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValueError(f"refusing to record a non-finite value {value!r}")
    if value != 0 and abs(value) < 1:
        return float(f"{value:.{digits}g}")
    return round(value, digits)


def goal(name: str, measured: float | None, limit: float, at_most: bool, unit: str = "") -> dict[str, Any]:
    """One goal check: ``measured`` against ``limit`` (``at_most``: measured ≤ limit, else ≥)."""
    if measured is None:
        met: bool | None = None
    else:
        met = measured <= limit if at_most else measured >= limit
    return {
        "name": name,
        "measured": rounded(measured),
        "limit": limit,
        "comparison": "<=" if at_most else ">=",
        "unit": unit,
        "met": met,
    }
