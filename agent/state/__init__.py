"""Persistence: this peer's identity key file and the SQLite state store.

:mod:`agent.state.identity` loads (or creates once) the Ed25519 key that *is*
this peer; :mod:`agent.state.store` keeps the crash-safe record counter, the
published metadata and the records this peer holds, across restarts.
"""
