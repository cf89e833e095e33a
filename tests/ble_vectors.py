"""The BLE profile's test vectors (docs/BLE_PROFILE.md), made with ``agent.transports.ble_profile``.

::

    python tests/ble_vectors.py --write   # (re)writes docs/ble-profile-vectors.json
    python tests/ble_vectors.py           # exit 1 if the committed file differs from what the host makes

``constants``: the UUIDs and sizes both sides spell. ``advertisements``: a peer id and counter,
the 31-byte advertising payload and what it parses to. ``scan_responses``: a name and the scan
response (cut names become Shortened Local Names). ``frame_mtu``: ATT MTU → frame size.
``refused``: advertising payloads that are not a node's, each with its ``AdvertisementFault``.
A node implementation passes when it makes every advertisement and scan response from its inputs
(tests/test_ble_profile.py runs firmware_bridge/micropython/ble_profile.py so under MicroPython).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: import the code of this checkout
    sys.path.insert(0, str(ROOT))

from vectors_support import vectors_main  # noqa: E402

from agent.transports import ble_profile as bp  # noqa: E402

VECTORS_PATH = ROOT / "docs" / "ble-profile-vectors.json"

#: The leaf profile's leaf peer id (docs/leaf-profile-vectors.json key.leaf.peer_id).
LEAF_ID = bytes.fromhex("54b2a9095bf59535")

#: The constants both modules spell, by name.
CONSTANTS = (
    "SERVICE_UUID",
    "FRAME_UUID",
    "DEFAULT_ATT_MTU",
    "PREFERRED_ATT_MTU",
    "ATT_HEADER_BYTES",
    "MAX_FRAME_BYTES",
    "ADV_MAX_BYTES",
    "ADV_FLAGS",
    "COUNTER_MODULUS",
    "SERVICE_DATA_BYTES",
    "SCAN_NAME_MAX_BYTES",
)

ADVERTISEMENTS = (
    ("leaf.counter1", LEAF_ID, 1),
    ("leaf.counter65541", LEAF_ID, 65_541),  # wraps to 5
    ("leaf.counter_max", LEAF_ID, 2**32 - 1),
    ("zero.counter0", bytes(8), 0),
    ("ff.counter258", b"\xff" * 8, 258),
)

NAMES = (
    ("short", "leaf"),
    ("exactly11", "leaf-kitche"),
    ("cut", "leaf-kitchen"),  # 12 bytes: shortened to 11
    ("utf8.cut", "leaf€€€"),  # 13 bytes; a cut at 11 would split the third €: 10 bytes
    ("empty", ""),
)

ATT_MTUS = (23, 24, 100, 185, 247, 248, 517)


def _good() -> bytes:
    return bp.advertising_data(LEAF_ID, 1)


#: (name, payload, fault): advertisements a Pi refuses.
REFUSED: tuple[tuple[str, bytes, bp.AdvertisementFault], ...] = (
    ("truncated.last", _good()[:-1], bp.AdvertisementFault.TRUNCATED),
    ("truncated.header", _good()[:4], bp.AdvertisementFault.TRUNCATED),
    ("too_long", _good() + b"\x00", bp.AdvertisementFault.TOO_LONG),
    ("flags_only", _good()[:3], bp.AdvertisementFault.NO_SERVICE_DATA),
    ("empty", b"", bp.AdvertisementFault.NO_SERVICE_DATA),
    (
        "wrong_uuid",
        _good()[:5] + bytes([_good()[5] ^ 0x01]) + _good()[6:],
        bp.AdvertisementFault.NO_SERVICE_DATA,
    ),
    (
        "service_data.short",
        bytes((2, 1, 6, 26, 0x21)) + _good()[5:21] + LEAF_ID + b"\x00",
        bp.AdvertisementFault.WRONG_LENGTH,
    ),
    (
        "service_data.uuid_only",
        bytes((2, 1, 6, 17, 0x21)) + _good()[5:21],
        bp.AdvertisementFault.WRONG_LENGTH,
    ),
    ("uuid_cut", bytes((13, 0x21)) + _good()[5:17], bp.AdvertisementFault.NO_SERVICE_DATA),
    ("after_padding", _good()[:3] + b"\x00" + _good()[3:30], bp.AdvertisementFault.NO_SERVICE_DATA),
    ("zero_length_start", b"\x00" + _good()[:30], bp.AdvertisementFault.NO_SERVICE_DATA),
)


def advert_json(name: str, peer_id: bytes, counter: int) -> dict[str, Any]:
    payload = bp.advertising_data(peer_id, counter)
    parsed = bp.parse_advertising_data(payload)
    return {
        "name": name,
        "inputs": {"peer_id": peer_id.hex(), "counter": counter},
        "hex": payload.hex(),
        "parsed": {"peer_id": parsed.peer_id.hex(), "counter": parsed.counter},
    }


def build() -> dict[str, Any]:
    return {
        "about": (
            "Test vectors of docs/BLE_PROFILE.md, made by tests/ble_vectors.py with "
            "agent.transports.ble_profile and checked by tests/test_ble_profile.py. Bytes are lower-case hex."
        ),
        "constants": {name: getattr(bp, name) for name in CONSTANTS},
        "advertisements": [advert_json(*a) for a in ADVERTISEMENTS],
        "scan_responses": [
            {
                "name": name,
                "inputs": {"name": text},
                "hex": bp.scan_response(text).hex(),
                "parsed": bp.parse_scan_response(bp.scan_response(text)),
            }
            for name, text in NAMES
        ],
        "frame_mtu": [{"att_mtu": m, "frame_mtu": bp.frame_mtu(m)} for m in ATT_MTUS],
        "refused": [
            {"name": name, "hex": payload.hex(), "fault": fault.value} for name, payload, fault in REFUSED
        ],
    }


def main(argv: list[str]) -> int:
    return vectors_main(argv, VECTORS_PATH, ROOT, build, __doc__ or "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
