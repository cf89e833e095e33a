"""The runtime contains engine bugs: a link whose input raises is logged and dropped, the agent runs on.

The engine raises nothing for anything a remote sends; any other exception is a
bug (it surfaces in the engine's own tests). In a running agent it must still
never take the agent down: the runtime logs it with the link and drops that link.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.core.engine import LinkSpec
from agent.core.events import LinkId
from agent.core.records import ConnectionType
from agent.runtime.agent import Agent
from agent.transports.base import LinkHost


class PipeTransport:
    """A transport with no network: records what the agent asks of it."""

    def __init__(self) -> None:
        self.host: LinkHost | None = None
        self.sent: list[tuple[LinkId, bytes]] = []
        self.closed: list[LinkId] = []

    async def start(self, host: LinkHost) -> None:
        self.host = host

    def open(self, link: LinkId) -> None:
        assert self.host is not None
        self.host.register_link(link, self)
        self.host.link_up(link, LinkSpec(ConnectionType.WEB_SOCKET))

    def send(self, link: LinkId, frame: bytes) -> None:
        self.sent.append((link, frame))

    def close_link(self, link: LinkId) -> None:
        self.closed.append(link)

    def proved(self, link: LinkId) -> None:
        pass

    def established(self, link: LinkId, peer_key: bytes) -> None:
        pass

    def back_off(self, peer_key: bytes, until: float) -> None:
        pass

    async def stop(self) -> None:
        pass


def test_an_engine_error_on_one_link_drops_that_link_and_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        pipe = PipeTransport()
        agent = Agent(AgentConfig(), state_dir=tmp_path, transports=[pipe], control_socket=False)
        async with agent:
            pipe.open("faulty")
            pipe.open("healthy")
            assert {link for link, _ in pipe.sent} == {"faulty", "healthy"}  # both sent HELLO

            def bug(*_: object) -> None:
                raise RuntimeError("an engine bug")

            monkeypatch.setattr(agent.engine, "receive", bug)
            assert pipe.host is not None
            pipe.host.receive("faulty", b"\x00anything")
            monkeypatch.undo()

            assert pipe.closed == ["faulty"]
            assert agent.transport_stats["engine_errors"] == 1
            assert agent.engine.stats["links.closed"] == 1  # the faulty link is gone from the engine
            pipe.host.receive("healthy", b"\x00\xff")  # the other link still takes input (not CBOR)
            assert agent.engine.stats["messages.malformed"] == 1
            assert agent.presence.graph().local_peer.peer_key_string == agent.peer_key_string

    with caplog.at_level(logging.ERROR, logger="agent.runtime"):
        asyncio.run(scenario())
    assert any("engine error on link 'faulty'" in r.getMessage() for r in caplog.records)
