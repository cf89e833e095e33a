"""The broker ACL example (docs/mqtt-acl.example) on a real mosquitto, with real agent processes.

Two agents log in with their own peer key strings as usernames, as the example
says, and mirror their views; the fleet view's user reads both. A client holding
agent alpha's credentials then writes into agent bravo's subtree: mosquitto drops
those publishes silently (it still acknowledges them), so the check is that
bravo's retained topics are unchanged after the broker acknowledged them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker_support import Mosquitto, subscribe_retained
from lan_support import REPO, Mesh, Proc, graph_of, remote_keys, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.keys import peer_key_string
from agent.mqtt.topics import TopicKind, TopicLayout
from agent.state.identity import load_or_create_identity

ACL_EXAMPLE = REPO / "docs" / "mqtt-acl.example"
LAYOUT = TopicLayout()
VIEWER = ("fleet-view", "v1ew")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(tmp_path) as m:
        yield m


def agent_key(mesh: Mesh, name: str) -> str:
    """The agent's peer key string before it runs (its identity is made in its state directory)."""
    return peer_key_string(load_or_create_identity(mesh.state_dir(name)).public_key)


def as_viewer(broker: Mosquitto, topic_filter: str) -> dict[str, bytes]:
    return subscribe_retained(broker, topic_filter, wait=0.7, username=VIEWER[0], password=VIEWER[1])


def publish_as(broker: Mosquitto, username: str, password: str, messages: list[tuple[str, bytes]]) -> None:
    """Retained QoS 1 publishes, each acknowledged by the broker (PUBACK) before this returns."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(username, password)
    assert client.connect(broker.host, broker.port) == mqtt.MQTT_ERR_SUCCESS
    client.loop_start()
    try:
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(5)
            assert info.is_published(), f"the broker did not acknowledge {topic}"
    finally:
        client.disconnect()
        client.loop_stop()


def test_with_the_example_acl_an_agent_writes_its_own_subtree_and_not_another_agents(
    mesh: Mesh, require_broker: None, tmp_path: Path
) -> None:
    keys = {name: agent_key(mesh, name) for name in ("acl-alpha", "acl-bravo")}
    passwords = {key: f"pw-{name}" for name, key in keys.items()}
    with Mosquitto(
        tmp_path / "broker", users={**passwords, VIEWER[0]: VIEWER[1]}, acl_file=ACL_EXAMPLE
    ) as broker:
        agents: list[Proc] = []
        for name, key in keys.items():
            secret = tmp_path / f"{name}.pass"
            secret.write_text(passwords[key] + "\n", encoding="utf-8")
            secret.chmod(0o600)
            mqtt_table = (
                f'[mqtt]\nbroker = "{broker.url}"\ncoalesce = 0.05\n'
                f'username = "{key}"\npassword_file = "{secret}"\n'
            )
            agents.append(mesh.start_agent(name, extra_config=mqtt_table, wait=False))
        for agent in agents:
            mesh.wait_ready(agent)
        alpha, bravo = agents
        wait_until(lambda: remote_keys(graph_of(alpha)) == {bravo.peer_key}, 10, "the agents to join")

        # Each agent, logged in as itself, wrote its own subtree: status and its view of the other.
        bravo_status = LAYOUT.agent_topic(bravo.peer_key, TopicKind.STATUS)
        bravo_card = LAYOUT.peer_topic(bravo.peer_key, alpha.peer_key, TopicKind.CARD)

        def mirrored() -> dict[str, bytes] | None:
            seen = as_viewer(broker, "presence/#")
            wanted = [LAYOUT.agent_topic(a.peer_key, TopicKind.STATUS) for a in agents] + [bravo_card]
            return seen if all(seen.get(t) for t in wanted) else None

        before = wait_until(mirrored, 10, "both agents' subtrees on the broker")
        assert before[bravo_status] == b"online"
        assert before[LAYOUT.agent_topic(alpha.peer_key, TopicKind.STATUS)] == b"online"

        # Alpha's credentials, used against bravo's subtree: acknowledged, and dropped.
        publish_as(
            broker,
            alpha.peer_key,
            passwords[alpha.peer_key],
            [
                (bravo_status, b"offline"),
                (bravo_card, b"forged"),
                (f"presence/agents/{bravo.peer_key}/x", b"1"),
            ],
        )
        after = as_viewer(broker, f"presence/agents/{bravo.peer_key}/#")
        assert after[bravo_status] == b"online"
        assert after[bravo_card] == before[bravo_card]
        assert f"presence/agents/{bravo.peer_key}/x" not in after
        # The viewer reads everything and writes nothing.
        publish_as(broker, *VIEWER, [(bravo_status, b"offline")])
        assert as_viewer(broker, bravo_status)[bravo_status] == b"online"
