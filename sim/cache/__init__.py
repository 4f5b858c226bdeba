"""Approximate cache: store (capacity accounting, evict-until-fits), K selection, eviction policies."""

from sim.cache.kselect import KTable
from sim.cache.store import AccessResult, AdmitResult, CacheStore

__all__ = ["AccessResult", "AdmitResult", "CacheStore", "KTable"]
