"""A LAN link's send budget: a sender paces itself to what the receiver will accept.

Every agent closes a TCP link that sends faster than its
``max_receive_bytes_per_second`` (a :class:`agent.core.pacing.TokenBucket` of
``receive_burst_seconds`` of it, charging each frame its length plus the
4-byte length prefix). Peers on one LAN run one configuration, so a sender
assumes the far end's limit is its own and sends under it, with a margin:
at most :data:`SEND_MARGIN` of the rate, in bursts of at most
:data:`SEND_MARGIN` of the receiver's bucket, each frame costing its prefix
too. The headroom, ``(1 - SEND_MARGIN)`` of the bucket (0.4 s of the rate by
default), absorbs frames that the network or a busy receiver delivers late
and then all at once. The engine's outbox then paces DIGEST pushes and floods
(control messages still go first), so a fresh peer joining a mesh that holds
megabytes of records is fed as fast as it accepts, never disconnected.
"""

from __future__ import annotations

from typing import Final, TypedDict

#: The share of the receiver's rate and bucket a sender uses.
SEND_MARGIN: Final = 0.8
#: Every TCP frame is preceded by its uint32 length; the receiver charges it too.
LENGTH_PREFIX_BYTES: Final = 4


class SendBudget(TypedDict):
    """The :class:`agent.core.linkspec.LinkSpec` fields of a send budget."""

    bytes_per_second: float
    burst_bytes: int
    frame_overhead_bytes: int


def lan_send_budget(max_receive_bytes_per_second: float, receive_burst_seconds: float) -> SendBudget:
    """The send budget under a receiver limited to this rate with a bucket of this many seconds."""
    rate = SEND_MARGIN * max_receive_bytes_per_second
    return SendBudget(
        bytes_per_second=rate,
        burst_bytes=int(rate * receive_burst_seconds),
        frame_overhead_bytes=LENGTH_PREFIX_BYTES,
    )
