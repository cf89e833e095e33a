"""One link's handshake: its phases, the transition table, retransmission and repeated messages.

Both sides run it at once (the exchange is drawn in docs/ARCHITECTURE.md §4)::

    HELLO_SENT ──► CARD_REQUESTED ──► PROVING ──► DECIDING ──► ACCEPTED ──► ESTABLISHED
         └──────────────────────────────┘            └──────────────────────┘
    (every phase may go to CLOSING)

* ``HELLO_SENT``: our HELLO is out, the remote's not yet accepted.
* ``CARD_REQUESTED``: the remote's HELLO named a card we do not hold; we asked for it.
* ``PROVING``: the remote's card is accepted and our PROOF is out; we wait for its PROOF.
* ``DECIDING``: the remote proved its key; the local handler is asked.
* ``ACCEPTED``: we sent ACCEPT and wait for the remote's (``DECIDING`` goes straight to
  ``ESTABLISHED`` if the remote's ACCEPT came first).

Silence is answered by retransmission: our HELLO (in its current form) until
the remote's PROOF arrives, then, after admitting, ``ACCEPT 1`` until the
remote's ACCEPT arrives; resends start after ``retry`` (or four times the
message's transfer time on a slow link) and double, capped at the handshake
timeout. The signature work and card checks are the engine's; this module
only decides what the link's state allows.
"""

from __future__ import annotations

import enum
from typing import Final

from agent.core.certs import Certificate
from agent.core.records import Record
from agent.core.session import SessionOffer
from agent.core.wire import Accept


class Phase(enum.Enum):
    HELLO_SENT = "hello_sent"
    CARD_REQUESTED = "card_requested"
    PROVING = "proving"
    DECIDING = "deciding"
    ACCEPTED = "accepted"
    ESTABLISHED = "established"
    CLOSING = "closing"


#: Every transition the engine may make; anything else is a bug in the engine.
TRANSITIONS: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.HELLO_SENT: frozenset({Phase.CARD_REQUESTED, Phase.PROVING, Phase.CLOSING}),
    Phase.CARD_REQUESTED: frozenset({Phase.PROVING, Phase.CLOSING}),
    Phase.PROVING: frozenset({Phase.DECIDING, Phase.CLOSING}),
    Phase.DECIDING: frozenset({Phase.ACCEPTED, Phase.ESTABLISHED, Phase.CLOSING}),
    Phase.ACCEPTED: frozenset({Phase.ESTABLISHED, Phase.CLOSING}),
    Phase.ESTABLISHED: frozenset({Phase.CLOSING}),
    Phase.CLOSING: frozenset(),
}


class TransitionError(AssertionError):
    """The engine tried a transition the table does not allow: a bug, never remote input."""


class Handshake:
    """The handshake state of one link."""

    def __init__(self, nonce: bytes, deadline: float, retry: float) -> None:
        self.nonce = nonce
        self.deadline = deadline
        self.phase = Phase.HELLO_SENT
        self._retry_min = retry
        self.retry_every = retry
        self.retry_at = deadline
        #: Our current HELLO (by reference or with the card) and which form it is.
        self.hello = b""
        self.hello_by_reference = False
        self.remote_key: bytes | None = None
        #: The remote's peer id, one bytes object for every record it relays (a place's origin).
        self.remote_id: bytes | None = None
        self.remote_card: Record | None = None
        self.remote_nonce = b""
        #: Our PROOF message, kept to answer a repeated HELLO.
        self.proof = b""
        #: The remote's PROOF signature, if it came while we were asking for its card.
        self.early_proof: bytes | None = None
        self.remote_allowed = False
        #: The remote's verified certificate (fleet trust on), else ``None``.
        self.remote_certificate: Certificate | None = None
        #: The key a HELLO card claimed before it was verified (for the log of a refusal only).
        self.claimed_key: bytes | None = None
        #: Our session offer on this link (``None``: we offer none), and the remote's (from the
        #: HELLO whose card we accepted).
        self.offer: SessionOffer | None = None
        self.remote_offer: bytes | None = None

    # ---------------------------------------------------------------- phases

    def move(self, to: Phase) -> None:
        if to not in TRANSITIONS[self.phase]:
            raise TransitionError(f"handshake cannot go from {self.phase.name} to {to.name}")
        self.phase = to

    @property
    def established(self) -> bool:
        return self.phase is Phase.ESTABLISHED

    @property
    def closing(self) -> bool:
        return self.phase is Phase.CLOSING

    @property
    def pending(self) -> bool:
        """Not yet established nor closing: the handshake deadline and retransmission apply."""
        return self.phase not in (Phase.ESTABLISHED, Phase.CLOSING)

    @property
    def remote_proved(self) -> bool:
        return self.phase in (Phase.DECIDING, Phase.ACCEPTED, Phase.ESTABLISHED)

    @property
    def local_allowed(self) -> bool:
        return self.phase in (Phase.ACCEPTED, Phase.ESTABLISHED)

    # ---------------------------------------------------------------- steps

    def sent_hello(self, hello: bytes, by_reference: bool, resend_after: float, now: float) -> None:
        """Our HELLO went out (first, or again in another form): restart its retransmission."""
        self.hello = hello
        self.hello_by_reference = by_reference
        self.retry_every = max(self._retry_min, resend_after)
        self.retry_at = now + self.retry_every

    def card_accepted(self, card: Record, remote_nonce: bytes, proof: bytes) -> None:
        """The remote's HELLO card passed the checks; ``proof`` is our PROOF message."""
        self.remote_key = card.public_key
        self.remote_id = card.peer_id
        self.remote_card = card
        self.remote_nonce = remote_nonce
        self.proof = proof
        self.move(Phase.PROVING)

    def answer_to_repeated_hello(self, nonce: bytes) -> list[bytes]:
        """The remote resent its HELLO: it missed our PROOF (and our ACCEPT, once given)."""
        if not self.proof or nonce != self.remote_nonce:
            return []
        return [self.proof, Accept().encode()] if self.local_allowed else [self.proof]

    def may_send_card(self) -> bool:
        """A CARD_REQUEST is answered once, and only while our HELLO names the card by reference."""
        return not self.remote_proved and self.hello_by_reference

    def on_accept(self, ask_back: bool) -> tuple[list[bytes], bool]:
        """The remote's ACCEPT: (what to answer, whether the link is now established)."""
        self.remote_allowed = True
        answer = [Accept().encode()] if ask_back and self.local_allowed else []
        return answer, self.phase is Phase.ACCEPTED

    def allow(self) -> bool:
        """The local handler allowed: ``True`` if the remote had already accepted (establish now)."""
        if self.remote_allowed:
            return True
        self.move(Phase.ACCEPTED)
        return False

    def retransmission(self, now: float, timeout: float) -> bytes | None:
        """The message to resend at a retransmission timer, and the next timer."""
        self.retry_every = min(2 * self.retry_every, timeout)
        self.retry_at = now + self.retry_every
        if not self.remote_proved:
            return self.hello
        if self.phase is Phase.ACCEPTED and not self.remote_allowed:
            return Accept(ask_back=True).encode()
        return None
