"""A node's flash (firmware_bridge/micropython/node_store.py), under real MicroPython's filesystem.

What is checked: counters never repeat across reboots (a new CounterFile on the same file starts at
the ceiling) and the ceiling is on flash before a counter below it is returned; a newer copy of
the node's own record moves the counter past it, durably; power lost mid-write (a leftover
temporary file) loses nothing; a damaged counter file is refused, never restarted; the key and
configuration are read with defaults and refused with one line naming the file when wrong; a fleet
certificate is read when present, nothing when absent (an open mesh), and refused when empty or too big.
"""

from __future__ import annotations

from typing import Any

import pytest
from micropython_support import require_micropython, run_batch

BATCH = """
import node_store as ns

def ceiling():
    with open("node.counter") as f:
        return int(f.read())

out = {}
c = ns.CounterFile("node.counter", block=4)
first = [c.next() for _ in range(6)]
out["first"] = first
out["ceiling_after_first"] = ceiling()
c2 = ns.CounterFile("node.counter", block=4)     # a reboot
out["after_reboot"] = [c2.next() for _ in range(2)]
c2.advance_past(100)
out["ceiling_after_advance"] = ceiling()
out["after_advance"] = c2.next()
with open("node.counter.tmp", "w") as f:           # power lost mid-write
    f.write("9")
out["after_torn_write"] = ns.CounterFile("node.counter", block=4).next()
with open("bad.counter", "w") as f:
    f.write("garbage")
try:
    ns.CounterFile("bad.counter")
    out["damaged"] = None
except ns.StoreError as e:
    out["damaged"] = str(e)
try:
    ns.load_seed("missing.key")
except ns.StoreError as e:
    out["no_key"] = str(e)
with open("node.key", "wb") as f:
    f.write(bytes(range(32)))
out["seed"] = ns.load_seed("node.key").hex()
out["defaults"] = ns.load_config("absent.json")
with open("node.json", "w") as f:
    f.write('{"name": "leaf-kitchen", "metadata": {"room": "kitchen"}, "router": "45bf4c409d54cd65"}')
cfg = ns.load_config("node.json")
out["config"] = [cfg["name"], cfg["metadata"], cfg["router"].hex(), cfg["keepalive_s"]]
ns.save_metadata({"room": "hall"}, "node.json")
out["saved"] = ns.load_config("node.json")["metadata"]
errors = []
for text in ('[1]', '{"nmae": "x"}', '{"metadata": {"t": 1.5}}', '{"advertising_interval_ms": 5}', 'nope'):
    with open("bad.json", "w") as f:
        f.write(text)
    try:
        ns.load_config("bad.json")
        errors.append(None)
    except ns.StoreError as e:
        errors.append(str(e))
out["errors"] = errors
out["no_cert"] = ns.load_certificate("absent.cert").hex()
with open("node.cert", "wb") as f:
    f.write(bytes.fromhex("d284") + b"cert")
out["cert"] = ns.load_certificate("node.cert").hex()
for name, data in (("empty.cert", b""), ("big.cert", bytes(4097))):
    with open(name, "wb") as f:
        f.write(data)
    try:
        ns.load_certificate(name)
        out[name] = None
    except ns.StoreError as e:
        out[name] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def flash() -> Any:
    require_micropython()
    return run_batch(BATCH, {})


def test_counters_never_repeat_across_reboots_and_the_ceiling_is_durable_first(flash: Any) -> None:
    assert flash["first"] == [1, 2, 3, 4, 5, 6]
    assert flash["ceiling_after_first"] == 9  # 6 was handed out only once 9 was on flash
    assert flash["after_reboot"] == [9, 10]  # 7 and 8 are skipped, never reused


def test_a_newer_copy_of_its_own_record_moves_the_counter_past_it_durably(flash: Any) -> None:
    assert flash["after_advance"] == 101
    assert flash["ceiling_after_advance"] >= 102
    assert flash["after_torn_write"] >= 102  # the leftover temporary file changed nothing


def test_a_damaged_counter_file_is_refused_never_restarted(flash: Any) -> None:
    assert flash["damaged"].startswith("bad.counter: not a counter ceiling")


def test_the_key_and_configuration_are_read_with_defaults(flash: Any) -> None:
    assert flash["no_key"] == "missing.key: expected the node's 32-byte key (run scripts/provision-node)"
    assert flash["seed"] == bytes(range(32)).hex()
    assert flash["defaults"]["advertising_interval_ms"] == 250
    assert flash["config"] == ["leaf-kitchen", {"room": "kitchen"}, "45bf4c409d54cd65", 5.0]
    assert flash["saved"] == {"room": "hall"}


def test_a_wrong_configuration_is_refused_with_one_line_naming_the_file(flash: Any) -> None:
    first, unknown, floats, interval, not_json = flash["errors"]
    assert first == "bad.json: expected a JSON object"
    assert unknown == "bad.json: unknown key 'nmae'"
    assert floats.startswith("bad.json: metadata:")
    assert interval == "bad.json: advertising_interval_ms must be 20..10240 (BLE's range)"
    assert not_json == "bad.json: not JSON"


def test_the_certificate_is_read_when_present_and_a_bad_one_is_refused(flash: Any) -> None:
    assert flash["no_cert"] == ""
    assert flash["cert"] == b"\xd2\x84cert".hex()
    expected = "expected a certificate of 1..4096 bytes (presence-agent fleet-ca issue)"
    assert flash["empty.cert"] == f"empty.cert: {expected}"
    assert flash["big.cert"] == f"big.cert: {expected}"
