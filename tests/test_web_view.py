"""The web view in a real headless browser, fed by real agent processes (and a real mosquitto fleet).

Each page is Chromium (Playwright) loading the page a ``presence-agent view``,
``presence-agent run`` with ``[view]`` or ``presence-agent fleet --view``
process serves, and what is checked is what a person would see: rows in the
table, the card's text, the list of changes. Screenshots go under the test's
temporary directory.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import Mosquitto, subscribe_retained
from browser_support import shot, view_url
from lan_support import Mesh, Proc, ask, graph_of, remote_keys, wait_until
from test_mqtt_mirror import LAYOUT, publish_retained

from agent.mqtt.topics import TopicKind

#: Page waits (ms): a change reaches the page within the control watch's latency; a departure takes
#: dead_interval + departure_grace (2.5 s with the [lan] defaults) first.
SHOW_MS = 10_000
LEAVE_MS = 12_000


def full_mesh(mesh: Mesh, *names: str, extra: str = "") -> list[Proc]:
    agents = [mesh.start_agent(n, wait=False, extra_config=extra) for n in names]
    for agent in agents:
        mesh.wait_ready(agent)
    keys = {a.peer_key for a in agents}
    wait_until(lambda: all(remote_keys(graph_of(a)) == keys - {a.peer_key} for a in agents), 15, "full mesh")
    return agents


def start_view(mesh: Mesh, agent: Proc, listen: str = "127.0.0.1:0") -> tuple[Proc, str]:
    argv = [sys.executable, "-m", "agent.cli", "view", "--state-dir", str(agent.state), "--listen", listen]
    proc = mesh.spawn(f"view-{agent.name}", argv)
    return proc, view_url(proc)


def row(page: Any, name: str) -> Any:
    return page.locator(f'#peers tbody tr[data-name="{name}"]')


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, list[Proc], str]]:
    """Three agents on loopback and a standalone view of the first; shared by this module's mesh tests
    (the last one kills gamma)."""
    with Mesh(tmp_path_factory.mktemp("trio")) as mesh:
        agents = full_mesh(mesh, "alpha", "beta", "gamma")
        _, url = start_view(mesh, agents[0])
        yield mesh, agents, url


def test_the_page_shows_the_peers_of_a_three_agent_mesh(
    trio: tuple[Mesh, list[Proc], str], page: Any, tmp_path: Path
) -> None:
    _, (_alpha, _beta, gamma), url = trio
    page.goto(url)
    for name in ("alpha", "beta", "gamma"):
        row(page, name).wait_for(timeout=SHOW_MS)
    assert page.locator("#title").inner_text() == "alpha"
    assert row(page, "alpha").locator("td").nth(2).inner_text() == "self"
    assert row(page, "beta").locator("td").nth(2).inner_text() == "1"
    assert page.locator("#counts").inner_text().startswith("3 peers · 3 links")
    assert page.locator("#live").inner_text() == "live"
    # Every peer is drawn on the canvas, and clicking one there opens its card.
    page.wait_for_function("() => window.presenceView.settled()", timeout=SHOW_MS)
    where = page.evaluate("key => window.presenceView.positionOf(key)", gamma.peer_key)
    assert where is not None
    page.mouse.click(where["x"], where["y"])
    card = page.locator("#card")
    card.wait_for(timeout=2000)
    assert card.get_attribute("data-key") == gamma.peer_key
    text = card.inner_text()
    assert "gamma" in text and gamma.peer_key in text and "Linux" in text and "0.1.0" in text
    records = page.locator("#card-records tbody tr")
    assert records.count() == 2
    assert records.nth(0).locator("td").nth(0).inner_text() == "card"
    assert int(records.nth(1).locator("td").nth(1).inner_text()) >= 1  # the links record's counter
    assert "(in " in records.nth(0).locator("td").nth(2).inner_text()  # its expiry, still ahead
    # The search box filters the table.
    page.fill("#search", "bet")
    assert row(page, "beta").is_visible() and not row(page, "gamma").is_visible()
    page.fill("#search", "")
    shot(page, tmp_path, "three-agents")


def test_a_metadata_change_appears_without_a_reload(
    trio: tuple[Mesh, list[Proc], str], page: Any, tmp_path: Path
) -> None:
    _, (_alpha, beta, _gamma), url = trio
    page.goto(url)
    row(page, "beta").click(timeout=SHOW_MS)
    page.evaluate("window.notReloaded = true")
    ask(beta, {"op": "metadata_set", "json": json.dumps({"room": "lab 2", "floor": 3})})
    page.wait_for_function(
        "() => document.querySelector('#card-metadata').textContent.includes('lab 2')", timeout=SHOW_MS
    )
    assert json.loads(page.locator("#card-metadata").inner_text()) == {"room": "lab 2", "floor": 3}
    assert page.evaluate("window.notReloaded") is True
    assert "beta" in page.locator("#events li").first.inner_text()
    assert "metadata" in page.locator("#events li").first.inner_text()
    shot(page, tmp_path, "metadata-changed")


def test_a_killed_agents_peer_disappears(
    trio: tuple[Mesh, list[Proc], str], page: Any, tmp_path: Path
) -> None:
    mesh, (_alpha, _beta, gamma), url = trio
    page.goto(url)
    row(page, "gamma").wait_for(timeout=SHOW_MS)
    mesh.kill(gamma)
    row(page, "gamma").wait_for(state="detached", timeout=LEAVE_MS)
    assert page.locator("#peers tbody tr").count() == 2
    assert page.locator("#counts").inner_text().startswith("2 peers · 1 links")
    events = page.locator("#events").inner_text()
    assert "gamma" in events and "left" in events
    shot(page, tmp_path, "gamma-left")


def test_run_with_a_view_table_serves_its_own_graph(tmp_path: Path, page: Any) -> None:
    with Mesh(tmp_path) as mesh:
        alpha = mesh.start_agent("alpha", extra_config='[view]\nenabled = true\nlisten = "127.0.0.1:0"\n')
        url = view_url(alpha)
        page.goto(url)
        row(page, "alpha").wait_for(timeout=SHOW_MS)
        assert row(page, "alpha").locator("td").nth(2).inner_text() == "self"
        ask(alpha, {"op": "metadata_set", "json": '{"shelf": "B"}'})
        row(page, "alpha").click()
        page.wait_for_function(
            "() => document.querySelector('#card-metadata').textContent.includes('shelf')", timeout=SHOW_MS
        )
        mesh.stop(alpha)  # and it still stops cleanly with a browser connected


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as answer:
            code: int = answer.status
            return code
    except urllib.error.HTTPError as error:
        return error.code


def test_beyond_localhost_a_request_without_the_token_is_refused(tmp_path: Path, page: Any) -> None:
    with Mesh(tmp_path) as mesh:
        alpha = mesh.start_agent("alpha")
        view, url = start_view(mesh, alpha, listen="0.0.0.0:0")
        token_file = alpha.state / "view.token"
        assert f"every request needs the token in {token_file}" in view.stderr_text()
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert token not in view.stderr_text()  # the log names the file, never the token

        assert status_of(url) == 401
        assert status_of(url + "events") == 401
        assert status_of(url + "graph.json") == 401
        assert status_of(url + "?token=wrong-token-wrong-token") == 403
        assert status_of(url + "graph.json", {"Authorization": f"Bearer {token}"}) == 200
        # The page itself, opened with its token, follows the stream (its requests carry the cookie).
        page.goto(url + f"?token={token}")
        row(page, "alpha").wait_for(timeout=SHOW_MS)
        # A browser without the token gets the refusal, not the page.
        refused = page.context.browser.new_page()
        try:
            answer = refused.goto(url)
            assert answer is not None and answer.status == 401
            assert refused.locator("#peers").count() == 0
        finally:
            refused.close()


def mqtt_table(broker: Mosquitto) -> str:
    return f'[mqtt]\nbroker = "{broker.url}"\ncoalesce = 0.05\nreconnect_min = 0.2\nreconnect_max = 1.0\n'


def test_the_fleet_page_shows_a_real_mosquitto_fleet(tmp_path: Path, mosquitto: Mosquitto, page: Any) -> None:
    with Mesh(tmp_path) as mesh:
        agents = full_mesh(mesh, "alpha", "beta", "gamma", extra=mqtt_table(mosquitto))
        argv = [sys.executable, "-m", "agent.cli", "fleet", "--broker", mosquitto.url, "--view"]
        argv += ["--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "fleet-state"), "--timeout", "5"]
        fleet = mesh.spawn("fleet", argv)
        page.goto(view_url(fleet))
        # The page says what it shows once its first document arrived (until then: "presence").
        page.wait_for_function(
            "() => document.querySelector('#kind').textContent === 'fleet'", timeout=SHOW_MS
        )
        for name in ("alpha", "beta", "gamma"):
            row(page, name).wait_for(timeout=SHOW_MS)
        # Every agent sees every peer: the table says so, and so does each peer's card.
        every_peer_seen_by_three = (
            "() => [...document.querySelectorAll('#peers tbody tr')]"
            ".every(r => r.cells[6].textContent === '3 agents')"
        )
        page.wait_for_function(every_peer_seen_by_three, timeout=SHOW_MS)
        page.wait_for_function("() => document.querySelector('#counts').textContent.includes('3 links')")
        assert "3 agents online" in page.locator("#counts").inner_text()
        row(page, "beta").click()
        seen = page.locator("#card").inner_text()
        assert all(name in seen for name in ("alpha", "beta", "gamma")) and "online" in seen
        assert page.locator("#rejections").inner_text() == "none"

        # A forged record (alpha's card with a flipped bit) shows up as rejected, live.
        alpha = agents[0]
        topic = LAYOUT.peer_topic(alpha.peer_key, alpha.peer_key, TopicKind.CARD)
        card = bytearray(subscribe_retained(mosquitto, topic, wait=0.7)[topic])
        card[-1] ^= 0x01
        rogue = "pk" + "A" * 43
        publish_retained(mosquitto, LAYOUT.agent_topic(rogue, TopicKind.STATUS), b"online")
        publish_retained(mosquitto, LAYOUT.peer_topic(rogue, alpha.peer_key, TopicKind.CARD), bytes(card))
        page.wait_for_function(
            "() => document.querySelector('#rejections').textContent.includes('bad_signature')",
            timeout=SHOW_MS,
        )
        shot(page, tmp_path, "fleet")
