"""Results as data: one table of every run's summary in a results folder, and a loader for notebooks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sim.errors import InputError
from sim.fileio import atomic_path

EXPERIMENT_FILE = "experiment.yaml"  # what marks a folder as a results folder of this tool
SUMMARIES_PARQUET = "summaries.parquet"
SUMMARIES_CSV = "summaries.csv"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``latency_s.p99``); lists become JSON text (one cell, one type)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = json.dumps(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read ({' '.join(str(exc).split())})") from None


def read_spec(folder: Path) -> dict[str, Any]:
    spec_file = folder / EXPERIMENT_FILE
    if not spec_file.is_file():
        raise InputError(f"{folder}: not a results folder (no {EXPERIMENT_FILE})")
    spec = _read_yaml(spec_file)
    if not isinstance(spec, dict):
        raise InputError(f"{spec_file}: expected a mapping")
    return spec


def finished_runs(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(run folder, flattened config) of each run that holds a summary, in the sweep's own order: the grid's
    product (first key outermost), then zip rows, then seeds — by each value's position in the spec's lists."""
    spec = read_spec(folder)
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "summary.json").is_file())
    configs = [flatten(_read_yaml(r / "config.yaml") or {}) for r in runs]
    lists = {**{str(k): list(v) for section in ("sweep", "grid", "zip") for k, v in (spec.get(section) or {}).items()
                if isinstance(v, list)}}
    seeds = spec.get("seeds")
    if isinstance(seeds, list):
        lists["seed"] = seeds
    keys = swept_keys(spec, configs)

    def rank(config: dict[str, Any]) -> tuple[tuple[int, float, str], ...]:
        out = []
        for key in keys:
            value = config.get(key)
            listed = [flatten({"v": v})["v"] for v in lists.get(key, [])]  # lists compare as their JSON text
            if value in listed:
                out.append((listed.index(value), 0.0, ""))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append((len(listed), float(value), ""))
            else:
                out.append((len(listed), 0.0, json.dumps(value)))
        return tuple(out)

    order = sorted(range(len(runs)), key=lambda i: (rank(configs[i]), runs[i].name))
    return [(runs[i], configs[i]) for i in order]


def declared_keys(spec: dict[str, Any]) -> list[str]:
    """Swept keys the spec names: grid (``grid:`` or ``sweep:``), then zip, then ``seed`` for replicas."""
    keys: list[str] = []
    for section in ("sweep", "grid", "zip"):
        keys += [str(k) for k in (spec.get(section) or {})]
    if spec.get("seeds"):
        keys.append("seed")
    return keys


def swept_keys(spec: dict[str, Any], configs: list[dict[str, Any]]) -> list[str]:
    """The declared swept keys, then any other (flattened) config key whose value differs between runs."""
    keys = declared_keys(spec)
    for key in configs[0] if configs else []:
        if key not in keys and len({json.dumps(c.get(key)) for c in configs}) > 1:
            keys.append(key)
    return keys


def summaries_table(folder: Path) -> pd.DataFrame:
    """One row per finished run: ``run``, the swept values (dotted config keys, also any key that differs
    between runs), then every summary key flattened (``latency_s.p99``). A pure function of the folder."""
    folder = Path(folder)
    spec = read_spec(folder)
    runs = finished_runs(folder)
    keys = swept_keys(spec, [c for _, c in runs])
    rows = []
    for run, config in runs:
        try:
            summary = json.loads((run / "summary.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{run / 'summary.json'}: cannot read ({exc})") from None
        row: dict[str, Any] = {"run": run.name, **{k: config.get(k) for k in keys}}
        for k, v in flatten(summary).items():
            row[f"summary.{k}" if k in row else k] = v  # a summary key never hides a swept value
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["run", *keys])


def write_summaries(folder: Path, table: pd.DataFrame) -> None:
    """summaries.parquet and summaries.csv beside the run folders."""
    table = table.copy()
    for col in table.columns:  # a column of mixed scalar types (e.g. [100, "auto"]) as text, for parquet
        kinds = {type(v) for v in table[col] if v is not None and not (isinstance(v, float) and v != v)}
        if len(kinds - {int, float}) and len(kinds) > 1:
            table[col] = [None if v is None else str(v) for v in table[col]]
    with atomic_path(folder / SUMMARIES_PARQUET) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(folder / SUMMARIES_CSV) as tmp:
        table.to_csv(tmp, index=False)


@dataclass(frozen=True)
class Results:
    """A results folder opened for analysis; per-run files are read on demand."""

    folder: Path
    summaries: pd.DataFrame
    swept: tuple[str, ...]

    @property
    def runs(self) -> list[str]:
        return self.summaries["run"].tolist()

    def _run(self, run: str) -> Path:
        if run not in self.runs:
            raise InputError(f"{self.folder}: no finished run {run!r} (runs: {', '.join(self.runs[:5])}"
                             f"{', ...' if len(self.runs) > 5 else ''})")
        return self.folder / run

    def requests(self, run: str) -> pd.DataFrame:
        """That run's per-request records (requests.parquet)."""
        return pd.read_parquet(self._run(run) / "requests.parquet")

    def config(self, run: str) -> dict[str, Any]:
        """That run's resolved configuration (config.yaml) as nested mappings."""
        return dict(_read_yaml(self._run(run) / "config.yaml"))

    def summary(self, run: str) -> dict[str, Any]:
        return dict(json.loads((self._run(run) / "summary.json").read_text()))


def load(folder: str | Path) -> Results:
    """``sim.results.load("results/small-sweep").summaries`` — summaries.parquet when present, else rebuilt."""
    folder = Path(folder)
    spec = read_spec(folder)
    table_file = folder / SUMMARIES_PARQUET
    table = pd.read_parquet(table_file) if table_file.is_file() else summaries_table(folder)
    return Results(folder, table, tuple(swept_keys(spec, [c for _, c in finished_runs(folder)])))
