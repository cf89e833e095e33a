"""The dongle firmware's airtime and duty-cycle vectors, made with the host's ``agent.core`` code.

::

    python tests/dongle_vectors.py --write   # (re)writes docs/dongle-vectors.json
    python tests/dongle_vectors.py           # exit 1 if the committed file differs from what the host makes

``lora``: one case per modulation and payload length, with the host's symbol count (``symbols_x4``,
quarter symbols, exact) and its airtime rounded up to whole microseconds (``airtime_us``, from the
host's symbols with exact fractions). ``espnow``: the host's airtime per payload length in us.
``ledgers``: duty-cycle scenarios on whole microseconds; each ``ask`` step holds the host's
``can_send`` and ``ready_us`` (``DutyCycle.ready_at`` in us, a float: the firmware's integer answer
lies within 2 us after it, having 1 us in hand where the host keeps 1 ns), ``record`` steps record,
``used`` steps hold the host's airtime in the last window (us). A firmware passes when it computes
the same (tests/test_dongle.py runs firmware_bridge/micropython/airtime.py and duty_cycle.py so
under CPython and under MicroPython).
"""

from __future__ import annotations

import math
import random
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: import the code of this checkout
    sys.path.insert(0, str(ROOT))

from vectors_support import vectors_main  # noqa: E402

from agent.core.airtime import Chip, EspNowModel, LoRaModulation  # noqa: E402
from agent.core.duty_cycle import DutyCycle, DwellTimeError  # noqa: E402

VECTORS_PATH = ROOT / "docs" / "dongle-vectors.json"

#: (chip, sf, bandwidth Hz, coding rate, preamble): the common settings, both chips' edges, LDRO.
MODULATIONS = [
    (Chip.SX126X, 7, 125_000, 5, 8),
    (Chip.SX127X, 7, 125_000, 5, 8),
    (Chip.SX126X, 5, 500_000, 5, 8),
    (Chip.SX126X, 6, 125_000, 8, 12),
    (Chip.SX127X, 9, 125_000, 7, 8),
    (Chip.SX126X, 10, 250_000, 5, 16),
    (Chip.SX127X, 11, 125_000, 5, 8),  # low-data-rate optimisation on
    (Chip.SX126X, 12, 125_000, 8, 8),
    (Chip.SX127X, 12, 250_000, 6, 8),  # on at 250 kHz too
    (Chip.SX126X, 12, 500_000, 5, 6),  # and off at 500 kHz
    (Chip.SX126X, 8, 62_500, 5, 8),
    (Chip.SX127X, 7, 7_800, 5, 8),
]
LENGTHS = [0, 1, 9, 10, 11, 32, 51, 100, 222, 255]


def lora_case(chip: Chip, sf: int, bandwidth: int, cr: int, preamble: int, length: int) -> dict[str, Any]:
    modulation = LoRaModulation(sf, float(bandwidth), cr, preamble, chip=chip)
    symbols = Fraction(modulation.symbols(length))  # a multiple of 1/4: exact in a float
    exact_us = symbols * (1 << sf) * 10**6 / bandwidth
    return {
        "chip": chip.value,
        "sf": sf,
        "bandwidth_hz": bandwidth,
        "coding_rate": cr,
        "preamble": preamble,
        "payload_len": length,
        "symbols_x4": int(symbols * 4),
        "airtime_us": math.ceil(exact_us),
        "airtime_s": modulation.airtime(length),
    }


def ledger_scenario(
    name: str, ppm: int, dwell_ms: int, window_s: int, steps: list[tuple[str, int, int]]
) -> dict[str, Any]:
    host = DutyCycle(ppm / 1e6, float(window_s), dwell_ms / 1000 if dwell_ms else None)
    out: list[list[Any]] = []
    for kind, now_us, airtime_us in steps:
        now, airtime = now_us / 1e6, airtime_us / 1e6
        if kind == "record":
            host.record(now, airtime)
            out.append(["record", now_us, airtime_us])
        elif kind == "used":
            out.append(["used", now_us, host.used(now) * 1e6])
        else:
            try:
                host.check(airtime)
            except DwellTimeError:
                out.append(["ask", now_us, airtime_us, {"fits": False}])
                continue
            answer = {"fits": True, "can_send": host.can_send(now, airtime)}
            answer["ready_us"] = host.ready_at(now, airtime) * 1e6
            out.append(["ask", now_us, airtime_us, answer])
    return {"name": name, "duty_cycle_ppm": ppm, "dwell_ms": dwell_ms, "window_s": window_s, "steps": out}


def busy_sender(seed: int, count: int, airtimes: list[int], window_s: int) -> list[tuple[str, int, int]]:
    """A sender that asks before every frame, sends when permitted and waits when not."""
    rng = random.Random(seed)
    host = DutyCycle(0.1, float(window_s))
    steps: list[tuple[str, int, int]] = []
    now = 0
    for _ in range(count):
        airtime = rng.choice(airtimes)
        now += rng.randrange(0, 400_000)
        steps.append(("ask", now, airtime))
        if not host.can_send(now / 1e6, airtime / 1e6):
            now = math.ceil(host.ready_at(now / 1e6, airtime / 1e6) * 1e6) + 2
            steps.append(("ask", now, airtime))
        host.record(now / 1e6, airtime / 1e6)
        steps.append(("record", now, airtime))
        steps.append(("used", now + airtime, 0))
        now += airtime
    return steps


def build() -> dict[str, Any]:
    lora = [lora_case(*m, n) for m in MODULATIONS for n in LENGTHS]
    espnow = [{"payload_len": n, "airtime_us": EspNowModel().airtime(n) * 1e6} for n in (0, 1, 100, 250)]
    # 100 frames of 370.688 ms (SF10, 32 bytes), one every 10 s: 37 s, beyond the hour's 36 s.
    full_hour = [("ask", 0, 370_688)] + [
        step
        for i in range(100)
        for step in (("record", i * 10_000_000, 370_688), ("ask", (i + 1) * 10_000_000, 370_688))
    ]
    ledgers = [
        ledger_scenario(
            "10 % of 10 s, a busy sender", 100_000, 0, 10, busy_sender(1, 60, [30_976, 61_696, 400_000], 10)
        ),
        ledger_scenario("EU868 g1: a frame every 10 s fills the hour's 36 s", 10_000, 0, 3600, full_hour),
        ledger_scenario(
            "US915: 400 ms dwell, no duty cycle",
            1_000_000,
            400,
            3600,
            [
                ("ask", 0, 400_000),
                ("ask", 0, 400_001),
                ("record", 0, 400_000),
                ("ask", 100_000, 1000),
                ("ask", 400_000, 1000),
            ],
        ),
        ledger_scenario(
            "a frame as long as the whole allowance never fits",
            1_000,
            0,
            10,
            [
                ("ask", 0, 10_000),
                ("ask", 0, 9_999),
                ("record", 0, 9_999),
                ("ask", 9_999, 1),
                ("ask", 10_000_000, 1),
                ("used", 10_000_000, 0),
            ],
        ),
    ]
    return {"lora": lora, "espnow": espnow, "ledgers": ledgers}


def main(argv: list[str]) -> int:
    return vectors_main(argv, VECTORS_PATH, ROOT, build, __doc__ or "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
