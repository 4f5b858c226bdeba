"""Command-line interface: run experiments, rebuild reports, build traces, profile the host."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import typing
from pathlib import Path

from sim.errors import ConfigError, SimError

# Modules that each add subcommands with `add_cli(subparsers)`; they import heavy libraries
# (torch, diffusers) inside their command functions only, so `--help` stays fast.
TRACE_COMMANDS = ("sim.synth.tiny", "sim.synth.pool", "sim.embedding.embed", "sim.embedding.simfit",
                  "sim.workload.diffusiondb", "sim.workload.stats", "sim.synth.generator",
                  "sim.experiments.calibrate")
PROFILE_COMMANDS = ("sim.profiling.host", "sim.profiling.latency", "sim.profiling.quality")
EMBED_COMMANDS = ("sim.embedding.simeval",)


def max_jobs() -> int:
    """The most parallel runs `--jobs` accepts: 4 per core (more only thrashes and can exhaust memory)."""
    return 4 * (os.cpu_count() or 1)


def check_run_flags(args: argparse.Namespace) -> None:
    """Flag combinations that make no sense, refused before anything is read or written."""
    if not 1 <= args.jobs <= max_jobs():
        raise ConfigError(f"--jobs: expected an integer in 1..{max_jobs()} (4 x {os.cpu_count()} cores), "
                          f"got {args.jobs}")
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: choose one (keep finished runs, or replace the folder)")
    if args.out is not None and not args.out.strip():
        raise ConfigError("--out: expected an output folder, got an empty path")
    if args.out is not None:
        from sim.fileio import check_output_dir

        check_output_dir(args.out)


def _cmd_run(args: argparse.Namespace) -> int:
    from sim.experiments.runner import run_experiment
    from sim.experiments.sweep import MAX_POINTS, load_experiment, parse_overrides

    check_run_flags(args)
    experiment = load_experiment(args.experiment, parse_overrides(args.set or []),
                                 max_points=None if args.yes else MAX_POINTS)
    out = Path(args.out) if args.out else Path("results") / experiment.base.name
    results = run_experiment(experiment, out, overwrite=args.overwrite, resume=args.resume, jobs=args.jobs,
                             progress=not args.quiet, recompute_changed=args.recompute_changed,
                             executor=args.sweep_executor, cluster=args.cluster, sources=(Path(args.experiment),))
    if not args.quiet:
        for name, s in results:
            lat = s["latency_s"]
            timing = (f" latency_mean_s={lat['mean']:.2f} p99_s={lat['p99']:.2f} saturated={s['saturated']}"
                      if lat is not None else " (untimed: sequential executor)")
            print(f"{name}: hit_rate={s['hit_rate']:.3f} compute_saved={s['compute_saved']:.3f}{timing}")
        print(f"results in {out}/ (index.html, results.md, summaries.parquet, figures/, one folder per run)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sim.experiments.report import report_experiment

    report_experiment(Path(args.results))
    print(f"rebuilt tables, figures and {Path(args.results) / 'index.html'} (from files only)")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (`error: python -m sim run: argument --jobs: ...`), exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from sim.experiments.sweepexec import SWEEP_EXECUTORS

    parser = _Parser(prog="python -m sim", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an unexpected error (a bug) instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment YAML (one run or a sweep)",
                         description="Simulate an experiment and write per-run records, summaries, tables and plots.")
    run.add_argument("experiment", help="experiment YAML, e.g. experiments/default.yaml")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a dotted key (value parsed as YAML); sweep.KEY=[..] adds a sweep axis")
    run.add_argument("--out", help="output folder (default: results/<experiment name>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    run.add_argument("--resume", action="store_true", help="keep finished runs of an interrupted sweep, run the rest")
    run.add_argument("--recompute-changed", action="store_true",
                     help="with --resume: recompute kept runs whose trace or profiles changed (else refused)")
    run.add_argument("--jobs", type=int, default=1, help="runs in parallel (process pool; default 1)")
    run.add_argument("--sweep-executor", choices=SWEEP_EXECUTORS.names(),
                     help="where sweep points run (default: dask with --cluster, pool with --jobs > 1, else serial)")
    run.add_argument("--cluster", metavar="ADDRESS",
                     help="Dask: a running scheduler's address (tcp://HOST:PORT), or local:N to start N workers")
    run.add_argument("--yes", action="store_true", help="run a sweep of more than 10,000 points")
    run.add_argument("--quiet", action="store_true", help="print nothing on success")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="rebuild tables and figures of a results folder",
                            description="Rebuild summaries.parquet/csv, tables/ (Markdown, LaTeX, CSV), figures/ "
                                        "(PNG, PDF), index.html and per-run plots from the folder's files only.")
    report.add_argument("results", help="a folder written by `python -m sim run`")
    report.set_defaults(func=_cmd_report)

    trace = sub.add_parser("trace", help="trace tools", description="Build, import and inspect traces.")
    tsub = trace.add_subparsers(dest="trace_command", required=True, metavar="TRACE_COMMAND")
    for module in TRACE_COMMANDS:
        importlib.import_module(module).add_cli(tsub)

    embed = sub.add_parser("embed", help="embedder tools", description="Judge embedders against a CLIP retrieval log.")
    esub = embed.add_subparsers(dest="embed_command", required=True, metavar="EMBED_COMMAND")
    for module in EMBED_COMMANDS:
        importlib.import_module(module).add_cli(esub)

    profile = sub.add_parser("profile", help="measure profiles", description="Measure hardware and quality profiles.")
    psub = profile.add_subparsers(dest="profile_command", required=True, metavar="PROFILE_COMMAND")
    for module in PROFILE_COMMANDS:
        importlib.import_module(module).add_cli(psub)
    importlib.import_module("sim.validate.cli").add_cli(sub)
    importlib.import_module("sim.experiments.slo").add_cli(sub)
    importlib.import_module("sim.experiments.paper").add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 success, 2 bad input (one line naming the file, key or flag), 1 an unexpected
    error (a bug: one line, or the traceback with --debug), 130 interrupted."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SimError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; rerun with --resume", file=sys.stderr)
        return 130
    except Exception as exc:  # the last guard: every known input problem is a SimError above
        if args.debug:
            traceback.print_exc()
        else:
            print(f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} "
                  "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(message: str) -> str:
    return " ".join(message.split()) if "\n" in message or "\r" in message else message
