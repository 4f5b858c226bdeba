"""Per-request inputs of a scenario, aligned by request index (arrivals non-decreasing)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Requests:
    """What each request asks for; built once per run from the trace and the run config (sim/build.py)."""

    arrival_s: np.ndarray  # float64
    vectors: np.ndarray  # float32 [num_prompts, dim], unit norm
    prompt_index: np.ndarray  # int64 into vectors; equal index = identical prompt text
    partition: np.ndarray  # int64: retrieval scope (compatibility key x tenant)
    noise_bytes: np.ndarray  # int64: size of one cached latent for this request's shape
    num_steps: np.ndarray  # int64: N
    latency_class: np.ndarray  # int64: (main model, shape) class, indexes each GPU's latency tables
    step_factor: np.ndarray  # float64: multiplicative jitter on the step time (1.0 = none)
    width: np.ndarray | None = None  # int64 pixels (None: requests made by hand, whose shape nothing reads)
    height: np.ndarray | None = None
    #: int64: the search scope whose cached prompts the front end's search scans (compatibility key x tenant).
    #: ``partition`` may refine it (by a topic the trace guarantees no similar prompt crosses): retrieval then
    #: looks only there, with the same answers, while the search latency still counts the scope. None: the same
    scope: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)
