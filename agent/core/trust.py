"""Fleet trust in the engine ("trust on"): who is certified, refused cheaply, and re-judged.

The engine turns trust on when it is given a :class:`Membership`: the fleet's
:class:`~agent.core.certs.FleetTrust` (one or two CA keys, the newest
revocation list of each) and this device's own certificate, which it puts in
its card (the card's ninth field, :mod:`agent.core.records`). Then:

* **A card counts only with a certificate** from a trusted CA for the card's
  own key, valid now and not revoked. The check is split in two. The
  *precheck* (:meth:`Trust.precheck_card`: a CBOR decode of the certificate,
  its CA id looked up, its key, validity window and serial compared) runs
  before the card's signature and before any occupancy charge, so a flood of
  uncertified cards costs no signature and leaves nothing behind. The CA's
  signature is checked after the card's (:meth:`Trust.verify_card`).
* **A links record counts only for a peer whose certified card is held**
  (:meth:`Trust.require_certified`, a dict lookup).
* **Held peers are re-judged** when a newer revocation list is accepted and at
  every sweep (:meth:`Trust.withdrawn`): a revoked or expired one is withdrawn
  by the engine (its records dropped, its links closed).
* **Revocation lists**: the newest counter per CA wins
  (:meth:`Trust.accept_revocation_list`); at most one list per trusted CA is
  held, so at most two.

``certified`` maps the peer id of every held certified card to its verified
certificate: it is bounded by the peer table, and only a card that passed
both signatures enters it. A refusal is an
:class:`~agent.core.certs.CertificateError` whose ``reason`` (a
:class:`~agent.core.certs.TrustReason`) the engine counts as
``trust.rejected.<reason>`` and sends in its DENY.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from agent.core.certs import (
    Certificate,
    CertificateError,
    FleetTrust,
    RevocationList,
    TrustReason,
)
from agent.core.records import EMPTY_METADATA, Card, Envelope, Metadata, Record

#: A line about refused certificates is logged at most this often per kind of line (seconds).
TRUST_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Membership:
    """What turns trust on in an engine: the fleet's trust and this device's certificate."""

    fleet: FleetTrust
    #: This device's certificate (raw COSE_Sign1, as ``presence-agent fleet-ca issue`` writes it).
    certificate: bytes


class Trust:
    """The engine's fleet trust: the :class:`FleetTrust` now held and every held peer's certificate."""

    def __init__(self, membership: Membership) -> None:
        self.fleet = membership.fleet
        self.certificate = membership.certificate
        #: Peer id -> the verified certificate of its held card.
        self.certified: dict[bytes, Certificate] = {}

    # ---------------------------------------------------------------- this device

    def own_certificate(self, public_key: bytes, wall: float) -> Certificate:
        """This device's certificate, verified as a peer would (:class:`CertificateError`: refused)."""
        if not self.certificate:
            raise CertificateError(TrustReason.NO_CERTIFICATE, "this device has no certificate")
        return self.fleet.verify(self.certificate, int(wall), public_key)

    # ---------------------------------------------------------------- records

    def precheck_card(self, env: Envelope, wall: float) -> None:
        """Every check of a card's certificate but the CA signature: before the card's own signature."""
        body = env.body
        if not isinstance(body, Card):
            return  # a malformed body: the card's verification refuses it as such
        if not body.certificate:
            raise CertificateError(TrustReason.NO_CERTIFICATE, "the card carries no certificate")
        self.fleet.precheck(body.certificate, int(wall), env.public_key)

    def verify_card(self, card: Record, wall: float) -> Certificate:
        """The verified certificate of a card whose own signature verified."""
        body = card.body
        assert isinstance(body, Card)
        if not body.certificate:
            raise CertificateError(TrustReason.NO_CERTIFICATE, "the card carries no certificate")
        return self.fleet.verify(body.certificate, int(wall), card.public_key)

    def require_certified(self, pid: bytes) -> None:
        """A links record is held only beside a certified card."""
        if pid not in self.certified:
            raise CertificateError(TrustReason.NO_CERTIFICATE, "no certified card is held for this peer")

    def judge_held(self, pid: bytes, wall: float) -> Certificate:
        """The certificate of a held card, judged again now (a HELLO naming a held card)."""
        cert = self.certified.get(pid)
        if cert is None:
            raise CertificateError(TrustReason.NO_CERTIFICATE, "no certified card is held for this peer")
        return self.fleet.judge(cert, int(wall))

    def identity(self, pid: bytes) -> Metadata:
        """What a peer's certificate says about it (``identity_service_metadata``), or nothing."""
        cert = self.certified.get(pid)
        return cert.metadata if cert is not None else EMPTY_METADATA

    # ---------------------------------------------------------------- revocation

    @property
    def revocation_lists(self) -> tuple[bytes, ...]:
        """The raw revocation lists held (at most one per trusted CA)."""
        return tuple(r.raw for r in self.fleet.revocations.values())

    def holds_list(self, raw: bytes) -> bool:
        return any(r.raw == raw for r in self.fleet.revocations.values())

    def accept_revocation_list(self, raw: bytes) -> RevocationList:
        """Hold ``raw`` in place of its CA's older list; :class:`CertificateError` if refused."""
        self.fleet, revocations = self.fleet.with_revocation_list(raw)
        return revocations

    def withdrawn(self, wall: float) -> list[tuple[bytes, CertificateError]]:
        """Held peers whose certificate no longer holds now (revoked, expired): to be dropped."""
        out = []
        now = int(wall)
        for pid, cert in self.certified.items():
            try:
                self.fleet.judge(cert, now)
            except CertificateError as exc:
                out.append((pid, exc))
        return out


#: What to do about each refusal, for the refused side's log line.
HINTS: Final[Mapping[TrustReason, str]] = MappingProxyType(
    {
        TrustReason.NO_CERTIFICATE: "give this device a certificate from the fleet CA and configure [trust]",
        TrustReason.MALFORMED: "the certificate file is damaged: issue it again",
        TrustReason.UNKNOWN_CA: "its CA is not trusted here (during a CA rotation, trust both)",
        TrustReason.BAD_SIGNATURE: "the certificate was altered: issue it again",
        TrustReason.WRONG_KEY: "the certificate was issued for another device key",
        TrustReason.NOT_YET_VALID: "check this device's clock",
        TrustReason.EXPIRED: "renew it (presence-agent fleet-ca issue) or check this device's clock",
        TrustReason.REVOKED: "the fleet CA revoked it",
        TrustReason.STALE: "an older revocation list",
    }
)


class LineLimiter:
    """At most one log line of each kind per :data:`TRUST_LOG_INTERVAL` (the kinds are few and fixed)."""

    def __init__(self) -> None:
        self._logged_at: dict[str, float] = {}

    def due(self, kind: str, now: float) -> bool:
        last = self._logged_at.get(kind)
        if last is not None and now < last + TRUST_LOG_INTERVAL:
            return False
        self._logged_at[kind] = now
        return True
