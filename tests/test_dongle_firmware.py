"""The dongle firmware's pure modules against the host: airtime, region limits, the core's answers.

``firmware_bridge/micropython/airtime.py`` and ``dongle.py`` run on the dongle; here they run under
CPython and under real MicroPython (the WebAssembly port, tests/micropython_support.py) and must
agree with the host's ``agent/core/airtime.py`` and ``agent/core/duty_cycle.py`` to the
microsecond (the firmware rounds up: it never counts less airtime than the host). The core's
answers to frames the HOST encodes are decoded by the HOST, under MicroPython.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest
from micropython_support import require_micropython, run_batch

from agent.core.airtime import Chip, EspNowModel, LoRaModulation
from agent.core.duty_cycle import REGIONS
from firmware_bridge.protocol import (
    REGION_NAMES,
    ConfigKey,
    ConfigSet,
    Credit,
    Decoder,
    Hello,
    Info,
    Nak,
    NakReason,
    Tx,
    TxDone,
    encode,
)

AIRTIME: Any = importlib.import_module("firmware_bridge.micropython.airtime")
DONGLE: Any = importlib.import_module("firmware_bridge.micropython.dongle")

#: (chip, sf, bandwidth, coding rate, preamble, payload length): every SF, the usual bandwidths,
#: every coding rate, short and full frames, on both chips where the chip has the SF.
CASES = [
    (chip, sf, bw, cr, preamble, length)
    for chip in (Chip.SX126X, Chip.SX127X)
    for sf in range(7 if chip is Chip.SX127X else 5, 13)
    for bw in (125_000, 250_000, 500_000)
    for cr in (5, 8)
    for preamble in (8, 16)
    for length in (1, 20, 255)
]
CHIP_CODES = {Chip.SX127X: 1, Chip.SX126X: 2}


def host_us(chip: Chip, sf: int, bw: int, cr: int, preamble: int, length: int) -> int:
    model = LoRaModulation(sf=sf, bandwidth=bw, coding_rate=cr, preamble=preamble, chip=chip)
    return math.ceil(round(model.airtime(length) * 1e6, 6))


@pytest.mark.parametrize("case", CASES[::7])
def test_lora_airtime_matches_the_host_to_the_microsecond(case: tuple[Any, ...]) -> None:
    chip, sf, bw, cr, preamble, length = case
    firmware = AIRTIME.lora_airtime_us(CHIP_CODES[chip], length, sf, bw, cr, preamble)
    assert firmware == host_us(chip, sf, bw, cr, preamble, length)


def test_espnow_airtime_matches_the_host() -> None:
    for length in (1, 100, 250):
        assert AIRTIME.espnow_airtime_us(length) == math.ceil(round(EspNowModel().airtime(length) * 1e6, 6))


def test_the_firmware_region_table_is_the_hosts() -> None:
    for code, name in REGION_NAMES.items():
        region = REGIONS[name]
        ppm, dwell_ms = DONGLE.REGION_LIMITS[int(code)]
        assert ppm == round(region.duty_cycle * 1_000_000)
        assert dwell_ms == (round(region.dwell * 1000) if region.dwell else 0)
    assert sorted(DONGLE.REGION_LIMITS) == sorted(int(c) for c in REGION_NAMES)


class StillRadio:
    """A radio that never hears the channel busy (the core's interface, dongle.py's docstring)."""

    kind, mtu = 2, 255

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def configure(self, fields: dict[int, int]) -> dict[int, int]:
        return {k: v for k, v in fields.items() if k != ConfigKey.SYNC_WORD}

    def airtime_us(self, length: int) -> int:
        result: int = AIRTIME.lora_airtime_us(2, length, 7, 125_000, 5, 8)
        return result

    def transmit(self, payload: bytes) -> None:
        self.sent.append(payload)

    def channel_busy(self) -> bool:
        return False

    def noise_floor_dbm(self) -> None:
        return None


IDENTITY = {"firmware_version": (0, 1, 0), "dongle_id": b"\x01\x02", "queue_capacity": 2, "region": 1}


def test_a_full_queue_is_refused_and_the_credit_says_so() -> None:
    radio = StillRadio()
    core = DONGLE.Dongle(radio, IDENTITY, 0)
    decoder = Decoder()
    out = [r.message for r in decoder.feed(core.from_host(encode(Hello(1), 1), 0))]
    assert isinstance(out[0], Info) and out[1] == Credit(2, 1)
    wire = b"".join(encode(Tx(b"x" * 50), seq) for seq in (2, 3, 4))
    answers = [r.message for r in decoder.feed(core.from_host(wire, 0))]
    assert Nak(NakReason.QUEUE_FULL, 0) in answers  # one on the air, one queued, the third refused
    done = [r for r in decoder.feed(core.poll(10_000)) if isinstance(r.message, TxDone)]
    assert [r.seq for r in done] == [2]
    assert len(radio.sent) == 2  # the queued one went once the first was done


def test_a_field_the_radio_cannot_apply_is_left_out_of_the_echo() -> None:
    core = DONGLE.Dongle(StillRadio(), IDENTITY, 0)
    asked = ConfigSet(((ConfigKey.SYNC_WORD, 0x34), (ConfigKey.TX_POWER_DBM, 10)))
    (echo,) = [r.message for r in Decoder().feed(core.from_host(encode(asked, 5), 0))]
    assert echo.fields == ((ConfigKey.TX_POWER_DBM, 10),)  # type: ignore[union-attr]


MICROPYTHON_BATCH = """
import airtime, dongle, serial_protocol as sp

class Radio:
    kind = 2
    mtu = 255
    def configure(self, fields):
        return dict(fields)
    def airtime_us(self, n):
        return airtime.lora_airtime_us(2, n, 7, 125000, 5, 8)
    def transmit(self, payload):
        pass
    def channel_busy(self):
        return False
    def noise_floor_dbm(self):
        return None

lora = [airtime.lora_airtime_us(c[0], c[5], c[1], c[2], c[3], c[4]) for c in INPUT["cases"]]
core = dongle.Dongle(Radio(), {"firmware_version": (0, 1, 0), "dongle_id": b"\\x07", "region": 2}, 0)
answers = []
t = 0
for frame in INPUT["frames"]:
    data = bytes.fromhex(frame)
    answers.append((core.from_host(data, t) + core.poll(t + 1000)).hex())
    t += 1000
print(json.dumps({"lora": lora, "answers": answers}))
"""


@pytest.fixture(scope="module")
def micropython() -> Any:
    require_micropython()
    cases = [[CHIP_CODES[c[0]], *c[1:]] for c in CASES]
    frames = [encode(Hello(1), 1).hex()] + [encode(Tx(bytes(255)), seq).hex() for seq in range(2, 12)]
    return run_batch(MICROPYTHON_BATCH, {"cases": cases, "frames": frames})


def test_lora_airtime_under_micropython_matches_the_host(micropython: Any) -> None:
    assert micropython["lora"] == [host_us(*case) for case in CASES]


def test_the_core_under_micropython_enforces_eu868_g2_as_the_host_decodes_it(micropython: Any) -> None:
    decoder = Decoder()
    answers = [[r.message for r in decoder.feed(bytes.fromhex(a))] for a in micropython["answers"]]
    assert isinstance(answers[0][0], Info) and answers[0][0].duty_cycle_ppm == 1_000
    done = [m for batch in answers[1:] for m in batch if isinstance(m, TxDone)]
    naks = [m for batch in answers[1:] for m in batch if isinstance(m, Nak)]
    # 0.1 % of an hour is 3.6 s: nine 255-byte SF7 frames (399.6 ms each, counted as 400) fit.
    assert len(done) == 9 and {n.reason for n in naks} == {NakReason.DUTY_CYCLE}
    assert all(n.wait_ms > 3_500_000 for n in naks)
    assert not decoder.stats["bad_crc"] and not decoder.stats["malformed"]
