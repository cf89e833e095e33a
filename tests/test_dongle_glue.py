"""The dongle's hardware glue, as far as it runs without hardware: dongle_main.py's clock, settings
and loop, and the radio files (radio_lora.py, radio_sx127x.py, radio_sx126x.py, radio_espnow.py)
against stand-ins that follow micropython-lib's ``lora`` README and MicroPython's ``espnow`` docs.
The LoRa modem is built from dongle.json's pins on stand-ins for ``machine`` and ``lora``. What
needs the board itself (SPI, the Wi-Fi driver, the USB REPL) is not verified here; every file
compiles with mpy-cross (tests/test_micropython_compile.py). The loop also runs under MicroPython.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from micropython_support import require_micropython, run_batch

from agent.sim.firmware import load
from firmware_bridge.protocol import (
    Decoder,
    Hello,
    Info,
    Log,
    LogLevel,
    Nak,
    NakReason,
    RadioKind,
    Rx,
    Tx,
    encode,
)

MAIN = load("dongle_main")
SX127X, SX126X, ESPNOW = load("radio_sx127x"), load("radio_sx126x"), load("radio_espnow")
LORA = load("radio_lora")
bench = importlib.import_module("dongle_bench")


class BytePort:
    """A serial port as two byte buffers: what the host sent, what the dongle wrote."""

    def __init__(self) -> None:
        self.incoming = bytearray()
        self.written = bytearray()

    def read(self, limit: int) -> bytes:
        data = bytes(self.incoming[:limit])
        del self.incoming[:limit]
        return data

    def write(self, data: bytes) -> None:
        self.written += data


class PolledRadio(bench.BenchRadio):  # type: ignore[misc]
    """The bench radio with the boot loop's poll(): events queued by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []

    def poll(self) -> Any:
        event = self.events.pop(0) if self.events else (False, None)
        if isinstance(event, Exception):
            raise event
        return event


class Ticks:
    """MicroPython's ticks_ms / ticks_diff, wrapping at 2**30."""

    PERIOD = 1 << 30

    def __init__(self, start: int) -> None:
        self.value = start

    def ticks_ms(self) -> int:
        return self.value % self.PERIOD

    def ticks_diff(self, a: int, b: int) -> int:
        return ((a - b + self.PERIOD // 2) % self.PERIOD) - self.PERIOD // 2


def test_the_clock_never_wraps_or_runs_backwards() -> None:
    ticks = Ticks((1 << 30) - 10)
    clock = MAIN.Clock(ticks.ticks_ms, ticks.ticks_diff)
    seen = []
    for step in (0, 5, 5, 30, 1000):
        ticks.value += step
        seen.append(clock())
    assert seen == [0, 5, 10, 40, 1040]


def test_settings_missing_bad_or_good() -> None:
    def missing() -> str:
        raise OSError(2, "ENOENT")

    assert MAIN.read_settings(missing) == (load("dongle_settings").parse({}), None)
    settings, line = MAIN.read_settings(lambda: '{"spreading_factor": "seven"}')
    assert settings["spreading_factor"] == 7
    assert line == (
        "dongle.json: spreading_factor is 'seven', expected an integer of its CONFIG field's width; "
        "booted on the defaults"
    )
    assert MAIN.read_settings(lambda: '{"radio": "espnow", "channel": 6}')[0]["channel"] == 6


def loop_with(radio: Any) -> tuple[Any, BytePort, list[int]]:
    now = [0]
    core = load("dongle").Dongle(radio, load("dongle_settings").parse({"radio": "sx126x"}), b"\x01", 0)
    port = BytePort()
    return MAIN.Loop(core, port, radio, lambda: now[0]), port, now


def test_the_loop_answers_the_host_and_passes_radio_events_on() -> None:
    radio = PolledRadio()
    loop, port, now = loop_with(radio)
    host = Decoder()
    port.incoming += encode(Hello(), 1) + encode(Tx(b"ping"), 2)
    while port.incoming:
        loop.step()
    said = [r.message for r in host.feed(bytes(port.written))]
    assert [type(m).__name__ for m in said] == ["Info", "Credit"]
    port.written.clear()
    assert radio.sent == [b"ping"]
    radio.events += [(True, None), (False, (b"pong", -88, 20))]
    now[0] = 500
    loop.step()
    loop.step()
    said = [r.message for r in host.feed(bytes(port.written))]
    assert [type(m).__name__ for m in said] == ["TxDone", "Credit", "Rx"]
    assert said[-1] == Rx(-88, 20, 500, b"pong")


def test_half_a_frame_is_dropped_after_the_silence() -> None:
    loop, port, now = loop_with(PolledRadio())
    port.incoming += encode(Hello(), 1)[:4]
    loop.step()
    now[0] = 99
    loop.step()
    assert loop.core.decoder.stats["dropped_idle"] == 0
    now[0] = 100
    loop.step()
    assert loop.core.decoder.stats["dropped_idle"] == 1


def test_an_exception_in_a_pass_is_a_log_line_and_the_loop_goes_on() -> None:
    radio = PolledRadio()
    loop, port, _ = loop_with(radio)
    radio.events.append(RuntimeError("SPI bus stuck"))
    loop.step()
    port.incoming += encode(Hello(), 7)
    loop.step()
    said = [r.message for r in Decoder().feed(bytes(port.written))]
    assert said[0] == Log(LogLevel.ERROR, "dongle loop: RuntimeError: SPI bus stuck")
    assert isinstance(said[1], Info) and loop.errors == 1


def test_a_radio_that_does_not_start_still_answers_and_refuses_every_tx() -> None:
    settings = load("dongle_settings").parse({"radio": "sx127x", "pins": {"cs": 18}})
    radio, line = MAIN.make_radio(settings)  # no `lora` package, no `machine` under CPython
    assert line.startswith("the radio did not start: ") and "lora" in line
    core = load("dongle").Dongle(radio, settings, b"\x01", 0)
    said = [r.message for r in Decoder().feed(core.feed(encode(Hello(), 1) + encode(Tx(b"x"), 2), 0))]
    assert isinstance(said[0], Info) and said[0].radio == RadioKind.SX127X
    assert said[2] == Log(LogLevel.ERROR, f"radio send failed: OSError: {line}")
    assert said[3] == Nak(NakReason.BAD_CONFIG)


# --- the LoRa radio on a stand-in for micropython-lib's modem ----------------------------------------


class RxPacket(bytearray):
    """micropython-lib's RxPacket: the payload, with rssi (dBm) and snr (quarter dB)."""

    def __init__(self, payload: bytes, rssi: int, snr: int) -> None:
        super().__init__(payload)
        self.rssi, self.snr = rssi, snr


class Modem:
    """What LoRaRadio uses of micropython-lib's modem API, recorded."""

    def __init__(self) -> None:
        self.configured: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.send_state: Any = False
        self.rx: Any = True

    def configure(self, cfg: dict[str, Any]) -> None:
        self.configured.append(cfg)

    def standby(self) -> None:
        self.calls.append("standby")

    def start_recv(self, continuous: bool = False) -> None:
        self.calls.append(f"start_recv(continuous={continuous})")

    def prepare_send(self, payload: bytes) -> None:
        self.calls.append(f"prepare_send({bytes(payload)!r})")

    def start_send(self) -> None:
        self.calls.append("start_send")
        self.send_state = True

    def poll_send(self) -> Any:
        state = self.send_state
        if state not in (True, False):
            self.send_state = False  # an int exactly once, then False
        return state

    def poll_recv(self) -> Any:
        rx, self.rx = self.rx, True
        return rx


def test_lora_radio_configures_the_modem_as_the_driver_documents() -> None:
    modem = Modem()
    radio = LORA.LoRaRadio(SX127X.KIND, modem, SX127X.settings(), {"tx_ant": "PA_BOOST"})
    assert modem.configured[0] == {
        "freq_khz": 868100,
        "bw": "125",
        "sf": 7,
        "coding_rate": 5,
        "output_power": 14,
        "preamble_len": 8,
        "syncword": 0x12,
        "crc_en": True,
        "implicit_header": False,
        "tx_ant": "PA_BOOST",
    }
    applied = radio.configure({4: 10, 3: 100_000, 6: 19, 2: 869_525_400})
    assert applied == {2: 869_525_000, 4: 10, 6: 17}  # 100 kHz is no LoRa bandwidth; 19 dBm is set as 17
    assert modem.configured[-1]["sf"] == 10 and modem.configured[-1]["freq_khz"] == 869525
    assert modem.calls[-2:] == [
        "standby",
        "start_recv(continuous=True)",
    ]  # the driver refuses while receiving
    assert radio.airtime_us(10) == load("airtime").lora_airtime_us(10, 10, 125_000, 5, 8, chip="sx127x")


def test_lora_radio_sends_and_reports_what_it_heard() -> None:
    modem = Modem()
    radio = LORA.LoRaRadio(SX126X.KIND, modem, SX126X.settings())
    radio.send(b"\x01\x02")
    assert modem.calls[-2:] == ["prepare_send(b'\\x01\\x02')", "start_send"]
    assert radio.poll() == (False, None)  # still sending
    modem.send_state = 123456  # ticks_ms of the end, returned once
    modem.rx = RxPacket(b"hi", -97, -22)
    assert radio.poll() == (True, (b"hi", -97, -22))
    assert radio.poll() == (False, None)
    assert radio.channel_busy() is None and radio.noise_floor_dbm() is None


def test_each_chip_clamps_power_as_its_driver_does() -> None:
    assert [SX127X.clamp_power(d) for d in (-10, 1, 14, 17, 18, 19, 20, 30)] == [2, 2, 14, 17, 17, 17, 20, 20]
    assert [SX127X.clamp_power(d, pa_boost=False) for d in (-10, 0, 15, 20)] == [-4, 0, 15, 15]
    assert [SX126X.clamp_power(d) for d in (-20, 0, 22, 30)] == [-9, 0, 22, 22]
    assert SX127X.settings().settle({4: 6}) == {}  # SF6 needs an implicit header: not on this dongle
    assert SX126X.settings().settle({4: 5, 7: 3}) == {4: 5, 7: 6}


# --- ESP-NOW on stand-ins for MicroPython's espnow and network modules -----------------------------


class Wlan:
    def __init__(self) -> None:
        self.config_calls: list[dict[str, Any]] = []
        self.is_active = False

    def active(self, on: bool) -> None:
        self.is_active = on

    def disconnect(self) -> None:
        pass

    def config(self, **kwargs: Any) -> None:
        self.config_calls.append(kwargs)


class Network:
    STA_IF = 0

    def __init__(self) -> None:
        self.sta = Wlan()

    def WLAN(self, interface: int) -> Wlan:
        return self.sta


class EspNowStandIn:
    def __init__(self) -> None:
        self.peers: list[bytes] = []
        self.sent: list[tuple[bytes, bytes, bool]] = []
        self.inbox: list[tuple[bytes, bytes]] = []
        self.peers_table: dict[bytes, list[int]] = {}

    def active(self, on: bool) -> None:
        pass

    def add_peer(self, mac: bytes) -> None:
        self.peers.append(mac)

    def send(self, mac: bytes, msg: bytes, sync: bool) -> None:
        self.sent.append((mac, bytes(msg), sync))

    def irecv(self, timeout_ms: int) -> tuple[Any, Any]:
        return self.inbox.pop(0) if self.inbox else (None, None)


class EspNowModule:
    def __init__(self) -> None:
        self.instance = EspNowStandIn()

    def ESPNow(self) -> EspNowStandIn:
        return self.instance


def test_espnow_radio_broadcasts_on_its_channel_and_reports_rssi() -> None:
    espnow, network = EspNowModule(), Network()
    radio = ESPNOW.EspNowRadio(espnow, network)
    e = espnow.instance
    assert network.sta.is_active and e.peers == [b"\xff" * 6]
    assert network.sta.config_calls[-1] == {"channel": 1, "txpower": 14}
    assert radio.configure({9: 14, 6: 30}) == {6: 20}  # channel 14 is not in 1..13
    assert network.sta.config_calls[-1] == {"channel": 1, "txpower": 20}
    radio.send(b"hello")
    assert e.sent == [(b"\xff" * 6, b"hello", False)]
    mac = b"\x24\xa1\x60\x00\x00\x01"
    e.inbox.append((mac, b"there"))
    e.peers_table[mac] = [-61, 1000]
    assert radio.poll() == (True, (b"there", -61, None))
    assert radio.poll() == (False, None)
    assert radio.airtime_us(250) == 192 + 8 * 293


def test_the_loop_runs_under_micropython() -> None:
    require_micropython()
    script = """
import dongle, dongle_main, dongle_settings, radio_sx127x, radio_sx126x, radio_espnow
import serial_protocol as sp

class Port:
    def __init__(self, data):
        self.data = data
        self.out = bytearray()
    def read(self, n):
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk
    def write(self, b):
        self.out += b

class Radio(dongle_main.Unavailable):
    def __init__(self):
        dongle_main.Unavailable.__init__(self, 2, OSError("no board"))
        self.events = [RuntimeError("boom"), (False, (b"pong", -90, 8))]
    def poll(self):
        e = self.events.pop(0) if self.events else (False, None)
        if isinstance(e, Exception):
            raise e
        return e

now = [0]
radio = Radio()
core = dongle.Dongle(radio, dongle_settings.parse({"radio": "sx126x"}), b"\\x01", 0)
port = Port(bytes.fromhex(INPUT["hello"]))
loop = dongle_main.Loop(core, port, radio, lambda: now[0])
for _ in range(4):
    loop.step()
ticks = [0]
clock = dongle_main.Clock(lambda: ticks[0], lambda a, b: a - b)
ticks[0] = 25
print(json.dumps({"out": bytes(port.out).hex(), "errors": loop.errors, "clock": clock(),
    "power": [radio_sx127x.clamp_power(18), radio_sx126x.clamp_power(30)],
    "espnow": radio_espnow.EspNowSettings().settle({9: 6, 6: 1})}))
"""
    got = run_batch(script, {"hello": encode(Hello(), 3).hex()})
    said = [r.message for r in Decoder().feed(bytes.fromhex(got["out"]))]
    assert [type(m).__name__ for m in said] == ["Info", "Credit", "Log", "Rx"]
    assert said[2] == Log(LogLevel.ERROR, "dongle loop: RuntimeError: boom")
    assert said[3] == Rx(-90, 8, 0, b"pong")
    assert (got["errors"], got["clock"], got["power"]) == (1, 25, [17, 22])
    assert got["espnow"] == {"9": 6, "6": 2}


# --- the modem built from dongle.json's pins, on stand-ins for machine and micropython-lib's lora ---


class StandInPin:
    def __init__(self, number: int) -> None:
        self.number = number

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StandInPin) and other.number == self.number

    def __hash__(self) -> int:
        return self.number

    def __repr__(self) -> str:
        return f"Pin({self.number})"


class StandInSpi:
    def __init__(self, bus: int, **kwargs: Any) -> None:
        self.bus, self.kwargs = bus, kwargs


class StandInChip:
    """micropython-lib's SX1262 / SX1276 constructor, recording what it was given."""

    def __init__(self, spi: StandInSpi, cs: StandInPin, **kwargs: Any) -> None:
        self.spi, self.cs, self.kwargs = spi, cs, kwargs

    def configure(self, lora_cfg: dict[str, Any]) -> None:
        self.lora_cfg = lora_cfg

    def start_recv(self, continuous: bool = False) -> None:
        self.receiving = continuous


def test_make_radio_wires_the_modem_from_dongle_json_pins(monkeypatch: Any) -> None:
    machine = types.ModuleType("machine")
    machine.Pin, machine.SPI = StandInPin, StandInSpi  # type: ignore[attr-defined]
    lora = types.ModuleType("lora")
    lora.SX1262 = type("SX1262", (StandInChip,), {})  # type: ignore[attr-defined]
    lora.SX1276 = type("SX1276", (StandInChip,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "lora", lora)
    pins = {"spi": 2, "sck": 9, "mosi": 10, "miso": 11, "cs": 8, "reset": 12, "busy": 13, "dio1": 14}
    sx1262 = SX126X.make_radio({**pins, "dio3_tcxo_millivolts": 1800}).modem
    assert (sx1262.spi.bus, sx1262.spi.kwargs["sck"], sx1262.spi.kwargs["miso"]) == (
        2,
        StandInPin(9),
        StandInPin(11),
    )
    assert sx1262.cs == StandInPin(8)
    assert sx1262.kwargs == {
        "busy": StandInPin(13),
        "dio1": StandInPin(14),
        "dio2_rf_sw": True,
        "dio3_tcxo_millivolts": 1800,
        "reset": StandInPin(12),
    }
    sx1276 = SX127X.make_radio({"sck": 5, "mosi": 27, "miso": 19, "cs": 18, "dio0": 26}).modem
    assert sx1276.spi.bus == 1 and sx1276.cs == StandInPin(18)  # SPI 1 unless dongle.json names another
    assert sx1276.kwargs == {"dio0": StandInPin(26), "dio1": None, "reset": None}  # pins left out are None
    assert sx1262.receiving and sx1276.receiving and sx1276.lora_cfg["tx_ant"] == "PA_BOOST"
