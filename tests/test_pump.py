"""Specification of the one driver pump (agent.core.pump), alone.

Rules covered: after an input the pump hands over every event first (a
decision may queue frames), then every frame, then the events sending
produced (a link closes once its last frame is out), and last the engine's
next timer, read after sending (sending may move it); no timer, no wake-up.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.core.engine import Engine
from agent.core.events import CloseLink, Event, LinkId
from agent.core.linkspec import LinkSpec
from agent.core.pump import pump
from agent.core.records import ConnectionType, make_card
from agent.core.wire import MessageType, decode_message
from agent.state.store import MemoryCounter

NOW = 1_800_000_000.0


class FakeEngine:
    """Queued events and frames; sending queues ``after_send`` events and moves the timer."""

    def __init__(
        self,
        log: list[tuple[Any, ...]],
        events: list[Event],
        frames: list[tuple[LinkId, bytes]],
        after_send: list[Event] = (),  # type: ignore[assignment]
        timer: float | None = 5.0,
        timer_after_send: float | None = None,
    ) -> None:
        self.log = log
        self.events = deque(events)
        self.frames = frames
        self.after_send = list(after_send)
        self.timer = timer
        self.timer_after_send = timer_after_send

    def next_event(self) -> Event | None:
        event = self.events.popleft() if self.events else None
        self.log.append(("next_event", event))
        return event

    def datagrams_to_send(self, now: float) -> list[tuple[LinkId, bytes]]:
        self.log.append(("datagrams_to_send", now))
        frames, self.frames = self.frames, []
        self.events.extend(self.after_send)
        if self.timer_after_send is not None:
            self.timer = self.timer_after_send
        return frames

    def next_timer(self) -> float | None:
        self.log.append(("next_timer",))
        return self.timer


class Outputs:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log

    def send(self, link: LinkId, frame: bytes) -> None:
        self.log.append(("send", link, frame))

    def handle_event(self, event: Event) -> None:
        self.log.append(("event", event))

    def wake_at(self, at: float) -> None:
        self.log.append(("wake_at", at))


def close(link: str) -> CloseLink:
    return CloseLink(link, "test")


def run(**kwargs: Any) -> list[tuple[Any, ...]]:
    log: list[tuple[Any, ...]] = []
    engine = FakeEngine(log, **kwargs)
    pump(cast(Engine, engine), NOW, Outputs(log))
    return log


def outputs_only(log: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [entry for entry in log if entry[0] in ("send", "event", "wake_at")]


def test_events_then_frames_then_events_sending_produced_then_the_timer() -> None:
    log = run(
        events=[close("a"), close("b")],
        frames=[("a", b"f1"), ("b", b"f2")],
        after_send=[close("c")],
        timer=7.0,
    )
    assert outputs_only(log) == [
        ("event", close("a")),
        ("event", close("b")),
        ("send", "a", b"f1"),
        ("send", "b", b"f2"),
        ("event", close("c")),
        ("wake_at", 7.0),
    ]


def test_the_engine_is_asked_in_the_same_order_and_frames_once_with_now() -> None:
    log = run(events=[close("a")], frames=[("a", b"f")])
    calls = [entry for entry in log if entry[0] in ("next_event", "datagrams_to_send", "next_timer")]
    assert calls == [
        ("next_event", close("a")),
        ("next_event", None),
        ("datagrams_to_send", NOW),
        ("next_event", None),
        ("next_timer",),
    ]


def test_the_timer_is_read_after_sending() -> None:
    log = run(events=[], frames=[("a", b"f")], timer=50.0, timer_after_send=9.0)
    assert log[-1] == ("wake_at", 9.0)


def test_no_timer_means_no_wake_up() -> None:
    log = run(events=[close("a")], frames=[], timer=None)
    assert [entry[0] for entry in outputs_only(log)] == ["event"]


def test_nothing_to_do_still_sets_the_timer() -> None:
    assert outputs_only(run(events=[], frames=[], timer=3.0)) == [("wake_at", 3.0)]


def test_a_real_engine_hands_its_hello_and_its_next_timer() -> None:
    private_key = Ed25519PrivateKey.generate()
    engine = Engine(
        private_key=private_key,
        public_key=private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        counters=MemoryCounter(),
        card=make_card("a", "linux", "0.1.0", {}),
        now=NOW,
        rng=random.Random(1).randbytes,
    )
    engine.link_up("l", LinkSpec(ConnectionType.ACCESS_POINT), NOW)
    log: list[tuple[Any, ...]] = []
    pump(engine, NOW, Outputs(log))
    assert [entry[0] for entry in log] == ["send", "wake_at"]
    assert decode_message(log[0][2][1:])[0] is MessageType.HELLO
    assert log[1] == ("wake_at", engine.next_timer())
