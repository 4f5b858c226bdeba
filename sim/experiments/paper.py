"""The paper's experiments, one command each: simulate, then tabulate beside NIRVANA's published values.

`python -m sim paper {capacity,headline,quality,load,all} [--trace PATH]` runs experiments/paper/NAME.yaml
(on the default synthetic trace, or any canonical trace, e.g. a DiffusionDB import) and writes, beside the
usual results, `paper.md` (simulated | published | difference) and `paper.png`. Published values come
from profiles/published/nirvana-paper-results.yaml (with its provenance); nothing is fitted to them here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sim.errors import ConfigError, InputError
from sim.figsave import save_figure
from sim.fileio import read_yaml_mapping, write_text_atomic
from sim.paths import resolve

PAPER_DIR = "experiments/paper"
#: the paper's published values (with provenance); compared with, never simulated or fitted
PUBLISHED = "profiles/published/nirvana-paper-results.yaml"
NAMES = ("capacity", "headline", "quality", "load")
#: serving mode -> the paper's row for it
PAPER_SYSTEM = {"vanilla": "vanilla", "nirvana": "nirvana", "final_image": "gpt_cache", "small_model": "small_model"}


def published() -> dict[str, Any]:
    return read_yaml_mapping(resolve(PUBLISHED), "published results", InputError)


def _summaries(out: Path) -> list[dict[str, Any]]:
    from sim.results import load

    return [{str(k): v for k, v in row.items()} for row in load(out).summaries.to_dict("records")]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _diff(sim: float | None, paper: float | None) -> str:
    return "n/a" if sim is None or paper is None else f"{sim - paper:+.3f}"


def capacity(out: Path, pub: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.experiments.figures import colour

    rows = _summaries(out)
    table = pub["capacity_compute_saved"]
    lines = ["# (a) compute saved by cache size and policy", "",
             "Simulated: sequential replay on this trace. Published: NIRVANA (NSDI 2024), production traces.", "",
             "| noises | policy | simulated | published | difference | hit rate |", "|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in ("fifo", "lru", "lfu", "lcbfu"):
        mine = sorted((r for r in rows if r["cache.policy"] == policy), key=lambda r: r["cache.capacity_noises"])
        xs = [r["cache.capacity_noises"] for r in mine]
        ax.plot(xs, [r["compute_saved"] for r in mine], marker="o", color=colour("policy", policy),
                label=f"{policy} (simulated)")
        paper = [(int(c), v[policy]) for c, v in table.items() if policy in v]
        if paper:
            ax.plot([c for c, _ in paper], [v for _, v in paper], marker="x", linestyle="--",
                    color=colour("policy", policy), label=f"{policy} (published)")
        for r in mine:
            p = table.get(r["cache.capacity_noises"], {}).get(policy)
            lines.append(f"| {r['cache.capacity_noises']:,} | {policy} | {r['compute_saved']:.3f} | "
                         f"{'—' if p is None else f'{p:.2f}'} | {_diff(r['compute_saved'], p)} | {r['hit_rate']:.3f} |")
    ax.set_xscale("log")
    ax.set_xlabel("cache capacity (noises)")
    ax.set_ylabel("fraction of denoising compute saved")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, out / "paper.png")
    return "\n".join(lines) + "\n"


def headline(out: Path, pub: dict[str, Any]) -> str:
    by = {r["serving.mode"]: r for r in _summaries(out)}
    van, nir = by["vanilla"], by["nirvana"]
    lat = 1 - nir["latency_s.mean"] / van["latency_s.mean"]
    cost_used = 1 - (nir["cost.on_demand_consumed.usd_per_1000_images"]
                     / van["cost.on_demand_consumed.usd_per_1000_images"])
    cost_fleet = 1 - nir["cost.fleet.usd_per_1000_images"] / van["cost.fleet.usd_per_1000_images"]
    h = pub["headline"]
    lines = ["# (b) NIRVANA vs vanilla", "", "| figure | simulated | published | difference |", "|---|---|---|---|",
             f"| GPU compute saved | {_pct(nir['compute_saved'])} | {_pct(h['compute_saved'])} | "
             f"{_diff(nir['compute_saved'], h['compute_saved'])} |",
             f"| mean end-to-end latency reduction | {_pct(lat)} | {_pct(h['latency_reduction'])} | "
             f"{_diff(lat, h['latency_reduction'])} |",
             f"| cost reduction, GPU seconds used (on demand) | {_pct(cost_used)} | {_pct(h['cost_reduction'])} | "
             f"{_diff(cost_used, h['cost_reduction'])} |",
             f"| cost reduction, fixed fleet for the span | {_pct(cost_fleet)} | — | — |", "",
             "A fixed fleet costs the same whatever the cache saves; the paper's cost figure is of the consumed kind."]
    return "\n".join(lines) + "\n"


def quality(out: Path, pub: dict[str, Any]) -> str:
    rows = _summaries(out)
    q = pub["quality"]
    lines = ["# (c) serving modes: simulated cache figures and relative quality; the paper's scores (published)", "",
             "| mode | hit rate | compute saved | relative quality (simulated, from profiles) | paper system | "
             "FID (DiffusionDB, published) | CLIP score (published) | PickScore (published) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        system = PAPER_SYSTEM.get(r["serving.mode"])
        row = (q.get(system) or {}).get("diffusiondb", {})
        lines.append(f"| {r['serving.mode']} | {r['hit_rate']:.3f} | {r['compute_saved']:.3f} | "
                     f"{r['quality_mean']:.4f} | {system} | {row.get('fid', '—')} | {row.get('clip', '—')} | "
                     f"{row.get('pickscore', '—')} |")
    lines += ["", "Relative quality: 1.0 = generated from scratch. NIRVANA's per-K figures are Adobe's published "
              "relative quality; final_image and small_model use the paper's CLIP score ratio to vanilla "
              "(25.84 / 30.28 and 25.64 / 30.28), attributed to the requests those modes change."]
    return "\n".join(lines) + "\n"


def load_table(out: Path, pub: dict[str, Any], slo_s: float) -> str:
    from sim.experiments.slo import search
    from sim.experiments.sweep import load_experiment

    rows = sorted(_summaries(out), key=lambda r: (r["serving.mode"], -r["trace.time_scale"]))
    lines = ["# (d) latency against load, and GPUs needed under an SLO", "",
             "| mode | load (1 / time_scale) | offered load per GPU | latency mean (s) | p99 (s) | saturated |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['serving.mode']} | {1 / r['trace.time_scale']:.2f} | {r['offered_load']:.3f} | "
                     f"{r['latency_s.mean']:.1f} | {r['latency_s.p99']:.1f} | {r['saturated']} |")
    spec = json.loads(json.dumps(read_yaml_mapping(out / "experiment.yaml", "experiment", InputError)))
    exp = load_experiment(resolve(f"{PAPER_DIR}/load.yaml"), [("trace.path", spec["base"]["trace"]["path"]),
                                                              ("sweep.trace.time_scale", [1.0])])
    found = search(exp.runs(), slo_s, pool=0, max_gpus=256, tolerance=0.05)
    lines += ["", f"SLO p99 <= {slo_s:g} s at the trace's own rate:", "",
              "| mode | GPUs needed | fleet USD / 1,000 images | max load scale |", "|---|---|---|---|"]
    for f in found:
        fleet = ((f["slo_fleet"] or {}).get("fleet") or {}).get("usd_per_1000_images")
        lines.append(f"| {f['mode']} | {f['gpus_needed']} | {'n/a' if fleet is None else f'{fleet:.3f}'} | "
                     f"{f['max_load_scale']} |")
    return "\n".join(lines) + "\n"


def run_paper(name: str, *, trace: str | None, out: Path | None, jobs: int, overwrite: bool, slo_s: float,
              overrides: list[tuple[str, Any]] = ()) -> Path:  # type: ignore[assignment]
    from sim.experiments.runner import run_experiment
    from sim.experiments.sweep import load_experiment

    overrides = ([("trace.path", trace)] if trace else []) + list(overrides)
    exp = load_experiment(resolve(f"{PAPER_DIR}/{name}.yaml"), overrides)
    out = out or Path("results") / exp.base.name
    run_experiment(exp, out, overwrite=overwrite, jobs=jobs, progress=True)
    pub = published()
    text = {"capacity": lambda: capacity(out, pub), "headline": lambda: headline(out, pub),
            "quality": lambda: quality(out, pub), "load": lambda: load_table(out, pub, slo_s)}[name]()
    write_text_atomic(out / "paper.md", text)
    print(text, end="")
    return out


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser("paper", help="the paper's experiments beside its published values",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    cmd.add_argument("name", choices=(*NAMES, "all"))
    cmd.add_argument("--trace", help="a canonical trace to run on instead of the default synthetic one")
    cmd.add_argument("--out", help="results folder (one experiment; default results/paper-NAME)")
    cmd.add_argument("--jobs", type=int, default=1)
    cmd.add_argument("--overwrite", action="store_true")
    cmd.add_argument("--p99", type=float, default=60.0, help="SLO of experiment (d), seconds (default 60)")
    cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value of the experiment (as for `run`), e.g. cache.candidates.method=ivf")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if args.out is not None and args.name == "all":
        raise ConfigError("--out: give one experiment name with --out (all writes results/paper-NAME each)")
    if not args.p99 > 0:
        raise ConfigError(f"--p99: expected seconds > 0, got {args.p99}")
    from sim.experiments.sweep import parse_overrides

    overrides = parse_overrides(args.set)
    for name in NAMES if args.name == "all" else (args.name,):
        run_paper(name, trace=args.trace, out=Path(args.out) if args.out else None, jobs=args.jobs,
                  overwrite=args.overwrite, slo_s=args.p99, overrides=overrides)
    return 0
