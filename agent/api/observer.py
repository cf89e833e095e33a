"""Presence observers: a callback with a daemon thread of its own.

Each observer owns a *mailbox* (:class:`GraphMailbox`) that holds at most one
pending graph, and a daemon thread named ``presence-observer-N`` that takes the
pending graph and calls the callback with it. Graphs carry a sequence number
given out by the :class:`~agent.api.Presence`; a mailbox only ever accepts a
graph newer than every graph it has held, so bursts coalesce to the latest and
an older graph can never overtake a newer one.

Lifetime: the Presence holds the mailbox; only the application holds the
:class:`PresenceObserver`. When the observer is garbage collected a finalizer
marks the mailbox stopped and wakes its thread, which then ends. The finalizer
takes no lock (garbage collection may run on any thread, even one that holds
our locks); it uses :class:`queue.SimpleQueue`, whose ``put`` is documented as
safe in finalizers.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TypeAlias

from agent.core.graph import PresenceGraph

logger = logging.getLogger("agent.api")

PresenceCallback: TypeAlias = Callable[[PresenceGraph], None]
"""An observer callback: called with each new graph on the observer's own thread."""

_thread_numbers = itertools.count(1)


class GraphMailbox:
    """One observer's pending graph, its callback and the thread that runs it.

    For :class:`agent.api.Presence`; applications use :class:`PresenceObserver`.
    """

    def __init__(
        self,
        callback: PresenceCallback,
        *,
        on_stop: Callable[[GraphMailbox], None],
    ) -> None:
        """``on_stop(mailbox)`` runs when the mailbox stops (possibly more than once)."""
        self._callback: PresenceCallback | None = callback
        self._on_stop = on_stop
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._pending: PresenceGraph | None = None
        self._delivered: PresenceGraph | None = None  # touched by the thread only
        self._newest_seq = 0
        self._signalled = False
        self._running = False
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name=f"presence-observer-{next(_thread_numbers)}", daemon=True
        )

    @property
    def is_active(self) -> bool:
        """False once stopped (by ``stop()``, by collection of its observer, or by close)."""
        return not self._stopped

    @property
    def thread(self) -> threading.Thread:
        """The thread callbacks run on."""
        return self._thread

    def start(self) -> None:
        """Start the thread that delivers offered graphs."""
        self._thread.start()

    def offer(self, seq: int, graph: PresenceGraph) -> None:
        """Make ``graph`` the pending one unless a graph as new (``seq``) was already offered.

        Never blocks on the callback: safe to call from the driver's thread.
        """
        with self._lock:
            if self._stopped or seq <= self._newest_seq:
                return
            self._newest_seq = seq
            self._pending = graph
            if self._signalled:
                return
            self._signalled = True
        self._wake.put(None)

    def stop(self, *, wait: bool = True) -> None:
        """No callback starts after this returns; with ``wait``, a running one has
        finished and the thread has ended.

        Called from inside the callback it never waits (that would deadlock);
        the callback in progress is then the last.
        """
        wait = wait and threading.current_thread() is not self._thread
        with self._lock:
            self._stopped = True
            self._pending = None
            while wait and self._running:
                self._idle.wait()
        self._wake.put(None)
        if wait and self._thread.ident is not None:
            self._thread.join()  # idle now: it only has to notice the stop
        self._on_stop(self)

    def abandon(self) -> None:
        """Stop without waiting and without taking a lock (the observer was collected)."""
        self._stopped = True
        self._wake.put(None)

    def _run(self) -> None:
        while True:
            self._wake.get()
            with self._lock:
                if self._stopped:
                    break
                graph, self._pending, self._signalled = self._pending, None, False
                # An equal graph is no change (say a driver republishing what a new
                # observer was just given): skip it.
                if graph is None or graph == self._delivered:
                    continue
                callback = self._callback
                self._running = True
            self._delivered = graph
            try:
                if callback is not None:
                    callback(graph)
            except Exception:
                logger.exception("presence observer callback raised; the observer keeps running")
            finally:
                with self._lock:
                    self._running = False
                    self._idle.notify_all()
                del graph, callback
        # Let go of the callback (and whatever it holds) now that it will never run again.
        self._callback = self._delivered = None
        self._on_stop(self)


class PresenceObserver:
    """A registration made by :meth:`agent.api.Presence.observe`.

    Keep a reference to it for as long as you want updates: the Presence holds
    observers only weakly, so dropping the last reference ends it, as does
    :meth:`stop`. It is a context manager that stops on exit::

        with presence.observe(print) as observer:
            ...

    A callback that refers to its own observer keeps it alive until
    :meth:`stop` is called.
    """

    def __init__(self, mailbox: GraphMailbox) -> None:
        """For :class:`agent.api.Presence`; use :meth:`~agent.api.Presence.observe`."""
        self._mailbox = mailbox
        # Not a bound method of self: the finalizer must not keep the observer alive.
        self._finalizer = weakref.finalize(self, mailbox.abandon)

    @property
    def is_active(self) -> bool:
        """True until the observer is stopped (or the Presence closed)."""
        return self._mailbox.is_active

    def stop(self) -> None:
        """End the observer. Idempotent.

        When this returns no callback will start again, and a callback that was
        running (on the observer's thread) has returned -- unless ``stop()`` is
        called from inside that very callback, in which case it returns at once
        and that callback is the last.
        """
        self._mailbox.stop()
        self._finalizer.detach()

    def __enter__(self) -> PresenceObserver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "active" if self.is_active else "stopped"
        return f"<PresenceObserver {self._mailbox.thread.name} {state}>"
