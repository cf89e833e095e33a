"""The state directory's layout: which files it holds, and its permissions.

``<state_dir>/identity.key`` is this peer's key (:mod:`agent.state.identity`);
``<state_dir>/state.sqlite3`` is its store (:mod:`agent.state.store`), which is
bound to that key. Both modules name the files from here, so each can refuse
to act on one file without the other (a store whose key is missing, say).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

#: Attempts at an unused temporary name before giving up (``tempfile``'s own bound).
_TEMP_NAME_ATTEMPTS: Final = 10000
#: Flags of a new private file: created here and now, never through a symlink.
_NEW_FILE_FLAGS: Final = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)

#: Name of the key file inside the state directory.
IDENTITY_FILE_NAME: Final = "identity.key"
#: Name of the database file inside the state directory.
STORE_FILE_NAME: Final = "state.sqlite3"

GROUP_OTHER_BITS: Final = stat.S_IRWXG | stat.S_IRWXO


def ensure_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` with mode 0700, or tighten it to 0700 if it exists and is ours.

    The directory holds the private key and the store, so group/other get no
    access. A directory owned by someone else is left alone (we could not chmod it).
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name != "posix":
        return
    st = state_dir.stat()
    if st.st_uid == os.getuid() and st.st_mode & GROUP_OTHER_BITS:
        os.chmod(state_dir, stat.S_IMODE(st.st_mode) & ~GROUP_OTHER_BITS)


def fsync_dir(directory: Path) -> None:
    """Make a rename/link in ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_private_file(directory: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file of mode 0600 with an unused random name in ``directory``: (open fd, path).

    What ``tempfile.mkstemp`` does for the key and the store's first writes, without importing
    ``tempfile``: its ``shutil`` brings ``bz2`` and ``lzma`` (about 0.8 MB an agent never uses).
    Raises :class:`OSError` as ``mkstemp`` does (``FileExistsError`` only after every attempt).
    """
    for _ in range(_TEMP_NAME_ATTEMPTS):
        path = directory / f"{prefix}{os.urandom(6).hex()}{suffix}"
        try:
            return os.open(path, _NEW_FILE_FLAGS, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name in {directory}")
