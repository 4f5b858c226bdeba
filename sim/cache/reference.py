"""The reference live cache: a CacheSpec opened as the Python store, policies and retrievers (the oracle)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from sim.cache.admission import ADMISSIONS
from sim.cache.offline import OFFLINE, Future
from sim.cache.policies import POLICIES, Policy
from sim.cache.spec import CacheSpec, LiveCache
from sim.cache.store import AccessResult, AdmitResult, CacheStore
from sim.requests import Requests
from sim.retrieval import RETRIEVERS
from sim.rng import rng_stream


def retriever_factory(spec: CacheSpec, dim: int) -> Any:
    """The store's per-partition retriever factory (picklable): the candidate fast path over the spec's
    lists, or a registered retriever."""
    if spec.retrieval == "candidates":
        from sim.retrieval.candidates import CandidatesFactory

        if spec.candidates is None:
            raise ValueError("cache.retrieval: candidates needs the spec's candidate lists")
        return CandidatesFactory(spec.candidates, dim)
    return partial(RETRIEVERS.get(spec.retrieval), dim)


def scope_map(requests: Requests) -> Any:
    """The search scope of each retrieval partition (None: partitions are their own scopes)."""
    if requests.scope is None:
        return None
    pairs = np.unique(np.stack([requests.partition, requests.scope]), axis=1)
    return dict(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True)).__getitem__


def new_store(spec: CacheSpec, requests: Requests) -> CacheStore:
    """A fresh store for one execution: fresh policy and admission, each on its own named random stream."""
    rng = rng_stream(spec.seed, "policy")
    scale = spec.similarity_map
    policy: Policy
    if spec.policy in OFFLINE:
        future = Future(requests.vectors, requests.prompt_index, requests.partition, requests.num_steps,
                        spec.unit_bytes, spec.table, tuple(sorted(spec.ks)),
                        scale.apply_array if scale is not None else None)
        policy = OFFLINE.get(spec.policy)(spec.unit, spec.policy_params, rng, future=future)
    else:
        policy = POLICIES.get(spec.policy)(spec.unit, spec.policy_params, rng)
    return CacheStore(
        ks=spec.ks,
        table=spec.table,
        admission=ADMISSIONS.get(spec.admission)(spec.admission_params, rng_stream(spec.seed, "admission")),
        policy=policy,
        make_retriever=retriever_factory(spec, requests.vectors.shape[1]),
        capacity_noises=spec.capacity_noises,
        capacity_bytes=spec.capacity_bytes,
        similarity_scale=spec.scale,
        scope_of=scope_map(requests),
    )


class ReferenceCache(LiveCache):
    """The spec's CacheStore, asked by request index (``store``: one built by hand instead, for tests that
    give the reference another retriever)."""

    implementation = "reference"

    def __init__(self, spec: CacheSpec, requests: Requests, store: CacheStore | None = None) -> None:
        self.store = store if store is not None else new_store(spec, requests)
        self._req = requests
        self._bytes = spec.unit_bytes
        self._capped = spec.capped

    def lookup(self, i: int, now: float) -> AccessResult:
        req = self._req
        key = int(req.prompt_index[i])
        max_k = int(req.num_steps[i]) - 1 if self._capped else None
        return self.store.access(int(req.partition[i]), req.vectors[key], key, now, i, max_k=max_k)

    def admit(self, i: int, now: float) -> AdmitResult:
        req = self._req
        key = int(req.prompt_index[i])
        return self.store.admit(int(req.partition[i]), req.vectors[key], key, int(self._bytes[i]), now, i)

    def partition_size(self, i: int) -> int:
        return self.store.scope_size(int(self._req.partition[i]))

    def stats(self) -> dict[str, int]:
        store = self.store
        out = {"hits_declined": store.num_declined, "admissions_refused": store.num_refused}
        counts = store.retrieval_counts()
        if not any(counts.values()):  # a retriever that keeps no counts, or was never asked
            return out
        return out | {f"retrieval_{name}": n for name, n in counts.items()}
