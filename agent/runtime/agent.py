"""The agent: an engine on its state directory, driven by asyncio with real transports.

Two ways in::

    async with Agent(config, state_dir=path) as agent:     # inside an event loop
        graph = agent.presence.graph()

    with BlockingAgent(config, state_dir=path) as agent:    # plain scripts: the loop runs
        graph = agent.presence.graph()                      # on a background thread

Everything that touches the engine runs on the agent's event loop. Presence
calls from other threads are marshalled onto it; observer callbacks and
connection request handlers run on threads of their own (see agent.api).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from agent.api.authorization import ConnectionRequestAuthorization, ConnectionRequestHandler
from agent.api.presence import Presence
from agent.config import AgentConfig
from agent.core.engine import UNCHANGED, Engine, LinkSpec, Unchanged
from agent.core.errors import PresenceError
from agent.core.events import CloseLink, ConnectionRequested, Event, LinkEstablished, LinkId
from agent.core.keys import public_key_from_string
from agent.core.medium import Broadcast, InterfaceId, MediumSpec
from agent.core.pump import pump
from agent.mqtt.messages import MirrorSnapshot
from agent.runtime.control import ControlServer
from agent.state.local_peer import LocalPeer, open_local_peer
from agent.transports.base import ReportsStatus, Transport

if TYPE_CHECKING:
    from agent.mqtt.mirror import MqttMirror

T = TypeVar("T")
log = logging.getLogger("agent.runtime")

#: How often learnt records are written to the store.
FLUSH_INTERVAL = 1.0


def _wall_clock(_now: float) -> float:
    """The engine's wall clock: Unix time, for signing records and checking their expiry only."""
    return time.time()


class AgentClosedError(PresenceError):
    """The agent was closed; its presence API no longer works."""


class _LoopDriver:
    """Runs Presence calls on the agent's loop, from any thread."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def call(self, fn: Callable[[Any, float], T]) -> T:
        agent = self._agent
        loop = agent._loop
        if loop is None or agent._closed:
            raise AgentClosedError("the agent is closed")
        if threading.get_ident() == agent._loop_thread:
            return agent._run(fn)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(agent._run(fn))
                except BaseException as exc:
                    future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:
            raise AgentClosedError("the agent is closed") from None
        return future.result()


class Agent:
    """One presence agent. Use as ``async with Agent(...) as agent``."""

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        state_dir: Path,
        name: str | None = None,
        transports: Sequence[Transport] | None = None,
        control_socket: bool = True,
        connection_request_handler: ConnectionRequestHandler | None = None,
    ) -> None:
        self.config = config or AgentConfig()
        self.state_dir = Path(state_dir)
        self._name = name or self.config.agent.name or None
        self._transports: list[Transport] = list(transports) if transports is not None else []
        self._default_transports = transports is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._local: LocalPeer | None = None
        self._presence: Presence | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._keeping_failed = False  # a revocation list could not be written: the flusher retries
        self._link_owner: dict[LinkId, Transport] = {}
        self._published_version = -1
        self._closed = False
        self._initial_handler = connection_request_handler
        self._control: ControlServer | None = ControlServer(self) if control_socket else None
        self._mirror: MqttMirror | None = None
        self._mirrored: tuple[int, bytes] | None = None
        self._mirror_timer: asyncio.TimerHandle | None = None
        #: Transport-level counters (drops, refusals), beside the engine's own stats.
        self.transport_stats: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the state directory, start the engine and the transports."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._local = open_local_peer(
            self.state_dir,
            now=self._loop.time(),
            wall=_wall_clock,
            device_name=self._name,
            config=self.config.engine_config(),
            trust=self.config.trust,
        )
        self._presence = Presence(
            _LoopDriver(self),
            self._local.identity.public_key,
            self._local.store,
            handler_timeout=self.config.presence.handler_timeout,
        )
        if self.config.mqtt.enabled:
            from agent.mqtt.mirror import MqttMirror  # paho is only imported when mirroring

            # Before the transports: a bad password file stops the start, not the mesh later.
            self._mirror = MqttMirror(self.config.mqtt, self._local.engine.peer_key_string)
        if self._initial_handler is not None:
            # Installed before any transport starts, so no request slips past it.
            self._presence.set_connection_request_handler(self._initial_handler)
        if self._default_transports and self.config.lan.enabled:
            from agent.transports.lan import LanTransport

            self._transports.append(LanTransport(self.config.lan, self._local.identity.public_key))
        if self._default_transports and self.config.radio.enabled:
            from agent.transports.radio import RadioTransport  # pyserial only when a dongle is wanted

            self._transports.append(RadioTransport(self.config.radio))
        if self._default_transports and self.config.ble.enabled:
            from agent.transports.ble import BleTransport  # bleak only when BLE is on

            self._transports.append(BleTransport(self.config.ble))
        try:
            for transport in self._transports:
                await transport.start(self)
        except BaseException:
            await self.close()
            raise
        if self._control is not None:
            await self._control.start()
        if self._mirror is not None:
            self._mirror.start()
        self._flusher = asyncio.ensure_future(self._flush_forever())
        self._pump()
        log.info("agent %s started in %s", self.peer_key_string, self.state_dir)

    async def close(self) -> None:
        """Close links, flush state, stop observers. Idempotent; no callbacks run afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._control is not None:
            await self._control.stop()
        if self._mirror_timer is not None:
            self._mirror_timer.cancel()
        if self._mirror is not None:
            await asyncio.to_thread(self._mirror.close)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for transport in self._transports:
            try:
                await transport.stop()
            except Exception:
                log.exception("stopping a transport failed")
        if self._timer is not None:
            self._timer.cancel()
        if self._presence is not None:
            # Off the loop: close() waits for running callbacks, which may be waiting
            # on this loop (a graph() call) and get AgentClosedError from it.
            await asyncio.to_thread(self._presence.close)
        if self._local is not None:
            self._local.close()
        log.info("agent stopped")

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ public

    @property
    def presence(self) -> Presence:
        """The Presence API of this agent."""
        if self._presence is None:
            raise PresenceError("the agent has not been started")
        return self._presence

    @property
    def engine(self) -> Engine:
        if self._local is None:
            raise PresenceError("the agent has not been started")
        return self._local.engine

    @property
    def peer_key_string(self) -> str:
        return self.engine.peer_key_string

    @property
    def mirror(self) -> MqttMirror | None:
        """The MQTT mirror, when ``[mqtt] broker`` is set."""
        return self._mirror

    def now(self) -> float:
        """The engine's clock: the loop's monotonic time (timers never move with the wall clock)."""
        if self._loop is None:
            raise PresenceError("the agent has not been started")
        return self._loop.time()

    def transport_status(self) -> list[dict[str, Any]]:
        """Each transport's own report (dongles up, BLE nodes connected and waiting), on the loop."""
        return [t.status() for t in self._transports if isinstance(t, ReportsStatus)]

    def stats(self) -> dict[str, int]:
        """Engine and transport counters, and the peer table's use, in one mapping (on the loop)."""
        merged = dict(self.engine.stats)
        merged["table.peers"], merged["table.bytes"] = self.engine.table_usage()
        merged.update({f"transport.{k}": v for k, v in self.transport_stats.items()})
        return merged

    # ------------------------------------------------------------------ LinkHost (transports call these)

    def link_up(self, link: LinkId, spec: LinkSpec) -> None:
        if self._closed:
            return
        self.engine.link_up(link, spec, self.now())
        self._pump()

    def update_link(
        self, link: LinkId, *, mtu: int | None = None, distance_dm: int | Unchanged | None = UNCHANGED
    ) -> None:
        if self._closed:
            return
        self.engine.update_link(link, self.now(), mtu=mtu, distance_dm=distance_dm)
        self._pump()

    def receive(self, link: LinkId, frame: bytes) -> None:
        if self._closed:
            return
        try:
            self.engine.receive(link, frame, self.now())
        except Exception:
            # The engine raises nothing for remote input; anything else is a bug. It must
            # not take the agent down: log it with the link, drop that link, go on.
            log.exception("engine error on link %r; dropping the link", link)
            self.transport_stats["engine_errors"] += 1
            owner = self._link_owner.get(link)
            if owner is not None:
                owner.close_link(link)
            self.link_down(link)
            return
        self._pump()

    def link_down(self, link: LinkId) -> None:
        self._link_owner.pop(link, None)
        if self._closed:
            return
        self.engine.link_down(link, self.now())
        self._pump()

    def count(self, name: str, n: int = 1) -> None:
        self.transport_stats[name] += n

    def register_link(self, link: LinkId, transport: Transport) -> None:
        """A transport announces which links are its own (before :meth:`link_up`)."""
        self._link_owner[link] = transport

    def interface_up(self, interface: InterfaceId, spec: MediumSpec, transport: Transport) -> None:
        if self._closed:
            return
        self._link_owner[Broadcast(interface)] = transport
        self.engine.interface_up(interface, spec, self.now())
        self._pump()

    def interface_down(self, interface: InterfaceId) -> None:
        self._link_owner.pop(Broadcast(interface), None)
        if self._closed:
            return
        self.engine.interface_down(interface, self.now())
        self._pump()

    def interface_refused(self, interface: InterfaceId, wait: float) -> None:
        if self._closed:
            return
        self.engine.interface_refused(interface, wait, self.now())
        self._pump()

    def receive_on(
        self, interface: InterfaceId, frame: bytes, rssi: float | None = None, snr: float | None = None
    ) -> None:
        if self._closed:
            return
        try:
            self.engine.receive_on(interface, frame, self.now(), rssi, snr)
        except Exception:
            # As for a link (receive): a bug, logged and counted; the interface stays up.
            log.exception("engine error on interface %r; frame dropped", interface)
            self.transport_stats["engine_errors"] += 1
            return
        self._pump()

    # ------------------------------------------------------------------ the pump

    def _run(self, fn: Callable[[Any, float], T]) -> T:
        if self._closed:
            raise AgentClosedError("the agent is closed")
        try:
            return fn(self.engine, self.now())
        finally:
            self._pump()

    def _pump(self) -> None:
        """Act on everything the engine wants: events, frames, its timer, observers."""
        if self._closed or self._local is None:
            return
        engine = self._local.engine
        now = self.now()
        if engine.revocation_version != self._local.saved_revocation_version and not self._keeping_failed:
            self._save_revocation_lists()  # durable before the pump sends the new list on
        pump(engine, now, self)
        presence = self._presence
        if presence is not None and presence.wants_graphs and engine.graph_version != self._published_version:
            self._published_version = engine.graph_version
            presence.publish(engine.graph(now))
        mirror_due = self._mirror is not None and self._mirror_timer is None and self._loop is not None
        if mirror_due and (engine.graph_version, engine.summary) != self._mirrored:
            assert self._loop is not None
            self._mirror_timer = self._loop.call_later(self.config.mqtt.coalesce, self._offer_to_mirror)

    def _offer_to_mirror(self) -> None:
        """Hand the mirror the current view (a graph and the held records: references, no copies)."""
        self._mirror_timer = None
        if self._closed or self._mirror is None:
            return
        engine = self.engine
        self._mirrored = (engine.graph_version, engine.summary)
        graph = engine.graph(self.now())
        records = {
            p.peer_key_string: tuple(engine.records_of(public_key_from_string(p.peer_key_string)))
            for p in graph.peers()
        }
        self._mirror.offer(MirrorSnapshot(graph, records, time.time()))

    # EngineOutputs, for the pump.

    def send(self, link: LinkId, frame: bytes) -> None:
        owner = self._link_owner.get(link)
        if owner is not None:
            owner.send(link, frame)

    def handle_event(self, event: Event) -> None:
        if isinstance(event, ConnectionRequested):
            owner = self._link_owner.get(event.link)
            if owner is not None:
                owner.proved(event.link)
            self._ask_handler(event)
        elif isinstance(event, CloseLink):
            self._close_link(event)
        elif isinstance(event, LinkEstablished):
            owner = self._link_owner.get(event.link)
            if owner is not None:
                owner.established(event.link, public_key_from_string(event.peer_key_string))

    def wake_at(self, at: float) -> None:
        if self._loop is None:
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self.engine.handle_timer(self.now())
        self._pump()

    def _ask_handler(self, event: ConnectionRequested) -> None:
        assert self._presence is not None and self._loop is not None
        answer = asyncio.wrap_future(self._presence.authorize(event.request), loop=self._loop)

        def decided(done: asyncio.Future[ConnectionRequestAuthorization]) -> None:
            if self._closed:
                return
            allow = not done.cancelled() and done.result() is ConnectionRequestAuthorization.ALLOW
            self.engine.decide(event.link, allow, self.now())
            self._pump()

        answer.add_done_callback(decided)

    def _close_link(self, event: CloseLink) -> None:
        owner = self._link_owner.pop(event.link, None)
        log.debug("closing link %r: %s", event.link, event.reason)
        if owner is not None:
            owner.close_link(event.link)
        if event.retry_at is not None and event.peer_key_string is not None:
            # Even when the transport already lost the link, its back-off must hold.
            key = public_key_from_string(event.peer_key_string)
            for transport in [owner] if owner is not None else self._transports:
                transport.back_off(key, event.retry_at)

    def _save_revocation_lists(self) -> None:
        assert self._local is not None
        try:
            self._local.save_revocation_lists()
        except OSError as exc:
            # Never stops the loop; the flusher retries (and _flush_forever logs) every FLUSH_INTERVAL.
            self._keeping_failed = True
            log.warning("could not keep the new revocation list in the state directory (will retry): %s", exc)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self._local is not None:
                try:
                    self._local.flush()
                    self._keeping_failed = False
                except (PresenceError, OSError):
                    log.exception("could not persist records (will retry)")


class BlockingAgent:
    """An :class:`Agent` whose event loop runs on a background thread, for plain scripts."""

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        state_dir: Path,
        name: str | None = None,
        connection_request_handler: ConnectionRequestHandler | None = None,
    ) -> None:
        self._agent = Agent(
            config, state_dir=state_dir, name=name, connection_request_handler=connection_request_handler
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="presence-agent-loop", daemon=True
        )

    def start(self) -> BlockingAgent:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._agent.start(), self._loop).result()
        return self

    def close(self) -> None:
        """Stop the agent and its loop; no callbacks run after this returns."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._agent.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def presence(self) -> Presence:
        return self._agent.presence

    @property
    def peer_key_string(self) -> str:
        return self._agent.peer_key_string

    def call(self, fn: Callable[[Agent], T]) -> T:
        """Run ``fn(agent)`` on the agent's loop and return its result."""

        async def run() -> T:
            return fn(self._agent)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def __enter__(self) -> BlockingAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
