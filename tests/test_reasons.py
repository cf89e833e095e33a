"""Specification of the counter names behind rejections and closes (agent.core.reasons).

Rules covered: every :class:`RejectReason` is counted as
``records.rejected.<value>`` or ``handshake.rejected.<value>``; every
:class:`CloseReason` names its own counter (no two share one) and a log text.
"""

from __future__ import annotations

import pytest

from agent.core.errors import RecordError
from agent.core.reasons import CloseReason, RejectReason, SessionReason


@pytest.mark.parametrize("reason", list(RejectReason), ids=str)
def test_a_rejected_record_is_counted_under_records_rejected_and_its_value(reason: RejectReason) -> None:
    assert reason.record_counter == f"records.rejected.{reason.value}"


@pytest.mark.parametrize("reason", list(RejectReason), ids=str)
def test_a_rejected_hello_card_is_counted_under_handshake_rejected_and_its_value(
    reason: RejectReason,
) -> None:
    assert reason.handshake_counter == f"handshake.rejected.{reason.value}"


def test_reject_reason_values_never_change() -> None:
    assert {r.name: r.value for r in RejectReason} == {
        "OVERSIZED": "oversized",
        "MALFORMED": "malformed",
        "KEY_MISMATCH": "key_mismatch",
        "OWN_RECORD": "own_record",
        "STALE": "stale",
        "EXPIRED": "expired",
        "CAPACITY": "capacity",
        "BAD_SIGNATURE": "bad_signature",
        "SELF": "self",
        "BAD_PROOF": "bad_proof",
        "NOT_FOR_LEAF": "not_for_leaf",
        "UNCERTIFIED": "uncertified",
        "WRONG_KEY": "wrong_key",
        "WRONG_KIND": "wrong_kind",
        "REPLAYED": "replayed",
    }


def test_a_reject_reason_is_its_value_as_a_string() -> None:
    assert RejectReason("stale") is RejectReason.STALE
    assert f"{RejectReason.STALE}" == "stale"


def test_a_record_error_carries_its_reason_from_a_string_too() -> None:
    assert RecordError("expired", "detail").reason is RejectReason.EXPIRED
    with pytest.raises(ValueError):
        RecordError("no_such_reason", "detail")


def test_every_close_reason_has_its_own_counter() -> None:
    counters = [reason.counter for reason in CloseReason]
    assert len(set(counters)) == len(counters)


@pytest.mark.parametrize("reason", list(CloseReason), ids=lambda r: r.name)
def test_every_close_reason_has_a_dotted_counter_and_a_log_text(reason: CloseReason) -> None:
    assert reason.counter.split(".")[0] in ("links", "handshake")
    assert reason.text and reason.text != reason.counter


def test_close_counters_never_change() -> None:
    assert {r.name: r.counter for r in CloseReason} == {
        "DENIED_LOCALLY": "links.denied_locally",
        "DENIED_BY_REMOTE": "links.denied_by_remote",
        "DEAD": "links.dead",
        "HANDSHAKE_TIMEOUT": "links.handshake_timeout",
        "VERSION_MISMATCH": "handshake.version_mismatch",
        "HANDSHAKE_REFUSED": "handshake.refused",
        "BAD_PROOF": "handshake.rejected.bad_proof",
        "UNTRUSTED": "handshake.untrusted",
        "REFUSED_BY_REMOTE": "handshake.refused_by_remote",
        "WITHDRAWN": "links.withdrawn",
        "UNSEALED": "handshake.unsealed",
    }


def test_a_bad_proof_close_is_counted_as_the_bad_proof_handshake_rejection() -> None:
    assert CloseReason.BAD_PROOF.counter == RejectReason.BAD_PROOF.handshake_counter


def test_no_other_close_counter_collides_with_a_rejection_counter() -> None:
    rejections = {r.record_counter for r in RejectReason} | {r.handshake_counter for r in RejectReason}
    assert {r.counter for r in CloseReason} & rejections == {CloseReason.BAD_PROOF.counter}


def test_a_frame_a_sealed_link_drops_is_counted_under_session_rejected_and_its_value() -> None:
    assert {r.name: r.counter for r in SessionReason} == {
        "MALFORMED": "session.rejected.malformed",
        "BAD_TAG": "session.rejected.bad_tag",
        "REPLAYED": "session.rejected.replayed",
        "TOO_OLD": "session.rejected.too_old",
        "NO_SESSION": "session.rejected.no_session",
        "UNSEALED": "session.rejected.unsealed",
    }
