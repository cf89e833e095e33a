"""Crash-test helper: hand out record counters until SIGKILLed.

Usage: counter_crasher.py STATE_DIR PAUSE_AFTER SAVE_EVERY OWNER_HEX

Prints each counter on its own line (flushed). Every SAVE_EVERY counters it
saves ``{"last": counter}`` as metadata and then prints ``saved <counter>``.
After PAUSE_AFTER counters (0 = never) it prints ``paused`` and blocks on stdin,
so the test can kill it at an exact point. It never exits on its own. The store
belongs to the identity whose public key is OWNER_HEX.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent.state.store import StateStore


def main() -> None:
    state_dir, pause_after, save_every = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = StateStore.open(state_dir, bytes.fromhex(sys.argv[4]))
    handed_out = 0
    while True:
        value = store.next_counter()
        handed_out += 1
        print(value, flush=True)
        if save_every and handed_out % save_every == 0:
            store.save_metadata_json(json.dumps({"last": value}))
            print(f"saved {value}", flush=True)
        if handed_out == pause_after:
            print("paused", flush=True)
            sys.stdin.read()  # the test holds stdin open until it has killed us


if __name__ == "__main__":
    main()
