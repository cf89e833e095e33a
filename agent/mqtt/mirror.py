"""The MQTT mirror: keeps the broker's retained topics equal to the agent's current view.

The agent hands over a :class:`MirrorSnapshot` at most once per ``coalesce``
interval (:meth:`MqttMirror.offer` only swaps a reference, so the mesh never
waits on the broker). A worker thread turns the latest snapshot into the map of
retained topics (:mod:`agent.mqtt.messages`), diffs it against the previous map
and publishes only the topics whose bytes changed, at most ``WINDOW`` messages
unacknowledged at a time. A topic that disappeared (a peer that left) is
published empty, which deletes it on the broker.

After every (re)connect the whole map is published again, status first, and for
``SWEEP_SECONDS`` the mirror listens to its own subtree: any retained topic the
broker still holds that the map lacks (left over from before a crash or a broker
outage) is cleared. A clean shutdown clears every topic and leaves ``offline``;
after a crash the last will says ``offline`` and the next start sweeps.
Home Assistant discovery configs live outside the agent's subtree and are left
in place across restarts (so entities keep their history and turn unavailable
with the agent); a departed peer's config goes once ``MAX_DEPARTED`` newer ones
push it out.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from agent.core.graph import Peer
from agent.mqtt.broker import BrokerOptions, broker_options
from agent.mqtt.connection import BrokerConnection
from agent.mqtt.messages import MirrorOptions, MirrorSnapshot, build_messages
from agent.mqtt.settings import MqttSettings
from agent.mqtt.topics import OFFLINE, ONLINE, TopicKind, TopicLayout, short_id

log = logging.getLogger("agent.mqtt")

#: Most publishes awaiting the broker's acknowledgement (QoS 1/2) or the socket (QoS 0).
WINDOW: Final = 64
#: After a connect, retained topics of ours that the broker reports within this time are checked.
SWEEP_SECONDS: Final = 3.0
OK: Final = MQTTErrorCode.MQTT_ERR_SUCCESS
#: Departed peers remembered for Home Assistant (shown absent); older ones are removed.
MAX_DEPARTED: Final = 1000


class MqttMirror:
    """Mirror one agent's view to a broker. Thread-safe; ``offer`` never blocks on the network."""

    def __init__(self, settings: MqttSettings, agent_key: str, options: BrokerOptions | None = None) -> None:
        self.settings = settings
        self.agent_key = agent_key
        self._options = MirrorOptions(
            TopicLayout(settings.topic_root, settings.discovery_prefix), settings.homeassistant
        )
        layout = self._options.layout
        self._status_topic = layout.agent_topic(agent_key, TopicKind.STATUS)
        self._own_filter = layout.agent_filter(agent_key)
        self._own_prefix = layout.agent_prefix(agent_key) + "/"
        self._lock = threading.RLock()  # RLock: paho may call on_publish inside publish()
        self._wake = threading.Condition(self._lock)
        self._snapshot: MirrorSnapshot | None = None
        self._desired: dict[str, bytes] = {}
        self._pending: dict[str, bytes] = {}
        self._sent = 0
        self._acked = 0
        self._sweep_until = 0.0
        self._closing = False
        self._peers: dict[str, Peer] = {}
        self._last_change: dict[str, float] = {}
        self._departed: collections.OrderedDict[str, Peer] = collections.OrderedDict()
        #: Counters for ``status``: published, cleared, swept, dropped, snapshots.
        self.counters: collections.Counter[str] = collections.Counter(
            dict.fromkeys(("published", "cleared", "swept", "dropped", "snapshots"), 0)
        )
        self._connection = BrokerConnection(
            options or broker_options(settings),
            client_id=settings.client_id or f"presence-agent-{short_id(agent_key)}",
            will=(self._status_topic, OFFLINE),
            on_connected=self._on_connected,
            on_message=self._on_retained,
            name="mqtt-mirror",
        )
        self._connection.client.on_publish = self._on_published
        self._worker = threading.Thread(target=self._work, name="mqtt-mirror-publish", daemon=True)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._worker.start()
        self._connection.start()

    def offer(self, snapshot: MirrorSnapshot) -> None:
        """The agent's latest view; an older one not yet published is replaced."""
        with self._wake:
            self._snapshot = snapshot
            self._wake.notify()

    def close(self, timeout: float = 3.0) -> None:
        """Clear every topic of ours, say ``offline``, disconnect. Blocks up to about ``timeout``."""
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._worker.join(timeout)
        client = self._connection.client
        if self._connection.connected:
            qos = self.settings.qos
            with self._lock:
                # Home Assistant discovery stays: its entities turn unavailable with our status.
                own = [t for t in self._desired if t.startswith(self._own_prefix)]
            topics = [t for t in own if t != self._status_topic]
            for topic in topics:
                client.publish(topic, b"", qos=qos, retain=True)
            last = client.publish(self._status_topic, OFFLINE, qos=1, retain=True)
            try:
                last.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("could not tell the broker this agent is going offline (the last will will)")
        self._connection.stop(timeout)

    def status(self) -> dict[str, Any]:
        """State and counters, for the control socket and tests."""
        conn = self._connection
        with self._lock:
            return {
                "broker": conn.options.address.url,
                "state": conn.state.value,
                "last_error": conn.last_error,
                "connects": conn.connects,
                "failures": conn.failures,
                "topics": len(self._desired),
                "pending": len(self._pending),
                **self.counters,
            }

    # ------------------------------------------------------------ connection callbacks (its thread)

    def _on_connected(self, client: mqtt.Client) -> None:
        with self._wake:
            # Everything again, status first: the broker may have lost it all (restart, no persistence).
            self._pending = {self._status_topic: ONLINE, **self._desired}
            self._sent = self._acked = 0
            self._sweep_until = time.monotonic() + SWEEP_SECONDS
            self._wake.notify()
        client.subscribe(self._own_filter, qos=0)

    def _on_retained(self, message: mqtt.MQTTMessage) -> None:
        # Only retained copies answer our subscription; live echoes of our own publishes do not.
        if not message.retain or not message.payload:
            return
        with self._wake:
            if message.topic not in self._desired and message.topic not in self._pending:
                self._pending[message.topic] = b""
                self.counters["swept"] += 1
                self._wake.notify()

    def _on_published(self, _c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        with self._wake:
            self._acked += 1
            self._wake.notify()

    # ------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(self._has_work, timeout=self._sweep_timeout())
                if self._closing:
                    return
                snapshot, self._snapshot = self._snapshot, None
            if snapshot is not None:
                self._apply(snapshot)
            self._publish_some()
            self._end_sweep_if_due()

    def _has_work(self) -> bool:
        return self._closing or self._snapshot is not None or self._can_send()

    def _can_send(self) -> bool:
        return bool(self._pending) and self._connection.connected and self._sent - self._acked < WINDOW

    def _sweep_timeout(self) -> float | None:
        return max(0.0, self._sweep_until - time.monotonic()) if self._sweep_until else None

    def _apply(self, snapshot: MirrorSnapshot) -> None:
        """Build the topics of ``snapshot`` and queue the ones that differ from what was queued before."""
        self.counters["snapshots"] += 1
        shown = {p.peer_key_string: p for p in snapshot.graph.peers()}
        for key, peer in shown.items():
            if self._peers.get(key) != peer:
                self._last_change[key] = snapshot.taken_at
            self._departed.pop(key, None)
        for key in self._peers.keys() - shown.keys():
            self._last_change.pop(key, None)
            self._departed[key] = self._peers[key]
        while len(self._departed) > MAX_DEPARTED:
            self._departed.popitem(last=False)
        self._peers = shown
        desired = build_messages(
            self._options, snapshot, last_change=self._last_change, departed=self._departed
        )
        with self._wake:
            previous, self._desired = self._desired, desired
            if not self._connection.connected:
                return  # the connect publishes all of self._desired
            for topic, payload in desired.items():
                if previous.get(topic) != payload:
                    self._pending[topic] = payload
            for topic in previous.keys() - desired.keys():
                self._pending[topic] = b""
                self.counters["cleared"] += 1
            self._bound_pending()

    def _bound_pending(self) -> None:
        """A broker slower than the mesh: drop queued clears first (the next sweep catches them)."""
        excess = len(self._pending) - self.settings.max_pending
        if excess <= 0:
            return
        for topic in [t for t, p in self._pending.items() if not p][:excess]:
            del self._pending[topic]
            self.counters["dropped"] += 1

    def _publish_some(self) -> None:
        with self._wake:
            if not self._can_send():
                return
            room = WINDOW - (self._sent - self._acked)
            batch: list[tuple[str, bytes]] = []
            for topic in list(self._pending)[:room]:
                batch.append((topic, self._pending.pop(topic)))
            self._sent += len(batch)
        client = self._connection.client
        done = 0
        for topic, payload in batch:
            if client.publish(topic, payload, qos=self.settings.qos, retain=True).rc is not OK:
                break  # lost the connection mid-batch: the next connect republishes everything
            done += 1
        with self._wake:
            self._sent -= len(batch) - done
            self.counters["published"] += done

    def _end_sweep_if_due(self) -> None:
        if self._sweep_until and time.monotonic() >= self._sweep_until:
            self._sweep_until = 0.0
            if self._connection.connected:
                self._connection.client.unsubscribe(self._own_filter)
