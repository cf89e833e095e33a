"""Specification of messages into frames and back (agent.core.framing), alone.

Rules covered: whatever the MTU and the size, the fragmenter's frames fit
the MTU and the reassembler gives back exactly the message, in any fragment
order; message ids advance per link; at most
:data:`MAX_PARTIAL_MESSAGES_PER_LINK` partials are kept, the oldest evicted
and counted; a fragment announcing a message over 64 KiB is refused before
anything is buffered; :meth:`Reassembler.sweep` drops partials past their
allowance; frames over the MTU, empty, of an unknown kind or with a bad
header are counted as ``frames.malformed``.
"""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK

from agent.core.framing import Fragmenter, Reassembler
from agent.core.limits import MAX_MESSAGE_BYTES, MAX_PARTIAL_MESSAGES_PER_LINK, MIN_LINK_MTU
from agent.core.wire import FRAGMENT_HEADER_BYTES, FRAME_FRAGMENT, FRAME_WHOLE, max_message_bytes

NOW = 100.0


def reassembler(mtu: int) -> tuple[Reassembler, collections.Counter[str]]:
    stats: collections.Counter[str] = collections.Counter()
    return Reassembler(mtu, stats), stats


def fragment(msg_id: int, index: int, count: int, chunk: bytes = b"x") -> bytes:
    return bytes([FRAME_FRAGMENT, msg_id, index, count]) + chunk


def fragments(message: bytes, mtu: int, fragmenter: Fragmenter | None = None) -> list[bytes]:
    return (fragmenter or Fragmenter(mtu)).frames(message)


# ---------------------------------------------------------------- round trip


@QUICK
@given(mtu=st.integers(MIN_LINK_MTU, 1500), data=st.data())
def test_fragments_fit_the_mtu_and_reassemble_to_the_message_in_any_order(
    mtu: int, data: st.DataObject
) -> None:
    size = data.draw(st.integers(0, min(max_message_bytes(mtu), 20_000)))
    message = random.Random(size).randbytes(size)
    frames = fragments(message, mtu)
    assert all(len(frame) <= mtu for frame in frames)
    order = data.draw(st.permutations(range(len(frames))))
    box, stats = reassembler(mtu)
    results = [box.message(frames[i], NOW) for i in order]
    assert results[:-1] == [None] * (len(frames) - 1)
    assert results[-1] == message
    assert len(box) == 0
    assert not stats


def test_a_whole_frame_is_its_message_at_once() -> None:
    box, _ = reassembler(100)
    assert box.message(bytes([FRAME_WHOLE]) + b"hello", NOW) == b"hello"
    assert len(box) == 0


@pytest.mark.parametrize("mtu", [1400, 4096])
def test_a_message_of_exactly_64_kib_reassembles(mtu: int) -> None:
    message = random.Random(mtu).randbytes(MAX_MESSAGE_BYTES)
    box, stats = reassembler(mtu)
    results = [box.message(frame, NOW) for frame in fragments(message, mtu)]
    assert results[-1] == message
    assert not stats


def test_message_ids_advance_per_message_and_wrap_at_256() -> None:
    fragmenter = Fragmenter(40)
    ids = [fragments(b"m" * 100, 40, fragmenter)[0][1] for _ in range(258)]
    assert ids[:3] == [0, 1, 2]
    assert ids[255:] == [255, 0, 1]


def test_whole_frames_use_up_a_message_id_too() -> None:
    fragmenter = Fragmenter(40)
    fragmenter.frames(b"small")
    assert fragmenter.frames(b"m" * 100)[0][1] == 1


def test_interleaved_messages_reassemble_independently() -> None:
    mtu = 40
    fragmenter = Fragmenter(mtu)
    one, other = b"1" * 100, b"2" * 150
    a, b = fragments(one, mtu, fragmenter), fragments(other, mtu, fragmenter)
    box, _ = reassembler(mtu)
    done = [
        m for pair in zip(a, b, strict=False) for m in (box.message(pair[0], NOW), box.message(pair[1], NOW))
    ]
    done += [box.message(frame, NOW) for frame in b[len(a) :]]
    assert [m for m in done if m is not None] == [one, other]


def test_a_restarted_message_id_with_another_count_replaces_the_partial() -> None:
    box, stats = reassembler(40)
    box.message(fragment(7, 0, 3), NOW)
    assert box.message(fragment(7, 0, 2, b"a"), NOW) is None
    assert box.message(fragment(7, 1, 2, b"b"), NOW) == b"ab"
    assert stats["frames.reassembly_evicted"] == 0


# ---------------------------------------------------------------- bounds


def test_at_most_max_partials_are_kept_and_the_oldest_is_evicted_and_counted() -> None:
    box, stats = reassembler(40)
    for msg_id in range(MAX_PARTIAL_MESSAGES_PER_LINK):
        box.message(fragment(msg_id, 0, 2, b"a"), NOW + msg_id)
    assert len(box) == MAX_PARTIAL_MESSAGES_PER_LINK
    box.message(fragment(99, 0, 2, b"a"), NOW + 10)
    assert len(box) == MAX_PARTIAL_MESSAGES_PER_LINK
    assert stats["frames.reassembly_evicted"] == 1
    assert box.message(fragment(1, 1, 2, b"b"), NOW + 11) == b"ab"  # the others are kept
    assert box.message(fragment(0, 1, 2, b"b"), NOW + 11) is None  # the oldest, id 0, is gone


def test_a_fragment_of_a_kept_partial_evicts_nothing() -> None:
    box, stats = reassembler(40)
    for msg_id in range(MAX_PARTIAL_MESSAGES_PER_LINK):
        box.message(fragment(msg_id, 0, 3), NOW)
    box.message(fragment(2, 1, 3), NOW)
    assert stats["frames.reassembly_evicted"] == 0


@pytest.mark.parametrize("mtu", [1400, 4096])
def test_a_fragment_announcing_over_64_kib_is_refused_before_buffering(mtu: int) -> None:
    chunk = mtu - FRAGMENT_HEADER_BYTES
    too_many = -(-MAX_MESSAGE_BYTES // chunk) + 1  # even its smallest size exceeds 64 KiB
    assert (too_many - 1) * chunk >= MAX_MESSAGE_BYTES
    box, stats = reassembler(mtu)
    assert box.message(fragment(1, 0, too_many), NOW) is None
    assert len(box) == 0
    assert stats["frames.malformed"] == 1


@pytest.mark.parametrize("mtu", [255, 1400])
def test_a_fragment_that_may_still_be_at_most_64_kib_is_buffered(mtu: int) -> None:
    chunk = mtu - FRAGMENT_HEADER_BYTES
    count = min(255, -(-MAX_MESSAGE_BYTES // chunk))
    box, stats = reassembler(mtu)
    box.message(fragment(1, 0, count), NOW)
    assert len(box) == 1
    assert not stats


def test_sweep_drops_partials_older_than_their_allowance_and_counts_them() -> None:
    mtu = 40
    box, stats = reassembler(mtu)
    box.message(fragment(1, 0, 2), NOW)  # announces at most 2 * 40 bytes
    box.message(fragment(2, 0, 10), NOW)  # at most 10 * 40 bytes
    asked: list[int] = []

    def allowance(size: int) -> float:
        asked.append(size)
        return size / 10  # 8 s and 40 s

    box.sweep(NOW + 8.0, allowance)
    assert sorted(asked) == [2 * mtu, 10 * mtu]
    assert len(box) == 2  # exactly at the allowance: kept
    box.sweep(NOW + 8.5, allowance)
    assert len(box) == 1
    assert stats["frames.reassembly_timeout"] == 1
    box.sweep(NOW + 40.5, allowance)
    assert len(box) == 0
    assert stats["frames.reassembly_timeout"] == 2


def test_a_partial_is_aged_from_its_first_fragment() -> None:
    box, _ = reassembler(40)
    box.message(fragment(1, 0, 3), NOW)
    box.message(fragment(1, 1, 3), NOW + 5)
    box.sweep(NOW + 6, lambda size: 5.5)
    assert len(box) == 0


# ---------------------------------------------------------------- malformed frames


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        bytes([FRAME_WHOLE]) + b"m" * 40,  # 41 bytes on a 40-byte MTU
        bytes([2]) + b"m",  # unknown frame kind
        bytes([FRAME_FRAGMENT, 1, 0, 2]),  # a header and nothing else
        bytes([FRAME_FRAGMENT, 1]),  # a cut header
        fragment(1, 0, 1),  # a single fragment is no fragmented message
        fragment(1, 0, 0),
        fragment(1, 2, 2),  # index past the count
    ],
    ids=[
        "empty",
        "over-mtu",
        "unknown-kind",
        "header-only",
        "cut-header",
        "count-1",
        "count-0",
        "index-past",
    ],
)
def test_frames_that_break_the_layout_are_counted_as_malformed(frame: bytes) -> None:
    box, stats = reassembler(40)
    assert box.message(frame, NOW) is None
    assert len(box) == 0
    assert stats == {"frames.malformed": 1}
