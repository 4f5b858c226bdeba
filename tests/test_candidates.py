"""Differential: candidate lists against brute force, their cache folder, and the candidates retriever
against the exact one through whole replays (every policy x 3 capacities)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.cache.kselect import KTable
from sim.cache.policies import POLICIES
from sim.cache.store import CacheStore
from sim.embedding.simmap import load_map
from sim.retrieval import cosine, precompute
from sim.retrieval.candidates import CandidateCosine, CandidatesFactory
from sim.retrieval.exact_cosine import ExactCosine
from sim.retrieval.precompute import Candidates, build_candidates, raw_floor
from sim.trace import load_trace
from tests.conftest import TINY_TRACE


def clustered(num_prompts: int, num_requests: int, dim: int, seed: int, num_clusters: int = 6,
              spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in a few tight clusters (many neighbours above a floor) plus duplicated rows
    (exact ties), and requests that repeat prompts; prompt ids numbered in order of first appearance."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_clusters, dim))
    raw = centres[rng.integers(num_clusters, size=num_prompts)] + spread * rng.standard_normal((num_prompts, dim))
    vectors = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    dup = rng.choice(num_prompts, size=num_prompts // 10, replace=False)
    vectors[dup] = vectors[rng.integers(num_prompts, size=len(dup))]
    draws = np.minimum(rng.zipf(1.3, size=num_requests) - 1, num_prompts - 1)
    draws = np.where(rng.random(num_requests) < 0.5, draws, rng.integers(num_prompts, size=num_requests))
    _, first, inverse = np.unique(draws, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return vectors, rank[inverse].astype(np.int64)


def brute_lists(vectors: np.ndarray, prompt_index: np.ndarray, partition: np.ndarray, floor: float,
                cap: int) -> list[tuple[list[int], list[float], bool]]:
    """Reference: per request, walk the trace keeping each partition's prompts in order of appearance."""
    seen: dict[int, list[int]] = {}
    out = []
    for i in range(len(prompt_index)):
        earlier = seen.setdefault(int(partition[i]), [])
        v = vectors[prompt_index[i]]
        scored = [(-float(cosine.cosines(vectors[[p]], v)[0]), rank, p) for rank, p in enumerate(earlier)]
        scored = sorted(s for s in scored if -s[0] >= floor)
        out.append(([p for _, _, p in scored[:cap]], [-s for s, _, _ in scored[:cap]], len(scored) > cap))
        if int(prompt_index[i]) not in earlier:
            earlier.append(int(prompt_index[i]))
    return out


def as_lists(c: Candidates) -> list[tuple[list[int], list[float], bool]]:
    out = []
    for i in range(len(c)):
        p, s = c.of(i)
        out.append((p.tolist(), s.astype(np.float64).tolist(), bool(c.truncated[i])))
    return out


@pytest.mark.parametrize("num_partitions", [1, 3])
@pytest.mark.parametrize("cap", [1, 4, 12])
def test_exact_lists_equal_brute_force(num_partitions: int, cap: int) -> None:
    vectors, prompt_index = clustered(300, 900, 24, seed=cap + num_partitions)
    partition = np.random.default_rng(3).integers(num_partitions, size=len(prompt_index))
    got = build_candidates(vectors, prompt_index, partition, floor=0.55, max_candidates=cap, cache_dir=None,
                           request_block=64, pool_block=40)  # small blocks: many of each
    want = brute_lists(vectors, prompt_index, partition, 0.55, cap)
    assert as_lists(got) == want
    # Guards: the case exercised truncation, empty lists, exact ties and own-prompt repeats.
    assert 0 < got.truncated.sum() < len(got)
    assert any(not p for p, _, _ in want)
    assert cap == 1 or any(len(s) > 1 and s[0] == s[1] for _, s, _ in want)
    assert any(prompt_index[i] in p for i, (p, _, _) in enumerate(want))


@pytest.mark.parametrize(("method", "module"), [("hnsw", "hnswlib"), ("ivf", "faiss")])
def test_ann_lists_are_rescored_canonically_and_sorted(method: str, module: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An ANN method may miss neighbours, but what it lists is canonical, sorted and above the floor."""
    pytest.importorskip(module)
    monkeypatch.setattr(precompute, "IVF_MIN_PROMPTS", 0)  # use the index even on this small case
    vectors, prompt_index = clustered(400, 1200, 24, seed=9)
    partition = np.zeros(len(prompt_index), dtype=np.int64)
    got = build_candidates(vectors, prompt_index, partition, floor=0.55, max_candidates=6, method=method,
                           cache_dir=None, request_block=64)
    want = brute_lists(vectors, prompt_index, partition, 0.55, 6)
    listed = agree = 0
    for i in range(len(got)):
        p, s = got.of(i)
        assert np.all(s >= np.float32(0.55)) and np.all(np.diff(s) <= 0)
        v = vectors[prompt_index[i]]
        assert np.array_equal(s, cosine.cosines(vectors[p], v)) if len(p) else True
        listed += len(p)
        agree += p.tolist() == want[i][0]
    assert listed > 1000 and agree / len(got) > 0.9  # recall is high on this easy case


# -- the cache folder --------------------------------------------------------------------------------
def _inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors, prompt_index = clustered(120, 300, 16, seed=4)
    return vectors, prompt_index, np.zeros(len(prompt_index), dtype=np.int64)


def _forbid_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed although a stored copy should have been reused")
    monkeypatch.setattr(precompute, "_partition_lists", boom)


def test_stored_lists_are_reused_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, prompt_index, partition = _inputs()
    first = build_candidates(vectors, prompt_index, partition, floor=0.5, max_candidates=5, cache_dir=tmp_path)
    _forbid_compute(monkeypatch)
    again = build_candidates(vectors, prompt_index, partition, floor=0.5, max_candidates=5, cache_dir=tmp_path)
    assert isinstance(again.sims, np.memmap) and again.key == first.key
    assert as_lists(again) == as_lists(first) == brute_lists(vectors, prompt_index, partition, 0.5, 5)
    # A higher floor is served by the stored lower one (its extra entries only ever mean misses).
    higher = build_candidates(vectors, prompt_index, partition, floor=0.6, max_candidates=5, cache_dir=tmp_path)
    assert higher.floor == 0.5
    assert [p.name for p in tmp_path.iterdir()] == [f"{first.key}-floor{(0.5).hex()}"]  # no temporary left


@pytest.mark.parametrize("change", ["vector", "prompt_index", "partition", "max_candidates", "method", "lower_floor"])
def test_a_changed_input_is_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    vectors, prompt_index, partition = _inputs()
    args = {"floor": 0.5, "max_candidates": 5, "method": "exact"}
    build_candidates(vectors, prompt_index, partition, cache_dir=tmp_path, **args)  # type: ignore[arg-type]
    vectors, prompt_index, partition = vectors.copy(), prompt_index.copy(), partition.copy()
    if change == "vector":
        vectors[7] = vectors[8]
    elif change == "prompt_index":
        prompt_index[-1] = prompt_index[0]
    elif change == "partition":
        partition[-1] = 1
    elif change == "max_candidates":
        args["max_candidates"] = 6
    elif change == "method":
        args["method"] = "hnsw"
    else:
        args["floor"] = 0.45
    _forbid_compute(monkeypatch)
    with pytest.raises(AssertionError, match="recomputed"):
        build_candidates(vectors, prompt_index, partition, cache_dir=tmp_path, **args)  # type: ignore[arg-type]


# -- the floor ---------------------------------------------------------------------------------------
def test_raw_floor_is_conservative_and_tight() -> None:
    smap = load_map("profiles/similarity/minilm-to-clip.yaml")
    t = KTable().lowest
    floor = raw_floor(t, smap.x, smap.y)
    xs = np.linspace(-1, 1, 200_001)
    mapped = smap.apply_array(xs)
    assert not np.any((mapped > t) & (xs < floor))  # nothing below the floor can hit
    assert np.any((mapped > t) & (xs < floor + 1e-4))  # and it is not needlessly low
    assert raw_floor(t) == t
    assert raw_floor(0.5, (0.0, 1.0), (0.6, 1.0)) == -1.0  # the clamp sends everything above
    assert raw_floor(0.99, (0.0, 1.0), (0.0, 0.9)) == 1.0  # nothing reaches it


# -- the retriever through whole replays --------------------------------------------------------------
Outcome = tuple[int, float, float, int, int]


def replay(store: CacheStore, vectors: np.ndarray, prompt_index: np.ndarray, partition: np.ndarray,
           ) -> list[Outcome]:
    """Sequential semantics: a miss is admitted before the next lookup."""
    out = []
    for i in range(len(prompt_index)):
        v, key, part = vectors[prompt_index[i]], int(prompt_index[i]), int(partition[i])
        r = store.access(part, v, key, float(i), request=i)
        out.append((r.entry_id, r.similarity_raw, r.similarity, r.k_selected, r.k_used))
        if r.k_used == 0:
            store.admit(part, v, key, 131_072, float(i))
    return out


def compare(exact: list[Outcome], fast: list[Outcome], floor: float) -> int:
    """Equal outcomes wherever the exact similarity reaches the floor, misses on both sides below it;
    returns the number of hits."""
    hits = 0
    for i, (e, f) in enumerate(zip(exact, fast, strict=True)):
        if e[1] >= floor:  # NaN (empty partition) compares False
            assert f == e, f"request {i}: exact {e}, candidates {f}"
            hits += e[4] > 0
        else:
            assert e[4] == f[4] == 0, f"request {i}: exact {e}, candidates {f}"
            assert f[0] == -1 or f == e, f"request {i}: exact {e}, candidates {f}"
    return hits


def run_pair(vectors: np.ndarray, prompt_index: np.ndarray, partition: np.ndarray, cands: Candidates, policy: str,
             unit: str, capacity: int, scale: object) -> tuple[list[Outcome], list[Outcome], CandidatesFactory]:
    dim = vectors.shape[1]
    factory = CandidatesFactory(cands, dim)
    results = []
    for make in (lambda: ExactCosine(dim), factory):
        store = CacheStore(ks=(5, 10, 15, 20, 25), table=KTable(), policy=POLICIES.get(policy)(unit),
                           make_retriever=make, capacity_noises=capacity, similarity_scale=scale)  # type: ignore[arg-type]
        results.append(replay(store, vectors, prompt_index, partition))
        store.check()
    return results[0], results[1], factory


@pytest.fixture(scope="module")
def tiny() -> tuple[np.ndarray, np.ndarray, object, float]:
    trace = load_trace(TINY_TRACE)
    smap = load_map("profiles/similarity/minilm-to-clip.yaml")
    assert smap.embedder == trace.embedder
    return trace.vectors, trace.prompt_index, smap, raw_floor(KTable().lowest, smap.x, smap.y)


@pytest.fixture(scope="module")
def tiny_candidates(tiny: tuple[np.ndarray, np.ndarray, object, float]) -> Candidates:
    vectors, prompt_index, _, floor = tiny
    # A short cap, so lists run out and the exact fallback is exercised too.
    return build_candidates(vectors, prompt_index, np.zeros(len(prompt_index), np.int64), floor=floor,
                            max_candidates=8, cache_dir=None)


@pytest.mark.parametrize("capacity", [150, 1500, 5000])
@pytest.mark.parametrize("policy", POLICIES.names())
def test_candidates_retriever_equals_exact_on_tiny_trace(
    tiny: tuple[np.ndarray, np.ndarray, object, float], tiny_candidates: Candidates, policy: str, capacity: int
) -> None:
    vectors, prompt_index, smap, floor = tiny
    partition = np.zeros(len(prompt_index), np.int64)
    for unit in POLICIES.get(policy).units:
        exact, fast, factory = run_pair(vectors, prompt_index, partition, tiny_candidates, policy, unit, capacity,
                                        smap.apply)  # type: ignore[attr-defined]
        hits = compare(exact, fast, floor)
        assert hits > 100  # guards: the replay had hits, list answers and fallbacks
        assert factory.counts.listed > 1000 and factory.counts.exact_fallbacks > 0
        assert factory.counts.unlisted_lookups == 0


def test_candidates_retriever_equals_exact_per_user_partitions(
    tiny: tuple[np.ndarray, np.ndarray, object, float]
) -> None:
    vectors, prompt_index, smap, floor = tiny
    users = load_trace(TINY_TRACE).user
    partition = np.unique(users.astype(str), return_inverse=True)[1].astype(np.int64)
    cands = build_candidates(vectors, prompt_index, partition, floor=floor, max_candidates=4, cache_dir=None)
    exact, fast, _ = run_pair(vectors, prompt_index, partition, cands, "lcbfu", "noise", 500,
                              smap.apply)  # type: ignore[attr-defined]
    assert compare(exact, fast, floor) > 20


def test_unlisted_lookups_search_exactly() -> None:
    vectors, _ = clustered(50, 50, 16, seed=2)
    index, ref = CandidateCosine(16), ExactCosine(16)
    for e in range(30):
        index.add(e, vectors[e], e)
        ref.add(e, vectors[e], e)
    for v in vectors:
        assert index.nearest(v, -1) == ref.nearest(v, -1)
    assert index.counts.unlisted_lookups == len(vectors)


def grid_trace(seed: int, num_requests: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Prompts whose vectors have components +-1/4 in 16 dimensions (norm exactly 1, every cosine a
    multiple of 1/16 without rounding): near copies of a few bases, many prompts sharing a vector, so
    cosines between distinct prompts tie exactly, at the top of lists and at their ends."""
    rng = np.random.default_rng(seed)
    bases = rng.choice([-0.25, 0.25], size=(12, 16))
    shapes = np.repeat(bases[rng.integers(12, size=60)], 1, axis=0)
    flips = rng.random((60, 16)) < 0.08
    shapes = np.where(flips, -shapes, shapes)
    vectors = shapes[rng.integers(60, size=400)].astype(np.float32)  # 400 prompts over 60 vectors
    draws = rng.integers(400, size=num_requests)
    _, first, inverse = np.unique(draws, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    order = np.argsort(first)
    return vectors[np.unique(draws)][order], rank[inverse].astype(np.int64)


@pytest.mark.parametrize("cap", [2, 30])
@pytest.mark.parametrize("policy", POLICIES.names())
def test_candidates_retriever_breaks_exact_ties_like_exact(policy: str, cap: int) -> None:
    vectors, prompt_index = grid_trace(seed=cap)
    partition = np.zeros(len(prompt_index), np.int64)
    floor = KTable().lowest
    cands = build_candidates(vectors, prompt_index, partition, floor=floor, max_candidates=cap, cache_dir=None)
    for capacity in (60, 400):
        exact, fast, factory = run_pair(vectors, prompt_index, partition, cands, policy,
                                        POLICIES.get(policy).units[0], capacity, None)
        assert compare(exact, fast, floor) > 100
        assert factory.counts.exact_fallbacks > 0 and factory.counts.listed > 50


@pytest.mark.slow
def test_candidates_retriever_equals_exact_on_50k_vectors_trace(tmp_path: Path) -> None:
    """The synthetic DiffusionDB-style trace (`trace synth --mode vectors`, 50K requests): every
    policy x 3 capacities, exact lists, no similarity map (the K table reads raw cosines)."""
    from sim.synth.config import SynthConfig
    from sim.synth.generator import write_synth_trace

    path = tmp_path / "v50k.parquet"
    write_synth_trace(SynthConfig(), 50_000, 11, path, mode="vectors")
    trace = load_trace(path)
    partition = np.zeros(len(trace), np.int64)
    floor = raw_floor(KTable().lowest)
    cands = build_candidates(trace.vectors, trace.prompt_index, partition, floor=floor, max_candidates=32,
                             cache_dir=None)
    for policy in POLICIES.names():
        for capacity in (1500, 5000, 15_000):
            exact, fast, factory = run_pair(trace.vectors, trace.prompt_index, partition, cands, policy,
                                            POLICIES.get(policy).units[0], capacity, None)
            assert compare(exact, fast, floor) > 1000
            assert factory.counts.listed > 10_000


@pytest.mark.parametrize("executor", ["engine", "sequential"])
def test_config_candidates_give_the_exact_retrievers_counts(executor: str, tmp_path: Path) -> None:
    """`cache.retrieval: candidates` through the whole run: every cache figure equal to exact_cosine's."""
    from sim.experiments.runner import simulate
    from sim.experiments.sweep import experiment_from_data

    def run(retrieval: str) -> dict:
        cfg = experiment_from_data({"trace": {"limit": 2000}, "cache": {
            "retrieval": retrieval, "capacity_noises": 500, "candidates": {"cache_dir": str(tmp_path)}},
            "run": {"executor": executor}}).base
        return simulate(cfg)[2]

    exact, fast = run("exact_cosine"), run("candidates")
    for key in ("hits", "k_histogram", "steps_skipped", "evicted_noises", "hole_hits", "hole_misses", "outcomes"):
        assert exact[key] == fast[key], key
    assert fast["retrieval_listed"] > 0 and fast["retrieval_unlisted_lookups"] == 0
