"""Candidate fast path: the nearest cached prompt is the first of the request's precomputed candidates still cached.

The lists (sim.retrieval.precompute) hold each request's earlier prompts of its partition above the
floor, sorted by canonical cosine. Answers equal ExactCosine's wherever the exact similarity reaches
the floor: ties in cosine go to the smallest cached entry id, as in the exact path. Below the floor
this path answers None where the exact one names the best cached prompt (both are misses), whether the
list or the exact fallback found it, so answers do not depend on the lists' cap.
When no listed prompt is cached and the list was truncated, an exact search over the cached vectors
answers (counted in ``exact_fallbacks``); a lookup without a request index (-1) or without lists is
answered exactly too (``unlisted_lookups``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.retrieval import RETRIEVERS
from sim.retrieval.base import Retriever
from sim.retrieval.exact_cosine import ExactCosine
from sim.retrieval.precompute import Candidates


@dataclass
class FastPathCounts:
    """Lookups of every retriever one factory made (a store makes one retriever per partition)."""

    listed: int = 0  # answered from the list (a cached candidate, or None: nothing cached above the floor)
    exact_fallbacks: int = 0  # list exhausted, truncated, cached prompts left: exact search
    unlisted_lookups: int = 0  # request -1 or no lists: exact search


@RETRIEVERS.register("candidates")
class CandidateCosine(Retriever):
    """Keeps, per cached prompt id (text_key = the trace's prompt index), its cached entry ids, oldest
    first; an exact slot matrix beside it serves the fallbacks."""

    name = "candidates"

    def __init__(self, dim: int, candidates: Candidates | None = None, counts: FastPathCounts | None = None) -> None:
        super().__init__(dim)
        self._cands = candidates
        self.counts = counts if counts is not None else FastPathCounts()
        self._exact = ExactCosine(dim)
        self._entries_of: dict[int, list[int]] = {}
        self._prompt_of: dict[int, int] = {}
        if candidates is not None:
            # Plain ndarray views of the memory-mapped lists: slicing a np.memmap builds a memmap object
            # each time (5 per lookup, ~7% of an engine run); a view reads the same pages without it.
            self._offsets = candidates.offsets.view(np.ndarray)
            self._prompts = candidates.prompts.view(np.ndarray)
            self._sims = candidates.sims.view(np.ndarray)
            self._truncated = candidates.truncated.view(np.ndarray)

    def add(self, entry_id: int, vector: np.ndarray, text_key: int) -> None:
        self._exact.add(entry_id, vector, text_key)
        # Entry ids grow with admission order, so each list stays sorted oldest-first.
        self._entries_of.setdefault(text_key, []).append(entry_id)
        self._prompt_of[entry_id] = text_key

    def remove(self, entry_id: int) -> None:
        self._exact.remove(entry_id)
        key = self._prompt_of.pop(entry_id)
        same = self._entries_of[key]
        same.remove(entry_id)
        if not same:
            del self._entries_of[key]

    def nearest(self, vector: np.ndarray, text_key: int, request: int = -1) -> tuple[int, float] | None:
        if not self._prompt_of:
            return None
        if self._cands is None or request < 0:
            self.counts.unlisted_lookups += 1
            return self._exact.nearest(vector, text_key)
        lo, hi = int(self._offsets[request]), int(self._offsets[request + 1])
        # One conversion per lookup (float32 -> Python float is exact, so equal cosines stay equal).
        prompts, sims = self._prompts[lo:hi].tolist(), self._sims[lo:hi].tolist()
        truncated = bool(self._truncated[request])
        entries_of, n = self._entries_of, hi - lo
        for j in range(n):
            same = entries_of.get(prompts[j])
            if same is None:
                continue
            best_sim, best = sims[j], same[0]
            # Candidates tied in cosine with the first cached one: the smallest entry id wins.
            j += 1
            while j < n and sims[j] == best_sim:
                other = entries_of.get(prompts[j])
                if other is not None and other[0] < best:
                    best = other[0]
                j += 1
            if j == n and truncated:
                break  # the tie may continue past the list's end: only the exact search knows
            self.counts.listed += 1
            return best, best_sim
        else:
            if not truncated:
                self.counts.listed += 1
                return None  # nothing cached reaches the floor
        self.counts.exact_fallbacks += 1
        found = self._exact.nearest(vector, text_key)
        if found is not None and found[1] < self._cands.floor:
            return None  # as a complete list would answer: nothing cached reaches the floor
        return found

    def __len__(self) -> int:
        return len(self._prompt_of)


class CandidatesFactory:
    """``make_retriever`` for a CacheStore: one CandidateCosine per partition over shared lists and
    shared counts (a class, not a closure, so a store pickles)."""

    def __init__(self, candidates: Candidates, dim: int) -> None:
        self.candidates = candidates
        self.dim = dim
        self.counts = FastPathCounts()

    def __call__(self) -> CandidateCosine:
        return CandidateCosine(self.dim, self.candidates, self.counts)
