"""The virtual MicroPython board is a board to mpremote: raw REPL, files, soft and hard reset."""

from __future__ import annotations

import time
from pathlib import Path

import serial  # type: ignore[import-untyped]
from virtual_board import mpremote, virtual_board


def test_mpremote_runs_code_on_it(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash") as board:
        done = mpremote(board.port, "exec", "import sys; print(sys.implementation.name, 6 * 7)")
    assert (done.returncode, done.stdout) == (0, "micropython 42\n"), done.stderr


def test_files_copied_with_mpremote_land_on_its_flash(tmp_path: Path) -> None:
    source = tmp_path / "hello.py"
    source.write_bytes(b"GREETING = 'hello'\n" * 100)  # several 256-byte chunks
    with virtual_board(tmp_path / "flash", {"old.txt": b"was here"}) as board:
        copied = mpremote(board.port, "fs", "cp", str(source), ":hello.py")
        listed = mpremote(board.port, "fs", "ls")
        imported = mpremote(
            board.port, "exec", "import hello, os; print(hello.GREETING, sorted(os.listdir('/')))"
        )
        mirrored = board.files()
    assert copied.returncode == 0, copied.stderr
    assert mirrored == {"hello.py": source.read_bytes(), "old.txt": b"was here"}
    assert f"{len(source.read_bytes())} hello.py" in listed.stdout and "8 old.txt" in listed.stdout
    assert imported.stdout == "hello ['hello.py', 'old.txt']\n"  # the root is the flash, nothing else


def test_a_missing_file_is_reported_as_a_board_reports_it(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash") as board:
        done = mpremote(board.port, "fs", "cat", ":dongle.json")
    assert done.returncode == 1
    assert done.stderr == "mpremote: cat: dongle.json: No such file or directory.\n"


def test_removing_a_file_removes_it_from_the_host_copy(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash", {"a.py": b"1", "b.py": b"2"}) as board:
        done = mpremote(board.port, "fs", "rm", ":a.py")
        assert done.returncode == 0, done.stderr
        assert board.files() == {"b.py": b"2"}


def test_soft_reset_starts_a_fresh_interpreter(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash") as board:
        kept = mpremote(board.port, "exec", "x = 41", "exec", "print(x + 1)")
        reset = mpremote(board.port, "exec", "x = 41", "soft-reset", "exec", "print('x' in globals())")
    assert kept.stdout == "42\n"
    assert reset.stdout == "False\n", reset.stderr


def test_hard_reset_starts_a_fresh_interpreter_too(tmp_path: Path) -> None:
    # `resume` skips mpremote's soft reset, so the interpreter's state survives between runs...
    with virtual_board(tmp_path / "flash") as board:
        mpremote(board.port, "exec", "x = 1")
        before = mpremote(board.port, "resume", "exec", "print('x' in globals())")
        reset = mpremote(board.port, "reset")
        after = mpremote(board.port, "resume", "exec", "print('x' in globals())")
    assert before.stdout == "True\n"
    assert reset.returncode == 0, reset.stderr
    assert after.stdout == "False\n"  # ...until machine.reset()


def read_until(port: serial.Serial, end: bytes, timeout: float = 30.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(end) and time.monotonic() < deadline:
        data += port.read(1)
    assert data.endswith(end), data
    return data


def test_raw_paste_mode_is_refused_so_mpremote_falls_back(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash") as board, serial.Serial(board.port, 115200, timeout=0.5) as port:
        port.write(b"\r\x03\x03\r\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"\x05A\x01")
        assert read_until(port, b"R\x00") == b"R\x00"  # understood, not supported
        port.write(b"print('plain raw')\x04")
        assert read_until(port, b"\x04>") == b"OKplain raw\n\x04\x04>"  # the port ends lines with LF
