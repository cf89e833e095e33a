"""The fleet view's broker side: subscribe, feed every message to a :class:`FleetState`, answer queries.

    with FleetView(options) as view:          # connects; raises BrokerRefusedError / BrokerUnreachableError
        graph = view.settle()                  # waits for the broker's retained burst, then the merged graph
        for diff in view.changes():            # live: one FleetDiff per coalesced change
            ...

Only signed records are merged (``FleetState`` verifies each one); the JSON
``state`` topics are for dashboards and never trusted here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import paho.mqtt.client as mqtt

from agent.core.certs import FleetTrust
from agent.mqtt.broker import BrokerOptions
from agent.mqtt.connection import BrokerConnection
from agent.mqtt.fleet import FleetDiff, FleetGraph, FleetState, Rejection
from agent.mqtt.topics import DEFAULT_TOPIC_ROOT, TopicLayout

#: The retained burst after subscribing is over once no message came for this long.
SETTLE_QUIET: Final = 0.3
#: Changes closer together than this are reported as one diff.
WATCH_COALESCE: Final = 0.2
#: Even with no message, the graph is recomputed this often (records expire with time).
WATCH_REFRESH: Final = 5.0


@dataclass(frozen=True, slots=True)
class FleetUpdate:
    """One step of :meth:`FleetView.changes`: the graph's diff and records rejected since the last step."""

    diff: FleetDiff
    rejections: tuple[Rejection, ...] = ()


class FleetView:
    """A live, verified, fleet-wide graph from a broker. Thread-safe."""

    def __init__(
        self,
        options: BrokerOptions,
        *,
        topic_root: str = DEFAULT_TOPIC_ROOT,
        client_id: str | None = None,
        connect_timeout: float = 10.0,
        trust: FleetTrust | None = None,
    ) -> None:
        self.layout = TopicLayout(topic_root)
        self._state = FleetState(self.layout, trust=trust)
        self._lock = threading.Condition()
        self._last_message = 0.0
        self._subscribed = False
        self._subscribed_at = 0.0
        self._messages = 0
        self._connect_timeout = connect_timeout
        self._started = False
        self._connection = BrokerConnection(
            options,
            client_id=client_id or f"presence-fleet-{os.getpid()}-{os.urandom(3).hex()}",
            on_connected=self._on_connected,
            on_message=self._on_message,
            name="mqtt-fleet",
        )
        self._connection.client.on_subscribe = self._on_subscribed

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FleetView:
        """Connect and subscribe; a second call does nothing.

        Raises BrokerRefusedError (credentials, TLS trust) or BrokerUnreachableError.
        """
        if self._started:
            return self
        self._started = True
        self._connection.start()
        try:
            self._connection.wait_connected(self._connect_timeout)
        except BaseException:
            self._connection.stop()
            raise
        return self

    def close(self) -> None:
        self._connection.stop()

    def __enter__(self) -> FleetView:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ queries

    def graph(self) -> FleetGraph:
        with self._lock:
            return self._state.graph()

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        with self._lock:
            return self._state.rejections

    def settle(self, timeout: float = 10.0) -> FleetGraph:
        """Wait until the retained state has arrived (no message for a moment), then the graph."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while time.monotonic() < deadline:
                quiet_until = max(self._last_message, self._subscribed_at) + SETTLE_QUIET
                if self._subscribed and time.monotonic() >= quiet_until:
                    break
                self._lock.wait(max(0.01, min(quiet_until, deadline) - time.monotonic()))
            return self._state.graph()

    def changes(self, *, stop: threading.Event | None = None) -> Iterator[FleetUpdate]:
        """Yield what changed since the settled graph, coalesced, until ``stop`` is set."""
        previous = self.settle()
        with self._lock:
            reported = self._state.stats.get("rejected", 0)
        while stop is None or not stop.is_set():
            with self._lock:
                seen = self._messages
                self._lock.wait_for(lambda: self._messages != seen, WATCH_REFRESH)  # noqa: B023
            time.sleep(WATCH_COALESCE)  # let a burst finish: one diff for it
            with self._lock:
                current = self._state.graph()
                total = self._state.stats.get("rejected", 0)
                rejections = self._state.rejections
            new = rejections[len(rejections) - min(total - reported, len(rejections)) :]
            reported = total
            diff = current.diff(previous)
            if diff or new:
                yield FleetUpdate(diff, new)
            previous = current

    # ------------------------------------------------------------ connection callbacks (its thread)

    def _on_connected(self, client: mqtt.Client) -> None:
        with self._lock:
            self._subscribed = False
        client.subscribe([(f, 1) for f in self.layout.fleet_filters()])

    def _on_subscribed(self, *_args: object) -> None:
        with self._lock:
            self._subscribed = True
            self._subscribed_at = time.monotonic()
            self._lock.notify_all()

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._state.handle(message.topic, bytes(message.payload))
            self._messages += 1
            self._last_message = time.monotonic()
            self._lock.notify_all()
