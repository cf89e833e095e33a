"""The TOML configuration: profiles load, defaults hold, every mistake is one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config, parse_config
from agent.core.engine import EngineConfig
from agent.core.errors import PresenceError
from agent.core.session import Sealing

HW_CONFIGS = Path(__file__).resolve().parent.parent / "hw_configs"
PROFILES = sorted(HW_CONFIGS.glob("*.toml"))


def test_there_are_profiles() -> None:
    assert len(PROFILES) >= 4


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_loads_with_the_interface_its_name_implies(path: Path) -> None:
    config = load_config(path)
    implied = {"ethernet": "eth0", "wifi": "wlan0"}
    for link, interface in implied.items():
        if link in path.stem:
            assert config.lan.interfaces == (interface,)
    # The departure bound every profile promises (3.5 s at most, on Wi-Fi).
    assert config.lan.dead_interval + config.presence.departure_grace <= 3.5


def test_wifi_profiles_are_slower_than_the_lan_defaults() -> None:
    defaults = AgentConfig().lan
    for path in PROFILES:
        if "wifi" in path.stem:
            lan = load_config(path).lan
            assert lan.keepalive_interval > defaults.keepalive_interval
            assert lan.dead_interval > defaults.dead_interval
            assert lan.beacon_interval > defaults.beacon_interval


def test_no_file_and_an_empty_file_give_the_defaults() -> None:
    config = load_config(None)
    assert config == AgentConfig() == parse_config("", "empty.toml")
    assert config.agent.name == "" and config.agent.state_dir == "" and config.agent.log_level == "info"
    assert config.lan.enabled and config.lan.interfaces == ()
    assert (config.lan.multicast_group, config.lan.multicast_port, config.lan.tcp_port) == (
        "239.255.77.77",
        47777,
        0,
    )
    assert (config.lan.beacon_interval, config.lan.keepalive_interval, config.lan.dead_interval) == (
        0.5,
        0.5,
        2.0,
    )
    assert config.lan.max_frame_bytes == 16384
    assert config.lan.handshake_timeout == 5.0
    assert config.lan.max_pending_connections == 64
    assert config.lan.max_receive_bytes_per_second == 1_000_000
    assert (config.presence.departure_grace, config.presence.record_ttl) == (0.5, 86400.0)
    assert config.presence.handler_timeout == 10.0
    # The LAN promise: a vanished peer leaves every graph within 3 s.
    assert config.lan.dead_interval + config.presence.departure_grace <= 3.0


def test_values_are_read_with_ints_accepted_as_numbers() -> None:
    config = parse_config(
        """
        [agent]
        name = "gate-3"
        log_level = "debug"
        [lan]
        enabled = false
        interfaces = ["eth0", "192.168.1.20"]
        beacon_interval = 2
        tcp_port = 47778
        [presence]
        record_ttl = 3600
        [mqtt]
        broker = "mqtts://broker.local"
        username = "gate-3"
        password_file = "/etc/presence-agent/mqtt.pass"
        ca_file = "/etc/presence-agent/ca.pem"
        topic_root = "site/7/presence"
        homeassistant = true
        """,
        "site.toml",
    )
    assert config.agent.name == "gate-3" and config.agent.log_level == "debug"
    assert not config.lan.enabled
    assert config.lan.interfaces == ("eth0", "192.168.1.20")
    assert config.lan.beacon_interval == 2.0 and isinstance(config.lan.beacon_interval, float)
    assert config.lan.tcp_port == 47778
    assert config.presence.record_ttl == 3600.0
    assert config.mqtt.enabled and config.mqtt.broker == "mqtts://broker.local"
    assert (config.mqtt.topic_root, config.mqtt.qos, config.mqtt.homeassistant) == (
        "site/7/presence",
        1,
        True,
    )


def test_the_mirror_is_off_by_default() -> None:
    assert not AgentConfig().mqtt.enabled


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('broker = "http://x"', "mqtt.broker", 'expected a URL "mqtt://host[:port]"'),
        ('broker = "mqtt://user:pw@x"', "mqtt.broker", "expected a URL"),
        ('topic_root = "a/#"', "mqtt.topic_root", "expected a topic prefix"),
        ('topic_root = "/a"', "mqtt.topic_root", "expected a topic prefix"),
        ("qos = 3", "mqtt.qos", "expected 0, 1 or 2"),
        ('password = "s3cret"', "mqtt.password", "unknown key (did you mean password_env?)"),
        ('password_file = "f"\npassword_env = "E"', "mqtt.password_env", "only one of password_file"),
        ('cert_file = "c.pem"', "mqtt.key_file", "cert_file and key_file together"),
        ('broker = "mqtt://x"\nca_file = "ca.pem"', "mqtt.broker", "an mqtts:// URL"),
        (
            "reconnect_min = 10\nreconnect_max = 5",
            "mqtt.reconnect_max",
            "expected a number >= mqtt.reconnect_min",
        ),
    ],
)
def test_bad_mqtt_settings_name_the_key(table: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[mqtt]\n{table}\n", "m.toml")
    assert caught.value.key == key
    assert problem in str(caught.value)


def test_engine_config_carries_the_timing() -> None:
    config = parse_config(
        """
        [lan]
        keepalive_interval = 1.0
        dead_interval = 3.0
        [presence]
        departure_grace = 0.25
        record_ttl = 7200
        """,
        "t.toml",
    )
    engine = config.engine_config()
    assert isinstance(engine, EngineConfig)
    assert engine.keepalive_interval == 1.0
    assert engine.dead_interval == 3.0
    assert engine.departure_grace == 0.25
    assert engine.record_ttl == 7200.0
    # A short TTL is refreshed before it expires, never continuously.
    assert 0 < engine.refresh_before_expiry < engine.record_ttl
    # Everything else keeps the engine's defaults.
    assert engine.max_digest_bytes == EngineConfig().max_digest_bytes
    assert AgentConfig().engine_config().refresh_before_expiry == EngineConfig().refresh_before_expiry


def test_presence_defaults_are_the_engines() -> None:
    # agent.api may not import the engine, so PresenceSettings spells the engine's defaults itself.
    engine = AgentConfig().engine_config()
    assert engine.departure_grace == EngineConfig().departure_grace
    assert engine.record_ttl == EngineConfig().record_ttl
    assert engine.max_peers == EngineConfig().max_peers
    assert engine.max_held_bytes == EngineConfig().max_held_bytes


def test_the_peer_table_bounds_are_configurable_and_checked() -> None:
    config = parse_config("[presence]\nmax_peers = 500\nmax_held_bytes = 1048576\n", "hw.toml")
    assert (config.engine_config().max_peers, config.engine_config().max_held_bytes) == (500, 1_048_576)
    assert "expected an integer in 2..1000000" in error_for("[presence]\nmax_peers = 1\n")


def error_for(text: str, source: str = "hw.toml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source)
    message = str(caught.value)
    assert isinstance(caught.value, PresenceError)
    assert message.startswith(f"{source}: ")
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        # wrong type
        ('[lan]\nbeacon_interval = "fast"', "lan.beacon_interval", 'expected a number > 0, got "fast"'),
        ("[lan]\nenabled = 1", "lan.enabled", "expected true or false, got 1"),
        ("[lan]\ntcp_port = true", "lan.tcp_port", "expected an integer in 0..65535, got true"),
        ("[lan]\nmax_frame_bytes = 1500.0", "lan.max_frame_bytes", "expected an integer"),
        ("[agent]\nname = 7", "agent.name", "expected a string, got 7"),
        ('[lan]\ninterfaces = "eth0"', "lan.interfaces", "expected a list of interface names"),
        ('[lan]\ninterfaces = ["eth0", 5]', "lan.interfaces", "expected a list of interface names"),
        ("lan = 3", "lan", "expected a table, got 3"),
        ("mqtt = 3", "mqtt", "expected a table, got 3"),
        # out of range
        ("[lan]\nkeepalive_interval = -1", "lan.keepalive_interval", "expected a number > 0, got -1"),
        ("[lan]\nbeacon_interval = nan", "lan.beacon_interval", "expected a number > 0, got nan"),
        ("[lan]\nbeacon_interval = inf", "lan.beacon_interval", "got inf"),
        ("[presence]\ndeparture_grace = -0.5", "presence.departure_grace", "expected a number >= 0"),
        ("[presence]\nrecord_ttl = 10", "presence.record_ttl", "expected a number of seconds in 60.."),
        ("[lan]\nmulticast_port = 70000", "lan.multicast_port", "expected an integer in 1..65535, got 70000"),
        ("[lan]\ntcp_port = -1", "lan.tcp_port", "expected an integer in 0..65535, got -1"),
        ("[lan]\nmax_pending_connections = 0", "lan.max_pending_connections", "expected an integer >= 1"),
        ('[agent]\nlog_level = "loud"', "agent.log_level", 'expected one of "debug", "info"'),
        ('[lan]\nmulticast_group = "10.0.0.1"', "lan.multicast_group", "expected an IPv4 multicast address"),
        ('[lan]\nmulticast_group = "ff02::1"', "lan.multicast_group", "expected an IPv4 multicast address"),
        ('[lan]\ninterfaces = ["10.0.0.300"]', "lan.interfaces", "or IPv4 addresses"),
        ('[lan]\ninterfaces = ["a-much-too-long-name"]', "lan.interfaces", "interface names"),
        ('[lan]\ninterfaces = [""]', "lan.interfaces", "interface names"),
        # out of range relative to another key
        (
            "[lan]\ndead_interval = 0.5",
            "lan.dead_interval",
            "expected a number > lan.keepalive_interval (0.5)",
        ),
        (
            "[lan]\nkeepalive_interval = 3\ndead_interval = 2",
            "lan.dead_interval",
            "expected a number > lan.keepalive_interval (3), got 2",
        ),
        (
            "[lan]\ndial_backoff_max = 0.1",
            "lan.dial_backoff_max",
            "expected a number >= lan.dial_backoff_initial",
        ),
        (
            "[lan]\nmax_receive_bytes_per_second = 1000",
            "lan.max_receive_bytes_per_second",
            "expected an integer >= lan.max_frame_bytes (16384)",
        ),
    ],
)
def test_a_bad_value_names_file_key_and_expectation(text: str, key: str, expected: str) -> None:
    message = error_for(text)
    assert f"hw.toml: {key}: " in message
    assert expected in message


def test_an_unknown_key_names_it_and_suggests_the_right_one() -> None:
    message = error_for("[lan]\nbeacon_intervall = 1.0")
    assert message.startswith("hw.toml: lan.beacon_intervall: unknown key")
    assert "did you mean beacon_interval?" in message
    assert "expected one of" in message and "keepalive_interval" in message


def test_an_unknown_nested_table_is_an_unknown_key() -> None:
    message = error_for("[lan.radio]\nchannel = 11")
    assert message.startswith("hw.toml: lan.radio: unknown key; expected one of")


def test_an_unknown_table_names_it_and_the_known_ones() -> None:
    message = error_for("[dongle]\nchannel = 11")
    known = "agent, ble, lan, mqtt, presence, radio, trust, view"
    assert message == f"hw.toml: dongle: unknown table; expected one of {known}"


def test_the_error_carries_source_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[lan]\ntcp_port = 1e9", "site.toml")
    assert caught.value.source == "site.toml"
    assert caught.value.key == "lan.tcp_port"


def test_a_syntax_error_names_file_and_line() -> None:
    message = error_for('[agent]\nname = "pi"\nlog_level = = "info"\n')
    assert "invalid TOML" in message
    assert "line 3" in message


def test_a_duplicate_key_is_a_syntax_error() -> None:
    message = error_for("[lan]\ntcp_port = 1\ntcp_port = 2\n")
    assert "invalid TOML" in message and "line 3" in message


@pytest.mark.parametrize(
    "value",
    ["[" * 2000 + "]" * 2000, "[" * 2000, "{a = " * 2000 + "1" + "}" * 2000, "[{b = " * 1000],
    ids=["arrays", "unclosed-arrays", "inline-tables", "mixed"],
)
def test_values_nested_too_deeply_are_a_config_error_not_a_recursion_error(value: str) -> None:
    # Found by the config fuzz target (tests/fuzz): tomllib recurses once per level.
    message = error_for(f"[lan]\ninterfaces = {value}\n")
    assert message == "hw.toml: invalid TOML: arrays or inline tables nested too deeply"


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[lan]\nbeacon_interval = 0\n")
    with pytest.raises(ConfigError, match=r"site\.toml: lan\.beacon_interval: expected a number > 0, got 0$"):
        load_config(path)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the file"):
        load_config(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name = \xff\n")
    with pytest.raises(ConfigError, match=r"binary\.toml: not UTF-8"):
        load_config(binary)


def test_a_config_is_frozen() -> None:
    config = AgentConfig()
    with pytest.raises(AttributeError):
        config.lan.tcp_port = 1  # type: ignore[misc]


def test_the_ble_table_is_read_and_checked() -> None:
    config = parse_config(
        '[ble]\nenabled = true\nadapter = "hci1"\nmax_connections = 6\nscan_mode = "passive"\n', "hw.toml"
    )
    assert (config.ble.enabled, config.ble.adapter, config.ble.max_connections) == (True, "hci1", 6)
    assert config.ble.scan_mode == "passive" and not AgentConfig().ble.enabled
    for bad, key in (
        ('scan_mode = "loud"', "ble.scan_mode"),
        ("max_connections = 0", "ble.max_connections"),
        ('adapter = "hci0; rm"', "ble.adapter"),
        ("reconnect_backoff_initial = 5.0\nreconnect_backoff_max = 1.0", "ble.reconnect_backoff_max"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(f"[ble]\n{bad}\n", "hw.toml")
        assert caught.value.key == key


def test_sealing_follows_trust_unless_trust_says_otherwise_with_or_without_a_ca() -> None:
    default = parse_config("", "site.toml").engine_config()
    assert (default.sealing, default.encrypt, default.unsealed_leaves) == (None, None, False)
    config = parse_config(
        '[trust]\nsealing = "require"\nencrypt = "on"\nunsealed_leaves = true\n', "site.toml"
    ).engine_config()
    assert (config.sealing, config.encrypt, config.unsealed_leaves) == (Sealing.REQUIRE, True, True)
    assert (
        parse_config('[trust]\nsealing = "off"\nencrypt = "off"\n', "site.toml").engine_config().encrypt
        is False
    )


@pytest.mark.parametrize("line", ['sealing = "maybe"', 'encrypt = "yes"', "unsealed_leaves = 1"])
def test_a_sealing_setting_out_of_its_values_stops_the_agent_with_one_line(line: str) -> None:
    with pytest.raises(ConfigError, match=r"trust\.(sealing|encrypt|unsealed_leaves)"):
        parse_config(f"[trust]\n{line}\n", "site.toml")
