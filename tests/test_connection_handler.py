"""Connection request handlers: the default, sync and async handlers, failures and timeouts.

Every answer arrives as a future that always resolves; waits are bounded so a
broken implementation fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from types import MappingProxyType
from typing import Any

import pytest
from test_presence_api import WAIT, Rig, make_rig, new_public_key

from agent.api import ConnectionRequest, ConnectionRequestAuthorization, ConnectionType
from agent.api.authorization import HANDLER_THREADS, ConnectionRequestHandler
from agent.core.keys import peer_key_string
from agent.core.records import EMPTY_METADATA

ALLOW, DENY = ConnectionRequestAuthorization.ALLOW, ConnectionRequestAuthorization.DENY


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = make_rig()
    yield rig
    rig.close()


@pytest.fixture
def quick_rig() -> Iterator[Rig]:
    """Handlers get 0.2 s to answer."""
    rig = make_rig(handler_timeout=0.2)
    yield rig
    rig.close()


def request(app_version: str | None = "1.0.0") -> ConnectionRequest:
    metadata = {} if app_version is None else {"app_version": app_version}
    return ConnectionRequest(
        peer_key_string(new_public_key()),
        MappingProxyType(metadata),
        EMPTY_METADATA,
        ConnectionType.BLUETOOTH,
    )


def answer(future: Future[ConnectionRequestAuthorization]) -> ConnectionRequestAuthorization:
    return future.result(timeout=WAIT)


def refuse_buggy(req: ConnectionRequest) -> ConnectionRequestAuthorization:
    """The reference's example: deny a known buggy version, or no version at all."""
    if req.peer_metadata.get("app_version") in ("1.2.3", None):
        return DENY
    return ALLOW


async def refuse_buggy_async(req: ConnectionRequest) -> ConnectionRequestAuthorization:
    await asyncio.sleep(0)
    return refuse_buggy(req)


def allow_once_released(release: threading.Event) -> ConnectionRequestHandler:
    """A handler that answers Allow only when ``release`` is set (or after WAIT)."""

    def handler(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        release.wait(WAIT)
        return ALLOW

    return handler


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agent.api" and text in r.getMessage()]


# ---------------------------------------------------------------- the default and sync handlers


def test_without_a_handler_every_request_is_allowed_at_once(rig: Rig) -> None:
    future = rig.presence.authorize(request())

    assert future.done()
    assert future.result() is ALLOW


def test_a_sync_handler_allows_and_denies(rig: Rig) -> None:
    rig.presence.set_connection_request_handler(refuse_buggy)

    assert answer(rig.presence.authorize(request("1.2.4"))) is ALLOW
    assert answer(rig.presence.authorize(request("1.2.3"))) is DENY
    assert answer(rig.presence.authorize(request(None))) is DENY


def test_the_handler_sees_the_request_off_the_callers_thread(rig: Rig) -> None:
    seen: list[tuple[ConnectionRequest, threading.Thread]] = []

    def record(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        seen.append((req, threading.current_thread()))
        return ALLOW

    rig.presence.set_connection_request_handler(record)
    asked = request("3.1.0")
    assert answer(rig.presence.authorize(asked)) is ALLOW

    [(got, thread)] = seen
    assert got is asked
    assert got.connection_type is ConnectionType.BLUETOOTH
    assert thread is not threading.current_thread()
    assert thread.name.startswith("presence-handler")
    assert thread.daemon


def test_a_raising_handler_means_deny_and_is_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="agent.api")

    def broken(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        raise KeyError("app_version")

    rig.presence.set_connection_request_handler(broken)
    asked = request()

    assert answer(rig.presence.authorize(asked)) is DENY
    [record] = logged(caplog, "handler raised")
    assert asked.peer_key_string in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)


@pytest.mark.parametrize("wrong", [True, "Allow", None, 1])
def test_a_handler_answering_anything_else_means_deny(
    rig: Rig, caplog: pytest.LogCaptureFixture, wrong: Any
) -> None:
    caplog.set_level(logging.ERROR, logger="agent.api")
    rig.presence.set_connection_request_handler(lambda req: wrong)

    assert answer(rig.presence.authorize(request())) is DENY
    assert logged(caplog, "not a ConnectionRequestAuthorization")


def test_a_slow_handler_is_denied_after_the_timeout(quick_rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.api")
    release = threading.Event()
    quick_rig.presence.set_connection_request_handler(allow_once_released(release))
    asked = request()

    try:
        assert answer(quick_rig.presence.authorize(asked)) is DENY
    finally:
        release.set()
    [record] = logged(caplog, "took longer than 0.2 s")
    assert record.getMessage().endswith(f"denying {asked.peer_key_string}")


def test_stuck_handlers_cannot_starve_later_requests(quick_rig: Rig) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def stuck(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        started.release()
        release.wait(WAIT)
        return ALLOW

    quick_rig.presence.set_connection_request_handler(stuck)
    try:
        futures = [quick_rig.presence.authorize(request()) for _ in range(HANDLER_THREADS + 3)]
        # Every request is answered on time, including those queued behind stuck ones.
        assert [answer(f) for f in futures] == [DENY] * len(futures)
    finally:
        release.set()
    quick_rig.presence.set_connection_request_handler(refuse_buggy)
    assert answer(quick_rig.presence.authorize(request("2.0.0"))) is ALLOW


def test_setting_none_restores_allow_all(rig: Rig) -> None:
    rig.presence.set_connection_request_handler(lambda req: DENY)
    assert answer(rig.presence.authorize(request())) is DENY

    rig.presence.set_connection_request_handler(None)
    assert rig.presence.authorize(request()).result(timeout=0) is ALLOW

    rig.presence.set_connection_request_handler_async(refuse_buggy_async)
    assert answer(rig.presence.authorize(request(None))) is DENY
    rig.presence.set_connection_request_handler_async(None)
    assert rig.presence.authorize(request(None)).result(timeout=0) is ALLOW


def test_a_new_handler_replaces_the_old_one_of_either_kind(rig: Rig) -> None:
    async def deny_all(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        return DENY

    rig.presence.set_connection_request_handler(lambda req: ALLOW)
    rig.presence.set_connection_request_handler_async(deny_all)
    assert answer(rig.presence.authorize(request())) is DENY

    rig.presence.set_connection_request_handler(lambda req: ALLOW)
    assert answer(rig.presence.authorize(request())) is ALLOW


# ---------------------------------------------------------------- async handlers


def test_an_async_handler_allows_and_denies_on_its_own_loop(rig: Rig) -> None:
    threads: list[threading.Thread] = []

    async def decide(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        threads.append(threading.current_thread())
        asyncio.get_running_loop()  # really inside a running loop
        return await refuse_buggy_async(req)

    rig.presence.set_connection_request_handler_async(decide)

    assert answer(rig.presence.authorize(request("1.2.4"))) is ALLOW
    assert answer(rig.presence.authorize(request("1.2.3"))) is DENY
    assert {t.name for t in threads} == {"presence-handler-loop"}
    assert threading.current_thread() not in threads


def test_a_raising_async_handler_means_deny_and_is_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="agent.api")

    async def broken(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        raise ValueError("no such key")

    rig.presence.set_connection_request_handler_async(broken)

    assert answer(rig.presence.authorize(request())) is DENY
    [record] = logged(caplog, "handler raised")
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


def test_an_async_handler_answering_anything_else_means_deny(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="agent.api")

    async def wrong(req: ConnectionRequest) -> Any:
        return "Deny"

    rig.presence.set_connection_request_handler_async(wrong)
    assert answer(rig.presence.authorize(request())) is DENY
    assert logged(caplog, "not a ConnectionRequestAuthorization")


def test_a_plain_function_given_as_async_handler_means_deny(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="agent.api")
    rig.presence.set_connection_request_handler_async(refuse_buggy)  # type: ignore[arg-type]

    assert answer(rig.presence.authorize(request("2.0.0"))) is DENY
    assert logged(caplog, "handler raised")


def test_a_slow_async_handler_is_denied_and_cancelled(
    quick_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.api")
    cancelled = threading.Event()

    async def slow(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ALLOW

    quick_rig.presence.set_connection_request_handler_async(slow)
    asked = request()

    assert answer(quick_rig.presence.authorize(asked)) is DENY
    assert cancelled.wait(WAIT)
    [record] = logged(caplog, "took longer than 0.2 s")
    assert asked.peer_key_string in record.getMessage()


def test_an_async_handler_blocking_its_loop_is_still_denied_on_time(quick_rig: Rig) -> None:
    release = threading.Event()

    async def blocks_the_loop(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        release.wait(WAIT)  # wrong in a coroutine, but it must not stall the answer
        return ALLOW

    quick_rig.presence.set_connection_request_handler_async(blocks_the_loop)
    try:
        assert answer(quick_rig.presence.authorize(request())) is DENY
    finally:
        release.set()


# ---------------------------------------------------------------- lifetime


def test_close_denies_pending_and_later_requests(rig: Rig) -> None:
    release = threading.Event()
    rig.presence.set_connection_request_handler(allow_once_released(release))
    pending = rig.presence.authorize(request())

    try:
        rig.presence.close()
        assert answer(pending) is DENY
        assert answer(rig.presence.authorize(request())) is DENY
    finally:
        release.set()


def test_close_stops_the_handler_loop(rig: Rig) -> None:
    loops: list[threading.Thread] = []

    async def allow(req: ConnectionRequest) -> ConnectionRequestAuthorization:
        loops.append(threading.current_thread())
        return ALLOW

    rig.presence.set_connection_request_handler_async(allow)
    assert answer(rig.presence.authorize(request())) is ALLOW

    rig.presence.close()

    loops[0].join(WAIT)
    assert not loops[0].is_alive()
