"""``[view]``: the web view's settings, and the rules of its listen address.

    [view]
    enabled = true                 # serve the page while `presence-agent run` runs (default: off)
    listen = "127.0.0.1:8470"      # ADDR:PORT; [v6]:PORT for IPv6; port 0 lets the kernel choose
    max_clients = 16               # live browsers (SSE streams) served at once

Listening beyond loopback (any address outside 127.0.0.0/8 and ``::1``, the
wildcard ``0.0.0.0`` included) makes every request need the token of
:mod:`agent.web.token`. Owned by :mod:`agent.web`; :mod:`agent.config` fills it
from the TOML file and checks the rules attached to each field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from agent.core.errors import PresenceError
from agent.core.settings import rule

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_CLIENTS",
    "ListenAddress",
    "ListenAddressError",
    "ViewSettings",
    "parse_listen",
]

DEFAULT_LISTEN: Final = "127.0.0.1:8470"
DEFAULT_MAX_CLIENTS: Final = 16


class ListenAddressError(PresenceError, ValueError):
    """A listen address is not ``ADDR:PORT`` with an IP address and a port in 0..65535."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the page is served: an IP address (no host names: the choice must be explicit) and a port."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (then no token is needed)."""
        return ipaddress.ip_address(self.host).is_loopback

    def url(self, port: int | None = None) -> str:
        """``http://host:port/`` (IPv6 in brackets); ``port`` overrides (the one the kernel chose)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def parse_listen(text: str) -> ListenAddress:
    """``"127.0.0.1:8470"``, ``"0.0.0.0:8470"`` or ``"[::1]:8470"``; raises :class:`ListenAddressError`."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""  # an IPv6 address needs brackets before its port
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ListenAddressError(f"listen address {text!r}: expected ADDR:PORT such as 127.0.0.1:8470")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ListenAddressError(
            f"listen address {text!r}: {host!r} is not an IP address (use 127.0.0.1, 0.0.0.0 or [::1])"
        ) from None
    return ListenAddress(str(address), int(port_text))


def _is_listen(text: str) -> bool:
    try:
        parse_listen(text)
    except ListenAddressError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ViewSettings:
    """``[view]``: serve the live page beside ``presence-agent run``. Off unless ``enabled``."""

    enabled: bool = False
    listen: str = rule(DEFAULT_LISTEN, 'an address "ADDR:PORT" such as "127.0.0.1:8470"', _is_listen)
    max_clients: int = rule(DEFAULT_MAX_CLIENTS, "an integer in 1..256", lambda v: 1 <= v <= 256)
