"""Crash-test helper: a local peer whose metadata is set through the Presence API, then SIGKILLed.

Usage: presence_crasher.py STATE_DIR

Sets metadata {"step": i} for i = 1, 2, ... through ``Presence.set_peer_metadata``;
after each call returns it prints ``done <i> <card counter>`` (flushed). It
never exits on its own: the test kills it at an arbitrary point.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests_support import DirectDriver

from agent.api import Presence
from agent.state.local_peer import open_local_peer


def main() -> None:
    peer = open_local_peer(Path(sys.argv[1]), now=time.time(), device_name="crasher")
    presence = Presence(DirectDriver(peer.engine), peer.identity.public_key, peer.store)
    step = 0
    while True:
        step += 1
        presence.set_peer_metadata({"step": step})
        print(f"done {step} {peer.engine.own_records[0].counter}", flush=True)


if __name__ == "__main__":
    main()
