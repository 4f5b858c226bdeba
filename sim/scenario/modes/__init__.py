"""Serving modes, one file each; the registry key is the file name and the YAML name (`serving.mode`)."""

from sim.registry import Registry
from sim.scenario.modes.base import Admitted, Decision, ServingMode

MODES: Registry[type[ServingMode]] = Registry("serving mode")

# Importing registers; the order is irrelevant.
from sim.scenario.modes import final_image, nirvana, small_model, vanilla  # noqa: E402,F401

__all__ = ["MODES", "Admitted", "Decision", "ServingMode"]
