"""Specification of ``[trust]``: its configuration rules and the files an agent reads at start.

Trust is off unless ``ca_keys`` names one or two CAs (a key string, or a file
holding one). With it on, the agent starts only with a certificate file that
is a certificate from a trusted CA for its own key; a revocation list in the
state directory (or named) is held from the start. Each refusal is one line
naming the file and what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import ConfigError, parse_config
from agent.core.certs import issue_certificate, raw_public_key, sign_revocation_list
from agent.core.keys import peer_key_string, public_key_from_string
from agent.core.trust_settings import CERTIFICATE_FILE, MESH_KEY_FILE, REVOCATION_LIST_FILE, TrustSettings
from agent.state import revocations
from agent.state.identity import load_or_create_identity
from agent.state.local_peer import open_local_peer
from agent.state.trust_files import TrustFileError, load_fleet_trust, load_membership, load_mesh_key

NOW = 1_800_000_000
CA = Ed25519PrivateKey.generate()
CA_KEY = peer_key_string(raw_public_key(CA))
DEVICE = raw_public_key(Ed25519PrivateKey.generate())


def certificate(device: bytes = DEVICE, ca: Ed25519PrivateKey = CA, serial: int = 1) -> bytes:
    return issue_certificate(ca, serial, device, {"site": "depot-3"}, NOW - 60, NOW + 86_400).raw


def error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hw.toml")
    return str(caught.value)


def test_trust_is_off_by_default_and_on_with_a_ca_key() -> None:
    assert not parse_config("", "hw.toml").trust.enabled
    config = parse_config(f'[trust]\nca_keys = ["{CA_KEY}"]\n', "hw.toml")
    assert config.trust.enabled and config.trust.ca_keys == (CA_KEY,)


def test_bad_trust_settings_are_one_line_naming_the_key() -> None:
    assert error('[trust]\nca_keys = ["pkAAAA"]').startswith(
        "hw.toml: trust.ca_keys: expected a list of at most 2"
    )
    three = ", ".join(f'"{CA_KEY}"' for _ in range(3))
    assert "trust.ca_keys" in error(f"[trust]\nca_keys = [{three}]")
    assert error('[trust]\ncertificate = "/etc/x.cert"') == (
        "hw.toml: trust.certificate: expected trust.ca_keys too (trust is off without a CA)"
    )


def test_the_membership_holds_the_certificate_and_the_revocation_list_of_the_state_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / CERTIFICATE_FILE).write_bytes(certificate())
    (tmp_path / REVOCATION_LIST_FILE).write_bytes(sign_revocation_list(CA, 4, NOW, [9]).raw)
    key_file = tmp_path / "ca.pub"
    key_file.write_text(CA_KEY + "\n")

    membership = load_membership(TrustSettings(ca_keys=(str(key_file),)), tmp_path, DEVICE)

    assert membership is not None and membership.certificate == certificate()
    [held] = membership.fleet.revocations.values()
    assert (held.counter, held.serials) == (4, {9})
    assert load_membership(TrustSettings(), tmp_path, DEVICE) is None


@pytest.mark.parametrize(
    ("cert", "message"),
    [
        (None, "trust is on but this device has no certificate at"),
        (b"not a certificate", "is not a usable certificate (malformed"),
        (certificate(device=raw_public_key(Ed25519PrivateKey.generate())), "not this device"),
        (certificate(ca=Ed25519PrivateKey.generate()), "is from a CA [trust] ca_keys does not name"),
    ],
    ids=["missing", "garbage", "another device", "another CA"],
)
def test_an_unusable_certificate_stops_the_start_with_one_line(
    tmp_path: Path, cert: bytes | None, message: str
) -> None:
    if cert is not None:
        (tmp_path / CERTIFICATE_FILE).write_bytes(cert)
    with pytest.raises(TrustFileError) as caught:
        load_membership(TrustSettings(ca_keys=(CA_KEY,)), tmp_path, DEVICE)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_revocation_list_or_key_file_that_does_not_verify_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / CERTIFICATE_FILE).write_bytes(certificate())
    (tmp_path / REVOCATION_LIST_FILE).write_bytes(
        sign_revocation_list(Ed25519PrivateKey.generate(), 1, NOW, []).raw
    )
    with pytest.raises(TrustFileError, match=r"revocation list .* is refused \(unknown_ca"):
        load_membership(TrustSettings(ca_keys=(CA_KEY,)), tmp_path, DEVICE)
    bad_key = tmp_path / "ca.pub"
    bad_key.write_text("hello\n")
    with pytest.raises(TrustFileError, match="does not hold a key string"):
        load_fleet_trust(TrustSettings(ca_keys=(str(bad_key),)))


def held_counters(state_dir: Path) -> dict[bytes, int]:
    membership = load_membership(TrustSettings(ca_keys=(CA_KEY,)), state_dir, DEVICE)
    assert membership is not None
    return {ca: r.counter for ca, r in membership.fleet.revocations.items()}


def test_a_kept_revocation_list_is_read_after_the_operators_and_the_newest_wins(tmp_path: Path) -> None:
    (tmp_path / CERTIFICATE_FILE).write_bytes(certificate())
    kept = revocations.save(tmp_path, sign_revocation_list(CA, 7, NOW, [3, 9]))
    assert kept.name == f"revoked.{raw_public_key(CA)[:8].hex()}.cose"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    [ca_id] = held_counters(tmp_path)
    assert held_counters(tmp_path) == {ca_id: 7}

    (tmp_path / REVOCATION_LIST_FILE).write_bytes(sign_revocation_list(CA, 5, NOW, [3]).raw)
    assert held_counters(tmp_path) == {ca_id: 7}  # the operator's older list: the kept one wins
    (tmp_path / REVOCATION_LIST_FILE).write_bytes(sign_revocation_list(CA, 8, NOW, [3]).raw)
    assert held_counters(tmp_path) == {ca_id: 8}  # a newer one given by the operator wins


def test_a_kept_list_of_a_ca_no_longer_trusted_is_not_read(tmp_path: Path) -> None:
    (tmp_path / CERTIFICATE_FILE).write_bytes(certificate())
    revocations.save(tmp_path, sign_revocation_list(Ed25519PrivateKey.generate(), 2, NOW, [1]))
    assert held_counters(tmp_path) == {}


def test_a_kept_list_that_does_not_verify_stops_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / CERTIFICATE_FILE).write_bytes(certificate())
    path = revocations.save(tmp_path, sign_revocation_list(CA, 7, NOW, [3]))
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # its signature altered
    with pytest.raises(TrustFileError) as caught:
        load_membership(TrustSettings(ca_keys=(CA_KEY,)), tmp_path, DEVICE)
    message = str(caught.value)
    assert f"received revocation list {path} does not verify (bad_signature" in message
    assert "replace it with the CA's revoked.cose" in message and "\n" not in message


def test_a_viewer_gets_the_ca_keys_without_a_state_directory() -> None:
    fleet = load_fleet_trust(TrustSettings(ca_keys=(CA_KEY,)))
    assert fleet is not None and fleet.verify(certificate(), NOW, DEVICE).metadata["site"] == "depot-3"
    assert load_fleet_trust(TrustSettings()) is None


# ---------------------------------------------------------------- the fleet mesh key


def test_the_mesh_key_is_read_from_the_state_dir_if_present_with_or_without_a_ca(tmp_path: Path) -> None:
    assert load_mesh_key(TrustSettings(), tmp_path) is None
    (tmp_path / MESH_KEY_FILE).write_bytes(bytes(range(32)))
    (tmp_path / MESH_KEY_FILE).chmod(0o600)
    assert load_mesh_key(TrustSettings(), tmp_path) == bytes(range(32))
    assert load_mesh_key(TrustSettings(ca_keys=(CA_KEY,)), tmp_path) == bytes(range(32))


@pytest.mark.parametrize(
    ("content", "mode", "says"),
    [
        (bytes(31), 0o600, "is not a mesh key"),
        (bytes(33), 0o600, "over 32 bytes"),
        (bytes(32), 0o644, "chmod 600"),
    ],
)
def test_an_unusable_mesh_key_stops_the_start_with_one_line(
    tmp_path: Path, content: bytes, mode: int, says: str
) -> None:
    path = tmp_path / "fleet.meshkey"
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(TrustFileError, match=says):
        load_mesh_key(TrustSettings(mesh_key=str(path)), tmp_path)


def test_a_named_mesh_key_that_is_missing_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(TrustFileError, match="cannot read"):
        load_mesh_key(TrustSettings(mesh_key=str(tmp_path / "absent")), tmp_path)


def test_a_local_peer_keeps_each_newer_list_it_accepts_and_writes_nothing_otherwise(tmp_path: Path) -> None:
    device = load_or_create_identity(tmp_path).public_key
    (tmp_path / CERTIFICATE_FILE).write_bytes(certificate(device=device))
    settings = TrustSettings(ca_keys=(CA_KEY,))
    local = open_local_peer(tmp_path, now=NOW, trust=settings)
    try:
        kept = revocations.received_list_path(tmp_path, public_key_from_string(CA_KEY)[:8])
        local.save_revocation_lists()
        assert not kept.exists()  # nothing accepted yet: nothing written
        local.engine.add_revocation_list(sign_revocation_list(CA, 3, NOW, [7]).raw, NOW)
        local.save_revocation_lists()
        assert kept.read_bytes() == sign_revocation_list(CA, 3, NOW, [7]).raw
        local.engine.add_revocation_list(sign_revocation_list(CA, 4, NOW, [7, 8]).raw, NOW)
        local.flush()  # the periodic flush keeps it too
        assert kept.read_bytes() == sign_revocation_list(CA, 4, NOW, [7, 8]).raw
    finally:
        local.close()
    again = open_local_peer(tmp_path, now=NOW, trust=settings)
    try:
        assert [r.counter for r in again.engine.revocation_lists] == [4]
    finally:
        again.close()
