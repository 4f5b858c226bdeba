"""Exact candidate lists from a trace's structure: topic-partitioned lists equal all-pairs exact lists (and give
the same records); a broken partition guarantee is refused; approximate lists are chosen only when exact ones
are unaffordable, and say so."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.build import build_scenario, plan
from sim.errors import InputError
from sim.experiments.runner import simulate
from sim.experiments.sweep import experiment_from_data
from sim.retrieval import precompute
from sim.retrieval.precompute import build_candidates
from sim.scenario.records import RECORD_COLUMNS
from sim.trace import GUARANTEE_KEY, Trace, load_trace
from tests.helpers import execute


@cache
def _synth(folder: Path, requests: int, dim: int) -> Path:
    from sim.synth.config import load_synth_config
    from sim.synth.generator import write_synth_trace

    cfg = load_synth_config("experiments/synth/ddb-2m.yaml")
    cfg = replace(cfg, vectors=replace(cfg.vectors, dim=dim))
    out = folder / f"v{requests}-{dim}.parquet"
    write_synth_trace(cfg, requests, 3, out, "vectors", None, None)
    return out


def _config(path: Path, lists: Path, **cache_: Any) -> Any:
    return experiment_from_data({"name": "s", "trace": {"path": str(path)}, "run": {"executor": "sequential"},
                                 "cache": {"capacity_noises": 1500, "candidates": {"cache_dir": str(lists)},
                                           **cache_}}).base


def _pair(tmp: Path, requests: int, policy: str, capacity: int) -> tuple[Any, Any, Trace]:
    """(records with topic-partitioned lists, records with lists over the whole trace) of one run."""
    path = _synth(tmp, requests, 384)
    trace = load_trace(path)
    cfg = _config(path, tmp / "lists", policy=policy, capacity_noises=capacity)
    structured = build_scenario(cfg, trace)[0]
    assert structured.requests.scope is not None  # refined by topic
    flat = replace(structured, requests=replace(structured.requests, partition=structured.requests.scope,
                                                scope=None))
    spec = structured.mode.cache_spec
    assert spec is not None and spec.candidates is not None and spec.candidates.method == "exact"
    whole = build_candidates(trace.vectors, flat.requests.prompt_index, flat.requests.partition,
                             floor=spec.candidates.floor, max_candidates=spec.candidates.max_candidates,
                             method="exact", cache_dir=tmp / "lists")
    flat = replace(flat, mode=type(structured.mode)(flat.requests, replace(spec, candidates=whole)))
    return execute("sequential", structured, implementation="compiled")[0], \
        execute("sequential", flat, implementation="compiled")[0], trace


def _same(a: Any, b: Any) -> None:
    for col in RECORD_COLUMNS:
        assert np.array_equal(a[col], b[col], equal_nan=a[col].dtype.kind == "f"), col


def test_topic_lists_give_the_records_of_whole_trace_lists(tmp_path: Path) -> None:
    structured, flat, trace = _pair(tmp_path, 8_000, "lru", 1500)
    _same(structured, flat)
    assert int((flat["k_used"] > 0).sum()) > 1000 and trace.topic is not None


@pytest.mark.slow
@pytest.mark.parametrize(("policy", "capacity"), [("lru", 1500), ("fifo", 15000), ("lcbfu", 150000)])
def test_topic_lists_equal_all_pairs_lists_50k(tmp_path_factory: pytest.TempPathFactory, policy: str,
                                               capacity: int) -> None:
    """The lists themselves: within-topic exact lists equal the all-pairs exact lists, entry for entry."""
    tmp = tmp_path_factory.getbasetemp()
    path = _synth(tmp, 50_000, 384)
    trace = load_trace(path)
    sc = build_scenario(_config(path, tmp / "lists", policy=policy, capacity_noises=capacity), trace)[0]
    spec = sc.mode.cache_spec
    assert spec is not None and spec.candidates is not None
    whole = build_candidates(trace.vectors, sc.requests.prompt_index, sc.requests.scope, floor=spec.candidates.floor,
                             max_candidates=spec.candidates.max_candidates, method="exact", cache_dir=tmp / "lists")
    mine = spec.candidates
    for name in ("offsets", "prompts", "sims", "truncated"):
        assert np.array_equal(getattr(mine, name), getattr(whole, name)), name
    structured, flat, _ = _pair(tmp, 50_000, policy, capacity)
    _same(structured, flat)


def test_a_trace_whose_vectors_break_its_guarantee_is_refused(tmp_path: Path) -> None:
    path = _synth(tmp_path, 3_000, 384)
    table = pq.read_table(path)
    topic = table.column("topic").to_numpy().copy()
    # move one prompt's requests to a topic of their own: its similar prompts are now in another topic
    refine = np.flatnonzero(topic == np.bincount(topic).argmax())
    victim = table.column("prompt")[int(refine[-1])].as_py()
    rows = np.array([p == victim for p in table.column("prompt").to_pylist()])
    topic[rows] = topic.max() + 1
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("topic"), "topic", [topic]).replace_schema_metadata(
        table.schema.metadata), broken)
    (tmp_path / "broken.embeddings.parquet").write_bytes(path.with_name(path.stem + ".embeddings.parquet").read_bytes())
    with pytest.raises(InputError, match=r"broken\.parquet: the trace guarantees that prompts of different topics "
                                         r"stay below cosine 0\.65, but prompts \d+ \(topic \d+\) and \d+"):
        build_scenario(_config(broken, tmp_path / "lists"), load_trace(broken))


def test_a_weak_guarantee_is_not_relied_on(tmp_path: Path) -> None:
    """At 16 dimensions random directions reach 0.65 often: the bound fails, retrieval is not refined."""
    path = _synth(tmp_path, 2_000, 16)
    trace = load_trace(path)
    assert trace.guarantee is not None and trace.guarantee.violation_bound(len(trace.vectors), 0.65) > 1e-9
    sc = build_scenario(_config(path, tmp_path / "lists"), trace)[0]
    assert sc.requests.scope is None


def test_a_trace_without_topics_or_with_a_bad_guarantee(tmp_path: Path) -> None:
    path = _synth(tmp_path, 1_000, 384)
    table = pq.read_table(path)
    for meta, message in ((b'{"kind": "clustered", "dim": 3}', r"expected \{\"kind\": \"independent_uniform\""),
                          (b"not json", r"not JSON")):
        pq.write_table(table.replace_schema_metadata({GUARANTEE_KEY: meta}), path)
        with pytest.raises(InputError, match=message):
            load_trace(path)
    pq.write_table(table.drop(["topic"]).replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(InputError, match=r"a guarantee about topics, but the trace has no 'topic' column"):
        load_trace(path)


def test_auto_takes_approximate_lists_only_when_exact_ones_are_unaffordable(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = _synth(tmp_path, 3_000, 384)
    cfg = _config(path, tmp_path / "lists")
    trace = load_trace(path)
    sc = build_scenario(cfg, trace)[0]
    assert sc.mode.cache_spec is not None and sc.mode.cache_spec.candidates.method == "exact"
    assert plan(cfg, sc).notices == ()
    monkeypatch.setattr(precompute, "EXACT_BUDGET_MACS", 1.0)
    monkeypatch.setattr(precompute, "IVF_MIN_PROMPTS", 100)  # small enough to train a quantizer
    cfg = _config(path, tmp_path / "lists", candidates={"cache_dir": str(tmp_path / "lists2")})
    sc = build_scenario(cfg, trace)[0]
    lists = sc.mode.cache_spec.candidates
    assert lists.method == "ivf" and lists.recall is not None and 0.5 < lists.recall <= 1.0
    [notice] = plan(cfg, sc).notices
    assert "approximate ivf lists" in notice and f"recall {lists.recall:.4f}" in notice
    summary = simulate(cfg, trace)[2]
    assert summary["retrieval"] == {"method": "candidates", "partitioned_by_topic": True, "lists": "ivf",
                                    "max_candidates": 64, "recall": lists.recall}
