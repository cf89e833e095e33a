"""How big a mesh the web view handles smoothly: frames per second and update latency in a real browser.

    python -m bench.webview [--sizes 100 500] [--seconds 6] [--out bench/webview.json]
    python -m bench.webview --screenshot docs/web-view.png     # the README's picture (40 peers)

For each size, a synthetic mesh (a random geometric graph: peers on a plane,
each linked to its nearest few, links typed LAN, Bluetooth or Radio with
distances on the radio ones) is served by a real :class:`ViewServer` on
loopback and opened in headless Chromium (``/usr/bin/chromium`` through
Playwright). Then, every :data:`UPDATE_INTERVAL` seconds, a change is
published: mostly one peer's metadata, every fifth a peer leaving or coming
back (which reheats the layout). Measured in the page:

* **fps while settling**: ``requestAnimationFrame`` callbacks per second in the
  first seconds after the first graph (the layout ticking every frame);
* **fps under updates**: the same while the changes stream in;
* **latency**: from the server stamping a document (``emitted_ms``) to the page
  having applied it to the DOM (``applied_ms``) and to the first canvas frame
  drawn after it (``painted_ms``), median and 95th percentile.

A measurement, not a test: nothing is asserted. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from agent.core.records import make_card, sign_record
from agent.state.identity import Identity, generate_identity
from agent.web.documents import agent_document
from agent.web.hub import Hub
from agent.web.server import ViewServer
from agent.web.settings import parse_listen

CHROMIUM: Final = "/usr/bin/chromium"
ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UPDATE_INTERVAL: Final = 0.25
TYPES: Final = ("WebSocket", "WebSocket", "Bluetooth", "Radio")


def synthetic_graph(n: int, seed: int = 1) -> dict[str, Any]:
    """A control-socket graph document of ``n`` peers (peer 0 is the local one)."""
    rng = random.Random(seed)
    identities = [generate_identity() for _ in range(n)]
    keys = [identity.peer_key_string for identity in identities]
    where = [(rng.random(), rng.random()) for _ in range(n)]
    edges: dict[tuple[int, int], str] = {}
    for i in range(n):
        nearest = sorted(range(n), key=lambda j: math.dist(where[i], where[j]))[1:3]
        # and the nearest of the peers before it, so the mesh is connected (every peer has a hop count)
        nearest += sorted(range(i), key=lambda j: math.dist(where[i], where[j]))[:1]
        for j in nearest:
            edges.setdefault((min(i, j), max(i, j)), rng.choice(TYPES))
    connections: dict[int, list[dict[str, Any]]] = {i: [] for i in range(n)}
    for (i, j), kind in edges.items():
        a, b = sorted((keys[i], keys[j]))
        c = {
            "id": f"{a}<->{b}:{kind}",
            "peer_key_string1": a,
            "peer_key_string2": b,
            "connection_type": kind,
            "approximate_distance_in_meters": round(math.dist(where[i], where[j]) * 800, 1)
            if kind == "Radio"
            else None,
        }
        connections[i].append(c)
        connections[j].append(c)
    hops = _hops(n, edges)
    peers = [
        {
            "peer_key_string": keys[i],
            "device_name": f"pi-{i:03d}",
            "os": "Linux",
            "agent_version": "0.1.0",
            "hops": hops[i],
            "connections": connections[i],
            "peer_metadata": {"room": f"r{i % 17}", "n": 0},
            "identity_service_metadata": {},
            "signed_records": [_signed_card(identities[i], f"pi-{i:03d}", rng.randrange(1, 40))],
        }
        for i in range(n)
    ]
    return {"local_peer": peers[0], "remote_peers": peers[1:]}


def _signed_card(identity: Identity, name: str, counter: int) -> str:
    """A real signed card, base64, as ``graph --json`` carries it (for the card's counter and expiry)."""
    card = make_card(name, "Linux", "0.1.0", {})
    record = sign_record(identity.private_key, identity.public_key, counter, int(time.time()) + 86400, card)
    return base64.b64encode(record.raw).decode("ascii")


def _hops(n: int, edges: dict[tuple[int, int], str]) -> dict[int, int]:
    near: dict[int, list[int]] = {i: [] for i in range(n)}
    for i, j in edges:
        near[i].append(j)
        near[j].append(i)
    hops, frontier = {0: 0}, [0]
    while frontier:
        following = []
        for i in frontier:
            for j in near[i]:
                if j not in hops:
                    hops[j] = hops[i] + 1
                    following.append(j)
        frontier = following
    return hops


class Served:
    """A ViewServer on loopback, on its own loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.hub = Hub()
        self.server = ViewServer(self.hub, parse_listen("127.0.0.1:0"), token=None, max_clients=4)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def publish(self, graph: dict[str, Any]) -> None:
        self.hub.publish_threadsafe(self.loop, agent_document(graph))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def measure(browser: Any, n: int, seconds: float) -> dict[str, Any]:
    graph = synthetic_graph(n)
    served = Served()
    served.publish(graph)
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    try:
        page.goto(served.server.url)
        page.wait_for_function("() => window.presenceView.version >= 1", timeout=20_000)
        frames0 = page.evaluate("window.presenceView.frames")
        time.sleep(2.0)
        settling_fps = (page.evaluate("window.presenceView.frames") - frames0) / 2.0
        layout_ms = page.evaluate("window.presenceView.layoutMs")
        page.wait_for_function("() => window.presenceView.settled()", timeout=30_000)

        rng = random.Random(2)
        gone: dict[str, Any] | None = None
        frames0, started = page.evaluate("window.presenceView.frames"), time.monotonic()
        first_version = page.evaluate("window.presenceView.version") + 1
        updates = 0
        while time.monotonic() - started < seconds:
            updates += 1
            if updates % 5 == 0:  # a peer leaves, or the one that left comes back
                if gone is None:
                    gone = graph["remote_peers"].pop(rng.randrange(len(graph["remote_peers"])))
                else:
                    graph["remote_peers"].append(gone)
                    gone = None
            else:
                p = rng.choice(graph["remote_peers"])
                p["peer_metadata"] = {**p["peer_metadata"], "n": updates}
            served.publish(graph)
            time.sleep(UPDATE_INTERVAL)
        time.sleep(0.5)
        elapsed = time.monotonic() - started
        update_fps = (page.evaluate("window.presenceView.frames") - frames0) / elapsed
        applied = page.evaluate("window.presenceView.applied")
        painted = page.evaluate("window.presenceView.painted")
        apply_ms = page.evaluate("window.presenceView.applyMs")
    finally:
        page.close()
        served.close()
    to_dom = [a["applied_ms"] - a["emitted_ms"] for a in applied if a["version"] >= first_version]
    to_paint = [p["painted_ms"] - p["emitted_ms"] for p in painted if p["version"] >= first_version]
    return {
        "peers": n,
        "links": _link_count(graph),
        "fps_settling": round(settling_fps, 1),
        "fps_updates": round(update_fps, 1),
        "layout_tick_ms": round(layout_ms, 2),
        "apply_ms": round(apply_ms, 2),
        "updates": updates,
        "latency_dom_ms_median": round(statistics.median(to_dom), 1),
        "latency_dom_ms_p95": round(_p95(to_dom), 1),
        "latency_paint_ms_median": round(statistics.median(to_paint), 1),
        "latency_paint_ms_p95": round(_p95(to_paint), 1),
    }


def _link_count(graph: dict[str, Any]) -> int:
    return len({c["id"] for p in [graph["local_peer"], *graph["remote_peers"]] for c in p["connections"]})


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def screenshot(browser: Any, path: Path, n: int = 40) -> None:
    """The page of a synthetic ``n``-peer mesh with one peer's card open and a change highlighted."""
    graph = synthetic_graph(n, seed=3)
    served = Served()
    served.publish(graph)
    page = browser.new_page(viewport={"width": 1400, "height": 820})
    try:
        page.goto(served.server.url)
        page.wait_for_function("() => window.presenceView.settled()", timeout=30_000)
        chosen = graph["remote_peers"][6]
        chosen["peer_metadata"] = {"room": "greenhouse", "sensors": {"temp_c": 21.5, "soil": "dry"}}
        served.publish(graph)
        page.wait_for_function("() => window.presenceView.version >= 2", timeout=5_000)
        page.locator(f'#peers tbody tr[data-key="{chosen["peer_key_string"]}"]').click()
        time.sleep(0.4)
        page.screenshot(path=str(path))
    finally:
        page.close()
        served.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webview", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of updates per size")
    parser.add_argument("--out", type=Path, default=Path("bench/webview.json"))
    parser.add_argument("--screenshot", type=Path, help="only write the README's screenshot to this PNG")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    if args.screenshot:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            screenshot(browser, args.screenshot)
            browser.close()
        return 0

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        rows = [measure(browser, n, args.seconds) for n in args.sizes]
        version = browser.version
        browser.close()
    header: tuple[str, ...] = ("peers", "links", "fps settling", "fps updates", "tick ms")
    header += ("DOM ms p50/p95", "paint ms p50/p95")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        lines.append(
            (
                str(r["peers"]),
                str(r["links"]),
                f"{r['fps_settling']:.1f}",
                f"{r['fps_updates']:.1f}",
                f"{r['layout_tick_ms']:.2f}",
                f"{r['latency_dom_ms_median']:.0f} / {r['latency_dom_ms_p95']:.0f}",
                f"{r['latency_paint_ms_median']:.0f} / {r['latency_paint_ms_p95']:.0f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))
    document = {"chromium": version, "update_interval_s": UPDATE_INTERVAL, "results": rows}
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
