"""Running scripts under real MicroPython: the official WebAssembly port under Node.js.

``tests/micropython/run.mjs`` loads the port (npm ``@micropython/micropython-webassembly-pyscript``,
installed into ``node_modules/`` by ``scripts/bootstrap`` from the committed ``package.json``),
copies the node library (``firmware_bridge/micropython/*.py``) into its filesystem under ``/lib``
and runs one script. Tests batch their cases into one script per module (start-up is ~0.3 s,
but the fixed-base table is rebuilt in each run) and read back one JSON object it prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "micropython" / "run.mjs"
FIRMWARE = ROOT / "firmware_bridge" / "micropython"
PORT_PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class MicroPythonError(AssertionError):
    """A script failed under MicroPython; the message holds its stderr (the traceback)."""


def missing_micropython() -> str | None:
    """Why MicroPython cannot run here, or None."""
    if shutil.which("node") is None:
        return "node (Node.js >= 18) is not on PATH (Debian package: nodejs)"
    if not (PORT_PACKAGE / "micropython.mjs").is_file():
        return "the MicroPython WebAssembly port is not in node_modules/ (run scripts/bootstrap, or npm ci)"
    return None


def require_micropython() -> None:
    """Skip when MicroPython cannot run; fail instead if PRESENCE_REQUIRE_MICROPYTHON is set (CI)."""
    missing = missing_micropython()
    if missing is None:
        return
    if os.environ.get("PRESENCE_REQUIRE_MICROPYTHON", "") not in ("", "0"):
        pytest.fail(f"PRESENCE_REQUIRE_MICROPYTHON is set but {missing}")
    pytest.skip(missing)


def run_micropython(script: str, *, timeout: float = 120.0, lib: Path = FIRMWARE) -> str:
    """Run ``script`` under MicroPython with the modules of ``lib`` importable; return its stdout."""
    with tempfile.TemporaryDirectory(prefix="micropython-") as work:
        path = Path(work) / "script.py"
        path.write_text(script, encoding="utf-8")
        done = subprocess.run(
            ["node", str(RUNNER), "--lib", str(lib), str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise MicroPythonError(f"MicroPython exited {done.returncode}:\n{done.stderr}{done.stdout[-2000:]}")
    return done.stdout


def run_batch(script: str, inputs: Any, *, timeout: float = 120.0) -> Any:
    """Run ``script`` with ``INPUT`` bound to ``inputs`` (JSON data); return the JSON its last line prints."""
    text = json.dumps(inputs, ensure_ascii=False)  # the script is UTF-8: no surrogate escapes
    prelude = f"import json\nINPUT = json.loads({json.dumps(text, ensure_ascii=False)})\n"
    out = run_micropython(prelude + script, timeout=timeout)
    lines = out.strip().splitlines()
    if not lines:
        raise MicroPythonError("the MicroPython script printed nothing")
    return json.loads(lines[-1])
