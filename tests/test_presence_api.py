"""The Presence API: the graph, this peer's metadata, persistence and lifetime.

Also home of the small fakes the observer and handler specs share (import them
as ``from test_presence_api import ...``): a driver running functions on a
worker thread of its own, like the runtime's engine thread, a fake engine, and
an in-memory metadata store.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.api as api
from agent.api import (
    ConnectionRequestAuthorization,
    MetadataError,
    MetadataTooLargeError,
    Peer,
    Presence,
    PresenceError,
    PresenceGraph,
)
from agent.core.keys import peer_key_string
from agent.core.limits import MAX_METADATA_JSON_BYTES, MAX_RECORD_BYTES
from agent.core.records import EMPTY_METADATA, Card, make_card, metadata_json, worst_case_card_size

T = TypeVar("T")

#: Upper bound of every wait in these specs: generous, so only a real hang fails.
WAIT = 5.0
NOW = 1_800_000_000.0


# ---------------------------------------------------------------- shared fakes


def new_public_key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw()


def make_peer(name: str, hops: int = 1) -> Peer:
    """A remote peer with a fresh key, named ``name``."""
    return Peer(peer_key_string(new_public_key()), name, "Linux", (), EMPTY_METADATA, EMPTY_METADATA, hops)


def graph_named(name: str) -> PresenceGraph:
    """A distinct graph whose local peer is called ``name``."""
    return PresenceGraph(make_peer(name, hops=0))


class FakeEngine:
    """The three things Presence may use of an engine: ``card``, ``set_card``, ``graph``."""

    def __init__(self, public_key: bytes, card: Card) -> None:
        self.public_key = public_key
        self.card = card
        self.set_card_calls: list[Card] = []
        self.set_card_error: Exception | None = None
        self.remote_peers: tuple[Peer, ...] = ()

    def set_card(self, card: Card, now: float) -> None:
        if self.set_card_error is not None:
            raise self.set_card_error
        self.set_card_calls.append(card)
        self.card = card

    def graph(self, now: float) -> PresenceGraph:
        local = Peer(
            peer_key_string(self.public_key),
            self.card.device_name,
            self.card.os,
            (),
            self.card.metadata,
            EMPTY_METADATA,
            0,
            self.card.agent_version,
        )
        return PresenceGraph(local, self.remote_peers)


class FakeDriver:
    """Runs ``fn(engine, now)`` on one worker thread of its own, like the runtime."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any, float], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._work, name="fake-driver", daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[Any, float], T]) -> T:
        if threading.current_thread() is self.thread:
            return fn(self.engine, NOW)
        done: Future[T] = Future()
        self._jobs.put((fn, done))
        return done.result(timeout=WAIT)

    def close(self) -> None:
        self._jobs.put(None)
        self.thread.join(WAIT)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, done = job
            try:
                done.set_result(fn(self.engine, NOW))
            except BaseException as exc:
                done.set_exception(exc)


class MemoryStore:
    """An in-memory MetadataStore that remembers every save."""

    def __init__(self, text: str | None = None) -> None:
        self.text = text
        self.saves: list[str] = []

    def save_metadata_json(self, text: str) -> None:
        self.saves.append(text)
        self.text = text

    def load_metadata_json(self) -> str | None:
        return self.text


@dataclass
class Rig:
    """A Presence over a fake driver and engine and an in-memory store."""

    public_key: bytes
    engine: FakeEngine
    driver: FakeDriver
    store: MemoryStore
    presence: Presence
    extra: list[Presence] = field(default_factory=list)

    def publish_from_driver(self, graph: PresenceGraph) -> None:
        """Publish as a driver does: from the engine's own thread."""
        self.driver.call(lambda engine, now: self.presence.publish(graph))

    def reopen(self) -> Presence:
        """Another Presence over the same driver and store (a restart of the API layer)."""
        presence = Presence(self.driver, self.public_key, self.store)
        self.extra.append(presence)
        return presence

    def close(self) -> None:
        for presence in (self.presence, *self.extra):
            presence.close()
        self.driver.close()


def make_rig(*, stored: str | None = None, handler_timeout: float = 10.0) -> Rig:
    public_key = new_public_key()
    engine = FakeEngine(public_key, make_card("pi-kitchen", "Linux", "0.1.0", {}))
    driver = FakeDriver(engine)
    store = MemoryStore(stored)
    presence = Presence(driver, public_key, store, handler_timeout=handler_timeout)
    return Rig(public_key, engine, driver, store, presence)


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = make_rig()
    yield rig
    rig.close()


# ---------------------------------------------------------------- the graph


def test_graph_is_the_engines_graph_now(rig: Rig) -> None:
    rig.engine.remote_peers = (make_peer("pi-garage"),)

    graph = rig.presence.graph()

    assert graph == rig.engine.graph(NOW)
    assert graph.local_peer.peer_key_string == peer_key_string(rig.public_key)
    assert [p.device_name for p in graph.remote_peers] == ["pi-garage"]


def test_public_names_are_exported_from_agent_api() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None
    assert api.errors.MetadataTooLargeError is MetadataTooLargeError


def test_authorization_values_keep_the_reference_spellings() -> None:
    assert [a.value for a in ConnectionRequestAuthorization] == ["Allow", "Deny"]


# ---------------------------------------------------------------- setting metadata


def test_set_peer_metadata_publishes_stores_and_reads_back(rig: Rig) -> None:
    rig.presence.set_peer_metadata({"app_version": "1.0.0", "caps": ["ble", "lora"], "n": 3})

    expected = '{"app_version":"1.0.0","caps":["ble","lora"],"n":3}'
    assert rig.presence.peer_metadata_json_str() == expected
    assert rig.presence.peer_metadata == {"app_version": "1.0.0", "caps": ("ble", "lora"), "n": 3}
    assert rig.store.saves == [expected]
    assert len(rig.engine.set_card_calls) == 1
    assert metadata_json(rig.engine.card.metadata) == expected
    assert rig.engine.card.device_name == "pi-kitchen"  # the rest of the card is kept
    assert metadata_json(rig.presence.graph().local_peer.peer_metadata) == expected


def test_set_peer_metadata_json_str_round_trips_as_canonical_json(rig: Rig) -> None:
    rig.presence.set_peer_metadata_json_str('{ "b": [1, {"c": null}], "a": "é" }')

    assert rig.presence.peer_metadata_json_str() == '{"a":"é","b":[1,{"c":null}]}'
    assert json.loads(rig.presence.peer_metadata_json_str()) == {"a": "é", "b": [1, {"c": None}]}
    assert rig.store.text == '{"a":"é","b":[1,{"c":null}]}'
    assert len(rig.engine.set_card_calls) == 1


def test_setting_empty_metadata_clears_it(rig: Rig) -> None:
    rig.presence.set_peer_metadata({"a": 1})
    rig.presence.set_peer_metadata({})

    assert rig.presence.peer_metadata == {}
    assert rig.presence.peer_metadata_json_str() == "{}"
    assert rig.store.text == "{}"


def test_peer_metadata_is_read_only_and_detached_from_the_input(rig: Rig) -> None:
    given: dict[str, Any] = {"tags": ["a"], "inner": {"x": 1}}
    rig.presence.set_peer_metadata(given)
    given["tags"].append("b")

    metadata = rig.presence.peer_metadata
    assert metadata["tags"] == ("a",)
    with pytest.raises(TypeError):
        metadata["new"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        metadata["inner"]["x"] = 2


@dataclass
class AppInfo:
    app_version: str
    caps: list[str]


class AppInfoDict(TypedDict):
    app_version: str
    caps: list[str]


def test_peer_metadata_as_builds_dataclasses_dicts_and_typed_dicts(rig: Rig) -> None:
    rig.presence.set_peer_metadata({"app_version": "1.2.4", "caps": ["ble"]})

    assert rig.presence.peer_metadata_as(AppInfo) == AppInfo("1.2.4", ["ble"])
    as_dict: dict[str, Any] = rig.presence.peer_metadata_as(dict)
    assert as_dict == {"app_version": "1.2.4", "caps": ["ble"]}
    as_dict["caps"].append("mutable copy")
    assert rig.presence.peer_metadata["caps"] == ("ble",)
    assert rig.presence.peer_metadata_as(AppInfoDict)["caps"] == ["ble"]


def test_peer_metadata_as_explains_a_mismatch(rig: Rig) -> None:
    rig.presence.set_peer_metadata({"app_version": "1.2.4"})

    with pytest.raises(MetadataError, match=r"keys: app_version.*does not fit AppInfo") as info:
        rig.presence.peer_metadata_as(AppInfo)
    assert "peer_metadata_as(dict)" in str(info.value)


def _blob(json_bytes: int) -> dict[str, str]:
    """Metadata whose compact JSON is exactly ``json_bytes`` long."""
    return {"blob": "x" * (json_bytes - len('{"blob":""}'))}


#: Just under the JSON limit, yet over the signed card's 4096-byte budget.
CARD_OVERFLOW = _blob(MAX_METADATA_JSON_BYTES - 8)

REFUSALS: list[tuple[str, Callable[[Presence], None], type[Exception], list[str]]] = [
    (
        "oversized object",
        lambda p: p.set_peer_metadata(_blob(5000)),
        MetadataTooLargeError,
        ["5000 bytes", f"limit is {MAX_METADATA_JSON_BYTES} bytes"],
    ),
    (
        "oversized JSON text",
        lambda p: p.set_peer_metadata_json_str(json.dumps(_blob(5000), separators=(",", ":"))),
        MetadataTooLargeError,
        ["5000 bytes", f"limit is {MAX_METADATA_JSON_BYTES} bytes"],
    ),
    (
        "card over budget",
        lambda p: p.set_peer_metadata(CARD_OVERFLOW),
        MetadataTooLargeError,
        ["signed card", f"limit is {MAX_RECORD_BYTES} bytes"],
    ),
    (
        "card over budget as JSON text",
        lambda p: p.set_peer_metadata_json_str(metadata_json(CARD_OVERFLOW)),
        MetadataTooLargeError,
        ["signed card", f"limit is {MAX_RECORD_BYTES} bytes"],
    ),
    ("a list", lambda p: p.set_peer_metadata([1, 2]), MetadataError, ["JSON object", "list"]),  # type: ignore[arg-type]
    ("a JSON list", lambda p: p.set_peer_metadata_json_str("[1, 2]"), MetadataError, ["JSON object"]),
    ("a JSON string", lambda p: p.set_peer_metadata_json_str('"hi"'), MetadataError, ["JSON object"]),
    ("NaN", lambda p: p.set_peer_metadata({"x": math.nan}), MetadataError, ["NaN"]),
    ("JSON NaN", lambda p: p.set_peer_metadata_json_str('{"x": NaN}'), MetadataError, ["NaN"]),
    ("infinity", lambda p: p.set_peer_metadata({"x": [math.inf]}), MetadataError, ["Infinity"]),
    ("broken JSON", lambda p: p.set_peer_metadata_json_str('{"x": '), MetadataError, ["not valid JSON"]),
    ("bytes as text", lambda p: p.set_peer_metadata_json_str(b"{}"), MetadataError, ["str"]),  # type: ignore[arg-type]
    ("non-text key", lambda p: p.set_peer_metadata({1: "a"}), MetadataError, ["keys must be strings"]),  # type: ignore[dict-item]
    ("non-JSON value", lambda p: p.set_peer_metadata({"x": object()}), MetadataError, ["JSON data"]),
]


@pytest.mark.parametrize(
    ("attempt", "error", "message_parts"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refused_metadata_raises_and_changes_nothing(
    rig: Rig,
    attempt: Callable[[Presence], None],
    error: type[Exception],
    message_parts: list[str],
) -> None:
    rig.presence.set_peer_metadata({"app_version": "1.0.0"})
    saves, cards, card = list(rig.store.saves), list(rig.engine.set_card_calls), rig.engine.card

    with pytest.raises(error) as info:
        attempt(rig.presence)

    for part in message_parts:
        assert part in str(info.value)
    assert rig.store.saves == saves
    assert rig.engine.set_card_calls == cards
    assert rig.engine.card is card
    assert rig.presence.peer_metadata == {"app_version": "1.0.0"}
    assert rig.presence.peer_metadata_json_str() == '{"app_version":"1.0.0"}'


def test_card_overflow_case_really_is_within_the_json_limit(rig: Rig) -> None:
    text = metadata_json(CARD_OVERFLOW)
    card = dataclasses.replace(rig.engine.card, metadata=CARD_OVERFLOW)

    assert len(text.encode()) <= MAX_METADATA_JSON_BYTES
    assert worst_case_card_size(rig.public_key, card) > MAX_RECORD_BYTES
    with pytest.raises(MetadataTooLargeError) as info:
        rig.presence.set_peer_metadata(CARD_OVERFLOW)
    assert info.value.size == worst_case_card_size(rig.public_key, card)
    assert info.value.limit == MAX_RECORD_BYTES


def test_a_failed_signing_restores_the_stored_metadata(rig: Rig) -> None:
    rig.presence.set_peer_metadata({"v": 1})
    rig.engine.set_card_error = RuntimeError("engine stopped")

    with pytest.raises(RuntimeError, match="engine stopped"):
        rig.presence.set_peer_metadata({"v": 2})

    assert rig.store.text == '{"v":1}'
    assert rig.presence.peer_metadata == {"v": 1}
    assert metadata_json(rig.engine.card.metadata) == '{"v":1}'


def test_concurrent_setters_leave_store_engine_and_presence_agreeing(rig: Rig) -> None:
    start = threading.Barrier(8, timeout=WAIT)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(10):
                rig.presence.set_peer_metadata({"writer": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)

    assert not errors
    final = rig.presence.peer_metadata_json_str()
    assert rig.store.text == final
    assert metadata_json(rig.engine.card.metadata) == final
    assert len(rig.engine.set_card_calls) == len(rig.store.saves) == 80
    # Each save was followed by its own signing before the next save.
    assert [metadata_json(c.metadata) for c in rig.engine.set_card_calls] == rig.store.saves


# ---------------------------------------------------------------- persistence and lifetime


def test_metadata_survives_a_restart(rig: Rig) -> None:
    rig.presence.set_peer_metadata({"app_version": "2.0.0"})

    again = rig.reopen()

    assert again.peer_metadata == {"app_version": "2.0.0"}
    assert again.peer_metadata_json_str() == '{"app_version":"2.0.0"}'


def test_a_fresh_store_means_empty_metadata(rig: Rig) -> None:
    assert rig.presence.peer_metadata == {}
    assert rig.presence.peer_metadata_json_str() == "{}"


def test_unreadable_stored_metadata_is_logged_and_treated_as_empty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="agent.api")
    rig = make_rig(stored='{"truncat')
    try:
        assert rig.presence.peer_metadata == {}
        assert any("stored peer metadata is unreadable" in r.getMessage() for r in caplog.records)
    finally:
        rig.close()


def test_presence_is_a_context_manager_that_closes() -> None:
    rig = make_rig()
    try:
        with rig.presence as presence:
            observer = presence.observe(lambda graph: None)
            assert observer.is_active
        assert not observer.is_active
        assert not presence.wants_graphs
        with pytest.raises(PresenceError, match="closed"):
            presence.observe(lambda graph: None)
        rig.presence.close()  # idempotent
    finally:
        rig.close()
