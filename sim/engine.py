"""SimPy serving model: the only code that advances simulated time.

Request lifecycle (DESIGN.md §4): arrival -> embed prompt -> nearest cached prompt and K ->
fetch the cached latent from its storage tier (hit) -> FCFS queue for one of G GPUs ->
text encoder + (N - K) denoising steps + VAE decode -> respond -> on a miss, write the latents
at every cached K and admit them once the write completes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import simpy

from sim.cache.store import CacheStore
from sim.hardware.profiles import Frontend, LatencyTable, StorageTier
from sim.hardware.routing import GpuState, Router
from sim.quality import QualityModel

#: per-request record columns, in order (DESIGN.md §4); metrics and figures derive from these only
RECORD_COLUMNS = (
    "arrival_s", "embed_s", "retrieval_s", "fetch_s", "queue_wait_s", "start_s", "service_s", "finish_s",
    "latency_s", "admit_s", "similarity", "similarity_raw", "matched_entry", "k_selected", "k_used", "hole",
    "num_steps", "gpu", "batch_id", "batch_size", "quality", "num_evicted", "admitted_entry",
)  # fmt: skip


@dataclass(frozen=True)
class Requests:
    """Per-request engine inputs, aligned by request index (arrivals non-decreasing)."""

    arrival_s: np.ndarray  # float64
    vectors: np.ndarray  # float32 [num_prompts, dim], unit norm
    prompt_index: np.ndarray  # int64 into vectors; equal index = identical prompt text
    partition: np.ndarray  # int64: retrieval scope (compatibility key x tenant)
    noise_bytes: np.ndarray  # int64: size of one cached latent for this request's shape
    num_steps: np.ndarray  # int64: N
    latency_class: np.ndarray  # int64: request shape class, indexes each GPU's latency tables
    step_factor: np.ndarray  # float64: multiplicative jitter on the step time (1.0 = none)

    def __len__(self) -> int:
        return len(self.arrival_s)


@dataclass(frozen=True)
class Gpu:
    """One GPU: its type, its latency table for every request shape class, and its batch limit."""

    kind: str
    tables: tuple[LatencyTable, ...]
    max_batch: int = 1


class Engine:
    """Replays ``Requests`` through the cache (``store`` None = vanilla serving, no cache lookups)."""

    def __init__(
        self,
        requests: Requests,
        *,
        store: CacheStore | None,
        gpus: Sequence[Gpu],
        router: Router,
        frontend: Frontend,
        tier: StorageTier,
        quality: QualityModel,
        write_delay: bool,
        batch_window_s: float = 0.0,
        step_events: bool = False,
    ) -> None:
        self._req = requests
        self._store = store
        self._gpus = tuple(gpus)
        self._router = router
        self._frontend = frontend
        self._tier = tier
        self._quality = quality
        self._write_delay = write_delay
        self._window_s = batch_window_s
        self._step_events = step_events
        shared: deque[int] = deque()
        self._shared = shared
        self._states = [
            GpuState(i, gpu.kind, shared if router.shared_queue else deque()) for i, gpu in enumerate(self._gpus)
        ]
        self._wake: dict[int, simpy.Event] = {}  # idle GPUs, each waiting on its wake-up event
        self._done: dict[int, simpy.Event] = {}
        self._enqueued_s: dict[int, float] = {}
        self._work: dict[int, float] = {}
        self._num_batches = 0
        self._batch1 = [[table.at(1) for table in gpu.tables] for gpu in self._gpus]
        self._all_done: simpy.Event | None = None
        self._num_open = 0
        self._num_ks = len(store.ks) if store is not None else 0
        n = len(requests)
        self.records: dict[str, np.ndarray] = {}
        for name in RECORD_COLUMNS:
            if name in ("matched_entry", "admitted_entry"):
                self.records[name] = np.full(n, -1, dtype=np.int64)
            elif name in ("k_selected", "k_used", "num_steps", "gpu", "batch_id", "batch_size", "num_evicted"):
                self.records[name] = np.zeros(n, dtype=np.int64)
            elif name == "hole":
                self.records[name] = np.zeros(n, dtype=bool)
            else:
                self.records[name] = np.full(n, np.nan)

    def run(self) -> dict[str, np.ndarray]:
        env = simpy.Environment()
        for g in self._states:
            env.process(self._worker(env, g))
        env.process(self._arrivals(env))
        # GPU workers loop forever: the run ends when every request is answered (and admitted).
        self._all_done = env.event()
        self._num_open = len(self._req)
        env.run(until=self._all_done)
        return self.records

    def _close(self) -> None:
        self._num_open -= 1
        if self._num_open == 0 and self._all_done is not None:
            self._all_done.succeed()

    def _arrivals(self, env: simpy.Environment) -> Generator[simpy.Event, None, None]:
        arrival = self._req.arrival_s
        for i in range(len(arrival)):
            wait = arrival[i] - env.now
            if wait > 0:
                yield env.timeout(wait)
            env.process(self._request(env, i))

    def _request(self, env: simpy.Environment, i: int) -> Generator[simpy.Event, object, None]:
        req, rec, store = self._req, self.records, self._store
        rec["arrival_s"][i] = env.now
        vector = req.vectors[req.prompt_index[i]]
        key = int(req.prompt_index[i])
        partition = int(req.partition[i])
        k_used = 0
        embed_s = retrieval_s = fetch_s = 0.0
        if store is not None:
            embed_s = self._frontend.embed_s
            if embed_s > 0:
                yield env.timeout(embed_s)
            retrieval_s = self._frontend.search_s(store.partition_size(partition))
            # The lookup sees the cache as it is when the search starts.
            result = store.access(partition, vector, key, env.now, i)
            if retrieval_s > 0:
                yield env.timeout(retrieval_s)
            k_used = result.k_used
            rec["similarity"][i] = result.similarity
            rec["similarity_raw"][i] = result.similarity_raw
            rec["matched_entry"][i] = result.entry_id
            rec["k_selected"][i] = result.k_selected
            rec["hole"][i] = result.hole
            if k_used:
                fetch_s = self._tier.read_s(int(req.noise_bytes[i]))
                yield env.timeout(fetch_s)
        rec["embed_s"][i] = embed_s
        rec["retrieval_s"][i] = retrieval_s
        rec["fetch_s"][i] = fetch_s
        rec["k_used"][i] = k_used
        num_steps = int(req.num_steps[i])
        rec["num_steps"][i] = num_steps
        rec["quality"][i] = self._quality.estimate(k_used, float(rec["similarity"][i]))

        done = env.event()
        self._enqueue(env, i, done)
        yield done  # the GPU worker fills start, wait, service and finish

        if store is not None and k_used == 0:
            # Only misses insert: they produced a latent at every cached K.
            noise_bytes = int(req.noise_bytes[i])
            if self._write_delay:
                yield env.timeout(self._tier.write_s(self._num_ks * noise_bytes))
            admitted = store.admit(partition, vector, key, noise_bytes, env.now)
            rec["admit_s"][i] = env.now
            rec["admitted_entry"][i] = admitted.entry_id
            rec["num_evicted"][i] = admitted.num_evicted_noises
        self._close()

    # -- GPU stage -------------------------------------------------------------------------------
    def _expected_s(self, i: int) -> Callable[[GpuState], float]:
        """Request i's service time at batch size 1 on a given GPU (what routers compare)."""
        req = self._req
        steps = max(int(req.num_steps[i]) - int(self.records["k_used"][i]), 0)
        cls = int(req.latency_class[i])

        def expected(g: GpuState) -> float:
            lat = self._batch1[g.index][cls]
            return lat.text_encoder_s + steps * lat.step_s + lat.vae_decode_s

        return expected

    def _enqueue(self, env: simpy.Environment, i: int, done: simpy.Event) -> None:
        self._done[i] = done
        self._enqueued_s[i] = env.now
        expected = self._expected_s(i)
        if self._router.shared_queue:
            self._shared.append(i)
            idle = [g for g in self._states if g.index in self._wake]
            if idle:
                self._wake.pop(self._router.choose(idle, expected, env.now).index).succeed()
            return
        g = self._router.choose(self._states, expected, env.now)
        g.queue.append(i)
        self._work[i] = w = expected(g)
        g.queued_work_s += w
        if g.index in self._wake:
            self._wake.pop(g.index).succeed()

    def _take(self, g: GpuState, batch: list[int]) -> list[int]:
        """Add queued requests of the head's latency class (FCFS among them) up to the batch limit."""
        queue = g.queue
        limit = self._gpus[g.index].max_batch
        if not queue or len(batch) >= limit:
            return batch
        if limit == 1:
            batch.append(queue.popleft())
        else:
            cls = self._req.latency_class[batch[0] if batch else queue[0]]
            keep: list[int] = []
            while queue and len(batch) < limit:
                j = queue.popleft()
                (batch if self._req.latency_class[j] == cls else keep).append(j)
            queue.extendleft(reversed(keep))
        if not self._router.shared_queue:
            for j in batch:
                g.queued_work_s -= self._work.pop(j, 0.0)
        return batch

    def _worker(self, env: simpy.Environment, g: GpuState) -> Generator[simpy.Event, object, None]:
        while True:
            if not g.queue:
                self._wake[g.index] = wake = env.event()
                yield wake
                continue  # another GPU may have taken the request first: look again
            batch = self._take(g, [])
            if len(batch) < self._gpus[g.index].max_batch and self._window_s > 0:
                yield env.timeout(self._window_s)  # hold the GPU briefly so the batch can fill
                batch = self._take(g, batch)
            yield from self._run(env, g, batch)

    def _run(self, env: simpy.Environment, g: GpuState, batch: list[int]) -> Generator[simpy.Event, object, None]:
        """Static batching: members start together at one batch-size step time; each leaves after its
        own N - K steps and decode; the GPU is free when the longest member is done."""
        req, rec = self._req, self.records
        lat = self._gpus[g.index].tables[int(req.latency_class[batch[0]])].at(len(batch))
        step_s = lat.step_s * float(max(req.step_factor[j] for j in batch))
        steps = [max(int(req.num_steps[j]) - int(rec["k_used"][j]), 0) for j in batch]
        durations = [lat.text_encoder_s + s * step_s + lat.vae_decode_s for s in steps]
        start = env.now
        longest = max(durations)
        g.in_service = len(batch)
        g.busy_until = start + longest
        batch_id = self._num_batches
        self._num_batches += 1
        for j, d in zip(batch, durations, strict=True):
            rec["gpu"][j] = g.index
            rec["batch_id"][j] = batch_id
            rec["batch_size"][j] = len(batch)
            rec["start_s"][j] = start
            rec["queue_wait_s"][j] = start - self._enqueued_s.pop(j)
            rec["service_s"][j] = d
        if self._step_events:
            # One event per denoising step: the same schedule, observable step by step.
            if lat.text_encoder_s > 0:
                yield env.timeout(lat.text_encoder_s)
            by_steps: dict[int, list[int]] = {}
            for j, s in zip(batch, steps, strict=True):
                by_steps.setdefault(s, []).append(j)
            for j in by_steps.pop(0, []):
                self._finish_after(env, j, lat.vae_decode_s)
            for s in range(1, max(steps) + 1):
                yield env.timeout(step_s)
                for j in by_steps.pop(s, []):
                    self._finish_after(env, j, lat.vae_decode_s)
            yield env.timeout(lat.vae_decode_s)
        else:
            for j, d in zip(batch, durations, strict=True):
                self._finish_after(env, j, d)
            yield env.timeout(longest)
        g.in_service = 0

    def _finish_after(self, env: simpy.Environment, j: int, delay_s: float) -> None:
        def finish(_: simpy.Event) -> None:
            self.records["finish_s"][j] = env.now
            self.records["latency_s"][j] = env.now - self.records["arrival_s"][j]
            self._done.pop(j).succeed()

        env.timeout(delay_s).callbacks.append(finish)
