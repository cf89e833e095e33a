"""Constants of broadcast radio media, each defined once.

They live apart from :mod:`agent.core.limits` because they describe the physical medium and the
regulation it is used under (Semtech's LoRa modems, Espressif's ESP-NOW frames, ETSI / FCC duty
cycles, the log-distance path-loss defaults), not this project's wire format: changing one of them
changes a model, never a message. The modules that use them (:mod:`agent.core.airtime`,
:mod:`agent.core.duty_cycle`, :mod:`agent.core.distance`, :mod:`agent.sim.radio`) cite their sources.
"""

from typing import Final

# ---------------------------------------------------------------- LoRa (Semtech SX126x / SX127x)

#: The largest LoRa payload the modems' FIFO and length field allow (bytes).
LORA_MAX_PAYLOAD: Final = 255
#: Low-data-rate optimisation is mandated when a symbol lasts longer than this (seconds).
LORA_LDRO_SYMBOL_TIME: Final = 0.016
#: Spreading factors the SX126x family supports (the SX127x family: 6..12).
LORA_SF_MIN: Final = 5
LORA_SF_MAX: Final = 12
#: Narrowest and widest LoRa bandwidth of the SX126x family (Hz).
LORA_BANDWIDTH_MIN: Final = 7_800.0
LORA_BANDWIDTH_MAX: Final = 500_000.0
#: Demodulator SNR limit per spreading factor (dB): below it a frame is not received
#: (SX1276 datasheet table 13; SX1261/2 datasheet for SF5, SF6).
LORA_SNR_LIMIT_DB: Final = {5: -2.5, 6: -5.0, 7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}

# ---------------------------------------------------------------- ESP-NOW (Espressif, ESP-IDF docs)

#: ESP-NOW v1.0's largest payload (ESP_NOW_MAX_DATA_LEN, bytes).
ESPNOW_MAX_PAYLOAD: Final = 250
#: Bytes around the payload in the vendor-specific action frame: MAC header 24, category 1,
#: organisation id 3, random values 4, vendor element header 7, FCS 4.
ESPNOW_FRAME_OVERHEAD: Final = 43
#: ESP-NOW's default PHY rate (bit/s).
ESPNOW_DEFAULT_RATE: Final = 1_000_000.0
#: The 802.11b DSSS long PLCP preamble and header at 1 Mbit/s: 144 + 48 bits (seconds).
ESPNOW_PHY_PREAMBLE: Final = 192e-6

# ---------------------------------------------------------------- duty cycle

#: The regulators' observation period: duty cycle is the share of any hour spent transmitting (s).
DUTY_CYCLE_WINDOW: Final = 3600.0
#: Share of a transmitter's allowance that presence traffic may use (Meshtastic gives NodeInfo half).
PRESENCE_SHARE: Final = 0.5
#: A medium's presence traffic is paced (agent.core.medium.AirtimeBudget.pace): it may burst this
#: share of its hourly budget, then goes at the budget's mean rate. Unpaced, a 30-Pi SF7 field spent
#: its hour in the first five minutes of forming and sent only keepalives for the other 55
#: (measured: 36 % of the graph held after 4 h). Measured with the pace alone, before the
#: forming rules of agent.core.medium: 0.1 paced handshakes too thinly for a 3-node
#: hidden-terminal field to form; 1.0 held 50 % at 3 h; 0.5 held 99 % at 2.5 h.
PACING_BURST_SHARE: Final = 0.5
#: Entries a duty-cycle ledger keeps before merging the oldest two (see duty_cycle.DutyCycle).
DUTY_CYCLE_MAX_ENTRIES: Final = 1024
#: Seconds of airtime a ledger keeps in hand against float rounding of its sums (1 ns).
DUTY_CYCLE_SLACK: Final = 1e-9

# ---------------------------------------------------------------- distance and link quality

#: Log-distance defaults as ESPresense ships them: RSSI at 1 m (dBm) and path-loss exponent.
RSSI_AT_1M: Final = -59.0
PATH_LOSS_EXPONENT: Final = 2.7
#: Weight of a new sample in the smoothed RSSI and SNR (exponentially weighted moving average).
SMOOTHING_ALPHA: Final = 0.15
#: Sequence numbers a reception-ratio window covers.
RECEPTION_WINDOW: Final = 64
#: A distance is reported again only when it moved by both this fraction and this many metres.
DISTANCE_REPORT_RATIO: Final = 0.4
DISTANCE_REPORT_METRES: Final = 1.0

# ---------------------------------------------------------------- the simulated medium

#: A transmission survives an overlapping one when it is this much stronger at the receiver (dB).
CAPTURE_MARGIN_DB: Final = 6.0
#: Thermal noise density at 290 K (dBm/Hz) and a typical LoRa receiver noise figure (dB).
THERMAL_NOISE_DBM_HZ: Final = -174.0
RECEIVER_NOISE_FIGURE_DB: Final = 6.0
#: The simulator's RSSI at 1 m (dBm): 14 dBm out, ~31 dB of free-space loss at 868 MHz over 1 m,
#: and some antenna and cable loss. With the exponent 2.7 that gives SF7/125 kHz ~3 km of range.
SIM_RSSI_AT_1M: Final = -30.0
