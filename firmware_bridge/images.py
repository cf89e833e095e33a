"""What goes onto a board: the one list of firmware files per kind of device.

An :class:`Image` names files of ``firmware_bridge/micropython/`` (copied flat to the board's
root, beside each other, as the firmware imports them), the one installed as ``main.py`` (the
boot entry point), the settings file the firmware reads at boot, and the micropython-lib
packages each radio needs (installed with ``mpremote mip install``)::

    board flash:  <files...>  main.py (= image.main)  <image.config>  lib/<mip packages>

:data:`DONGLE` is the serial radio dongle (scripts/flash-dongle); :data:`NODE` the BLE node
(scripts/provision-node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The firmware sources in this package (installed with it as package data).
FIRMWARE_DIR = Path(__file__).resolve().parent / "micropython"


class ImageError(ValueError):
    """An image's files are not all there."""


@dataclass(frozen=True, slots=True)
class Placement:
    """One file to copy: from ``source`` on the host to ``target`` on the board's flash."""

    source: Path
    target: str


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    #: Library modules, copied under their own names.
    files: tuple[str, ...]
    #: The module copied as ``main.py`` (None: the image has no entry point yet).
    main: str | None
    #: The settings file the firmware reads at boot, on the board's flash.
    config: str
    #: micropython-lib packages per radio (``mpremote mip install``), by dongle.json ``radio``.
    mip_packages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def placements(self, source_dir: Path = FIRMWARE_DIR) -> tuple[Placement, ...]:
        """Every file of the image (libraries first, ``main.py`` last); ImageError if any is missing."""
        names = list(self.files) + ([self.main] if self.main else [])
        missing = [name for name in names if not (source_dir / name).is_file()]
        if missing:
            raise ImageError(
                f"{source_dir} is missing {', '.join(missing)} of the {self.name} firmware: "
                "use a checkout that has them (or --source DIR)"
            )
        placed = [Placement(source_dir / name, name) for name in self.files]
        if self.main:
            placed.append(Placement(source_dir / self.main, "main.py"))
        return tuple(placed)


DONGLE = Image(
    name="dongle",
    files=(
        "serial_protocol.py",
        "dongle.py",
        "dongle_settings.py",
        "airtime.py",
        "duty_cycle.py",
        "radio_lora.py",
        "radio_sx127x.py",
        "radio_sx126x.py",
        "radio_espnow.py",
    ),
    main="dongle_main.py",
    config="dongle.json",
    # micropython-lib's LoRa drivers (each pulls in the base "lora" package); ESP-NOW is built in.
    mip_packages={"sx127x": ("lora-sx127x",), "sx126x": ("lora-sx126x",), "espnow": ()},
)

#: The BLE node (issue 12): the signing library, the leaf protocol, the BLE profile and the flash
#: store, with ``node_main.py`` on micropython-lib's aioble as its entry point.
NODE = Image(
    name="node",
    files=(
        "cbor.py",
        "cose.py",
        "ed25519.py",
        "records.py",
        "sha512.py",
        "leaf.py",
        "ble_profile.py",
        "node_store.py",
    ),
    main="node_main.py",
    config="node.json",
    mip_packages={"ble": ("aioble",)},
)
