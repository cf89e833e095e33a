"""Specification of the MQTT topic layout (agent.mqtt.topics) and of where the broker is (agent.mqtt.broker).

Every agent owns ``<root>/agents/<agent>/`` (its status and graph) and
``<root>/agents/<agent>/peers/<peer>/`` (each peer's state, signed records and
Home Assistant presence). The layout is written in one place and parsed back in
the same place, so a topic the mirror writes is a topic the fleet view reads.

The broker is named by a URL ``mqtt://host[:port]`` or ``mqtts://host[:port]``;
the password never comes from the URL or the configuration file, only from a
password file (its first line) or an environment variable, and never shows in a
repr.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub
from strategies import QUICK, THOROUGH, peer_key_strings, raw_keys

from agent.core.keys import peer_key_string
from agent.mqtt.broker import (
    BrokerAddress,
    BrokerOptions,
    CredentialsError,
    parse_broker_url,
    password_file_too_open,
    read_password,
)
from agent.mqtt.topics import (
    DEFAULT_DISCOVERY_PREFIX,
    DEFAULT_TOPIC_ROOT,
    ParsedTopic,
    TopicKind,
    TopicLayout,
    check_topic_root,
    short_id,
)

LAYOUT = TopicLayout()
AGENT_KINDS = (TopicKind.STATUS, TopicKind.GRAPH)
PEER_KINDS = (TopicKind.STATE, TopicKind.CARD, TopicKind.LINKS, TopicKind.PRESENCE)

#: One level of a topic root: any text without the separator, MQTT wildcards or NUL.
root_levels = st.text(
    alphabet=st.characters(exclude_characters="/+#\0", codec="utf-8"), min_size=1, max_size=8
)
#: Topic roots an operator may choose: one to three non-empty levels, not a broker ($) topic.
topic_roots = (
    st.lists(root_levels, min_size=1, max_size=3).map("/".join).filter(lambda root: not root.startswith("$"))
)


def render(layout: TopicLayout, parsed: ParsedTopic) -> str:
    """The topic a parsed topic came from, written by the layout."""
    if parsed.peer is None:
        return layout.agent_topic(parsed.agent, parsed.kind)
    return layout.peer_topic(parsed.agent, parsed.peer, parsed.kind)


# ================================================================ the layout


def test_the_default_layout_lives_under_presence_with_home_assistant_under_homeassistant() -> None:
    assert (LAYOUT.root, LAYOUT.discovery_prefix) == (DEFAULT_TOPIC_ROOT, DEFAULT_DISCOVERY_PREFIX)
    assert (DEFAULT_TOPIC_ROOT, DEFAULT_DISCOVERY_PREFIX) == ("presence", "homeassistant")


@QUICK
@given(agent=peer_key_strings)
def test_agent_topics_are_the_kind_under_the_agents_subtree(agent: str) -> None:
    assert LAYOUT.agent_topic(agent, TopicKind.STATUS) == f"presence/agents/{agent}/status"
    assert LAYOUT.agent_topic(agent, TopicKind.GRAPH) == f"presence/agents/{agent}/graph"


@QUICK
@given(agent=peer_key_strings, peer=peer_key_strings, kind=st.sampled_from(PEER_KINDS))
def test_peer_topics_are_the_kind_under_the_peer_in_the_agents_subtree(
    agent: str, peer: str, kind: TopicKind
) -> None:
    assert LAYOUT.peer_topic(agent, peer, kind) == f"presence/agents/{agent}/peers/{peer}/{kind.value}"


@THOROUGH
@given(root=topic_roots, agent=peer_key_strings, kind=st.sampled_from(AGENT_KINDS))
def test_every_agent_topic_parses_back_to_its_agent_and_kind(root: str, agent: str, kind: TopicKind) -> None:
    layout = TopicLayout(root)

    assert layout.parse(layout.agent_topic(agent, kind)) == ParsedTopic(agent, kind, None)


@THOROUGH
@given(root=topic_roots, agent=peer_key_strings, peer=peer_key_strings, kind=st.sampled_from(PEER_KINDS))
def test_every_peer_topic_parses_back_to_its_agent_kind_and_peer(
    root: str, agent: str, peer: str, kind: TopicKind
) -> None:
    layout = TopicLayout(root)

    assert layout.parse(layout.peer_topic(agent, peer, kind)) == ParsedTopic(agent, kind, peer)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "presence",
        "presence/agents",
        "presence/agents/A",
        "other/agents/A/status",
        "presence2/agents/A/status",
        "/presence/agents/A/status",
        "presence/agent/A/status",
        "homeassistant/binary_sensor/0011223344556677/8899aabbccddeeff/config",
    ],
)
def test_topics_outside_the_root_parse_to_none(topic: str) -> None:
    assert LAYOUT.parse(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "presence/agents/A/status/extra",
        "presence/agents/A/peers",
        "presence/agents/A/peers/B",
        "presence/agents/A/peers/B/state/extra",
        "presence/agents/A/peers/B/card/",
    ],
)
def test_topics_of_the_wrong_depth_parse_to_none(topic: str) -> None:
    assert LAYOUT.parse(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "presence/agents/A/bogus",
        "presence/agents/A/STATUS",
        "presence/agents/A/state",  # a peer kind at agent depth
        "presence/agents/A/card",
        "presence/agents/A/peers/B/bogus",
        "presence/agents/A/peers/B/status",  # an agent kind at peer depth
        "presence/agents/A/peers/B/graph",
        "presence/agents/A/peerz/B/state",
    ],
)
def test_topics_of_an_unknown_or_misplaced_kind_parse_to_none(topic: str) -> None:
    assert LAYOUT.parse(topic) is None


#: Topic-ish text: levels drawn mostly from the layout's own words, so many are near misses.
topic_like = st.lists(
    st.one_of(
        st.sampled_from(["presence", "agents", "peers", "", "A", *(kind.value for kind in TopicKind)]),
        st.text(max_size=6),
    ),
    max_size=7,
).map("/".join)


@THOROUGH
@given(topic=st.one_of(st.text(), topic_like))
def test_parsing_any_text_never_raises_and_only_accepts_topics_the_layout_writes(topic: str) -> None:
    parsed = LAYOUT.parse(topic)

    assert parsed is None or render(LAYOUT, parsed) == topic


def test_a_layout_only_parses_topics_under_its_own_root() -> None:
    site = TopicLayout("site/north")
    topic = LAYOUT.agent_topic("A", TopicKind.STATUS)

    assert LAYOUT.parse(topic) == ParsedTopic("A", TopicKind.STATUS)
    assert site.parse(topic) is None


# ================================================================ topic roots


@THOROUGH
@given(root=topic_roots)
def test_a_root_of_non_empty_levels_without_wildcards_is_accepted(root: str) -> None:
    assert check_topic_root(root) is None
    assert TopicLayout(root, discovery_prefix=root).root == root


#: (bad root, a fragment the explanation must contain)
BAD_ROOTS = [
    ("", "empty"),
    ("pre+sence", "'+'"),
    ("presence/+", "'+'"),
    ("presence/#", "'#'"),
    ("pre\0sence", repr("\0")),
    ("/presence", "'/'"),
    ("presence/", "'/'"),
    ("/", "'/'"),
    ("site//presence", "empty level"),
    ("$SYS", "'$'"),
    ("$presence/site", "'$'"),
]


@pytest.mark.parametrize(("root", "why"), BAD_ROOTS)
def test_check_topic_root_explains_why_a_root_is_refused(root: str, why: str) -> None:
    problem = check_topic_root(root)

    assert problem is not None
    assert why in problem


@pytest.mark.parametrize(("root", "why"), BAD_ROOTS)
def test_a_layout_refuses_a_bad_topic_root_naming_it_and_why(root: str, why: str) -> None:
    with pytest.raises(ValueError, match="topic root") as refused:
        TopicLayout(root)

    assert repr(root) in str(refused.value)
    assert why in str(refused.value)


@pytest.mark.parametrize(("prefix", "why"), BAD_ROOTS)
def test_a_layout_refuses_a_bad_discovery_prefix_naming_it_and_why(prefix: str, why: str) -> None:
    with pytest.raises(ValueError, match="discovery prefix") as refused:
        TopicLayout(discovery_prefix=prefix)

    assert repr(prefix) in str(refused.value)
    assert why in str(refused.value)


# ================================================================ fleet filters

RECORD_AND_STATUS = (TopicKind.STATUS, TopicKind.CARD, TopicKind.LINKS)


def topic_of(layout: TopicLayout, agent: str, peer: str, kind: TopicKind) -> str:
    if kind in AGENT_KINDS:
        return layout.agent_topic(agent, kind)
    return layout.peer_topic(agent, peer, kind)


def matched_by_fleet_filters(layout: TopicLayout, topic: str) -> bool:
    return any(topic_matches_sub(sub, topic) for sub in layout.fleet_filters())


@QUICK
@given(agent=peer_key_strings, peer=peer_key_strings, kind=st.sampled_from(RECORD_AND_STATUS))
def test_the_fleet_filters_match_every_agents_status_and_signed_records(
    agent: str, peer: str, kind: TopicKind
) -> None:
    assert matched_by_fleet_filters(LAYOUT, topic_of(LAYOUT, agent, peer, kind))


@QUICK
@given(
    agent=peer_key_strings,
    peer=peer_key_strings,
    kind=st.sampled_from((TopicKind.GRAPH, TopicKind.STATE, TopicKind.PRESENCE)),
)
def test_the_fleet_filters_skip_graphs_states_and_presence(agent: str, peer: str, kind: TopicKind) -> None:
    assert not matched_by_fleet_filters(LAYOUT, topic_of(LAYOUT, agent, peer, kind))


def test_the_fleet_filters_skip_home_assistant_discovery_and_other_roots() -> None:
    other = TopicLayout("elsewhere")

    assert not matched_by_fleet_filters(LAYOUT, LAYOUT.discovery_topic("A", "B"))
    assert not matched_by_fleet_filters(LAYOUT, other.agent_topic("A", TopicKind.STATUS))
    assert not matched_by_fleet_filters(LAYOUT, other.peer_topic("A", "B", TopicKind.CARD))


@QUICK
@given(agent=peer_key_strings, other=peer_key_strings, peer=peer_key_strings, kind=st.sampled_from(TopicKind))
def test_an_agent_filter_matches_everything_of_that_agent_and_nothing_of_another(
    agent: str, other: str, peer: str, kind: TopicKind
) -> None:
    sub = LAYOUT.agent_filter(agent)

    assert topic_matches_sub(sub, topic_of(LAYOUT, agent, peer, kind))
    assert topic_matches_sub(sub, topic_of(LAYOUT, other, peer, kind)) == (other == agent)


# ================================================================ short ids


@THOROUGH
@given(raw=raw_keys)
def test_a_short_id_is_the_hex_of_the_keys_first_eight_bytes(raw: bytes) -> None:
    assert short_id(peer_key_string(raw)) == raw[:8].hex()


@QUICK
@given(raw=raw_keys)
def test_a_short_id_is_sixteen_lowercase_hex_digits(raw: bytes) -> None:
    assert re.fullmatch("[0-9a-f]{16}", short_id(peer_key_string(raw)))


def test_the_discovery_topic_names_agent_and_peer_by_short_id() -> None:
    agent, peer = peer_key_string(bytes(range(32))), peer_key_string(bytes(range(100, 132)))

    assert LAYOUT.discovery_topic(agent, peer) == (
        "homeassistant/binary_sensor/0001020304050607/6465666768696a6b/config"
    )


# ================================================================ broker URLs


def test_an_mqtt_url_without_a_port_uses_1883_without_tls() -> None:
    assert parse_broker_url("mqtt://broker.lan") == BrokerAddress("broker.lan", 1883, tls=False)


def test_an_mqtts_url_without_a_port_uses_8883_with_tls() -> None:
    assert parse_broker_url("mqtts://broker.lan") == BrokerAddress("broker.lan", 8883, tls=True)


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
def test_an_explicit_port_wins_over_the_default(scheme: str) -> None:
    assert parse_broker_url(f"{scheme}://10.0.0.2:2883").port == 2883


def test_a_trailing_slash_is_allowed() -> None:
    assert parse_broker_url("mqtt://broker.lan/") == BrokerAddress("broker.lan", 1883, tls=False)


def test_an_ipv6_host_is_written_in_brackets() -> None:
    address = parse_broker_url("mqtts://[::1]:8884")

    assert address == BrokerAddress("::1", 8884, tls=True)
    assert address.url == "mqtts://[::1]:8884"


@pytest.mark.parametrize(
    "url", ["mqtt://broker.lan:1883", "mqtts://broker.lan:8883", "mqtt://[::1]:1883", "mqtts://[fe80::1]:9"]
)
def test_a_broker_address_url_parses_back_to_the_same_address(url: str) -> None:
    address = parse_broker_url(url)

    assert address.url == url
    assert parse_broker_url(address.url) == address


def test_a_broker_address_url_spells_out_the_default_port() -> None:
    assert parse_broker_url("mqtt://[::1]").url == "mqtt://[::1]:1883"


REFUSED_URLS = [
    ("http://broker.lan", "mqtt:// or mqtts://"),
    ("tcp://broker.lan:1883", "mqtt:// or mqtts://"),
    ("broker.lan:1883", "mqtt:// or mqtts://"),
    ("mqtt://broker.lan/presence", "only scheme://host[:port]"),
    ("mqtt://broker.lan?keepalive=5", "only scheme://host[:port]"),
    ("mqtt://broker.lan#x", "only scheme://host[:port]"),
    ("mqtt://", "no host"),
    ("mqtt://:1883", "no host"),
    ("mqtt://broker.lan:port", "invalid port"),
    ("mqtt://broker.lan:65536", "invalid port"),
    ("mqtt://broker.lan:-1", "invalid port"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED_URLS)
def test_a_bad_broker_url_is_refused_naming_the_url_and_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_broker_url(url)

    assert repr(url) in str(refused.value)
    assert why in str(refused.value)


def test_port_zero_is_refused_as_an_invalid_port() -> None:
    with pytest.raises(ValueError, match="invalid port"):
        parse_broker_url("mqtt://broker.lan:0")


def test_an_unclosed_ipv6_bracket_is_refused_naming_the_url() -> None:
    url = "mqtt://[::1"

    with pytest.raises(ValueError) as refused:
        parse_broker_url(url)

    assert repr(url) in str(refused.value)


@pytest.mark.parametrize(
    "url", ["mqtt://agent@broker.lan", "mqtt://agent:s3cret@broker.lan", "mqtt://:s3cret@broker.lan"]
)
def test_a_url_with_credentials_is_refused_naming_the_url_with_the_credentials_masked(url: str) -> None:
    with pytest.raises(ValueError, match="credentials") as refused:
        parse_broker_url(url)

    assert "'mqtt://***@broker.lan'" in str(refused.value)
    assert "s3cret" not in str(refused.value) and "agent@" not in str(refused.value)


# ================================================================ credentials


def test_a_password_file_gives_its_first_line_without_the_newline(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret\n", encoding="utf-8")

    assert read_password(password_file=str(path)) == "s3cret"


def test_a_password_file_ignores_every_line_after_the_first(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret\nsomething else\n", encoding="utf-8")

    assert read_password(password_file=str(path)) == "s3cret"


def test_a_password_file_without_a_final_newline_gives_the_whole_text(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("pässwörd with spaces", encoding="utf-8")

    assert read_password(password_file=str(path)) == "pässwörd with spaces"


def test_a_password_environment_variable_gives_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRESENCE_TEST_MQTT_PASSWORD", "s3cret")

    assert read_password(password_env="PRESENCE_TEST_MQTT_PASSWORD") == "s3cret"


def test_without_a_password_file_or_variable_there_is_no_password() -> None:
    assert read_password() is None
    assert read_password(password_file="", password_env="") is None


def test_a_missing_password_file_is_a_credentials_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no-such-password"

    with pytest.raises(CredentialsError) as refused:
        read_password(password_file=str(path))

    assert str(path) in str(refused.value)


def test_an_unset_password_variable_is_a_credentials_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PRESENCE_TEST_MQTT_PASSWORD", raising=False)

    with pytest.raises(CredentialsError, match="PRESENCE_TEST_MQTT_PASSWORD"):
        read_password(password_env="PRESENCE_TEST_MQTT_PASSWORD")


@pytest.mark.parametrize("password", ["s3cret", "hunter2-ÄÖÜ", "correct horse battery staple"])
def test_broker_options_never_show_the_password(password: str) -> None:
    options = BrokerOptions(
        address=parse_broker_url("mqtts://broker.lan"),
        username="agent",
        password=password,
        ca_file="/etc/ca.pem",
        cert_file="/etc/cert.pem",
        key_file="/etc/key.pem",
    )

    assert password not in repr(options)
    assert password not in str(options)


def test_a_password_file_readable_by_others_is_too_open(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret\n", encoding="utf-8")
    os.chmod(path, 0o644)

    assert password_file_too_open(str(path))


def test_a_password_file_readable_by_the_group_is_too_open(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret\n", encoding="utf-8")
    os.chmod(path, 0o640)

    assert password_file_too_open(str(path))


def test_a_password_file_only_its_owner_can_read_is_not_too_open(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret\n", encoding="utf-8")
    os.chmod(path, 0o600)

    assert not password_file_too_open(str(path))
