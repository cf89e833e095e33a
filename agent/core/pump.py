"""The one driver pump: after every input, act on everything the engine wants, in one order.

The runtime, the simulator and the tests' wires all drive an :class:`Engine`
the same way; only what "send a frame", "handle an event" and "wake me at"
mean differs, which is what :class:`EngineOutputs` injects. The order
matters: events first (a decision may queue frames), then frames, then
events again (a link closes once its last frame, a DENY, is out), then the
timer, which sending may have moved.
"""

from __future__ import annotations

from typing import Protocol

from agent.core.engine import Engine
from agent.core.events import Event, LinkId


class EngineOutputs(Protocol):
    """What a driver does with the engine's outputs."""

    def send(self, link: LinkId, frame: bytes) -> None: ...

    def handle_event(self, event: Event) -> None: ...

    def wake_at(self, at: float) -> None:
        """Call :meth:`Engine.handle_timer` at monotonic time ``at`` (at once if it has passed)."""
        ...


def pump(engine: Engine, now: float, outputs: EngineOutputs) -> None:
    """Hand ``outputs`` every event and frame the engine has at ``now``, then its next timer."""
    _events(engine, outputs)
    for link, frame in engine.datagrams_to_send(now):
        outputs.send(link, frame)
    _events(engine, outputs)
    timer = engine.next_timer()
    if timer is not None:
        outputs.wake_at(timer)


def _events(engine: Engine, outputs: EngineOutputs) -> None:
    while (event := engine.next_event()) is not None:
        outputs.handle_event(event)
