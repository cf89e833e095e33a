"""The serial protocol to radio dongles (LoRa / ESP-NOW class).

Reserved for the dongle issue: host driver, MicroPython firmware and emulator.
The engine's constrained-link support (:class:`agent.core.engine.LinkSpec` with
a small MTU, a byte budget and frame overhead) is what the driver will report.
"""
