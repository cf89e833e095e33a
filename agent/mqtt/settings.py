"""``[mqtt]``: the settings of the mirror to an MQTT broker (and of ``presence-agent fleet``).

Owned by :mod:`agent.mqtt`; :mod:`agent.config` fills it from the TOML file and
checks the rules attached to each field, plus the rules that relate two keys.
No paho here.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.core.settings import positive, rule
from agent.mqtt.broker import parse_broker_url
from agent.mqtt.topics import DEFAULT_DISCOVERY_PREFIX, DEFAULT_TOPIC_ROOT, check_topic_root

__all__ = ["MqttSettings"]


def _is_broker_url(text: str) -> bool:
    if not text:
        return True  # the mirror is off
    try:
        parse_broker_url(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """``[mqtt]``: mirror the mesh to an MQTT broker. Off unless ``broker`` is set.

    The password is never in this file's values: it is read from ``password_file``
    (first line) or the environment variable named by ``password_env``.
    """

    broker: str = rule("", 'a URL "mqtt://host[:port]" or "mqtts://host[:port]"', _is_broker_url)
    #: ``""`` means ``presence-agent-<peer id>``: unique per device, stable across restarts.
    client_id: str = rule("", "at most 64 characters", lambda v: len(v) <= 64)
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    #: CA bundle to trust for ``mqtts://`` (``""``: the system's CAs).
    ca_file: str = ""
    #: Client certificate and its key, for brokers that require one.
    cert_file: str = ""
    key_file: str = ""
    topic_root: str = rule(
        DEFAULT_TOPIC_ROOT,
        'a topic prefix such as "presence" or "site/7/presence"',
        lambda v: check_topic_root(v) is None,
    )
    qos: int = rule(1, "0, 1 or 2", (0, 1, 2).__contains__)
    keepalive: int = rule(30, "an integer in 5..3600 (seconds)", lambda v: 5 <= v <= 3600)
    #: Changes within this many seconds are published together (one message per topic).
    coalesce: float = rule(0.1, "a number of seconds in 0..60", lambda v: 0 <= v <= 60)
    #: Reconnect back-off (doubling, with jitter) between these bounds, in seconds.
    reconnect_min: float = positive(1.0)
    reconnect_max: float = positive(60.0)
    #: Most topics waiting to be published; beyond it clears of departed peers are dropped
    #: (and counted): the sweep after the next connect removes them.
    max_pending: int = rule(20_000, "an integer >= 100", lambda v: v >= 100)
    #: Publish Home Assistant MQTT discovery: each peer a device with a presence entity.
    homeassistant: bool = False
    discovery_prefix: str = rule(
        DEFAULT_DISCOVERY_PREFIX, "a topic prefix", lambda v: check_topic_root(v) is None
    )

    @property
    def enabled(self) -> bool:
        return bool(self.broker)
