"""The command line every test-vector generator shares: write the JSON, or check it is current."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def vectors_main(
    argv: list[str], path: Path, root: Path, build: Callable[[], dict[str, Any]], usage: str
) -> int:
    """``--write`` writes ``build()`` to ``path``; no argument checks the committed file (exit 1 if stale)."""
    text = render(build())
    shown = path.relative_to(root)
    if argv == ["--write"]:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {shown}")
        return 0
    if argv:
        print(usage)
        return 2
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        print(f"{shown} differs from what the host makes: run with --write")
        return 1
    print(f"{shown} matches")
    return 0
