"""Read a run folder written by `python -m sim run` for validation: config, records, prompts, simulated components."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import ConfigError, InputError
from sim.hardware.profiles import StepLatency

# Record columns validation relies on (README "What a run writes"); `outcome` is optional.
NEEDED = ("request_id", "arrival_s", "k_used", "k_selected", "matched_entry", "admitted_entry", "num_steps",
          "service_s", "queue_wait_s", "start_s", "finish_s", "similarity")
# Simulator columns copied next to the measured ones, when the run has them.
SIM_COLUMNS = ("arrival_s", "queue_wait_s", "start_s", "service_s", "finish_s", "fetch_s", "similarity",
               "k_selected", "k_used", "num_steps", "matched_entry", "admitted_entry", "batch_size", "gpu")


#: what the simulator charged one request: text encoder, per step, VAE decode (from its latency profile)
SimComponents = StepLatency


@dataclass(frozen=True)
class RunFolder:
    """A simulated run, as validation needs it."""

    folder: Path
    config: Any  # RunConfig
    records: dict[str, np.ndarray]  # column -> values, in the run's row (arrival) order
    prompts: list[str]  # per row
    widths: np.ndarray  # per row, pixels (trace override or the model default)
    heights: np.ndarray
    pools: list[tuple[str, str]]  # per simulated GPU index: (gpu name, latency profile path)

    def __len__(self) -> int:
        return len(self.records["request_id"])

    def outcome(self, row: int) -> str:
        """The record's outcome when the run has one; otherwise miss/approx_hit from K (holes: hole_hit)."""
        if "outcome" in self.records:
            return str(self.records["outcome"][row])
        if int(self.records["k_used"][row]) == 0:
            return "miss"
        hole = "hole" in self.records and bool(self.records["hole"][row])
        return "hole_hit" if hole else "approx_hit"

    def sim_components(self, row: int) -> SimComponents:
        """Text encoder and decode from the profile at the record's batch size; step = the rest / (N - K), so
        step jitter and batching stay in the simulated figure."""
        gpu = int(self.records["gpu"][row]) if "gpu" in self.records else 0
        name, profile = self.pools[gpu] if 0 <= gpu < len(self.pools) else self.pools[0]
        batch = int(self.records["batch_size"][row]) if "batch_size" in self.records else 1
        table = _table(profile, self.config.model.name, name, int(self.widths[row]), int(self.heights[row]))
        lat = table.at(max(batch, 1))
        steps = int(self.records["num_steps"][row]) - int(self.records["k_used"][row])
        service = float(self.records["service_s"][row])
        step_s = (service - lat.text_encoder_s - lat.vae_decode_s) / steps if steps > 0 else lat.step_s
        return StepLatency(step_s=step_s, text_encoder_s=lat.text_encoder_s, vae_decode_s=lat.vae_decode_s)


@functools.lru_cache(maxsize=64)
def _table(profile: str, model: str, gpu: str, width: int, height: int) -> Any:
    from sim.hardware.profiles import load_latency_table

    return load_latency_table(profile, model, gpu, width, height)


def read_run(folder: Path) -> RunFolder:
    """Config, records and prompts of ``folder``; one-line errors for what validation cannot use."""
    from sim.config import run_config_from_data
    from sim.fileio import read_yaml_mapping
    from sim.trace import load_trace

    if not folder.is_dir():
        raise InputError(f"{folder}: no such run folder (a folder written by `python -m sim run`)")
    config_file, requests_file = folder / "config.yaml", folder / "requests.parquet"
    if not config_file.is_file():
        hint = " (this looks like an experiment folder: pass one of its run folders)" if (
            folder / "results.csv").is_file() else ""
        raise InputError(f"{config_file}: not found; RUN_DIR must be a run folder written by `python -m sim run`{hint}")
    if not requests_file.is_file():
        raise InputError(f"{requests_file}: not found: the run folder has no requests to sample")
    try:
        cfg = run_config_from_data(read_yaml_mapping(config_file, "run config", InputError), str(config_file))
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    try:
        table = pq.read_table(requests_file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{requests_file}: not a readable parquet file ({exc})") from None
    missing = [c for c in NEEDED if c not in table.column_names]
    if missing:
        raise InputError(f"{requests_file}: missing record column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        raise InputError(f"{requests_file}: no requests to sample")
    records = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    service = np.asarray(pa.array(table.column("service_s").to_pylist(), pa.float64()).to_numpy(
        zero_copy_only=False), dtype=float)
    if not np.isfinite(service).any():
        raise InputError(f"{requests_file}: column 'service_s' has no latencies (all null): it comes from an "
                         "executor without a clock; validate a run of the timed engine")
    records["service_s"] = service

    trace = load_trace(cfg.trace.path, cfg.trace.limit)
    row_of = {rid: i for i, rid in enumerate(trace.request_id)}
    rows = []
    for rid in records["request_id"]:
        i = row_of.get(rid)
        if i is None:
            raise InputError(f"{requests_file}: request_id {rid!r} is not in the trace {cfg.trace.path} "
                             "(config.yaml trace.path): the trace changed since the run")
        rows.append(i)
    idx = np.asarray(rows, dtype=np.int64)
    prompts = [trace.prompts[j] for j in trace.prompt_index[idx]]
    widths = np.where(trace.width[idx] > 0, trace.width[idx], cfg.model.width)
    heights = np.where(trace.height[idx] > 0, trace.height[idx], cfg.model.height)
    pools = [(p.gpu, p.latency_profile) for p in cfg.hardware.pools for _ in range(p.count)]
    return RunFolder(folder, cfg, records, prompts, widths, heights, pools)


def profile_provenances(run: RunFolder) -> dict[str, dict[str, Any]]:
    """Latency profile path -> its provenance block (what the simulated figures were measured with)."""
    from sim.profile_io import read_profile

    out = {}
    for _, path in run.pools:
        if path not in out:
            _, data = read_profile(path, "latency")
            out[path] = dict(data.get("provenance") or {})
    return out
