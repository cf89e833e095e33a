"""Observers: the current graph at once, every change after, coalescing, lifetime, threads."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest
from test_presence_api import WAIT, Rig, graph_named, make_rig

from agent.api import PresenceError, PresenceGraph, PresenceObserver


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = make_rig()
    yield rig
    rig.close()


class Recorder:
    """A callback that records each graph and the thread it ran on."""

    def __init__(self, then: Callable[[PresenceGraph], None] | None = None) -> None:
        self.graphs: list[PresenceGraph] = []
        self.threads: list[threading.Thread] = []
        self._then = then
        self._cond = threading.Condition()

    def __call__(self, graph: PresenceGraph) -> None:
        with self._cond:
            self.graphs.append(graph)
            self.threads.append(threading.current_thread())
            self._cond.notify_all()
        if self._then is not None:
            self._then(graph)

    def wait_for(self, predicate: Callable[[list[PresenceGraph]], bool]) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.graphs), WAIT), self.graphs

    def wait_count(self, n: int) -> None:
        self.wait_for(lambda graphs: len(graphs) >= n)

    def wait_graph(self, graph: PresenceGraph) -> None:
        self.wait_for(lambda graphs: bool(graphs) and graphs[-1] is graph)


def name_of(graph: PresenceGraph) -> str:
    return graph.local_peer.device_name


def test_observe_delivers_the_current_graph_at_once(rig: Rig) -> None:
    recorder = Recorder()

    observer = rig.presence.observe(recorder)

    recorder.wait_count(1)
    assert recorder.graphs == [rig.engine.graph(0.0)]
    assert observer.is_active
    observer.stop()


def test_published_graphs_follow(rig: Rig) -> None:
    recorder = Recorder()
    observer = rig.presence.observe(recorder)
    recorder.wait_count(1)

    first, second = graph_named("one"), graph_named("two")
    rig.publish_from_driver(first)
    recorder.wait_graph(first)
    rig.publish_from_driver(second)
    recorder.wait_graph(second)

    assert [name_of(g) for g in recorder.graphs] == ["pi-kitchen", "one", "two"]
    observer.stop()


def test_a_burst_while_the_callback_is_busy_coalesces_to_the_latest(rig: Rig) -> None:
    busy, release = threading.Event(), threading.Event()

    def block_on_first(graph: PresenceGraph) -> None:
        if not busy.is_set():
            busy.set()
            assert release.wait(WAIT)

    recorder = Recorder(then=block_on_first)
    observer = rig.presence.observe(recorder)
    assert busy.wait(WAIT)

    burst = [graph_named(f"g{i}") for i in range(100)]
    for graph in burst:
        rig.presence.publish(graph)
    release.set()

    recorder.wait_graph(burst[-1])
    assert [name_of(g) for g in recorder.graphs] == ["pi-kitchen", "g99"]
    observer.stop()


def test_a_graph_published_before_the_first_fetch_never_arrives_after_it(rig: Rig) -> None:
    """A publish the engine made before the new observer's fetch is older: it must not come last."""
    gate_entered, gate = threading.Event(), threading.Event()
    older = graph_named("older")

    def hold_the_engine_then_publish(engine: object, now: float) -> None:
        gate_entered.set()
        assert gate.wait(WAIT)
        rig.presence.publish(older)

    holder = threading.Thread(target=rig.driver.call, args=(hold_the_engine_then_publish,))
    holder.start()
    assert gate_entered.wait(WAIT)

    recorder = Recorder()
    observing: list[PresenceObserver] = []
    observer_thread = threading.Thread(target=lambda: observing.append(rig.presence.observe(recorder)))
    observer_thread.start()
    # observe() registers the observer, then queues its fetch behind the held engine.
    deadline = time.monotonic() + WAIT
    while not rig.presence.wants_graphs:
        assert time.monotonic() < deadline, "observe() never registered its observer"
        time.sleep(0.001)
    gate.set()
    holder.join(WAIT)
    observer_thread.join(WAIT)

    current = rig.engine.graph(0.0)
    recorder.wait_for(lambda graphs: bool(graphs) and graphs[-1] == current)
    assert recorder.graphs[-1] == current
    assert recorder.graphs in ([current], [older, current])
    observing[0].stop()


def test_an_unchanged_graph_is_not_delivered_twice(rig: Rig) -> None:
    recorder = Recorder()
    observer = rig.presence.observe(recorder)
    recorder.wait_count(1)

    rig.publish_from_driver(rig.engine.graph(0.0))  # equal to what the observer has
    marker = graph_named("marker")
    rig.publish_from_driver(marker)

    recorder.wait_graph(marker)
    assert [name_of(g) for g in recorder.graphs] == ["pi-kitchen", "marker"]
    observer.stop()


def test_stop_waits_for_a_running_callback_and_nothing_runs_after(rig: Rig) -> None:
    busy, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(graph: PresenceGraph) -> None:
        busy.set()
        assert release.wait(WAIT)
        finished.set()

    recorder = Recorder(then=slow)
    observer = rig.presence.observe(recorder)
    assert busy.wait(WAIT)

    finished_when_stop_returned: list[bool] = []

    def stop() -> None:
        observer.stop()
        finished_when_stop_returned.append(finished.is_set())

    stopper = threading.Thread(target=stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "stop() returned while the callback was still running"
    release.set()
    stopper.join(WAIT)

    assert finished_when_stop_returned == [True]
    assert not observer.is_active
    rig.publish_from_driver(graph_named("after stop"))
    recorder.threads[0].join(WAIT)
    assert not recorder.threads[0].is_alive()
    assert [name_of(g) for g in recorder.graphs] == ["pi-kitchen"]


def test_stop_from_inside_the_callback_returns_at_once(rig: Rig) -> None:
    holder: list[PresenceObserver] = []
    ready, stopped = threading.Event(), threading.Event()

    def stop_myself(graph: PresenceGraph) -> None:
        assert ready.wait(WAIT)
        holder[0].stop()
        stopped.set()

    recorder = Recorder(then=stop_myself)
    holder.append(rig.presence.observe(recorder))
    ready.set()

    assert stopped.wait(WAIT)
    recorder.threads[0].join(WAIT)
    assert not recorder.threads[0].is_alive()
    assert not holder[0].is_active
    assert not rig.presence.wants_graphs


def test_dropping_the_observer_ends_it(rig: Rig) -> None:
    recorder = Recorder()
    observer = rig.presence.observe(recorder)
    recorder.wait_count(1)
    thread = recorder.threads[0]
    gone = weakref.ref(observer)

    del observer
    gc.collect()

    assert gone() is None
    thread.join(WAIT)
    assert not thread.is_alive()
    assert not rig.presence.wants_graphs
    rig.presence.publish(graph_named("nobody listens"))
    assert len(recorder.graphs) == 1


def test_an_observer_in_a_reference_cycle_ends_when_collected(rig: Rig) -> None:
    recorder = Recorder()
    observer = rig.presence.observe(recorder)
    recorder.wait_count(1)
    thread = recorder.threads[0]
    cycle: list[object] = [observer]
    cycle.append(cycle)

    del observer, cycle
    gc.collect()

    thread.join(WAIT)
    assert not thread.is_alive()


def test_observer_is_a_context_manager(rig: Rig) -> None:
    recorder = Recorder()

    with rig.presence.observe(recorder) as observer:
        recorder.wait_count(1)
        assert rig.presence.wants_graphs

    assert not observer.is_active
    assert not rig.presence.wants_graphs
    recorder.threads[0].join(WAIT)
    assert not recorder.threads[0].is_alive()


def test_a_raising_callback_is_logged_and_keeps_observing(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="agent.api")

    def fail_first(graph: PresenceGraph) -> None:
        if name_of(graph) == "pi-kitchen":
            raise ValueError("boom in callback")

    recorder = Recorder(then=fail_first)
    observer = rig.presence.observe(recorder)
    later = graph_named("later")
    recorder.wait_count(1)
    rig.publish_from_driver(later)

    recorder.wait_graph(later)
    failures = [r for r in caplog.records if r.name == "agent.api" and r.exc_info]
    assert len(failures) == 1
    assert "callback raised" in failures[0].getMessage()
    assert failures[0].exc_info is not None and "boom in callback" in str(failures[0].exc_info[1])
    assert observer.is_active
    observer.stop()


def test_callbacks_run_on_a_thread_per_observer_never_the_drivers(rig: Rig) -> None:
    first, second = Recorder(), Recorder()
    observers = [rig.presence.observe(first), rig.presence.observe(second)]
    update = graph_named("update")
    first.wait_count(1)
    second.wait_count(1)
    rig.publish_from_driver(update)
    first.wait_graph(update)
    second.wait_graph(update)

    threads = {*first.threads, *second.threads}
    assert rig.driver.thread not in threads
    assert threading.current_thread() not in threads
    assert set(first.threads).isdisjoint(second.threads)
    assert all(t.name.startswith("presence-observer-") and t.daemon for t in threads)
    for observer in observers:
        observer.stop()


def test_a_slow_callback_delays_only_its_own_observer(rig: Rig) -> None:
    release = threading.Event()

    def wait_for_release(graph: PresenceGraph) -> None:
        release.wait(WAIT)

    slow = Recorder(then=wait_for_release)
    fast = Recorder()
    slow_observer = rig.presence.observe(slow)
    fast_observer = rig.presence.observe(fast)

    updates = [graph_named(f"u{i}") for i in range(3)]
    for graph in updates:
        rig.publish_from_driver(graph)
        fast.wait_graph(graph)

    assert len(slow.graphs) == 1
    release.set()
    slow.wait_graph(updates[-1])
    slow_observer.stop()
    fast_observer.stop()


def test_wants_graphs_follows_active_observers(rig: Rig) -> None:
    assert not rig.presence.wants_graphs
    first = rig.presence.observe(lambda graph: None)
    second = rig.presence.observe(lambda graph: None)
    assert rig.presence.wants_graphs
    first.stop()
    assert rig.presence.wants_graphs
    second.stop()
    second.stop()  # idempotent
    assert not rig.presence.wants_graphs


def test_close_stops_every_observer(rig: Rig) -> None:
    busy, release = threading.Event(), threading.Event()

    def slow(graph: PresenceGraph) -> None:
        busy.set()
        assert release.wait(WAIT)

    slow_recorder, idle_recorder = Recorder(then=slow), Recorder()
    observers = [rig.presence.observe(slow_recorder), rig.presence.observe(idle_recorder)]
    assert busy.wait(WAIT)
    idle_recorder.wait_count(1)

    closer = threading.Thread(target=rig.presence.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() returned while a callback was still running"
    release.set()
    closer.join(WAIT)

    assert not any(o.is_active for o in observers)
    assert not rig.presence.wants_graphs
    rig.presence.publish(graph_named("after close"))
    for thread in (*slow_recorder.threads, *idle_recorder.threads):
        thread.join(WAIT)
        assert not thread.is_alive()
    assert len(slow_recorder.graphs) == len(idle_recorder.graphs) == 1
    with pytest.raises(PresenceError):
        rig.presence.observe(lambda graph: None)


def test_a_failing_first_fetch_raises_and_registers_nothing(rig: Rig) -> None:
    def broken_graph(now: float) -> PresenceGraph:
        raise RuntimeError("engine is gone")

    rig.engine.graph = broken_graph  # type: ignore[method-assign]

    with pytest.raises(RuntimeError, match="engine is gone"):
        rig.presence.observe(lambda graph: None)
    assert not rig.presence.wants_graphs


# ---------------------------------------------------------------- async iteration


def test_updates_yields_the_current_graph_then_new_ones_and_stops_on_break(rig: Rig) -> None:
    update = graph_named("update")

    async def main() -> list[PresenceGraph]:
        seen: list[PresenceGraph] = []
        async for graph in rig.presence.updates():
            seen.append(graph)
            if len(seen) == 1:
                assert rig.presence.wants_graphs
                rig.presence.publish(update)
            else:
                break
        # The abandoned iterator is closed by the loop soon after `break`.
        deadline = asyncio.get_running_loop().time() + WAIT
        while rig.presence.wants_graphs and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert not rig.presence.wants_graphs
        return seen

    seen = asyncio.run(main())

    assert [name_of(g) for g in seen] == ["pi-kitchen", "update"]


def test_updates_stops_its_observer_when_closed(rig: Rig) -> None:
    async def main() -> PresenceGraph:
        async with contextlib.aclosing(rig.presence.updates()) as updates:
            first = await anext(updates)
            assert rig.presence.wants_graphs
        assert not rig.presence.wants_graphs
        return first

    assert name_of(asyncio.run(main())) == "pi-kitchen"


def test_updates_coalesces_while_the_consumer_is_busy(rig: Rig) -> None:
    burst = [graph_named(f"g{i}") for i in range(50)]

    async def main() -> list[str]:
        names: list[str] = []
        async with contextlib.aclosing(rig.presence.updates()) as updates:
            names.append(name_of(await anext(updates)))
            for graph in burst:  # the loop is busy: none of these is handed over yet
                rig.presence.publish(graph)
            while names[-1] != "g49":
                names.append(name_of(await asyncio.wait_for(anext(updates), WAIT)))
        return names

    names = asyncio.run(main())

    assert names[0] == "pi-kitchen"
    assert names[-1] == "g49"
    assert len(names) < len(burst)
