"""The command lines of esptool and mpremote that put firmware on a board, and how they are run.

Each tool runs as ``python -m esptool`` / ``python -m mpremote`` with this Python (both are in the
dev extras). A :class:`Step` is one command with a line saying what it does; a :class:`Runner`
runs steps: :class:`Shell` for real (the tool's output is captured; a failure is a
:class:`ToolError` with the tool's last line of complaint), :class:`DryRun` prints them only.

esptool (v5 command names): ``erase-flash``, then ``write-flash -z OFFSET IMAGE`` at the chip
family's offset (``dongle_config.CHIP_OFFSETS``). mpremote: ``connect PORT`` then ``fs cat``,
``fs cp SRC... :DEST``, ``mip install PKG``, ``reset``; each run enters the raw REPL with a soft
reset, as mpremote always does.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TextIO

from firmware_bridge.dongle_config import CHIP_OFFSETS

#: esptool's baud rate for writing (the ROM loader starts at 115200; esptool switches up).
FLASH_BAUD: Final = 460800
#: A tool silent this long is stuck (a 4 MB write at 460800 baud takes about a minute).
TOOL_TIMEOUT: Final = 600.0


class ToolError(RuntimeError):
    """A tool is missing, failed or timed out; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Step:
    """One command: what it does (for people) and its argv."""

    what: str
    argv: tuple[str, ...]
    #: What to try when it fails.
    hint: str = ""

    @property
    def tool(self) -> str:
        return self.argv[2]

    def shell(self) -> str:
        return shlex.join(self.argv)


class Runner(Protocol):
    def run(self, step: Step) -> str:
        """Run ``step``; return its standard output. ToolError if it fails."""
        ...


class Shell:
    """Runs each step, saying so first on ``out``."""

    def __init__(self, prog: str, out: TextIO = sys.stdout, timeout: float = TOOL_TIMEOUT) -> None:
        self.prog = prog
        self.out = out
        self.timeout = timeout

    def run(self, step: Step) -> str:
        print(f"{self.prog}: {step.what}", file=self.out)
        print(f"  $ {step.shell()}", file=self.out, flush=True)
        if importlib.util.find_spec(step.tool) is None:
            raise ToolError(
                f"{step.tool} is not installed for {sys.executable} (pip install {step.tool}; "
                "scripts/bootstrap installs the dev extras, which have it)"
            )
        try:
            done = subprocess.run(
                step.argv, capture_output=True, text=True, errors="replace", timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise ToolError(f"{step.what}: {step.tool} did not finish within {self.timeout:.0f} s") from None
        if done.returncode != 0:
            hint = f" ({step.hint})" if step.hint else ""
            raise ToolError(f"{step.what}: {step.tool} failed: {complaint(done.stderr, done.stdout)}{hint}")
        return done.stdout


class DryRun:
    """Prints each step as :class:`Shell` would, and runs none."""

    def __init__(self, prog: str, out: TextIO = sys.stdout) -> None:
        self.prog = prog
        self.out = out

    def run(self, step: Step) -> str:
        print(f"{self.prog}: {step.what} (dry run)", file=self.out)
        print(f"  $ {step.shell()}", file=self.out, flush=True)
        return ""


def complaint(*outputs: str) -> str:
    """A failed tool's error line: its last line naming an error (esptool's ``A fatal error ...``),
    else its last line (``mpremote: ...``)."""
    lines = [line.strip() for output in outputs for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output (exit status only)"])[-1]


def _python(tool: str) -> tuple[str, ...]:
    return (sys.executable, "-m", tool)


#: esptool needs the chip's ROM bootloader on the other end.
_ESPTOOL_HINT: Final = "is it an ESP32 of that family? hold BOOT while pressing RESET to enter its bootloader"


def esptool_erase(port: str, chip: str) -> Step:
    return Step(
        f"erase the flash of the {chip} on {port}",
        _python("esptool") + ("--chip", chip, "--port", port, "erase-flash"),
        _ESPTOOL_HINT,
    )


def esptool_write(port: str, chip: str, image: Path) -> Step:
    offset = f"0x{CHIP_OFFSETS[chip]:x}"
    return Step(
        f"write {image.name} at {offset} to the {chip} on {port}",
        _python("esptool")
        + (
            "--chip",
            chip,
            "--port",
            port,
            "--baud",
            str(FLASH_BAUD),
            "write-flash",
            "-z",
            offset,
            str(image),
        ),
        _ESPTOOL_HINT,
    )


def _mpremote(port: str, *args: str) -> tuple[str, ...]:
    return _python("mpremote") + ("connect", port) + args


def mpremote_cat(port: str, path: str) -> Step:
    return Step(f"read {path} from {port}", _mpremote(port, "fs", "cat", ":" + path))


def mpremote_copy(port: str, sources: Sequence[Path], target: str, what: str) -> Step:
    """Copy ``sources`` to ``target`` on the board (a file name, or ``""`` for the root with several)."""
    paths = tuple(str(s) for s in sources) + (":" + target,)
    return Step(what, _mpremote(port, "fs", "cp", *paths))


def mpremote_mip(port: str, packages: Sequence[str]) -> Step:
    return Step(
        f"install {', '.join(packages)} from micropython-lib (needs the internet)",
        _mpremote(port, "mip", "install", *packages),
    )


def mpremote_rtc_set(port: str) -> Step:
    return Step(f"set the board's clock on {port} from this host's", _mpremote(port, "rtc", "--set"))


def mpremote_reset(port: str) -> Step:
    return Step(f"reset the board on {port} so it boots with them", _mpremote(port, "reset"))


def missing_file_is(output: str) -> bool:
    """Whether mpremote's complaint says the file is not on the board."""
    return "No such file or directory" in output or "ENOENT" in output
