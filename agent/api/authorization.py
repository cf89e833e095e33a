"""Deciding incoming connection requests with the application's handler.

The engine asks, per incoming connection, whether to admit the remote peer.
The application answers through a handler set with
:meth:`agent.api.Presence.set_connection_request_handler` (or its ``_async``
twin). :class:`ConnectionRequestHandlerSlot` holds that handler and runs it
away from the caller's (the network's) thread:

* no handler set: the answer is :attr:`ConnectionRequestAuthorization.ALLOW`
  at once;
* a plain handler runs on one of a few daemon threads named
  ``presence-handler-N``;
* a coroutine handler runs on an event loop of its own, on a daemon thread
  named ``presence-handler-loop`` started on first use.

Whatever the handler does, the answer arrives: a handler that raises, returns
something other than a :class:`ConnectionRequestAuthorization`, or takes longer
than the timeout means :attr:`~ConnectionRequestAuthorization.DENY` (logged on
the ``agent.api`` logger). The timeout runs on a timer thread, so it fires on
time even when the handler's thread or loop is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, InvalidStateError
from typing import TypeAlias

from agent.core.events import ConnectionRequest

logger = logging.getLogger("agent.api")


class ConnectionRequestAuthorization(enum.Enum):
    """A connection request handler's answer; values keep the reference API's spellings."""

    ALLOW = "Allow"
    DENY = "Deny"


ConnectionRequestHandler: TypeAlias = Callable[[ConnectionRequest], ConnectionRequestAuthorization]
"""A plain handler: called off the network thread, returns Allow or Deny."""

AsyncConnectionRequestHandler: TypeAlias = Callable[
    [ConnectionRequest], Awaitable[ConnectionRequestAuthorization]
]
"""A coroutine handler (``async def handler(request) -> ConnectionRequestAuthorization``)."""

#: Sync handlers run on at most this many threads; more requests queue (and
#: still time out on time).
HANDLER_THREADS = 4

_Job: TypeAlias = Callable[[], None]


class _DaemonWorkers:
    """Up to ``size`` daemon threads running jobs in arrival order.

    A :class:`concurrent.futures.ThreadPoolExecutor` would do, except that its
    threads are joined at interpreter exit: a handler stuck forever would keep
    the agent from exiting. Daemon threads do not.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, job: _Job) -> None:
        """Queue ``job``; start another thread if none is idle and the pool is not full."""
        with self._lock:
            if self._closed:
                raise RuntimeError("handler threads are shut down")
            self._jobs.put(job)
            if self._idle.acquire(blocking=False) or len(self._threads) >= self._size:
                return
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        """Let every thread finish its current job and end; queued jobs still run first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()  # jobs log their handler's errors; this catches what they let through
            except BaseException:
                logger.exception("a connection request handler stopped its thread; carrying on")
            self._idle.release()


class ConnectionRequestHandlerSlot:
    """Holds the application's connection request handler and runs it safely.

    ``authorize(request)`` never raises and never blocks; its future always
    resolves, at the latest ``timeout`` seconds after the call. Used by
    :class:`agent.api.Presence`; a driver reaches it through
    :meth:`agent.api.Presence.authorize`.
    """

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"handler timeout must be positive, got {timeout}")
        self._timeout = timeout
        self._lock = threading.Lock()
        # Every answer is given under this lock, so the timeout can log and then answer
        # without a handler's answer slipping in between.
        self._answer_lock = threading.Lock()
        self._handler: ConnectionRequestHandler | None = None
        self._async_handler: AsyncConnectionRequestHandler | None = None
        self._workers: _DaemonWorkers | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._pending: set[Future[ConnectionRequestAuthorization]] = set()
        self._closed = False

    @property
    def timeout(self) -> float:
        """Seconds a handler has to answer before the request is denied."""
        return self._timeout

    def set_handler(self, handler: ConnectionRequestHandler | None) -> None:
        """Use ``handler`` for later requests (replacing any async one); ``None`` allows all."""
        with self._lock:
            self._handler, self._async_handler = handler, None

    def set_async_handler(self, handler: AsyncConnectionRequestHandler | None) -> None:
        """Use the coroutine ``handler`` for later requests; ``None`` allows all."""
        with self._lock:
            self._handler, self._async_handler = None, handler

    def authorize(self, request: ConnectionRequest) -> Future[ConnectionRequestAuthorization]:
        """Start deciding ``request``; the future resolves to Allow or Deny (never an exception).

        Requests already being decided keep the handler they started with.
        After :meth:`close` every request is denied.
        """
        future: Future[ConnectionRequestAuthorization] = Future()
        try:
            self._start(request, future)
        except Exception:
            logger.exception(
                "could not run the connection request handler; denying %s", request.peer_key_string
            )
            self._resolve(future, ConnectionRequestAuthorization.DENY)
        return future

    def close(self) -> None:
        """Deny requests still undecided, stop the handler threads and loop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
            workers, loop, loop_thread = self._workers, self._loop, self._loop_thread
        for future in pending:
            self._resolve(future, ConnectionRequestAuthorization.DENY)
        if workers is not None:
            workers.close()
        if loop is not None and loop_thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            if threading.current_thread() is not loop_thread:
                # A handler blocking the loop must not hang close(); the thread is a daemon.
                loop_thread.join(timeout=1.0)

    # ------------------------------------------------------------ internals

    def _start(self, request: ConnectionRequest, future: Future[ConnectionRequestAuthorization]) -> None:
        with self._lock:
            closed = self._closed
            handler, async_handler = self._handler, self._async_handler
            workers: _DaemonWorkers | None = None
            loop: asyncio.AbstractEventLoop | None = None
            if not closed and handler is not None:
                if self._workers is None:
                    self._workers = _DaemonWorkers(HANDLER_THREADS, "presence-handler")
                workers = self._workers
            elif not closed and async_handler is not None:
                loop = self._handler_loop()
            if workers is not None or loop is not None:
                self._pending.add(future)

        if closed:
            logger.warning(
                "connection request from %s after the presence was closed; denying",
                request.peer_key_string,
            )
            self._resolve(future, ConnectionRequestAuthorization.DENY)
            return
        if workers is None and loop is None:  # no handler: the default admits everyone
            self._resolve(future, ConnectionRequestAuthorization.ALLOW)
            return

        timer = threading.Timer(self._timeout, self._time_out, args=(future, request.peer_key_string))
        timer.name = "presence-handler-timeout"
        timer.daemon = True
        future.add_done_callback(lambda _: timer.cancel())
        future.add_done_callback(self._forget)
        timer.start()

        if workers is not None and handler is not None:
            sync_handler = handler
            workers.submit(lambda: self._run_handler(sync_handler, request, future))
        elif loop is not None and async_handler is not None:
            task = asyncio.run_coroutine_threadsafe(
                self._run_async_handler(async_handler, request, future), loop
            )

            def cancel_task(_: Future[ConnectionRequestAuthorization]) -> None:
                if not task.done():  # timed out or closed: stop the coroutine at its next await
                    task.cancel()

            future.add_done_callback(cancel_task)

    def _handler_loop(self) -> asyncio.AbstractEventLoop:
        """The loop async handlers run on; started on first use. Call with the lock held."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_run_loop, args=(loop,), name="presence-handler-loop", daemon=True
            )
            thread.start()
            self._loop, self._loop_thread = loop, thread
        return self._loop

    def _forget(self, future: Future[ConnectionRequestAuthorization]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _resolve(
        self, future: Future[ConnectionRequestAuthorization], answer: ConnectionRequestAuthorization
    ) -> None:
        """Answer ``future`` unless it already has an answer."""
        with self._answer_lock:
            _set_answer(future, answer)

    def _time_out(self, future: Future[ConnectionRequestAuthorization], peer_key_string: str) -> None:
        with self._answer_lock:
            if future.done():
                return
            # Logged before answering: whoever sees the Deny finds the reason already logged.
            logger.warning(
                "connection request handler took longer than %s s; denying %s",
                self._timeout,
                peer_key_string,
            )
            _set_answer(future, ConnectionRequestAuthorization.DENY)

    def _run_handler(
        self,
        handler: ConnectionRequestHandler,
        request: ConnectionRequest,
        future: Future[ConnectionRequestAuthorization],
    ) -> None:
        if future.done():  # timed out (or closed) while queued behind slow handlers
            return
        try:
            answer = handler(request)
        except Exception:
            logger.exception("connection request handler raised; denying %s", request.peer_key_string)
            self._resolve(future, ConnectionRequestAuthorization.DENY)
            return
        self._resolve(future, _checked(answer, request))

    async def _run_async_handler(
        self,
        handler: AsyncConnectionRequestHandler,
        request: ConnectionRequest,
        future: Future[ConnectionRequestAuthorization],
    ) -> None:
        if future.done():
            return
        try:
            answer = await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("connection request handler raised; denying %s", request.peer_key_string)
            self._resolve(future, ConnectionRequestAuthorization.DENY)
            return
        self._resolve(future, _checked(answer, request))


def _set_answer(
    future: Future[ConnectionRequestAuthorization], answer: ConnectionRequestAuthorization
) -> None:
    # InvalidStateError: answered already (timed out, closed) or cancelled by the caller.
    with contextlib.suppress(InvalidStateError):
        future.set_result(answer)


def _checked(answer: object, request: ConnectionRequest) -> ConnectionRequestAuthorization:
    if isinstance(answer, ConnectionRequestAuthorization):
        return answer
    logger.error(
        "connection request handler returned %r, not a ConnectionRequestAuthorization; denying %s",
        answer,
        request.peer_key_string,
    )
    return ConnectionRequestAuthorization.DENY


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
