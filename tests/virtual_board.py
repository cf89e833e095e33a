"""A virtual MicroPython board behind a real pty, for mpremote and the scripts that call it.

``tests/micropython/board.mjs`` runs the official MicroPython WebAssembly port's REPL on the
master side of a pty; :attr:`VirtualBoard.port` is the slave (``/dev/pts/N``), which
``mpremote connect /dev/pts/N`` opens exactly as it opens ``/dev/ttyUSB0``. The board's flash
is a host directory (:attr:`VirtualBoard.flash`): loaded when the board starts, written back
after every command its REPL runs, so a test reads what mpremote really copied there.

What works: the raw REPL (``exec``, ``eval``, ``fs cp`` / ``cat`` / ``ls`` / ``rm`` / ``mkdir``),
soft reset (``soft-reset``, and the one mpremote does before its first command), hard reset
(``reset``: ``machine.reset()`` restarts the interpreter in the friendly REPL). Raw-paste mode
is refused, so mpremote uses the standard raw REPL. Not there: boot.py and main.py are never
run, code must finish (Ctrl-C cannot interrupt it), and there is no ``machine`` but ``reset``.

The pty is put in raw mode before the board starts (a pty echoes by default, which would feed
the board's output back to it), and this process keeps the slave open for the board's life, so
the master never reads EIO between two mpremote runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tty
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from micropython_support import ROOT, require_micropython

BOARD = ROOT / "tests" / "micropython" / "board.mjs"
#: mpremote waits up to 10 s for each prompt; a loaded 2-core machine gets more for a whole run.
MPREMOTE_TIMEOUT = 120.0


@dataclass(frozen=True)
class VirtualBoard:
    #: The serial port to connect to (the pty's slave).
    port: str
    #: The host directory that mirrors the board's flash.
    flash: Path

    def files(self) -> dict[str, bytes]:
        """Every file on the flash, by path relative to its root."""
        return {
            str(p.relative_to(self.flash)): p.read_bytes()
            for p in sorted(self.flash.rglob("*"))
            if p.is_file()
        }


@contextmanager
def virtual_board(flash: Path, files: Mapping[str, bytes] | None = None) -> Iterator[VirtualBoard]:
    """Start a board whose flash is ``flash`` (created, with ``files`` on it); stop it on exit."""
    require_micropython()
    flash.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (flash / name).parent.mkdir(parents=True, exist_ok=True)
        (flash / name).write_bytes(data)
    master, slave = os.openpty()
    tty.setraw(slave)
    board = subprocess.Popen(
        ["node", str(BOARD), "--fd", str(master), "--flash", str(flash)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(master,),
        cwd=ROOT,
    )
    try:
        yield VirtualBoard(os.ttyname(slave), flash)
    finally:
        board.terminate()  # the board writes its flash back and exits
        try:
            _, err = board.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            board.kill()
            _, err = board.communicate()
        os.close(master)
        os.close(slave)
        if board.returncode != 0:
            raise AssertionError(
                f"the virtual board exited {board.returncode}: {err.decode(errors='replace')}"
            )


def mpremote(port: str, *args: str, timeout: float = MPREMOTE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``mpremote connect PORT ARGS...`` (the venv's, as the scripts run it)."""
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", port, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
