"""The radio transport (agent.transports.radio) with real agents and scripted dongles on real ptys.

Every agent is the runtime's :class:`~agent.runtime.agent.Agent` with its own state directory; its
RadioTransport opens the dongles by path through the production driver. Two scripted dongles
paired (tests/scripted_dongle.py) carry whatever one transmits to the other as RX, as the air
would. Waits poll for conditions with generous deadlines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from lan_support import free_udp_port
from scripted_dongle import ESPNOW_INFO, LORA_INFO, Script, ScriptedDongle, pair

from agent.config import AgentConfig, ConfigError, parse_config
from agent.core.airtime import Chip, EspNowModel, LoRaModulation
from agent.core.medium import MEDIUM_HEADER_BYTES
from agent.core.records import ConnectionType
from agent.runtime.agent import Agent
from agent.transports.radio import REPLUG_POLL, RadioSettingsError, RadioTransport, configuration, medium_for
from agent.transports.radio_settings import REGION_SETTINGS, RadioSettings
from firmware_bridge.protocol import ConfigKey, Hello, Info, Nak, NakReason, RadioKind, RegionCode, Tx

T = TypeVar("T")

#: Fast timers for tests: an ESP-NOW medium has airtime to spare.
FAST = RadioSettings(enabled=True, keepalive_interval=0.5, dead_interval=2.0)


async def eventually(condition: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := condition()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


def keys(agent: Agent) -> set[str]:
    return {p.peer_key_string for p in agent.engine.graph(agent.now()).peers()}


def connection_types(agent: Agent) -> set[ConnectionType]:
    return {c.connection_type for c in agent.engine.graph(agent.now()).connections()}


def radio(*paths: Path) -> RadioTransport:
    return RadioTransport(dataclasses.replace(FAST, ports=tuple(map(str, paths))))


# ---------------------------------------------------------------------------- settings and the medium


def test_the_region_names_are_the_serial_protocols() -> None:
    assert set(REGION_SETTINGS) == {code.name for code in RegionCode}


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ("frequency_hz = 869500000", "radio.frequency_hz", "inside EU868 g1 (868..868.6 MHz), got 869500000"),
        ('region = "EU433"', "radio.region", 'expected one of "EU868_G1"'),
        ("spreading_factor = 13", "radio.spreading_factor", "expected a spreading factor in 5..12, got 13"),
        ("coding_rate = 9", "radio.coding_rate", "expected an integer in 5..8"),
        ("dead_interval = 30.0", "radio.dead_interval", "expected a number > radio.keepalive_interval (81)"),
        ("channel = 15", "radio.channel", "expected a Wi-Fi channel in 1..14"),
        ("presence_share = 0", "radio.presence_share", "expected a number in (0, 1]"),
        ('ports = ["/dev/ttyUSB0", ""]', "radio.ports", "expected a list of serial port paths"),
        (
            'region = "US915"\nfrequency_hz = 915000000\nspreading_factor = 12',
            "radio.spreading_factor",
            "fit US915's limits (400 ms per frame)",
        ),
    ],
)
def test_a_bad_radio_value_is_a_config_error_naming_the_key(toml: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[radio]\nenabled = true\n{toml}", "pi.toml")
    assert caught.value.key == key
    assert problem in str(caught.value) and str(caught.value).startswith(f"pi.toml: {key}: ")


def test_the_radio_defaults_load_and_settings_built_in_code_are_checked_too() -> None:
    config = parse_config('[radio]\nenabled = true\nports = ["/dev/ttyUSB0"]', "pi.toml")
    assert config.radio.ports == ("/dev/ttyUSB0",) and config.radio.region_limits.name == "EU868 g1"
    assert not parse_config("", "pi.toml").radio.enabled  # off unless asked for
    with pytest.raises(RadioSettingsError, match=r"^radio\.frequency_hz: expected a frequency inside"):
        RadioTransport(RadioSettings(frequency_hz=915_000_000))  # before any port is opened


def test_a_lora_dongle_gets_the_modulation_and_the_stricter_of_region_and_info() -> None:
    settings = RadioSettings(region="US915", frequency_hz=915_000_000, spreading_factor=9)
    # An SX1276 that enforces 0.5 % and a 300 ms dwell itself: stricter than US915's none and 400 ms.
    info = Info((1, 2, 3), RadioKind.SX127X, 255, RegionCode.US915, 5_000, 300, 8, b"\x01")
    spec = medium_for(settings, info, "/dev/ttyUSB0")
    assert spec.allowance == 0.005 and spec.dwell == 0.3
    model = spec.airtime
    assert isinstance(model, LoRaModulation) and model.chip is Chip.SX127X and model.sf == 9
    uncut = dataclasses.replace(model, mtu=255)
    assert uncut.airtime(model.mtu) <= 0.3 < uncut.airtime(model.mtu + 1)  # the MTU fits the dwell
    assert dict(configuration(settings, info).fields) == {
        ConfigKey.REGION: RegionCode.US915,
        ConfigKey.FREQUENCY_HZ: 915_000_000,
        ConfigKey.BANDWIDTH_HZ: 125_000,
        ConfigKey.SPREADING_FACTOR: 9,
        ConfigKey.CODING_RATE: 5,
        ConfigKey.TX_POWER_DBM: 14,
        ConfigKey.PREAMBLE_SYMBOLS: 8,
        ConfigKey.SYNC_WORD: 18,
    }
    eu = medium_for(RadioSettings(), LORA_INFO, "/dev/ttyUSB0")  # EU868 g1 and a dongle enforcing 1 %
    assert (eu.allowance, eu.dwell, eu.airtime.mtu) == (0.01, None, 255)


def test_an_espnow_dongle_gets_its_channel_and_no_duty_cycle() -> None:
    spec = medium_for(RadioSettings(), ESPNOW_INFO, "/dev/ttyACM0")
    assert isinstance(spec.airtime, EspNowModel) and spec.airtime.mtu == ESPNOW_INFO.mtu
    assert spec.allowance == 1.0 and spec.dwell is None
    assert spec.mtu == ESPNOW_INFO.mtu - MEDIUM_HEADER_BYTES
    assert dict(configuration(RadioSettings(channel=6), ESPNOW_INFO).fields) == {
        ConfigKey.REGION: RegionCode.NONE,
        ConfigKey.CHANNEL: 6,
        ConfigKey.TX_POWER_DBM: 14,
    }


# ---------------------------------------------------------------------------- agents on the air


def test_two_agents_whose_dongles_hear_each_other_converge_over_radio(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongles = [ScriptedDongle(tmp_path / f"ttyUSB{i}").plug() for i in range(2)]
        pair(*dongles)
        # A names its port; B finds its own as autodetection would (the USB scan's result, given).
        transports = [radio(dongles[0].path), RadioTransport(FAST, find_ports=lambda: [str(dongles[1].path)])]
        agents = [
            Agent(state_dir=tmp_path / f"a{i}", transports=[t], control_socket=False)
            for i, t in enumerate(transports)
        ]
        for agent in agents:
            await agent.start()
        try:
            everyone = {a.peer_key_string for a in agents}
            await eventually(lambda: all(keys(a) == everyone for a in agents), "both graphs")
            graph = agents[0].engine.graph(agents[0].now())
            assert {c.connection_type for c in graph.connections()} == {ConnectionType.RADIO}
            assert all(c.approximate_distance_in_meters is not None for c in graph.connections())
            stats = agents[0].stats()
            assert stats["transport.radio.up"] == 1 and stats["transport.radio.tx_done"] > 0
            assert stats["transport.radio.rx"] > 0 and stats["transport.radio.serial.frames"] > 0
            assert all(d.overruns == 0 for d in dongles)
            assert transports[0].up == {str(dongles[0].path): ESPNOW_INFO}
        finally:
            for agent in agents:
                await agent.close()
            for dongle in dongles:
                dongle.unplug()

    asyncio.run(scenario())


def test_an_unplugged_dongle_takes_its_interface_down_and_a_replugged_one_is_back_within_2_s(
    tmp_path: Path,
) -> None:
    multicast = free_udp_port()

    def config(path: Path) -> AgentConfig:
        return parse_config(
            f'[lan]\ninterfaces = ["127.0.0.1"]\nmulticast_port = {multicast}\n'
            f'[radio]\nenabled = true\nports = ["{path}"]\nkeepalive_interval = 0.5\ndead_interval = 2.0',
            "pi.toml",
        )

    async def scenario() -> None:
        dongles = [ScriptedDongle(tmp_path / f"ttyUSB{i}").plug() for i in range(2)]
        pair(*dongles)
        # The runtime builds both transports from the configuration: LAN and the radio.
        agents = [
            Agent(config(d.path), state_dir=tmp_path / f"a{i}", control_socket=False)
            for i, d in enumerate(dongles)
        ]
        for agent in agents:
            await agent.start()
        try:
            a, b = agents
            both = {ConnectionType.RADIO, ConnectionType.ACCESS_POINT}
            await eventually(lambda: connection_types(a) == both, "A linked to B by radio and LAN")

            dongles[0].unplug()
            await eventually(lambda: a.stats().get("transport.radio.down"), "A's radio interface down")
            await eventually(lambda: ConnectionType.RADIO not in connection_types(a), "the radio link gone")
            assert b.peer_key_string in keys(a)  # the agent runs on over its other transport
            assert a.stats()["transport.radio.unplugged"] == 1

            await asyncio.sleep(3 * REPLUG_POLL)  # unplugged for a while: the port is polled quietly
            dongles[0].replug()  # how soon it is up again is a figure (python -m bench.radio), not a test
            await eventually(lambda: a.stats()["transport.radio.up"] == 2, "A's dongle up again")
            assert not a.stats().get("transport.radio.refused")  # the first attempt after the replug
            await eventually(lambda: connection_types(a) == both, "the radio link back")
        finally:
            for agent in agents:
                await agent.close()
            for dongle in dongles:
                dongle.unplug()

    asyncio.run(scenario())


def test_a_duty_cycle_refusal_from_the_dongle_pauses_the_interface_for_the_wait_it_names(
    tmp_path: Path,
) -> None:
    # The dongle's own ledger says it is out of allowance for 5 s (it counted what it sent before
    # this agent started): the engine must not keep sending frames it will refuse.
    async def scenario() -> None:
        dongle = ScriptedDongle(tmp_path / "ttyUSB0", Script(nak_tx=Nak(NakReason.DUTY_CYCLE, 5000))).plug()
        agent = Agent(state_dir=tmp_path / "a", transports=[radio(dongle.path)], control_socket=False)
        await agent.start()
        try:
            await eventually(lambda: agent.stats().get("interfaces.duty_cycle_refused"), "the refusal")
            refused_at = len([f for f in dongle.frames if isinstance(f, Tx)])
            await asyncio.sleep(3.0)  # keepalives every 0.5 s would have gone meanwhile
            assert len([f for f in dongle.frames if isinstance(f, Tx)]) == refused_at
            assert agent.stats()["transport.radio.tx_nak.duty_cycle"] == refused_at
        finally:
            await agent.close()
            dongle.unplug()

    asyncio.run(scenario())


def test_a_dongle_refused_is_logged_once_and_retried_with_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dongle_path = tmp_path / "ttyACM0"
    config = parse_config(
        f'[lan]\nenabled = false\n[radio]\nenabled = true\nports = ["{dongle_path}"]', "pi.toml"
    )

    async def scenario() -> None:
        dongle = ScriptedDongle(dongle_path, Script(version=2)).plug()
        agent = Agent(config, state_dir=tmp_path / "a", control_socket=False)  # transports from [radio]
        await agent.start()
        try:
            await eventually(lambda: agent.stats().get("transport.radio.refused", 0) >= 2, "two refusals")
            assert len(dongle.frames_of(Hello)) >= 2  # asked again, after a back-off
            dongle.script = Script()  # reflashed with this release's firmware
            await eventually(lambda: agent.stats().get("transport.radio.up"), "the dongle up", timeout=30.0)
        finally:
            await agent.close()
            dongle.unplug()

    with caplog.at_level(logging.INFO, logger="agent.transports.radio"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.transports.radio"]
    refusals = [line for line in lines if "serial protocol version 2" in line]
    assert len(refusals) == 1, lines  # one line, however many attempts
    assert refusals[0].startswith(f"{dongle_path}: the dongle speaks serial protocol version 2")
    assert any(line.startswith(f"{dongle_path}: ESP_NOW dongle 246f28010203") for line in lines)
