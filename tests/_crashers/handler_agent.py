"""A BlockingAgent whose connection request handler denies everyone, for cross-process tests.

Usage: handler_agent.py CONFIG STATE_DIR NAME

Prints ``ready <peer key string>`` once the agent runs and the handler is set,
then ``request <unix time> <remote peer key string>`` for every connection
request it denies (one flushed line each), until SIGTERM or SIGINT; exits 0.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from agent.api import ConnectionRequestAuthorization
from agent.config import load_config
from agent.core.events import ConnectionRequest
from agent.runtime import BlockingAgent


def main() -> int:
    config_path, state_dir, name = sys.argv[1:4]
    config = load_config(Path(config_path))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    lock = threading.Lock()

    def deny(request: ConnectionRequest) -> ConnectionRequestAuthorization:
        with lock:
            print(f"request {time.time():.6f} {request.peer_key_string}", flush=True)
        return ConnectionRequestAuthorization.DENY

    with BlockingAgent(
        config, state_dir=Path(state_dir), name=name, connection_request_handler=deny
    ) as agent:
        print(f"ready {agent.peer_key_string}", flush=True)
        while not stop.wait(0.1):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
