"""A real headless browser for the web view tests (imported by bare name: tests/ is on sys.path).

Playwright for Python drives Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/bootstrap``): Playwright cannot download its own browsers here.
:func:`view_url` reads the page's address from the one line a view logs.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Final

from lan_support import Proc, wait_until

CHROMIUM: Final = os.environ.get("PRESENCE_CHROMIUM", "/usr/bin/chromium")
#: Headless, no sandbox (tests run as root), nothing that reaches out to the network by itself.
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_URL: Final = re.compile(r"web view at (http://\S+?/)[ ,\n]")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found (Debian package: chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def view_url(proc: Proc, timeout: float = 15.0) -> str:
    """The URL a running view (or agent with ``[view]``) logged, with 127.0.0.1 for a wildcard host."""

    def logged() -> str | None:
        if not proc.alive:
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.stderr_text()}")
        found = _URL.search(proc.stderr_text() + "\n")
        return found.group(1).replace("0.0.0.0", "127.0.0.1") if found else None

    return wait_until(logged, timeout, f"{proc.name} to log its web view's address")


def shot(page: object, directory: Path, name: str) -> Path:
    """A PNG of ``page`` under ``directory`` (the test's tmp_path), checked to be a real picture."""
    path = directory / f"{name}.png"
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, f"{path} is no screenshot"
    return path
