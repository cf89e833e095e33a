"""The MQTT mirror and the fleet view against a real mosquitto, with real agent processes.

Every broker is a private mosquitto on a free loopback port (tests/conftest.py);
every agent is ``presence-agent run`` with an ``[mqtt]`` table; the independent
subscriber is the real ``mosquitto_sub``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker_support import Mosquitto, make_tls_files, subscribe_retained
from lan_support import Mesh, Proc, ask, cli, graph_of, remote_keys, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import AgentConfig
from agent.core.keys import public_key_from_string
from agent.core.records import RecordKind, decode_record
from agent.mqtt.broker import BrokerOptions, BrokerRefusedError, parse_broker_url
from agent.mqtt.fleet_view import FleetView
from agent.mqtt.settings import MqttSettings
from agent.mqtt.topics import TopicKind, TopicLayout, short_id
from agent.runtime.agent import BlockingAgent
from agent.transports.lan_settings import LanSettings

LAYOUT = TopicLayout()
#: A SIGKILLed agent's peers leave the other graphs within dead + grace (2.5 s) plus the coalesce window.
DEPARTURE_LIMIT = 6.0


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(tmp_path) as m:
        yield m


def mqtt_table(broker: Mosquitto, extra: str = "") -> str:
    """An ``[mqtt]`` table for ``broker`` with fast reconnects (tests restart brokers)."""
    return (
        f'[mqtt]\nbroker = "{broker.url}"\ncoalesce = 0.05\nreconnect_min = 0.2\nreconnect_max = 1.0\n{extra}'
    )


def start_agents(mesh: Mesh, broker: Mosquitto, *names: str, extra: str = "") -> list[Proc]:
    agents = [mesh.start_agent(n, wait=False, extra_config=mqtt_table(broker, extra)) for n in names]
    for agent in agents:
        mesh.wait_ready(agent)
    keys = {a.peer_key for a in agents}
    wait_until(
        lambda: all(remote_keys(graph_of(a)) == keys - {a.peer_key} for a in agents), 10, "all see all"
    )
    return agents


def retained(broker: Mosquitto, topic_filter: str = "presence/#") -> dict[str, bytes]:
    return subscribe_retained(broker, topic_filter, wait=0.7)


def complete_view(broker: Mosquitto, agents: list[Proc]) -> dict[str, bytes] | None:
    """The retained topics once every agent has published status, graph and all five peer topics."""
    topics = retained(broker)
    for agent in agents:
        wanted = [LAYOUT.agent_topic(agent.peer_key, TopicKind.STATUS)]
        wanted += [
            LAYOUT.peer_topic(agent.peer_key, peer.peer_key, kind)
            for peer in agents
            for kind in (TopicKind.STATE, TopicKind.CARD, TopicKind.LINKS)
        ]
        if any(t not in topics for t in wanted) or topics[wanted[0]] != b"online":
            return None
    return topics


def mirror_status(agent: Proc) -> dict[str, Any]:
    status: dict[str, Any] = ask(agent, {"op": "status"})["mqtt"]
    return status


def fleet_json(broker: Mosquitto, *extra: str) -> dict[str, Any]:
    result = cli("fleet", "--broker", broker.url, "--json", "--timeout", "5", *extra)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def publish_retained(broker: Mosquitto, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------- the topic layout


def test_two_agents_publish_the_documented_topics_with_parseable_payloads(
    mesh: Mesh, mosquitto: Mosquitto
) -> None:
    agents = start_agents(mesh, mosquitto, "alpha", "beta")
    topics = wait_until(lambda: complete_view(mosquitto, agents), 10, "both views on the broker")

    for agent in agents:
        graph = json.loads(topics[LAYOUT.agent_topic(agent.peer_key, TopicKind.GRAPH)])
        assert graph["agent"] == agent.peer_key
        assert graph["local_peer"]["peer_key_string"] == agent.peer_key
        assert {p["peer_key_string"] for p in graph["remote_peers"]} == {a.peer_key for a in agents} - {
            agent.peer_key
        }
        for peer in agents:
            state = json.loads(topics[LAYOUT.peer_topic(agent.peer_key, peer.peer_key, TopicKind.STATE)])
            assert state["peer_key_string"] == peer.peer_key
            assert state["device_name"] == peer.name
            assert state["hops"] == (0 if peer is agent else 1)
            assert state["present"] is True and state["observed_by"] == agent.peer_key
            assert isinstance(state["last_change"], float) and state["last_change"] <= time.time()
            for kind, record_kind in ((TopicKind.CARD, RecordKind.CARD), (TopicKind.LINKS, RecordKind.LINKS)):
                record = decode_record(topics[LAYOUT.peer_topic(agent.peer_key, peer.peer_key, kind)])
                assert record.kind is record_kind
                assert record.public_key == public_key_from_string(peer.peer_key)
    # Nothing outside the layout, and no Home Assistant topics unless asked for.
    assert all(LAYOUT.parse(t) is not None for t in topics)
    assert not retained(mosquitto, "homeassistant/#")


def test_a_metadata_change_reaches_a_subscriber(mesh: Mesh, mosquitto: Mosquitto) -> None:
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta")
    wait_until(lambda: complete_view(mosquitto, [alpha, beta]), 10, "both views on the broker")
    ask(alpha, {"op": "metadata_set", "json": json.dumps({"room": "lab 2"})})

    def beta_reports_it() -> bool:
        topic = LAYOUT.peer_topic(beta.peer_key, alpha.peer_key, TopicKind.STATE)
        payload = retained(mosquitto, topic).get(topic)
        return payload is not None and json.loads(payload)["peer_metadata"] == {"room": "lab 2"}

    wait_until(beta_reports_it, 10, "beta's mirrored state of alpha to carry the new metadata")


# ---------------------------------------------------------------- the fleet view


def test_the_fleet_view_shows_every_peer_of_every_agent(mesh: Mesh, mosquitto: Mosquitto) -> None:
    agents = start_agents(mesh, mosquitto, "alpha", "beta", "gamma")
    keys = {a.peer_key for a in agents}
    wait_until(lambda: complete_view(mosquitto, agents), 10, "every view on the broker")

    document = fleet_json(mosquitto)
    assert {a["peer_key_string"] for a in document["agents"] if a["online"]} == keys
    assert {p["peer_key_string"] for p in document["peers"]} == keys
    assert all(set(p["seen_by"]) == keys for p in document["peers"])
    assert {p["device_name"] for p in document["peers"]} == {"alpha", "beta", "gamma"}
    assert len(document["connections"]) == 3  # a triangle, confirmed by both ends of each link
    assert document["rejections"] == []

    table = cli("fleet", "--broker", mosquitto.url, "--timeout", "5")
    assert table.returncode == 0, table.stderr
    assert all(name in table.stdout for name in ("alpha", "beta", "gamma"))

    with FleetView(BrokerOptions(parse_broker_url(mosquitto.url))) as view:
        graph = view.settle()
    assert {p.peer_key_string for p in graph.peers} == keys


def test_the_fleet_view_rejects_a_forged_record_and_keeps_the_genuine_one(
    mesh: Mesh, mosquitto: Mosquitto
) -> None:
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta")
    topics = wait_until(lambda: complete_view(mosquitto, [alpha, beta]), 10, "both views on the broker")
    # A rogue client claims to be an agent and republishes alpha's card with one flipped bit.
    rogue = "pk" + "A" * 43
    card = bytearray(topics[LAYOUT.peer_topic(alpha.peer_key, alpha.peer_key, TopicKind.CARD)])
    card[-1] ^= 0x01
    publish_retained(mosquitto, LAYOUT.agent_topic(rogue, TopicKind.STATUS), b"online")
    publish_retained(mosquitto, LAYOUT.peer_topic(rogue, alpha.peer_key, TopicKind.CARD), bytes(card))

    document = fleet_json(mosquitto)
    (rejection,) = document["rejections"]
    assert rejection["agent"] == rogue and rejection["reason"] == "bad_signature"
    (shown,) = [p for p in document["peers"] if p["peer_key_string"] == alpha.peer_key]
    assert shown["device_name"] == "alpha" and rogue not in shown["seen_by"]


def test_a_killed_agent_goes_offline_by_its_last_will_and_leaves_the_fleet_view(
    mesh: Mesh, mosquitto: Mosquitto
) -> None:
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta")
    wait_until(lambda: complete_view(mosquitto, [alpha, beta]), 10, "both views on the broker")
    with FleetView(BrokerOptions(parse_broker_url(mosquitto.url))) as view:
        assert {p.peer_key_string for p in view.settle().peers} == {alpha.peer_key, beta.peer_key}
        mesh.kill(beta)
        status = LAYOUT.agent_topic(beta.peer_key, TopicKind.STATUS)
        wait_until(lambda: retained(mosquitto, status).get(status) == b"offline", 5, "beta's last will")
        wait_until(
            lambda: {p.peer_key_string for p in view.graph().peers} == {alpha.peer_key},
            DEPARTURE_LIMIT,
            "beta to leave the fleet view",
        )
        (beta_agent,) = [a for a in view.graph().agents if a.peer_key_string == beta.peer_key]
        assert not beta_agent.online


def test_fleet_watch_prints_a_line_when_an_agent_leaves(mesh: Mesh, mosquitto: Mosquitto) -> None:
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta")
    wait_until(lambda: complete_view(mosquitto, [alpha, beta]), 10, "both views on the broker")
    watcher = mesh.spawn(
        "watcher",
        [sys.executable, "-m", "agent.cli", "fleet", "--broker", mosquitto.url, "--watch", "--json"],
        capture_stdout=True,
    )
    first = watcher.next_line(10)
    assert first is not None and json.loads(first)["event"] == "fleet"
    mesh.stop(beta)
    events = []
    deadline = time.monotonic() + DEPARTURE_LIMIT
    while time.monotonic() < deadline and not any(e["event"] == "left" for e in events):
        line = watcher.next_line(max(0.1, deadline - time.monotonic()))
        if line:
            events.append(json.loads(line))
    assert {"event": "agent_offline", "agent": beta.peer_key} in events
    assert any(e["event"] == "left" and e["peer"] == beta.peer_key for e in events)


# ---------------------------------------------------------------- no ghosts


def test_a_stopped_agent_clears_its_topics_and_the_others_clear_it(mesh: Mesh, mosquitto: Mosquitto) -> None:
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta")
    wait_until(lambda: complete_view(mosquitto, [alpha, beta]), 10, "both views on the broker")
    mesh.stop(beta)

    def only_alpha_left() -> bool:
        topics = retained(mosquitto)
        beta_own = {t for t in topics if t.startswith(LAYOUT.agent_prefix(beta.peer_key))}
        about_beta = {t for t in topics if (p := LAYOUT.parse(t)) and p.peer == beta.peer_key}
        return beta_own == {LAYOUT.agent_topic(beta.peer_key, TopicKind.STATUS)} and not about_beta

    wait_until(only_alpha_left, DEPARTURE_LIMIT, "beta's topics to be cleared everywhere")
    status = LAYOUT.agent_topic(beta.peer_key, TopicKind.STATUS)
    assert retained(mosquitto, status)[status] == b"offline"


def test_leftovers_of_a_crashed_run_are_swept_on_start(mesh: Mesh, mosquitto: Mosquitto) -> None:
    result = cli("keys", "show", "--state-dir", str(mesh.state_dir("alpha")))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    ghost = "pk" + "G" * 43
    for kind in (TopicKind.STATE, TopicKind.CARD):
        publish_retained(mosquitto, LAYOUT.peer_topic(key, ghost, kind), b"left over")
    (alpha,) = start_agents(mesh, mosquitto, "alpha")
    assert alpha.peer_key == key

    def swept() -> bool:
        topics = retained(mosquitto)
        return LAYOUT.agent_topic(key, TopicKind.STATUS) in topics and not any(ghost in t for t in topics)

    wait_until(swept, 10, "the ghost peer's topics to be cleared")
    assert mirror_status(alpha)["swept"] == 2


# ---------------------------------------------------------------- broker outages


def test_the_retained_state_is_complete_again_after_a_broker_restart(
    mesh: Mesh, mosquitto: Mosquitto
) -> None:
    agents = start_agents(mesh, mosquitto, "alpha", "beta")
    before = wait_until(lambda: complete_view(mosquitto, agents), 10, "both views on the broker")
    mosquitto.kill()
    time.sleep(0.5)
    mosquitto.restart()  # no persistence: the broker comes back empty
    after = wait_until(lambda: complete_view(mosquitto, agents), 10, "the views to be republished")
    assert after.keys() == before.keys()
    records = [t for t in before if t.endswith(("/card", "/links"))]
    assert {t: after[t] for t in records} == {t: before[t] for t in records}
    assert all(mirror_status(a)["connects"] >= 2 for a in agents)


def test_an_agent_starts_without_its_broker_and_mirrors_once_it_is_up(
    mesh: Mesh, mosquitto: Mosquitto
) -> None:
    mosquitto.kill()
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta")  # the mesh works without a broker
    status = mirror_status(alpha)
    assert status["state"] == "connecting" and status["last_error"]
    mosquitto.restart()
    wait_until(lambda: complete_view(mosquitto, [alpha, beta]), 10, "both views once the broker is up")
    assert mirror_status(alpha)["state"] == "connected"


def test_a_frozen_broker_does_not_slow_the_mesh_and_catches_up_when_it_thaws(
    mesh: Mesh, mosquitto: Mosquitto
) -> None:
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta")
    wait_until(lambda: complete_view(mosquitto, [alpha, beta]), 10, "both views on the broker")
    mosquitto.pause()
    try:
        for n in range(20):  # the mirror's queue fills while the broker answers nothing
            ask(alpha, {"op": "metadata_set", "json": json.dumps({"n": n})})

        def beta_has_the_last() -> bool:
            peer = next(p for p in graph_of(beta)["remote_peers"] if p["peer_key_string"] == alpha.peer_key)
            return bool(peer["peer_metadata"] == {"n": 19})

        started = time.monotonic()
        wait_until(beta_has_the_last, 5, "the mesh to carry the change while the broker is frozen")
        assert time.monotonic() - started < 2.0
    finally:
        mosquitto.resume()
    topic = LAYOUT.peer_topic(beta.peer_key, alpha.peer_key, TopicKind.STATE)
    wait_until(
        lambda: json.loads(retained(mosquitto, topic).get(topic, b"{}")).get("peer_metadata") == {"n": 19},
        15,
        "the broker to catch up after thawing",
    )


def test_a_burst_of_changes_is_coalesced_and_the_broker_ends_with_the_last(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = AgentConfig(lan=LanSettings(enabled=False), mqtt=MqttSettings(broker=mosquitto.url))
    with BlockingAgent(config, state_dir=tmp_path / "solo", name="solo") as agent:
        mirror = agent.call(lambda a: a.mirror)
        assert mirror is not None
        key = agent.peer_key_string
        topic = LAYOUT.peer_topic(key, key, TopicKind.STATE)
        wait_until(lambda: topic in retained(mosquitto, topic), 10, "the first publish")
        before = mirror.status()
        for n in range(200):
            agent.presence.set_peer_metadata({"n": n})

        def final() -> bool:
            state = json.loads(retained(mosquitto, topic).get(topic, b"{}"))
            return bool(state.get("peer_metadata") == {"n": 199})

        wait_until(final, 10, "the last change on the broker")
        after = mirror.status()
    # 200 changes, each re-signing the card, published as a few snapshots of ~5 topics each.
    assert after["snapshots"] - before["snapshots"] < 50
    assert after["published"] - before["published"] < 200
    assert after["pending"] == 0 and after["dropped"] == 0


# ---------------------------------------------------------------- TLS and credentials


def write_secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def tls_table(broker: Mosquitto, password_file: Path, username: str = "agent") -> str:
    assert broker.tls is not None
    return f'username = "{username}"\npassword_file = "{password_file}"\nca_file = "{broker.tls.ca_cert}"\n'


def test_an_agent_mirrors_over_tls_with_a_username_and_password(
    mesh: Mesh, mosquitto_tls_auth: Mosquitto, tmp_path: Path
) -> None:
    broker = mosquitto_tls_auth
    secret = write_secret(tmp_path / "agent.pass", broker.users["agent"])
    (alpha,) = start_agents(mesh, broker, "alpha", extra=tls_table(broker, secret))
    status = LAYOUT.agent_topic(alpha.peer_key, TopicKind.STATUS)

    def seen() -> bool:
        found = subscribe_retained(
            broker, status, wait=0.7, username="viewer", password=broker.users["viewer"]
        )
        return found.get(status) == b"online"

    wait_until(seen, 10, "the agent's status over TLS")
    assert mirror_status(alpha)["state"] == "connected"

    assert broker.tls is not None
    env = {**os.environ, "FLEET_PASS": broker.users["viewer"]}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "agent.cli", "fleet", "--broker", broker.url, "--json", "--timeout", "5"),
            *("--username", "viewer", "--password-env", "FLEET_PASS", "--ca-file", str(broker.tls.ca_cert)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [p["device_name"] for p in json.loads(result.stdout)["peers"]] == ["alpha"]


def test_an_agent_mirrors_with_a_client_certificate(mesh: Mesh, require_broker: None, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with Mosquitto(tmp_path / "broker", tls=tls, require_client_cert=True) as broker:
        extra = f'ca_file = "{tls.ca_cert}"\ncert_file = "{tls.client_cert}"\nkey_file = "{tls.client_key}"\n'
        (alpha,) = start_agents(mesh, broker, "alpha", extra=extra)
        status = LAYOUT.agent_topic(alpha.peer_key, TopicKind.STATUS)
        wait_until(lambda: retained(broker, status).get(status) == b"online", 10, "status via a client cert")


def test_a_wrong_password_stops_the_mirror_after_one_attempt_and_the_mesh_runs_on(
    mesh: Mesh, mosquitto_tls_auth: Mosquitto, tmp_path: Path
) -> None:
    broker = mosquitto_tls_auth
    secret = write_secret(tmp_path / "wrong.pass", "not-the-password")
    alpha, beta = start_agents(mesh, broker, "alpha", "beta", extra=tls_table(broker, secret))
    wait_until(lambda: mirror_status(alpha)["state"] == "refused", 10, "the broker's refusal")
    time.sleep(2.0)  # several reconnect_max periods: a retrying client would have tried again
    status = mirror_status(alpha)
    assert status["connects"] == 0 and status["failures"] == 1
    assert "authori" in status["last_error"].lower() or "password" in status["last_error"].lower()
    assert alpha.alive and beta.peer_key in remote_keys(graph_of(alpha))


def test_fleet_with_a_wrong_password_is_a_one_line_error(mosquitto_tls_auth: Mosquitto) -> None:
    broker = mosquitto_tls_auth
    assert broker.tls is not None
    started = time.monotonic()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "agent.cli", "fleet", "--broker", broker.url, "--username", "viewer"),
            *("--password-env", "FLEET_PASS", "--ca-file", str(broker.tls.ca_cert)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "FLEET_PASS": "wrong"},
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("presence-agent: ") and "refused the connection" in line
    assert time.monotonic() - started < 10


def test_a_broker_whose_certificate_is_not_trusted_is_refused(mosquitto_tls_auth: Mosquitto) -> None:
    options = BrokerOptions(parse_broker_url(mosquitto_tls_auth.url), username="viewer", password="v1ew")
    with pytest.raises(BrokerRefusedError, match="TLS"):
        FleetView(options, connect_timeout=5).start()  # the system CAs do not know the test CA


# ---------------------------------------------------------------- Home Assistant


def test_home_assistant_discovery_describes_each_peer_as_a_presence_device(
    mesh: Mesh, mosquitto: Mosquitto
) -> None:
    alpha, beta = start_agents(mesh, mosquitto, "alpha", "beta", extra="homeassistant = true\n")
    config_topic = LAYOUT.discovery_topic(alpha.peer_key, beta.peer_key)
    presence_topic = LAYOUT.peer_topic(alpha.peer_key, beta.peer_key, TopicKind.PRESENCE)

    def discovered() -> dict[str, bytes] | None:
        topics = retained(mosquitto, "#")
        return topics if config_topic in topics and topics.get(presence_topic) == b"ON" else None

    topics = wait_until(discovered, 10, "beta's discovery config in alpha's name")
    config = json.loads(topics[config_topic])
    assert config["device_class"] == "presence"
    assert config["state_topic"] == presence_topic
    assert config["availability_topic"] == LAYOUT.agent_topic(alpha.peer_key, TopicKind.STATUS)
    assert config["device"]["identifiers"] == [f"presence_{short_id(beta.peer_key)}"]
    assert config["device"]["name"] == "beta"

    mesh.kill(beta)
    wait_until(
        lambda: retained(mosquitto, presence_topic).get(presence_topic) == b"OFF",
        DEPARTURE_LIMIT,
        "beta to turn absent",
    )
    assert config_topic in retained(mosquitto, "homeassistant/#")  # the entity stays, shown absent
