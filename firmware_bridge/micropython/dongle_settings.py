"""The dongle's boot settings: ``dongle.json`` on its flash, read into a plain dict.

``dongle.json`` is one JSON object (scripts/configure-dongle writes it)::

    {"radio": "sx127x" | "sx126x" | "espnow",
     "pins": {...},                  # per radio driver: spi, sck, mosi, miso, cs, reset, dio0, dio1, busy
     "region": 1, "frequency_hz": 868100000, "bandwidth_hz": 125000, "spreading_factor": 7,
     "coding_rate": 5, "tx_power_dbm": 14, "preamble_symbols": 8, "sync_word": 18, "channel": 1,
     "status_interval_s": 0,         # the CONFIG keys in lower case, the serial protocol's meanings
     "queue_capacity": 8}            # TX slots, 1..64

Missing keys take :data:`DEFAULTS`. A value of the wrong type or range, or an unknown key, is a
``SettingsError`` (a ``ValueError``) naming the key, so ``dongle_main`` can log one line and boot on
the defaults rather than not boot at all. The radio driver still clamps what its chip cannot do
(the CONFIG echo says what is in force).
"""

import json

from serial_protocol import CONFIG, MAX_QUEUE, ProtocolError, encode_payload

#: CONFIG key (serial protocol ConfigKey) -> its name in dongle.json.
CONFIG_NAMES = {
    1: "region",
    2: "frequency_hz",
    3: "bandwidth_hz",
    4: "spreading_factor",
    5: "coding_rate",
    6: "tx_power_dbm",
    7: "preamble_symbols",
    8: "sync_word",
    9: "channel",
    10: "status_interval_s",
}
RADIO_NAMES = ("sx127x", "sx126x", "espnow")

DEFAULTS = {
    "radio": "sx127x",
    "pins": {},
    "region": 1,  # EU868 g1
    "frequency_hz": 868100000,
    "bandwidth_hz": 125000,
    "spreading_factor": 7,
    "coding_rate": 5,
    "tx_power_dbm": 14,
    "preamble_symbols": 8,
    "sync_word": 0x12,
    "channel": 1,
    "status_interval_s": 0,
    "queue_capacity": 8,
}


class SettingsError(ValueError):
    pass


def _integer(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SettingsError("dongle.json: %s is %r, expected an integer in %d..%d" % (name, value, low, high))
    return value


def _field(key, name, value):
    # The serial protocol's own width check for the key (CONFIG_FORMATS), not a copy of it.
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            encode_payload(CONFIG, {"fields": [(key, value)]})
            return value
        except ProtocolError:
            pass
    raise SettingsError(
        "dongle.json: %s is %r, expected an integer of its CONFIG field's width" % (name, value)
    )


def parse(obj):
    """The settings of a dongle.json object (a dict), defaults filled in; SettingsError if invalid."""
    if not isinstance(obj, dict):
        raise SettingsError("dongle.json: expected a JSON object, got %s" % type(obj).__name__)
    out = dict(DEFAULTS)
    known = set(DEFAULTS)
    for name in obj:
        if name not in known:
            raise SettingsError("dongle.json: unknown key %r (known: %s)" % (name, ", ".join(sorted(known))))
    radio = obj.get("radio", out["radio"])
    if radio not in RADIO_NAMES:
        raise SettingsError("dongle.json: radio is %r, expected one of %s" % (radio, ", ".join(RADIO_NAMES)))
    out["radio"] = radio
    pins = obj.get("pins", {})
    if not isinstance(pins, dict):
        raise SettingsError("dongle.json: pins must be an object, got %s" % type(pins).__name__)
    out["pins"] = dict(pins)
    for key, name in CONFIG_NAMES.items():
        if name in obj:
            out[name] = _field(key, name, obj[name])
    out["queue_capacity"] = _integer(
        "queue_capacity", obj.get("queue_capacity", out["queue_capacity"]), 1, MAX_QUEUE
    )
    return out


def loads(text):
    """:func:`parse` of JSON text; a syntax error is a SettingsError too."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise SettingsError("dongle.json is not valid JSON") from None
    return parse(obj)


def config_fields(settings):
    """The CONFIG fields of ``settings``: {key: value}, every key."""
    return {key: settings[name] for key, name in CONFIG_NAMES.items()}
