// presence-agent web view: follows /events (server-sent events, no polling) and shows each graph
// document (agent/web/documents.py) as a force-laid-out picture on a canvas, a table, the selected
// peer's card and a list of changes. Vanilla JS, no library: the layout is a small spring model.
//
// Performance at a few hundred peers: repulsion is all-pairs (n^2/2 per tick, about 125k pair
// updates at 500 peers) but the layout cools and stops ticking once it settles, and reheats only
// when the graph's shape changes; the canvas is redrawn only when something moved or flashes; table
// rows are kept per peer and only their changed cells are rewritten. Everything shown from the mesh
// (names, metadata) goes into the DOM as text, never as HTML: metadata is whatever a peer signed.
"use strict";

(function () {
  const FLASH_MS = 3000; // joins, departures and link changes stay highlighted this long
  const MAX_EVENTS = 60; // lines kept in the change list
  const TYPE_STYLE = {
    // connection type -> stroke colour and dash pattern (LAN links are WebSocket over TCP)
    WebSocket: { color: "#2563eb", dash: [], width: 1.6, family: "LAN" },
    AccessPoint: { color: "#2563eb", dash: [], width: 1.6, family: "LAN" },
    P2PWiFi: { color: "#0891b2", dash: [], width: 1.6, family: "LAN" },
    Bluetooth: { color: "#9333ea", dash: [7, 4], width: 1.6, family: "Bluetooth" },
    Radio: { color: "#d97706", dash: [2, 4], width: 2.4, family: "Radio" },
  };
  const HOP_COLORS = ["#111827", "#16a34a", "#0d9488", "#2563eb", "#6b7280"];

  const $ = (id) => document.getElementById(id);
  const canvas = $("graph");
  const ctx = canvas.getContext("2d");

  // ------------------------------------------------------------------ state
  const nodes = new Map(); // key -> {key, peer, x, y, vx, vy, flash, flashKind, goneAt}
  const links = new Map(); // id -> {link, flash, flashKind, goneAt}
  let doc = null; // the newest document
  let selected = null; // the selected peer's key
  let query = "";
  let alpha = 1; // layout temperature: ticks while > ALPHA_MIN
  const ALPHA_MIN = 0.004;
  let dirty = true; // redraw on the next frame
  const view = { x: 0, y: 0, scale: 1 }; // pan and zoom
  let userView = false; // until the user pans or zooms, the view follows the layout's extent
  // What the benchmark (bench/webview.py) and the tests read.
  const stats = { frames: 0, version: 0, applied: [], painted: [], layoutMs: 0, drawMs: 0, applyMs: 0 };
  window.presenceView = stats;
  let paintPending = null; // {version, emitted_ms} applied but not yet drawn

  // ------------------------------------------------------------------ the live stream
  const token = new URLSearchParams(location.search).get("token");
  const eventsUrl = "events" + (token ? "?token=" + encodeURIComponent(token) : "");
  const source = new EventSource(eventsUrl);
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("error", () => setLive(false));
  source.addEventListener("graph", (event) => {
    const started = performance.now();
    apply(JSON.parse(event.data));
    stats.applyMs = performance.now() - started;
  });

  function setLive(on) {
    const live = $("live");
    live.textContent = on ? "live" : "reconnecting…";
    live.classList.toggle("on", on);
  }

  // ------------------------------------------------------------------ applying a document
  function apply(next) {
    const now = performance.now();
    const first = doc === null;
    const seen = new Set();
    let shapeChanged = false;
    for (const peer of next.peers) {
      seen.add(peer.key);
      const node = nodes.get(peer.key);
      if (!node || node.goneAt) {
        const placed = node || placeNew(peer.key, next);
        placed.peer = peer;
        placed.goneAt = 0;
        placed.flash = first ? 0 : now;
        placed.flashKind = "joined";
        nodes.set(peer.key, placed);
        if (!first) logEvent("joined", describe(peer) + " joined");
        shapeChanged = true;
      } else {
        const fields = changedFields(node.peer, peer);
        node.peer = peer;
        if (fields.length) {
          node.flash = now;
          node.flashKind = "changed";
          logEvent("changed", describe(peer) + " changed (" + fields.join(", ") + ")");
        }
      }
    }
    for (const [key, node] of nodes) {
      if (!seen.has(key) && !node.goneAt) {
        node.goneAt = now;
        node.flash = now;
        node.flashKind = "left";
        logEvent("left", describe(node.peer) + " left");
        shapeChanged = true;
      }
    }
    const seenLinks = new Set();
    for (const link of next.links) {
      seenLinks.add(link.id);
      const known = links.get(link.id);
      if (!known || known.goneAt) {
        links.set(link.id, { link, flash: first ? 0 : now, flashKind: "up", goneAt: 0 });
        if (!first) logEvent("changed", "link up " + linkName(link, next));
        shapeChanged = true;
      } else {
        known.link = link;
      }
    }
    for (const [id, entry] of links) {
      if (!seenLinks.has(id) && !entry.goneAt) {
        entry.goneAt = now;
        entry.flash = now;
        entry.flashKind = "down";
        logEvent("left", "link down " + linkName(entry.link, next));
        shapeChanged = true;
      }
    }
    doc = next;
    if (shapeChanged) alpha = Math.max(alpha, first ? 1 : 0.35);
    dirty = true;
    renderHeader();
    renderTable(now, first);
    renderCard();
    renderRejections();
    document.body.dataset.version = String(next.version);
    stats.version = next.version;
    stats.applied.push({ version: next.version, emitted_ms: next.emitted_ms, applied_ms: Date.now() });
    if (stats.applied.length > 200) stats.applied.shift();
    paintPending = { version: next.version, emitted_ms: next.emitted_ms };
  }

  function placeNew(key, next) {
    // Next to an already placed neighbour if it has one, else on a ring around the centre.
    for (const link of next.links) {
      const other = link.a === key ? link.b : link.b === key ? link.a : null;
      const near = other && nodes.get(other);
      if (near && !near.goneAt) {
        return { key, x: near.x + jitter(30), y: near.y + jitter(30), vx: 0, vy: 0 };
      }
    }
    const angle = Math.random() * 2 * Math.PI;
    const radius = 40 + Math.sqrt(nodes.size + 1) * 25;
    return { key, x: Math.cos(angle) * radius, y: Math.sin(angle) * radius, vx: 0, vy: 0 };
  }

  function jitter(r) { return (Math.random() - 0.5) * 2 * r; }

  function changedFields(before, after) {
    const fields = [];
    for (const name of ["name", "os", "version", "hops"]) if (before[name] !== after[name]) fields.push(name);
    if (JSON.stringify(before.metadata) !== JSON.stringify(after.metadata)) fields.push("metadata");
    if (JSON.stringify(before.seen_by) !== JSON.stringify(after.seen_by)) fields.push("seen by");
    return fields;
  }

  function describe(peer) { return (peer.name || "?") + " " + shortKey(peer.key); }
  function shortKey(key) { return key.slice(0, 10) + "…"; }
  function linkName(link, d) {
    const name = (key) => { const n = nodes.get(key); return n ? n.peer.name || shortKey(key) : shortKey(key); };
    return name(link.a) + " – " + name(link.b) + " (" + link.type + ")";
  }

  function logEvent(kind, text) {
    const list = $("events");
    const item = document.createElement("li");
    item.className = kind;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    item.append(time, text);
    list.prepend(item);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  // ------------------------------------------------------------------ header, table, card
  function renderHeader() {
    $("kind").textContent = doc.kind === "fleet" ? "fleet" : "agent";
    $("title").textContent = doc.title;
    document.title = doc.title + " · presence-agent view";
    const agents = doc.peers.filter((p) => p.agent && p.agent.online).length;
    $("counts").textContent = doc.peers.length + " peers · " + doc.links.length + " links" +
      (doc.kind === "fleet" ? " · " + agents + " agents online" : "");
    const status = $("status");
    status.hidden = !doc.status;
    status.textContent = doc.status || "";
    $("seen-head").hidden = doc.kind !== "fleet";
  }

  const rows = new Map(); // key -> <tr>

  function linkCount(key) {
    let n = 0;
    for (const link of doc.links) if (link.a === key || link.b === key) n++;
    return n;
  }

  function sortedPeers() {
    return doc.peers.slice().sort((a, b) =>
      (a.key === doc.self ? -1 : b.key === doc.self ? 1 : 0) ||
      ((a.hops ?? 99) - (b.hops ?? 99)) || (a.name || "").localeCompare(b.name || "") || a.key.localeCompare(b.key));
  }

  function renderTable(now, first) {
    const body = $("peers").tBodies[0];
    const counts = new Map();
    for (const link of doc.links) {
      counts.set(link.a, (counts.get(link.a) || 0) + 1);
      counts.set(link.b, (counts.get(link.b) || 0) + 1);
    }
    const present = new Set();
    const order = [];
    for (const peer of sortedPeers()) {
      present.add(peer.key);
      let row = rows.get(peer.key);
      const isNew = !row;
      if (isNew) {
        row = document.createElement("tr");
        row.dataset.key = peer.key;
        for (let i = 0; i < 7; i++) row.appendChild(document.createElement("td"));
        row.cells[1].className = "key";
        row.addEventListener("click", () => select(peer.key));
        rows.set(peer.key, row);
      }
      const cells = [
        peer.name || "?", shortKey(peer.key),
        peer.key === doc.self ? "self" : peer.hops == null ? "–" : String(peer.hops),
        peer.os || "?", peer.version || "?", String(counts.get(peer.key) || 0),
        peer.seen_by ? peer.seen_by.length + " agent" + (peer.seen_by.length === 1 ? "" : "s") : "",
      ];
      let changed = false;
      cells.forEach((text, i) => { if (row.cells[i].textContent !== text) { row.cells[i].textContent = text; changed = true; } });
      // Only touch what differs: at a few hundred rows, rewriting every row's state costs frames.
      const fleetOnly = doc.kind !== "fleet";
      if (row.cells[6].hidden !== fleetOnly) row.cells[6].hidden = fleetOnly;
      if (row.dataset.name !== peer.name) row.dataset.name = peer.name;
      if (row.classList.contains("self") !== (peer.key === doc.self)) row.classList.toggle("self");
      if (row.classList.contains("selected") !== (peer.key === selected)) row.classList.toggle("selected");
      const node = nodes.get(peer.key);
      if (!first && node && node.flash === now) flashRow(row, isNew ? "joined" : "changed");
      else if (!first && changed && !isNew) flashRow(row, "changed");
      const hide = !matches(peer);
      if (row.hidden !== hide) row.hidden = hide;
      order.push(row);
    }
    for (const [key, row] of rows) if (!present.has(key)) { row.remove(); rows.delete(key); }
    // Move rows only where the order changed (a join, a hop count, a rename).
    let at = body.firstElementChild;
    for (const row of order) {
      if (row === at) { at = at.nextElementSibling; continue; }
      body.insertBefore(row, at);
    }
  }

  function flashRow(row, kind) {
    // Restart the animation without forcing a synchronous layout: remove now, add next frame.
    row.classList.remove("joined", "changed");
    requestAnimationFrame(() => row.classList.add(kind));
  }

  function matches(peer) {
    if (!query) return true;
    const text = [peer.name, peer.key, peer.os, peer.version, JSON.stringify(peer.metadata)].join(" ").toLowerCase();
    return text.includes(query);
  }

  function select(key) {
    selected = key;
    for (const [k, row] of rows) row.classList.toggle("selected", k === key);
    renderCard();
    dirty = true;
  }

  function renderCard() {
    const card = $("card");
    if (!selected) { card.hidden = true; return; }
    const node = nodes.get(selected);
    if (!node) { card.hidden = true; return; }
    const peer = node.peer;
    card.hidden = false;
    card.dataset.key = peer.key;
    card.classList.toggle("gone", !!node.goneAt);
    $("card-name").textContent = (peer.name || "?") + (peer.key === doc.self ? " (self)" : "");
    const fields = $("card-fields");
    fields.replaceChildren();
    const add = (label, value) => {
      const dt = document.createElement("dt"); dt.textContent = label;
      const dd = document.createElement("dd"); dd.textContent = value;
      fields.append(dt, dd);
    };
    add("peer", peer.key);
    add("OS", peer.os || "?");
    add("agent version", peer.version || "?");
    if (peer.hops != null) add("hops", peer.key === doc.self ? "0 (self)" : String(peer.hops));
    if (peer.seen_by) add("seen by", peer.seen_by.map((k) => nameOf(k)).join(", ") || "nobody");
    if (peer.agent) add("agent", (peer.agent.online ? "online" : "offline") + ", lists " + peer.agent.peer_count + " peers");
    const connected = doc.links.filter((l) => l.a === peer.key || l.b === peer.key)
      .map((l) => nameOf(l.a === peer.key ? l.b : l.a) + " (" + l.type + (l.distance != null ? ", ~" + fmtDistance(l.distance) : "") + ")");
    add("links", connected.join(", ") || "none");
    const records = $("card-records").tBodies[0];
    records.replaceChildren();
    for (const r of peer.records) {
      const tr = document.createElement("tr");
      for (const text of [r.kind, String(r.counter), r.expiry ? expiryText(r.expiry) : "–"]) {
        const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
      }
      records.appendChild(tr);
    }
    $("card-metadata").textContent = JSON.stringify(peer.metadata, null, 2);
  }

  function nameOf(key) { const n = nodes.get(key); return n && n.peer.name ? n.peer.name : shortKey(key); }
  function fmtDistance(m) { return m < 10 ? m.toFixed(1) + " m" : Math.round(m) + " m"; }
  function expiryText(unix) {
    const left = Math.round(unix - Date.now() / 1000);
    const when = new Date(unix * 1000).toLocaleString();
    return when + (left > 0 ? " (in " + left + " s)" : " (expired)");
  }

  function renderRejections() {
    const box = $("rejections-box");
    box.hidden = doc.kind !== "fleet";
    const list = $("rejections");
    list.replaceChildren();
    for (const r of doc.rejections.slice().reverse()) {
      const item = document.createElement("li");
      item.textContent = r.reason + ": " + r.topic + (r.detail ? " (" + r.detail + ")" : "");
      list.appendChild(item);
    }
    if (!doc.rejections.length && doc.kind === "fleet") {
      const item = document.createElement("li");
      item.className = "none";
      item.textContent = "none";
      list.appendChild(item);
    }
  }

  $("search").addEventListener("input", (event) => {
    query = event.target.value.trim().toLowerCase();
    if (doc) for (const peer of doc.peers) { const row = rows.get(peer.key); if (row) row.hidden = !matches(peer); }
    dirty = true;
  });

  // ------------------------------------------------------------------ the layout (one tick)
  function tick() {
    const list = [];
    for (const node of nodes.values()) if (!node.goneAt) list.push(node);
    const n = list.length;
    const repulse = 900 * alpha;
    for (let i = 0; i < n; i++) {
      const a = list[i];
      for (let j = i + 1; j < n; j++) {
        const b = list[j];
        let dx = a.x - b.x, dy = a.y - b.y;
        let d2 = dx * dx + dy * dy;
        if (d2 < 1) { dx = Math.random() - 0.5; dy = Math.random() - 0.5; d2 = 1; }
        if (d2 > 250000) continue; // far apart (500 px): negligible
        const f = repulse / d2;
        a.vx += dx * f; a.vy += dy * f;
        b.vx -= dx * f; b.vy -= dy * f;
      }
    }
    for (const entry of links.values()) {
      if (entry.goneAt) continue;
      const a = nodes.get(entry.link.a), b = nodes.get(entry.link.b);
      if (!a || !b || a.goneAt || b.goneAt) continue;
      const dx = b.x - a.x, dy = b.y - a.y;
      const d = Math.sqrt(dx * dx + dy * dy) || 1;
      const f = (d - 70) / d * 0.06 * alpha;
      a.vx += dx * f; a.vy += dy * f;
      b.vx -= dx * f; b.vy -= dy * f;
    }
    for (const node of list) {
      node.vx -= node.x * 0.004 * alpha; // a weak pull to the centre keeps parts of the mesh in view
      node.vy -= node.y * 0.004 * alpha;
      if (node.key === dragging) { node.vx = node.vy = 0; continue; }
      node.vx *= 0.6; node.vy *= 0.6;
      node.x += Math.max(-30, Math.min(30, node.vx));
      node.y += Math.max(-30, Math.min(30, node.vy));
    }
    alpha *= 0.975; // settles in about 220 frames (under 4 s at 60 fps)
  }

  // ------------------------------------------------------------------ drawing
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    dirty = true;
  }
  window.addEventListener("resize", resize);

  function toScreen(node) {
    const rect = canvas.getBoundingClientRect();
    return [rect.width / 2 + (node.x + view.x) * view.scale, rect.height / 2 + (node.y + view.y) * view.scale];
  }

  function fit() {
    // Centre the live peers and scale them to the canvas (never above 1.5x).
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (const node of nodes.values()) {
      if (node.goneAt) continue;
      minX = Math.min(minX, node.x); maxX = Math.max(maxX, node.x);
      minY = Math.min(minY, node.y); maxY = Math.max(maxY, node.y);
    }
    if (minX === Infinity) return;
    const rect = canvas.getBoundingClientRect();
    const scale = Math.min(1.5, (rect.width - 120) / (maxX - minX + 1), (rect.height - 110) / (maxY - minY + 1));
    view.scale = Math.max(0.2, scale);
    view.x = -(minX + maxX) / 2;
    view.y = -(minY + maxY) / 2 - 12 / view.scale; // a little up: the legend sits at the bottom
  }

  function flashAlpha(started, now) { return started ? Math.max(0, 1 - (now - started) / FLASH_MS) : 0; }

  function draw(now) {
    const ratio = window.devicePixelRatio || 1;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const rect = canvas.getBoundingClientRect();
    ctx.clearRect(0, 0, rect.width, rect.height);
    if (!doc) return false;
    let animating = false;
    const labelAll = nodes.size <= 120 || view.scale >= 1.6;
    // Links first, under the peers.
    ctx.font = "11px system-ui, sans-serif";
    for (const [id, entry] of links) {
      const a = nodes.get(entry.link.a), b = nodes.get(entry.link.b);
      const fade = entry.goneAt ? flashAlpha(entry.goneAt, now) : 1;
      if (entry.goneAt && fade <= 0) { links.delete(id); continue; }
      if (!a || !b) continue;
      const style = TYPE_STYLE[entry.link.type] || { color: "#9ca3af", dash: [], width: 1.2 };
      const [x1, y1] = toScreen(a), [x2, y2] = toScreen(b);
      const flash = flashAlpha(entry.flash, now);
      if (flash > 0) animating = true;
      ctx.globalAlpha = fade * (dimmed(a) && dimmed(b) ? 0.2 : 0.9);
      ctx.strokeStyle = flash > 0 ? (entry.flashKind === "down" ? "#dc2626" : "#16a34a") : style.color;
      ctx.lineWidth = style.width + flash * 3;
      ctx.setLineDash(style.dash);
      ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
      if (entry.link.distance != null && labelAll) {
        ctx.fillStyle = "#6b7280";
        ctx.fillText("~" + fmtDistance(entry.link.distance), (x1 + x2) / 2 + 3, (y1 + y2) / 2 - 3);
      }
    }
    ctx.setLineDash([]);
    ctx.globalAlpha = 1;
    // Peers.
    const radius = nodes.size > 200 ? 5 : 8;
    for (const [key, node] of nodes) {
      const fade = node.goneAt ? flashAlpha(node.goneAt, now) : 1;
      if (node.goneAt && fade <= 0) { nodes.delete(key); continue; }
      const [x, y] = toScreen(node);
      const isSelf = key === doc.self;
      const flash = flashAlpha(node.flash, now);
      if (flash > 0) {
        animating = true;
        const color = node.flashKind === "left" ? "220,38,38" : node.flashKind === "joined" ? "22,163,74" : "202,138,4";
        ctx.fillStyle = "rgba(" + color + "," + (0.35 * flash) + ")";
        ctx.beginPath(); ctx.arc(x, y, radius + 4 + 14 * (1 - flash), 0, 2 * Math.PI); ctx.fill();
      }
      ctx.globalAlpha = fade * (dimmed(node) ? 0.25 : 1);
      const hops = node.peer.hops == null ? 1 : Math.min(node.peer.hops, HOP_COLORS.length - 1);
      ctx.fillStyle = node.peer.agent ? (node.peer.agent.online ? "#111827" : "#9ca3af") : HOP_COLORS[hops];
      ctx.beginPath(); ctx.arc(x, y, isSelf ? radius + 3 : radius, 0, 2 * Math.PI); ctx.fill();
      if (isSelf || key === selected) {
        ctx.lineWidth = 3; ctx.strokeStyle = key === selected ? "#f59e0b" : "#111827";
        ctx.beginPath(); ctx.arc(x, y, (isSelf ? radius + 3 : radius) + 4, 0, 2 * Math.PI); ctx.stroke();
      }
      if (labelAll || isSelf || key === selected || (query && !dimmed(node))) {
        ctx.fillStyle = "#1f2328";
        ctx.font = (isSelf ? "bold " : "") + "12px system-ui, sans-serif";
        ctx.fillText(node.peer.name || shortKey(key), x + radius + (isSelf ? 9 : 5), y + 4);
      }
      ctx.globalAlpha = 1;
    }
    return animating;
  }

  function dimmed(node) { return !!query && !matches(node.peer); }

  function frame(now) {
    stats.frames++;
    if (alpha > ALPHA_MIN) {
      const started = performance.now();
      tick();
      stats.layoutMs = performance.now() - started;
      if (!userView) fit();
      dirty = true;
    }
    if (dirty) {
      const started = performance.now();
      dirty = draw(now);
      stats.drawMs = performance.now() - started;
      if (paintPending) {
        stats.painted.push({ ...paintPending, painted_ms: Date.now() });
        if (stats.painted.length > 200) stats.painted.shift();
        paintPending = null;
      }
    }
    requestAnimationFrame(frame);
  }

  // ------------------------------------------------------------------ pointer: pan, zoom, drag, click
  let dragging = null, panning = null, moved = false;
  function nodeAt(clientX, clientY) {
    const rect = canvas.getBoundingClientRect();
    const px = clientX - rect.left, py = clientY - rect.top;
    let best = null, bestD = 14 * 14;
    for (const node of nodes.values()) {
      if (node.goneAt) continue;
      const [x, y] = toScreen(node);
      const d = (x - px) ** 2 + (y - py) ** 2;
      if (d < bestD) { best = node; bestD = d; }
    }
    return best;
  }
  canvas.addEventListener("pointerdown", (e) => {
    const node = nodeAt(e.clientX, e.clientY);
    moved = false;
    if (node) dragging = node.key; else panning = { x: e.clientX, y: e.clientY };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (dragging) {
      const node = nodes.get(dragging);
      if (!node) return;
      node.x += e.movementX / view.scale; node.y += e.movementY / view.scale;
      moved = moved || Math.abs(e.movementX) + Math.abs(e.movementY) > 2;
      alpha = Math.max(alpha, 0.1); dirty = true;
    } else if (panning) {
      view.x += (e.clientX - panning.x) / view.scale; view.y += (e.clientY - panning.y) / view.scale;
      panning = { x: e.clientX, y: e.clientY }; moved = true; userView = true; dirty = true;
    }
  });
  canvas.addEventListener("pointerup", (e) => {
    if (dragging && !moved) select(dragging);
    else if (!dragging && !moved) { const node = nodeAt(e.clientX, e.clientY); if (node) select(node.key); }
    dragging = null; panning = null;
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    userView = true;
    view.scale = Math.max(0.2, Math.min(5, view.scale * (e.deltaY < 0 ? 1.15 : 1 / 1.15)));
    dirty = true;
  }, { passive: false });

  // For tests and the benchmark: where a peer is drawn, in page coordinates.
  stats.positionOf = (key) => {
    const node = nodes.get(key);
    if (!node) return null;
    const rect = canvas.getBoundingClientRect();
    const [x, y] = toScreen(node);
    return { x: rect.left + x, y: rect.top + y };
  };
  stats.settled = () => alpha <= ALPHA_MIN;

  resize();
  requestAnimationFrame(frame);
})();
