"""The whole engine receiving what a remote sends (``agent.core.engine``).

``engine``: byte 0 picks the scene -- bit 0: a link right after it came up
(our HELLO sent, :func:`world.fresh`) or one established with REMOTE by a real
handshake (:func:`world.established`); bit 1: the connection handler denies;
bit 2 (fresh links only): the link is LoRa-class (:data:`world.SLOW`: a send
budget, airtime per frame, slow keepalives).
Then operations until the input ends::

    op % 4 == 0   u16 length, frame        receive(FAR, frame)
    op % 4 == 1   u8 t                     the clock moves t/20 s; handle_timer
    op % 4 == 2   u16 t                    the clock moves t s (up to 18 h: expiry, refresh, sweeps)
    op % 4 == 3                            link_down(FAR), then link_up(FAR) again

after each of which everything the engine wants to send is taken and its
connection requests are answered. Contract: no input, call or timer raises
anything (``receive`` catches the typed errors itself); every frame sent fits
the MTU; the engine holds at most ``2 * max_peers`` records; the graph and its
JSON are built.

``hello``: the remote's HELLO on a fresh link carrying the input as its card
field (a card, a 13-byte reference, anything), fragmented as a sender would.
Nothing raises, and the engine answers with a PROOF only for a card that
verifies (or a reference to a card it holds).
"""

from __future__ import annotations

from agent.core.errors import RecordError
from agent.core.framing import Fragmenter
from agent.core.records import RecordKind, decode_record
from agent.core.wire import DIGEST_ENTRY_BYTES, MessageType, WireError, decode_message, encode_hello

from . import world
from .contract import Reader, Target, Violation, require


def _kinds(frames: list[bytes]) -> list[MessageType]:
    kinds = []
    for frame in frames:
        if frame[0] == 0:
            kinds.append(decode_message(frame[1:])[0])
    return kinds


def engine(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.u8()
    spec = world.SPEC if mode & 1 or not mode & 4 else world.SLOW
    scene = world.established() if mode & 1 else world.fresh(spec)
    allow = not mode & 2
    eng, now = scene.engine, scene.now
    while reader:
        op = reader.u8() % 4
        if op == 0:
            eng.receive(world.FAR, reader.chunk(), now)
        elif op == 1:
            now += reader.u8() / 20
            eng.handle_timer(now)
        elif op == 2:
            now += reader.u16()
            eng.handle_timer(now)
        else:
            eng.link_down(world.FAR, now)
            eng.link_up(world.FAR, spec, now)
        for frame in world.drain(eng, now, allow):
            require(len(frame) <= world.MTU, f"a {len(frame)}-byte frame on a {world.MTU}-byte link")
    require(eng.held_record_count() <= 2 * world.CONFIG.max_peers, "holds more than max_peers allow")
    eng.graph(now).to_json()


def hello(data: bytes) -> None:
    scene = world.fresh()
    eng = scene.engine
    message = encode_hello(b"\x22" * 16, data)
    for frame in Fragmenter(world.MTU).frames(message):
        eng.receive(world.FAR, frame, scene.now)
    sent = _kinds(world.drain(eng, scene.now))
    if MessageType.PROOF in sent and len(data) != DIGEST_ENTRY_BYTES:
        try:
            card = decode_record(data)
        except RecordError:
            raise Violation("a PROOF answered a HELLO whose card does not verify") from None
        require(card.kind is RecordKind.CARD and card.expiry > world.NOW, "a PROOF for a bad card")


TARGETS = (
    Target("engine", engine),
    Target("hello", hello, (WireError,)),  # WireError: a card field too big to fragment
)
