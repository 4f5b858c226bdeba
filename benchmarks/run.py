"""Simulator speed: simulated requests per second of the engine on the bundled trace (reported, never asserted).

Repeats each case and reports medians (timings on shared 2-core machines are noisy), plus peak RSS.
Compare cases only as ratios within one run. --implementation sets every case's run.implementation: auto (the
default: the compiled cache core wherever it serves the run), or reference (the Python store, the only cache
the engine had before the compiled core). Usage: python benchmarks/run.py [--repeats 5] [--implementation auto]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.experiments.runner import simulate
from sim.experiments.sweep import experiment_from_data
from sim.trace import load_trace

CASES: dict[str, dict[str, Any]] = {
    "vanilla (cache off)": {"serving": {"mode": "vanilla"}},
    "lcbfu 1500 noises": {"cache": {"policy": "lcbfu", "capacity_noises": 1500}},
    "lru 5000 noises": {"cache": {"policy": "lru", "capacity_noises": 5000}},
    "lcbfu 5000, per-user scope": {"cache": {"capacity_noises": 5000, "scope": "user"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--implementation", default="auto", choices=("auto", "reference", "compiled"),
                        help="run.implementation of every case")
    args = parser.parse_args()
    base = experiment_from_data({}).base
    traces = [("tiny", load_trace(base.trace.path))]
    synth = Path(__file__).resolve().parent.parent / "traces/synth/text-20k.parquet"
    if synth.exists():  # the text-mode synthetic trace (make trace-text)
        traces.append(("synth-text-20k", load_trace(synth)))
    rows = []
    for (name, overrides), (trace_name, trace) in itertools.product(CASES.items(), traces):
        cfg = experiment_from_data({**overrides, "run": {"implementation": args.implementation}}).base
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            simulate(cfg, trace)
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        rows.append({"case": name, "trace": trace_name, "implementation": args.implementation,
                     "requests": len(trace), "median_s": round(median, 4),
                     "requests_per_s": round(len(trace) / median), "repeats": args.repeats})
    for row in rows:
        print(json.dumps(row))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": round(peak_mib, 1)}))


if __name__ == "__main__":
    main()
