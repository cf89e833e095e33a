"""Feeds of the web view (``agent.web``): where its graphs come from, and the commands that serve it.

Three feeds, one page:

* :func:`run_view` (``presence-agent view``) follows a running agent through its
  control socket with the same ``watch`` request ``presence-agent watch`` sends,
  so it works beside any running agent, started by anyone who may open the
  socket. If the agent is not (yet) running or stops, the page keeps the last
  picture with a one-line status and the feed reconnects every
  :data:`RECONNECT_INTERVAL` seconds.
* :class:`AgentView` (``[view] enabled = true`` in ``presence-agent run``) uses
  the in-process Presence API: an observer delivers each new graph, which is
  turned into a document on the agent's loop (the signed records are the
  engine's).
* :func:`run_fleet_view` (``presence-agent fleet --view``) feeds the merged,
  verified fleet graph and its rejections from a :class:`FleetView`, after
  every coalesced change.

Whichever feed, the server listens where the settings say and logs one line
with the page's URL; beyond loopback it loads (or makes) ``view.token`` in the
state directory and says that every request needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.core.graph import PresenceGraph
from agent.runtime.control import encode_request, graph_document, socket_path
from agent.web.documents import agent_document, fleet_document, unreachable_document
from agent.web.hub import Hub
from agent.web.server import ViewServer
from agent.web.settings import DEFAULT_MAX_CLIENTS, ListenAddress, ViewSettings, parse_listen
from agent.web.token import load_or_create_token, token_path

if TYPE_CHECKING:
    from agent.mqtt.fleet_view import FleetView
    from agent.runtime.agent import Agent

log = logging.getLogger("agent.web")

#: Seconds between attempts to reach an agent that is not answering on its control socket.
RECONNECT_INTERVAL: Final = 1.0
#: Longest graph line accepted from the control socket (a few thousand peers with their records).
MAX_GRAPH_LINE: Final = 64 * 1024 * 1024


async def start_server(hub: Hub, address: ListenAddress, state_dir: Path, max_clients: int) -> ViewServer:
    """The server on ``address`` (with the state directory's token beyond loopback), started and logged."""
    token = None if address.loopback else load_or_create_token(state_dir)
    server = ViewServer(hub, address, token=token, max_clients=max_clients)
    await server.start()
    if token is None:
        log.info("web view at %s", server.url)
    else:
        log.info(
            "web view at %s, listening beyond localhost: every request needs the token in %s (?token=...)",
            server.url,
            token_path(state_dir),
        )
    return server


# ---------------------------------------------------------------- the control socket (presence-agent view)


async def follow_control_socket(state_dir: Path, hub: Hub) -> None:
    """Publish every graph the agent on ``state_dir`` sends to a ``watch``; reconnect forever."""
    title = state_dir.name
    last: dict[str, Any] | None = None
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(socket_path(state_dir)), limit=MAX_GRAPH_LINE
            )
        except OSError as exc:
            status = f"cannot reach the agent on {state_dir} ({exc.strerror or exc}); is it running?"
        else:
            try:
                writer.write(encode_request({"op": "watch"}))
                await writer.drain()
                while line := await reader.readline():
                    answer = json.loads(line)
                    if not answer.get("ok"):
                        status = f"the agent refused the watch: {answer.get('error')}"
                        break
                    last = agent_document(answer["graph"])
                    hub.publish(last)
                else:
                    status = f"the agent on {state_dir} closed the watch (did it stop?)"
            except (OSError, ValueError) as exc:
                status = f"lost the agent on {state_dir} ({exc})"
            finally:
                writer.close()
        hub.publish({**last, "status": status} if last else unreachable_document(title, status))
        await asyncio.sleep(RECONNECT_INTERVAL)


async def _serve_until_signal(serve: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(stop)


def run_view(state_dir: Path, listen: str, max_clients: int = DEFAULT_MAX_CLIENTS) -> int:
    """``presence-agent view``: serve the page for the agent on ``state_dir`` until SIGTERM/SIGINT."""
    address = parse_listen(listen)

    async def serve(stop: asyncio.Event) -> None:
        hub = Hub()
        server = await start_server(hub, address, state_dir, max_clients)
        feed = asyncio.ensure_future(follow_control_socket(state_dir, hub))
        try:
            await stop.wait()
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
            await server.stop()

    return _run(serve)


def _run(serve: Any) -> int:
    try:
        asyncio.run(_serve_until_signal(serve))
    except OSError as exc:  # the address is taken, say
        log.error("cannot serve the web view: %s", exc)
        return 1
    return 0


# ---------------------------------------------------------------- in process ([view] of presence-agent run)


class AgentView:
    """The page for ``agent`` itself, fed by its Presence API; ``async with AgentView(agent, settings):``."""

    def __init__(self, agent: Agent, settings: ViewSettings) -> None:
        self._agent = agent
        self._settings = settings
        self.hub = Hub()
        self.server: ViewServer | None = None
        self._observer: Any = None

    async def __aenter__(self) -> AgentView:
        loop = asyncio.get_running_loop()
        address = parse_listen(self._settings.listen)
        self.server = await start_server(self.hub, address, self._agent.state_dir, self._settings.max_clients)

        def publish(graph: PresenceGraph) -> None:  # on the loop: the engine's records are read there
            self.hub.publish(agent_document(graph_document(self._agent, graph)))

        def on_change(graph: PresenceGraph) -> None:  # on the observer's thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(publish, graph)

        self._observer = self._agent.presence.observe(on_change)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._observer is not None:
            self._observer.stop()
        if self.server is not None:
            await self.server.stop()


# ---------------------------------------------------------------- the fleet (presence-agent fleet --view)


def run_fleet_view(
    view: FleetView,
    title: str,
    listen: str,
    state_dir: Path,
    max_clients: int = DEFAULT_MAX_CLIENTS,
) -> int:
    """Serve the fleet's merged graph from ``view`` (started) until SIGTERM/SIGINT."""
    address = parse_listen(listen)

    def document() -> dict[str, Any]:
        rejections = [dataclasses.asdict(r) for r in view.rejections]
        return fleet_document(view.graph().to_json(), rejections, title=title)

    async def serve(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        hub = Hub()
        hub.publish(document())
        server = await start_server(hub, address, state_dir, max_clients)
        halt = threading.Event()

        def pump() -> None:  # FleetView.changes blocks: its own thread
            try:
                hub.publish_threadsafe(loop, document())
                for _update in view.changes(stop=halt):
                    hub.publish_threadsafe(loop, document())
            except Exception:  # a bug of ours: the page stops following, say why
                log.exception("the fleet view's feed failed")

        thread = threading.Thread(target=pump, name="fleet-view-feed", daemon=True)
        thread.start()
        try:
            await stop.wait()
        finally:
            halt.set()
            await server.stop()

    return _run(serve)
