"""Command-line interface: run experiments, rebuild reports, build traces, profile the host."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sim.errors import SimError

# Modules that each add subcommands with `add_cli(subparsers)`; they import heavy libraries
# (torch, diffusers) inside their command functions only, so `--help` stays fast.
TRACE_COMMANDS = ("sim.workload.tiny", "sim.workload.embed", "sim.workload.simmap",
                  "sim.workload.diffusiondb", "sim.workload.stats", "sim.workload.synth")
PROFILE_COMMANDS = ("sim.profiling.host", "sim.profiling.latency", "sim.profiling.quality")


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

    trace = sub.add_parser("trace", help="trace tools", description="Build, import and inspect traces.")
    tsub = trace.add_subparsers(dest="trace_command", required=True, metavar="TRACE_COMMAND")
    for module in TRACE_COMMANDS:
        importlib.import_module(module).add_cli(tsub)

    profile = sub.add_parser("profile", help="measure profiles", description="Measure hardware and quality profiles.")
    psub = profile.add_subparsers(dest="profile_command", required=True, metavar="PROFILE_COMMAND")
    for module in PROFILE_COMMANDS:
        importlib.import_module(module).add_cli(psub)
    importlib.import_module("sim.validate.cli").add_cli(sub)
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
