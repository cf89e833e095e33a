"""The real-broker test kit: a private mosquitto per test, checked with paho-mqtt 2.x and mosquitto_sub."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker_support import Mosquitto, make_tls_files, subscribe_retained
from lan_support import wait_until
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

# Retained messages arrive right after SUBACK; on loopback half a second is plenty.
WAIT = 0.5


def new_client(broker: Mosquitto, *, trust_ca: bool = True, client_cert: bool = False) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if broker.tls and trust_ca:
        tls = broker.tls
        cert, key = (str(tls.client_cert), str(tls.client_key)) if client_cert else (None, None)
        client.tls_set(ca_certs=str(tls.ca_cert), certfile=cert, keyfile=key)
    elif broker.tls:
        client.tls_set()  # the system's CAs only, which do not include the test CA
    return client


def connack(client: mqtt.Client, broker: Mosquitto) -> ReasonCode | None:
    """Connects and runs paho's loop in this thread until the CONNACK; None if the broker hung up first."""
    codes: list[ReasonCode] = []
    client.on_connect = lambda _client, _userdata, _flags, reason_code, _properties: codes.append(reason_code)
    client.connect(broker.host, broker.port, keepalive=10)
    hung_up = False

    def answered() -> bool:
        nonlocal hung_up
        hung_up = client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS
        return bool(codes) or hung_up

    wait_until(answered, 5, "a CONNACK")
    return codes[0] if codes else None


def connected(broker: Mosquitto, *, username: str | None = None, password: str | None = None) -> mqtt.Client:
    client = new_client(broker)
    if username is not None:
        client.username_pw_set(username, password)
    code = connack(client, broker)
    assert code is not None and not code.is_failure, code
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes, *, retain: bool = True) -> None:
    info = client.publish(topic, payload, qos=1, retain=retain)

    def acknowledged() -> bool:
        client.loop(timeout=0.05)
        return info.is_published()

    wait_until(acknowledged, 5, f"PUBACK for {topic}")


def test_a_retained_publish_from_paho_is_what_subscribe_retained_returns(mosquitto: Mosquitto) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.port != 1883  # never the system broker's port
    client = connected(mosquitto)
    publish(client, "presence/peers/a", b"here")
    publish(client, "presence/live", b"not kept", retain=False)
    client.disconnect()

    assert subscribe_retained(mosquitto.url, "presence/#", wait=WAIT) == {"presence/peers/a": b"here"}


def test_binary_payloads_and_topics_with_spaces_round_trip(mosquitto: Mosquitto) -> None:
    payloads = {"bin/zero": b"\x00\x01\xff", "bin/newlines": b"a\nb\r\n", "bin/with space": b" x "}
    client = connected(mosquitto)
    for topic, payload in payloads.items():
        publish(client, topic, payload)
    publish(client, "bin/deleted", b"soon gone")
    publish(client, "bin/deleted", b"")  # an empty retained payload deletes: it is never delivered
    client.disconnect()

    assert subscribe_retained(mosquitto.port, "bin/#", wait=WAIT) == payloads


def test_kill_and_restart_keep_the_port_and_forget_retained_messages(mosquitto: Mosquitto) -> None:
    client = connected(mosquitto)
    publish(client, "presence/peers/a", b"here")
    client.disconnect()
    assert subscribe_retained(mosquitto, "#", wait=WAIT) == {"presence/peers/a": b"here"}
    port, url = mosquitto.port, mosquitto.url

    mosquitto.kill()
    assert not mosquitto.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((mosquitto.host, port), timeout=1).close()

    mosquitto.restart()
    assert (mosquitto.port, mosquitto.url) == (port, url)
    assert subscribe_retained(mosquitto, "#", wait=WAIT) == {}  # persistence is off
    connected(mosquitto).disconnect()
    assert "mosquitto version" in mosquitto.log_text()


def test_tls_broker_admits_a_client_that_trusts_its_ca(mosquitto_tls_auth: Mosquitto) -> None:
    broker = mosquitto_tls_auth
    assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
    client = connected(broker, username="agent", password=broker.users["agent"])
    publish(client, "presence/peers/a", b"over tls")
    client.disconnect()

    retained = subscribe_retained(broker, "#", wait=WAIT, username="viewer", password=broker.users["viewer"])
    assert retained == {"presence/peers/a": b"over tls"}


def test_tls_broker_is_refused_by_a_client_that_does_not_trust_its_ca(mosquitto_tls_auth: Mosquitto) -> None:
    client = new_client(mosquitto_tls_auth, trust_ca=False)
    client.username_pw_set("agent", mosquitto_tls_auth.users["agent"])
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(mosquitto_tls_auth.host, mosquitto_tls_auth.port)


@pytest.mark.parametrize(("username", "password"), [("agent", "wrong"), ("nobody", "s3cret"), (None, None)])
def test_bad_credentials_get_a_failed_connack(
    mosquitto_tls_auth: Mosquitto, username: str | None, password: str | None
) -> None:
    client = new_client(mosquitto_tls_auth)
    if username is not None:
        client.username_pw_set(username, password)
    code = connack(client, mosquitto_tls_auth)
    client.disconnect()

    assert code is not None and code.is_failure
    assert code.getName() in ("Not authorized", "Bad user name or password")
    with pytest.raises(RuntimeError, match=r"not authori[sz]ed"):
        subscribe_retained(mosquitto_tls_auth, "#", wait=WAIT, username=username, password=password)


def test_a_broker_can_require_client_certificates(require_broker: None, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with Mosquitto(tmp_path / "mosquitto", tls=tls, require_client_cert=True) as broker:
        with_cert = new_client(broker, client_cert=True)
        code = connack(with_cert, broker)
        assert code is not None and not code.is_failure
        publish(with_cert, "presence/peers/a", b"mtls")
        with_cert.disconnect()
        # subscribe_retained presents the client certificate of a broker that requires one.
        assert subscribe_retained(broker, "#", wait=WAIT) == {"presence/peers/a": b"mtls"}

        without_cert = new_client(broker)
        try:
            code = connack(without_cert, broker)
        except (ssl.SSLError, ConnectionError):
            code = None  # refused during the handshake (TLS 1.2) rather than at the first read (TLS 1.3)
        assert code is None
