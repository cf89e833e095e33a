"""A token bucket: spend at most ``rate`` units a second, in bursts of at most ``capacity``.

The rule: the bucket starts full, refills at ``rate`` per second up to ``capacity``, and a
cost is affordable once the tokens reach it less :data:`SLACK` (a hundredth of a unit, which
absorbs float rounding, so a wake-up at :meth:`TokenBucket.ready_at` always pays).
``rate=None`` means unlimited: everything is affordable at once. A cost above
``capacity + SLACK`` is never affordable. :meth:`TokenBucket.try_take` never takes the tokens
below the slack: a user that cannot pay waits (the engine's send budget, the benchmark baseline)
or gives up (the LAN receive limit closes the link). :meth:`TokenBucket.charge` pays whatever
the tokens hold, into debt: a medium's pace (:class:`agent.core.medium.AirtimeBudget`) lets the
rest of a message go with its first frame, and the debt delays whatever comes next.

Times are passed in, in any clock that does not run backwards; a reading earlier than the
last one adds nothing. Units are the user's (the engine and the LAN count bytes).
"""

from __future__ import annotations

import math
from typing import Final

#: Tokens a cost may be short of and still be paid: float rounding of ``rate * elapsed``.
SLACK: Final = 0.01


class TokenBucket:
    """At most ``capacity`` tokens, ``rate`` more each second (``None``: unlimited); full at ``now``."""

    __slots__ = ("_refilled_at", "_tokens", "capacity", "rate")

    def __init__(self, rate: float | None, capacity: float, now: float) -> None:
        if rate is not None and not 0 < rate < math.inf:
            raise ValueError(f"rate must be a positive number or None, got {rate}")
        if not 0 < capacity < math.inf:
            raise ValueError(f"capacity must be a positive number, got {capacity}")
        self.rate = rate
        self.capacity = float(capacity)
        self._tokens = self.capacity
        self._refilled_at = now

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, capacity={self.capacity}, tokens={self._tokens})"

    @property
    def tokens(self) -> float:
        """Tokens held as of the last refill."""
        return self._tokens

    def refill(self, now: float) -> float:
        """Add what ``rate`` earned since the last refill, up to ``capacity``; return the tokens held."""
        if self.rate is not None and now > self._refilled_at:
            self._tokens = min(self.capacity, self._tokens + (now - self._refilled_at) * self.rate)
            self._refilled_at = now
        return self._tokens

    def try_take(self, cost: float, now: float) -> bool:
        """Pay ``cost`` at ``now`` if affordable (True); otherwise take nothing (False)."""
        if self.rate is None:
            return True
        if self.refill(now) < cost - SLACK:
            return False
        self._tokens -= cost
        return True

    def charge(self, cost: float, now: float) -> None:
        """Pay ``cost`` at ``now`` whatever the tokens hold: they may go into debt, which the
        refill pays off before anything else is affordable."""
        if self.rate is not None:
            self.refill(now)
            self._tokens -= cost

    def try_take_rest(self, cost: float, now: float) -> bool:
        """A later frame of a message already started (:class:`~agent.core.outbox.SendBudget`):
        a link's bucket treats it as any frame."""
        return self.try_take(cost, now)

    def ready_at_rest(self, cost: float, now: float) -> float:
        """When :meth:`try_take_rest` of ``cost`` succeeds: as :meth:`ready_at`."""
        return self.ready_at(cost, now)

    def ready_at(self, cost: float, now: float) -> float:
        """The earliest time, not before ``now``, at which :meth:`try_take` of ``cost`` succeeds.

        ``now`` if affordable already, ``math.inf`` if ``cost`` exceeds the capacity. The
        answer is checked against the refill arithmetic, so calling ``try_take(cost, t)``
        with ``t`` at or after it succeeds whatever the float rounding (if nothing else was
        taken meanwhile).
        """
        tokens = self.refill(now)
        if self.rate is None or tokens >= cost - SLACK:
            return now
        if cost - SLACK > self.capacity:
            return math.inf
        start = max(now, self._refilled_at)
        at = start + (cost - tokens) / self.rate
        step = math.ulp(at)
        while self._tokens_at(at) < cost - SLACK:  # rounding left it a hair short: step up
            at += step
            step *= 2
        return at

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds from ``now`` until ``cost`` is affordable (0 if it is, ``math.inf`` if never).

        ``now + wait_time(cost, now)`` is never before :meth:`ready_at`, so a wake-up then pays.
        """
        at = self.ready_at(cost, now)
        if at == now or at == math.inf:
            return 0.0 if at == now else math.inf
        wait = at - now
        while now + wait < at:
            wait = math.nextafter(wait, math.inf)
        return wait

    def seconds_for(self, cost: float) -> float:
        """Seconds ``rate`` needs to earn ``cost`` from empty (0 when unlimited); ignores capacity."""
        return 0.0 if self.rate is None else cost / self.rate

    def _tokens_at(self, at: float) -> float:
        # Exactly the arithmetic of refill(at), without changing the bucket.
        assert self.rate is not None
        return min(self.capacity, self._tokens + (at - self._refilled_at) * self.rate)
