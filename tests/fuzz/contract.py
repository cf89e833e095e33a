"""What a fuzz target is, and what counts as a finding.

A target is a function of one input (bytes) and the exceptions it may raise:
the project's typed errors for what it refuses. Anything else escaping it -- a
bare ``TypeError``, ``IndexError``, ``KeyError``, ``RecursionError``,
``UnicodeDecodeError``, an invariant the target checks (:class:`Violation`) --
is a finding. Hangs and unbounded allocation are findings too; libFuzzer
catches those in the atheris runs (``-timeout``, ``-rss_limit_mb``). Each
input runs with a stack budget (:data:`STACK_BUDGET`), so unbounded recursion
shows on small inputs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Frames of stack a target may use beyond its caller's. Far above what any decoder needs for
#: inputs within its limits, far below CPython's 1000: a recursion whose depth grows with the
#: input (nested arrays, say) then fails on inputs of a few hundred bytes, which the fuzzer
#: reaches, instead of only beyond its maximum input length.
STACK_BUDGET: Final = 250


def _depth() -> int:
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1  # type: ignore[assignment]
    return depth


class Violation(AssertionError):
    """A target's stated invariant did not hold for an input (always a finding)."""


def require(condition: bool, what: str) -> None:
    """Raise :class:`Violation` unless ``condition``: a contract check that ``python -O`` keeps."""
    if not condition:
        raise Violation(what)


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``fn(data)`` may raise only ``allowed``; its module docstring is the contract."""

    name: str
    fn: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...] = ()

    def __call__(self, data: bytes) -> None:
        """Run one input within :data:`STACK_BUDGET`; an allowed error is a refusal, anything else
        propagates as a finding (the same in the atheris runs and in the pytest replay)."""
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(min(limit, _depth() + STACK_BUDGET))
        try:
            self.fn(data)
        except self.allowed as exc:
            if isinstance(exc, Violation):  # never allowed, whatever the tuple says
                raise
        finally:
            sys.setrecursionlimit(limit)


class Reader:
    """Reads a fuzz input as a stream of small fields; past the end every read is empty or zero.

    Targets that need several inputs (frames, beacons, MQTT messages) cut them
    from one byte string with this, so libFuzzer's mutations of one input reach
    all of them and the seed generator writes them with :class:`Writer`.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._i = 0

    def __bool__(self) -> bool:
        return self._i < len(self._data)

    def u8(self) -> int:
        if self._i >= len(self._data):
            return 0
        self._i += 1
        return self._data[self._i - 1]

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def take(self, n: int) -> bytes:
        chunk = self._data[self._i : self._i + n]
        self._i += len(chunk)
        return chunk

    def chunk(self) -> bytes:
        """A ``u16`` length, then that many bytes (fewer at the end)."""
        return self.take(self.u16())

    def rest(self) -> bytes:
        return self.take(len(self._data) - self._i)


class Writer:
    """Builds inputs that :class:`Reader` reads back field by field (for the seed corpus)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(bytes([value]))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(value.to_bytes(2, "big"))
        return self

    def raw(self, data: bytes) -> Writer:
        self._parts.append(data)
        return self

    def chunk(self, data: bytes) -> Writer:
        return self.u16(len(data)).raw(data)

    def bytes(self) -> bytes:
        return b"".join(self._parts)
