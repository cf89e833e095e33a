"""``presence-agent``: the command line.

Today: ``keys show`` (this device's peer key, creating the identity on first
use) and ``sim`` (the simulator, see ``python -m agent.sim``). ``run``, ``graph``,
``watch`` and ``metadata`` arrive with the LAN runtime.

Exit codes: 0 success, 1 a runtime error (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from agent.core.errors import PresenceError


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/presence-agent`` (``~/.local/state/presence-agent`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "presence-agent"


def _keys_show(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.state.identity import load_or_create_identity

    identity = load_or_create_identity(args.state_dir)
    if args.json:
        print(json.dumps({"peer_key_string": identity.peer_key_string, "state_dir": str(args.state_dir)}))
    else:
        print(identity.peer_key_string)
    return 0


def _sim(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.sim.__main__ import main as sim_main

    return sim_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="presence-agent", description="A signed presence mesh agent.")
    commands = parser.add_subparsers(dest="command", required=True)

    keys = commands.add_parser("keys", help="this device's identity")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    show = keys_commands.add_parser("show", help="print this device's peer key string")
    show.add_argument("--state-dir", type=Path, default=default_state_dir(), help="state directory")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_keys_show)

    sim = commands.add_parser(
        "sim", help="run a simulated mesh (same options as python -m agent.sim)", add_help=False
    )
    sim.set_defaults(handler=_sim)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.handler is not _sim:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        code: int = args.handler(args, rest)
    except PresenceError as exc:
        print(f"presence-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
