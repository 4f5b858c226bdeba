"""Offline references: policies that read the whole trace in advance. They bound or calibrate online
policies and are no policy a server could run; they run only under the sequential executor."""

from sim.cache.offline.base import Future, OfflineReference
from sim.registry import Registry

OFFLINE: Registry[type[OfflineReference]] = Registry("offline reference")

# Importing registers; the order is irrelevant.
from sim.cache.offline import belady_like, infinite, static_greedy  # noqa: E402,F401

__all__ = ["OFFLINE", "Future", "OfflineReference"]
