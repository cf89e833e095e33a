"""Local clients: idle control connections and ``watch`` open/close cycles.

**control.** First, idle clients: connections to the agent's control socket,
opened as fast as the agent accepts them, that never send a byte; all stay open
on our side for longer than the agent's request timeout, then close. Then
``watch`` cycles: four threads each connect, send ``{"op": "watch"}``, read the
first graph and close, until the count is done. The agent's fds and threads are
sampled every 50 ms throughout; bounded means the peak stays within the
control socket's client cap above the idle level, and both return to idle once
the clients are gone. The fds held are read once every idle client is open and
the agent's refusals are done (from 1 s after the last open); the transient
peak while the refused ones are being answered and closed is reported beside.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time

from agent.runtime.control import MAX_CLIENTS, REQUEST_TIMEOUT, socket_path
from bench.processes import Launcher
from bench.reliability.common import Goal, Plan, Result, Sampler, fd_count, progress, thread_count

#: Room for the sampler's own connection and the agent's timers.
SLACK = 8
WATCHERS = 4


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _watch_cycles(path: str, count: int) -> tuple[int, int]:
    """``count`` watch open/close cycles on ``WATCHERS`` threads; (answered with a graph, other)."""
    lock = threading.Lock()
    left = [count]
    tallies = [0, 0]

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            sock = _connect(path)
            got_graph = False
            if sock is not None:
                with sock, contextlib.suppress(OSError):
                    sock.sendall(b'{"op": "watch"}\n')
                    line = sock.makefile("rb").readline()
                    with contextlib.suppress(ValueError):
                        got_graph = "graph" in json.loads(line)
            with lock:
                tallies[0 if got_graph else 1] += 1

    threads = [threading.Thread(target=work, daemon=True) for _ in range(WATCHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies[0], tallies[1]


def control(plan: Plan) -> Result:
    """Scenario 5: idle control clients, then watch open/close cycles; fds and threads bounded."""
    started = time.monotonic()
    _raise_fd_limit(plan.idle_clients + 1024)
    with Launcher("presence-rel-control-") as launcher:
        target = launcher.spawn("target")
        launcher.wait_ready(target)
        time.sleep(1.0)
        idle_fds, idle_threads = fd_count(target.pid), thread_count(target.pid)
        path = str(socket_path(target.state_dir))
        sampler = Sampler(target, control=False)
        sampler.start()
        idle_from = sampler.mark()
        held: list[socket.socket] = []
        failed = 0
        try:
            while len(held) + failed < plan.idle_clients:
                sock = _connect(path)
                if sock is None:
                    failed += 1
                    time.sleep(0.001)
                else:
                    held.append(sock)
                if (len(held) + failed) % max(1, plan.idle_clients // 5) == 0:
                    progress(
                        f"  control: {len(held) + failed:,} of {plan.idle_clients:,} idle clients opened"
                    )
            opened_at = sampler.mark()
            time.sleep(REQUEST_TIMEOUT + 2)
        finally:
            for sock in held:
                sock.close()
        idle_to = sampler.mark()
        time.sleep(2.0)
        after_idle_fds = fd_count(target.pid)
        watch_from = sampler.mark()
        progress(f"  control: {plan.watch_cycles:,} watch cycles")
        graphs, others = _watch_cycles(path, plan.watch_cycles)
        watch_to = sampler.mark()
        time.sleep(2.0)
        after_fds, after_threads = fd_count(target.pid), thread_count(target.pid)
        sampler.stop()
        alive = target.popen.poll() is None
    idle_window = sampler.window(idle_from, idle_to)
    watch_window = sampler.window(watch_from)
    peak_fds = int(max(sampler.fds[i] for i in idle_window))
    # Once every client is open and the refusals are done: what the agent holds for them.
    held_window = sampler.window(opened_at + 1.0, opened_at + REQUEST_TIMEOUT - 1.0)
    held_fds = int(max(sampler.fds[i] for i in held_window))
    peak_threads_idle = int(max(sampler.threads[i] for i in idle_window))
    peak_threads_watch = int(max(sampler.threads[i] for i in watch_window))
    peak_fds_watch = int(max(sampler.fds[i] for i in watch_window))
    progress(
        f"control: fds idle {idle_fds}, peak {peak_fds} with {len(held):,} idle clients, "
        f"{after_idle_fds} after; "
        f"threads idle {idle_threads}, peak {peak_threads_watch} in {graphs:,} watches, {after_threads} after"
    )
    bound = MAX_CLIENTS + SLACK
    return Result(
        key="control",
        title=(
            f"{plan.idle_clients:,} idle control clients and {plan.watch_cycles:,} `watch` open/close cycles"
        ),
        goal="fds and threads bounded",
        method=(
            "idle clients connect and never send, all held open past the 10 s request timeout; then "
            f"`watch` cycles (connect, request, first graph, close) on {WATCHERS} threads; fds and threads "
            "sampled every 50 ms"
        ),
        policy=(
            f"at most {MAX_CLIENTS} control clients at once (the next answered `busy` and closed), "
            f"each given {REQUEST_TIMEOUT:g} s to send its request; a `watch` ends and releases its "
            "observer thread when its client closes"
        ),
        goals=(
            Goal("agent fds above idle, idle clients held", held_fds - idle_fds, bound, unit="fds"),
            Goal(
                "agent threads above idle, watch cycles",
                peak_threads_watch - idle_threads,
                bound,
                unit="threads",
            ),
            Goal("agent fds above idle once all closed", after_fds - idle_fds, 2, unit="fds"),
            Goal("agent threads above idle once all closed", after_threads - idle_threads, 2, unit="threads"),
        ),
        details={
            "idle_clients_opened": len(held),
            "idle_clients_failed_to_connect": failed,
            "watch_cycles": plan.watch_cycles,
            "watch_answered_with_graph": graphs,
            "watch_other": others,
            "idle_fds": idle_fds,
            "held_fds_idle_clients": held_fds,
            "transient_peak_fds_while_opening": peak_fds,
            "fds_after_idle_clients": after_idle_fds,
            "peak_fds_watch": peak_fds_watch,
            "idle_threads": idle_threads,
            "peak_threads_idle_clients": peak_threads_idle,
            "peak_threads_watch": peak_threads_watch,
            "fds_after": after_fds,
            "threads_after": after_threads,
            "agent_alive": alive,
            "max_clients": MAX_CLIENTS,
            "phases_s": [round(idle_from, 2), round(idle_to, 2), round(watch_from, 2), round(watch_to, 2)],
        },
        series={"target": sampler.series("fds", "threads")},
        duration_s=time.monotonic() - started,
    )
