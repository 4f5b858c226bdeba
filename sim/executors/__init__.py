"""How a Scenario is carried out: one executor per semantics, one file each (YAML name `run.executor` = registry
key = file name).

Every executor writes the same per-request records (sim/scenario/records.py); what differs is time:
``engine`` moves simulated time (SimPy), ``sequential`` keeps no clock at all. Under either, the cache is the
reference or the compiled implementation of the scenario's cache spec (run.implementation), same records.
"""

from sim.executors.base import Executor
from sim.registry import Registry

EXECUTORS: Registry[type[Executor]] = Registry("executor")

from sim.executors import engine, sequential  # noqa: E402,F401

__all__ = ["EXECUTORS", "Executor"]
