"""Deterministic simulation of whole meshes on a virtual clock (see :class:`Simulation`)."""

from agent.sim.network import LORA, LinkModel, SimPeer, Simulation
from agent.sim.topology import Topology, build, grid, line, random_geometric

__all__ = [
    "LORA",
    "LinkModel",
    "SimPeer",
    "Simulation",
    "Topology",
    "build",
    "grid",
    "line",
    "random_geometric",
]
