"""`python -m sim profile latency`: time a diffusers pipeline's denoising steps, text encoder, VAE decode and load."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.errors import ConfigError
from sim.fileio import write_text_atomic

# Short names for the `gpu` field of entries (the full name goes in the provenance).
_GPU_FAMILIES = ("gh200", "h200", "h100", "h800", "b200", "a100", "a800", "a10g", "a10", "l40s", "l40", "l4", "t4",
                 "v100", "a6000", "4090", "3090")
PROMPT = "a watercolor painting of a lighthouse on a cliff at dusk, warm light, highly detailed"


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8); positive, strictly increasing; errors name ``flag``."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated integers such as 1,2,4,8, got {text!r}") from None
    if any(v <= 0 for v in values) or list(values) != sorted(set(values)):
        raise ConfigError(f"{flag}: expected positive, strictly increasing integers, got {text!r}")
    return values


def parse_resolution(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '768x512' -> width 768, height 512."""
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not match or int(match[1]) <= 0 or int(match[2] or match[1]) <= 0:
        raise ConfigError(f"--resolution: expected N or WxH in pixels (e.g. 512 or 768x512), got {text!r}")
    return int(match[1]), int(match[2] or match[1])


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; unknown names -> their lower-case alphanumerics."""
    low = name.lower()
    for family in _GPU_FAMILIES:
        if re.search(rf"(?<![a-z0-9]){family}(?![a-z0-9])", low):
            return family
    return re.sub(r"[^a-z0-9]+", "-", low.replace("nvidia", "")).strip("-") or "gpu"


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _attention(pipe: Any) -> str:
    import torch

    processors = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
    text = getattr(pipe.text_encoder.config, "_attn_implementation", None)
    sdpa = ""
    if torch.cuda.is_available():
        b = torch.backends.cuda
        sdpa = (f"; torch SDPA backends enabled: flash={b.flash_sdp_enabled()}, "
                f"mem_efficient={b.mem_efficient_sdp_enabled()}, math={b.math_sdp_enabled()}")
    return f"UNet {'/'.join(processors)} (AttnProcessor2_0 = torch SDPA){sdpa}; text encoder {text}"


def measured_provenance(command: str, loaded: Any, method: str, **extra: Any) -> dict[str, Any]:
    """The `measured` provenance block shared by the latency and quality profilers."""
    import torch

    from sim.profiling.host import hardware_description

    pipe = loaded.pipe
    cuda = loaded.device.type == "cuda"
    gpu = torch.cuda.get_device_name(loaded.device) if cuda else "cpu"
    hardware = hardware_description()
    if cuda:
        props = torch.cuda.get_device_properties(loaded.device)
        hardware = f"{gpu}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; host: {hardware}"
    return {
        "type": "measured",
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hardware": hardware,
        "gpu": gpu,
        "driver": _driver() if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "versions": {"python": sys.version.split()[0], "torch": str(torch.__version__),
                     **{p: _version(p) for p in ("diffusers", "transformers")}},
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "vae_dtype": str(pipe.vae.dtype).removeprefix("torch."),
        "attention": _attention(pipe),
        "weights": loaded.weights,
        "pipeline": type(pipe).__name__,
        **extra,
        "method": method,
    }


class Clock:
    """Time marks: CUDA events on the GPU's stream (read after one synchronise), perf_counter on the CPU."""

    def __init__(self, cuda: bool) -> None:
        self._cuda = cuda

    def mark(self) -> Any:
        import time

        if not self._cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, a: Any, b: Any) -> float:
        return float(a.elapsed_time(b)) / 1000 if self._cuda else float(b - a)

    def sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()


@dataclass(frozen=True)
class Settings:
    steps: int
    warmup: int
    repeats: int
    guidance: bool
    guidance_scale: float
    scheduler: str
    seed: int


def _one_pass(loaded: Any, clock: Clock, s: Settings, width: int, height: int, batch: int,
              stop: int | None) -> tuple[float, list[float], float]:
    """One request batch end to end: (text encoder s, per-step s, VAE decode s)."""
    from sim.profiling import pipelines as P

    pipe = loaded.pipe
    ids = P.tokenize(pipe, [PROMPT] * batch)  # tokenisation (CPU, < 1 ms) is outside the timed region
    empty = P.tokenize(pipe, [""] * batch) if s.guidance else None
    sched = P.make_scheduler(pipe, s.scheduler, s.steps)
    latents = P.initial_latents(pipe, sched, batch, height, width, s.seed)
    marks = [clock.mark()]
    cond = P.encode(pipe, ids, empty, height, width)
    marks.append(clock.mark())
    latents, _ = P.denoise(pipe, sched, latents, cond, stop=stop, guidance_scale=s.guidance_scale,
                           on_step=lambda _i: marks.append(clock.mark()))
    P.decode(pipe, latents)
    marks.append(clock.mark())
    clock.sync()
    times = [clock.seconds(a, b) for a, b in itertools.pairwise(marks)]
    return times[0], times[1:-1], times[-1]


def measure_entry(loaded: Any, gpu: str, s: Settings, width: int, height: int, batch: int) -> dict[str, Any]:
    """Warm up, then time ``repeats`` passes of one (resolution, batch): one latency profile entry."""
    import torch

    cuda = loaded.device.type == "cuda"
    clock = Clock(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats(loaded.device)
    with torch.inference_mode():
        for _ in range(s.warmup):  # kernels, allocator and autotuning settle within a few steps
            _one_pass(loaded, clock, s, width, height, batch, stop=min(s.steps, 5))
        passes = [_one_pass(loaded, clock, s, width, height, batch, stop=None) for _ in range(s.repeats)]
    steps = np.array([t for p in passes for t in p[1]])
    entry: dict[str, Any] = {
        "model": loaded.model, "gpu": gpu, "width": width, "height": height, "batch": batch,
        "step_s": float(steps.mean()),
        "step_p50_s": float(np.percentile(steps, 50)),
        "step_p99_s": float(np.percentile(steps, 99)),
        "text_encoder_s": float(np.mean([p[0] for p in passes])),
        "vae_decode_s": float(np.mean([p[2] for p in passes])),
        "load_s": loaded.load_s,
        "steps_per_pass": len(passes[0][1]),
        "step_samples": int(steps.size),
        "unet_batch": batch * (2 if s.guidance else 1),
    }
    entry = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in entry.items()}
    if cuda:
        entry["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(loaded.device))
    return entry


def _command(a: argparse.Namespace, out: Path) -> str:
    parts = ["python -m sim profile latency", f"--model {a.model}", f"--device {a.device}"]
    parts += [f"--resolution {r}" for r in a.resolution or []]
    parts += [f"--batch {a.batch}", f"--steps {a.steps}", f"--dtype {a.dtype}" if a.dtype else "",
              f"--warmup {a.warmup}", f"--repeats {a.repeats}", "" if a.guidance else "--no-guidance",
              f"--scheduler {a.scheduler}", f"--seed {a.seed}", f"--out {out}"]
    return " ".join(p for p in parts if p)


def profile_latency(a: argparse.Namespace, log: Callable[[str], object] = print) -> Path:
    """Run the measurement the parsed arguments ask for and write the latency profile."""
    from sim.profiling import pipelines as P

    batches = parse_int_list(a.batch, "--batch")
    resolutions = [parse_resolution(r) for r in a.resolution or []]
    for flag, value, low in (("--steps", a.steps, 1), ("--warmup", a.warmup, 0), ("--repeats", a.repeats, 1)):
        if value < low:
            raise ConfigError(f"{flag}: expected an integer >= {low}, got {value}")
    if a.scheduler not in P.SCHEDULERS:
        raise ConfigError(f"--scheduler: expected one of {', '.join(P.SCHEDULERS)}, got {a.scheduler!r}")
    P.check_model(a.model)
    import torch

    device = P.torch_device(a.device)
    dtype = P.torch_dtype(a.dtype, device)
    loaded = P.load(a.model, device, dtype)
    log(f"loaded {loaded.model} ({loaded.weights} weights) on {device} as {dtype} in {loaded.load_s:.2f} s")
    gpu = a.gpu or (gpu_slug(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu")
    native = P.native_resolution(loaded.pipe)
    resolutions = resolutions or [(native, native)]
    out = Path(a.out)
    if a.out.endswith("/") or out.is_dir():
        res = "_".join(f"{w}" if w == h else f"{w}x{h}" for w, h in resolutions)
        out = out / f"{loaded.model}-{res}-{gpu}-{loaded.weights}-measured.yaml"
    s = Settings(a.steps, a.warmup, a.repeats, a.guidance, a.guidance_scale, a.scheduler, a.seed)
    entries, skipped = [], []
    for width, height in resolutions:
        for batch in batches:
            try:
                entry = measure_entry(loaded, gpu, s, width, height, batch)
            except torch.cuda.OutOfMemoryError:
                skipped.append({"width": width, "height": height, "batch": batch, "reason": "CUDA out of memory"})
                log(f"{width}x{height} batch {batch}: out of GPU memory, skipped")
                torch.cuda.empty_cache()
                continue
            entries.append(entry)
            log(f"{width}x{height} batch {batch}: step {entry['step_s'] * 1000:.1f} ms (p99 "
                f"{entry['step_p99_s'] * 1000:.1f}), text encoder {entry['text_encoder_s'] * 1000:.1f} ms, "
                f"VAE decode {entry['vae_decode_s'] * 1000:.1f} ms")
    if not entries:
        raise ConfigError("--batch: no batch size could be measured (all ran out of GPU memory)")
    sched = type(P.make_scheduler(loaded.pipe, a.scheduler, a.steps)).__name__
    provenance = measured_provenance(
        _command(a, out), loaded,
        "per (resolution, batch): `warmup` untimed passes (text encoder, min(steps, 5) denoising steps, VAE decode), "
        "then `repeats` timed passes; each denoising step (UNet on the guidance-doubled batch, guidance mix, "
        "scheduler step) is one sample: step_s is their mean, step_p50_s/step_p99_s percentiles; text_encoder_s "
        "and vae_decode_s are means over the timed passes; tokenisation is not timed (random-weight pipelines "
        "use a byte-level stand-in CLIP tokenizer: different ids, same 77-token shapes). Timed with "
        + ("CUDA events on the default stream" if device.type == "cuda" else "time.perf_counter")
        + ". load_s: " + ("random init of the architecture on the device (no disk read)" if loaded.weights == "random"
                          else "from_pretrained of the folder plus the move to the device"),
        guidance={"enabled": a.guidance, "scale": a.guidance_scale}, scheduler=sched, steps=a.steps,
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        warmup=a.warmup, repeats=a.repeats, seed=a.seed,
        **({"skipped": skipped} if skipped else {}),
    )
    if provenance["weights"] == "random":
        arch = P.ARCHITECTURES[loaded.model]
        provenance["architecture_source"] = arch.source
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, yaml.safe_dump({"kind": "latency", "provenance": provenance, "entries": entries},
                                          sort_keys=False, width=110))
    return out


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "latency", help="time a diffusers pipeline per denoising step (CUDA events on a GPU)",
        description="Time text encoder, each denoising step, VAE decode and load of a diffusers pipeline built "
                    "from a model folder (real weights) or a named architecture (random weights: per-step compute "
                    "does not depend on weight values), and write a latency profile with provenance.",
    )
    cmd.add_argument("--model", required=True, help="sd15, sdxl, tiny, tiny-xl, or a diffusers model folder")
    cmd.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    cmd.add_argument("--resolution", action="append", metavar="N|WxH",
                     help="image size in pixels; repeat for several (default: the model's native size)")
    cmd.add_argument("--batch", default="1,2,4,8", help="comma-separated request batch sizes (default 1,2,4,8)")
    cmd.add_argument("--steps", type=int, default=50, help="denoising steps per pass (default 50)")
    cmd.add_argument("--dtype", help="fp16, bf16 or fp32 (default fp16 on cuda, fp32 on cpu)")
    cmd.add_argument("--warmup", type=int, default=2, help="untimed short passes per (resolution, batch)")
    cmd.add_argument("--repeats", type=int, default=3, help="timed passes per (resolution, batch)")
    cmd.add_argument("--guidance", action=argparse.BooleanOptionalAction, default=True,
                     help="classifier-free guidance, which doubles the UNet batch (default on, as served)")
    cmd.add_argument("--guidance-scale", type=float, default=7.5)
    cmd.add_argument("--scheduler", default="default", help="default (the pipeline's own), ddim, euler or dpm")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--gpu", help="the entries' gpu name (default: short name of the device, e.g. h100, or cpu)")
    cmd.add_argument("--out", default="profiles/latency/",
                     help="output YAML, or a folder to name it MODEL-RES-GPU-WEIGHTS-measured.yaml there")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    print(f"wrote {profile_latency(args)}")
    return 0

