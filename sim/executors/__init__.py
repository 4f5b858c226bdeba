"""How a Scenario is carried out: one executor per file (YAML name `run.executor` = registry key = file name).

Every executor writes the same per-request records (sim/scenario/records.py); what differs is time:
``engine`` moves simulated time (SimPy), ``sequential`` keeps no clock at all. ``gpu.py`` executes a
sampled plan of a simulated run for real with diffusers (the validation mode, `python -m sim validate`);
it is not in the registry because it runs a sample, not a whole Scenario.
"""

from sim.executors.base import Executor
from sim.registry import Registry

EXECUTORS: Registry[type[Executor]] = Registry("executor")

from sim.executors import engine, sequential, sequential_fast  # noqa: E402,F401

__all__ = ["EXECUTORS", "Executor"]
