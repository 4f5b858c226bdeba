"""Eviction policies, one file each; the registry key is the file name and the YAML name."""

from sim.cache.policies.base import WHOLE_PROMPT, Item, Policy, Unit
from sim.registry import Registry

POLICIES: Registry[type[Policy]] = Registry("eviction policy")

# Importing registers; the order is irrelevant.
from sim.cache.policies import fifo, lcbfu, lfu, lru  # noqa: E402,F401

__all__ = ["POLICIES", "WHOLE_PROMPT", "Item", "Policy", "Unit"]
