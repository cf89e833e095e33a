"""Specification of a link's session (agent.core.session): the key schedule and sealed frames.

Rules covered: both ends derive the same two keys, one per direction, from their
offers, keys and nonces, and anything else (another nonce, another offer, a
third party's key) derives other keys; a sealed frame opens to its inner frame
exactly once, whatever byte of it is changed it is refused as ``bad_tag`` (or
``malformed`` when too short); a replay is ``replayed``; frames reordered within
the window are each accepted once, one behind it is ``too_old``; a forged frame
with a far counter does not move the window; a frame sealed in one direction
does not open in the other; authentication-only frames carry the inner frame
in the clear and are as strict; a small-order offer agrees nothing.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.limits import REPLAY_WINDOW
from agent.core.reasons import SessionReason
from agent.core.session import (
    ReplayWindow,
    Session,
    SessionError,
    SessionOffer,
    derive_session,
    is_sealed_frame,
)
from agent.core.wire import FRAME_AUTHENTICATED, FRAME_SEALED, SEALED_OVERHEAD

KEY_A, KEY_B = b"\x01" * 32, b"\x02" * 32
NONCE_A, NONCE_B = b"\xaa" * 16, b"\xbb" * 16


def pair(encrypt: bool = True, seed: int = 1) -> tuple[Session, Session]:
    """A's and B's sessions of one link, from fresh offers."""
    rng = random.Random(seed)
    offer_a, offer_b = SessionOffer.from_seed(rng.randbytes(32)), SessionOffer.from_seed(rng.randbytes(32))
    a = derive_session(
        offer_a,
        offer_b.public,
        own_key=KEY_A,
        remote_key=KEY_B,
        own_nonce=NONCE_A,
        remote_nonce=NONCE_B,
        encrypt=encrypt,
    )
    b = derive_session(
        offer_b,
        offer_a.public,
        own_key=KEY_B,
        remote_key=KEY_A,
        own_nonce=NONCE_B,
        remote_nonce=NONCE_A,
        encrypt=encrypt,
    )
    return a, b


def refused(session: Session, frame: bytes) -> SessionReason:
    with pytest.raises(SessionError) as caught:
        session.open(frame)
    return caught.value.reason


inner_frames = st.binary(min_size=1, max_size=300)


@given(inner_frames, st.booleans())
def test_a_sealed_frame_opens_to_its_inner_frame_at_the_other_end(inner: bytes, encrypt: bool) -> None:
    a, b = pair(encrypt)
    frame = a.seal(inner)
    assert len(frame) == len(inner) + SEALED_OVERHEAD
    assert frame[0] == (FRAME_SEALED if encrypt else FRAME_AUTHENTICATED) and is_sealed_frame(frame)
    assert b.open(frame) == inner
    assert a.open(b.seal(inner)) == inner


@given(inner_frames)
def test_an_encrypted_frame_does_not_show_its_inner_frame_and_an_authenticated_one_does(inner: bytes) -> None:
    inner = b"metadata:" + inner
    encrypted, _ = pair(encrypt=True)
    authenticated, _ = pair(encrypt=False)
    assert b"metadata:" not in encrypted.seal(inner)
    assert inner in authenticated.seal(inner)


@settings(max_examples=300)
@given(inner_frames, st.data(), st.booleans())
def test_changing_any_byte_of_a_sealed_frame_gets_it_refused(
    inner: bytes, data: st.DataObject, encrypt: bool
) -> None:
    a, b = pair(encrypt)
    frame = bytearray(a.seal(inner))
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] ^= data.draw(st.integers(1, 255))
    reason = refused(b, bytes(frame))
    # The type byte changed to a non-seal type is malformed; anything else fails the tag.
    assert reason in (SessionReason.BAD_TAG, SessionReason.MALFORMED)
    assert reason is SessionReason.BAD_TAG or at == 0
    assert b.open(a.seal(inner)) == inner  # the link goes on


@given(inner_frames, st.integers(0, SEALED_OVERHEAD - 1))
def test_a_frame_too_short_for_a_seal_is_malformed(inner: bytes, length: int) -> None:
    a, b = pair()
    assert refused(b, a.seal(inner)[:length]) in (SessionReason.MALFORMED,)


@given(st.lists(inner_frames, min_size=1, max_size=10), st.data())
def test_a_replayed_frame_is_refused_however_late_it_comes(inners: list[bytes], data: st.DataObject) -> None:
    a, b = pair()
    frames = [a.seal(inner) for inner in inners]
    for frame in frames:
        b.open(frame)
    replay = data.draw(st.sampled_from(frames))
    assert refused(b, replay) is SessionReason.REPLAYED


@given(st.permutations(range(REPLAY_WINDOW)))
def test_frames_reordered_within_the_window_are_each_accepted_once(order: list[int]) -> None:
    a, b = pair()
    frames = [a.seal(bytes([i % 256])) for i in range(REPLAY_WINDOW)]
    assert [b.open(frames[i]) for i in order] == [bytes([i % 256]) for i in order]
    assert {refused(b, frames[i]) for i in order} == {SessionReason.REPLAYED}


def test_a_frame_older_than_the_window_is_refused_as_too_old() -> None:
    a, b = pair()
    first = a.seal(b"first")
    for _ in range(REPLAY_WINDOW):
        b.open(a.seal(b"later"))
    assert refused(b, first) is SessionReason.TOO_OLD


def test_a_frame_just_inside_the_window_still_opens() -> None:
    a, b = pair()
    first = a.seal(b"first")
    for _ in range(REPLAY_WINDOW - 1):
        b.open(a.seal(b"later"))
    assert b.open(first) == b"first"


def test_a_forged_frame_with_a_far_counter_does_not_move_the_window() -> None:
    a, b = pair()
    pending = a.seal(b"in flight")
    forged = bytes([FRAME_SEALED]) + (2**63).to_bytes(8, "big") + os.urandom(40)
    assert refused(b, forged) is SessionReason.BAD_TAG
    assert b.open(pending) == b"in flight"


def test_a_frame_sealed_by_one_end_does_not_open_at_the_same_end() -> None:
    a, _ = pair()
    assert refused(a, a.seal(b"reflected")) is SessionReason.BAD_TAG


@given(st.sampled_from(["nonce", "offer", "key"]))
def test_a_session_with_anything_else_in_its_schedule_opens_nothing(change: str) -> None:
    rng = random.Random(7)
    offer_a, offer_b = SessionOffer.from_seed(rng.randbytes(32)), SessionOffer.from_seed(rng.randbytes(32))
    a = derive_session(
        offer_a, offer_b.public, own_key=KEY_A, remote_key=KEY_B, own_nonce=NONCE_A, remote_nonce=NONCE_B
    )
    other_offer = SessionOffer.from_seed(rng.randbytes(32))
    b = derive_session(
        other_offer if change == "offer" else offer_b,
        offer_a.public,
        own_key=KEY_B,
        remote_key=b"\x03" * 32 if change == "key" else KEY_A,
        own_nonce=NONCE_B,
        remote_nonce=b"\xcc" * 16 if change == "nonce" else NONCE_A,
    )
    assert refused(b, a.seal(b"frame")) is SessionReason.BAD_TAG


def test_sessions_of_two_links_between_the_same_peers_do_not_open_each_others_frames() -> None:
    a1, _ = pair(seed=1)
    _, b2 = pair(seed=2)
    assert refused(b2, a1.seal(b"frame")) is SessionReason.BAD_TAG


def test_a_small_order_offer_agrees_no_key() -> None:
    offer = SessionOffer.from_seed(bytes(range(32)))
    with pytest.raises(ValueError):
        derive_session(
            offer, bytes(32), own_key=KEY_A, remote_key=KEY_B, own_nonce=NONCE_A, remote_nonce=NONCE_B
        )


@given(st.lists(st.integers(0, 200), max_size=50))
def test_the_replay_window_accepts_each_counter_once_and_never_one_behind_it(counters: list[int]) -> None:
    window = ReplayWindow()
    accepted: set[int] = set()
    for counter in counters:
        try:
            window.check(counter)
        except SessionError as exc:
            assert counter in accepted or counter <= window.highest - REPLAY_WINDOW
            assert exc.reason in (SessionReason.REPLAYED, SessionReason.TOO_OLD)
            continue
        assert counter not in accepted
        assert counter > window.highest - REPLAY_WINDOW
        window.accept(counter)
        accepted.add(counter)
