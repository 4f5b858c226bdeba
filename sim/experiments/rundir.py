"""One run's folder: written under a temporary name, plots included, then renamed — and checked on resume.

A run folder is either absent or complete (its documented files, which follow from what the run is, all
present and parseable); `--resume` trusts a kept run only if its files parse, its config is the same and
the inputs it recorded (content hashes of the trace, embeddings and every profile) are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sim.config import RunConfig, dump_run_config
from sim.errors import InputError
from sim.fileio import atomic_path
from sim.paths import resolve
from sim.scenario.records import OUTCOMES, RECORD_COLUMNS, Records
from sim.trace import embeddings_path

#: files every finished run folder holds (README "What a run writes"), besides the plots of run_plots()
FILES = ("requests.parquet", "summary.json", "config.yaml", "summary.md", "timings.json", "inputs.json")
#: every plot a run can have, in the order they are drawn
PLOTS = ("latency_cdf.png", "k_histogram.png", "hit_rate_over_time.png")
#: the documented files of a timed run (one that has every plot)
DOCUMENTED = FILES + tuple(f"plots/{name}" for name in PLOTS)


def run_plots(summary: dict[str, Any]) -> tuple[str, ...]:
    """The plots a run's folder holds, from its summary alone: a latency CDF only when the run had a clock
    (an untimed, sequential run's latencies are null), the K histogram when the mode caches, the hit rate
    over time when there are requests. The report draws exactly these, and --resume expects exactly these."""
    wanted = {"latency_cdf.png": summary.get("latency_s") is not None,
              "k_histogram.png": "k_histogram" in summary,
              "hit_rate_over_time.png": bool(summary.get("requests"))}
    return tuple(name for name in PLOTS if wanted[name])


def run_files(summary: dict[str, Any]) -> tuple[str, ...]:
    """Every file a finished run with this summary holds."""
    return FILES + tuple(f"plots/{name}" for name in run_plots(summary))


@dataclass
class RunResult:
    """What a worker returns for one run; the driver writes it (workers never touch the results folder)."""

    summary: dict[str, Any]
    records: Records
    request_id: Sequence[str]  # the trace's Strings column (Arrow, not one str per row), or a list
    user: list[str | None]
    wall_s: float


def input_files(cfg: RunConfig, similarity_map_file: str | None) -> list[Path]:
    """Every file a run's result depends on, besides its config."""
    trace = resolve(cfg.trace.path)
    paths = [trace, embeddings_path(trace), resolve(cfg.storage.profile), resolve(cfg.frontend.profile),
             resolve(cfg.quality.profile)]
    paths += [resolve(p.latency_profile) for p in cfg.hardware.pools]
    if cfg.hardware.cost_profile is not None:
        paths.append(resolve(cfg.hardware.cost_profile))
    mode = cfg.serving.mode
    if mode == "final_image":
        paths.append(resolve(cfg.serving.final_image.quality_profile))
    if mode == "small_model":
        paths += [resolve(cfg.serving.small_model.latency_profile), resolve(cfg.serving.small_model.quality_profile)]
    if similarity_map_file is not None:
        paths.append(Path(similarity_map_file))
    return list(dict.fromkeys(paths))


class InputHashes:
    """SHA-256 of input files, each read once per sweep."""

    def __init__(self) -> None:
        self._known: dict[Path, str] = {}

    def of(self, files: Iterable[Path]) -> dict[str, str]:
        out = {}
        for file in files:
            if file not in self._known:
                digest = hashlib.sha256()
                try:
                    with file.open("rb") as fh:
                        while block := fh.read(1 << 20):
                            digest.update(block)
                except OSError as exc:
                    raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from None
                self._known[file] = digest.hexdigest()
            out[str(file)] = self._known[file]
        return out


def strict_json(data: Any) -> str:
    """JSON with no NaN/Infinity tokens (metrics write undefined values as null)."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def _requests_table(result: RunResult, mode: str) -> pa.Table:
    cols: dict[str, pa.Array] = {"request_id": pa.array(result.request_id, pa.string()),
                                 "user": pa.array(result.user, pa.string())}
    for name in RECORD_COLUMNS:
        if name == "outcome":  # stored by name, dictionary-encoded
            cols[name] = pa.DictionaryArray.from_arrays(pa.array(result.records[name], pa.int8()),
                                                        pa.array(OUTCOMES, pa.string()))
        else:
            cols[name] = pa.array(result.records[name])
    n = len(result.request_id)
    cols["mode"] = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int8()), pa.array([mode], pa.string()))
    return pa.table(cols)


def publish_run(folder: Path, cfg: RunConfig, result: RunResult, inputs: dict[str, str]) -> None:
    """Write every documented file into a temporary folder and rename it to ``folder`` when complete: a run
    folder appears whole or not at all (a torn one an interrupted sweep left is replaced)."""
    from sim.experiments.report import report_run

    with atomic_path(folder, folder=True) as tmp:
        tmp.mkdir(parents=True)
        pq.write_table(_requests_table(result, result.summary["mode"]), tmp / "requests.parquet")
        (tmp / "summary.json").write_text(strict_json(result.summary))
        (tmp / "config.yaml").write_text(dump_run_config(cfg))
        (tmp / "inputs.json").write_text(strict_json({"sha256": inputs}))
        n = len(result.request_id)
        timings = {"wall_s": round(result.wall_s, 3), "requests": n,
                   "simulated_requests_per_s": round(n / result.wall_s, 1) if result.wall_s > 0 else None}
        (tmp / "timings.json").write_text(strict_json(timings))
        report_run(tmp)  # plots before publishing: a published run is never missing them


def kept_run_state(folder: Path, cfg: RunConfig, inputs: dict[str, str]) -> str:
    """'ok' (keep it), 'missing' or 'torn' (recompute it), or 'inputs changed: FILE' (the caller decides)."""
    if not folder.is_dir():
        return "missing"
    try:
        summary = json.loads((folder / "summary.json").read_text())
        if not isinstance(summary, dict) or any(not (folder / name).is_file() for name in run_files(summary)):
            return "torn"
        json.loads((folder / "timings.json").read_text())
        recorded = json.loads((folder / "inputs.json").read_text())["sha256"]
        pq.read_metadata(folder / "requests.parquet")
        if (folder / "config.yaml").read_text() != dump_run_config(cfg):
            return "torn"
        yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException, yaml.YAMLError):
        return "torn"
    for file, digest in inputs.items():
        if recorded.get(file) != digest:
            return f"inputs changed: {file}"
    if set(recorded) != set(inputs):
        changed = sorted(set(recorded) ^ set(inputs))[0]
        return f"inputs changed: {changed}"
    return "ok"
