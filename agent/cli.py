"""``presence-agent``: the command line.

    presence-agent run [--config FILE] [--state-dir DIR] [--name NAME]
    presence-agent graph [--json | --dot] [--state-dir DIR]
    presence-agent watch [--json] [--state-dir DIR]
    presence-agent status [--json] [--state-dir DIR]
    presence-agent metadata get | set JSON | set --file FILE   [--state-dir DIR]
    presence-agent keys show [--json] [--state-dir DIR]
    presence-agent fleet [--broker URL | --config FILE] [--json] [--watch] [credentials, TLS, --topic-root]
                         [--ca-key KEY ...] [--view [--listen ADDR:PORT] [--state-dir DIR]]
    presence-agent view [--state-dir DIR] [--listen ADDR:PORT]
    presence-agent fleet-ca init --dir DIR
    presence-agent fleet-ca issue --dir DIR --device-key PEERKEY --metadata JSON [--days N]
    presence-agent fleet-ca revoke --dir DIR SERIAL
    presence-agent fleet-ca list --dir DIR [--json]
    presence-agent demo [--agents N] [--duration S] [--radio | --ble [--nodes N]]
    presence-agent sim ...            (python -m agent.sim)

Exit codes: 0 success (and a clean stop of ``run`` on SIGTERM/SIGINT), 1 a
runtime error (the agent is not running, did not answer, closed the connection
without answering, or is busy), 2 bad usage, an invalid configuration or input
the agent would refuse (metadata over its limit, a file that is not UTF-8): then
nothing was changed. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.core.errors import PresenceError


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/presence-agent`` (``~/.local/state/presence-agent`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "presence-agent"


# ---------------------------------------------------------------- commands


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.config import load_config
    from agent.runtime.run import run_forever

    config = load_config(args.config)
    state_dir = args.state_dir or (
        Path(config.agent.state_dir) if config.agent.state_dir else default_state_dir()
    )
    return run_forever(config, state_dir, name=args.name)


def _graph(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.runtime.control import checked, request

    answer = checked(request(_state_dir(args), {"op": "graph"}))
    document = answer["graph"]
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    elif args.dot:
        from agent.runtime.render import graph_from_document

        print(graph_from_document(document).to_dot(), end="")
    else:
        from agent.runtime.render import graph_table

        print(graph_table(document))
    return 0


def _status(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.runtime.control import checked, request
    from agent.runtime.render import status_text

    answer = checked(request(_state_dir(args), {"op": "status"}))
    answer.pop("ok", None)
    print(json.dumps(answer, indent=2, ensure_ascii=False) if args.json else status_text(answer))
    return 0


def _watch(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.runtime.control import ControlError, checked, stream
    from agent.runtime.render import change_lines

    state_dir = _state_dir(args)
    previous: dict[str, Any] | None = None
    try:
        for answer in stream(state_dir, {"op": "watch"}, timeout=None):
            document = checked(answer)["graph"]
            for line in change_lines(previous, document, as_json=args.json):
                print(line, flush=True)
            previous = document
    except KeyboardInterrupt:
        return 0
    # Only Ctrl-C ends a watch cleanly; the agent going away is worth saying.
    raise ControlError(f"the agent on {state_dir} closed the watch (did it stop?)")


def _view(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.runtime.run import configure_logging
    from agent.runtime.view import run_view

    configure_logging("info")
    return run_view(_state_dir(args), args.listen)


def _metadata(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.core.records import parse_metadata_json
    from agent.runtime.control import checked, request

    if args.metadata_command == "get":
        answer = checked(request(_state_dir(args), {"op": "metadata_get"}))
        print(json.dumps(answer["metadata"], indent=2, ensure_ascii=False))
        return 0
    if (args.json_text is None) == (args.file is None):
        raise _UsageError("metadata set takes either JSON text or --file FILE")
    text = args.json_text if args.json_text is not None else _read_file(args.file)
    parse_metadata_json(text)  # the agent's own rules, checked before anything is sent
    checked(request(_state_dir(args), {"op": "metadata_set", "json": text}))
    return 0


def _keys_show(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.state.identity import load_or_create_identity

    state_dir = _state_dir(args)
    identity = load_or_create_identity(state_dir)
    if args.json:
        print(json.dumps({"peer_key_string": identity.peer_key_string, "state_dir": str(state_dir)}))
    else:
        print(identity.peer_key_string)
    return 0


def _fleet(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.mqtt.broker import broker_options
    from agent.mqtt.fleet import render_table
    from agent.mqtt.fleet_view import FleetView

    settings = _fleet_settings(args)
    trust = _fleet_trust(args)
    if args.view:
        from agent.web.settings import parse_listen

        parse_listen(args.listen)  # a bad address is a usage error before anything connects
    view = FleetView(
        broker_options(settings), topic_root=settings.topic_root, connect_timeout=args.timeout, trust=trust
    )
    mqtt_log = logging.getLogger("agent.mqtt")
    mqtt_log.setLevel(logging.CRITICAL)  # a failed connect is this command's one-line error
    view.start()
    mqtt_log.setLevel(logging.WARNING)  # from here on, a lost connection is worth a line
    with view:
        graph = view.settle(args.timeout)
        if args.view:
            from agent.runtime.run import configure_logging
            from agent.runtime.view import run_fleet_view

            configure_logging("info")
            return run_fleet_view(view, f"fleet on {settings.broker}", args.listen, _state_dir(args))
        if not args.watch:
            if args.json:
                document = {**graph.to_json(), "rejections": [dataclasses.asdict(r) for r in view.rejections]}
                print(json.dumps(document, indent=2, ensure_ascii=False))
            else:
                print(render_table(graph))
                for line in _rejection_lines(view.rejections):
                    print(line)
            return 0
        if args.json:
            print(json.dumps({"event": "fleet", **graph.to_json()}, ensure_ascii=False), flush=True)
        else:
            print(render_table(graph), flush=True)
        try:
            for update in view.changes():
                if args.json:
                    events = update.diff.to_json()
                    events += [{"event": "rejected", **dataclasses.asdict(r)} for r in update.rejections]
                    for event in events:
                        print(json.dumps(event, ensure_ascii=False), flush=True)
                else:
                    stamp = time.strftime("%H:%M:%S")
                    for line in (*update.diff.lines(), *_rejection_lines(update.rejections)):
                        print(f"{stamp} {line}", flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def _fleet_trust(args: argparse.Namespace) -> Any:
    """The fleet CA(s) to verify certificates with: ``--ca-key`` (each a key string or a file),
    else ``[trust]`` of ``--config``; ``None``: certificates are shown as unchecked."""
    from agent.config import AgentConfig, load_config
    from agent.core.trust_settings import TrustSettings
    from agent.state.trust_files import load_fleet_trust

    trust = load_config(args.config).trust if args.config else AgentConfig().trust
    if args.ca_key:
        trust = TrustSettings(ca_keys=tuple(args.ca_key), revocation_list=trust.revocation_list)
    return load_fleet_trust(trust)


def _fleet_settings(args: argparse.Namespace) -> Any:
    """``[mqtt]`` of ``--config`` (if given) with the command-line options on top."""
    from agent.config import AgentConfig, check_mqtt_settings, load_config
    from agent.mqtt.settings import MqttSettings

    base = load_config(args.config).mqtt if args.config else AgentConfig().mqtt
    overrides = {
        name: value
        for name in (
            "broker",
            "username",
            "password_file",
            "password_env",
            "ca_file",
            "cert_file",
            "key_file",
        )
        if (value := getattr(args, name)) is not None
    }
    if args.topic_root is not None:
        overrides["topic_root"] = args.topic_root
    # One password source: the one given here replaces the configuration's.
    if args.password_file is not None:
        overrides["password_env"] = ""
    elif args.password_env is not None:
        overrides["password_file"] = ""
    settings: MqttSettings = dataclasses.replace(base, **overrides)
    if not settings.broker:
        raise _UsageError("fleet needs --broker URL (or --config FILE with [mqtt] broker)")
    check_mqtt_settings(settings, "command line")
    return settings


def _rejection_lines(rejections: Any) -> list[str]:
    return [f"rejected      {r.topic} ({r.reason}: {r.detail})" for r in rejections]


def _fleet_ca(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.core.keys import peer_key_string, public_key_from_string
    from agent.core.records import metadata_json, parse_metadata_json, thaw_metadata
    from agent.state.fleet_ca import FleetCaInputError, init_ca, open_ca, revocation_path

    directory = Path(args.dir)
    if args.fleet_ca_command == "init":
        with init_ca(directory) as ca:
            print(peer_key_string(ca.public_key))
        return 0
    if args.fleet_ca_command == "issue":
        device_key = public_key_from_string(args.device_key)
        metadata = parse_metadata_json(args.metadata)
        days = _whole_number(args.days, "--days", FleetCaInputError)
        with open_ca(directory) as ca:
            issued = ca.issue(device_key, metadata, days)
        print(issued.path)
        return 0
    if args.fleet_ca_command == "revoke":
        serial = _whole_number(args.serial, "SERIAL", FleetCaInputError)
        with open_ca(directory) as ca:
            revocations = ca.revoke(serial)
        if revocations is None:
            print(f"serial {serial} was already revoked; the revocation list is unchanged")
        else:
            where = revocation_path(directory)
            print(f"revoked serial {serial}: revocation list {revocations.counter} in {where}")
        return 0
    with open_ca(directory) as ca:
        issued_list = ca.certificates()
        revocations = ca.revocation_list()
        now = int(time.time())
        ca_key = peer_key_string(ca.public_key)
    if args.json:
        document = {
            "ca_key": ca_key,
            "revocation_counter": revocations.counter if revocations is not None else 0,
            "certificates": [
                {
                    "serial": i.certificate.serial,
                    "device_key": i.certificate.device_key_string,
                    "metadata": thaw_metadata(i.certificate.metadata),
                    "issued_at": i.certificate.issued_at,
                    "expiry": i.certificate.expiry,
                    "revoked": i.revoked,
                    "expired": i.certificate.expiry <= now,
                    "file": str(i.path),
                }
                for i in issued_list
            ],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    rows = [("SERIAL", "DEVICE", "METADATA", "EXPIRES (UTC)", "STATUS")]
    for i in issued_list:
        cert = i.certificate
        summary = metadata_json(cert.metadata)
        status = "revoked" if i.revoked else "expired" if cert.expiry <= now else "valid"
        rows.append(
            (
                str(cert.serial),
                cert.device_key_string,
                summary if len(summary) <= 40 else summary[:39] + "…",
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(cert.expiry)),
                status,
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not issued_list:
        print(f"(no certificates issued yet; CA key {ca_key})")
    return 0


def _whole_number(text: str, name: str, error: type[Exception]) -> int:
    """A decimal number of at most ten digits (a one-line input error otherwise, not argparse's usage)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise error(f"{name} must be a whole number, got {text!r}")
    return int(text)


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    if args.radio:
        from agent.runtime.demo_radio import run_radio_demo
        from agent.sim.radio_lab import RadioLab

        return run_radio_demo(RadioLab, args.duration)
    if args.ble:
        # Bumble's virtual air is in-process only: the Pis run here (agent.runtime.ble_demo).
        from agent.runtime.ble_demo import run_ble_demo
        from agent.sim.ble import VirtualAir

        return run_ble_demo(VirtualAir(), args.nodes, args.duration)
    from agent.runtime.demo import run_demo

    return run_demo(args.agents, args.duration)


def _sim(args: argparse.Namespace, rest: list[str]) -> int:
    from agent.sim.__main__ import main as sim_main

    return sim_main(rest)


# ---------------------------------------------------------------- plumbing


class _UsageError(Exception):
    pass


class InputFileError(PresenceError):
    """A file named on the command line cannot be used as input; nothing was changed (exit 2)."""


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _read_file(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PresenceError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        raise InputFileError(f"{path} is not UTF-8 text ({bad}); nothing was changed") from None


def _is_bad_input(exc: PresenceError) -> bool:
    """Errors that mean "fix the command or its input" (exit 2) rather than "the system failed" (1)."""
    from agent.config import ConfigError
    from agent.core.errors import MetadataError, PeerKeyError
    from agent.runtime.control import InvalidRequestError
    from agent.state.fleet_ca import FleetCaInputError
    from agent.state.trust_files import TrustFileError
    from agent.web.settings import ListenAddressError

    return isinstance(
        exc,
        ConfigError
        | MetadataError
        | InvalidRequestError
        | InputFileError
        | ListenAddressError
        | PeerKeyError
        | FleetCaInputError
        | TrustFileError,
    )


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, as argparse's help formatter asks for it, without
    importing ``shutil`` (which brings ``bz2`` and ``lzma``: 0.3 MB a running agent never uses)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__  # None without a console: as shutil, fall back to 80
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout is not None else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ):
        super().__init__(
            prog, indent_increment, max_help_position, _terminal_columns() - 2 if width is None else width
        )


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` (its subcommands' too) whose help formatter measures the terminal as
    argparse's own does: see :func:`_terminal_columns`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="presence-agent", description="A signed presence mesh agent.")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_state_dir(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--state-dir", type=Path, help="state directory (default: XDG state dir)")
        return sub

    def with_listen(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        from agent.web.settings import DEFAULT_LISTEN

        sub.add_argument(
            "--listen",
            default=DEFAULT_LISTEN,
            metavar="ADDR:PORT",
            help=f"where to serve the page (default {DEFAULT_LISTEN}; beyond loopback a token is required)",
        )
        return sub

    run = with_state_dir(commands.add_parser("run", help="run the agent in the foreground"))
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--name", help="device name to publish (default: the host name)")
    run.set_defaults(handler=_run)

    graph = with_state_dir(commands.add_parser("graph", help="the running agent's current graph"))
    form = graph.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="JSON with signed records")
    form.add_argument("--dot", action="store_true", help="Graphviz DOT")
    graph.set_defaults(handler=_graph)

    status = with_state_dir(
        commands.add_parser("status", help="the running agent's transports, mirror and counters")
    )
    status.add_argument("--json", action="store_true", help="JSON")
    status.set_defaults(handler=_status)

    watch = with_state_dir(commands.add_parser("watch", help="a line per change, live"))
    watch.add_argument("--json", action="store_true", help="JSON lines")
    watch.set_defaults(handler=_watch)

    view = with_listen(
        with_state_dir(commands.add_parser("view", help="serve a live web page of the running agent's graph"))
    )
    view.set_defaults(handler=_view)

    metadata = commands.add_parser("metadata", help="this agent's published metadata")
    metadata_commands = metadata.add_subparsers(dest="metadata_command", required=True)
    with_state_dir(metadata_commands.add_parser("get", help="print it")).set_defaults(handler=_metadata)
    set_ = with_state_dir(
        metadata_commands.add_parser("set", help="replace it (a JSON object, <= 4096 bytes)")
    )
    set_.add_argument("json_text", nargs="?", metavar="JSON")
    set_.add_argument("--file", type=Path, help="read the JSON from FILE")
    set_.set_defaults(handler=_metadata)

    keys = commands.add_parser("keys", help="this device's identity")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    show = with_state_dir(keys_commands.add_parser("show", help="print this device's peer key string"))
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_keys_show)

    fleet = commands.add_parser(
        "fleet", help="every agent's view from an MQTT broker, verified and merged into one graph"
    )
    fleet.add_argument("--broker", help="mqtt://host[:port] or mqtts://host[:port]")
    fleet.add_argument("--config", type=Path, help="take the [mqtt] settings of this agent configuration")
    fleet.add_argument("--username")
    secret = fleet.add_mutually_exclusive_group()
    secret.add_argument("--password-file", help="read the password from this file's first line")
    secret.add_argument("--password-env", metavar="VAR", help="read the password from this variable")
    fleet.add_argument("--ca-file", help="CA bundle to trust (mqtts://)")
    fleet.add_argument("--cert-file", help="client certificate (mqtts://)")
    fleet.add_argument("--key-file", help="client certificate's key")
    fleet.add_argument(
        "--ca-key",
        action="append",
        metavar="KEY",
        help="fleet CA key (string or file) to verify device certificates with; twice during a rotation",
    )
    fleet.add_argument("--topic-root", help="topic root the agents publish under (default: presence)")
    fleet.add_argument("--json", action="store_true", help="JSON (with --watch: one JSON object per line)")
    fleet.add_argument("--watch", action="store_true", help="then a line per change, live")
    fleet.add_argument("--timeout", type=float, default=10.0, help="seconds to connect and settle")
    fleet.add_argument("--view", action="store_true", help="serve the live web page of the fleet instead")
    with_listen(fleet)
    fleet.add_argument("--state-dir", type=Path, help="where --view keeps its token (default: XDG state dir)")
    fleet.set_defaults(handler=_fleet)

    fleet_ca = commands.add_parser(
        "fleet-ca", help="the fleet's offline certificate authority: device certificates and revocation"
    )
    ca_commands = fleet_ca.add_subparsers(dest="fleet_ca_command", required=True)

    def with_dir(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--dir", required=True, type=Path, help="the CA's directory (keep it offline)")
        sub.set_defaults(handler=_fleet_ca)
        return sub

    with_dir(ca_commands.add_parser("init", help="make a new CA key in DIR and print its key string"))
    issue = with_dir(ca_commands.add_parser("issue", help="certify a device's peer key; prints the file"))
    issue.add_argument("--device-key", required=True, metavar="PEERKEY", help="the device's peer key string")
    issue.add_argument("--metadata", required=True, metavar="JSON", help="identity metadata, a JSON object")
    issue.add_argument("--days", default="365", metavar="N", help="valid for N days (default 365)")
    revoke = with_dir(ca_commands.add_parser("revoke", help="revoke a certificate and re-sign the list"))
    revoke.add_argument("serial", metavar="SERIAL")
    ca_list = with_dir(ca_commands.add_parser("list", help="the certificates issued"))
    ca_list.add_argument("--json", action="store_true", help="print JSON")

    demo = commands.add_parser("demo", help="run a small real mesh on loopback and show it live")
    demo.add_argument("--agents", type=int, default=3, help="how many agent processes (2-8)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    medium = demo.add_mutually_exclusive_group()
    medium.add_argument(
        "--radio",
        action="store_true",
        help="five agents: a line three emulated-radio hops long (real ptys) and one behind a LAN bridge",
    )
    medium.add_argument(
        "--ble",
        action="store_true",
        help="three in-process Pis with BLE nodes on virtual Bluetooth (needs the dev extra: bumble)",
    )
    demo.add_argument("--nodes", type=int, default=3, help="with --ble: how many virtual nodes (1-3)")
    demo.set_defaults(handler=_demo)

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
    except _UsageError as exc:
        print(f"presence-agent: {exc}", file=sys.stderr)
        return 2
    except PresenceError as exc:
        print(f"presence-agent: {exc}", file=sys.stderr)
        return 2 if _is_bad_input(exc) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout's reader went away (`| head`): not an error of ours
        # (control-socket failures never get here: agent.runtime.control raises ControlError.)
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
