"""The Presence API: the mesh graph, observers, this peer's metadata, connection handlers.

:class:`Presence` is what applications use; it mirrors the reference
``presence()`` API in Pythonic form. It never touches the engine directly: an
:class:`EngineDriver` (the runtime, or the simulator) runs small functions in
the engine's own context, and calls back into the Presence -- :meth:`Presence.publish`
and :meth:`Presence.authorize` -- when the engine has news.

Ordering of graphs. Every graph handed to observers gets a sequence number,
given out under one small lock, and an observer only accepts a graph newer than
any it has held. :meth:`Presence.observe` registers the new observer first (so
every later publish reaches it), then fetches its first graph *inside the
engine's context* -- with a function passed to :meth:`EngineDriver.call` -- and
numbers it there. Drivers call :meth:`Presence.publish` from that same context,
so the numbering follows the engine's own order of events: a graph published
before the fetch is older than the fetched one, a graph published after it is
newer, and an older graph is never delivered last. No lock is held while
calling the driver, so a driver publishing from its thread cannot deadlock with
a new observer. (Caching the last published graph instead of fetching would
hand out stale graphs: drivers skip publishing while nobody observes.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Protocol, TypeVar

from agent.api.authorization import (
    AsyncConnectionRequestHandler,
    ConnectionRequestAuthorization,
    ConnectionRequestHandler,
    ConnectionRequestHandlerSlot,
)
from agent.api.observer import GraphMailbox, PresenceCallback, PresenceObserver
from agent.core.errors import MetadataError, PresenceError
from agent.core.events import ConnectionRequest
from agent.core.graph import PresenceGraph
from agent.core.records import (
    EMPTY_METADATA,
    Card,
    Metadata,
    check_card_budget,
    metadata_json,
    parse_metadata_json,
    thaw_metadata,
    validate_metadata,
)

logger = logging.getLogger("agent.api")

T = TypeVar("T")

#: Seconds a connection request handler has to answer before the request is denied.
DEFAULT_HANDLER_TIMEOUT = 10.0


class EngineDriver(Protocol):
    """Whatever runs the engine: the runtime's event loop, or the simulator."""

    def call(self, fn: Callable[[Any, float], T]) -> T:
        """Run ``fn(engine, now)`` in the engine's own context (its thread / event loop),
        wait, return its result. Afterwards the driver flushes the engine's outputs.
        Safe to call from any thread."""
        ...


class MetadataStore(Protocol):
    """Where this peer's metadata JSON survives restarts."""

    def save_metadata_json(self, text: str) -> None:
        """Store ``text``; it is durable when this returns."""
        ...

    def load_metadata_json(self) -> str | None:
        """The stored text, or ``None`` if nothing was ever stored."""
        ...


class Presence:
    """The entry point to the presence mesh.

    Applications read the mesh (:meth:`graph`, :meth:`observe`,
    :meth:`updates`), publish this peer's metadata (:meth:`set_peer_metadata`)
    and decide incoming connections (:meth:`set_connection_request_handler`).
    Drivers feed it with :meth:`publish` and ask it with :meth:`authorize`.

    Thread-safe. Close it (or use it as a context manager) to stop every
    observer and the handler threads.
    """

    def __init__(
        self,
        driver: EngineDriver,
        public_key: bytes,
        store: MetadataStore,
        *,
        handler_timeout: float = DEFAULT_HANDLER_TIMEOUT,
    ) -> None:
        """``public_key`` is this peer's raw Ed25519 key (needed to size its signed card).

        The metadata last stored in ``store`` becomes :attr:`peer_metadata`; the
        driver is expected to have built the engine's card from the same store.
        """
        self._driver = driver
        self._public_key = public_key
        self._store = store
        self._metadata = _load_metadata(store)
        self._metadata_lock = threading.Lock()  # serialises setters (save, then sign)
        self._lock = threading.Lock()  # guards the fields below; never held while calling out
        self._mailboxes: dict[int, GraphMailbox] = {}
        self._seq = 0
        self._closed = False
        self._handlers = ConnectionRequestHandlerSlot(handler_timeout)

    # ------------------------------------------------------------ the graph

    def graph(self) -> PresenceGraph:
        """An immutable snapshot of the mesh now.

        Blocks while the driver runs the request in the engine's context, so
        do not call it from inside that context (for example from a function
        passed to the driver).
        """
        graph: PresenceGraph = self._driver.call(lambda engine, now: engine.graph(now))
        return graph

    def observe(self, callback: PresenceCallback) -> PresenceObserver:
        """Call ``callback(graph)`` with the current graph, then whenever the mesh changes.

        The current graph is fetched (through the driver, like :meth:`graph`)
        before this returns and delivered at once. Callbacks run on a daemon
        thread of this observer's own (``presence-observer-N``), one at a time,
        so a slow callback delays only itself; while it runs, newer graphs
        coalesce and only the latest is delivered next; a graph equal to the
        one delivered last is skipped. A callback that raises is logged (logger
        ``agent.api``) and keeps being called.

        Keep the returned :class:`PresenceObserver`: updates stop when it is
        garbage collected, stopped, or used as a context manager that exits.
        Raises :class:`~agent.core.errors.PresenceError` once closed.
        """
        mailbox = GraphMailbox(callback, on_stop=self._forget)
        with self._lock:
            if self._closed:
                raise PresenceError("this Presence is closed; create a new one to observe the mesh")
            self._mailboxes[id(mailbox)] = mailbox
        try:
            self._offer_current_graph(mailbox)
        except BaseException:
            mailbox.stop()
            raise
        observer = PresenceObserver(mailbox)
        mailbox.start()
        return observer

    async def updates(self) -> AsyncGenerator[PresenceGraph, None]:
        """The current graph, then each new one, delivered into the running event loop::

            async for graph in presence.updates():
                ...

        Built on :meth:`observe` (registered from a worker thread, so the
        event loop never blocks on the driver): while the loop is busy, graphs
        coalesce to the latest. The observer stops when the iterator is closed
        -- ``aclose()``, or ``break`` out of the ``async for`` once the
        iterator is collected; ``contextlib.aclosing`` makes that immediate.
        """
        loop = asyncio.get_running_loop()
        newest: list[PresenceGraph] = []  # at most one graph, touched on the loop's thread only
        ready = asyncio.Event()

        def hand_over(graph: PresenceGraph) -> None:
            newest[:] = [graph]
            ready.set()

        def on_graph(graph: PresenceGraph) -> None:
            # A closed loop means nobody is iterating any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(hand_over, graph)

        observer = await loop.run_in_executor(None, self.observe, on_graph)
        try:
            while True:
                await ready.wait()
                ready.clear()
                yield newest.pop()
        finally:
            observer.stop()

    # ------------------------------------------------------------ for drivers

    @property
    def wants_graphs(self) -> bool:
        """For drivers: true while any observer is active, i.e. :meth:`publish` has a reader."""
        if not self._mailboxes:  # drivers ask after every event: keep the common case lock-free
            return False
        with self._lock:
            return any(m.is_active for m in self._mailboxes.values())

    def publish(self, graph: PresenceGraph) -> None:
        """For drivers: hand a new graph to every active observer. Never blocks on callbacks.

        Call it from the engine's context (the thread or loop that runs
        :meth:`EngineDriver.call` functions) whenever the engine's graph
        changed; that is what keeps graphs in order (see the module notes).
        """
        with self._lock:
            if self._closed or not self._mailboxes:
                return
            self._seq += 1
            seq = self._seq
            mailboxes = list(self._mailboxes.values())
        for mailbox in mailboxes:
            mailbox.offer(seq, graph)

    def authorize(self, request: ConnectionRequest) -> Future[ConnectionRequestAuthorization]:
        """For drivers: decide an incoming connection with the application's handler.

        Never raises and never blocks. The future resolves to ``ALLOW`` at once
        when no handler is set; otherwise to the handler's answer, or to
        ``DENY`` if the handler raises, answers with anything but a
        :class:`ConnectionRequestAuthorization`, or takes longer than
        ``handler_timeout`` seconds. After :meth:`close` it resolves ``DENY``.
        """
        return self._handlers.authorize(request)

    # ------------------------------------------------------------ metadata

    @property
    def peer_metadata(self) -> Metadata:
        """The metadata this peer publishes, as a read-only mapping (lists read as tuples)."""
        return self._metadata

    def peer_metadata_json_str(self) -> str:
        """The metadata this peer publishes as compact JSON with sorted keys."""
        return metadata_json(self._metadata)

    def peer_metadata_as(self, type_: Callable[..., T]) -> T:
        """The metadata this peer publishes, built into ``type_`` (the typed getter).

        A dataclass is called with the metadata's keys as keyword arguments
        (``AppInfo(**metadata)``: every key must be a field, nested values stay
        plain dicts and lists); anything else is called with a fresh ``dict``
        copy (``type_(metadata)``), so ``dict``, a ``TypedDict`` or a class
        taking one mapping all work. Raises
        :class:`~agent.core.errors.MetadataError` if ``type_`` refuses the data.
        """
        data = thaw_metadata(self._metadata)
        name = getattr(type_, "__qualname__", repr(type_))
        build = type_  # is_dataclass() would narrow type_ away from Callable[..., T]
        try:
            if isinstance(type_, type) and dataclasses.is_dataclass(type_):
                return build(**data)
            return build(data)
        except Exception as exc:
            keys = ", ".join(sorted(data)) or "none"
            raise MetadataError(
                f"this peer's metadata (keys: {keys}) does not fit {name}: {exc}. "
                f"Set metadata matching {name}, or read it with peer_metadata_as(dict)."
            ) from exc

    def set_peer_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Publish ``metadata`` (a JSON-like dict) about this peer to the mesh.

        It is signed with this peer's key inside its card, and stored so that
        it survives restarts. Raises :class:`~agent.core.errors.MetadataError`
        if it is not a JSON object of plain JSON data, and
        :class:`~agent.core.errors.MetadataTooLargeError` (with the size and
        the limit) if its compact JSON exceeds 4096 bytes or the signed card
        carrying it would; on any error nothing changes.
        """
        self._replace_metadata(validate_metadata(metadata))

    def set_peer_metadata_json_str(self, text: str) -> None:
        """Publish metadata given as JSON text (an object, at most 4096 bytes of UTF-8).

        Same rules and errors as :meth:`set_peer_metadata`.
        """
        if not isinstance(text, str):
            raise MetadataError(f"metadata JSON must be a str, got {type(text).__name__}")
        self._replace_metadata(parse_metadata_json(text))

    # ------------------------------------------------------------ connection requests

    def set_connection_request_handler(self, handler: ConnectionRequestHandler | None) -> None:
        """Decide incoming connections with ``handler(request) -> ConnectionRequestAuthorization``.

        The handler runs off the network thread and sees the remote peer's key,
        metadata, identity metadata and connection type. An answer that takes
        longer than ``handler_timeout`` seconds (10 by default), an exception or
        a wrong return value means Deny; a denied remote retries later.
        ``None`` restores the default, which allows every request. Replaces any
        handler set before (sync or async).
        """
        self._handlers.set_handler(handler)

    def set_connection_request_handler_async(self, handler: AsyncConnectionRequestHandler | None) -> None:
        """Like :meth:`set_connection_request_handler` with an ``async def`` handler.

        The coroutine runs on an event loop owned by this Presence, on a
        thread of its own; it must not block that loop.
        """
        self._handlers.set_async_handler(handler)

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Stop every observer and the handler threads. Idempotent.

        When this returns no observer callback will start again and none is
        running (except the one calling ``close()``, if any). Requests still
        being decided are denied. Do not call it from the driver's context
        while a callback may be waiting on :meth:`graph`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            mailboxes = list(self._mailboxes.values())
        for mailbox in mailboxes:
            mailbox.stop()
        self._handlers.close()

    def __enter__(self) -> Presence:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _offer_current_graph(self, mailbox: GraphMailbox) -> None:
        """Offer the engine's graph to a new observer, numbered in the engine's context."""

        def fetch(engine: Any, now: float) -> None:
            graph: PresenceGraph = engine.graph(now)
            with self._lock:
                self._seq += 1
                seq = self._seq
            mailbox.offer(seq, graph)

        self._driver.call(fetch)

    def _forget(self, mailbox: GraphMailbox) -> None:
        with self._lock:
            self._mailboxes.pop(id(mailbox), None)

    def _replace_metadata(self, metadata: Metadata) -> None:
        """Check the card budget, store, then sign and flood; on any error change nothing."""
        text = metadata_json(metadata)
        with self._metadata_lock:
            card: Card = self._driver.call(lambda engine, now: engine.card)
            check_card_budget(self._public_key, dataclasses.replace(card, metadata=metadata))
            previous = metadata_json(self._metadata)
            self._store.save_metadata_json(text)
            signed: list[bool] = []

            def sign(engine: Any, now: float) -> None:
                _set_card_metadata(engine, now, self._public_key, metadata)
                signed.append(True)

            try:
                self._driver.call(sign)
            except BaseException:
                if signed:  # the card changed; only the driver's flush failed: stay consistent
                    self._metadata = metadata
                    raise
                try:
                    self._store.save_metadata_json(previous)
                except Exception:
                    logger.exception(
                        "could not restore the stored peer metadata after a failed update; "
                        "the refused metadata will be published after a restart"
                    )
                raise
            self._metadata = metadata


def _set_card_metadata(engine: Any, now: float, public_key: bytes, metadata: Metadata) -> None:
    """In the engine's context: re-sign the card as it is now with new metadata.

    Building from the engine's current card (not a copy read earlier) keeps a
    concurrent change of name or OS; the budget is checked again for the same reason.
    """
    card = dataclasses.replace(engine.card, metadata=metadata)
    check_card_budget(public_key, card)
    engine.set_card(card, now)


def _load_metadata(store: MetadataStore) -> Metadata:
    text = store.load_metadata_json()
    if text is None:
        return EMPTY_METADATA
    try:
        return parse_metadata_json(text)
    except MetadataError:
        # Only validated metadata is ever stored, so this is disk damage: keep the agent up.
        logger.exception("stored peer metadata is unreadable; publishing {} until it is set again")
        return EMPTY_METADATA
