"""Small pieces shared by tests (imported by bare name: tests/ is on sys.path)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.core.engine import Engine

T = TypeVar("T")


class DirectDriver:
    """An EngineDriver for one engine with no network: runs calls under a lock at wall-clock time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.RLock()

    def call(self, fn: Callable[[Any, float], T]) -> T:
        with self._lock:
            result = fn(self.engine, time.time())
            self.engine.datagrams_to_send(time.time())  # no links: nothing goes anywhere
            return result
