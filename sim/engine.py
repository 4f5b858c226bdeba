"""SimPy serving model: the only code that advances simulated time.

Request lifecycle (DESIGN.md §4): arrival -> embed prompt -> nearest cached prompt and K ->
fetch the cached latent from its storage tier (hit) -> FCFS queue for one of G GPUs ->
text encoder + (N - K) denoising steps + VAE decode -> respond -> on a miss, write the latents
at every cached K and admit them once the write completes.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import simpy

from sim.cache.store import CacheStore
from sim.hardware.profiles import Frontend, StepLatency, StorageTier

#: per-request record columns, in order (DESIGN.md §4); metrics and figures derive from these only
RECORD_COLUMNS = (
    "arrival_s", "embed_s", "retrieval_s", "fetch_s", "queue_wait_s", "service_s", "finish_s",
    "latency_s", "admit_s", "similarity", "similarity_raw", "matched_entry", "k_selected", "k_used", "hole",
    "num_steps", "gpu", "quality", "num_evicted", "admitted_entry",
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
    latency_class: np.ndarray  # int64 into the engine's list of StepLatency
    step_factor: np.ndarray  # float64: multiplicative jitter on the step time (1.0 = none)

    def __len__(self) -> int:
        return len(self.arrival_s)


class Engine:
    """Replays ``Requests`` through the cache (``store`` None = vanilla serving, no cache lookups)."""

    def __init__(
        self,
        requests: Requests,
        *,
        store: CacheStore | None,
        latencies: list[StepLatency],
        frontend: Frontend,
        tier: StorageTier,
        num_gpus: int,
        quality_by_k: dict[int, float],
        write_delay: bool,
    ) -> None:
        self._req = requests
        self._store = store
        self._lat = latencies
        self._frontend = frontend
        self._tier = tier
        self._num_gpus = num_gpus
        self._quality = quality_by_k
        self._write_delay = write_delay
        self._num_ks = len(store.ks) if store is not None else 0
        n = len(requests)
        self.records: dict[str, np.ndarray] = {}
        for name in RECORD_COLUMNS:
            if name in ("matched_entry", "admitted_entry"):
                self.records[name] = np.full(n, -1, dtype=np.int64)
            elif name in ("k_selected", "k_used", "num_steps", "gpu", "num_evicted"):
                self.records[name] = np.zeros(n, dtype=np.int64)
            elif name == "hole":
                self.records[name] = np.zeros(n, dtype=bool)
            else:
                self.records[name] = np.full(n, np.nan)

    def run(self) -> dict[str, np.ndarray]:
        env = simpy.Environment()
        gpus = simpy.Store(env, capacity=self._num_gpus)
        gpus.items.extend(range(self._num_gpus))  # a Store serves getters first-come first-served
        env.process(self._arrivals(env, gpus))
        env.run()
        return self.records

    def _arrivals(self, env: simpy.Environment, gpus: simpy.Store) -> Generator[simpy.Event, None, None]:
        arrival = self._req.arrival_s
        for i in range(len(arrival)):
            wait = arrival[i] - env.now
            if wait > 0:
                yield env.timeout(wait)
            env.process(self._request(env, gpus, i))

    def _request(self, env: simpy.Environment, gpus: simpy.Store, i: int) -> Generator[simpy.Event, object, None]:
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
            result = store.access(partition, vector, key, env.now)
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
        rec["quality"][i] = self._quality[k_used]

        queued_s = env.now
        gpu = yield gpus.get()
        rec["queue_wait_s"][i] = env.now - queued_s
        lat = self._lat[req.latency_class[i]]
        steps = max(num_steps - k_used, 0)
        service_s = lat.text_encoder_s + steps * lat.step_s * req.step_factor[i] + lat.vae_decode_s
        yield env.timeout(service_s)
        yield gpus.put(gpu)
        rec["gpu"][i] = gpu
        rec["service_s"][i] = service_s
        rec["finish_s"][i] = env.now
        rec["latency_s"][i] = env.now - rec["arrival_s"][i]

        if store is not None and k_used == 0:
            # Only misses insert: they produced a latent at every cached K.
            noise_bytes = int(req.noise_bytes[i])
            if self._write_delay:
                yield env.timeout(self._tier.write_s(self._num_ks * noise_bytes))
            admitted = store.admit(partition, vector, key, noise_bytes, env.now)
            rec["admit_s"][i] = env.now
            rec["admitted_entry"][i] = admitted.entry_id
            rec["num_evicted"][i] = admitted.num_evicted_noises
