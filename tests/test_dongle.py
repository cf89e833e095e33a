"""The dongle firmware's core (firmware_bridge/micropython/dongle.py), its airtime and its ledger.

The core runs under CPython, as the emulator runs it, and is talked to through the HOST codec
(``firmware_bridge.protocol``): every answer the dongle writes must decode there, so host and
firmware are checked against each other. The radio is tests/dongle_bench.py's BenchRadio (the
firmware's own SX126x rules; sends recorded). ``airtime.py`` and ``duty_cycle.py`` are checked
against vectors the host's ``agent.core`` makes (tests/dongle_vectors.py, docs/dongle-vectors.json),
under CPython and, with a recorded conversation with the core, under real MicroPython (one run).
"""

from __future__ import annotations

import importlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import dongle_vectors
import pytest
import vectors_support
from hypothesis import given, settings
from hypothesis import strategies as st
from micropython_support import require_micropython, run_batch

from agent.core import media_limits
from agent.core.airtime import LoRaModulation
from agent.core.duty_cycle import REGIONS
from agent.sim.dongles import firmware
from firmware_bridge import limits
from firmware_bridge.protocol import (
    REGION_NAMES,
    Config,
    ConfigGet,
    ConfigKey,
    ConfigSet,
    Credit,
    Decoder,
    Hello,
    Info,
    Log,
    LogLevel,
    Message,
    Nak,
    NakReason,
    RadioKind,
    RegionCode,
    Rx,
    Status,
    StatusGet,
    Tx,
    TxDone,
    encode,
)

FW = firmware()
DONGLE, DUTY = FW["dongle"], FW["duty_cycle"]
AIRTIME = importlib.import_module("airtime")  # loaded with the firmware, by its bare name
bench = importlib.import_module("dongle_bench")  # imports the firmware modules loaded above
VECTORS: dict[str, Any] = json.loads(dongle_vectors.VECTORS_PATH.read_text(encoding="utf-8"))


class Host:
    """One dongle core on a bench radio, talked to as the host does: frames in, messages out."""

    def __init__(self, **overrides: Any) -> None:
        self.radio = bench.BenchRadio()
        self.dongle = DONGLE.Dongle(
            self.radio, FW["dongle_settings"].parse({"radio": "sx126x", **overrides}), b"\x24\xa1\x60\x01", 0
        )
        self.decoder = Decoder()
        self.seq = 0
        self.now = 0
        #: Every (seq, message) the dongle wrote, in order.
        self.transcript: list[tuple[int, Message]] = []
        self.boot = self._decode(self.dongle.take())

    def _decode(self, wire: bytes) -> list[tuple[int, Message]]:
        got = [(r.seq, r.message) for r in self.decoder.feed(wire)]
        assert self.decoder.stats["frames"] == sum(self.decoder.stats.values()), "the host dropped a frame"
        self.transcript += got  # type: ignore[arg-type]
        return got  # type: ignore[return-value]

    def send(self, message: Message, *, at: int | None = None) -> list[tuple[int, Message]]:
        self.seq = (self.seq + 1) % 256
        self.now = self.now if at is None else at
        return self._decode(self.dongle.feed(encode(message, self.seq), self.now))

    def answers(self, message: Message, *, at: int | None = None) -> list[Message]:
        return [m for _, m in self.send(message, at=at)]

    def sent(self, at: int) -> list[Message]:
        self.now = at
        return [m for _, m in self._decode(self.dongle.sent(at))]

    def poll(self, at: int) -> list[Message]:
        self.now = at
        return [m for _, m in self._decode(self.dongle.poll(at))]

    def finish_all(self) -> list[Message]:
        """Let the radio finish every queued frame, polling when the core asks to wake."""
        out: list[Message] = []
        for _ in range(100):
            if self.dongle._sending is not None:
                out += self.sent(self.now + 1000)
            elif (wake := self.dongle.next_wake_ms()) is not None:
                out += self.poll(max(wake, self.now))
            else:
                return out
        raise AssertionError("the dongle never emptied its queue")


def only(messages: list[Message], kind: type[Any]) -> list[Any]:
    return [m for m in messages if isinstance(m, kind)]


# --- the firmware spells the host's numbers ----------------------------------------------------------


def test_the_firmware_airtime_constants_are_the_hosts() -> None:
    assert AIRTIME.LORA_MAX_PAYLOAD == media_limits.LORA_MAX_PAYLOAD
    assert media_limits.LORA_LDRO_SYMBOL_TIME * 1e6 == AIRTIME.LORA_LDRO_SYMBOL_US
    assert (AIRTIME.LORA_SF_MIN, AIRTIME.LORA_SF_MAX) == (media_limits.LORA_SF_MIN, media_limits.LORA_SF_MAX)
    assert AIRTIME.LORA_BANDWIDTH_MIN == media_limits.LORA_BANDWIDTH_MIN
    assert AIRTIME.LORA_BANDWIDTH_MAX == media_limits.LORA_BANDWIDTH_MAX
    assert AIRTIME.ESPNOW_MAX_PAYLOAD == media_limits.ESPNOW_MAX_PAYLOAD
    assert AIRTIME.ESPNOW_FRAME_OVERHEAD == media_limits.ESPNOW_FRAME_OVERHEAD
    assert AIRTIME.ESPNOW_RATE == media_limits.ESPNOW_DEFAULT_RATE
    assert round(media_limits.ESPNOW_PHY_PREAMBLE * 1e6, 6) == AIRTIME.ESPNOW_PREAMBLE_US
    assert DUTY.WINDOW_S == media_limits.DUTY_CYCLE_WINDOW


def test_the_firmware_back_off_is_the_one_the_driver_allows_for() -> None:
    assert DONGLE.BACKOFF_SLOTS == limits.BACKOFF_SLOTS
    assert DONGLE.BACKOFF_FRAME == limits.BACKOFF_FRAME
    assert DONGLE.MAX_LBT_DEFERRALS == limits.MAX_LBT_DEFERRALS


def test_the_firmware_region_table_is_the_hosts() -> None:
    assert set(DUTY.REGIONS) == {int(code) for code in RegionCode}
    for code, name in REGION_NAMES.items():
        host = REGIONS[name]
        fw_name, low, high, ppm, dwell_ms = DUTY.REGIONS[int(code)]
        assert (fw_name, low, high) == (host.name, host.low_hz, host.high_hz), name
        assert ppm == round(host.duty_cycle * 1_000_000), name
        assert dwell_ms == (0 if host.dwell is None else round(host.dwell * 1000)), name


def test_the_committed_vectors_are_what_the_host_makes() -> None:
    assert vectors_support.render(dongle_vectors.build()) == dongle_vectors.VECTORS_PATH.read_text(
        encoding="utf-8"
    )


# --- the conversation: every answer, through the host codec --------------------------------------


def test_every_hello_is_answered_by_info_then_a_credit() -> None:
    host = Host(queue_capacity=3)
    for version in (1, 2, 0):
        (seq_info, info), (_, credit) = host.send(Hello(version))
        assert seq_info == host.seq  # INFO answers the HELLO's seq, whatever its version
        assert info == Info(
            DONGLE.FIRMWARE_VERSION,
            RadioKind.SX126X,
            255,
            RegionCode.EU868_G1,
            10_000,
            0,
            3,
            b"\x24\xa1\x60\x01",
        )
        assert credit == Credit(3, host.seq)


def test_config_set_is_echoed_as_in_force_clamped_or_left_out() -> None:
    host = Host()
    asked = ConfigSet(
        (
            (ConfigKey.TX_POWER_DBM, 30),  # the SX1262 stops at 22
            (ConfigKey.SPREADING_FACTOR, 9),
            (ConfigKey.CHANNEL, 3),  # an ESP-NOW key: a LoRa radio cannot apply it
            (ConfigKey.STATUS_INTERVAL_S, 30),
        )
    )
    [echo] = host.answers(asked)
    assert echo == Config(
        ((ConfigKey.TX_POWER_DBM, 22), (ConfigKey.SPREADING_FACTOR, 9), (ConfigKey.STATUS_INTERVAL_S, 30))
    )
    [again] = host.answers(ConfigGet((ConfigKey.TX_POWER_DBM, ConfigKey.CHANNEL)))
    assert again == Config(((ConfigKey.TX_POWER_DBM, 22),))
    [everything] = host.answers(ConfigGet())
    assert isinstance(everything, Config)
    assert [k for k, _ in everything.fields] == [k for k in ConfigKey if k != ConfigKey.CHANNEL]


def test_nothing_applied_is_a_bad_config_nak() -> None:
    host = Host()
    [nak] = host.answers(ConfigSet(((ConfigKey.SPREADING_FACTOR, 13),)))
    assert nak == Nak(NakReason.BAD_CONFIG)


def test_the_region_follows_the_frequency_so_the_host_cannot_escape_the_duty_cycle() -> None:
    host = Host()
    for asked in (
        ((ConfigKey.REGION, RegionCode.NONE),),  # 868.1 MHz is in EU868 g1, not "none"
        ((ConfigKey.REGION, RegionCode.US915),),
        ((ConfigKey.FREQUENCY_HZ, 915_000_000),),  # outside the region in force
    ):
        log, nak = host.answers(ConfigSet(asked))
        assert nak == Nak(NakReason.BAD_CONFIG)
        assert isinstance(log, Log) and log.level == LogLevel.WARNING and "do not match" in log.text
    moved = ((ConfigKey.REGION, RegionCode.EU868_G3), (ConfigKey.FREQUENCY_HZ, 869_525_000))
    assert host.answers(ConfigSet(moved)) == [Config(moved)]
    [info, _] = host.answers(Hello())
    assert isinstance(info, Info) and (info.region, info.duty_cycle_ppm) == (RegionCode.EU868_G3, 100_000)


def test_a_tx_is_answered_by_tx_done_with_its_airtime_then_a_credit() -> None:
    host = Host(queue_capacity=2)
    host.answers(Hello())
    assert host.send(Tx(b"hello"), at=10) == []  # on the air: answered when the radio is done
    assert host.radio.sent == [b"hello"]
    done, credit = host.sent(41)
    airtime = LoRaModulation().airtime(5)
    assert isinstance(done, TxDone) and done.airtime_us == math.ceil(airtime * 1e6)
    assert credit == Credit(2, host.seq)


def test_a_full_queue_is_refused_and_every_tx_gets_exactly_one_answer() -> None:
    host = Host(queue_capacity=2)
    host.answers(Hello())
    first = host.send(Tx(b"a"), at=0)
    second = host.send(Tx(b"b"))
    (seq3, nak), (_, credit) = host.send(Tx(b"c"))
    assert first == second == []
    assert (seq3, nak, credit) == (host.seq, Nak(NakReason.QUEUE_FULL), Credit(0, host.seq))
    rest = host.finish_all()
    assert [type(m) for m in rest] == [TxDone, Credit, TxDone, Credit]
    assert only(rest, Credit)[-1].free == 2
    assert host.radio.sent == [b"a", b"b"]


def test_the_dongles_own_ledger_refuses_beyond_the_allowance_with_the_wait() -> None:
    # EU868 g2: 0.1 % of an hour is 3.6 s; at SF12 a 50-byte frame takes 2.3 s.
    host = Host(region=RegionCode.EU868_G2, frequency_hz=869_000_000, spreading_factor=12)
    host.answers(Hello())
    airtime_us = math.ceil(LoRaModulation(12).airtime(50) * 1e6)
    host.send(Tx(bytes(50)), at=0)
    [done, _] = host.sent(3000)
    assert done == TxDone(airtime_us)
    (seq, nak), (_, credit) = host.send(Tx(bytes(50)), at=10_000)
    assert isinstance(nak, Nak) and nak.reason == NakReason.DUTY_CYCLE and seq == host.seq
    # The frame could start when the first one's airtime has left the window ending where it ends.
    assert nak.wait_ms == pytest.approx(3_600_000 - 10_000, abs=airtime_us / 1000 + 1)
    assert credit.free == 8 and host.radio.sent == [bytes(50)]


def test_too_long_for_the_dwell_limit_or_the_mtu_is_refused() -> None:
    host = Host(region=RegionCode.US915, frequency_hz=915_000_000, spreading_factor=12)
    (_, nak), (_, _) = host.send(Tx(bytes(30)))
    assert nak == Nak(NakReason.TOO_LONG)  # 1.5 s at SF12, over US915's 400 ms
    host.answers(ConfigSet(((ConfigKey.SPREADING_FACTOR, 7),)))
    assert host.send(Tx(bytes(30)), at=1) == [] and host.radio.sent == [bytes(30)]


def test_listen_before_talk_defers_while_the_channel_is_busy_then_goes_anyway() -> None:
    host = Host()
    host.radio.busy = True
    host.send(Tx(b"x"), at=0)
    assert host.radio.sent == []
    host.finish_all()
    assert host.radio.sent == [b"x"]
    assert host.dongle.counters["lbt_deferred"] == DONGLE.MAX_LBT_DEFERRALS
    assert host.dongle.counters["lbt_gave_up"] == 1


def test_a_radio_that_fails_is_logged_and_the_tx_refused() -> None:
    host = Host()
    (_, log), (seq, nak), (_, credit) = host.send(Tx(b"fail"))
    assert isinstance(log, Log) and log.level == LogLevel.ERROR and "radio send failed" in log.text
    assert (seq, nak, credit.free) == (host.seq, Nak(NakReason.BAD_CONFIG), 8)


def test_a_radio_that_never_reports_the_end_is_given_up_on() -> None:
    host = Host()
    host.send(Tx(b"stuck"), at=0)
    wake = host.dongle.next_wake_ms()
    assert wake is not None and wake >= DONGLE.TX_GUARD_MS
    log, done, credit = host.poll(wake)
    assert isinstance(log, Log) and isinstance(done, TxDone) and isinstance(credit, Credit)


def test_status_when_asked_and_every_status_interval() -> None:
    host = Host(status_interval_s=10)
    host.send(Tx(bytes(20)), at=0)
    host.sent(100)
    [status] = host.answers(StatusGet(), at=200)
    airtime_ms = LoRaModulation().airtime(20) * 1000
    assert status == Status(int(airtime_ms), int(airtime_ms), 0, 8, -117)
    assert host.dongle.next_wake_ms() == 10_000
    [periodic] = host.poll(10_000)
    assert isinstance(periodic, Status)
    later = host.poll(80_000)  # a minute on: the short-term figure has let the frame go
    assert only(later, Status)[0].airtime_short_ms == 0 and only(later, Status)[0].airtime_long_ms > 0


def test_frames_heard_go_to_the_host_as_rx() -> None:
    host = Host()
    got = host._decode(host.dongle.heard(b"\xc0hello", -97, -22, 2**32 + 5))
    assert [m for _, m in got] == [Rx(-97, -22, 5, b"\xc0hello")]
    assert host.dongle.heard(b"", -97, None, 6) == b"" and host.dongle.counters["rx_dropped"] == 1


def test_a_dongle_to_host_type_sent_to_the_dongle_is_refused_malformed() -> None:
    host = Host()
    assert host.answers(TxDone(5)) == [Nak(NakReason.MALFORMED)]


def test_boot_settings_that_break_the_region_are_logged_and_the_band_wins() -> None:
    host = Host(region=RegionCode.US915)  # the default 868.1 MHz is in EU868 g1
    assert any(isinstance(m, Log) and "is not in region" in m.text for _, m in host.boot)
    [info, _] = host.answers(Hello())
    assert isinstance(info, Info) and info.region == RegionCode.EU868_G1


def test_bad_dongle_json_is_one_line_naming_the_key() -> None:
    parse, error = FW["dongle_settings"].parse, FW["dongle_settings"].SettingsError
    with pytest.raises(error, match=r"^dongle.json: tx_power_dbm is 200, expected an integer"):
        parse({"tx_power_dbm": 200})
    with pytest.raises(error, match=r"^dongle.json: unknown key 'colour'"):
        parse({"colour": 1})
    with pytest.raises(error, match=r"^dongle.json: queue_capacity is 65, expected an integer in 1..64$"):
        parse({"queue_capacity": 65})
    with pytest.raises(error, match=r"^dongle.json: radio is 'rfm95'"):
        parse({"radio": "rfm95"})
    with pytest.raises(error, match=r"^dongle.json is not valid JSON$"):
        FW["dongle_settings"].loads("{")
    assert parse({})["queue_capacity"] == 8 and FW["dongle_settings"].DEFAULTS["sync_word"] == 18


# --- bounded whatever the host sends ------------------------------------------------------------------

host_frames = st.one_of(
    st.builds(Tx, st.binary(min_size=1, max_size=255)),
    st.just(Hello()),
    st.just(StatusGet()),
    st.just(ConfigGet()),
    st.builds(lambda sf: ConfigSet(((ConfigKey.SPREADING_FACTOR, sf),)), st.integers(0, 255)),
    st.builds(TxDone, st.integers(0, 2**32 - 1)),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), host_frames),
        st.tuples(st.just("bytes"), st.binary(max_size=80)),
        st.tuples(st.just("sent"), st.none()),
        st.tuples(st.just("wait"), st.integers(0, 5000)),
    ),
    max_size=60,
)


@settings(max_examples=120, deadline=None)
@given(steps)
def test_any_host_input_is_answered_cleanly_and_never_grows_the_dongle(plan: list[tuple[str, Any]]) -> None:
    host = Host(queue_capacity=4)
    txs: list[int] = []
    for kind, value in plan:
        if kind == "frame":
            host.send(value)
            if isinstance(value, Tx):
                txs.append(host.seq)
        elif kind == "bytes":
            host._decode(host.dongle.feed(value, host.now))
        elif kind == "sent":
            host._decode(host.dongle.sent(host.now))
        else:
            host.now += value
            host._decode(host.dongle.poll(host.now))
        assert host.dongle.queue_depth <= 4
        assert len(host.dongle.decoder._frame) <= limits.MAX_FRAME
    host.finish_all()
    # Every TX is answered exactly once, by TX_DONE or NAK with its seq (the plan never wraps seq).
    answers = Counter(seq for seq, m in host.transcript if isinstance(m, TxDone | Nak) and seq in txs)
    assert answers == Counter(txs)


# --- airtime and the ledger against the host's vectors, and the core under MicroPython ---------------

BATCH = """
import airtime, duty_cycle

def lora(cases):
    out = []
    for c in cases:
        args = (c["payload_len"], c["sf"], c["bandwidth_hz"], c["coding_rate"], c["preamble"])
        chip = c["chip"]
        out.append([airtime.lora_symbols_x4(*args, chip=chip), airtime.lora_airtime_us(*args, chip=chip)])
    return out

def ledgers(scenarios):
    out = []
    for s in scenarios:
        ledger = duty_cycle.Ledger(s["duty_cycle_ppm"], s["dwell_ms"], s["window_s"])
        got = []
        for step in s["steps"]:
            if step[0] == "record":
                ledger.record(step[1], step[2])
                got.append(None)
            elif step[0] == "used":
                got.append(ledger.used(step[1]))
            elif not ledger.fits(step[2]):
                got.append({"fits": False})
            else:
                now, airtime_us = step[1], step[2]
                can = ledger.can_send(now, airtime_us)
                got.append({"fits": True, "can_send": can, "ready_us": ledger.ready_at(now, airtime_us)})
        out.append(got)
    return out

RESULT = {
    "lora": lora(INPUT["vectors"]["lora"]),
    "espnow": [airtime.espnow_airtime_us(c["payload_len"]) for c in INPUT["vectors"]["espnow"]],
    "ledgers": ledgers(INPUT["vectors"]["ledgers"]),
    "conversation": run(INPUT["settings"], INPUT["steps"]),
}
print(json.dumps(RESULT))
"""


def conversation() -> tuple[dict[str, Any], list[list[Any]]]:
    """A conversation made with the host codec: detection, configuration, TX, refusals, RX, noise."""

    def frame(message: Message, seq: int) -> str:
        return encode(message, seq).hex()

    steps: list[list[Any]] = [
        ["feed", frame(Hello(), 1), 0],
        ["feed", frame(ConfigSet(((ConfigKey.TX_POWER_DBM, 30), (ConfigKey.CHANNEL, 3))), 2), 5],
        ["feed", frame(ConfigSet(((ConfigKey.FREQUENCY_HZ, 915_000_000),)), 3), 6],
        ["feed", frame(ConfigGet(), 4), 7],
        ["feed", frame(Tx(b"a"), 5) + frame(Tx(b"b"), 6) + frame(Tx(b"c"), 7), 10],
        ["sent", 50],
        ["poll", 5000],
        ["sent", 5050],
        ["busy", True],
        ["feed", frame(Tx(b"\xc0\xdb"), 8), 6000],
        ["poll", 7000],
        ["poll", 9000],
        ["busy", False],
        ["poll", 20000],
        ["sent", 20100],
        ["feed", frame(Tx(b"fail"), 9), 21000],
        ["heard", "c0ffee", -101, -30, 22000],
        ["feed", frame(StatusGet(), 10) + "00ffc0db" + frame(TxDone(1), 11)[:8], 23000],
        ["idle", 23200],
        ["feed", "c0" + frame(StatusGet(), 12)[2:], 23300],
    ]
    return {"radio": "sx126x", "queue_capacity": 2, "status_interval_s": 0}, steps


def cpython_results() -> dict[str, Any]:
    namespace: dict[str, Any] = {"json": json, "run": bench.run}
    printed: list[str] = []
    namespace["print"] = printed.append
    dongle_settings, dongle_steps = conversation()
    namespace["INPUT"] = {"vectors": VECTORS, "settings": dongle_settings, "steps": dongle_steps}
    exec(BATCH, namespace)
    return json.loads(printed[-1])  # type: ignore[no-any-return]


def micropython_results() -> dict[str, Any]:
    require_micropython()
    dongle_settings, dongle_steps = conversation()
    bench_source = (Path(__file__).parent / "dongle_bench.py").read_text(encoding="utf-8")
    inputs = {"vectors": VECTORS, "settings": dongle_settings, "steps": dongle_steps}
    return run_batch(bench_source + BATCH, inputs, timeout=300)  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["cpython", "micropython"])
def results(request: pytest.FixtureRequest) -> dict[str, Any]:
    return cpython_results() if request.param == "cpython" else micropython_results()


def test_lora_airtime_is_the_hosts_to_the_microsecond(results: dict[str, Any]) -> None:
    for case, (symbols_x4, airtime_us) in zip(VECTORS["lora"], results["lora"], strict=True):
        assert (symbols_x4, airtime_us) == (case["symbols_x4"], case["airtime_us"]), case
        assert 0 <= airtime_us - case["airtime_s"] * 1e6 < 1.001, case


def test_espnow_airtime_is_the_hosts(results: dict[str, Any]) -> None:
    for case, airtime_us in zip(VECTORS["espnow"], results["espnow"], strict=True):
        assert airtime_us == pytest.approx(case["airtime_us"], abs=1e-6)


def test_the_ledger_answers_as_the_hosts(results: dict[str, Any]) -> None:
    for scenario, got in zip(VECTORS["ledgers"], results["ledgers"], strict=True):
        for step, answer in zip(scenario["steps"], got, strict=True):
            if step[0] == "used":
                assert answer == pytest.approx(step[2], abs=1e-3), (scenario["name"], step)
            elif step[0] == "ask":
                host = step[3]
                assert answer["fits"] == host["fits"], (scenario["name"], step)
                if host["fits"]:
                    assert answer["can_send"] == host["can_send"], (scenario["name"], step)
                    assert host["ready_us"] - 1e-3 <= answer["ready_us"] <= host["ready_us"] + 2, (
                        scenario["name"],
                        step,
                    )


def test_the_conversation_reads_right_on_the_host(results: dict[str, Any]) -> None:
    decoder = Decoder()
    said = [[r.message for r in decoder.feed(bytes.fromhex(out))] for out in results["conversation"]["out"]]
    assert decoder.stats["frames"] == sum(decoder.stats.values())  # the host dropped nothing
    assert [type(m) for m in said[1]] == [Info, Credit]
    assert said[2] == [Config(((ConfigKey.TX_POWER_DBM, 22),))]
    assert [type(m) for m in said[3]] == [Log, Nak]
    assert [type(m) for m in said[5]] == [Nak, Credit] and said[5][0].reason == NakReason.QUEUE_FULL
    assert results["conversation"]["sent"] == ["61", "62", "c0db"]
    assert results["conversation"]["counters"]["lbt_deferred"] >= 1
    assert results["conversation"]["counters"]["nak_bad_config"] == 2  # the frequency, the failed send
    heard = 1 + [step[0] for step in conversation()[1]].index("heard")  # said[0] is the boot's
    assert said[heard] == [Rx(-101, -30, 22000, b"\xc0\xff\xee")]
    # The dongle dropped and counted what the host's own decoder drops from the same bytes.
    host = Decoder()
    for step in conversation()[1]:
        if step[0] == "feed":
            host.feed(bytes.fromhex(step[1]))
        elif step[0] == "idle":
            host.idle()
    assert results["conversation"]["stats"] == dict(host.stats)
    assert host.stats["runt"] == host.stats["bad_escape"] == host.stats["dropped_idle"] == 1


def test_micropython_runs_the_core_byte_for_byte_as_cpython() -> None:
    assert micropython_results()["conversation"] == cpython_results()["conversation"]
