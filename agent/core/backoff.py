"""Exponential back-off with jitter: one policy and one per-key tracker for every retry loop.

The rule: the n-th consecutive failure waits ``min(maximum, initial * 2^(n-1))`` seconds,
times a factor drawn uniformly from ``[low, low + jitter]``. The draw (``unit``, in [0, 1])
is passed in and so are all times: this module reads no clock and no random source, so a
seeded engine stays reproducible.

Users and their factors (each keeps its documented formula):

- the engine's deny back-off and the LAN dial back-off stretch the delay by up to half,
  ``low=1.0, jitter=0.5``: a wait in ``[delay, 1.5 * delay]``;
- the MQTT reconnect uses "full jitter on the upper half", ``low=0.5, jitter=0.5``: a wait
  in ``[delay / 2, delay]``, so a fleet that lost its broker does not return in lock step.

:class:`BackoffTracker` keeps, per key, the consecutive failures and the earliest retry time,
for at most ``max_keys`` keys (the key changed longest ago is forgotten first), so keys taken
from hostile input cannot grow it without bound.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Keys a :class:`BackoffTracker` holds by default. Forgetting a key only lets it be retried
#: sooner (its count starts again at one), so the bound trades a little politeness under a
#: flood of distinct keys for memory that stays small whatever the input.
DEFAULT_MAX_KEYS: Final = 1024

#: Doubling past this many times overflows any positive float (they span less than 2^2100).
_MAX_DOUBLINGS: Final = 2100


def unit_from_bytes(data: bytes) -> float:
    """A uniform draw in [0, 1] from random bytes: their big-endian value over the largest possible.

    Two bytes give ``n / 65535``, the engine's jitter draw from its seeded ``rng(2)``.
    """
    if not data:
        raise ValueError("need at least one random byte")
    return int.from_bytes(data, "big") / ((1 << (8 * len(data))) - 1)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait ``min(maximum, initial * 2^(attempt-1)) * (low + unit * jitter)`` after the attempt-th failure."""

    initial: float
    maximum: float
    #: Width of the random factor's range; 0 disables jitter.
    jitter: float = 0.5
    #: Lower end of the random factor's range (1.0: never shorter than the delay).
    low: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial} and {self.maximum}")
        if self.jitter < 0 or self.low < 0:
            raise ValueError(f"need jitter >= 0 and low >= 0, got {self.jitter} and {self.low}")

    def base(self, attempt: int) -> float:
        """The delay before jitter after ``attempt`` (1, 2, ...) consecutive failures: doubling, capped."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        try:  # exact scaling, the same value as initial * 2 ** (attempt - 1)
            doubled = math.ldexp(self.initial, min(attempt - 1, _MAX_DOUBLINGS))
        except OverflowError:
            doubled = math.inf
        return min(self.maximum, doubled)

    def delay(self, attempt: int, unit: float) -> float:
        """Seconds to wait after ``attempt`` consecutive failures, for the draw ``unit`` in [0, 1]."""
        if not 0.0 <= unit <= 1.0:
            raise ValueError(f"unit must be in [0, 1], got {unit}")
        return self.base(attempt) * (self.low + unit * self.jitter)


class BackoffTracker(Generic[K]):
    """Consecutive failures and the earliest retry time per key; success forgets the key.

    A failure counts one more attempt and holds the key until ``now + policy.delay(...)``;
    a hold never moves earlier (a later one wins, whether from :meth:`failed` or
    :meth:`hold`). At most ``max_keys`` keys are kept: recording a new key beyond that
    forgets the key whose state changed longest ago. Reading a key does not refresh it.
    """

    __slots__ = ("_entries", "max_keys", "policy")

    def __init__(self, policy: Backoff, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.policy = policy
        self.max_keys = max_keys
        # key -> (consecutive failures, earliest retry time); insertion order is age.
        self._entries: dict[K, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def failed(self, key: K, now: float, unit: float) -> float:
        """Count a failure of ``key`` at ``now``; return the time before which not to retry it."""
        attempts, held = self._entries.get(key, (0, now))
        attempts += 1
        retry_at = max(held, now + self.policy.delay(attempts, unit))
        self._store(key, attempts, retry_at)
        return retry_at

    def hold(self, key: K, until: float) -> None:
        """Do not retry ``key`` before ``until`` (a later hold already in force stays); count nothing."""
        attempts, held = self._entries.get(key, (0, until))
        self._store(key, attempts, max(held, until))

    def succeeded(self, key: K) -> None:
        """``key`` worked: forget its failures and its hold."""
        self._entries.pop(key, None)

    def attempts(self, key: K) -> int:
        """Consecutive failures recorded for ``key`` (0 if none)."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry[0]

    def retry_at(self, key: K) -> float | None:
        """The earliest time to retry ``key``; ``None`` if it is not held."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def may_retry(self, key: K, now: float) -> bool:
        """Whether ``key`` may be tried at ``now`` (its hold, if any, has passed)."""
        entry = self._entries.get(key)
        return entry is None or now >= entry[1]

    def _store(self, key: K, attempts: int, retry_at: float) -> None:
        self._entries.pop(key, None)  # re-inserted last: the newest
        self._entries[key] = (attempts, retry_at)
        if len(self._entries) > self.max_keys:
            del self._entries[next(iter(self._entries))]
