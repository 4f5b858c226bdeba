"""Real execution of planned requests with diffusers: one denoising loop, misses keep latents, hits resume at K."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

TIERS = ("device", "host", "files")


@dataclass(frozen=True)
class Job:
    """One request as planned: its prompt, N, the K it uses, the entry it reads (hit) or creates (miss)."""

    row: int
    request_id: str
    prompt: str
    num_steps: int
    k_used: int  # 0 = miss
    reads_entry: int  # cached entry a hit resumes from; -1 for a miss
    creates_entry: int  # entry a miss admits; -1 none
    width: int
    height: int
    seed: int  # initial noise of a miss
    # A support miss (executed only so that sampled hits find its latents) stops after the largest K they read:
    # no later steps, no decode. None: all N steps and the decode.
    stop_step: int | None = None


def latent_sha1(latent: torch.Tensor) -> str:
    """Checksum of a latent's bytes (any dtype), to show which latent a hit resumed from."""
    import torch

    raw = latent.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha1(raw.tobytes()).hexdigest()


class LatentTier:
    """Where a miss keeps its latents: on the GPU (device), in host RAM (host) or in files (one per entry and K)."""

    def __init__(self, kind: str, device: torch.device, folder: Path | None = None) -> None:
        if kind not in TIERS:
            raise ConfigError(f"--tier: expected one of {', '.join(TIERS)}, got {kind!r}")
        if kind == "files" and folder is None:
            raise ConfigError("--tier files: needs a folder for the latents (--latent-dir)")
        self.kind = kind
        self._device = device
        self._folder = folder
        self._memory: dict[tuple[int, int], Any] = {}
        if folder is not None and kind == "files":
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, entry: int, k: int) -> Path:
        assert self._folder is not None
        return self._folder / f"entry{entry}-k{k}.pt"

    def put(self, entry: int, k: int, latent: torch.Tensor) -> None:
        import torch

        if self.kind == "device":
            self._memory[entry, k] = latent
        elif self.kind == "host":
            self._memory[entry, k] = latent.to("cpu")
        else:
            torch.save(latent.to("cpu"), self.path(entry, k))

    def get(self, entry: int, k: int) -> torch.Tensor:
        import torch

        if self.kind == "files":
            file = self.path(entry, k)
            if not file.is_file():
                raise InputError(f"{file}: latent of entry {entry} at K={k} was never stored (its miss did not run)")
            return torch.load(file, map_location="cpu", weights_only=True).to(self._device)
        if (entry, k) not in self._memory:
            raise InputError(f"latent of entry {entry} at K={k} was never stored (its miss did not run)")
        return self._memory[entry, k].to(self._device)


class GpuExecutor:
    """Runs jobs one at a time on one loaded pipeline (UNet + scheduler, SD-1.x or SDXL), timing each part.

    Times: CUDA events on the GPU's stream (read after one synchronise), perf_counter on the CPU; the latent
    fetch and store are wall clock around a synchronise, since they are host work (file read, copy).
    """

    def __init__(self, loaded: Any, tier: LatentTier, ks: Sequence[int], *, scheduler: str = "default",
                 guidance: bool = True, guidance_scale: float = 7.5, scorer: Any = None) -> None:
        from sim.profiling.latency import Clock

        self._loaded = loaded
        self._tier = tier
        self._ks = tuple(sorted(ks))
        self._scheduler = scheduler
        self._guidance = guidance
        self._guidance_scale = guidance_scale
        self._scorer = scorer
        self._clock = Clock(loaded.device.type == "cuda")

    def scheduler_class(self, steps: int) -> str:
        from sim.profiling import pipelines as P

        return type(P.make_scheduler(self._loaded.pipe, self._scheduler, steps)).__name__

    def warmup(self, width: int, height: int, steps: int) -> None:
        """One untimed short generation: kernels, allocator and autotuning settle before the first timed request."""
        import torch

        from sim.profiling import pipelines as P

        pipe = self._loaded.pipe
        with torch.inference_mode():
            sched = P.make_scheduler(pipe, self._scheduler, steps)
            cond = P.encode(pipe, P.tokenize(pipe, ["warm-up"]), P.tokenize(pipe, [""]) if self._guidance else None,
                            height, width)
            latents = P.initial_latents(pipe, sched, 1, height, width, 0)
            latents, _ = P.denoise(pipe, sched, latents, cond, stop=min(steps, 3),
                                   guidance_scale=self._guidance_scale)
            P.decode(pipe, latents)
        self._clock.sync()

    def scratch_score(self, job: Job) -> float:
        """Untimed: the CLIP score of ``job``'s prompt generated from noise (all N steps), the reference for its hit."""
        import torch

        from sim.profiling import pipelines as P

        if self._scorer is None:
            raise ConfigError("scratch_score needs a CLIP scorer (--clip-model)")
        pipe = self._loaded.pipe
        with torch.inference_mode():
            sched = P.make_scheduler(pipe, self._scheduler, job.num_steps)
            cond = P.encode(pipe, P.tokenize(pipe, [job.prompt]),
                            P.tokenize(pipe, [""]) if self._guidance else None, job.height, job.width)
            latents = P.initial_latents(pipe, sched, 1, job.height, job.width, job.seed)
            latents, _ = P.denoise(pipe, sched, latents, cond, guidance_scale=self._guidance_scale)
            return float(self._scorer.score(P.decode(pipe, latents), [job.prompt])[0])

    def run(self, job: Job) -> dict[str, Any]:
        """Execute one job; returns its measured components and what ran (timesteps, latent checksums)."""
        import torch

        from sim.profiling import pipelines as P

        pipe, clock, n, k = self._loaded.pipe, self._clock, job.num_steps, job.k_used
        if not 0 <= k < n:
            raise InputError(f"request {job.request_id}: K={k} is outside the {n} steps of its schedule")
        with torch.inference_mode():
            ids = P.tokenize(pipe, [job.prompt])  # tokenisation (CPU, < 1 ms) is outside the timed region
            empty = P.tokenize(pipe, [""]) if self._guidance else None
            sched = P.make_scheduler(pipe, self._scheduler, n, start=k)  # fresh, N-step schedule, begins at K
            clock.sync()
            t0 = time.perf_counter()
            if k == 0:
                latents = P.initial_latents(pipe, sched, 1, job.height, job.width, job.seed)
                loaded_sha1 = None
            else:
                latents = self._tier.get(job.reads_entry, k).to(pipe.unet.dtype)
            clock.sync()
            fetch_s = time.perf_counter() - t0 if k > 0 else 0.0
            if k > 0:
                loaded_sha1 = latent_sha1(latents)
            executed: list[int] = []
            marks = [clock.mark()]
            cond = P.encode(pipe, ids, empty, job.height, job.width)
            marks.append(clock.mark())

            def on_step(i: int) -> None:
                executed.append(i)
                marks.append(clock.mark())

            capture = [c for c in self._ks if 0 < c < n] if k == 0 and job.creates_entry >= 0 else []
            partial = job.stop_step is not None
            latents, captured = P.denoise(pipe, sched, latents, cond, start=k, stop=job.stop_step, capture=capture,
                                          guidance_scale=self._guidance_scale, on_step=on_step)
            image = None if partial else P.decode(pipe, latents)
            if not partial:
                marks.append(clock.mark())
            clock.sync()
            times = [clock.seconds(a, b) for a, b in itertools.pairwise(marks)]
            if partial:  # the denoise loop stops before step K_stop, which it still captures; take it from the end
                if job.stop_step in capture:
                    captured[job.stop_step] = latents.clone()
                times.append(float("nan"))
            t1 = time.perf_counter()
            for c, latent in captured.items():
                self._tier.put(job.creates_entry, c, latent)
            clock.sync()
            store_s = time.perf_counter() - t1
            stored = {str(c): latent_sha1(latent) for c, latent in captured.items()}
            scored = self._scorer is not None and image is not None
            clip = self._scorer.score(image, [job.prompt])[0] if scored else None
        timesteps = [float(sched.timesteps[i]) for i in executed]
        return {
            "text_encoder_s": times[0],
            "step_s": times[1:-1],
            "vae_decode_s": None if partial else times[-1],
            "fetch_s": fetch_s,
            "store_s": store_s,
            "service_s": None if partial else clock.seconds(marks[0], marks[-1]),  # what service_s models
            "partial": partial,
            "steps_run": len(executed),
            "first_step_index": executed[0] if executed else None,
            "timesteps": timesteps,
            "loaded_sha1": loaded_sha1,
            "stored_sha1": stored,
            "clip_score": clip,
        }
