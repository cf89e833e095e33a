"""A token bucket, clock-free: the send budget (placeholder until the shared one lands)."""

from __future__ import annotations

#: A hundredth of a byte of slack absorbs float rounding, so a wake-up at the
#: time :meth:`TokenBucket.wait_time` computed always succeeds.
_SLACK = 0.01


class TokenBucket:
    """``rate`` tokens a second up to ``capacity``, starting full; ``rate=None``: unlimited."""

    def __init__(self, rate: float | None, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._refilled_at = now

    def refill(self, now: float) -> None:
        if self.rate is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now

    def try_take(self, cost: float, now: float) -> bool:
        if self.rate is None:
            return True
        self.refill(now)
        if self.tokens < cost - _SLACK:
            return False
        self.tokens -= cost
        return True

    def wait_time(self, cost: float, now: float) -> float:
        if self.rate is None:
            return 0.0
        self.refill(now)
        return max(0.001, (cost - self.tokens) / self.rate)
