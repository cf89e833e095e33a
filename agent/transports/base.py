"""The contract between the runtime and a transport."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from agent.core.engine import UNCHANGED, LinkSpec, Unchanged
from agent.core.events import LinkId
from agent.core.medium import InterfaceId, MediumSpec


class LinkHost(Protocol):
    """What a transport calls on the runtime (always on the runtime's event loop)."""

    def register_link(self, link: LinkId, transport: Transport) -> None:
        """Claim ``link`` for this transport (before :meth:`link_up`), so frames find their way."""
        ...

    def link_up(self, link: LinkId, spec: LinkSpec) -> None: ...

    def update_link(
        self, link: LinkId, *, mtu: int | None = None, distance_dm: int | Unchanged | None = UNCHANGED
    ) -> None:
        """The transport learned more about an up link (a negotiated MTU, a new distance): an
        update of the link, never a new one (:meth:`agent.core.engine.Engine.update_link`)."""
        ...

    def receive(self, link: LinkId, frame: bytes) -> None: ...

    def link_down(self, link: LinkId) -> None: ...

    def count(self, name: str, n: int = 1) -> None:
        """Count a transport-level event (drops, refusals) under ``name``."""
        ...

    def interface_up(self, interface: InterfaceId, spec: MediumSpec, transport: Transport) -> None:
        """A broadcast interface (a radio dongle) is up; frames for it go to ``transport.send``
        addressed :class:`~agent.core.medium.Broadcast` (docs/ARCHITECTURE.md §1c)."""
        ...

    def interface_down(self, interface: InterfaceId) -> None: ...

    def interface_refused(self, interface: InterfaceId, wait: float) -> None:
        """The interface's transmitter refused a frame for its duty cycle; it can send again in
        ``wait`` seconds (0: unknown). The engine sends nothing on it until then."""
        ...

    def receive_on(
        self, interface: InterfaceId, frame: bytes, rssi: float | None = None, snr: float | None = None
    ) -> None:
        """A frame heard on a broadcast interface, with the radio's RSSI and SNR if it gives them."""
        ...


@runtime_checkable
class ReportsStatus(Protocol):
    """A transport with something to show in ``presence-agent status`` beyond its counters."""

    def status(self) -> dict[str, Any]:
        """JSON data, with ``"transport"`` naming the transport (``"radio"``, ``"ble"``)."""
        ...


class Transport(Protocol):
    """What the runtime calls on a transport (always on the runtime's event loop)."""

    async def start(self, host: LinkHost) -> None: ...

    def send(self, link: LinkId, frame: bytes) -> None:
        """Send ``frame`` on ``link``, or on the air of a broadcast interface when ``link`` is a
        :class:`~agent.core.medium.Broadcast`."""
        ...

    def close_link(self, link: LinkId) -> None: ...

    def proved(self, link: LinkId) -> None:
        """The remote on ``link`` proved its key; the connection request handler is asked now
        (a transport stops treating the link as an unproven, evictable newcomer)."""
        ...

    def established(self, link: LinkId, peer_key: bytes) -> None:
        """The engine admitted ``link`` to ``peer_key`` (lets a transport drop duplicate links)."""
        ...

    def back_off(self, peer_key: bytes, until: float) -> None:
        """Do not dial ``peer_key`` before ``until`` (the engine's clock: the ``now`` it is fed)."""
        ...

    async def stop(self) -> None: ...
