"""The TOML configuration (``agent.config``): a file an operator (or a profile) provides.

``config``: the input is the file's bytes, read by ``load_config`` from a
temporary file. Contract: it returns an ``AgentConfig`` or raises
``ConfigError`` -- one line naming the file -- for anything it refuses (not
UTF-8, not TOML, nested too deep, an unknown key, a wrong type or value); an
accepted configuration builds its engine configuration.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

from agent.config import ConfigError, load_config

from .contract import Target, require

_fd, _name = tempfile.mkstemp(prefix="fuzz-config-", suffix=".toml")
os.close(_fd)
_PATH = Path(_name)
atexit.register(lambda: _PATH.unlink(missing_ok=True))


def config(data: bytes) -> None:
    _PATH.write_bytes(data)
    try:
        loaded = load_config(_PATH)
    except ConfigError as exc:
        message = str(exc)
        require(message.startswith(str(_PATH)) and "\n" not in message, f"not one line: {message[:300]!r}")
        raise
    loaded.engine_config()


TARGETS = (Target("config", config, (ConfigError,)),)
