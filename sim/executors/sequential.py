"""Sequential replay: requests in arrival order, no GPUs and no clock; a miss is admitted before the
next request is looked up (the admission timing of CacheAttack's and MoDM's simulators)."""

from __future__ import annotations

import numpy as np

from sim.cache.spec import LiveCache
from sim.executors import EXECUTORS
from sim.executors.base import Executor, record_admission, record_decision
from sim.scenario import Scenario
from sim.scenario.modes.nirvana import Nirvana
from sim.scenario.records import Records, new_records


@EXECUTORS.register("sequential")
class Sequential(Executor):
    """Every cache figure (hits per K, compute saved, evictions) comes out; time columns stay NaN.

    The policy's ``now`` is the request's arrival time, for lookups and admissions alike. ``service_s``
    is the GPU time the request would take at batch size 1 on the first pool's GPU type (no GPU is
    assigned), so that GPU seconds and their cost can still be compared across modes and caches.
    With the compiled cache and NIRVANA's mode the whole replay is one compiled loop (``replay``).
    """

    name = "sequential"
    timed = False
    admission = "before the next lookup"

    def supports(self, scenario: Scenario) -> str | None:
        if scenario.batch_window_s > 0:
            return "hardware.batch_window_s: expected 0 with run.executor sequential (it keeps no clock)"
        if len(scenario.requests) and bool(np.any(scenario.requests.step_factor != 1.0)):
            return "hardware.step_jitter_cv: expected 0 with run.executor sequential (it keeps no clock)"
        return None

    def _execute(self, scenario: Scenario, cache: LiveCache | None) -> Records:
        req, mode, service = scenario.requests, scenario.mode, scenario.service
        rec = new_records(len(req))
        rec["arrival_s"][:] = req.arrival_s
        rec["num_steps"][:] = req.num_steps
        replay = getattr(cache, "replay", None)
        if replay is not None and type(mode) is Nirvana:
            replay(req.arrival_s, rec)
            mode.decisions(rec)
            _batch1_service(scenario, rec)
            return rec
        busy = rec["service_s"]
        for i, now in enumerate(req.arrival_s.tolist()):
            d = mode.decide(cache, i, now)
            record_decision(rec, i, d)
            busy[i] = service.expected_s(0, d.latency_class, d.gpu_steps) if d.gpu_steps else 0.0
            if d.admit_bytes:
                record_admission(rec, i, now, mode.admit(cache, i, now))
        return rec


def _batch1_service(scenario: Scenario, rec: Records) -> None:
    """service_s of every request with GPU steps: its batch-1 time on the first pool's GPU type."""
    req, service = scenario.requests, scenario.service
    busy = rec["service_s"]
    busy[:] = 0.0
    for cls in np.unique(req.latency_class).tolist():
        lat = service.latency(0, cls, 1)
        sel = (req.latency_class == cls) & (rec["gpu_steps"] > 0)
        # service_s(lat, steps): text encoder + steps x step time + VAE decode, in that order
        busy[sel] = lat.text_encoder_s + rec["gpu_steps"][sel] * lat.step_s + lat.vae_decode_s
