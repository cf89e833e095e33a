"""Where the broker is and how to log in: URL parsing, credentials and the mirror's typed errors.

No paho here, so the configuration can validate a broker URL without the client library.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from agent.core.errors import PresenceError

if TYPE_CHECKING:
    from agent.mqtt.settings import MqttSettings

log = logging.getLogger("agent.mqtt")

#: Default ports of the two URL schemes (IANA).
DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}


class MqttError(PresenceError):
    """Base class of the MQTT mirror's and fleet view's errors."""


class BrokerRefusedError(MqttError):
    """The broker refused us for a reason retrying cannot fix (credentials, authorisation, TLS trust).

    Clients stop instead of retrying: a wrong password must not become a retry storm.
    """


class BrokerUnreachableError(MqttError):
    """No connection to the broker within the time allowed (it may be down; retrying may help)."""


class CredentialsError(MqttError):
    """The password file or environment variable named in the configuration cannot be read."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``. Raises ValueError saying what is wrong.

    Messages name the URL, except that a URL carrying credentials is shown without them.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r} is malformed: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    if "@" in parts.netloc:
        # A password in a URL ends up in argv, shell history and logs: refuse it, and do not repeat it.
        shown = f"{parts.scheme}://***@{parts.netloc.rpartition('@')[2]}"
        raise ValueError(f"broker URL {shown!r} must not carry credentials; use username and password_file")
    if parts.path not in ("", "/") or "?" in url or "#" in url:
        raise ValueError(f"broker URL {url!r} must be only scheme://host[:port]")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError(f"broker URL {url!r} has an invalid port")
    return BrokerAddress(
        parts.hostname, port if port is not None else DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts"
    )


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Everything needed to open one MQTT connection (shared by the mirror and the fleet view)."""

    address: BrokerAddress
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 30
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0

    def __repr__(self) -> str:  # never show the password
        return f"BrokerOptions({self.address.url}, username={self.username!r})"


def read_password(password_file: str = "", password_env: str = "") -> str | None:
    """The password from a file (its first line) or an environment variable; ``None`` if neither is named.

    Raises :class:`CredentialsError` naming the file or variable when it cannot be read.
    """
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise CredentialsError(f"environment variable {password_env} (mqtt.password_env) is not set")
        return value
    if password_file:
        path = Path(password_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"{path}: cannot read the MQTT password file: {exc}") from None
        lines = text.splitlines()
        return lines[0] if lines else ""
    return None


def password_file_too_open(password_file: str) -> bool:
    """Whether group or others may read the password file (the agent warns; it does not refuse)."""
    try:
        mode = Path(password_file).stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def broker_options(settings: MqttSettings) -> BrokerOptions:
    """Connection options from ``[mqtt]``; reads the password. Raises CredentialsError."""
    if settings.password_file and password_file_too_open(settings.password_file):
        log.warning("%s is readable by group or others; chmod 600 it", settings.password_file)
    return BrokerOptions(
        address=parse_broker_url(settings.broker),
        username=settings.username or None,
        password=read_password(settings.password_file, settings.password_env),
        ca_file=settings.ca_file or None,
        cert_file=settings.cert_file or None,
        key_file=settings.key_file or None,
        keepalive=settings.keepalive,
        reconnect_min=settings.reconnect_min,
        reconnect_max=settings.reconnect_max,
    )
