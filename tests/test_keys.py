"""Specification of peer keys and their text form (agent.core.keys).

A ``peer_key_string`` is ``"pk"`` followed by the unpadded base64url encoding of
the raw 32-byte Ed25519 public key: 45 characters, safe in URLs, file names and
MQTT topics, with exactly one spelling per key.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK, THOROUGH, key_pair, raw_keys

from agent.core.errors import PeerKeyError, PresenceError
from agent.core.keys import peer_id, peer_key_string, public_key_from_string
from agent.core.limits import PEER_ID_BYTES, PUBLIC_KEY_BYTES

PEER_KEY_SHAPE = re.compile(r"pk[A-Za-z0-9_-]{43}")
_, PUBLIC = key_pair(1)
GOOD = peer_key_string(PUBLIC)


@THOROUGH
@given(raw=raw_keys)
def test_a_peer_key_string_round_trips_to_the_raw_key(raw: bytes) -> None:
    decoded = public_key_from_string(peer_key_string(raw))

    assert decoded == raw
    assert len(decoded) == PUBLIC_KEY_BYTES


@THOROUGH
@given(raw=raw_keys)
def test_a_peer_key_string_is_pk_and_43_url_safe_characters(raw: bytes) -> None:
    text = peer_key_string(raw)

    assert len(text) == 45
    assert PEER_KEY_SHAPE.fullmatch(text)


def test_a_peer_key_string_is_unpadded_base64url_of_the_raw_key() -> None:
    expected = "pk" + base64.urlsafe_b64encode(PUBLIC).decode().rstrip("=")

    assert peer_key_string(PUBLIC) == expected


def test_keys_that_need_url_unsafe_base64_characters_use_dash_and_underscore() -> None:
    text = peer_key_string(b"\xfb\xff" * 16)  # standard base64 would be "+//7..."

    assert "-" in text or "_" in text
    assert not set(text) & set("+/=")
    assert public_key_from_string(text) == b"\xfb\xff" * 16


@QUICK
@given(a=raw_keys, b=raw_keys)
def test_distinct_keys_have_distinct_strings(a: bytes, b: bytes) -> None:
    assert (peer_key_string(a) == peer_key_string(b)) == (a == b)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_only_32_byte_keys_have_a_string(length: int) -> None:
    with pytest.raises(PeerKeyError, match="32 bytes"):
        peer_key_string(b"\x01" * length)


BAD_STRINGS = {
    "empty": "",
    "prefix only": "pk",
    "missing prefix": GOOD[2:],
    "wrong prefix": "PK" + GOOD[2:],
    "other prefix": "ed" + GOOD[2:],
    "one character short": GOOD[:-1],
    "one character long": GOOD + "A",
    "with base64 padding": GOOD + "=",
    "standard base64 plus": GOOD[:-3] + "+" + GOOD[-2:],
    "standard base64 slash": GOOD[:-3] + "/" + GOOD[-2:],
    "character outside the alphabet": GOOD[:-3] + "!" + GOOD[-2:],
    "ignorable junk appended": GOOD + "!!!!",
    "whitespace": GOOD[:20] + " " + GOOD[20:],
    "trailing newline": GOOD + "\n",
    "non-ascii": GOOD[:-1] + "é",
    "a 33-byte key": "pk" + base64.urlsafe_b64encode(b"\x01" * 33).decode().rstrip("="),
    "a 31-byte key": "pk" + base64.urlsafe_b64encode(b"\x01" * 31).decode().rstrip("="),
}


@pytest.mark.parametrize("text", BAD_STRINGS.values(), ids=BAD_STRINGS.keys())
def test_malformed_peer_key_strings_are_refused(text: str) -> None:
    with pytest.raises(PeerKeyError):
        public_key_from_string(text)


def test_a_non_canonical_final_character_is_refused() -> None:
    # 43 base64 characters carry 258 bits; the last two must be zero for 32 bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sloppy = GOOD[:-1] + alphabet[alphabet.index(GOOD[-1]) + 1]  # sets a spare bit
    assert base64.urlsafe_b64decode(sloppy[2:] + "=") == PUBLIC  # decodes to the same key

    with pytest.raises(PeerKeyError):
        public_key_from_string(sloppy)


@THOROUGH
@given(text=st.text(max_size=60))
def test_any_text_is_either_refused_or_the_one_spelling_of_its_key(text: str) -> None:
    try:
        raw = public_key_from_string(text)
    except PeerKeyError:
        return
    assert peer_key_string(raw) == text


@THOROUGH
@given(text=st.from_regex(PEER_KEY_SHAPE, fullmatch=True))
def test_a_well_shaped_string_is_accepted_exactly_when_it_is_canonical(text: str) -> None:
    raw = base64.urlsafe_b64decode(text[2:] + "=")  # lenient: ignores the two spare bits

    if peer_key_string(raw) == text:
        assert public_key_from_string(text) == raw
    else:
        with pytest.raises(PeerKeyError):
            public_key_from_string(text)


def test_peer_key_errors_are_presence_errors_and_value_errors() -> None:
    with pytest.raises(PresenceError):
        public_key_from_string("nope")
    with pytest.raises(ValueError):
        public_key_from_string("nope")


def test_the_error_names_the_offending_string() -> None:
    with pytest.raises(PeerKeyError, match="nope"):
        public_key_from_string("nope")


@QUICK
@given(raw=raw_keys)
def test_a_peer_id_is_the_first_8_bytes_of_the_key(raw: bytes) -> None:
    assert peer_id(raw) == raw[:PEER_ID_BYTES]
    assert len(peer_id(raw)) == 8
