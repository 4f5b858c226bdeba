"""Golden integer counts per policy x capacity on the tiny trace; `make golden` regenerates them.

Run as `python -m tests.golden_gen`; review the diff of tests/golden/tiny_counts.json before
committing. Only integers are stored (STYLE.md: golden files hold integers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim.cache.offline import OFFLINE
from sim.cache.policies import POLICIES
from sim.config import RunConfig
from sim.experiments.runner import simulate
from sim.experiments.sweep import experiment_from_data, load_experiment

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "tiny_counts.json"
EXAMPLES = sorted((ROOT / "experiments" / "examples").glob("*.yaml"))
EXAMPLE_GOLDEN = ROOT / "tests" / "golden" / "examples"
#: the paper's capacity experiment reduced to the bundled trace (experiments/paper/capacity-ci.yaml)
PAPER_CI = ROOT / "experiments" / "paper" / "capacity-ci.yaml"
PAPER_CI_GOLDEN = ROOT / "tests" / "golden" / "paper_capacity_ci.json"
CAPACITIES = (150, 1500, 5000)
COUNT_KEYS = ("hits", "misses", "hole_hits", "hole_misses", "steps_skipped", "admissions", "evicted_noises")


def cases() -> list[tuple[str, RunConfig]]:
    """Every registered policy x unit x capacity, on the whole tiny trace; offline references (which run
    only under the sequential executor) at the same capacities, one unit each."""
    out = []
    for policy in POLICIES.names():
        for unit in POLICIES.get(policy).units:
            for cap in CAPACITIES:
                data = {"name": "golden", "cache": {"policy": policy, "eviction_unit": unit, "capacity_noises": cap}}
                out.append((f"{policy}/{unit}/{cap}", experiment_from_data(data).base))
    for policy in OFFLINE.names():
        for cap in CAPACITIES:
            data = {"name": "golden", "run": {"executor": "sequential"},
                    "cache": {"policy": policy, "eviction_unit": "noise", "capacity_noises": cap}}
            out.append((f"{policy}/noise/{cap}", experiment_from_data(data).base))
    return out


def counts(cfg: RunConfig) -> dict[str, Any]:
    _, _, summary = simulate(cfg)
    return {**{k: summary[k] for k in COUNT_KEYS}, "k_histogram": summary["k_histogram"]}


def paper_ci_counts() -> dict[str, Any]:
    """Integer counts of every point of the reduced capacity experiment, by run folder name."""
    return {name: counts(cfg) for name, cfg in load_experiment(PAPER_CI).runs()}


def example_summaries(path: Path) -> dict[str, Any]:
    """Every run's summary of one experiments/examples file, by run folder name."""
    return {name: simulate(cfg)[2] for name, cfg in load_experiment(path).runs()}


def main() -> None:
    golden = {name: counts(cfg) for name, cfg in cases()}
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(golden)} cases to {GOLDEN}")
    PAPER_CI_GOLDEN.write_text(json.dumps(paper_ci_counts(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PAPER_CI_GOLDEN}")
    EXAMPLE_GOLDEN.mkdir(parents=True, exist_ok=True)
    for path in EXAMPLES:
        target = EXAMPLE_GOLDEN / f"{path.stem}.json"
        target.write_text(json.dumps(example_summaries(path), indent=1) + "\n")
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
