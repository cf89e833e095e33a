"""An ESP32's own Wi-Fi radio as an ESP-NOW broadcast radio (MicroPython's ``espnow`` module).

Frames go to the broadcast peer ``ff:ff:ff:ff:ff:ff`` on the station interface (``network.WLAN(
STA_IF)`` active, not connected) on one Wi-Fi channel; what is heard comes from ``irecv(0)``, its
RSSI from ``peers_table`` (ESP32 only: ``{mac: [rssi, time_ms]}``). ESP-NOW gives no SNR and no
channel activity detection (its MAC does carrier sense by itself), so ``channel_busy()`` and
``noise_floor_dbm()`` are None and RX frames carry "not measured" SNR.

CONFIG keys: 9 CHANNEL (1..13; another value is not applied) and 6 TX_POWER_DBM (clamped to
2..20 dBm, what ``WLAN.config(txpower=...)`` accepts on an ESP32). ``EspNowSettings`` is pure and
tested under CPython and MicroPython; ``EspNowRadio`` and ``make_radio`` follow MicroPython's espnow
documentation and compile with mpy-cross, and are **not verified on hardware**. No ``pins``.
"""

from airtime import ESPNOW_MAX_PAYLOAD, espnow_airtime_us

KIND = 3  # serial protocol RadioKind.ESP_NOW
TX_POWER, CHANNEL = 6, 9
CHANNELS = (1, 13)
POWER_RANGE = (2, 20)
BROADCAST = b"\xff" * 6


class EspNowSettings:
    """The fields in force; ``settle(asked)`` applies what ESP-NOW can take."""

    def __init__(self):
        self.fields = {TX_POWER: 14, CHANNEL: 1}

    def settle(self, asked):
        applied = {}
        if CHANNEL in asked and CHANNELS[0] <= asked[CHANNEL] <= CHANNELS[1]:
            applied[CHANNEL] = asked[CHANNEL]
        if TX_POWER in asked:
            applied[TX_POWER] = max(POWER_RANGE[0], min(POWER_RANGE[1], asked[TX_POWER]))
        self.fields.update(applied)
        return applied


class EspNowRadio:
    """The dongle's radio interface on ESP-NOW (see dongle.py's docstring)."""

    kind = KIND
    mtu = ESPNOW_MAX_PAYLOAD

    def __init__(self, espnow_module, network_module):
        self._sta = network_module.WLAN(network_module.STA_IF)
        self._sta.active(True)
        self._sta.disconnect()
        self._e = espnow_module.ESPNow()
        self._e.active(True)
        self._e.add_peer(BROADCAST)
        self._settings = EspNowSettings()
        self._sent = False
        self._apply()

    def _apply(self):
        f = self._settings.fields
        self._sta.config(channel=f[CHANNEL], txpower=f[TX_POWER])

    def configure(self, fields):
        applied = self._settings.settle(fields)
        if applied:
            self._apply()
        return applied

    def settings(self):
        return dict(self._settings.fields)

    def airtime_us(self, payload_len):
        return espnow_airtime_us(payload_len)

    def send(self, payload):
        self._e.send(BROADCAST, payload, False)  # a broadcast is never acknowledged: do not wait
        self._sent = True

    def channel_busy(self):
        return None

    def noise_floor_dbm(self):
        return None

    def poll(self):
        """``(sent, packet)`` as radio_lora.LoRaRadio.poll: send() returns once the frame is queued
        to the Wi-Fi driver, so it counts as finished at the next poll."""
        sent, self._sent = self._sent, False
        mac, msg = self._e.irecv(0)
        if mac is None:
            return sent, None
        peer = self._e.peers_table.get(bytes(mac))
        rssi = peer[0] if peer else -127
        return sent, (bytes(msg), rssi, None)


def make_radio(pins):
    """The ESP32's own radio (ESP-NOW needs no pins)."""
    import espnow
    import network

    return EspNowRadio(espnow, network)
