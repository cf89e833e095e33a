"""Every size limit and protocol constant, defined once."""

from typing import Final

#: No signed record on the wire or on disk may exceed this (bytes).
MAX_RECORD_BYTES: Final = 4096
#: Metadata JSON text may not exceed this (bytes of UTF-8).
MAX_METADATA_JSON_BYTES: Final = 4096
#: Metadata nesting deeper than this is refused (keeps decoders' stacks small).
MAX_METADATA_DEPTH: Final = 16
#: Device names and OS strings are cut to this many UTF-8 bytes.
MAX_DEVICE_NAME_BYTES: Final = 64
MAX_OS_BYTES: Final = 32
MAX_AGENT_VERSION_BYTES: Final = 16
#: A links record may list at most this many connections.
MAX_CONNECTIONS_PER_RECORD: Final = 64

#: Raw Ed25519 public key and signature sizes.
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
#: Peers reference each other inside links records by this key prefix.
PEER_ID_BYTES: Final = 8

#: Counters and expiries are unsigned 32-bit: at most five CBOR bytes each.
MAX_COUNTER: Final = 2**32 - 1

#: Protocol version spoken in HELLO (2: the card may be sent by reference, with CARD_REQUEST;
#: 3: HELLO carries capabilities, role and largest message, and summaries hash with SHA-256).
PROTOCOL_VERSION: Final = 3
#: Domain separation for link-handshake proofs.
HANDSHAKE_CONTEXT: Final = b"presence-agent/link-proof/v1"
#: Handshake nonce length.
NONCE_BYTES: Final = 16
#: Domain separation for link proofs that bind session offers (agent.core.session).
SESSION_PROOF_CONTEXT: Final = b"presence-agent/link-proof/v2"
#: Domain separation of the session key schedule (HKDF-SHA256's info).
SESSION_CONTEXT: Final = b"presence-agent/link-session/v1"
#: A session offer: an X25519 public key.
SESSION_KEY_BYTES: Final = 32
#: Frames received out of order are accepted within this many counters of the newest (once each).
REPLAY_WINDOW: Final = 64
#: A sealed link's MTU is at least this: a sealed frame's 25 bytes and a smallest link frame.
MIN_SEALED_MTU: Final = 45

#: Largest message reassembled from fragments (a full digest is split below this).
MAX_MESSAGE_BYTES: Final = 65536
#: Smallest MTU a link may report: BLE's default ATT payload (a fragment header and 16 bytes).
MIN_LINK_MTU: Final = 20
#: At most this many partly reassembled messages per link.
MAX_PARTIAL_MESSAGES_PER_LINK: Final = 4

# Fleet trust (agent.core.certs): certificates and revocation lists from a fleet CA.
#: A certificate, like a card, is at most one record's size (bytes, COSE_Sign1 included).
MAX_CERTIFICATE_BYTES: Final = MAX_RECORD_BYTES
#: A revocation list names at most this many serials (≤ 5 CBOR bytes each: ~2.6 KiB signed).
MAX_REVOKED_SERIALS: Final = 512
#: A revocation list is at most one record's size too.
MAX_REVOCATION_LIST_BYTES: Final = MAX_RECORD_BYTES
#: At most this many CA keys are trusted at once: the old and the new during a rotation.
MAX_TRUSTED_CA_KEYS: Final = 2
#: A CA is named in its certificates by this prefix of its public key (like a peer id).
CA_KEY_ID_BYTES: Final = 8
#: A certificate is accepted this many seconds before its issued-at time (clocks of devices without an RTC).
CERTIFICATE_CLOCK_SKEW: Final = 300
