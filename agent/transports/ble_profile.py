"""The BLE profile a node speaks (docs/BLE_PROFILE.md), defined once: GATT, MTU, advertisement.

Pure: no Bluetooth stack is imported here. ``firmware_bridge/micropython/ble_profile.py`` spells
the same constants and builds the same advertisement on the node (``tests/test_ble_profile.py``
keeps the two equal and checks both against ``docs/ble-profile-vectors.json``).

**GATT.** One primary service, :data:`SERVICE_UUID`, with one characteristic, the *frame
channel* :data:`FRAME_UUID`: write without response towards the node, notifications from it. Each
write or notification carries exactly one link frame (agent/core/wire.py: ``00 ‖ message`` or a
fragment), the same frames as every link, so the leaf profile (docs/LEAF_PROFILE.md) runs over it
unchanged. The node needs no other characteristic: its name, OS and metadata are in its signed card.

**MTU.** A frame is at most one ATT payload: the ATT MTU less the 3-byte ATT header. Both sides
ask for an ATT MTU of 247 (:data:`PREFERRED_ATT_MTU`: 251-byte LE data length less the 4-byte
L2CAP header), giving 244-byte frames; without the exchange the default ATT MTU of 23 gives
20-byte frames (the smallest link MTU, ``limits.MIN_LINK_MTU``). A larger negotiated MTU is still
used at 244 (:func:`frame_mtu`): a frame then never spans two LE data packets.

**Advertisement** (legacy advertising, at most 31 bytes of AD structures, each
``length(1) ‖ type(1) ‖ data``, length counting type and data)::

    02 01 06                        Flags: LE General Discoverable, BR/EDR not supported   3 B
    1B 21 <service UUID, 16 B LE>   Service Data - 128-bit UUID (type 0x21), length 27:  28 B
          <peer id 8>               the node's peer id (first 8 bytes of its public key)
          <counter 2, big-endian>   its newest record counter, modulo 2^16
                                                                                  total 31 B

The 128-bit service data names the service (a scanner's filter on the UUID matches it) and
carries the node's identity in one AD structure: ``1 + 1 + 16 + 8 + 2 = 28`` bytes, which with the
flags fills the 31 exactly. Nothing else fits, so the counter is cut to its low 16 bits: enough to
see that the node signed since the records a Pi holds (a node signs a few records a day; two
counters 65,536 apart between two scans never happen), and the profile version is the UUID (a new
layout gets a new service UUID). The name goes in the **scan response** (active scanning), after
the service UUID list, so platforms that filter on listed UUIDs only (BlueZ's, macOS's) find it::

    11 07 <service UUID, 16 B LE>   Complete List of 128-bit Service UUIDs             18 B
    LL 09 <name, <= 11 B UTF-8>     Complete Local Name (08: Shortened, when cut)     <= 13 B

A name longer than 11 bytes is cut between characters and sent as a Shortened Local Name.
UUIDs are little-endian on the air, as every Bluetooth UUID is.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Final

from agent.core.errors import PresenceError
from agent.core.limits import MAX_COUNTER, MIN_LINK_MTU, PEER_ID_BYTES

__all__ = [
    "ADV_FLAGS",
    "ADV_MAX_BYTES",
    "ATT_HEADER_BYTES",
    "COUNTER_MODULUS",
    "DEFAULT_ATT_MTU",
    "FRAME_UUID",
    "MAX_FRAME_BYTES",
    "PREFERRED_ATT_MTU",
    "SCAN_NAME_MAX_BYTES",
    "SERVICE_DATA_BYTES",
    "SERVICE_UUID",
    "SERVICE_UUID_LE",
    "AdvertisementError",
    "AdvertisementFault",
    "NodeAdvertisement",
    "advertising_data",
    "frame_mtu",
    "parse_advertising_data",
    "parse_scan_response",
    "parse_service_data",
    "resync_due",
    "scan_response",
    "service_data",
]

#: The node service (profile version 1); generated once, never changed for this layout.
SERVICE_UUID: Final = "e66d0001-2abd-4fb0-aff5-f1cab6d1410c"
#: The frame channel: write without response to the node, notify from it.
FRAME_UUID: Final = "e66d0002-2abd-4fb0-aff5-f1cab6d1410c"

#: ATT MTU before any exchange (Core spec Vol 3 Part F 3.2.8), and the one both sides ask for.
DEFAULT_ATT_MTU: Final = 23
PREFERRED_ATT_MTU: Final = 247
#: ATT opcode and handle in front of every write and notification.
ATT_HEADER_BYTES: Final = 3
#: The largest frame on the channel (the preferred MTU's payload).
MAX_FRAME_BYTES: Final = PREFERRED_ATT_MTU - ATT_HEADER_BYTES

#: Legacy advertising and scan response payloads are at most 31 bytes of AD structures.
ADV_MAX_BYTES: Final = 31
#: Flags: LE General Discoverable Mode (0x02) | BR/EDR Not Supported (0x04).
ADV_FLAGS: Final = 0x06
AD_FLAGS: Final = 0x01
AD_UUID128_COMPLETE: Final = 0x07
AD_NAME_SHORT: Final = 0x08
AD_NAME_COMPLETE: Final = 0x09
AD_SERVICE_DATA_UUID128: Final = 0x21
#: The counter's low bits carried: the advertised counter is ``counter % COUNTER_MODULUS``.
COUNTER_BYTES: Final = 2
COUNTER_MODULUS: Final = 1 << (8 * COUNTER_BYTES)
#: The service data after the UUID: peer id and counter.
SERVICE_DATA_BYTES: Final = PEER_ID_BYTES + COUNTER_BYTES
#: Name bytes that fit the scan response beside the UUID list: 31 - 18 - 2.
SCAN_NAME_MAX_BYTES: Final = ADV_MAX_BYTES - (2 + 16) - 2

#: The service UUID as it is on the air (little-endian), e.g. for a passive scan's pattern.
SERVICE_UUID_LE: Final = uuid.UUID(SERVICE_UUID).bytes[::-1]


class AdvertisementFault(enum.Enum):
    """Why an advertisement is not a node's (its value names the counter ``ble.adv.<value>``)."""

    TRUNCATED = "truncated"  # an AD structure runs past the end of the payload
    TOO_LONG = "too_long"  # more than 31 bytes
    NO_SERVICE_DATA = "no_service_data"  # no 128-bit service data for the node service
    WRONG_LENGTH = "wrong_length"  # the node service data is not peer id + counter
    BAD_NAME = "bad_name"  # the scan response's name is not UTF-8


class AdvertisementError(PresenceError, ValueError):
    """An advertisement that is not a node's; ``fault`` says why (one line, for logs and counters)."""

    def __init__(self, fault: AdvertisementFault, detail: str) -> None:
        super().__init__(f"not a presence node advertisement ({fault.value}): {detail}")
        self.fault = fault


@dataclass(frozen=True, slots=True)
class NodeAdvertisement:
    """What a node's advertisement says: who it is, and the low 16 bits of its newest counter."""

    peer_id: bytes
    counter: int

    def __post_init__(self) -> None:
        if len(self.peer_id) != PEER_ID_BYTES:
            raise ValueError(f"a peer id is {PEER_ID_BYTES} bytes, not {len(self.peer_id)}")
        if not 0 <= self.counter < COUNTER_MODULUS:
            raise ValueError(f"an advertised counter is 0..{COUNTER_MODULUS - 1}, not {self.counter}")


def frame_mtu(att_mtu: int) -> int:
    """The frame size (the link MTU) for a connection's ATT MTU: ``att_mtu - 3`` within 20..244."""
    return max(MIN_LINK_MTU, min(MAX_FRAME_BYTES, att_mtu - ATT_HEADER_BYTES))


def service_data(peer_id: bytes, counter: int) -> bytes:
    """The node service data after the UUID: ``peer_id(8) ‖ (counter mod 2^16) big-endian``."""
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"a record counter is 0..{MAX_COUNTER}, not {counter}")
    advert = NodeAdvertisement(peer_id, counter % COUNTER_MODULUS)  # checks the peer id
    return advert.peer_id + advert.counter.to_bytes(COUNTER_BYTES, "big")


def advertising_data(peer_id: bytes, counter: int) -> bytes:
    """The 31-byte advertising payload of a node (layout in the module docstring)."""
    data = SERVICE_UUID_LE + service_data(peer_id, counter)
    return bytes((2, AD_FLAGS, ADV_FLAGS, len(data) + 1, AD_SERVICE_DATA_UUID128)) + data


def _cut_utf8(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def scan_response(name: str) -> bytes:
    """The scan response: the service UUID list, then the name (cut to 11 bytes: Shortened)."""
    raw = _cut_utf8(name, SCAN_NAME_MAX_BYTES)
    kind = AD_NAME_COMPLETE if len(raw) == len(name.encode("utf-8")) else AD_NAME_SHORT
    return bytes((17, AD_UUID128_COMPLETE)) + SERVICE_UUID_LE + bytes((len(raw) + 1, kind)) + raw


def _structures(payload: bytes) -> list[tuple[int, bytes]]:
    """``(type, data)`` of each AD structure; a zero length ends the payload (Core Vol 3 C 11)."""
    if len(payload) > ADV_MAX_BYTES:
        raise AdvertisementError(
            AdvertisementFault.TOO_LONG, f"{len(payload)} bytes, legacy advertising carries {ADV_MAX_BYTES}"
        )
    found: list[tuple[int, bytes]] = []
    at = 0
    while at < len(payload):
        length = payload[at]
        if length == 0:
            break  # the rest is padding
        if at + 1 + length > len(payload):
            raise AdvertisementError(
                AdvertisementFault.TRUNCATED,
                f"an AD structure of length {length} at byte {at} runs past the {len(payload)} bytes",
            )
        found.append((payload[at + 1], payload[at + 2 : at + 1 + length]))
        at += 1 + length
    return found


def parse_service_data(data: bytes) -> NodeAdvertisement:
    """The node service data (after the UUID, as bleak's ``service_data[SERVICE_UUID]`` gives it)."""
    if len(data) != SERVICE_DATA_BYTES:
        raise AdvertisementError(
            AdvertisementFault.WRONG_LENGTH,
            f"node service data is {SERVICE_DATA_BYTES} bytes (peer id, counter), not {len(data)}",
        )
    return NodeAdvertisement(data[:PEER_ID_BYTES], int.from_bytes(data[PEER_ID_BYTES:], "big"))


def parse_advertising_data(payload: bytes) -> NodeAdvertisement:
    """A node's advertisement from the raw AD structures; :class:`AdvertisementError` otherwise."""
    for kind, data in _structures(payload):
        # Two copies cannot fit: each takes at least 18 of the 31 bytes.
        if kind == AD_SERVICE_DATA_UUID128 and data[:16] == SERVICE_UUID_LE:
            return parse_service_data(data[16:])
    raise AdvertisementError(
        AdvertisementFault.NO_SERVICE_DATA, f"no 128-bit service data for {SERVICE_UUID}"
    )


def parse_scan_response(payload: bytes) -> str | None:
    """The name in a scan response (complete or shortened), ``None`` if it has none."""
    for kind, data in _structures(payload):
        if kind in (AD_NAME_COMPLETE, AD_NAME_SHORT):
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise AdvertisementError(AdvertisementFault.BAD_NAME, "the local name is not UTF-8") from None
    return None


def resync_due(advertised: int, held: int | None) -> bool:
    """Whether a node advertising ``advertised`` has records newer (or other) than counter ``held``."""
    return held is None or held % COUNTER_MODULUS != advertised
