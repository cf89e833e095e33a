"""The asyncio runtime: drives the sans-I/O engine with the real clock and real transports."""

from agent.runtime.agent import Agent, BlockingAgent

__all__ = ["Agent", "BlockingAgent"]
