"""Command-line interface: run experiments, rebuild reports, build traces, profile the host."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sim.errors import SimError


def _cmd_run(args: argparse.Namespace) -> int:
    from sim.experiments.config import load_experiment, parse_overrides
    from sim.experiments.runner import run_experiment

    experiment = load_experiment(args.experiment, parse_overrides(args.set or []))
    out = Path(args.out) if args.out else Path("results") / experiment.base.name
    results = run_experiment(experiment, out, overwrite=args.overwrite, resume=args.resume, jobs=args.jobs,
                             progress=not args.quiet)
    if not args.quiet:
        for name, s in results:
            print(f"{name}: hit_rate={s['hit_rate']:.3f} compute_saved={s['compute_saved']:.3f} "
                  f"latency_mean_s={s['latency_s']['mean']:.2f} p99_s={s['latency_s']['p99']:.2f} "
                  f"saturated={s['saturated']}")
        print(f"results in {out}/ (results.md, compare.png, one folder per run)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sim.experiments.report import report_experiment

    report_experiment(Path(args.results))
    print(f"rebuilt tables and figures in {args.results}")
    return 0


def _cmd_trace_tiny(args: argparse.Namespace) -> int:
    from sim.workload.tiny import build_tiny_trace

    stats = build_tiny_trace(Path(args.calibration), Path(args.out), num_requests=args.requests, seed=args.seed)
    print(json.dumps(stats, indent=2))
    return 0


def _cmd_profile_host(args: argparse.Namespace) -> int:
    from sim.profiling.host import profile_host

    for path in profile_host(Path(args.out_dir), repeats=args.repeats):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment YAML (one run or a sweep)",
                         description="Simulate an experiment and write per-run records, summaries, tables and plots.")
    run.add_argument("experiment", help="experiment YAML, e.g. experiments/default.yaml")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a dotted key (value parsed as YAML); sweep.KEY=[..] adds a sweep axis")
    run.add_argument("--out", help="output folder (default: results/<experiment name>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    run.add_argument("--resume", action="store_true", help="keep finished runs of an interrupted sweep, run the rest")
    run.add_argument("--jobs", type=int, default=1, help="runs in parallel (process pool; default 1)")
    run.add_argument("--quiet", action="store_true", help="print nothing on success")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="rebuild tables and figures of a results folder",
                            description="Rebuild results.md/csv, compare.png and per-run plots from files only.")
    report.add_argument("results", help="a folder written by `python -m sim run`")
    report.set_defaults(func=_cmd_report)

    trace = sub.add_parser("trace", help="trace tools", description="Build and inspect traces.")
    tsub = trace.add_subparsers(dest="trace_command", required=True, metavar="TRACE_COMMAND")
    tiny = tsub.add_parser(
        "build-tiny", help="rebuild the committed tiny trace from the calibration log",
        description="Build traces/tiny deterministically from real prompts (needs the minilm embedder).",
    )
    tiny.add_argument("--calibration", default="../shared/data/clip_pairs_calibration.csv")
    tiny.add_argument("--out", default="traces/tiny/trace.parquet")
    tiny.add_argument("--requests", type=int, default=4000)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_trace_tiny)

    profile = sub.add_parser("profile", help="measure profiles", description="Measure hardware profiles.")
    psub = profile.add_subparsers(dest="profile_command", required=True, metavar="PROFILE_COMMAND")
    host = psub.add_parser("host", help="measure this host's prompt embedding, vector search and storage tiers",
                           description="Write profiles/frontend and profiles/storage files measured on this machine.")
    host.add_argument("--out-dir", default="profiles")
    host.add_argument("--repeats", type=int, default=200)
    host.set_defaults(func=_cmd_profile_host)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; rerun with --resume", file=sys.stderr)
        return 130
