"""The BLE profile (docs/BLE_PROFILE.md): the host module, the node module and the vectors agree,
the advertisement fits legacy advertising, and what is not a node's advertisement is a typed error."""

from __future__ import annotations

import importlib.util
import json
import uuid
from types import ModuleType
from typing import Any

import ble_vectors
import pytest
import vectors_support
from bumble.core import UUID as BumbleUUID
from bumble.core import AdvertisingData
from hypothesis import given
from hypothesis import strategies as st
from micropython_support import FIRMWARE, require_micropython, run_batch

from agent.core.limits import MAX_COUNTER, MIN_LINK_MTU, PEER_ID_BYTES
from agent.transports import ble_profile as bp

VECTORS: dict[str, Any] = json.loads(ble_vectors.VECTORS_PATH.read_text(encoding="utf-8"))

peer_ids = st.binary(min_size=PEER_ID_BYTES, max_size=PEER_ID_BYTES)
counters = st.integers(min_value=0, max_value=MAX_COUNTER)


def load_node_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ble_profile", FIRMWARE / "ble_profile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NODE = load_node_module()


# --- the host module ------------------------------------------------------------------------------


def test_the_committed_vectors_are_what_the_host_makes() -> None:
    assert vectors_support.render(ble_vectors.build()) == ble_vectors.VECTORS_PATH.read_text(encoding="utf-8")


@given(peer_ids, counters)
def test_an_advertisement_fills_legacy_advertising_flags_included(peer_id: bytes, counter: int) -> None:
    payload = bp.advertising_data(peer_id, counter)
    assert len(payload) == bp.ADV_MAX_BYTES == 31
    assert payload[:3] == bytes.fromhex("020106")
    assert bp.parse_advertising_data(payload) == bp.NodeAdvertisement(peer_id, counter % 65536)


@given(st.text(max_size=40))
def test_a_scan_response_fits_and_cuts_names_between_characters(name: str) -> None:
    payload = bp.scan_response(name)
    assert len(payload) <= bp.ADV_MAX_BYTES
    shown = bp.parse_scan_response(payload)
    assert shown is not None and name.startswith(shown)
    assert len(shown.encode()) <= bp.SCAN_NAME_MAX_BYTES
    cut = shown != name
    assert payload[19] == (bp.AD_NAME_SHORT if cut else bp.AD_NAME_COMPLETE)


def test_an_independent_decoder_reads_the_service_the_id_and_the_name() -> None:
    # Bumble's own AD parser: the bytes are standard AD structures, not just ours.
    for vector in VECTORS["advertisements"]:
        ad = AdvertisingData.from_bytes(bytes.fromhex(vector["hex"]))
        service, data = ad.get(AdvertisingData.SERVICE_DATA_128_BIT_UUID)
        assert service == BumbleUUID(bp.SERVICE_UUID)
        assert data.hex() == vector["parsed"]["peer_id"] + f"{vector['parsed']['counter']:04x}"
        assert ad.get(AdvertisingData.FLAGS) == bp.ADV_FLAGS
    for vector in VECTORS["scan_responses"]:
        ad = AdvertisingData.from_bytes(bytes.fromhex(vector["hex"]))
        assert ad.get(AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS) == [
            BumbleUUID(bp.SERVICE_UUID)
        ]
        name = ad.get(AdvertisingData.COMPLETE_LOCAL_NAME)
        if name is None:
            name = ad.get(AdvertisingData.SHORTENED_LOCAL_NAME)
        assert name == vector["parsed"]


def test_the_uuids_are_128_bit_and_distinct() -> None:
    service, frame = uuid.UUID(bp.SERVICE_UUID), uuid.UUID(bp.FRAME_UUID)
    assert service != frame and str(service) == bp.SERVICE_UUID and str(frame) == bp.FRAME_UUID


def test_frames_are_the_att_payload_within_the_link_limits() -> None:
    for row in VECTORS["frame_mtu"]:
        assert bp.frame_mtu(row["att_mtu"]) == row["frame_mtu"]
    assert bp.frame_mtu(bp.DEFAULT_ATT_MTU) == MIN_LINK_MTU == 20
    assert bp.frame_mtu(bp.PREFERRED_ATT_MTU) == bp.MAX_FRAME_BYTES == 244
    assert bp.frame_mtu(517) == 244 and bp.frame_mtu(5) == 20


@pytest.mark.parametrize("vector", VECTORS["refused"], ids=[v["name"] for v in VECTORS["refused"]])
def test_hostile_advertisements_are_typed_errors(vector: dict[str, Any]) -> None:
    with pytest.raises(bp.AdvertisementError) as caught:
        bp.parse_advertising_data(bytes.fromhex(vector["hex"]))
    assert caught.value.fault.value == vector["fault"]
    assert "\n" not in str(caught.value) and vector["fault"] in str(caught.value)


def test_every_fault_has_a_refused_vector() -> None:
    named = {v["fault"] for v in VECTORS["refused"]}
    assert named | {bp.AdvertisementFault.BAD_NAME.value} == {f.value for f in bp.AdvertisementFault}
    with pytest.raises(bp.AdvertisementError) as caught:
        bp.parse_scan_response(bytes((3, bp.AD_NAME_COMPLETE, 0xC3, 0x28)))
    assert caught.value.fault is bp.AdvertisementFault.BAD_NAME


@given(st.binary(max_size=40))
def test_any_bytes_parse_or_raise_the_typed_error(payload: bytes) -> None:
    try:
        advert = bp.parse_advertising_data(payload)
    except bp.AdvertisementError:
        return
    assert len(advert.peer_id) == PEER_ID_BYTES and 0 <= advert.counter < 65536


def test_service_data_as_bleak_gives_it() -> None:
    advert = bp.parse_service_data(bytes.fromhex("54b2a9095bf59535" + "0102"))
    assert advert == bp.NodeAdvertisement(bytes.fromhex("54b2a9095bf59535"), 258)
    for wrong in (b"", bytes(9), bytes(11)):
        with pytest.raises(bp.AdvertisementError) as caught:
            bp.parse_service_data(wrong)
        assert caught.value.fault is bp.AdvertisementFault.WRONG_LENGTH


def test_a_resync_is_due_when_the_low_bits_differ_or_nothing_is_held() -> None:
    assert bp.resync_due(5, None)
    assert not bp.resync_due(5, 65_541)
    assert bp.resync_due(6, 65_541)
    assert bp.resync_due(4, 65_541)  # the node is behind what a Pi holds: a lost counter, resync


def test_values_outside_the_profile_are_refused_when_building() -> None:
    for peer_id, counter in ((bytes(7), 0), (bytes(9), 0), (bytes(8), -1), (bytes(8), MAX_COUNTER + 1)):
        with pytest.raises(ValueError):
            bp.advertising_data(peer_id, counter)
        with pytest.raises(NODE.ProfileError):
            NODE.advertising_data(peer_id, counter)


# --- the node module ------------------------------------------------------------------------------


def test_the_node_module_spells_the_hosts_constants() -> None:
    for name, value in VECTORS["constants"].items():
        assert getattr(NODE, name) == value == getattr(bp, name), name
    ad_types = (
        "AD_FLAGS",
        "AD_UUID128_COMPLETE",
        "AD_NAME_SHORT",
        "AD_NAME_COMPLETE",
        "AD_SERVICE_DATA_UUID128",
    )
    for name in ad_types:
        assert getattr(NODE, name) == getattr(bp, name), name
    assert NODE.PEER_ID_BYTES == PEER_ID_BYTES
    assert (NODE.MIN_LINK_MTU, NODE.MAX_COUNTER) == (MIN_LINK_MTU, MAX_COUNTER)


BATCH = """
import ble_profile as bp

out = {"constants": {}, "advertisements": [], "scan_responses": [], "frame_mtu": [], "refused": []}
for name in INPUT["constants"]:
    out["constants"][name] = getattr(bp, name)
for v in INPUT["advertisements"]:
    peer_id = bytes.fromhex(v["inputs"]["peer_id"])
    out["advertisements"].append(bp.advertising_data(peer_id, v["inputs"]["counter"]).hex())
for v in INPUT["scan_responses"]:
    out["scan_responses"].append(bp.scan_response(v["inputs"]["name"]).hex())
for v in INPUT["frame_mtu"]:
    out["frame_mtu"].append(bp.frame_mtu(v["att_mtu"]))
for peer_id, counter in ((bytes(7), 0), (bytes(8), -1), (bytes(8), 1 << 32)):
    try:
        bp.advertising_data(peer_id, counter)
        out["refused"].append("built")
    except bp.ProfileError as exc:
        out["refused"].append("ProfileError")
print(json.dumps(out))
"""


def check_node_results(results: Any) -> None:
    assert results["constants"] == VECTORS["constants"]
    assert results["advertisements"] == [v["hex"] for v in VECTORS["advertisements"]]
    assert results["scan_responses"] == [v["hex"] for v in VECTORS["scan_responses"]]
    assert results["frame_mtu"] == [v["frame_mtu"] for v in VECTORS["frame_mtu"]]
    assert results["refused"] == ["ProfileError"] * 3


def test_the_node_module_passes_the_vectors_under_cpython() -> None:
    lines: list[str] = []
    namespace: dict[str, Any] = {"INPUT": VECTORS, "json": json, "print": lines.append, "NODE": NODE}
    exec(BATCH.replace("import ble_profile as bp", "bp = NODE"), namespace)
    check_node_results(json.loads(lines[-1]))


def test_the_node_module_passes_the_vectors_under_micropython() -> None:
    require_micropython()
    check_node_results(run_batch(BATCH, VECTORS))


@given(peer_ids, counters, st.text(max_size=30))
def test_the_node_module_builds_what_the_host_builds(peer_id: bytes, counter: int, name: str) -> None:
    assert NODE.advertising_data(peer_id, counter) == bp.advertising_data(peer_id, counter)
    assert NODE.scan_response(name) == bp.scan_response(name)
