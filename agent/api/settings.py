"""``[presence]``: protocol timing that the Presence API and the engine share.

Owned by :mod:`agent.api`; :mod:`agent.config` fills it from the TOML file and
turns it into the engine's configuration. The API never imports the engine, so
the engine defaults are spelled here too; ``tests/test_config.py`` checks
they stay equal to :class:`agent.core.engine.EngineConfig`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.api.presence import DEFAULT_HANDLER_TIMEOUT
from agent.core.settings import positive, rule

__all__ = ["PresenceSettings"]


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """``[presence]``: protocol timing. Times are seconds."""

    #: A peer no longer reachable stays in the graph this long (rides out a link flap).
    departure_grace: float = rule(0.5, "a number >= 0", lambda v: v >= 0)
    #: Signed records expire this long after signing (and are re-signed at 3/4 of it).
    record_ttl: float = rule(
        24 * 3600.0, "a number of seconds in 60..31536000", lambda v: 60 <= v <= 31_536_000
    )
    #: A connection request handler that has not answered by then means Deny.
    handler_timeout: float = positive(DEFAULT_HANDLER_TIMEOUT)
    #: The peer table holds at most this many peers (this one included) ...
    max_peers: int = rule(16384, "an integer in 2..1000000", lambda v: 2 <= v <= 1_000_000)
    #: ... and this many bytes of other peers' records; when full, who stays is decided by
    #: standing, not arrival (docs/ARCHITECTURE.md §1b).
    max_held_bytes: int = rule(
        16 * 1024 * 1024, "an integer in 65536..1073741824", lambda v: 65536 <= v <= 1 << 30
    )
