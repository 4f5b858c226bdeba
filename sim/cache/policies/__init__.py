"""Eviction policies, one file each; the registry key is the file name and the YAML name."""

from sim.cache.policies.base import NO_REQUEST, WHOLE_PROMPT, Item, Policy, RequestContext, Unit
from sim.registry import Registry

POLICIES: Registry[type[Policy]] = Registry("eviction policy")

# Importing registers; the order is irrelevant.
from sim.cache.policies import fifo, lcbfu, lcbfu_da, lcbfu_window, lfu, lru, qlru_dc, rnd_lru, sim_lru  # noqa: E402,F401

__all__ = ["NO_REQUEST", "POLICIES", "WHOLE_PROMPT", "Item", "Policy", "RequestContext", "Unit"]
