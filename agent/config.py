"""The agent's TOML configuration, validated on load.

A file has up to four tables, every key optional (``hw_configs/README.md`` has
the table of keys; ``hw_configs/*.toml`` are profiles per hardware setup)::

    [agent]     name, state_dir, log_level
    [lan]       interfaces, multicast group and ports, beacon/keepalive/dead timing, limits
    [radio]     USB radio dongles: ports, region, LoRa modulation or ESP-NOW channel (off by default)
    [ble]       BLE nodes: enabled, adapter, max_connections, scan_mode, rssi window, reconnect back-off,
                a node link's keepalive and dead interval
    [presence]  departure_grace, record_ttl, handler_timeout
    [mqtt]      the mirror to an MQTT broker: broker URL, credentials, TLS, topics (off by default)
    [view]      the live web page of this agent's graph: enabled, listen, max_clients (off by default)
    [trust]     fleet trust: the CA keys, this device's certificate, a revocation list (off by default)

Each table maps onto a frozen dataclass owned by the package it configures:
``[agent]`` :class:`AgentSettings` (here: only the CLI and the runtime read it),
``[lan]`` :class:`agent.transports.lan_settings.LanSettings`, ``[radio]``
:class:`agent.transports.radio_settings.RadioSettings`, ``[ble]``
:class:`agent.transports.ble_settings.BleSettings`, ``[presence]``
:class:`agent.api.settings.PresenceSettings`, ``[mqtt]``
:class:`agent.mqtt.settings.MqttSettings`, ``[view]``
:class:`agent.web.settings.ViewSettings`, ``[trust]``
:class:`agent.core.trust_settings.TrustSettings`. This module only parses and
validates. One generic validator walks the dataclass fields: the field's type
says which TOML type is accepted (an integer is accepted where a number is
expected, a boolean never is) and an optional :class:`agent.core.settings.Rule`
on the field says which values are in range. A few checks that relate two keys
follow. Anything wrong raises :class:`ConfigError` with one line naming the
file, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from agent.api.settings import PresenceSettings
from agent.core.engine import EngineConfig
from agent.core.errors import PresenceError
from agent.core.settings import rule, rule_of
from agent.core.trust_settings import TrustSettings
from agent.mqtt.broker import parse_broker_url
from agent.mqtt.settings import MqttSettings
from agent.transports.ble_settings import BleSettings
from agent.transports.lan_settings import LanSettings
from agent.transports.radio_settings import RadioSettings, relation_problem
from agent.web.settings import ViewSettings

__all__ = [
    "LOG_LEVELS",
    "AgentConfig",
    "AgentSettings",
    "ConfigError",
    "check_mqtt_settings",
    "load_config",
    "parse_config",
]

#: Accepted values of ``agent.log_level``.
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

_ENGINE_DEFAULTS: Final = EngineConfig()
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


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """``[agent]``: who this device is and where it keeps its state."""

    #: Device name shown to the mesh; ``""`` means the host name.
    name: str = ""
    #: State directory (identity key, records); ``""`` means the XDG default, chosen by the CLI.
    state_dir: str = ""
    log_level: str = rule(
        "info", "one of " + ", ".join(f'"{v}"' for v in LOG_LEVELS), LOG_LEVELS.__contains__
    )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole configuration: one field per TOML table. ``AgentConfig()`` is all defaults."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    lan: LanSettings = field(default_factory=LanSettings)
    radio: RadioSettings = field(default_factory=RadioSettings)
    ble: BleSettings = field(default_factory=BleSettings)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    view: ViewSettings = field(default_factory=ViewSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)

    def engine_config(self) -> EngineConfig:
        """The engine's timings from ``[lan]`` and ``[presence]`` (and the table's bounds), and
        sealing from ``[trust]``; everything else keeps the engine default.

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
            max_peers=self.presence.max_peers,
            max_held_bytes=self.presence.max_held_bytes,
            sealing=self.trust.sealing_mode,
            encrypt=self.trust.encrypt_frames,
            unsealed_leaves=self.trust.unsealed_leaves,
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
    except RecursionError:  # tomllib recurses once per level of nested arrays and inline tables
        raise ConfigError(source, "", "invalid TOML: arrays or inline tables nested too deeply") from None
    sections = [f.name for f in dataclasses.fields(AgentConfig)]
    hints = typing.get_type_hints(AgentConfig)
    loaded: dict[str, Any] = {}
    for name, table in document.items():
        if name not in sections:
            raise ConfigError(source, name, _unknown("table", name, sections))
        if not isinstance(table, dict):
            raise ConfigError(source, name, f"expected a table, got {_show(table)}")
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
        found = rule_of(fields[key])
        expected = found.expected if found else _TYPE_NAMES[hints[key]]
        checked = _as_type(value, hints[key])
        if checked is None or (found is not None and not found.valid(checked)):
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
    ble = config.ble
    if ble.reconnect_backoff_max < ble.reconnect_backoff_initial:
        raise ConfigError(
            source,
            "ble.reconnect_backoff_max",
            f"expected a number >= ble.reconnect_backoff_initial ({ble.reconnect_backoff_initial:g}), "
            f"got {ble.reconnect_backoff_max:g}",
        )
    if ble.dead_interval <= ble.keepalive_interval:
        raise ConfigError(
            source,
            "ble.dead_interval",
            f"expected a number > ble.keepalive_interval ({ble.keepalive_interval:g}), "
            f"got {ble.dead_interval:g}",
        )
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
    radio = relation_problem(config.radio)
    if radio is not None:
        raise ConfigError(source, f"radio.{radio[0]}", radio[1])
    _check_mqtt(config.mqtt, source)
    trust = config.trust
    for key in ("certificate", "revocation_list"):
        if getattr(trust, key) and not trust.enabled:
            raise ConfigError(
                source, f"trust.{key}", "expected trust.ca_keys too (trust is off without a CA)"
            )


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
    import difflib  # only for an unknown key's message (0.25 MB an agent otherwise never uses)

    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {kind}{hint}; expected one of {', '.join(choices)}"


def _show(value: object) -> str:
    """``value`` as it looked in the file (JSON is close enough to TOML), cut short."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf: TOML's spelling, not JSON's
    shown = json.dumps(value, default=str, ensure_ascii=False)
    return shown if len(shown) <= _MAX_SHOWN_CHARS else shown[: _MAX_SHOWN_CHARS - 1] + "…"
