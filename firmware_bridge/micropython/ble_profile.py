"""The node's side of the BLE profile (docs/BLE_PROFILE.md): GATT UUIDs, MTU, advertisement.

The same constants and bytes as the host's ``agent/transports/ble_profile.py`` (its docstring has
the byte layout), for MicroPython: no typing, no dataclasses. It builds what the node puts on the
air; the BLE stack (aioble, ``bluetooth``) is the firmware's::

    adv = advertising_data(public_key[:8], counter)    # 31 bytes: flags, 128-bit service data
    resp = scan_response(device_name)                  # the service UUID list and the name
    mtu = frame_mtu(connection.mtu)                    # the largest frame to notify

``ProfileError`` (a ``ValueError``) is raised for a peer id or counter the host would refuse.
"""

SERVICE_UUID = "e66d0001-2abd-4fb0-aff5-f1cab6d1410c"
FRAME_UUID = "e66d0002-2abd-4fb0-aff5-f1cab6d1410c"

DEFAULT_ATT_MTU = 23
PREFERRED_ATT_MTU = 247
ATT_HEADER_BYTES = 3
MIN_LINK_MTU = 20
MAX_FRAME_BYTES = PREFERRED_ATT_MTU - ATT_HEADER_BYTES

ADV_MAX_BYTES = 31
ADV_FLAGS = 0x06
AD_FLAGS = 0x01
AD_UUID128_COMPLETE = 0x07
AD_NAME_SHORT = 0x08
AD_NAME_COMPLETE = 0x09
AD_SERVICE_DATA_UUID128 = 0x21
PEER_ID_BYTES = 8
COUNTER_BYTES = 2
COUNTER_MODULUS = 1 << (8 * COUNTER_BYTES)
MAX_COUNTER = 0xFFFFFFFF
SERVICE_DATA_BYTES = PEER_ID_BYTES + COUNTER_BYTES
SCAN_NAME_MAX_BYTES = ADV_MAX_BYTES - (2 + 16) - 2


class ProfileError(ValueError):
    pass


def uuid_le(text):
    """A 128-bit UUID's 16 bytes in air (little-endian) order."""
    raw = bytes.fromhex(text.replace("-", ""))
    return bytes(reversed(raw))


_SERVICE_LE = uuid_le(SERVICE_UUID)


def frame_mtu(att_mtu):
    """The largest frame for a connection's ATT MTU: ``att_mtu - 3`` within 20..244."""
    return max(MIN_LINK_MTU, min(MAX_FRAME_BYTES, att_mtu - ATT_HEADER_BYTES))


def service_data(peer_id, counter):
    """``peer_id(8) ‖ (counter mod 2^16) big-endian``: the service data after the UUID."""
    if len(peer_id) != PEER_ID_BYTES:
        raise ProfileError("a peer id is 8 bytes, not %d" % len(peer_id))
    if not 0 <= counter <= MAX_COUNTER:
        raise ProfileError("a record counter is 0..%d, not %d" % (MAX_COUNTER, counter))
    low = counter % COUNTER_MODULUS
    return bytes(peer_id) + bytes((low >> 8, low & 0xFF))


def advertising_data(peer_id, counter):
    """The 31-byte advertising payload: flags, then the node service data with id and counter."""
    data = _SERVICE_LE + service_data(peer_id, counter)
    return bytes((2, AD_FLAGS, ADV_FLAGS, len(data) + 1, AD_SERVICE_DATA_UUID128)) + data


def _cut_utf8(raw, limit):
    """``raw`` (UTF-8) cut to ``limit`` bytes, never inside a character."""
    if len(raw) <= limit:
        return raw
    end = limit
    while end > 0 and (raw[end] & 0xC0) == 0x80:
        end -= 1  # raw[end] continues the character before it: cut before that character
    return raw[:end]


def scan_response(name):
    """The scan response: the service UUID list, then the name (cut to 11 bytes: Shortened)."""
    full = name.encode("utf-8")
    raw = _cut_utf8(full, SCAN_NAME_MAX_BYTES)
    kind = AD_NAME_COMPLETE if len(raw) == len(full) else AD_NAME_SHORT
    return bytes((17, AD_UUID128_COMPLETE)) + _SERVICE_LE + bytes((len(raw) + 1, kind)) + raw
