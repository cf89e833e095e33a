"""Specification of one link's handshake state (agent.core.handshake), alone.

Rules covered: the transition table is the only way between phases (every
pair outside it raises :class:`TransitionError`); retransmission starts after
``retry`` (or the slow link's resend time), doubles, and is capped at the
handshake timeout; HELLO is resent until the remote proved, then ``ACCEPT 1``
only while ``ACCEPTED``; a repeated HELLO is answered with the stored PROOF
(plus ACCEPT once allowed) only for the remote's own nonce; a CARD_REQUEST is
answered only while our HELLO is by reference and the remote has not proved;
:meth:`Handshake.allow` before and after the remote's ACCEPT.
"""

from __future__ import annotations

import itertools

import pytest
from strategies import key_pair

from agent.core.handshake import TRANSITIONS, Handshake, Phase, TransitionError
from agent.core.records import Record, make_card, sign_record
from agent.core.wire import Accept

NONCE = b"n" * 16
REMOTE_NONCE = b"r" * 16
OTHER_NONCE = b"o" * 16
HELLO = b"hello-by-value"
PROOF = b"our-proof-message"
TIMEOUT = 30.0
RETRY = 1.0

ACCEPT = Accept().encode()
ACCEPT_ASK_BACK = Accept(ask_back=True).encode()


def remote_card() -> Record:
    private, public = key_pair(7)
    return sign_record(private, public, 1, 2_000_000_000, make_card("remote", "linux", "0.1", {}))


def fresh(by_reference: bool = False, now: float = 0.0) -> Handshake:
    hs = Handshake(NONCE, deadline=now + TIMEOUT, retry=RETRY)
    hs.sent_hello(HELLO, by_reference, resend_after=0.0, now=now)
    return hs


def handshake_in(phase: Phase, by_reference: bool = False) -> Handshake:
    """A handshake driven to ``phase`` through its own steps (the remote never ACCEPTs)."""
    hs = fresh(by_reference)
    paths: dict[Phase, list[Phase | str]] = {
        Phase.HELLO_SENT: [],
        Phase.CARD_REQUESTED: [Phase.CARD_REQUESTED],
        Phase.PROVING: ["card"],
        Phase.DECIDING: ["card", Phase.DECIDING],
        Phase.ACCEPTED: ["card", Phase.DECIDING, "allow"],
        Phase.ESTABLISHED: ["card", Phase.DECIDING, "allow", Phase.ESTABLISHED],
        Phase.CLOSING: [Phase.CLOSING],
    }
    for step in paths[phase]:
        if step == "card":
            hs.card_accepted(remote_card(), REMOTE_NONCE, PROOF)
        elif step == "allow":
            assert hs.allow() is False
        else:
            assert isinstance(step, Phase)
            hs.move(step)
    assert hs.phase is phase
    return hs


# ---------------------------------------------------------------- the transition table

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets, key=lambda p: p.value)]
FORBIDDEN = [(a, b) for a, b in itertools.product(Phase, Phase) if b not in TRANSITIONS[a]]


def test_the_table_names_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)


@pytest.mark.parametrize(("start", "to"), ALLOWED, ids=lambda p: p.name)
def test_every_transition_in_the_table_is_made(start: Phase, to: Phase) -> None:
    hs = fresh()
    hs.phase = start
    hs.move(to)
    assert hs.phase is to


@pytest.mark.parametrize(("start", "to"), FORBIDDEN, ids=lambda p: p.name)
def test_every_transition_not_in_the_table_raises_and_leaves_the_phase(start: Phase, to: Phase) -> None:
    hs = fresh()
    hs.phase = start
    with pytest.raises(TransitionError, match=f"{start.name} to {to.name}"):
        hs.move(to)
    assert hs.phase is start


def test_transition_error_is_an_assertion_not_a_wire_error() -> None:
    assert issubclass(TransitionError, AssertionError)


def test_every_phase_but_closing_may_close_and_closing_is_final() -> None:
    for phase in Phase:
        if phase is not Phase.CLOSING:
            assert Phase.CLOSING in TRANSITIONS[phase]
    assert TRANSITIONS[Phase.CLOSING] == frozenset()


def test_every_phase_is_reachable_from_hello_sent() -> None:
    seen = {Phase.HELLO_SENT}
    frontier = [Phase.HELLO_SENT]
    while frontier:
        nxt = [b for a in frontier for b in TRANSITIONS[a] if b not in seen]
        seen.update(nxt)
        frontier = nxt
    assert seen == set(Phase)


def test_a_new_handshake_is_pending_in_hello_sent() -> None:
    hs = Handshake(NONCE, deadline=30.0, retry=RETRY)
    assert hs.phase is Phase.HELLO_SENT
    assert hs.pending and not hs.established and not hs.closing
    assert not hs.remote_proved and not hs.local_allowed


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
def test_phase_predicates(phase: Phase) -> None:
    hs = handshake_in(phase)
    assert hs.pending == (phase not in (Phase.ESTABLISHED, Phase.CLOSING))
    assert hs.established == (phase is Phase.ESTABLISHED)
    assert hs.closing == (phase is Phase.CLOSING)
    assert hs.remote_proved == (phase in (Phase.DECIDING, Phase.ACCEPTED, Phase.ESTABLISHED))
    assert hs.local_allowed == (phase in (Phase.ACCEPTED, Phase.ESTABLISHED))


def test_card_accepted_keeps_the_remote_card_nonce_and_our_proof_and_moves_to_proving() -> None:
    hs = fresh()
    card = remote_card()
    hs.card_accepted(card, REMOTE_NONCE, PROOF)
    assert hs.phase is Phase.PROVING
    assert hs.remote_key == card.public_key
    assert hs.remote_card == card
    assert hs.remote_nonce == REMOTE_NONCE
    assert hs.proof == PROOF


def test_card_accepted_after_a_card_request_moves_to_proving_too() -> None:
    hs = handshake_in(Phase.CARD_REQUESTED, by_reference=True)
    hs.card_accepted(remote_card(), REMOTE_NONCE, PROOF)
    assert hs.phase is Phase.PROVING


# ---------------------------------------------------------------- retransmission


def test_the_first_resend_is_due_retry_after_the_hello() -> None:
    hs = Handshake(NONCE, deadline=30.0, retry=RETRY)
    hs.sent_hello(HELLO, False, resend_after=0.2, now=5.0)
    assert hs.retry_every == RETRY
    assert hs.retry_at == 5.0 + RETRY


def test_a_slow_link_waits_its_resend_time_when_longer_than_retry() -> None:
    hs = Handshake(NONCE, deadline=300.0, retry=RETRY)
    hs.sent_hello(HELLO, False, resend_after=12.5, now=5.0)
    assert hs.retry_at == 5.0 + 12.5


def test_retransmission_doubles_the_interval_and_caps_it_at_the_timeout() -> None:
    hs = fresh()
    now = hs.retry_at
    intervals = []
    for _ in range(8):
        assert hs.retransmission(now, TIMEOUT) == HELLO
        intervals.append(hs.retry_every)
        assert hs.retry_at == now + hs.retry_every
        now = hs.retry_at
    assert intervals == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_a_slow_link_interval_doubles_from_its_resend_time() -> None:
    hs = Handshake(NONCE, deadline=300.0, retry=RETRY)
    hs.sent_hello(HELLO, False, resend_after=10.0, now=0.0)
    hs.retransmission(10.0, 300.0)
    assert hs.retry_every == 20.0
    hs.retransmission(30.0, 300.0)
    assert hs.retry_every == 40.0


def test_a_new_hello_form_restarts_the_backoff() -> None:
    hs = fresh(by_reference=True)
    for t in (1.0, 3.0, 7.0):
        hs.retransmission(t, TIMEOUT)
    assert hs.retry_every == 8.0
    hs.sent_hello(b"hello-with-card", False, resend_after=0.0, now=8.0)
    assert hs.retry_every == RETRY
    assert hs.retry_at == 9.0
    assert hs.retransmission(9.0, TIMEOUT) == b"hello-with-card"


@pytest.mark.parametrize(
    "phase", [Phase.HELLO_SENT, Phase.CARD_REQUESTED, Phase.PROVING], ids=lambda p: p.name
)
def test_hello_is_resent_until_the_remote_proved(phase: Phase) -> None:
    hs = handshake_in(phase)
    assert hs.retransmission(1.0, TIMEOUT) == HELLO


def test_nothing_is_resent_while_the_local_handler_decides() -> None:
    hs = handshake_in(Phase.DECIDING)
    assert hs.retransmission(1.0, TIMEOUT) is None


def test_accept_1_is_resent_while_accepted_and_the_remote_has_not_accepted() -> None:
    hs = handshake_in(Phase.ACCEPTED)
    assert hs.retransmission(1.0, TIMEOUT) == ACCEPT_ASK_BACK
    assert hs.retransmission(3.0, TIMEOUT) == ACCEPT_ASK_BACK


def test_accept_1_is_not_resent_once_the_remote_accepted() -> None:
    hs = handshake_in(Phase.ACCEPTED)
    hs.on_accept(ask_back=False)
    assert hs.retransmission(1.0, TIMEOUT) is None


def test_nothing_is_resent_once_established() -> None:
    assert handshake_in(Phase.ESTABLISHED).retransmission(1.0, TIMEOUT) is None


# ---------------------------------------------------------------- repeated HELLO


@pytest.mark.parametrize("phase", [Phase.HELLO_SENT, Phase.CARD_REQUESTED], ids=lambda p: p.name)
def test_a_repeated_hello_before_our_proof_exists_gets_no_answer(phase: Phase) -> None:
    assert handshake_in(phase).answer_to_repeated_hello(REMOTE_NONCE) == []


@pytest.mark.parametrize("phase", [Phase.PROVING, Phase.DECIDING], ids=lambda p: p.name)
def test_a_repeated_hello_is_answered_with_the_stored_proof(phase: Phase) -> None:
    assert handshake_in(phase).answer_to_repeated_hello(REMOTE_NONCE) == [PROOF]


@pytest.mark.parametrize("phase", [Phase.ACCEPTED, Phase.ESTABLISHED], ids=lambda p: p.name)
def test_a_repeated_hello_once_allowed_is_answered_with_proof_and_accept(phase: Phase) -> None:
    assert handshake_in(phase).answer_to_repeated_hello(REMOTE_NONCE) == [PROOF, ACCEPT]


@pytest.mark.parametrize(
    "phase", [Phase.PROVING, Phase.DECIDING, Phase.ACCEPTED, Phase.ESTABLISHED], ids=lambda p: p.name
)
def test_a_hello_with_another_nonce_gets_no_answer(phase: Phase) -> None:
    assert handshake_in(phase).answer_to_repeated_hello(OTHER_NONCE) == []


# ---------------------------------------------------------------- CARD_REQUEST


@pytest.mark.parametrize(
    "phase", [Phase.HELLO_SENT, Phase.CARD_REQUESTED, Phase.PROVING], ids=lambda p: p.name
)
def test_a_card_request_is_answered_while_by_reference_and_unproved(phase: Phase) -> None:
    assert handshake_in(phase, by_reference=True).may_send_card()


@pytest.mark.parametrize("phase", list(Phase)[:3], ids=lambda p: p.name)
def test_a_card_request_is_not_answered_when_the_hello_carried_the_card(phase: Phase) -> None:
    assert not handshake_in(phase, by_reference=False).may_send_card()


@pytest.mark.parametrize("phase", [Phase.DECIDING, Phase.ACCEPTED, Phase.ESTABLISHED], ids=lambda p: p.name)
def test_a_card_request_is_not_answered_once_the_remote_proved(phase: Phase) -> None:
    assert not handshake_in(phase, by_reference=True).may_send_card()


def test_a_card_request_is_answered_once_the_hello_then_carries_the_card() -> None:
    hs = fresh(by_reference=True)
    assert hs.may_send_card()
    hs.sent_hello(b"hello-with-card", by_reference=False, resend_after=0.0, now=0.5)
    assert not hs.may_send_card()


# ---------------------------------------------------------------- ACCEPT and allow()


def test_allow_before_the_remote_accept_moves_to_accepted() -> None:
    hs = handshake_in(Phase.DECIDING)
    assert hs.allow() is False
    assert hs.phase is Phase.ACCEPTED


def test_the_remote_accept_after_ours_establishes() -> None:
    hs = handshake_in(Phase.ACCEPTED)
    assert hs.on_accept(ask_back=False) == ([], True)
    assert hs.remote_allowed


def test_an_accept_1_after_ours_is_answered_with_a_plain_accept() -> None:
    hs = handshake_in(Phase.ACCEPTED)
    answer, establish = hs.on_accept(ask_back=True)
    assert answer == [ACCEPT]
    assert ACCEPT_ASK_BACK not in answer
    assert establish


def test_the_remote_accept_before_ours_does_not_establish_yet_and_is_not_answered() -> None:
    hs = handshake_in(Phase.DECIDING)
    assert hs.on_accept(ask_back=True) == ([], False)
    assert hs.phase is Phase.DECIDING
    assert hs.remote_allowed


def test_allow_after_the_remote_accept_says_establish_now() -> None:
    hs = handshake_in(Phase.DECIDING)
    hs.on_accept(ask_back=False)
    assert hs.allow() is True
    hs.move(Phase.ESTABLISHED)  # what the engine does next: a table transition
    assert hs.established


def test_an_accept_1_on_an_established_link_is_answered_with_a_plain_accept() -> None:
    hs = handshake_in(Phase.ESTABLISHED)
    answer, establish = hs.on_accept(ask_back=True)
    assert answer == [ACCEPT]
    assert establish is False  # already established: nothing to do again


@pytest.mark.parametrize("phase", [Phase.HELLO_SENT, Phase.PROVING, Phase.ESTABLISHED], ids=lambda p: p.name)
def test_allow_outside_deciding_is_a_transition_error(phase: Phase) -> None:
    hs = handshake_in(phase)
    with pytest.raises(TransitionError):
        hs.allow()
