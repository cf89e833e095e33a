"""``presence-agent run``: the agent in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from agent.config import AgentConfig
from agent.runtime.agent import Agent

#: syslog priorities for journald's "<N>" line prefixes.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald stamps the time and parses the priority."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{record.name}: {record.getMessage()}"


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") or not sys.stderr.isatty():
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


async def _serve(config: AgentConfig, state_dir: Path, name: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Agent(config, state_dir=state_dir, name=name) as agent, contextlib.AsyncExitStack() as page:
        print(
            f"presence-agent {agent.peer_key_string} running; state in {state_dir}",
            file=sys.stderr,
            flush=True,
        )
        if config.view.enabled:
            from agent.runtime.view import AgentView

            await page.enter_async_context(AgentView(agent, config.view))
        await stop.wait()
        logging.getLogger("agent.runtime").info("stopping on signal")


def run_forever(config: AgentConfig, state_dir: Path, name: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean stop."""
    configure_logging(config.agent.log_level)
    try:
        asyncio.run(_serve(config, state_dir, name))
    except OSError as exc:
        logging.getLogger("agent.runtime").error("cannot run: %s", exc)
        return 1
    return 0
