"""A device's state directory: identity, metadata and counters survive restarts and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests_support import DirectDriver

from agent.api import Presence
from agent.core.records import decode_record
from agent.state.local_peer import open_local_peer

TESTS = Path(__file__).parent


def test_a_restart_keeps_identity_metadata_and_a_growing_counter(tmp_path: Path) -> None:
    first = open_local_peer(tmp_path, now=time.time(), device_name="pi-kitchen-01")
    presence = Presence(DirectDriver(first.engine), first.identity.public_key, first.store)
    presence.set_peer_metadata({"app_version": "1.2.4"})
    key, counter = first.identity.peer_key_string, first.engine.own_records[0].counter
    presence.close()
    first.close()

    again = open_local_peer(tmp_path, now=time.time())
    card = again.engine.own_records[0]
    assert again.identity.peer_key_string == key
    assert dict(card.body.metadata) == {"app_version": "1.2.4"}  # type: ignore[union-attr]
    assert card.body.device_name == "pi-kitchen-01"  # type: ignore[union-attr]
    assert card.counter > counter
    assert Presence(DirectDriver(again.engine), again.identity.public_key, again.store).peer_metadata == {
        "app_version": "1.2.4"
    }
    again.close()


def test_records_learnt_from_others_are_persisted_and_reloaded(tmp_path: Path) -> None:
    other = open_local_peer(tmp_path / "other", now=time.time(), device_name="other")
    mine = open_local_peer(tmp_path / "mine", now=time.time())
    other_card = other.engine.own_records[0]
    mine.store.save_records([other_card.raw])
    mine.close()
    reopened = open_local_peer(tmp_path / "mine", now=time.time())
    assert [r.raw for r in reopened.engine.records_of(other.identity.public_key)] == [other_card.raw]
    reopened.close()
    other.close()


def test_kill_9_loses_no_metadata_the_api_reported_done_and_never_reuses_a_counter(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]))
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "_crashers" / "presence_crasher.py"), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        done: list[tuple[int, int]] = []
        for line in proc.stdout:
            _, step, counter = line.split()
            done.append((int(step), int(counter)))
            if len(done) >= 5 + 7 * round_:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

        peer = open_local_peer(tmp_path, now=time.time())
        card = decode_record(peer.engine.own_records[0].raw)
        last_step, last_counter = done[-1]
        # The process may have finished one more call after the line we read: never fewer.
        assert card.body.metadata["step"] >= last_step  # type: ignore[union-attr]
        assert card.counter > last_counter
        peer.close()


def test_expired_records_are_deleted_from_the_store(tmp_path: Path) -> None:
    from agent.core.engine import EngineConfig

    now = time.time()
    short = EngineConfig(record_ttl=120.0, refresh_before_expiry=30.0)
    other = open_local_peer(tmp_path / "other", now=now, config=short)
    mine = open_local_peer(tmp_path / "mine", now=now)
    mine.store.save_records([other.engine.own_records[0].raw])
    mine.close()

    reopened = open_local_peer(tmp_path / "mine", now=now)
    assert reopened.engine.records_of(other.identity.public_key)
    reopened.engine.handle_timer(now + 200.0)  # past the expiry and a sweep
    reopened.flush()
    assert reopened.store.load_records() == []
    reopened.close()
    other.close()
