"""Deterministic simulation of whole meshes on a virtual clock (see :class:`Simulation`)."""

from agent.sim.network import (
    LORA,
    ClosedLink,
    LinkModel,
    RadioTransmission,
    SimPeer,
    SimRadio,
    Simulation,
    Transmission,
)
from agent.sim.topology import Topology, build, grid, line, random_geometric

__all__ = [
    "LORA",
    "ClosedLink",
    "LinkModel",
    "RadioTransmission",
    "SimPeer",
    "SimRadio",
    "Simulation",
    "Topology",
    "Transmission",
    "build",
    "grid",
    "line",
    "random_geometric",
]
