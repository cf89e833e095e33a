"""The agent's TOML configuration, validated on load.

A file has up to four tables, every key optional (``hw_configs/README.md`` has
the table of keys; ``hw_configs/*.toml`` are profiles per hardware setup)::

    [agent]     name, state_dir, log_level
    [lan]       interfaces, multicast group and ports, beacon/keepalive/dead timing, limits
    [presence]  departure_grace, record_ttl, handler_timeout
    [mqtt]      the mirror to an MQTT broker: broker URL, credentials, TLS, topics (off by default)

Each table maps onto a frozen dataclass below. One generic validator walks the
dataclass fields: the field's type says which TOML type is accepted (an
integer is accepted where a number is expected, a boolean never is) and an
optional rule in the field's metadata says which values are in range. A few
checks that relate two keys follow. Anything wrong raises :class:`ConfigError`
with one line naming the file, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from agent.api.presence import DEFAULT_HANDLER_TIMEOUT
from agent.core.engine import EngineConfig
from agent.core.errors import PresenceError
from agent.core.limits import MAX_MESSAGE_BYTES, MIN_LINK_MTU
from agent.mqtt.broker import parse_broker_url
from agent.mqtt.topics import DEFAULT_DISCOVERY_PREFIX, DEFAULT_TOPIC_ROOT, check_topic_root

__all__ = [
    "LOG_LEVELS",
    "RESERVED_TABLES",
    "AgentConfig",
    "AgentSettings",
    "ConfigError",
    "LanSettings",
    "MqttSettings",
    "PresenceSettings",
    "check_mqtt_settings",
    "load_config",
    "parse_config",
]

#: Accepted values of ``agent.log_level``.
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: Tables accepted but not (yet) read into :class:`AgentConfig` (none today).
RESERVED_TABLES: Final[frozenset[str]] = frozenset()

_ENGINE_DEFAULTS: Final = EngineConfig()
#: Linux interface names are at most IFNAMSIZ - 1 bytes.
_MAX_INTERFACE_NAME_BYTES: Final = 15
#: Longest value shown back in an error message.
_MAX_SHOWN_CHARS: Final = 60

_T = TypeVar("_T")


class ConfigError(PresenceError, ValueError):
    """A configuration file is unreadable, not TOML, or holds a key or value the agent does not accept.

    The message is one line: ``<file>: <dotted key>: expected <what>, got <value>``.
    ``source`` is the file, ``key`` the dotted key (``""`` when the whole file is at fault).
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key


def _rule(default: _T, expected: str, valid: Callable[[Any], bool]) -> _T:
    """A field whose values must also satisfy ``valid``; ``expected`` describes them for error messages."""
    return field(default=default, metadata={"expected": expected, "valid": valid})


def _positive(default: _T) -> _T:
    return _rule(default, "a number > 0", lambda v: v > 0)


def _is_ipv4_multicast(text: str) -> bool:
    try:
        return ipaddress.IPv4Address(text).is_multicast
    except ValueError:
        return False


def _is_interface(text: str) -> bool:
    """A Linux interface name (the kernel's rules) or an IPv4 address."""
    if text.replace(".", "").isdigit():  # looks like an address, so it must be one
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return True
    return (
        0 < len(text.encode()) <= _MAX_INTERFACE_NAME_BYTES
        and text not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in text)
    )


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """``[agent]``: who this device is and where it keeps its state."""

    #: Device name shown to the mesh; ``""`` means the host name.
    name: str = ""
    #: State directory (identity key, records); ``""`` means the XDG default, chosen by the CLI.
    state_dir: str = ""
    log_level: str = _rule(
        "info", "one of " + ", ".join(f'"{v}"' for v in LOG_LEVELS), LOG_LEVELS.__contains__
    )


@dataclass(frozen=True, slots=True)
class LanSettings:
    """``[lan]``: the LAN transport (UDP multicast beacons, TCP links). Times are seconds."""

    enabled: bool = True
    #: Interface names or IPv4 addresses to beacon and listen on; empty means all (the default route).
    interfaces: tuple[str, ...] = _rule(
        (), "a list of interface names or IPv4 addresses", lambda v: all(map(_is_interface, v))
    )
    multicast_group: str = _rule(
        "239.255.77.77", "an IPv4 multicast address (224.0.0.0/4)", _is_ipv4_multicast
    )
    multicast_port: int = _rule(47777, "an integer in 1..65535", lambda v: 1 <= v <= 65535)
    #: TCP listening port; 0 means ephemeral (beacons carry the actual port).
    tcp_port: int = _rule(0, "an integer in 0..65535", lambda v: 0 <= v <= 65535)
    beacon_interval: float = _positive(0.5)
    keepalive_interval: float = _positive(0.5)
    #: A link silent this long is down; a vanished peer leaves every graph within
    #: ``dead_interval + presence.departure_grace``.
    dead_interval: float = _positive(2.0)
    #: The MTU reported to the engine for TCP links.
    max_frame_bytes: int = _rule(
        16384,
        f"an integer in {MIN_LINK_MTU}..{MAX_MESSAGE_BYTES}",
        lambda v: MIN_LINK_MTU <= v <= MAX_MESSAGE_BYTES,
    )
    dial_backoff_initial: float = _positive(0.5)
    dial_backoff_max: float = _positive(30.0)
    #: Transport level: a connection that has not completed the handshake by then is closed.
    handshake_timeout: float = _positive(5.0)
    max_pending_connections: int = _rule(64, "an integer >= 1", lambda v: v >= 1)
    #: Per link; a peer sending faster is disconnected.
    max_receive_bytes_per_second: int = _rule(1_000_000, "an integer >= 1", lambda v: v >= 1)


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """``[presence]``: protocol timing. Times are seconds."""

    #: A peer no longer reachable stays in the graph this long (rides out a link flap).
    departure_grace: float = _rule(_ENGINE_DEFAULTS.departure_grace, "a number >= 0", lambda v: v >= 0)
    #: Signed records expire this long after signing (and are re-signed at 3/4 of it).
    record_ttl: float = _rule(
        _ENGINE_DEFAULTS.record_ttl, "a number of seconds in 60..31536000", lambda v: 60 <= v <= 31_536_000
    )
    #: A connection request handler that has not answered by then means Deny.
    handler_timeout: float = _positive(DEFAULT_HANDLER_TIMEOUT)


def _is_broker_url(text: str) -> bool:
    if not text:
        return True  # the mirror is off
    try:
        parse_broker_url(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """``[mqtt]``: mirror the mesh to an MQTT broker. Off unless ``broker`` is set.

    The password is never in this file's values: it is read from ``password_file``
    (first line) or the environment variable named by ``password_env``.
    """

    broker: str = _rule("", 'a URL "mqtt://host[:port]" or "mqtts://host[:port]"', _is_broker_url)
    #: ``""`` means ``presence-agent-<peer id>``: unique per device, stable across restarts.
    client_id: str = _rule("", "at most 64 characters", lambda v: len(v) <= 64)
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    #: CA bundle to trust for ``mqtts://`` (``""``: the system's CAs).
    ca_file: str = ""
    #: Client certificate and its key, for brokers that require one.
    cert_file: str = ""
    key_file: str = ""
    topic_root: str = _rule(
        DEFAULT_TOPIC_ROOT,
        'a topic prefix such as "presence" or "site/7/presence"',
        lambda v: check_topic_root(v) is None,
    )
    qos: int = _rule(1, "0, 1 or 2", (0, 1, 2).__contains__)
    keepalive: int = _rule(30, "an integer in 5..3600 (seconds)", lambda v: 5 <= v <= 3600)
    #: Changes within this many seconds are published together (one message per topic).
    coalesce: float = _rule(0.1, "a number of seconds in 0..60", lambda v: 0 <= v <= 60)
    #: Reconnect back-off (doubling, with jitter) between these bounds, in seconds.
    reconnect_min: float = _positive(1.0)
    reconnect_max: float = _positive(60.0)
    #: Most topics waiting to be published; beyond it clears of departed peers are dropped
    #: (and counted): the sweep after the next connect removes them.
    max_pending: int = _rule(20_000, "an integer >= 100", lambda v: v >= 100)
    #: Publish Home Assistant MQTT discovery: each peer a device with a presence entity.
    homeassistant: bool = False
    discovery_prefix: str = _rule(
        DEFAULT_DISCOVERY_PREFIX, "a topic prefix", lambda v: check_topic_root(v) is None
    )

    @property
    def enabled(self) -> bool:
        return bool(self.broker)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole configuration: one field per TOML table. ``AgentConfig()`` is all defaults."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    lan: LanSettings = field(default_factory=LanSettings)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)

    def engine_config(self) -> EngineConfig:
        """The engine's timings from ``[lan]`` and ``[presence]``; everything else keeps the engine default.

        ``refresh_before_expiry`` follows ``record_ttl`` (a quarter of it, the
        engine's own ratio) so a short TTL never leaves a record due for
        re-signing the moment it is signed.
        """
        return dataclasses.replace(
            _ENGINE_DEFAULTS,
            keepalive_interval=self.lan.keepalive_interval,
            dead_interval=self.lan.dead_interval,
            departure_grace=self.presence.departure_grace,
            record_ttl=self.presence.record_ttl,
            refresh_before_expiry=self.presence.record_ttl / 4,
        )


def load_config(path: Path | None) -> AgentConfig:
    """Read and validate the TOML file at ``path``; ``None`` gives the defaults.

    Raises :class:`ConfigError` (naming the file) if it cannot be read or is not valid.
    """
    if path is None:
        return AgentConfig()
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"not UTF-8 text (byte {exc.start})") from exc
    return parse_config(text, str(path))


def parse_config(text: str, source: str) -> AgentConfig:
    """Parse and validate TOML ``text``; ``source`` names it in error messages (usually the file)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # the message ends "(at line L, column C)"
        raise ConfigError(source, "", f"invalid TOML: {exc}") from exc
    sections = [f.name for f in dataclasses.fields(AgentConfig)]
    hints = typing.get_type_hints(AgentConfig)
    loaded: dict[str, Any] = {}
    for name, table in document.items():
        if name not in sections and name not in RESERVED_TABLES:
            raise ConfigError(source, name, _unknown("table", name, [*sections, *RESERVED_TABLES]))
        if not isinstance(table, dict):
            raise ConfigError(source, name, f"expected a table, got {_show(table)}")
        if name in sections:
            loaded[name] = _load_table(hints[name], table, name, source)
    config = AgentConfig(**loaded)
    _check_relations(config, source)
    return config


def _load_table(cls: type[_T], table: Mapping[str, Any], prefix: str, source: str) -> _T:
    """Build dataclass ``cls`` from ``table``, checking every value against its field's type and rule."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{prefix}.{key}"
        if key not in fields:
            raise ConfigError(source, where, _unknown("key", key, fields))
        meta = fields[key].metadata
        expected: str = meta.get("expected") or _TYPE_NAMES[hints[key]]
        checked = _as_type(value, hints[key])
        if checked is None or not meta.get("valid", lambda _: True)(checked):
            raise ConfigError(source, where, f"expected {expected}, got {_show(value)}")
        values[key] = checked
    return cls(**values)


_TYPE_NAMES: Final[Mapping[object, str]] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    tuple[str, ...]: "a list of strings",
}


def _as_type(value: object, hint: object) -> object | None:
    """``value`` as the field type ``hint`` (int -> float, list -> tuple), or None if it is not one."""
    if hint is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):  # a bool is an int in Python, never in this file
        return None
    if hint is int:
        return value if isinstance(value, int) else None
    if hint is float:
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    if hint is str:
        return value if isinstance(value, str) else None
    if hint == tuple[str, ...]:
        return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else None
    raise TypeError(f"no TOML mapping for field type {hint!r}")  # a new field type needs a branch above


def _check_relations(config: AgentConfig, source: str) -> None:
    """The checks that relate two keys."""
    lan = config.lan
    if lan.dead_interval <= lan.keepalive_interval:
        raise ConfigError(
            source,
            "lan.dead_interval",
            f"expected a number > lan.keepalive_interval ({lan.keepalive_interval:g}), "
            f"got {lan.dead_interval:g}",
        )
    if lan.dial_backoff_max < lan.dial_backoff_initial:
        raise ConfigError(
            source,
            "lan.dial_backoff_max",
            f"expected a number >= lan.dial_backoff_initial ({lan.dial_backoff_initial:g}), "
            f"got {lan.dial_backoff_max:g}",
        )
    if lan.max_receive_bytes_per_second < lan.max_frame_bytes:  # a full frame must always get through
        raise ConfigError(
            source,
            "lan.max_receive_bytes_per_second",
            f"expected an integer >= lan.max_frame_bytes ({lan.max_frame_bytes}), "
            f"got {lan.max_receive_bytes_per_second}",
        )
    _check_mqtt(config.mqtt, source)


def check_mqtt_settings(mqtt: MqttSettings, source: str) -> None:
    """Every ``[mqtt]`` rule, on settings built in code (``presence-agent fleet`` merges
    command-line options into them); raises :class:`ConfigError` naming ``source``."""
    _load_table(MqttSettings, dataclasses.asdict(mqtt), "mqtt", source)
    _check_mqtt(mqtt, source)


def _check_mqtt(mqtt: MqttSettings, source: str) -> None:
    if mqtt.password_file and mqtt.password_env:
        raise ConfigError(source, "mqtt.password_env", "expected only one of password_file and password_env")
    if bool(mqtt.cert_file) != bool(mqtt.key_file):
        raise ConfigError(source, "mqtt.key_file", "expected cert_file and key_file together")
    if mqtt.reconnect_max < mqtt.reconnect_min:
        raise ConfigError(
            source,
            "mqtt.reconnect_max",
            f"expected a number >= mqtt.reconnect_min ({mqtt.reconnect_min:g}), got {mqtt.reconnect_max:g}",
        )
    tls_files = mqtt.ca_file or mqtt.cert_file
    if mqtt.broker and tls_files and not parse_broker_url(mqtt.broker).tls:
        raise ConfigError(source, "mqtt.broker", "expected an mqtts:// URL when TLS files are configured")


def _unknown(kind: str, name: str, known: typing.Iterable[str]) -> str:
    choices = sorted(known)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {kind}{hint}; expected one of {', '.join(choices)}"


def _show(value: object) -> str:
    """``value`` as it looked in the file (JSON is close enough to TOML), cut short."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf: TOML's spelling, not JSON's
    shown = json.dumps(value, default=str, ensure_ascii=False)
    return shown if len(shown) <= _MAX_SHOWN_CHARS else shown[: _MAX_SHOWN_CHARS - 1] + "…"
