"""The dongle profiles in hw_configs/dongles pass the checks flash-dongle makes; hw_configs/README.md's
region table is the one in agent/core/duty_cycle.py; the firmware files all belong to an image."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from dongle_scripts_support import DONGLE_PROFILES, ROOT

from agent.core.duty_cycle import REGIONS
from firmware_bridge.dongle_config import CHIP_OFFSETS, CONFIG_NAMES, load_profile
from firmware_bridge.images import DONGLE, FIRMWARE_DIR, NODE
from firmware_bridge.protocol import REGION_NAMES, RegionCode

PROFILES = sorted(DONGLE_PROFILES.glob("*.toml"))
README = ROOT / "hw_configs" / "README.md"
BEGIN, END = "<!-- regions: begin (tests/test_dongle_profiles.py) -->", "<!-- regions: end -->"


def test_there_are_profiles_for_eu868_us915_and_espnow() -> None:
    assert {p.stem.rsplit("-", 1)[-1] for p in PROFILES} >= {"eu868", "us915", "espnow"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_passes_the_checks_and_is_in_the_region_its_name_says(path: Path) -> None:
    profile = load_profile(path)
    assert profile.chip in CHIP_OFFSETS
    region = RegionCode(profile.settings.to_json()["region"]).name  # type: ignore[arg-type]
    implied = {"eu868": "EU868_", "us915": "US915", "espnow": "NONE"}
    (prefix,) = [v for k, v in implied.items() if path.stem.endswith(k)]
    assert region.startswith(prefix)
    if profile.settings.radio != "espnow":
        assert {"sck", "mosi", "miso", "cs", "reset"} <= set(profile.settings.pins)


def render_regions() -> str:
    lines = [
        "| region (`region` in profiles and `[radio]`) | code in dongle.json | band | duty cycle | dwell "
        "| max TX power | source |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for code in RegionCode:
        r = REGIONS[REGION_NAMES[code]]
        band = (
            "2.4 GHz"
            if r.low_hz is None or r.high_hz is None
            else f"{r.low_hz / 1e6:g}-{r.high_hz / 1e6:g} MHz"
        )
        duty = "none" if r.duty_cycle >= 1 else f"{r.duty_cycle * 100:g} %"
        dwell = "none" if r.dwell is None else f"{r.dwell * 1000:g} ms"
        power = "-" if r.max_tx_power_dbm is None else f"{r.max_tx_power_dbm:g} dBm"
        lines.append(f"| `{code.name}` | {int(code)} | {band} | {duty} | {dwell} | {power} | {r.source} |")
    return "\n".join(lines)


def test_the_readmes_region_table_is_the_codes() -> None:
    text = README.read_text(encoding="utf-8")
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == render_regions(), f"paste this between the markers in {README}:\n{render_regions()}"


def test_the_pi_profile_with_a_dongle_agrees_with_the_dongle_profile_it_names() -> None:
    pi = tomllib.loads((ROOT / "hw_configs" / "pi4-lora-eu868.toml").read_text(encoding="utf-8"))["radio"]
    dongle = load_profile(DONGLE_PROFILES / "heltec-lora32-v2-eu868.toml").settings.to_json()
    assert pi["region"] == RegionCode(dongle["region"]).name  # type: ignore[arg-type]
    for name in CONFIG_NAMES.values():
        if name in pi and name in dongle and name not in ("region", "channel"):  # channel: ESP-NOW's
            assert pi[name] == dongle[name], name


def test_every_firmware_file_belongs_to_an_image_and_images_name_flat_modules() -> None:
    for image in (DONGLE, NODE):
        names = [*image.files, *([image.main] if image.main else [])]
        assert len(set(names)) == len(names)
        assert all(n.endswith(".py") and "/" not in n and n != "main.py" for n in names)
    present = {p.name for p in FIRMWARE_DIR.glob("*.py")}
    assert present <= {*DONGLE.files, DONGLE.main, *NODE.files, NODE.main}, (
        "a firmware file no image installs"
    )
    for image in (DONGLE, NODE):
        assert len(image.placements()) == len(image.files) + 1  # every file it names is in the tree
