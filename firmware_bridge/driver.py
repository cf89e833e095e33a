"""The host's driver of one radio dongle: asyncio on a pyserial port (docs/SERIAL_PROTOCOL.md).

``await DongleDriver(path, listener).open(configure)`` opens the port without resetting the board
(:func:`firmware_bridge.ports.open_serial`), detects the dongle and configures it; afterwards
``send(payload)`` transmits and the listener hears what the dongle reports. The frames and their
bytes are :mod:`firmware_bridge.protocol`'s; this module is the I/O and the bookkeeping around them.

**I/O.** The port's file descriptor is non-blocking and read with ``loop.add_reader`` (at most
:data:`READ_CHUNK` bytes per turn of the loop, so a flood from the dongle shares the loop with
everything else); writes go straight to the descriptor and, when the port is full, wait in a
buffer of at most :data:`MAX_UNSENT` bytes for ``loop.add_writer``. No thread, no polling: timers
only for the frame silence (``Decoder.idle`` after :data:`~firmware_bridge.limits.FRAME_SILENCE`
without a byte) and one housekeeping tick every :data:`TICK` seconds (lost TX, the port's device
file, stalled credits).

**Detection.** FEND, then HELLO; an INFO answering any HELLO sent is taken; after
:data:`~firmware_bridge.limits.HELLO_ATTEMPTS` tries of
:data:`~firmware_bridge.limits.HELLO_TIMEOUT` each, :class:`NoAnswer` names the port and the
decoder's counters ("no presence-agent dongle answered HELLO"). ``check_info`` refuses another
protocol version (``VersionMismatch``, the documented line). ``configure(info)`` gives the
CONFIG_SET for this dongle; its echo is checked (``check_echo``: ``ConfigMismatch``), a NAK is
:class:`ConfigRefused`, silence :class:`NoAnswer`.

**Transmitting.** ``send`` queues a radio payload in a host queue of at most ``queue_limit``
frames; a frame that finds it full is dropped and counted (``tx_dropped``), as the air itself
drops frames: the engine above retransmits what matters, and a full queue means the dongle is
behind its own duty cycle, where waiting longer helps no one. A TX leaves only with a credit
(:class:`~firmware_bridge.protocol.Credits`). Each is answered by TX_DONE (``tx_done``) or NAK
(``tx_nak.<reason>``), or is lost (``tx_lost``) once :data:`LOST_TX_MARGIN` has passed after the
moment its airtime (``airtime(len)``, set by the owner) would have ended behind the TX before
it, allowing each TX the dongle's longest contention back-off
(:data:`~firmware_bridge.limits.MAX_BACKOFF_SLOTS_PER_FRAME` slots): a TX_DONE late after
listen-before-talk is not a lost frame. When TX waits, no TX is outstanding and no CREDIT came
for :data:`RESYNC_AFTER` seconds (CREDITs lost on the wire), a HELLO asks the dongle for a fresh
CREDIT (``credit_resync``).

**A dongle that rebooted** behind a USB-serial bridge (watchdog, brown-out: the port stays) is
back at its ``dongle.json`` settings with an empty queue. Boot noise or a damaged frame while up, an
INFO nobody asked for, a lost TX, and every :data:`CONFIG_CHECK_INTERVAL` seconds anyway, the driver
reads the configuration back (CONFIG_GET, :data:`REBOOT_SETTLE` seconds after the evidence, past the
firmware's boot window); fields that differ from what was configured are set again and checked by
echo (``reconfigured``, one warning naming the port and the fields). An echo that still differs
closes the driver as unplugged, so the owner opens the port afresh. Each read is counted
(``config_checked``); an unanswered one (``config_check_unanswered``) is left to the lost-TX and
port checks.

**Receiving.** RX goes to ``listener.received``; STATUS is kept as :attr:`status`; LOG lines go to
this module's logger with the port's name, at most :data:`LOG_RATE` a second (bursts of
:data:`LOG_BURST`; the rest ``log_suppressed``), control characters shown as U+FFFD. Everything
the decoder drops is counted by it; the driver passes every counter on, as ``serial.<name>``
for the decoder's and ``<name>`` for its own, through ``listener.count``.

**Loss.** A read of EIO/ENXIO or of 0 bytes, a write error, the port's device file gone, or a
dongle that stops reading what is written closes the driver: ``listener.unplugged(reason)`` is
called once (and ``open`` raises :class:`DongleLost` if it happens during the handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter, deque
from collections.abc import Callable
from typing import Final, Protocol

import serial

from agent.core.errors import PresenceError
from agent.core.pacing import TokenBucket
from firmware_bridge.limits import (
    BACKOFF_FRAME,
    FRAME_SILENCE,
    HELLO_ATTEMPTS,
    HELLO_TIMEOUT,
    MAX_BACKOFF_SLOTS_PER_FRAME,
    MAX_WIRE_FRAME,
)
from firmware_bridge.ports import open_serial
from firmware_bridge.protocol import (
    FEND,
    Config,
    ConfigGet,
    ConfigSet,
    Credit,
    Credits,
    Decoder,
    Hello,
    Info,
    Log,
    LogLevel,
    Message,
    Nak,
    NakReason,
    OtherVersion,
    ProtocolError,
    Received,
    Rx,
    Status,
    StatusGet,
    Tx,
    TxDone,
    check_echo,
    check_info,
    encode,
)

__all__ = [
    "HOST_QUEUE",
    "LOST_TX_MARGIN",
    "ConfigRefused",
    "DongleDriver",
    "DongleError",
    "DongleListener",
    "DongleLost",
    "NoAnswer",
]

log = logging.getLogger("firmware_bridge.driver")

#: Radio payloads waiting for a credit, at most (the dongle's own queue holds up to 64 more).
HOST_QUEUE: Final = 32
#: A TX neither done nor refused this long after its airtime would have ended is lost (s).
LOST_TX_MARGIN: Final = 1.0
#: How long a CONFIG_SET waits for its echo (s): as long as a HELLO waits for its INFO.
CONFIG_TIMEOUT: Final = HELLO_TIMEOUT
#: Bytes read per turn of the loop.
READ_CHUNK: Final = 4096
#: Bytes written but not yet taken by the port, at most: beyond it the dongle is not reading.
MAX_UNSENT: Final = 16 * MAX_WIRE_FRAME
#: The housekeeping tick (s): lost TX, the port's device file, stalled credits.
TICK: Final = 0.25
#: TX waiting without credit, nothing outstanding and no CREDIT this long (s): ask with a HELLO.
RESYNC_AFTER: Final = 2.0
#: An up dongle's configuration is read back this often (s) even without evidence of a reboot.
CONFIG_CHECK_INTERVAL: Final = 60.0
#: After evidence of a reboot, the configuration is read back this much later (s): past the boot
#: window in which the firmware still takes a 0x03 byte as Ctrl-C (dongle_main's BOOT_WINDOW_MS).
REBOOT_SETTLE: Final = 2.0
#: What the decoder counts when a dongle's boot noise or a frame cut by a reset arrives.
_REBOOT_EVIDENCE: Final = frozenset({"garbage_bytes", "bad_crc", "bad_escape", "runt", "dropped_idle"})
#: LOG lines shown per second per dongle, and in one burst.
LOG_RATE: Final = 5.0
LOG_BURST: Final = 20
#: The dongle's LOG levels as the logging module's.
_LOG_LEVELS: Final = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


class DongleError(PresenceError):
    """A dongle could not be brought up or went away; the message is one line naming its port."""


class NoAnswer(DongleError):
    """Nothing on the port answered as a presence-agent dongle would (HELLO or CONFIG_SET)."""


class ConfigRefused(DongleError):
    """The dongle answered CONFIG_SET with a NAK: it applied none of the configuration."""


class DongleLost(DongleError):
    """The port went away (unplugged) before the dongle was up."""


class DongleListener(Protocol):
    """What a driver reports to its owner (on the event loop)."""

    def received(self, rx: Rx) -> None:
        """A radio frame the dongle heard."""
        ...

    def unplugged(self, reason: str) -> None:
        """The port went away after the dongle was up (called once); the driver is closed."""
        ...

    def refused(self, reason: NakReason, wait: float) -> None:
        """The dongle refused a TX (NAK ``reason``); it could succeed in ``wait`` seconds (0: unknown)."""
        ...

    def count(self, name: str, n: int = 1) -> None:
        """Count a driver or decoder event (``tx_lost``, ``serial.bad_crc``, ...)."""
        ...


class DongleDriver:
    """One dongle on one serial port (see the module docstring)."""

    def __init__(
        self,
        path: str,
        listener: DongleListener,
        *,
        queue_limit: int = HOST_QUEUE,
    ) -> None:
        self.path = path
        self.listener = listener
        #: Seconds a radio payload of a given length occupies the air (sets the lost-TX timeout);
        #: the owner sets it once it knows the modulation.
        self.airtime: Callable[[int], float] = lambda _length: 0.0
        self.decoder = Decoder()
        self.credits = Credits()
        #: The driver's own counters (the decoder's are ``decoder.stats``).
        self.stats: Counter[str] = Counter()
        self.info: Info | None = None
        #: The configuration in force, as the dongle echoed it.
        self.config: Config | None = None
        #: What the owner asked for at open (set again when a reboot undid it).
        self._asked: ConfigSet | None = None
        self._check: asyncio.Task[None] | None = None
        self._next_check = 0.0
        #: The latest STATUS the dongle sent.
        self.status: Status | None = None
        self._queue_limit = queue_limit
        self._port: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self._up = False
        self._closed = False
        self._queue: deque[bytes] = deque()
        #: TX seq -> when it counts as lost.
        self._outstanding: dict[int, float] = {}
        self._air_free_at = 0.0
        self._last_credit = 0.0
        self._unsent = bytearray()
        self._last_byte = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._waiter: tuple[set[int], tuple[type, ...], asyncio.Future[Received]] | None = None
        self._decoder_seen: Counter[str] = Counter()
        self._log_bucket = TokenBucket(LOG_RATE, LOG_BURST, 0.0)

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_up(self) -> bool:
        """Detected, configured and not closed."""
        return self._up and not self._closed

    async def open(self, configure: Callable[[Info], ConfigSet]) -> Info:
        """Open the port, detect the dongle, configure it with ``configure(info)``; its INFO.

        Raises :class:`~firmware_bridge.ports.PortUnavailable`, :class:`NoAnswer`,
        ``VersionMismatch``, ``ConfigMismatch``, :class:`ConfigRefused` or :class:`DongleLost`,
        each one line naming the port; the driver is closed then.
        """
        if self._port is not None or self._closed:
            raise RuntimeError("a DongleDriver opens once")
        self._loop = asyncio.get_running_loop()
        self._log_bucket = TokenBucket(LOG_RATE, LOG_BURST, self._loop.time())
        self._port = open_serial(self.path)
        self._fd = self._port.fileno()
        try:
            self._loop.add_reader(self._fd, self._readable)
            self._schedule_tick()
            self.info = await self._detect()
            self._asked = configure(self.info)
            self.config = await self._configure(self._asked)
        except BaseException:
            self.close()
            raise
        self._up = True
        self._last_credit = self._loop.time()
        self._next_check = self._last_credit + CONFIG_CHECK_INTERVAL
        self._pump_tx()
        return self.info

    def close(self) -> None:
        """Stop reading and writing and close the port (idempotent; the listener is not called)."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._idle, self._tick):
            if handle is not None:
                handle.cancel()
        if self._check is not None:
            self._check.cancel()
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
        self._queue.clear()
        self._outstanding.clear()
        self._unsent.clear()
        if self._waiter is not None and not self._waiter[2].done():
            self._waiter[2].set_exception(DongleLost(f"{self.path}: the driver was closed"))

    # ------------------------------------------------------------------ sending

    def send(self, payload: bytes) -> bool:
        """Queue one radio payload for transmission; False (and counted) if it was dropped."""
        if not self.is_up:
            return self._count_false("tx_not_up")
        assert self.info is not None
        if not 1 <= len(payload) <= self.info.mtu:
            return self._count_false("tx_too_long")
        if len(self._queue) >= self._queue_limit:
            return self._count_false("tx_dropped")
        self._queue.append(bytes(payload))
        self._pump_tx()
        return True

    def request_status(self) -> None:
        """Ask for a STATUS (kept as :attr:`status` when it comes)."""
        if self.is_up:
            self._send(StatusGet())

    @property
    def queued(self) -> int:
        """Radio payloads waiting for a credit."""
        return len(self._queue)

    @property
    def outstanding(self) -> int:
        """TX frames sent and not yet answered (nor lost)."""
        return len(self._outstanding)

    def _pump_tx(self) -> None:
        assert self._loop is not None
        while self._queue and self.credits.can_send() and self.is_up:
            payload = self._queue.popleft()
            seq = self._send(Tx(payload))
            now = self._loop.time()
            backoff = MAX_BACKOFF_SLOTS_PER_FRAME * self.airtime(BACKOFF_FRAME)
            self._air_free_at = max(now, self._air_free_at) + backoff + self.airtime(len(payload))
            self._outstanding[seq] = self._air_free_at + LOST_TX_MARGIN
            self._count("tx_sent")

    def _send(self, message: Message, *, lead: bytes = b"") -> int:
        """Write ``message`` with the next seq (after ``lead``); the seq."""
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        self.credits.sent(seq, tx=isinstance(message, Tx))
        self._write(lead + encode(message, seq))
        return seq

    def _write(self, data: bytes) -> None:
        if self._closed or self._loop is None:
            return
        if not self._unsent:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._lost(f"write failed: {exc.strerror or exc}")
                return
            data = data[written:]
            if not data:
                return
            self._loop.add_writer(self._fd, self._writable)
        self._unsent += data
        if len(self._unsent) > MAX_UNSENT:
            self._lost(f"the dongle stopped reading ({len(self._unsent)} bytes unsent)")

    def _writable(self) -> None:
        if self._closed or self._loop is None:
            return
        try:
            written = os.write(self._fd, self._unsent)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(f"write failed: {exc.strerror or exc}")
            return
        del self._unsent[:written]
        if not self._unsent:
            self._loop.remove_writer(self._fd)

    # ------------------------------------------------------------------ the handshake

    async def _detect(self) -> Info:
        answer = await self._exchange(Hello(), (Info, OtherVersion), HELLO_ATTEMPTS, HELLO_TIMEOUT, lead=True)
        if answer is None:
            heard = ", ".join(f"{k} {v}" for k, v in self.decoder.stats.items() if v) or "nothing"
            raise NoAnswer(
                f"{self.path}: no presence-agent dongle answered HELLO ({HELLO_ATTEMPTS} tries of "
                f"{HELLO_TIMEOUT:g} s; expected an INFO frame of serial protocol; heard: {heard})"
            )
        assert isinstance(answer.message, Info | OtherVersion)
        return check_info(answer.message, self.path)

    async def _configure(self, asked: ConfigSet) -> Config:
        answer = await self._exchange(asked, (Config, Nak), 1, CONFIG_TIMEOUT)
        if answer is None:
            raise NoAnswer(f"{self.path}: the dongle did not answer CONFIG_SET within {CONFIG_TIMEOUT:g} s")
        if isinstance(answer.message, Nak):
            raise ConfigRefused(
                f"{self.path}: the dongle refused its configuration (NAK {answer.message.reason.name}): "
                "check [radio] against the dongle's radio"
            )
        assert isinstance(answer.message, Config)
        check_echo(asked, answer.message, self.path)
        return answer.message

    async def _exchange(
        self, message: Message, expect: tuple[type, ...], attempts: int, timeout: float, *, lead: bool = False
    ) -> Received | None:
        """Send ``message`` up to ``attempts`` times; the first answer of a type in ``expect``
        carrying the seq of any of them, or None after ``timeout`` each."""
        assert self._loop is not None
        seqs: set[int] = set()
        for _ in range(attempts):
            future: asyncio.Future[Received] = self._loop.create_future()
            self._waiter = (seqs, expect, future)
            seqs.add(self._send(message, lead=bytes((FEND,)) if lead else b""))
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                continue
            finally:
                self._waiter = None
        return None

    # ------------------------------------------------------------------ receiving

    def _readable(self) -> None:
        assert self._loop is not None
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._lost("the port closed")
            return
        self._last_byte = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_at(self._last_byte + FRAME_SILENCE, self._silence)
        for received in self.decoder.feed(data):
            if self._closed:
                break
            self._dispatch(received)
        self._pass_decoder_stats()

    def _silence(self) -> None:
        assert self._loop is not None
        self._idle = None
        if self._closed:
            return
        if self._loop.time() - self._last_byte >= FRAME_SILENCE:
            self.decoder.idle()
            self._pass_decoder_stats()
        else:  # bytes came meanwhile: wait for the silence after the last one
            self._idle = self._loop.call_at(self._last_byte + FRAME_SILENCE, self._silence)

    def _dispatch(self, received: Received) -> None:
        message, seq = received.message, received.seq
        waiter = self._waiter
        if waiter is not None and isinstance(message, waiter[1]) and seq in waiter[0]:
            if not waiter[2].done():
                waiter[2].set_result(received)
            return
        if isinstance(message, Credit):
            assert self._loop is not None
            self._last_credit = self._loop.time()
            self.credits.grant(message)
            self._pump_tx()
        elif isinstance(message, Rx):
            self._count("rx")
            if self.is_up:
                self.listener.received(message)
        elif isinstance(message, TxDone | Nak):
            if self._outstanding.pop(seq, None) is None:
                self._count("answer_unexpected")
            elif isinstance(message, TxDone):
                self._count("tx_done")
            else:
                self._count(f"tx_nak.{message.reason.name.lower()}")
                self.listener.refused(message.reason, message.wait_ms / 1000)
        elif isinstance(message, Status):
            self.status = message
            self._count("status")
        elif isinstance(message, Log):
            self._log(message)
        elif isinstance(message, Info | OtherVersion | Config):
            self._count("answer_unexpected")  # a late answer, or one to a credit resync
            if isinstance(message, Info):
                self._suspect_reboot()
        else:  # a frame only a host sends
            self._count("frame_unexpected")

    def _log(self, message: Log) -> None:
        assert self._loop is not None
        if not self._log_bucket.try_take(1, self._loop.time()):
            self._count("log_suppressed")
            return
        self._count("log")
        text = "".join(c if c.isprintable() else "\ufffd" for c in message.text)
        log.log(_LOG_LEVELS[message.level], "%s: dongle: %s", self.path, text)

    def _pass_decoder_stats(self) -> None:
        for name, value in self.decoder.stats.items():
            delta = value - self._decoder_seen[name]
            if delta:
                self._decoder_seen[name] = value
                self.listener.count(f"serial.{name}", delta)
                if name in _REBOOT_EVIDENCE:
                    self._suspect_reboot()

    # ------------------------------------------------------------------ housekeeping

    def _schedule_tick(self) -> None:
        assert self._loop is not None
        self._tick = self._loop.call_later(TICK, self._housekeeping)

    def _housekeeping(self) -> None:
        assert self._loop is not None
        if self._closed:
            return
        if not os.path.exists(self.path):
            self._lost("the port's device file is gone")
            return
        now = self._loop.time()
        for seq in [s for s, deadline in self._outstanding.items() if now > deadline]:
            del self._outstanding[seq]
            self._count("tx_lost")
            self._suspect_reboot()
        if self.is_up and now >= self._next_check:
            self._start_check(0.0)
        stalled = self.is_up and self._queue and not self._outstanding and not self.credits.can_send()
        if stalled and now - self._last_credit > RESYNC_AFTER:
            self._last_credit = now  # one HELLO per RESYNC_AFTER, not one per tick
            self._count("credit_resync")
            self._send(Hello())
        self._schedule_tick()

    # ------------------------------------------------------------------ a dongle that rebooted

    def _suspect_reboot(self) -> None:
        if self.is_up:
            self._start_check(REBOOT_SETTLE)

    def _start_check(self, delay: float) -> None:
        assert self._loop is not None
        if self._check is None or self._check.done():
            self._next_check = self._loop.time() + CONFIG_CHECK_INTERVAL
            self._check = self._loop.create_task(self._check_config(delay))

    async def _check_config(self, delay: float) -> None:
        """Read the configuration back; set again what a reboot undid (see the module docstring)."""
        assert self._asked is not None
        await asyncio.sleep(delay)
        if not self.is_up or self._waiter is not None:
            return
        keys = tuple(key for key, _ in self._asked.fields)
        try:
            answer = await self._exchange(ConfigGet(keys), (Config,), 1, CONFIG_TIMEOUT)
        except DongleLost:
            return
        if answer is None:
            self._count("config_check_unanswered")
            return
        self._count("config_checked")
        assert isinstance(answer.message, Config)
        in_force = answer.message
        undone = [(k, v) for k, v in self._asked.fields if in_force.get(k) != v]
        if not undone:
            return
        self._count("reconfigured")
        log.warning(
            "%s: the dongle's configuration changed under the agent (did it reboot?): %s; "
            "configuring it again",
            self.path,
            "; ".join(f"{k.name} {in_force.get(k)}, configured {v}" for k, v in undone),
        )
        try:
            self.config = await self._configure(self._asked)
        except DongleLost:
            return
        except (DongleError, ProtocolError) as exc:
            self._lost(f"could not configure it again: {exc}")

    def _lost(self, reason: str) -> None:
        if self._closed:
            return
        was_up = self.is_up
        if self._waiter is not None and not self._waiter[2].done():
            lost = DongleLost(f"{self.path}: the port went away during the handshake ({reason})")
            self._waiter[2].set_exception(lost)
        self.close()
        self._count("unplugged")
        if was_up:
            log.debug("%s: dongle unplugged (%s)", self.path, reason)
            self.listener.unplugged(reason)

    def _count(self, name: str) -> None:
        self.stats[name] += 1
        self.listener.count(name)

    def _count_false(self, name: str) -> bool:
        self._count(name)
        return False
