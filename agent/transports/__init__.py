"""Transports: thin adapters that move frames and report links to the runtime.

A transport never interprets frames; it reports each link with its limits
(:class:`agent.core.engine.LinkSpec`) and hands over whatever arrives.
"""
