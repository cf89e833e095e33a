"""An emulated radio field with real agent processes on it (``demo --radio``, ``bench/radio.py``).

A :class:`RadioLab` owns one :class:`~agent.sim.radio.RadioMedium` (positions in metres, the LoRa
modulation and region of its :class:`LabRadio`) and a
:class:`~agent.sim.dongles.DongleEmulator` on it: dongle ``i`` is a real pty at
``<root>/dev/ttyEMU<i>``, node ``i`` of the medium. :meth:`RadioLab.spawn` starts one
``presence-agent run`` process (``python -m agent.cli run``) with its own state directory
``<root>/<name>`` and a configuration file ``<root>/<name>.toml`` written as a user would write it:
``[radio]`` naming that pty as its only port (the production driver opens it by path, as it opens
``/dev/ttyUSB0``), and ``[lan]`` either off (radio is the only path) or on loopback with the lab's
private beacon port (a LAN bridge, or a LAN-only agent). Each process runs in a session of its own
(a terminal's Ctrl-C reaches the lab, which stops them) with its stderr in ``<root>/<name>.log``.

The lab does not talk to the agents: callers use their control sockets (``agent.runtime.control``,
which this layer may not import).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from agent.core.airtime import LoRaModulation
from agent.core.distance import PathLoss
from agent.core.duty_cycle import EU868_G3, Region
from agent.core.errors import PresenceError
from agent.core.media_limits import PATH_LOSS_EXPONENT, SIM_RSSI_AT_1M
from agent.sim.dongles import DongleEmulator
from agent.sim.radio import RadioConfig, RadioMedium


@dataclass(frozen=True, slots=True)
class LabRadio:
    """What every agent's ``[radio]`` table says (the medium uses the same modulation and region).

    The default, EU868 g3 (869.4-869.65 MHz, 10 %) at SF7/125 kHz with a keepalive every 15 s, lets
    a line of four form in a minute or two (at g1's 1 % the default minute-long keepalive is needed).
    The distance model is the medium's own, as a deployment calibrates its own.
    """

    region: Region = EU868_G3
    frequency_hz: int = 869_525_000
    modulation: LoRaModulation = field(default_factory=LoRaModulation)
    keepalive_interval: float = 15.0
    dead_interval: float = 60.0
    rssi_at_1m_dbm: float = SIM_RSSI_AT_1M
    path_loss_exponent: float = PATH_LOSS_EXPONENT

    @property
    def region_setting(self) -> str:
        """``[radio] region`` as agent.transports.radio_settings spells it (``"EU868_G3"``)."""
        return self.region.name.upper().replace(" ", "_")


#: Metres between neighbours of :func:`line`: SF7/125 kHz reaches about 3.2 km in the medium's model,
#: so each node hears only its neighbours.
LINE_SPACING: Final = 2500.0
#: How long a stopped agent has to exit after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 10.0


def line(nodes: int, spacing: float = LINE_SPACING) -> list[tuple[float, float]]:
    """``nodes`` positions on a line, ``spacing`` metres apart."""
    return [(i * spacing, 0.0) for i in range(nodes)]


class RadioLabError(PresenceError):
    """The lab was asked for something it cannot do (no such dongle, a name used twice)."""


@dataclass(eq=False)
class LabAgent:
    """One agent process of the lab."""

    name: str
    popen: subprocess.Popen[bytes]
    state_dir: Path
    #: The medium node (and dongle) it uses, or None (LAN only).
    node: int | None
    lan: bool

    @property
    def pid(self) -> int:
        return self.popen.pid


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def radio_table(radio: LabRadio, port: str) -> str:
    """The ``[radio]`` table of ``radio`` with ``port`` as its only port (TOML)."""
    modulation = radio.modulation
    values = {
        "region": f'"{radio.region_setting}"',
        "frequency_hz": str(radio.frequency_hz),
        "bandwidth_hz": str(int(modulation.bandwidth)),
        "spreading_factor": str(modulation.sf),
        "coding_rate": str(modulation.coding_rate),
        "preamble_symbols": str(modulation.preamble),
        "keepalive_interval": repr(radio.keepalive_interval),
        "dead_interval": repr(radio.dead_interval),
        "rssi_at_1m_dbm": repr(radio.rssi_at_1m_dbm),
        "path_loss_exponent": repr(radio.path_loss_exponent),
    }
    lines = ["[radio]", "enabled = true", f"ports = [{_toml_string(port)}]"]
    lines += [f"{key} = {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RadioLab:
    """An emulated radio field at ``positions`` and the agent processes started on it."""

    def __init__(
        self,
        root: Path,
        positions: Sequence[tuple[float, float]],
        *,
        radio: LabRadio | None = None,
        seed: int = 5,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.radio = radio or LabRadio()
        self.medium = RadioMedium(
            positions,
            RadioConfig.lora(
                self.radio.modulation,
                path_loss=PathLoss(self.radio.rssi_at_1m_dbm, self.radio.path_loss_exponent),
            ),
            seed=seed,
            region=self.radio.region,
        )
        self.multicast_port = _free_udp_port()
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self.agents: list[LabAgent] = []
        self._logs: list[IO[bytes]] = []
        self.root.mkdir(parents=True, exist_ok=True)
        self.emulator = DongleEmulator(self.medium, self.root / "dev")

    def config_text(self, node: int | None, lan: bool) -> str:
        """The configuration file of an agent on dongle ``node`` (None: none), with ``lan`` or not."""
        if lan:
            text = f'[lan]\ninterfaces = ["127.0.0.1"]\nmulticast_port = {self.multicast_port}\n'
        else:
            text = "[lan]\nenabled = false\n"
        if node is not None:
            text += "\n" + radio_table(self.radio, self.emulator.path(node))
        return text

    def spawn(self, name: str, node: int | None, *, lan: bool = False, extra_config: str = "") -> LabAgent:
        """Start ``presence-agent run`` named ``name`` on dongle ``node`` (None: LAN only)."""
        if node is None and not lan:
            raise RadioLabError(f"agent {name} would have no transport: give it a dongle or the LAN")
        if node is not None and not 0 <= node < len(self.medium.positions):
            raise RadioLabError(f"no dongle {node}: the lab has dongles 0..{len(self.medium.positions) - 1}")
        if any(a.name == name for a in self.agents):
            raise RadioLabError(f"an agent named {name} is already running in the lab")
        config = self.root / f"{name}.toml"
        config.write_text(self.config_text(node, lan) + extra_config, encoding="utf-8")
        state_dir = self.root / name
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the lab)
        self._logs.append(log)
        argv = [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
        argv += ["--state-dir", str(state_dir), "--name", name]
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=self._cwd,
            env=self._env,
            start_new_session=True,
        )
        agent = LabAgent(name, popen, state_dir, node, lan)
        self.agents.append(agent)
        return agent

    def log(self, agent: LabAgent) -> str:
        """The last lines ``agent`` wrote to stderr (for error messages)."""
        with contextlib.suppress(OSError):
            return (self.root / f"{agent.name}.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> list[int]:
        """SIGTERM every agent still running, wait for it (SIGKILL after :data:`STOP_TIMEOUT`), and
        return every agent's exit code, in the order they were started."""
        for agent in self.agents:
            if agent.popen.poll() is None:
                agent.popen.send_signal(signal.SIGTERM)
        codes = []
        for agent in self.agents:
            try:
                codes.append(agent.popen.wait(STOP_TIMEOUT))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(agent.popen.pid, signal.SIGKILL)
                codes.append(agent.popen.wait())
        return codes

    def close(self) -> None:
        """Stop the agents, then the emulator."""
        self.stop()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self.emulator.close()

    def __enter__(self) -> RadioLab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
