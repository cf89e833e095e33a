"""Device certificates and revocation lists from a fleet CA (``agent.core.certs``).

What a verifier can rely on: a genuine certificate is accepted with what it
says; each way of being wrong is refused with its own reason (and nothing
else); the newest revocation list wins and an older one is refused as a
replay; two CAs are trusted at once during a rotation; the bytes are the
project's COSE_Sign1 layout, so a standard COSE library verifies them.
"""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from agent.core import cose
from agent.core.certs import (
    CERTIFICATE_KIND,
    CertificateError,
    FleetTrust,
    RevocationList,
    TrustReason,
    ca_key_id,
    certificate_payload,
    issue_certificate,
    raw_public_key,
    revocation_payload,
    sign_revocation_list,
    trusted_ca_table,
    verify_certificate,
    verify_revocation_list,
)
from agent.core.errors import MetadataError, MetadataTooLargeError, RecordError
from agent.core.limits import CERTIFICATE_CLOCK_SKEW, MAX_CERTIFICATE_BYTES, MAX_REVOKED_SERIALS
from agent.core.records import decode_record

CA = Ed25519PrivateKey.generate()
CA_KEY = raw_public_key(CA)
NEW_CA = Ed25519PrivateKey.generate()
NEW_CA_KEY = raw_public_key(NEW_CA)
STRANGER = Ed25519PrivateKey.generate()
DEVICE_KEY = raw_public_key(Ed25519PrivateKey.generate())
OTHER_DEVICE_KEY = raw_public_key(Ed25519PrivateKey.generate())
NOW = 1_750_000_000
DAY = 86_400
METADATA = {"site": "depot-3", "role": "gateway", "serial": "SN-0042"}


def certificate(ca: Ed25519PrivateKey = CA, serial: int = 7, **overrides: object) -> bytes:
    fields: dict[str, object] = {
        "device_key": DEVICE_KEY,
        "metadata": METADATA,
        "issued_at": NOW - DAY,
        "expiry": NOW + 30 * DAY,
    } | overrides
    return issue_certificate(ca, serial, **fields).raw  # type: ignore[arg-type]


def refusal(
    raw: bytes,
    *,
    trusted: tuple[bytes, ...] = (CA_KEY,),
    revoked: tuple[RevocationList, ...] = (),
    now: int = NOW,
    device_key: bytes | None = DEVICE_KEY,
) -> TrustReason:
    with pytest.raises(CertificateError) as caught:
        verify_certificate(raw, trusted, revoked, now, device_key)
    return caught.value.reason


def signed(payload: bytes, ca: Ed25519PrivateKey = CA) -> bytes:
    return cose.sign(ca, payload)


# ---------------------------------------------------------------- accepted


def test_a_genuine_certificate_is_accepted_with_what_it_says() -> None:
    raw = certificate()

    cert = verify_certificate(raw, [CA_KEY], [], NOW, DEVICE_KEY)

    assert cert.serial == 7
    assert cert.device_key == DEVICE_KEY
    assert cert.ca_key_id == ca_key_id(CA_KEY) == CA_KEY[:8]
    assert dict(cert.metadata) == METADATA
    assert (cert.issued_at, cert.expiry) == (NOW - DAY, NOW + 30 * DAY)
    assert cert.raw == raw
    assert cert.device_key_string.startswith("pk")


def test_the_layout_is_the_documented_payload_in_the_records_cose_envelope() -> None:
    raw = certificate(metadata={})
    payload, _ = cose.open_envelope(raw)

    assert raw.startswith(b"\xd2\x84\x43\xa1\x01\x27\xa0")
    assert cbor2.loads(payload) == [3, CA_KEY[:8], 7, DEVICE_KEY, NOW - DAY, NOW + 30 * DAY, {}]
    assert payload == certificate_payload(CA_KEY[:8], 7, DEVICE_KEY, NOW - DAY, NOW + 30 * DAY, {})
    assert certificate(metadata={}) == raw  # deterministic: same inputs, same bytes
    # payload 57 B (array 1, kind 1, CA id 9, serial 1, key 34, two times 5 each, {} 1) + envelope 75 B
    assert len(raw) == 132


def test_pycose_verifies_a_certificate_and_a_revocation_list_as_standard_cose_sign1() -> None:
    for raw in (certificate(), sign_revocation_list(CA, 3, NOW, [1, 5]).raw):
        tagged = cbor2.loads(raw)
        assert tagged.tag == 18
        v = tagged.value
        message = Sign1Message.from_cose_obj([v[0], dict(v[1]), v[2], v[3]], True)
        message.key = OKPKey(crv="Ed25519", x=CA_KEY)
        assert message.verify_signature()
        message.key = OKPKey(crv="Ed25519", x=NEW_CA_KEY)
        assert not message.verify_signature()


def test_the_validity_window_allows_the_clock_skew_and_ends_at_expiry() -> None:
    raw = certificate(issued_at=NOW, expiry=NOW + DAY)

    verify_certificate(raw, [CA_KEY], [], NOW - CERTIFICATE_CLOCK_SKEW)
    verify_certificate(raw, [CA_KEY], [], NOW + DAY - 1)
    assert refusal(raw, now=NOW - CERTIFICATE_CLOCK_SKEW - 1) is TrustReason.NOT_YET_VALID
    assert refusal(raw, now=NOW + DAY) is TrustReason.EXPIRED


def test_two_cas_are_trusted_at_once_during_a_rotation() -> None:
    old, new = certificate(CA, serial=1), certificate(NEW_CA, serial=1)
    both = (CA_KEY, NEW_CA_KEY)

    assert verify_certificate(old, both, [], NOW).ca_key_id == CA_KEY[:8]
    assert verify_certificate(new, both, [], NOW).ca_key_id == NEW_CA_KEY[:8]
    # Before the changeover only the old CA, after it only the new one.
    assert refusal(new, trusted=(CA_KEY,)) is TrustReason.UNKNOWN_CA
    assert refusal(old, trusted=(NEW_CA_KEY,)) is TrustReason.UNKNOWN_CA
    # Each CA's list revokes its own serials only: serial 1 of the old CA is not serial 1 of the new.
    old_list = sign_revocation_list(CA, 1, NOW, [1])
    assert refusal(old, trusted=both, revoked=(old_list,)) is TrustReason.REVOKED
    verify_certificate(new, both, [old_list], NOW)


def test_more_than_two_trusted_cas_or_a_bad_ca_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at most 2"):
        trusted_ca_table([CA_KEY, NEW_CA_KEY, raw_public_key(STRANGER)])
    with pytest.raises(ValueError, match="32-byte"):
        trusted_ca_table([CA_KEY[:31]])
    with pytest.raises(ValueError, match="32-byte"):
        trusted_ca_table([b"\x00" * 32])  # small-order


# ---------------------------------------------------------------- refused, one reason each


def test_a_certificate_signed_by_a_key_that_is_not_trusted_is_an_unknown_ca() -> None:
    assert refusal(certificate(STRANGER)) is TrustReason.UNKNOWN_CA


def test_a_certificate_naming_a_trusted_ca_but_signed_by_another_key_is_a_bad_signature() -> None:
    forged = signed(certificate_payload(CA_KEY[:8], 7, DEVICE_KEY, NOW, NOW + DAY, {}), STRANGER)

    assert refusal(forged) is TrustReason.BAD_SIGNATURE


def test_an_expired_certificate_is_refused() -> None:
    assert refusal(certificate(issued_at=NOW - 40 * DAY, expiry=NOW - DAY)) is TrustReason.EXPIRED


def test_a_certificate_from_the_future_is_not_yet_valid() -> None:
    assert refusal(certificate(issued_at=NOW + DAY, expiry=NOW + 2 * DAY)) is TrustReason.NOT_YET_VALID


def test_a_certificate_for_another_key_is_the_wrong_key() -> None:
    assert refusal(certificate(), device_key=OTHER_DEVICE_KEY) is TrustReason.WRONG_KEY


def test_a_revoked_serial_is_refused() -> None:
    revoked = sign_revocation_list(CA, 2, NOW, [3, 7, 9])

    assert refusal(certificate(serial=7), revoked=(revoked,)) is TrustReason.REVOKED
    verify_certificate(certificate(serial=8), [CA_KEY], [revoked], NOW)


def test_a_tampered_metadata_byte_breaks_the_signature() -> None:
    raw = certificate()
    at = raw.index(b"depot-3")
    tampered = raw[:at] + b"X" + raw[at + 1 :]

    assert refusal(tampered) is TrustReason.BAD_SIGNATURE


def test_every_single_byte_change_is_refused_and_only_with_a_certificate_error() -> None:
    raw = certificate()
    for i in range(len(raw)):
        changed = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        assert refusal(changed) in {TrustReason.MALFORMED, TrustReason.BAD_SIGNATURE, TrustReason.UNKNOWN_CA}
    for cut in range(len(raw)):
        assert refusal(raw[:cut]) is TrustReason.MALFORMED
    assert refusal(raw + b"\x00") is TrustReason.MALFORMED


@pytest.mark.parametrize(
    "fields",
    [
        [CERTIFICATE_KIND, CA_KEY[:8], -1, DEVICE_KEY, NOW, NOW + DAY, {}],
        [CERTIFICATE_KIND, CA_KEY[:8], 2**32, DEVICE_KEY, NOW, NOW + DAY, {}],
        [CERTIFICATE_KIND, CA_KEY[:8], 1, DEVICE_KEY[:31], NOW, NOW + DAY, {}],
        [CERTIFICATE_KIND, CA_KEY[:8], 1, b"\x00" * 32, NOW, NOW + DAY, {}],  # small-order key
        [CERTIFICATE_KIND, CA_KEY[:8], 1, DEVICE_KEY, NOW, NOW + DAY, []],
        [CERTIFICATE_KIND, CA_KEY[:8], 1, DEVICE_KEY, NOW, NOW + DAY, {"a": float("nan")}],
        [CERTIFICATE_KIND, CA_KEY[:8], 1, DEVICE_KEY, NOW, NOW + DAY, {1: "key is not text"}],
        [CERTIFICATE_KIND, CA_KEY[:8], 1, DEVICE_KEY, NOW, NOW + DAY, {}, "extra"],
        [CERTIFICATE_KIND, CA_KEY[:8], 1, DEVICE_KEY, NOW, "tomorrow", {}],
    ],
)
def test_a_signed_certificate_with_a_bad_body_is_malformed(fields: list[object]) -> None:
    raw = signed(cbor2.dumps(fields, canonical=True))

    assert refusal(raw, device_key=None) is TrustReason.MALFORMED


@pytest.mark.parametrize(
    "fields",
    [
        [CERTIFICATE_KIND, CA_KEY[:7], 1, DEVICE_KEY, NOW, NOW + DAY, {}],  # short CA id
        [1, CA_KEY[:8], 1, DEVICE_KEY, NOW, NOW + DAY, {}],  # kind of a card
        [4, CA_KEY[:8], 1, NOW, []],  # a revocation list is not a certificate
    ],
)
def test_structurally_wrong_certificates_are_malformed_before_any_signature_check(
    fields: list[object],
) -> None:
    assert refusal(signed(cbor2.dumps(fields, canonical=True)), device_key=None) is TrustReason.MALFORMED


def test_a_non_deterministic_encoding_is_malformed() -> None:
    payload = certificate_payload(CA_KEY[:8], 7, DEVICE_KEY, NOW, NOW + DAY, {})
    # serial 7 as a two-byte integer (0x18 0x07): the same value, not the shortest form.
    loose = payload.replace(b"\x48" + CA_KEY[:8] + b"\x07", b"\x48" + CA_KEY[:8] + b"\x18\x07", 1)
    assert loose != payload

    assert refusal(signed(loose), device_key=None) is TrustReason.MALFORMED


def test_a_certificate_is_never_a_card_and_a_card_never_a_certificate() -> None:
    from agent.core.records import make_card, sign_record

    with pytest.raises(RecordError) as caught:
        decode_record(certificate())
    assert caught.value.reason == "malformed"
    card = sign_record(CA, CA_KEY, 1, NOW + DAY, make_card("pi", "Linux", "0.1.0", {})).raw
    assert refusal(card, device_key=None) is TrustReason.MALFORMED


# ---------------------------------------------------------------- issuing


def test_issuing_refuses_what_a_card_could_not_carry_and_anything_over_4_kib() -> None:
    with pytest.raises(MetadataError):
        certificate(metadata=["not", "an", "object"])
    with pytest.raises(MetadataTooLargeError):
        certificate(metadata={"note": "x" * 4090})
    with pytest.raises(MetadataTooLargeError):
        certificate(metadata={f"k{i:03}": "y" * 20 for i in range(150)})  # JSON < 4096, signed > 4096
    with pytest.raises(ValueError, match="expiry"):
        certificate(issued_at=NOW, expiry=NOW)
    with pytest.raises(ValueError, match="serial"):
        certificate(serial=2**32)
    with pytest.raises(ValueError, match="device key"):
        certificate(device_key=b"\x00" * 32)
    assert len(certificate(metadata={"note": "z" * 3900})) <= MAX_CERTIFICATE_BYTES


# ---------------------------------------------------------------- revocation lists


def test_a_revocation_list_says_what_it_was_signed_with() -> None:
    revocations = sign_revocation_list(CA, 5, NOW, [9, 3, 3])

    assert verify_revocation_list(revocations.raw, [CA_KEY]) == revocations
    assert (revocations.counter, revocations.serials, revocations.ca_key_id) == (5, {3, 9}, CA_KEY[:8])
    assert cose.open_envelope(revocations.raw)[0] == revocation_payload(CA_KEY[:8], 5, NOW, [3, 9])
    assert cbor2.loads(cose.open_envelope(revocations.raw)[0]) == [4, CA_KEY[:8], 5, NOW, [3, 9]]


def test_the_newest_revocation_list_wins_and_a_replayed_older_one_is_stale() -> None:
    trust = FleetTrust.of([CA_KEY])
    first = sign_revocation_list(CA, 1, NOW, [])
    second = sign_revocation_list(CA, 2, NOW + 10, [7])
    cert = certificate(serial=7)

    trust, _ = trust.with_revocation_list(first.raw)
    assert trust.verify(cert, NOW, DEVICE_KEY).serial == 7
    trust, held = trust.with_revocation_list(second.raw)
    assert held == second
    with pytest.raises(CertificateError) as caught:
        trust.verify(cert, NOW)
    assert caught.value.reason is TrustReason.REVOKED

    for replay in (first.raw, second.raw):  # older, and the same one again
        with pytest.raises(CertificateError) as caught:
            trust.with_revocation_list(replay)
        assert caught.value.reason is TrustReason.STALE
    with pytest.raises(CertificateError) as caught:
        trust.verify(cert, NOW)
    assert caught.value.reason is TrustReason.REVOKED  # the replay changed nothing


def test_revocation_lists_from_strangers_forged_or_malformed_are_refused() -> None:
    def reason(raw: bytes) -> TrustReason:
        with pytest.raises(CertificateError) as caught:
            verify_revocation_list(raw, [CA_KEY])
        return caught.value.reason

    assert reason(sign_revocation_list(STRANGER, 9, NOW, [1]).raw) is TrustReason.UNKNOWN_CA
    assert reason(signed(revocation_payload(CA_KEY[:8], 9, NOW, [1]), STRANGER)) is TrustReason.BAD_SIGNATURE
    unsorted = cbor2.dumps([4, CA_KEY[:8], 9, NOW, [5, 1]], canonical=True)
    assert reason(signed(unsorted)) is TrustReason.MALFORMED
    repeated = cbor2.dumps([4, CA_KEY[:8], 9, NOW, [1, 1]], canonical=True)
    assert reason(signed(repeated)) is TrustReason.MALFORMED
    assert reason(certificate()) is TrustReason.MALFORMED  # a certificate is not a list


def test_a_revocation_list_is_bounded() -> None:
    full = sign_revocation_list(CA, 1, NOW, range(2**32 - MAX_REVOKED_SERIALS, 2**32))
    assert len(full.raw) <= 4096
    with pytest.raises(ValueError, match=str(MAX_REVOKED_SERIALS)):
        sign_revocation_list(CA, 1, NOW, range(MAX_REVOKED_SERIALS + 1))
    too_many = cbor2.dumps([4, CA_KEY[:8], 1, NOW, list(range(MAX_REVOKED_SERIALS + 1))], canonical=True)
    with pytest.raises(CertificateError) as caught:
        verify_revocation_list(signed(too_many), [CA_KEY])
    assert caught.value.reason is TrustReason.MALFORMED
