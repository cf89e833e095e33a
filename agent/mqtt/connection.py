"""One MQTT connection kept alive on its own thread: connect, back off with jitter, reconnect.

paho-mqtt's own ``loop_start`` reconnects too, but it swallows the reason a
connection failed and retries a refused password forever. Here the thread owns
the connect loop: every failure is recorded with its reason, back-off doubles
from ``reconnect_min`` to ``reconnect_max`` with jitter (a fleet that lost its
broker does not reconnect in lock step), and a refusal retrying cannot fix
(credentials, authorisation, an untrusted certificate) stops the connection.

The n-th consecutive failed attempt waits
``min(reconnect_max, reconnect_min * 2^(n-1)) * U[0.5, 1]`` -- full jitter on the
upper half: spread out, never below half the delay (:class:`agent.core.backoff.Backoff`
with ``low=0.5``). A connection that was up starts again at ``n = 1``.
"""

from __future__ import annotations

import enum
import logging
import random
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.core.backoff import Backoff
from agent.mqtt.broker import BrokerOptions, BrokerRefusedError, BrokerUnreachableError

log = logging.getLogger("agent.mqtt")

#: CONNACK reason codes (MQTT 5 numbering; paho maps 3.1.1's onto them) that retrying cannot fix.
PERMANENT_REFUSALS = frozenset(
    {
        0x84,  # unsupported protocol version
        0x85,  # client identifier not valid
        0x86,  # bad user name or password
        0x87,  # not authorized
        0x8A,  # banned
        0x8C,  # bad authentication method
    }
)


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    REFUSED = "refused"
    STOPPED = "stopped"


Handler = Callable[[mqtt.Client], None]
MessageHandler = Callable[[mqtt.MQTTMessage], None]


class BrokerConnection:
    """A supervised paho client. Callbacks run on the connection's thread; keep them short."""

    def __init__(
        self,
        options: BrokerOptions,
        *,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        on_connected: Handler | None = None,
        on_disconnected: Handler | None = None,
        on_message: MessageHandler | None = None,
        name: str = "mqtt",
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        # Full jitter on the upper half: spread out, never below half the delay.
        self._backoff = Backoff(options.reconnect_min, options.reconnect_max, jitter=0.5, low=0.5)
        # The module's shared generator by default, as random.uniform used before.
        self._random: Callable[[], float] = random.random if rng is None else rng.random
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._name = name
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.state = ConnectionState.CONNECTING
        #: Why the last attempt failed or the connection dropped (``""`` while all is well).
        self.last_error = ""
        self.connects = 0
        self.failures = 0
        self.client = self._make_client(client_id, will)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Disconnect cleanly (no last will) and end the thread. Idempotent."""
        self._stop.set()
        try:
            self.client.disconnect()
        except Exception:  # already disconnected; nothing to tell the broker
            log.debug("disconnect while stopping failed", exc_info=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._set_state(ConnectionState.STOPPED)

    def wait_connected(self, timeout: float) -> None:
        """Block until connected. Raises BrokerRefusedError or BrokerUnreachableError (with the reason)."""
        with self._changed:
            self._changed.wait_for(lambda: self.state is not ConnectionState.CONNECTING, timeout)
            state = self.state
        if state is ConnectionState.CONNECTED:
            return
        where = self.options.address.url
        if state is ConnectionState.REFUSED:
            raise BrokerRefusedError(f"{where} refused the connection: {self.last_error}")
        reason = self.last_error or "no answer"
        raise BrokerUnreachableError(f"{where}: no connection after {timeout:g} s ({reason})")

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        opts = self.options
        failures = 0  # consecutive attempts that did not stay connected
        while not self._stop.is_set():
            try:
                self.client.connect(opts.address.host, opts.address.port, keepalive=opts.keepalive)
            except ssl.SSLCertVerificationError as exc:
                self._refuse(f"TLS: {exc.verify_message or exc.reason} (check mqtt.ca_file)")
                return
            except (OSError, ValueError) as exc:
                self._failed(_describe_os_error(exc))
            else:
                if self._stop.is_set():  # stopped while connecting
                    self.client.disconnect()
                    return
                connects = self.connects
                self.client.loop_forever(retry_first_connection=False)
                if self.state is ConnectionState.REFUSED or self._stop.is_set():
                    return
                self._set_state(ConnectionState.CONNECTING)
                if self.connects != connects:  # it was up: start the back-off again
                    failures = 0
            failures += 1
            if self._stop.wait(self._backoff.delay(failures, self._random())):
                return

    def _make_client(self, client_id: str, will: tuple[str, bytes] | None) -> mqtt.Client:
        opts = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # our thread reconnects, with reasons and jitter
        )
        if opts.username is not None:
            client.username_pw_set(opts.username, opts.password)
        if opts.address.tls:
            client.tls_set(
                ca_certs=opts.ca_file or None,
                certfile=opts.cert_file or None,
                keyfile=opts.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        if self._on_message is not None:
            handler = self._on_message
            client.on_message = lambda _c, _u, message: handler(message)
        return client

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            if reason.value in PERMANENT_REFUSALS:
                self._refuse(str(reason))
            else:
                self._failed(f"broker answered: {reason}")
            client.disconnect()
            return
        self.connects += 1
        self.last_error = ""
        log.info("%s: connected to %s", self._name, self.options.address.url)
        self._set_state(ConnectionState.CONNECTED)
        if self._on_connected is not None:
            self._on_connected(client)

    def _disconnected(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if self.state is not ConnectionState.CONNECTED:
            return
        if not self._stop.is_set():
            self._failed(f"connection lost ({reason})")
        if self._on_disconnected is not None:
            self._on_disconnected(client)

    # ------------------------------------------------------------ state

    def _failed(self, reason: str) -> None:
        self.failures += 1
        first = self.last_error != reason
        self.last_error = reason
        # One warning per distinct reason; a broker down for an hour is not a log flood.
        (log.warning if first else log.debug)("%s: %s: %s", self._name, self.options.address.url, reason)
        self._set_state(ConnectionState.CONNECTING)

    def _refuse(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        log.error(
            "%s: %s refused the connection: %s; not retrying (fix the [mqtt] settings and restart)",
            self._name,
            self.options.address.url,
            reason,
        )
        self._set_state(ConnectionState.REFUSED)

    def _set_state(self, state: ConnectionState) -> None:
        with self._changed:
            if self.state is ConnectionState.REFUSED and state is not ConnectionState.STOPPED:
                return  # refusal is final until stopped
            self.state = state
            self._changed.notify_all()


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
