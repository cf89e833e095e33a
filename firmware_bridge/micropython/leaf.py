"""A leaf peer's protocol (docs/LEAF_PROFILE.md), without I/O: MicroPython and CPython.

The node firmware feeds it frames and time and sends what it returns; the BLE (or ESP-NOW, LoRa)
glue is the firmware's. One ``Leaf`` serves every router the node is attached to, one link each::

    leaf = Leaf(key, counters, identity, wall_clock, urandom)
    leaf.link_up(link, mtu, now)          # connected; HELLO goes out
    leaf.receive(link, frame, now)        # a frame from the router
    leaf.tick(now)                        # timers: retransmission, keepalive, dead interval
    for link, frame in leaf.take_output(): ...   # frames to write, each within its link's MTU
    leaf.events                           # ("up", link, router_key) / ("down", link, reason)

What it does, per the profile: the handshake of §8 (HELLO by value, CARD_REQUEST when a router
names its card by reference, PROOF over the router's nonce, ACCEPT; retransmission from 1 s
doubling to 30 s; a 30 s handshake timeout); after it, RECORDS with its links record on every
established link whenever they change (re-signed at most once per 50 ms, leading edge), SUMMARY
when nothing was sent for a keepalive, a link silent for the dead interval is down, DIGEST answered
with its own records the router lacks, RECORDS ignored but for a newer copy of its own (state
loss: the counter moves past it and the record is re-signed). It holds no other peer's records.

``counters`` has ``next()`` (a fresh counter, durable before it is returned) and
``advance_past(c)``; ``identity`` is a dict of ``name``, ``os``, ``agent_version``, ``metadata``
and, on a fleet member, ``certificate`` (the fleet CA's, carried in the card).
Signing happens in ``link_up``/``receive``/``tick`` when a record must change: on an ESP32 that is
seconds of pure-Python Ed25519, so the firmware calls them from a task that may block.
"""

import hashlib

import cbor
import ed25519
import records

HELLO = 1
PROOF = 2
ACCEPT = 3
DENY = 4
RECORDS = 5
SUMMARY = 6
DIGEST = 7
CARD_REQUEST = 8

PROTOCOL_VERSION = 3
ROLE_LEAF = 1
PROOF_CONTEXT = b"presence-agent/link-proof/v1"
#: A router that offers a sealed session signs its PROOF over this context and its offer too.
SESSION_PROOF_CONTEXT = b"presence-agent/link-proof/v2"
SESSION_KEY_BYTES = 32
NONCE_BYTES = 16
ENTRY_BYTES = 13
BLUETOOTH = 1
FRAME_WHOLE = 0
FRAME_FRAGMENT = 1
FRAGMENT_HEADER = 4
MAX_MESSAGE = 65536
RETRY_S = 1.0
RETRY_CAP_S = 30.0
HANDSHAKE_TIMEOUT_S = 30.0
LINKS_THROTTLE_S = 0.05
RECORD_TTL_S = 86400
REFRESH_BEFORE_S = 21600


def digest_entry(peer_id, kind, counter):
    return bytes(peer_id) + bytes((kind,)) + counter.to_bytes(4, "big")


def summary_of(entries):
    """XOR over the entries of the first 8 bytes of SHA-256(entry), as 8 big-endian bytes."""
    acc = 0
    for entry in entries:
        acc ^= int.from_bytes(hashlib.sha256(entry).digest()[:8], "big")
    return acc.to_bytes(8, "big")


def frames_for(message, msg_id, mtu):
    """A message as frames of at most ``mtu`` bytes (whole, or fragments in index order)."""
    if len(message) + 1 <= mtu:
        return [bytes((FRAME_WHOLE,)) + message]
    chunk = mtu - FRAGMENT_HEADER
    count = -(-len(message) // chunk)
    if count > 255:
        raise ValueError("a %d-byte message needs %d fragments at MTU %d" % (len(message), count, mtu))
    return [
        bytes((FRAME_FRAGMENT, msg_id, i, count)) + message[i * chunk : (i + 1) * chunk] for i in range(count)
    ]


def _session_offer(capabilities):
    """The router's session key in its HELLO's capabilities ``[role, max, ?key]``, or None. A leaf
    never seals (it offers none), but must know the key to check the router's PROOF."""
    if isinstance(capabilities, list) and len(capabilities) == 3:
        key = capabilities[2]
        if isinstance(key, bytes) and len(key) == SESSION_KEY_BYTES:
            return key
    return None


class _Link:
    def __init__(self, link, mtu, now, connection_type, expected):
        self.id = link
        self.mtu = mtu
        self.connection_type = connection_type
        self.expected = expected  # the router's key or peer id prefix, if provisioned
        self.nonce = b""
        self.remote_key = None
        self.remote_nonce = None
        self.remote_offer = None  # the router's session key from its HELLO, if it offered one
        self.proof = None  # our PROOF message, kept for repeated HELLOs
        self.early_proof = None
        self.remote_proved = False
        self.accepted = False
        self.remote_accepted = False
        self.established = False
        self.card_requested = False
        self.retry_every = RETRY_S
        self.retry_at = now + RETRY_S
        self.deadline = now + HANDSHAKE_TIMEOUT_S
        self.last_rx = now
        self.last_tx = now
        self.msg_id = 0
        self.partial = None  # (msg_id, count, {index: chunk})
        self.distance_dm = None


class Leaf:
    """One node's leaf side of every link (see the module docstring)."""

    def __init__(
        self, key, counters, identity, wall_clock, urandom, keepalive_s=1.0, dead_s=3.0, max_message=512
    ):
        self.key = key
        self.public_key = key.public_key
        self.peer_id = self.public_key[:8]
        self.counters = counters
        self.identity = dict(identity)
        self.wall = wall_clock
        self.urandom = urandom
        self.keepalive_s = keepalive_s
        self.dead_s = dead_s
        self.max_message = max_message
        self.links = {}
        self.events = []
        self.stats = {"frames.malformed": 0, "messages.malformed": 0, "records.ignored": 0, "signatures": 0}
        self._out = []
        self.card = None  # (counter, raw)
        self.links_record = None  # (counter, raw, entries)
        self._links_due = None
        self._links_signed_at = -1e9

    # ------------------------------------------------------------ own records

    def _sign_card(self):
        counter = self.counters.next()
        i = self.identity
        expiry = int(self.wall()) + RECORD_TTL_S
        raw = records.sign_card(
            self.key,
            counter,
            expiry,
            i["name"],
            i["os"],
            i["agent_version"],
            i.get("metadata") or {},
            i.get("certificate") or b"",
        )
        self.stats["signatures"] += 1
        self.card = (counter, expiry, raw)

    def _sign_links(self, now):
        entries = []
        for link in self.links.values():
            if link.established:
                entries.append((link.remote_key[:8], link.connection_type, link.distance_dm))
        entries.sort(key=lambda e: (e[0], _TYPE_NAMES.get(e[1], "")))
        counter = self.counters.next()
        expiry = int(self.wall()) + RECORD_TTL_S
        raw = records.sign_links(self.key, counter, expiry, entries)
        self.stats["signatures"] += 1
        self.links_record = (counter, expiry, raw)
        self._links_signed_at = now

    def set_metadata(self, metadata, now):
        """New metadata: the card is re-signed and sent on every established link."""
        self.identity["metadata"] = metadata
        self._sign_card()
        for link in self.links.values():
            if link.established:
                self._send(link, self._records_message([self.card[2]]), now)

    def set_distance(self, link_id, distance_dm, now):
        """A link's distance changed (the firmware applies the 40 % / 1 m rule before calling)."""
        link = self.links.get(link_id)
        if link is not None and link.distance_dm != distance_dm:
            link.distance_dm = distance_dm
            if link.established:
                self._links_changed(now)

    def _links_changed(self, now):
        if self._links_due is None:
            self._links_due = max(now, self._links_signed_at + LINKS_THROTTLE_S)

    def _entries(self):
        out = []
        if self.card is not None:
            out.append(digest_entry(self.peer_id, records.CARD, self.card[0]))
        if self.links_record is not None:
            out.append(digest_entry(self.peer_id, records.LINKS, self.links_record[0]))
        return out

    # ------------------------------------------------------------ links

    def ensure_card(self):
        """Sign the card if it never was (``link_up`` does too); an advertisement names its counter."""
        if self.card is None:
            self._sign_card()

    def newest_counter(self):
        """The highest counter of this node's records (0 before any)."""
        own = [r[0] for r in (self.card, self.links_record) if r is not None]
        return max(own) if own else 0

    def link_up(self, link_id, mtu, now, connection_type=BLUETOOTH, expected=None):
        self.ensure_card()
        link = _Link(link_id, mtu, now, connection_type, expected)
        link.nonce = bytes(self.urandom(NONCE_BYTES))
        self.links[link_id] = link
        self._send(link, self._hello(link), now)

    def link_down(self, link_id, now, reason="transport"):
        link = self.links.pop(link_id, None)
        if link is None:
            return
        self.events.append(("down", link_id, reason))
        if link.established:
            self._links_changed(now)

    def set_mtu(self, link_id, mtu):
        link = self.links.get(link_id)
        if link is not None:
            link.mtu = mtu

    def _close(self, link, reason, now):
        self.link_down(link.id, now, reason)

    def _hello(self, link):
        caps = [ROLE_LEAF, self.max_message]
        return cbor.encode([HELLO, PROTOCOL_VERSION, link.nonce, self.card[2], caps])

    def _records_message(self, raws):
        return cbor.encode([RECORDS] + list(raws))

    def _summary(self):
        return cbor.encode([SUMMARY, summary_of(self._entries())])

    def _send(self, link, message, now):
        for frame in frames_for(message, link.msg_id, link.mtu):
            self._out.append((link.id, frame))
        link.msg_id = (link.msg_id + 1) & 0xFF  # per message on the link, from 0, as the host
        link.last_tx = now

    def take_output(self):
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------ receiving

    def receive(self, link_id, frame, now):
        link = self.links.get(link_id)
        if link is None:
            return
        link.last_rx = now
        message = self._reassemble(link, bytes(frame))
        if message is None:
            return
        try:
            item = cbor.decode(message, max_bytes=MAX_MESSAGE)
        except ValueError:
            self.stats["messages.malformed"] += 1
            return
        if not isinstance(item, list) or not item or not isinstance(item[0], int):
            self.stats["messages.malformed"] += 1
            return
        kind, fields = item[0], item[1:]
        try:
            self._dispatch(link, kind, fields, now)
        except (ValueError, TypeError, IndexError):
            self.stats["messages.malformed"] += 1

    def _reassemble(self, link, frame):
        if len(frame) > link.mtu or not frame:
            self.stats["frames.malformed"] += 1
            return None
        if frame[0] == FRAME_WHOLE:
            return frame[1:]
        if frame[0] != FRAME_FRAGMENT or len(frame) <= FRAGMENT_HEADER:
            self.stats["frames.malformed"] += 1
            return None
        msg_id, index, count = frame[1], frame[2], frame[3]
        if count < 2 or index >= count or (count - 1) * (link.mtu - FRAGMENT_HEADER) >= MAX_MESSAGE:
            self.stats["frames.malformed"] += 1
            return None
        if (count - 1) * (link.mtu - FRAGMENT_HEADER) > max(self.max_message, 4096):
            self.stats["frames.malformed"] += 1
            return None
        if link.partial is None or link.partial[0] != msg_id or link.partial[1] != count:
            link.partial = (msg_id, count, {})
        chunks = link.partial[2]
        chunks[index] = frame[FRAGMENT_HEADER:]
        if len(chunks) < count:
            return None
        link.partial = None
        return b"".join(chunks[i] for i in range(count))

    def _dispatch(self, link, kind, fields, now):
        if kind == HELLO:
            self._on_hello(link, fields, now)
        elif kind == PROOF:
            if len(fields) != 1 or not isinstance(fields[0], bytes) or len(fields[0]) != 64:
                raise ValueError("PROOF")
            self._on_proof(link, fields[0], now)
        elif kind == ACCEPT:
            self._on_accept(link, fields == [1], now)
        elif kind == DENY:
            self._close(link, "denied", now)
        elif kind == CARD_REQUEST:
            if link.remote_proved or link.card_requested:
                return  # a second one, or one after the router proved: ignored
            link.card_requested = True
            self._send(link, self._hello(link), now)
            self._restart_retry(link, now)
        elif not link.established:
            return  # RECORDS, SUMMARY, DIGEST before establishment: dropped unread
        elif kind == DIGEST:
            self._on_digest(link, fields, now)
        elif kind == RECORDS:
            self._on_records(fields, now)
        elif kind == SUMMARY and (
            len(fields) != 1 or not isinstance(fields[0], bytes) or len(fields[0]) != 8
        ):
            raise ValueError("SUMMARY")  # a router's SUMMARY needs nothing but liveness (9.2)

    def _on_hello(self, link, fields, now):
        if len(fields) != 4:
            raise ValueError("HELLO")
        version, nonce, card, capabilities = fields  # a host router takes 64 KiB: all we send
        if version != PROTOCOL_VERSION:
            self._close(link, "version mismatch", now)
            return
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES or not isinstance(card, bytes):
            raise ValueError("HELLO")
        if link.remote_key is not None:
            if nonce == link.remote_nonce:  # a repeat: answer with what we sent, never sign again
                self._send(link, link.proof, now)
                if link.accepted:
                    self._send(link, cbor.encode([ACCEPT]), now)
            return
        if len(card) == ENTRY_BYTES:
            link.remote_nonce = nonce
            self._send(link, cbor.encode([CARD_REQUEST]), now)  # we hold no other peer's card
            return
        try:
            record = records.decode_record(card)
        except ValueError:
            self._close(link, "bad card", now)
            return
        wall = self.wall()
        if record.kind != records.CARD or record.expiry <= wall or record.public_key == self.public_key:
            self._close(link, "bad card", now)
            return
        if link.expected is not None and record.public_key[: len(link.expected)] != link.expected:
            self._close(link, "not the expected router", now)
            return
        link.remote_key = record.public_key
        link.remote_nonce = nonce
        link.remote_offer = _session_offer(capabilities)
        signed = PROOF_CONTEXT + nonce + self.public_key + link.remote_key
        link.proof = cbor.encode([PROOF, self.key.sign(signed)])
        self.stats["signatures"] += 1
        self._send(link, link.proof, now)
        if link.early_proof is not None:
            early, link.early_proof = link.early_proof, None
            self._on_proof(link, early, now)

    def _on_proof(self, link, signature, now):
        if link.remote_key is None:
            link.early_proof = signature  # before the router's card: keep it for then
            return
        if link.remote_proved:
            return
        signed = PROOF_CONTEXT + link.nonce + link.remote_key + self.public_key
        if link.remote_offer is not None:
            # A router that offered a session binds its offer (and ours: none) into its PROOF, so
            # an offer stripped on the way cannot pass for a router that never offers.
            signed = SESSION_PROOF_CONTEXT + link.nonce + link.remote_key + self.public_key
            signed += link.remote_offer
        if not ed25519.verify(link.remote_key, signed, signature):
            self._close(link, "bad proof", now)
            return
        link.remote_proved = True
        link.accepted = True
        self._send(link, cbor.encode([ACCEPT]), now)
        self._maybe_establish(link, now)

    def _on_accept(self, link, ask_back, now):
        link.remote_accepted = True
        if ask_back and link.accepted:
            self._send(link, cbor.encode([ACCEPT]), now)
        self._maybe_establish(link, now)

    def _maybe_establish(self, link, now):
        if link.established or not (link.accepted and link.remote_accepted and link.remote_proved):
            return
        link.established = True
        self.events.append(("up", link.id, link.remote_key))
        self._links_changed(now)

    def _on_digest(self, link, fields, now):
        if len(fields) != 3:
            raise ValueError("DIGEST")
        lo, hi, entries = fields
        if not (isinstance(lo, bytes) and isinstance(hi, bytes) and isinstance(entries, bytes)):
            raise ValueError("DIGEST")
        if len(entries) % ENTRY_BYTES or not lo <= self.peer_id <= hi:
            return
        named = {}
        for at in range(0, len(entries), ENTRY_BYTES):
            entry = entries[at : at + ENTRY_BYTES]
            if entry[:8] == self.peer_id:
                named[entry[8]] = int.from_bytes(entry[9:13], "big")
        missing = []
        for kind, own in ((records.CARD, self.card), (records.LINKS, self.links_record)):
            if own is not None and named.get(kind, -1) < own[0]:
                missing.append(own[2])
        if missing:
            self._send(link, self._records_message(missing), now)

    def _on_records(self, raws, now):
        for raw in raws:
            if not isinstance(raw, bytes):
                raise ValueError("RECORDS")
            try:
                record = records.open_record(raw)
            except ValueError:
                self.stats["records.ignored"] += 1
                continue
            own = self.card if record.kind == records.CARD else self.links_record
            if record.public_key != self.public_key or own is None or record.counter <= own[0]:
                self.stats["records.ignored"] += 1  # not ours, or not newer: nothing to do
                continue
            try:
                records.verify_record(record)
            except ValueError:
                self.stats["records.ignored"] += 1
                continue
            # Our own record with a higher counter: this node lost its counter. Move past it.
            self.counters.advance_past(record.counter)
            if record.kind == records.CARD:
                self.set_metadata(self.identity.get("metadata") or {}, now)
            else:
                self._links_due = now

    # ------------------------------------------------------------ time

    def _restart_retry(self, link, now):
        link.retry_every = RETRY_S
        link.retry_at = now + RETRY_S

    def tick(self, now):
        for link in list(self.links.values()):
            if link.established:
                if now - link.last_rx >= self.dead_s:
                    self._close(link, "dead", now)
                elif now - link.last_tx >= self.keepalive_s:
                    self._send(link, self._summary(), now)
                if link.accepted and not link.remote_accepted and now >= link.retry_at:
                    self._retransmit(link, now)
                continue
            if now >= link.deadline:
                self._close(link, "handshake timeout", now)
            elif now >= link.retry_at:
                self._retransmit(link, now)
        if self._links_due is not None and now >= self._links_due:
            self._links_due = None
            self._sign_links(now)
            for link in self.links.values():
                if link.established:
                    self._send(link, self._records_message([self.links_record[2]]), now)
        if self.card is not None and self.card[1] - self.wall() <= REFRESH_BEFORE_S:
            self.set_metadata(self.identity.get("metadata") or {}, now)
        if self.links_record is not None and self.links_record[1] - self.wall() <= REFRESH_BEFORE_S:
            self._links_due = now

    def _retransmit(self, link, now):
        link.retry_every = min(2 * link.retry_every, RETRY_CAP_S)
        link.retry_at = now + link.retry_every
        if not link.remote_proved:
            self._send(link, self._hello(link), now)
        elif link.accepted and not link.remote_accepted:
            self._send(link, cbor.encode([ACCEPT, 1]), now)

    def next_tick(self, now):
        """The earliest time :meth:`tick` has something to do."""
        due = [now + self.keepalive_s]
        for link in self.links.values():
            due.append(link.retry_at if not link.established else link.last_rx + self.dead_s)
        if self._links_due is not None:
            due.append(self._links_due)
        return min(due)


_TYPE_NAMES = {1: "Bluetooth", 2: "AccessPoint", 3: "P2PWiFi", 4: "WebSocket", 5: "Radio"}
