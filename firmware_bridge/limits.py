"""The serial protocol's limits, each once (docs/SERIAL_PROTOCOL.md).

``firmware_bridge/micropython/serial_protocol.py`` spells the same numbers for the dongle;
``tests/test_serial_protocol.py`` keeps the two equal.
"""

from __future__ import annotations

from typing import Final

#: The serial protocol's version, in HELLO and INFO. Bump on any change of a frame's layout.
PROTOCOL_VERSION: Final = 1
#: First bytes of every HELLO and INFO payload, before the version: a port that answers a HELLO
#: with a valid frame but another magic speaks some other CRC-checked protocol.
MAGIC: Final = b"PRES"
#: Largest payload of one frame (type and seq, CRC and escaping not counted).
MAX_PAYLOAD: Final = 300
#: Largest frame before escaping: type(1) + seq(1) + payload + CRC(2). The decoder never holds more.
MAX_FRAME: Final = 2 + MAX_PAYLOAD + 2
#: Largest frame on the wire: every byte escaped, plus the two FENDs.
MAX_WIRE_FRAME: Final = 2 * MAX_FRAME + 2
#: Largest radio payload in a TX or RX (LoRa's 255; ESP-NOW's 250 is below it; the MTU in INFO rules).
MAX_RADIO_PAYLOAD: Final = 255
#: RX header before the radio payload: rssi(2) snr(2) time(4).
RX_HEADER: Final = 8
#: Largest dongle id in INFO (an ESP32's MAC is 6 bytes).
MAX_DONGLE_ID: Final = 16
#: Largest LOG text, UTF-8 bytes (after the level byte).
MAX_LOG_TEXT: Final = MAX_PAYLOAD - 1
#: Largest TX queue a dongle may announce (credits are counted in one byte).
MAX_QUEUE: Final = 64
#: Silence (seconds) after which a driver calls ``idle()`` to drop a half-received frame: at
#: 115200 baud a whole max-length wire frame takes 53 ms, so 0.1 s never cuts a frame being sent.
FRAME_SILENCE: Final = 0.1
#: How long a host waits for the INFO answering its HELLO before it calls the port silent.
HELLO_TIMEOUT: Final = 1.0
#: How many HELLOs a host sends before giving up on a port (a dongle may still be booting).
HELLO_ATTEMPTS: Final = 3
#: The dongle's contention back-off (dongle.py, kept equal by tests/test_dongle.py): 1..BACKOFF_SLOTS
#: slots of a BACKOFF_FRAME-byte frame's airtime after each transmission and per listen-before-talk
#: deferral, at most MAX_LBT_DEFERRALS of those per frame.
BACKOFF_SLOTS: Final = 8
BACKOFF_FRAME: Final = 32
MAX_LBT_DEFERRALS: Final = 8
#: The longest a frame can wait at the head of a dongle's queue, in back-off slots.
MAX_BACKOFF_SLOTS_PER_FRAME: Final = (1 + MAX_LBT_DEFERRALS) * BACKOFF_SLOTS
