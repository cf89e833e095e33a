"""kill -9 during metadata writes: nothing reported done is lost, no counter is ever reused.

**kill9.** One agent; a writer sets its metadata over the control socket as fast
as the agent answers (``{"step": n}``, n growing), and after each write it was
told succeeded reads the agent's own signed records back (``graph``). At a
random moment 50 to 400 ms into each round the agent's process group gets
SIGKILL; it is then spawned again on the same state directory. A lost write is a
restart whose card carries a smaller step than the last write reported done; a
reused counter is one signed record counter seen with two different records,
or a restarted agent's records not above every counter seen before.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time

from agent.core.records import decode_record
from agent.runtime.control import ControlError, request
from bench.common import TIMES
from bench.processes import AgentProcess, Launcher, kill_group
from bench.reliability.common import Goal, Plan, Result, progress


class _Ledger:
    """Every own record seen (counter -> raw bytes) and the last write reported done."""

    def __init__(self) -> None:
        self.by_counter: dict[int, bytes] = {}
        self.reused = 0
        self.done_step = 0
        self.writes_done = 0

    def note(self, raws: list[bytes]) -> tuple[list[int], int]:
        """Record the agent's own records; (counters of those not seen before, the card's step)."""
        new: list[int] = []
        step = -1
        for raw in raws:
            record = decode_record(raw)
            seen = self.by_counter.setdefault(record.counter, raw)
            if seen != raw:
                self.reused += 1
            elif seen is raw:
                new.append(record.counter)
            metadata = getattr(record.body, "metadata", None)
            if metadata is not None:
                value = metadata.get("step", 0)
                step = value if isinstance(value, int) else 0
        return new, step


def _own_records(proc: AgentProcess) -> list[bytes]:
    graph = request(proc.state_dir, {"op": "graph"}, timeout=10)["graph"]
    return [base64.b64decode(r) for r in graph["local_peer"]["signed_records"]]


def _write_until_killed(proc: AgentProcess, ledger: _Ledger, step: list[int], halt: threading.Event) -> None:
    while not halt.is_set():
        step[0] += 1
        try:
            answer = request(proc.state_dir, {"op": "metadata_set", "json": json.dumps({"step": step[0]})})
            if not answer.get("ok"):
                continue
            ledger.done_step, ledger.writes_done = step[0], ledger.writes_done + 1
            ledger.note(_own_records(proc))
        except (ControlError, OSError, ValueError, KeyError):
            return


def kill9(plan: Plan) -> Result:
    """Scenario 7: SIGKILL during metadata writes, ``plan.kills`` times."""
    started = time.monotonic()
    rng = random.Random(7)
    ledger = _Ledger()
    lost = stale_counters = 0
    step = [0]
    with Launcher("presence-rel-kill9-") as launcher:
        for round_ in range(plan.kills + 1):
            proc = launcher.spawn("writer")
            launcher.wait_ready(proc)
            highest = max(ledger.by_counter, default=0)
            new, card_step = ledger.note(_own_records(proc))
            if round_ and any(counter <= highest for counter in new):
                stale_counters += 1
            if card_step < ledger.done_step:
                lost += 1
                progress(
                    f"  kill9: round {round_}: step {card_step} after {ledger.done_step} was reported done"
                )
            step[0] = max(step[0], card_step)
            if round_ == plan.kills:
                launcher.stop(proc)
                break
            halt = threading.Event()
            writer = threading.Thread(
                target=_write_until_killed, args=(proc, ledger, step, halt), daemon=True
            )
            writer.start()
            time.sleep(rng.uniform(0.05, 0.4))
            kill_group(proc)
            halt.set()
            writer.join(15)
            if (round_ + 1) % max(1, plan.kills // 10) == 0:
                progress(
                    f"  kill9: {round_ + 1} of {plan.kills} kills, "
                    f"{ledger.writes_done:,} writes reported done"
                )
    reused = ledger.reused + stale_counters
    progress(
        f"kill9: {plan.kills} kills, {ledger.writes_done:,} writes done; lost {lost}, "
        f"reused counters {reused}"
    )
    return Result(
        key="kill9",
        title=f"kill -9 {TIMES} {plan.kills} during metadata writes",
        goal="nothing reported as done is lost; no counter ever reused",
        method=(
            "metadata set over the control socket as fast as the agent answers, its own records read back "
            "after each success; SIGKILL 50 to 400 ms into each round, then a restart on the same state "
            "directory"
        ),
        policy=(
            "a write is answered only once it is in the store, and counters are handed out below a ceiling "
            "persisted ahead of use, so a restart always starts above every counter ever signed"
        ),
        goals=(
            Goal("restarts that lost a write reported done", lost, 0, unit="restarts"),
            Goal("signed record counters reused", reused, 0, unit="counters"),
        ),
        details={
            "kills": plan.kills,
            "writes_reported_done": ledger.writes_done,
            "counters_seen": len(ledger.by_counter),
            "highest_counter": max(ledger.by_counter, default=0),
            "lost_writes": lost,
            "reused_counters": ledger.reused,
            "restarts_not_above_every_seen_counter": stale_counters,
        },
        duration_s=time.monotonic() - started,
    )
