"""Trace-loading memory (issue 9 item 5): peak and steady RSS of load_trace, and peak RSS of a whole `sim run`.

Each case runs in a fresh child process. `load`: the child imports the trace reader, notes its RSS, calls
load_trace(path, limit) and reports the load's peak (VmHWM), the RSS after it (VmRSS), the seconds and the
bytes of the Trace's arrays. `run`: `python -m sim run` of a one-point experiment on the same trace
(`run.executor: sequential` with `run.implementation: compiled`, the compiled replay, formerly the
`sequential_fast` executor; or --executor and --implementation; `cache.retrieval: exact_key` so that no
candidate lists are built, LCBFU at --noises), its peak RSS read from os.wait4's rusage (the child's own
ru_maxrss, the whole command: validation, load, replay, records, requests.parquet and plots). --limits runs
each case once per `trace.limit` (`none` = the whole trace). The trace is made by `python -m sim trace synth
--mode vectors` (see benchmarks/README.md, "Trace-loading memory"). Prints a table and writes --json.
Reported, never asserted.
Usage: python benchmarks/memory.py --trace /tmp/mem/t2m.parquet [--limits none,200000] [--cases load,run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GIB = 2**30


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _arrays_bytes(trace: Any) -> dict[str, int]:
    """Bytes held by each column of a Trace (object arrays: pointers plus their distinct str objects)."""
    import numpy as np

    out = {}
    for name, value in vars(trace).items():
        if isinstance(value, np.ndarray):
            size = value.nbytes
            if value.dtype == object:
                size += sum(sys.getsizeof(v) for v in {id(v): v for v in value.tolist()}.values())
            out[name] = size
        elif hasattr(value, "nbytes"):
            out[name] = int(value.nbytes)
        elif isinstance(value, list):
            out[name] = sys.getsizeof(value) + sum(sys.getsizeof(v) for v in value)
    return out


def child_load(path: str, limit: int | None) -> dict[str, Any]:
    from sim.trace import load_trace

    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    trace = load_trace(path, limit)
    seconds = time.perf_counter() - t0
    return {"requests": len(trace), "prompts": len(trace.prompts), "dim": int(trace.vectors.shape[1]),
            "load_s": seconds, "rss_before_gib": before * 1024 / GIB,
            "load_peak_gib": _status_kib("VmHWM") * 1024 / GIB, "after_load_gib": _status_kib("VmRSS") * 1024 / GIB,
            "arrays_gib": {k: v / GIB for k, v in _arrays_bytes(trace).items()}}


def run_case(path: str, limit: int | None, noises: int, executor: str, implementation: str) -> dict[str, Any]:
    """`python -m sim run` of one point in a child; its peak RSS from wait4."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        exp: dict[str, Any] = {"name": "memory", "trace": {"path": path, "limit": limit},
                               "run": {"executor": executor, "implementation": implementation},
                               "cache": {"retrieval": "exact_key", "policy": "lcbfu", "capacity_noises": noises}}
        if executor == "engine":  # scale.py's fleet: enough A10G that the synthetic day's peak does not saturate
            exp["hardware"] = {"pools": [{"gpu": "a10g", "count": 24}]}
        cfg = Path(tmp) / "memory.yaml"
        cfg.write_text(yaml.safe_dump(exp))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "sim", "run", str(cfg), "--out", str(Path(tmp) / "out"),
                                 "--quiet"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read() if proc.stderr else ""
        rc = os.waitstatus_to_exitcode(status)
        out: dict[str, Any] = {"run_s": wall, "run_peak_gib": usage.ru_maxrss * 1024 / GIB, "rc": rc}
        if rc != 0:
            out["error"] = err.strip()[-500:]
        else:
            summary = json.loads(next((Path(tmp) / "out").rglob("summary.json")).read_text())
            out["hit_rate"] = summary.get("hit_rate")
            out["compute_saved"] = summary.get("compute_saved")
        return out


def spawn_load(path: str, limit: int | None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps([path, limit])], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"rc {proc.returncode}"])[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", help="a canonical trace parquet (embeddings beside it)")
    ap.add_argument("--limits", default="none,200000", help="comma-separated trace.limit values; none = all")
    ap.add_argument("--cases", default="load,run", help="comma-separated subset of load,run")
    ap.add_argument("--noises", type=int, default=1500, help="cache.capacity_noises of the run case")
    ap.add_argument("--executor", default="sequential", choices=("sequential", "engine"),
                    help="run.executor of the run case (engine: 24 A10G)")
    ap.add_argument("--implementation", default="compiled", choices=("auto", "reference", "compiled"),
                    help="run.implementation of the run case (compiled: the compiled cache core; formerly "
                         "--executor sequential_fast)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "memory.json"), help="report file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, limit = json.loads(args.child)
        print(json.dumps(child_load(path, limit)))
        return
    if not args.trace:
        ap.error("--trace is required")
    path = str(Path(args.trace).resolve())
    cases = args.cases.split(",")
    rows = []
    for item in args.limits.split(","):
        limit = None if item == "none" else int(item)
        row: dict[str, Any] = {"limit": limit}
        if "load" in cases:
            row.update(spawn_load(path, limit))
        if "run" in cases:
            row.update(run_case(path, limit, args.noises, args.executor, args.implementation))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'limit':>9s} {'requests':>9s} {'prompts':>9s} {'load s':>7s} {'load peak':>10s} {'after load':>10s} "
          f"{'run s':>7s} {'run peak':>9s}  (GiB)")

    def g(r: dict[str, Any], key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "-"

    for r in rows:
        print(f"{r['limit']!s:>9s} {g(r, 'requests', ',d'):>9s} {g(r, 'prompts', ',d'):>9s} "
              f"{g(r, 'load_s', '.1f'):>7s} {g(r, 'load_peak_gib', '.2f'):>10s} {g(r, 'after_load_gib', '.2f'):>10s} "
              f"{g(r, 'run_s', '.1f'):>7s} {g(r, 'run_peak_gib', '.2f'):>9s}"
              + (f"  ERROR {r['error']}" if "error" in r else ""))
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": os.getloadavg(),
              "command": " ".join(sys.argv), "trace": path, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
