"""Routing policies for GPU pools, one file each; the registry key is the file name and the YAML name."""

from sim.hardware.routing.base import GpuState, Router
from sim.registry import Registry

ROUTERS: Registry[type[Router]] = Registry("routing policy")

from sim.hardware.routing import central, least_loaded, round_robin, shortest_expected_wait  # noqa: E402,F401

__all__ = ["ROUTERS", "GpuState", "Router"]
