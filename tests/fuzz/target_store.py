"""Held records read back from the store (``agent.state.store``): rows a damaged disk may hold.

``store_rows``: the ``records`` table of a real ``StateStore`` (one SQLite
file for the process, emptied before each input) is filled with rows whose
four columns are each a blob, text, an integer, a real or NULL, as the input
says::

    u8 row count, then per row and column: u8 type (% 5), u16 length, value bytes

then ``load_records`` reads them and an engine starts from what it returned
(``Engine(held_records=...)``, as ``open_local_peer`` does). Contract:
``load_records`` raises only ``StoreError`` and returns byte strings; the
engine raises nothing; rows it skipped were deleted, so a second
``load_records`` returns the same records and deletes nothing more.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Final

from agent.state.store import StateStore, StoreError

from . import world
from .contract import Reader, Target, require

_DIR: Final = Path(tempfile.mkdtemp(prefix="fuzz-store-"))
atexit.register(shutil.rmtree, _DIR, True)
_STORE: StateStore | None = None


def _store() -> StateStore:
    global _STORE
    if _STORE is None:
        _STORE = StateStore.open(_DIR, world.key(world.LOCAL).public)
    return _STORE


def _value(reader: Reader) -> object:
    kind = reader.u8() % 5
    data = reader.chunk()
    if kind == 0:
        return data
    if kind == 1:
        return data.decode("utf-8", errors="replace")
    if kind == 2:
        return int.from_bytes(data[:8], "big", signed=True)
    if kind == 3:
        return float(int.from_bytes(data[:4], "big")) / 7
    return None


def store_rows(data: bytes) -> None:
    store = _store()
    conn = store._connection()
    reader = Reader(data)
    rows = [tuple(_value(reader) for _ in range(4)) for _ in range(reader.u8() % 16)]
    with conn:
        conn.execute("DELETE FROM records")
        # NOT NULL columns refuse NULL: such a row never reaches the store.
        kept = [r for r in rows if all(v is not None for v in r)]
        conn.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", kept)
    good = store.load_records()
    require(all(isinstance(raw, bytes) for raw in good), "load_records returned a non-bytes record")
    world.engine(world.LOCAL, held=good)
    again = store.load_records()
    require(again == good, "a second load_records differs: a skipped row was not deleted")


TARGETS = (Target("store_rows", store_rows, (StoreError,)),)
