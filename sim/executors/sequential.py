"""Sequential replay: requests in arrival order, no GPUs and no clock; a miss is admitted before the
next request is looked up (the admission timing of CacheAttack's and MoDM's simulators)."""

from __future__ import annotations

from sim.executors import EXECUTORS
from sim.executors.base import Executor, record_admission, record_decision
from sim.scenario import Scenario
from sim.scenario.records import Records, new_records


@EXECUTORS.register("sequential")
class Sequential(Executor):
    """Every cache figure (hits per K, compute saved, evictions) comes out; time columns stay NaN.

    The policy's ``now`` is the request's arrival time, for lookups and admissions alike. ``service_s``
    is the GPU time the request would take at batch size 1 on the first pool's GPU type (no GPU is
    assigned), so that GPU seconds and their cost can still be compared across modes and caches.
    """

    name = "sequential"
    timed = False
    admission = "before the next lookup"

    def run(self, scenario: Scenario) -> Records:
        req, mode, service = scenario.requests, scenario.mode, scenario.service
        rec = new_records(len(req))
        rec["arrival_s"][:] = req.arrival_s
        rec["num_steps"][:] = req.num_steps
        busy = rec["service_s"]
        for i, now in enumerate(req.arrival_s.tolist()):
            d = mode.decide(i, now)
            record_decision(rec, i, d)
            busy[i] = service.expected_s(0, d.latency_class, d.gpu_steps) if d.gpu_steps else 0.0
            if d.admit_bytes:
                record_admission(rec, i, now, mode.admit(i, now))
        return rec
