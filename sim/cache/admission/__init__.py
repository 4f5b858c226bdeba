"""Admission policies, one file each: whether a miss enters the cache at all (libCacheSim's admissioner)."""

from sim.cache.admission.base import Admission
from sim.registry import Registry

ADMISSIONS: Registry[type[Admission]] = Registry("admission policy")

# Importing registers; the order is irrelevant.
from sim.cache.admission import always, probabilistic, second_hit  # noqa: E402,F401

__all__ = ["ADMISSIONS", "Admission"]
