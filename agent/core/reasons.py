"""Why a record is rejected, a frame dropped or a link closed: the enums behind the stats keys.

A rejected record is counted as ``records.rejected.<reason>`` (arriving in
RECORDS or loaded from the store) or ``handshake.rejected.<reason>`` (a HELLO
card); a frame a sealed link drops as ``session.rejected.<reason>``
(:class:`SessionReason`), one a sealed broadcast interface drops as
``medium.rejected.<reason>``; a closed link as its :class:`CloseReason` value.
Nothing else names these counters.
"""

from __future__ import annotations

import enum


class RejectReason(enum.StrEnum):
    """Why a signed record (or a HELLO card, or a link proof) was refused."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    KEY_MISMATCH = "key_mismatch"
    OWN_RECORD = "own_record"
    STALE = "stale"
    EXPIRED = "expired"
    CAPACITY = "capacity"
    BAD_SIGNATURE = "bad_signature"
    #: A HELLO card of this very peer: the link leads back to itself.
    SELF = "self"
    #: A link proof that does not verify.
    BAD_PROOF = "bad_proof"
    #: Another peer's record reached a leaf, which holds only its own.
    NOT_FOR_LEAF = "not_for_leaf"
    #: Trust on: a card without a valid, unrevoked certificate for its key, or a links record
    #: of a peer whose certified card is not held (``trust.rejected.<TrustReason>`` says why).
    UNCERTIFIED = "uncertified"
    #: Fleet view: a record under a topic of another peer or kind than its own.
    WRONG_KEY = "wrong_key"
    WRONG_KIND = "wrong_kind"
    #: Fleet view: a counter below the highest already accepted on that topic.
    REPLAYED = "replayed"

    @property
    def record_counter(self) -> str:
        return f"records.rejected.{self.value}"

    @property
    def handshake_counter(self) -> str:
        return f"handshake.rejected.{self.value}"


class SessionReason(enum.StrEnum):
    """Why a frame on a sealed link (``agent.core.session``) was dropped. The link stays up."""

    #: Not a sealed frame's layout (too short for its header and tag).
    MALFORMED = "malformed"
    #: The tag does not verify: injected, altered, or sealed under another link's keys.
    BAD_TAG = "bad_tag"
    #: Its counter was accepted before on this link: a replay (or a duplicate).
    REPLAYED = "replayed"
    #: Its counter is older than the replay window: it cannot be told from a replay.
    TOO_OLD = "too_old"
    #: A sealed frame on a link that agreed no session (yet): nothing can open it.
    NO_SESSION = "no_session"
    #: A plain frame whose message a sealed link only takes sealed (anything but HELLO, PROOF
    #: and CARD_REQUEST, which go before the keys exist).
    UNSEALED = "unsealed"

    @property
    def counter(self) -> str:
        return f"session.rejected.{self.value}"

    @property
    def medium_counter(self) -> str:
        """The counter of a frame a broadcast interface's mesh seal dropped (agent.core.mesh_seal)."""
        return f"medium.rejected.{self.value}"


class CloseReason(enum.Enum):
    """Why the engine closed a link. ``value`` is the counter, ``text`` what the log says."""

    DENIED_LOCALLY = ("links.denied_locally", "denied by connection request handler")
    DENIED_BY_REMOTE = ("links.denied_by_remote", "denied by the remote's connection request handler")
    DEAD = ("links.dead", "no frames within the dead interval")
    HANDSHAKE_TIMEOUT = ("links.handshake_timeout", "handshake did not complete")
    VERSION_MISMATCH = ("handshake.version_mismatch", "remote does not speak our protocol version")
    #: The remote's HELLO card was refused; the :class:`RejectReason` says why and names the counter.
    HANDSHAKE_REFUSED = ("handshake.refused", "handshake refused")
    BAD_PROOF = ("handshake.rejected.bad_proof", "remote could not prove it holds its key")
    #: Trust on: the remote's certificate was refused (the detail names the ``TrustReason``).
    UNTRUSTED = ("handshake.untrusted", "remote's certificate refused")
    #: The remote refused this peer's certificate (its DENY said why).
    REFUSED_BY_REMOTE = ("handshake.refused_by_remote", "remote refused this peer's certificate")
    #: Trust on: an admitted peer's certificate was revoked, or expired, since.
    WITHDRAWN = ("links.withdrawn", "remote's certificate was revoked or expired")
    #: This peer requires sealed links (trust on, or ``sealing = "required"``) and the remote
    #: offered no session key.
    UNSEALED = ("handshake.unsealed", "remote does not seal its frames, and this peer requires it")

    @property
    def counter(self) -> str:
        return self.value[0]

    @property
    def text(self) -> str:
        return self.value[1]
