"""Specification of link quality on a medium (agent.core.distance).

Distance comes from RSSI by the log-distance model ``RSSI = P_1m - 10 n log10(d)`` (defaults -59 dBm
and 2.7, as ESPresense); RSSI and SNR are smoothed per neighbour (EWMA); the reception ratio comes
from sequence numbers in a bounded window (or heard / expected per interval); and a new distance is
reported only when it moved by 25 % and by 1 m from the last report, so RSSI noise on a link at rest
does not churn the links record.
"""

from __future__ import annotations

import math
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK

from agent.core.distance import (
    MIN_DISTANCE,
    DistanceReporter,
    Ewma,
    ExpectedHeard,
    LinkQuality,
    LinkQualityError,
    PathLoss,
    ReceptionRatio,
)

# ---------------------------------------------------------------- the path-loss model


def test_the_defaults_are_espresense_s() -> None:
    model = PathLoss()
    assert (model.rssi_at_1m, model.exponent) == (-59.0, 2.7)
    assert model.distance(-59.0) == pytest.approx(1.0)
    assert model.distance(-86.0) == pytest.approx(10.0)  # 27 dB more loss: a decade
    assert model.distance(-113.0) == pytest.approx(100.0)


def test_free_space_loses_6_db_per_doubling() -> None:
    model = PathLoss(rssi_at_1m=-40.0, exponent=2.0)
    assert model.rssi(2.0) - model.rssi(4.0) == pytest.approx(20 * math.log10(2))
    assert model.distance(model.rssi(37.5)) == pytest.approx(37.5)


@given(rssi=st.floats(-140.0, 0.0), p1=st.floats(-80.0, -20.0), n=st.floats(1.5, 5.0))
@QUICK
def test_distance_and_rssi_are_inverse_and_weaker_means_farther(rssi: float, p1: float, n: float) -> None:
    model = PathLoss(p1, n)
    d = model.distance(rssi)
    assert d >= MIN_DISTANCE
    if d > MIN_DISTANCE:
        assert model.rssi(d) == pytest.approx(rssi)
    assert model.distance(rssi - 1.0) >= d


def test_a_signal_stronger_than_at_1m_is_closer_but_never_below_a_decimetre() -> None:
    assert PathLoss().distance(-30.0) == MIN_DISTANCE
    assert PathLoss().rssi(0.0) == PathLoss().rssi(MIN_DISTANCE)


@pytest.mark.parametrize(
    ("kwargs", "says"), [({"exponent": 0.5}, "give 1..6"), ({"rssi_at_1m": math.nan}, "finite power")]
)
def test_a_model_that_cannot_mean_anything_is_refused(kwargs: dict[str, float], says: str) -> None:
    with pytest.raises(LinkQualityError, match=says):
        PathLoss(**kwargs)
    with pytest.raises(LinkQualityError):
        PathLoss().distance(math.inf)
    with pytest.raises(LinkQualityError):
        PathLoss().rssi(-1.0)


# ---------------------------------------------------------------- smoothing


def test_the_average_starts_at_the_first_sample_and_moves_by_alpha() -> None:
    avg = Ewma(0.25)
    assert avg.value is None
    assert avg.update(-80.0) == -80.0
    assert avg.update(-60.0) == -75.0
    assert Ewma(1.0).update(3.0) == 3.0
    with pytest.raises(LinkQualityError, match=re.escape("(0, 1]")):
        Ewma(0.0)
    with pytest.raises(LinkQualityError):
        avg.update(math.nan)


def test_smoothing_shrinks_rssi_noise() -> None:
    rng = random.Random(3)
    avg = Ewma()
    samples = [-90.0 + rng.gauss(0.0, 4.0) for _ in range(2000)]
    smoothed = [avg.update(s) for s in samples][100:]
    spread = max(smoothed) - min(smoothed)
    assert spread < 0.5 * (max(samples) - min(samples))
    assert sum(smoothed) / len(smoothed) == pytest.approx(-90.0, abs=0.5)


# ---------------------------------------------------------------- reception ratio


def test_every_number_heard_is_a_ratio_of_one() -> None:
    ratio = ReceptionRatio()
    assert ratio.ratio is None
    for seq in range(100):
        ratio.heard(seq)
    assert ratio.ratio == 1.0


def test_one_lost_in_four_is_three_quarters() -> None:
    ratio = ReceptionRatio(window=64)
    for seq in range(400):
        if seq % 4:
            ratio.heard(seq)
    assert ratio.ratio == pytest.approx(0.75, abs=1 / 64)


def test_duplicates_count_once_and_late_frames_fill_their_place() -> None:
    ratio = ReceptionRatio(window=8)
    for seq in (0, 1, 3, 3, 3):
        ratio.heard(seq)
    assert ratio.ratio == pytest.approx(3 / 4)
    ratio.heard(2)  # late
    assert ratio.ratio == 1.0


def test_the_window_is_bounded_and_slides() -> None:
    ratio = ReceptionRatio(window=16)
    for seq in range(16):
        ratio.heard(seq)
    ratio.heard(31)  # 15 lost
    assert ratio.ratio == pytest.approx(1 / 16)
    ratio.heard(5)  # far behind the window: the sender restarted
    assert ratio.ratio == 1.0


def test_sequence_numbers_wrap() -> None:
    ratio = ReceptionRatio(window=8, modulus=256)
    for seq in (252, 253, 254, 255, 0, 1, 2, 3):
        ratio.heard(seq)
    assert ratio.ratio == 1.0
    ratio.heard(5)
    assert ratio.ratio == pytest.approx(7 / 8)


@given(seqs=st.lists(st.integers(0, 200), max_size=300))
@QUICK
def test_the_ratio_is_always_a_share(seqs: list[int]) -> None:
    ratio = ReceptionRatio(window=32, modulus=256)
    for seq in seqs:
        ratio.heard(seq)
        value = ratio.ratio
        assert value is not None
        assert 0 < value <= 1


def test_without_sequence_numbers_heard_over_expected_is_smoothed() -> None:
    est = ExpectedHeard(alpha=0.5)
    assert est.ratio is None
    assert est.interval(4, 4) == 1.0
    assert est.interval(4, 2) == 0.75
    assert est.interval(2, 5) == pytest.approx(0.875)  # more than expected counts as all
    with pytest.raises(LinkQualityError):
        est.interval(0, 0)
    with pytest.raises(LinkQualityError, match="half the modulus"):
        ReceptionRatio(window=0)
    with pytest.raises(LinkQualityError, match=r"outside 0\.\.65535"):
        ReceptionRatio().heard(70000)


# ---------------------------------------------------------------- when a distance is reported


def test_the_first_distance_is_reported_then_only_real_moves() -> None:
    rep = DistanceReporter()
    assert rep.offer(10.0) == 10.0
    assert rep.offer(15.0) is None  # 33 % of 15: noise
    assert rep.offer(6.5) is None  # 35 % of 10
    assert rep.offer(17.0) == 17.0  # 41 % of 17
    assert rep.reported == 17.0


def test_near_neighbours_need_a_whole_metre() -> None:
    rep = DistanceReporter()
    rep.offer(0.5)
    assert rep.offer(1.2) is None  # 58 %, but 0.7 m
    assert rep.offer(1.6) == 1.6  # 69 % and 1.1 m


@pytest.mark.parametrize("seed", range(5))
def test_rssi_noise_on_a_link_at_rest_does_not_churn_the_links_record(seed: int) -> None:
    # A link at 40 m with 3 dB (1 sigma) of RSSI noise, 500 frames: reported once or twice.
    model = PathLoss()
    rng = random.Random(seed)
    link = LinkQuality(model)
    reports = [link.heard(float(t), model.rssi(40.0) + rng.gauss(0.0, 3.0)) for t in range(500)]
    assert 1 <= len([r for r in reports if r is not None]) <= 2
    assert link.distance == pytest.approx(40.0, rel=0.3)


def test_a_neighbour_that_moves_is_reported_as_it_moves() -> None:
    model = PathLoss()
    link = LinkQuality(model)
    reports = []
    for step in range(200):
        d = 5.0 + step  # walks away, 1 m per frame
        r = link.heard(float(step), model.rssi(d), snr=5.0, seq=step)
        if r is not None:
            reports.append(r)
    assert len(reports) >= 5
    assert reports == sorted(reports)
    # Never further behind than the threshold plus a few frames of smoothing.
    assert link.distance == pytest.approx(204.0, rel=0.1)
    assert reports[-1] >= 0.55 * 204.0
    assert link.reception.ratio == 1.0
    assert link.snr.value == 5.0
    assert link.heard_at == 199.0


def test_report_thresholds_that_cannot_mean_anything_are_refused() -> None:
    with pytest.raises(LinkQualityError, match="0 < ratio < 1"):
        DistanceReporter(ratio=1.5)
