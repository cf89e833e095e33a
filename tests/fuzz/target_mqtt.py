"""What the fleet view reads from an MQTT broker (``agent.mqtt.fleet``, ``agent.mqtt.topics``).

(``agent.mqtt.messages`` only builds payloads; the decoders of broker input
are ``TopicLayout.parse`` and ``FleetState.handle``.)

``mqtt_fleet``: a ``FleetState`` (default layout, clock at :data:`world.NOW`)
handles a sequence of retained messages, each a ``u16`` length and a topic
(UTF-8; invalid bytes replaced, as paho hands topics over as text), then a
``u16`` length and a payload. Contract: ``handle`` never raises, ``parse``
never raises, the merged ``graph()`` is built after every message, only
records that verify are held, and the rejections kept stay within their bound.
"""

from __future__ import annotations

from agent.mqtt.fleet import FleetState
from agent.mqtt.topics import TopicLayout

from . import world
from .contract import Reader, Target, require

_LAYOUT = TopicLayout()


def mqtt_fleet(data: bytes) -> None:
    state = FleetState(_LAYOUT, clock=lambda: world.NOW, max_rejections=8)
    reader = Reader(data)
    while reader:
        topic = reader.chunk().decode("utf-8", errors="replace")
        payload = reader.chunk()
        _LAYOUT.parse(topic)
        state.handle(topic, payload)
        graph = state.graph()
        require(len(state.rejections) <= 8, "rejections grew past max_rejections")
        for peer in graph.peers:
            require(peer.seen_by != (), f"a peer nobody online holds: {peer.peer_key_string}")


TARGETS = (Target("mqtt_fleet", mqtt_fleet),)
