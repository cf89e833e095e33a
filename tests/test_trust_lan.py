"""Fleet trust with real ``presence-agent run`` processes on loopback.

A fleet CA made with ``presence-agent fleet-ca`` certifies two agents, whose
``[trust]`` names the CA; a third agent has no certificate. The certified two
join and show each other's identity metadata; the third is refused by both,
both sides say why (counters and one log line each), and it is in nobody's
graph, nor they in its. An agent whose ``[trust]`` files are unusable does not
start, with one line saying what to do. A certified insider's flood of uncertified records is
refused and costs the target no memory.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from lan_support import (
    Mesh,
    Proc,
    WirePeer,
    beacon_listener,
    cli,
    graph_of,
    remote_keys,
    remote_peer,
    stats_of,
    tcp_port_from_beacons,
    wait_until,
)
from test_lan_hostile import sybil_cards

from agent.core.keys import peer_key_string, public_key_from_string
from agent.core.trust_settings import CERTIFICATE_FILE, REVOCATION_LIST_FILE
from agent.core.wire import MessageType
from agent.state.identity import load_or_create_identity


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(tmp_path) as m:
        yield m


def fleet_ca(root: Path) -> tuple[Path, str]:
    ca_dir = root / "ca"
    result = cli("fleet-ca", "init", "--dir", str(ca_dir))
    assert result.returncode == 0, result.stderr
    return ca_dir, result.stdout.strip()


def certify(mesh: Mesh, ca_dir: Path, name: str, metadata: dict[str, str]) -> int:
    """Give agent ``name`` a certificate, as an operator does: its key, ``fleet-ca issue``, a copy.
    Returns the certificate's serial (the CA names the file after it)."""
    state_dir = mesh.state_dir(name)
    key = peer_key_string(load_or_create_identity(state_dir).public_key)
    result = cli(
        "fleet-ca", "issue", "--dir", str(ca_dir), "--device-key", key, "--metadata", json.dumps(metadata)
    )
    assert result.returncode == 0, result.stderr
    issued = Path(result.stdout.strip())
    shutil.copyfile(issued, state_dir / CERTIFICATE_FILE)
    return int(issued.name.split(".")[0])


def trust_table(*ca_keys: str) -> str:
    listed = ", ".join(f'"{key}"' for key in ca_keys)
    return f"[trust]\nca_keys = [{listed}]\n"


def test_certified_agents_join_with_identity_metadata_and_an_uncertified_one_is_refused_both_ways(
    mesh: Mesh,
) -> None:
    ca_dir, ca_key = fleet_ca(mesh.root)
    certify(mesh, ca_dir, "trust-alpha", {"site": "depot-3", "role": "gateway"})
    certify(mesh, ca_dir, "trust-bravo", {"site": "depot-3", "role": "sensor", "serial": "S-17"})
    alpha = mesh.start_agent("trust-alpha", extra_config=trust_table(ca_key), wait=False)
    bravo = mesh.start_agent("trust-bravo", extra_config=trust_table(ca_key), wait=False)
    stranger = mesh.start_agent("trust-stranger", wait=False)
    for agent in (alpha, bravo, stranger):
        mesh.wait_ready(agent)

    def joined() -> bool:
        return remote_keys(graph_of(alpha)) == {bravo.peer_key} and remote_keys(graph_of(bravo)) == {
            alpha.peer_key
        }

    wait_until(joined, 15, "the certified agents to see each other")
    seen = remote_peer(graph_of(alpha), bravo.peer_key)
    assert seen is not None
    assert seen["identity_service_metadata"] == {"site": "depot-3", "role": "sensor", "serial": "S-17"}
    assert graph_of(bravo)["local_peer"]["identity_service_metadata"]["serial"] == "S-17"

    def refused_everywhere() -> bool:
        told = stats_of(stranger).get("handshake.refused_by_remote", 0)
        return told >= 2 and all(
            stats_of(a).get("trust.rejected.no_certificate", 0) >= 1 for a in (alpha, bravo)
        )

    wait_until(refused_everywhere, 15, "both certified agents to refuse the stranger, and it to hear why")
    assert remote_keys(graph_of(stranger)) == set()
    for agent in (alpha, bravo):
        assert stranger.peer_key not in remote_keys(graph_of(agent))
    for agent in (alpha, bravo):
        refusal = one_log_line(agent, "refused peer")
        assert stranger.peer_key in refusal and "no_certificate" in refusal
    told = one_log_line(stranger, "refused this device's certificate (no_certificate)")
    assert "give this device a certificate from the fleet CA" in told


def rss_kib(agent: Proc) -> int:
    status = Path(f"/proc/{agent.popen.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_a_flood_of_uncertified_records_from_an_admitted_member_costs_no_memory(mesh: Mesh) -> None:
    # An insider: a certified member's link (plain: this fleet offers sealing, it does not require
    # it) floods cards of 3,000 fresh, uncertified keys. Trust on refuses each before any
    # signature is checked and keeps nothing: no peer, no held record, no memory.
    ca_dir, ca_key = fleet_ca(mesh.root)
    certify(mesh, ca_dir, "trust-target", {"role": "gateway"})
    table = trust_table(ca_key) + 'sealing = "offer"\n'
    with beacon_listener(mesh.multicast_port) as beacons:
        target = mesh.start_agent("trust-target", extra_config=table)
        port = tcp_port_from_beacons(beacons, public_key_from_string(target.peer_key))

    def certificate_for(key: bytes) -> bytes:
        device = peer_key_string(key)
        issued = cli("fleet-ca", "issue", "--dir", str(ca_dir), "--device-key", device, "--metadata", "{}")
        assert issued.returncode == 0, issued.stderr
        return Path(issued.stdout.strip()).read_bytes()

    insider = WirePeer(socket.create_connection(("127.0.0.1", port), timeout=5), certificate_for)
    try:
        insider.handshake()
        kind, _ = insider.receive()
        assert kind is MessageType.ACCEPT, kind
        insider.send(MessageType.ACCEPT)
        wait_until(lambda: stats_of(target).get("links.established", 0) >= 1, 10, "the insider admitted")
        before = rss_kib(target)
        cards = sybil_cards(3000)
        for i in range(0, len(cards), 16):
            insider.send(MessageType.RECORDS, *cards[i : i + 16])
        wait_until(
            lambda: stats_of(target).get("trust.rejected.no_certificate", 0) >= 3000, 30, "the flood refused"
        )
        stats = stats_of(target)
        assert stats.get("table.peers", 0) <= 2  # itself and the insider: not one of the flood
        assert remote_keys(graph_of(target)) <= {peer_key_string(insider.identity.public_key)}
        grown = rss_kib(target) - before
        print(f"\n3,000 uncertified cards refused; the target's RSS grew {grown} KiB")
        assert grown < 5 * 1024
    finally:
        insider.sock.close()


def full_mesh(agents: list[Proc]) -> bool:
    """Every agent's graph shows every other agent, and no one else."""
    return all(remote_keys(graph_of(a)) == {b.peer_key for b in agents if b is not a} for a in agents)


def test_a_revoked_agent_leaves_every_graph_once_one_agent_is_given_the_new_list(mesh: Mesh) -> None:
    ca_dir, ca_key = fleet_ca(mesh.root)
    names = ("revoke-alpha", "revoke-bravo", "revoke-charlie")
    serials = {name: certify(mesh, ca_dir, name, {"site": "depot-3"}) for name in names}
    alpha, bravo, charlie = (mesh.start_agent(n, extra_config=trust_table(ca_key), wait=False) for n in names)
    for agent in (alpha, bravo, charlie):
        mesh.wait_ready(agent)
    wait_until(lambda: full_mesh([alpha, bravo, charlie]), 15, "the three certified agents to join")

    # The operator revokes charlie and gives the new list to alpha only, which restarts with it.
    result = cli("fleet-ca", "revoke", "--dir", str(ca_dir), str(serials["revoke-charlie"]))
    assert result.returncode == 0, result.stderr
    shutil.copyfile(ca_dir / REVOCATION_LIST_FILE, alpha.state / REVOCATION_LIST_FILE)
    mesh.stop(alpha)
    alpha = mesh.restart(alpha)

    def charlie_gone() -> bool:
        return remote_keys(graph_of(alpha)) == {bravo.peer_key} and remote_keys(graph_of(bravo)) == {
            alpha.peer_key
        }

    wait_until(charlie_gone, 10, "the revoked agent to leave alpha's and bravo's graphs")
    assert stats_of(bravo).get("trust.revocation_lists.accepted", 0) == 1  # it came by flooding
    assert stats_of(bravo).get("trust.peers_withdrawn", 0) >= 1
    wait_until(
        lambda: stats_of(charlie).get("trust.refused_by_remote.revoked", 0) >= 1,
        10,
        "charlie to be told it is revoked",
    )
    # It stays out: its redials are refused, and the two others stay linked.
    assert charlie.peer_key not in remote_keys(graph_of(bravo)) | remote_keys(graph_of(alpha))
    assert remote_keys(graph_of(bravo)) == {alpha.peer_key}


def test_a_revocation_list_received_by_flooding_survives_kill_9(mesh: Mesh) -> None:
    ca_dir, ca_key = fleet_ca(mesh.root)
    names = ("keep-alpha", "keep-bravo", "keep-charlie")
    serials = {name: certify(mesh, ca_dir, name, {"site": "depot-3"}) for name in names}
    result = cli("fleet-ca", "revoke", "--dir", str(ca_dir), str(serials["keep-charlie"]))
    assert result.returncode == 0, result.stderr
    shutil.copyfile(ca_dir / REVOCATION_LIST_FILE, mesh.state_dir("keep-alpha") / REVOCATION_LIST_FILE)
    alpha, bravo, charlie = (mesh.start_agent(n, extra_config=trust_table(ca_key), wait=False) for n in names)
    for agent in (alpha, bravo, charlie):
        mesh.wait_ready(agent)

    # Bravo learns the list from alpha only; the moment it says so, the list is on its disk.
    wait_until(
        lambda: stats_of(bravo).get("trust.revocation_lists.accepted", 0) == 1,
        10,
        "bravo to accept the list alpha floods",
    )
    mesh.kill(alpha)  # nobody can give it to bravo again
    mesh.kill(bravo)  # SIGKILL: no shutdown, no flush
    bravo = mesh.restart(bravo)

    wait_until(
        lambda: stats_of(bravo).get("trust.rejected.revoked", 0) >= 1,
        10,
        "the restarted bravo to refuse charlie's dial as revoked",
    )
    assert stats_of(bravo).get("trust.revocation_lists.accepted", 0) == 0  # read from its state directory
    assert charlie.peer_key not in remote_keys(graph_of(bravo))  # refused at HELLO: never established
    # Charlie, which judges bravo's certificate valid, may hold the link until bravo's DENY arrives.
    wait_until(lambda: bravo.peer_key not in remote_keys(graph_of(charlie)), 5, "charlie to be refused")


def test_a_ca_rotation_keeps_the_mesh_together_while_both_cas_are_trusted(mesh: Mesh) -> None:
    old_dir, old_key = fleet_ca(mesh.root / "old")
    new_dir, new_key = fleet_ca(mesh.root / "new")
    issued_by = {"rotate-alpha": old_dir, "rotate-bravo": new_dir, "rotate-charlie": old_dir}
    for name, ca_dir in issued_by.items():
        certify(mesh, ca_dir, name, {"site": "depot-3", "ca": ca_dir.parent.name})
    agents = [mesh.start_agent(n, extra_config=trust_table(old_key, new_key), wait=False) for n in issued_by]
    for agent in agents:
        mesh.wait_ready(agent)

    wait_until(lambda: full_mesh(agents), 15, "agents certified by either CA to join")
    alpha, bravo, _ = agents
    seen = remote_peer(graph_of(alpha), bravo.peer_key)
    assert seen is not None and seen["identity_service_metadata"]["ca"] == "new"
    for agent in agents:
        # Nobody refused at a handshake; a links record may wait for its card (trust.rejected.no_certificate).
        stats = stats_of(agent)
        refusals = {
            k: v
            for k, v in stats.items()
            if k.startswith(("handshake.rejected.", "handshake.refused", "trust.rejected.unknown"))
        }
        assert refusals == {}, (agent.name, refusals)


def one_log_line(agent: Proc, text: str) -> str:
    lines = [line for line in agent.stderr_text().splitlines() if text in line]
    assert lines, f"{agent.name} logged no line with {text!r}:\n{agent.stderr_text()}"
    assert len(lines) <= 2, lines  # rate-limited: once a minute per kind
    return lines[0]


def test_an_agent_with_trust_on_and_no_certificate_does_not_start_and_says_how_to_get_one(mesh: Mesh) -> None:
    _, ca_key = fleet_ca(mesh.root)
    config = mesh.write_config("trust-nocert", extra=trust_table(ca_key))
    state_dir = mesh.state_dir("trust-nocert")
    key = peer_key_string(load_or_create_identity(state_dir).public_key)

    result = cli("run", "--config", str(config), "--state-dir", str(state_dir), timeout=30)

    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert "no certificate at" in line and f"fleet-ca issue --device-key {key}" in line
