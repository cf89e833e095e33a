"""The access token of a web view that listens beyond loopback: ``<state_dir>/view.token``, mode 0600.

Created once (32 random bytes, URL-safe base64) and then only read, so a
bookmarked ``?token=`` link keeps working across restarts; delete the file to
revoke every link. A group/other-readable or unreadable file is a
:class:`TokenFileError`, left alone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from agent.core.errors import PresenceError

TOKEN_NAME: Final = "view.token"
#: Shortest token accepted from a file someone wrote by hand.
MIN_TOKEN_CHARS: Final = 16


class TokenFileError(PresenceError):
    """The view's token file cannot be used (unreadable, too open, or not a token)."""


def token_path(state_dir: Path) -> Path:
    return Path(state_dir) / TOKEN_NAME


def load_or_create_token(state_dir: Path) -> str:
    """The token in ``state_dir/view.token``, made (atomically, 0600) if there is none."""
    path = token_path(state_dir)
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as exc:
        raise TokenFileError(f"cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(token + "\n")
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return token


def _read(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(f"{path} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
    if len(text) < MIN_TOKEN_CHARS or not text.isascii() or not text.isprintable() or " " in text:
        raise TokenFileError(f"{path} holds no token; delete it and a new one is made")
    return text
