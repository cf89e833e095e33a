"""The pure, sans-I/O core: records, graph and the link-state engine.

Nothing in this package opens a socket, starts a thread or reads a clock; it
imports nothing from the rest of ``agent``.
"""
