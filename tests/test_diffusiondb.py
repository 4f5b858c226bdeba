"""DiffusionDB importer on parquet fixtures written in DiffusionDB's exact 13-column metadata schema."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.errors import InputError
from sim.workload.diffusiondb import import_diffusiondb

Cli = Callable[..., tuple[int, str, str]]

# poloclub/diffusiondb README, "Metadata Schema" (timestamp as Arrow reads it back).
SCHEMA = pa.schema([
    ("image_name", pa.string()), ("prompt", pa.string()), ("part_id", pa.uint16()), ("seed", pa.uint32()),
    ("step", pa.uint16()), ("cfg", pa.float32()), ("sampler", pa.uint8()), ("width", pa.uint16()),
    ("height", pa.uint16()), ("user_name", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
    ("image_nsfw", pa.float32()), ("prompt_nsfw", pa.float32()),
])
T0 = datetime(2022, 8, 10, 12, 0, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def row(name: str, prompt: str | None = "a cat", minute: Any = 0, user: str | None = "u1", **kw: Any
        ) -> dict[str, Any]:
    return {"image_name": name, "prompt": prompt, "part_id": 1, "seed": kw.pop("seed", 7), "step": 50,
            "cfg": 7.0, "sampler": 8, "width": 1024, "height": 1024, "user_name": user,
            "timestamp": at(minute) if isinstance(minute, int) else minute, "image_nsfw": 0.1,
            "prompt_nsfw": 0.0, **kw}


def write(path: Path, rows: list[dict[str, Any]], schema: pa.Schema = SCHEMA) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def jitter(name: str) -> float:
    """The documented rule, recomputed independently: 60 s × top 53 bits of SHA-1(image_name) / 2^53."""
    return (int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") >> 11) * 60.0 / 2**53


def run(tmp_path: Path, rows: list[dict[str, Any]], **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out = tmp_path / "t.parquet"
    report = import_diffusiondb(write(tmp_path / "metadata.parquet", rows), out, **kw)
    return pq.read_table(out).to_pylist(), report


def test_sorted_by_arrival_and_columns_mapped(tmp_path: Path) -> None:
    rows = [row("c.png", "late", 3, sampler=1, width=512, height=768, step=30),
            row("a.png", "early", 1), row("b.png", "middle", 2, user="u2")]
    out, report = run(tmp_path, rows)
    assert [r["request_id"] for r in out] == ["a.png", "b.png", "c.png"]
    assert [r["arrival_s"] for r in out] == [jitter("a.png"), 60 + jitter("b.png"), 120 + jitter("c.png")]
    assert out[2] == {"request_id": "c.png", "arrival_s": out[2]["arrival_s"], "prompt": "late", "user": "u1",
                      "width": 512, "height": 768, "steps": 30, "sampler": "ddim"}
    assert out[0]["sampler"] == "k_lms" and out[1]["user"] == "u2"
    assert report["origin_utc"] == "2022-08-10T12:01:00+00:00"
    assert (report["rows_read"], report["requests"]) == (3, 3)


def test_model_defaults_nulls_the_parameters(tmp_path: Path) -> None:
    out, report = run(tmp_path, [row("a.png", width=512, step=30)], model_defaults=True)
    assert [out[0][k] for k in ("width", "height", "steps", "sampler")] == [None] * 4
    assert report["filters"]["model_defaults"] is True


def test_jitter_is_deterministic_inside_the_minute_and_ignores_file_order(tmp_path: Path) -> None:
    rows = [row(f"img-{i:03d}.png", f"prompt {i}", 0) for i in range(200)]
    first, _ = run(tmp_path, rows)
    second, _ = run(tmp_path, rows[::-1])
    assert first == second
    arrivals = [r["arrival_s"] for r in first]
    assert all(0 <= a < 60 for a in arrivals) and arrivals == sorted(arrivals)
    assert len(set(arrivals)) == 200
    assert arrivals == sorted(jitter(f"img-{i:03d}.png") for i in range(200))


def test_date_filter_is_half_open_and_counted(tmp_path: Path) -> None:
    rows = [row(f"{m}.png", f"p{m}", m * 60) for m in range(5)]  # 12:00, 13:00, ..., 16:00
    out, report = run(tmp_path, rows, start="2022-08-10T13:00", end="2022-08-10T15:00")
    assert [r["request_id"] for r in out] == ["1.png", "2.png"]
    assert report["outside_date_range"] == 3
    assert report["origin_utc"] == "2022-08-10T13:00:00+00:00"  # arrivals count from the first kept minute
    assert out[0]["arrival_s"] == jitter("1.png")


def test_bad_date_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--start: 'yesterday'"):
        run(tmp_path, [row("a.png")], start="yesterday")


def test_limit_keeps_the_first_requests_by_arrival(tmp_path: Path) -> None:
    rows = [row(f"img-{i}.png", f"p{i}", i % 3) for i in range(9)]  # 3 per minute
    out, report = run(tmp_path, rows, limit=4)
    assert len(out) == 4 and report["requests"] == 4 and report["requests_beyond_limit"] == 5
    minute0 = sorted((jitter(f"img-{i}.png"), f"img-{i}.png") for i in (0, 3, 6))
    minute1 = sorted((jitter(f"img-{i}.png"), f"img-{i}.png") for i in (1, 4, 7))
    assert [r["request_id"] for r in out] == [n for _, n in minute0] + [minute1[0][1]]


def test_large_table_job_collapses_to_one_request(tmp_path: Path) -> None:
    rows = [row("j2.png", seed=2), row("j1.png", seed=1), row("j3.png", seed=3), row("j4.png", seed=4),
            row("cfg.png", cfg=9.0), row("later.png", minute=1), row("other-user.png", user="u2"),
            row("other-size.png", width=512)]
    out, report = run(tmp_path, rows)
    assert sorted(r["request_id"] for r in out) == sorted(
        ["j2.png", "cfg.png", "later.png", "other-user.png", "other-size.png"])  # first image in file order
    assert (report["jobs_collapsed"], report["images_collapsed"], report["rows_kept"]) == (1, 3, 8)
    plain, report = run(tmp_path, rows, collapse=False)
    assert len(plain) == 8 and report["images_collapsed"] == 0


def test_bad_rows_are_dropped_and_counted_by_reason(tmp_path: Path) -> None:
    rows = [row("ok.png"), row("nots.png", minute=None), row("empty.png", ""), row("blank.png", " \t"),
            row("null.png", None), row("both.png", None, minute=None), row("noname.png", image_name=None)]
    out, report = run(tmp_path, rows)
    assert [r["request_id"] for r in out] == ["ok.png"]
    assert report["dropped"] == {"null_timestamp": 2, "empty_prompt": 3, "null_image_name": 1}
    assert report["rows_read"] == 7 and report["outside_date_range"] == 0


def test_nothing_left_is_an_error_with_the_counts(tmp_path: Path) -> None:
    with pytest.raises(InputError, match='"rows_read": 2, "null_timestamp": 1, "empty_prompt": 1'):
        run(tmp_path, [row("a.png", minute=None), row("b.png", "")])


def test_failed_write_leaves_no_partial_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.workload.diffusiondb as ddb

    def boom(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ddb, "_write_bucket", boom)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [row("a.png")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.parquet"]


def test_unknown_users_are_kept_with_null_user_and_not_merged(tmp_path: Path) -> None:
    rows = [row("d.png", "same", user="deleted_account"), row("n.png", "same", user=None, minute=2),
            row("k.png", "same", user="u9", minute=4)]
    out, report = run(tmp_path, rows)
    assert [(r["request_id"], r["user"]) for r in out] == [("d.png", None), ("n.png", None), ("k.png", "u9")]
    assert report["caveats"]["deleted_account_user"] == 1 and report["caveats"]["null_user"] == 1


def test_odd_parameters_are_kept_with_a_counted_caveat(tmp_path: Path) -> None:
    out, report = run(tmp_path, [row("a.png", sampler=12, width=0), row("b.png", "p", 1, sampler=None)])
    assert [(r["sampler"], r["width"], r["height"]) for r in out] == [("diffusiondb-code-12", None, 1024),
                                                                      (None, 1024, 1024)]
    caveats = report["caveats"]
    assert (caveats["unknown_sampler_code"], caveats["null_sampler"], caveats["invalid_size_or_steps_to_null"]) == (
        1, 1, 1)


def test_report_file_and_no_leftovers(tmp_path: Path) -> None:
    _, report = run(tmp_path, [row("a.png")])
    assert json.loads((tmp_path / "t.import.json").read_text()) == report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.parquet", "t.import.json", "t.parquet"]


def test_small_buckets_give_the_same_trace(tmp_path: Path) -> None:
    # (prompt, minute, user) = (i % 4, i % 6, i % 2) is fixed by i % 12: 12 jobs of 5 images, 2 per minute.
    rows = [row(f"i{i}.png", f"p{i % 4}", i % 6, user=f"u{i % 2}") for i in range(60)]
    small, _ = run(tmp_path, rows, bucket_rows=2, batch_rows=7)
    big, _ = run(tmp_path, rows)
    assert small == big and len(big) == 12
    assert [r["request_id"] for r in big[:2]] == sorted(["i0.png", "i6.png"], key=jitter)


def test_accepted_schema_variants(tmp_path: Path) -> None:
    """Re-exports: string sampler (HF loader), int64 sizes, large_string, ns naive timestamps (= UTC)."""
    schema = pa.schema([f if f.name not in {"sampler", "width", "prompt", "timestamp"} else
                        pa.field(f.name, {"sampler": pa.string(), "width": pa.int64(), "prompt": pa.large_string(),
                                          "timestamp": pa.timestamp("ns")}[f.name]) for f in SCHEMA])
    rows = [row("a.png", sampler="K_Euler_Ancestral", timestamp=at(0).replace(tzinfo=None))]
    out = tmp_path / "t.parquet"
    import_diffusiondb(write(tmp_path / "m.parquet", rows, schema), out)
    assert pq.read_table(out).to_pylist()[0]["sampler"] == "k_euler_ancestral"


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.remove(s.get_field_index("sampler")), "missing column 'sampler' (expected uint8"),
    (lambda s: s.set(s.get_field_index("timestamp"), pa.field("timestamp", pa.string())),
     "column 'timestamp': expected timestamp[us, tz=UTC], got string"),
    (lambda s: s.set(s.get_field_index("prompt"), pa.field("prompt", pa.int64())),
     "column 'prompt': expected string, got int64"),
])
def test_malformed_schema_names_the_column(tmp_path: Path, change: Callable[[pa.Schema], pa.Schema],
                                           message: str) -> None:
    schema = change(SCHEMA)
    table = pa.Table.from_pylist([], schema=schema)
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad\.parquet") as err:
        import_diffusiondb(tmp_path / "bad.parquet", tmp_path / "t.parquet")
    assert message in str(err.value)
    assert not (tmp_path / "t.parquet").exists()


def test_duplicate_image_names_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"'twice\.png' appears in more than one job"):
        run(tmp_path, [row("twice.png", "a"), row("twice.png", "b")])
    assert not (tmp_path / "t.parquet").exists()


def test_cli_bad_input_exits_2_with_one_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=SCHEMA.remove(SCHEMA.get_field_index("user_name"))), bad)
    for path, message in ((bad, "missing column 'user_name'"), (tmp_path / "none.parquet", "not found")):
        code, _, err = cli("trace", "import-diffusiondb", str(path), "--out", str(tmp_path / "t.parquet"))
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_prints_report_and_next_step(cli: Cli, tmp_path: Path) -> None:
    meta = write(tmp_path / "metadata.parquet", [row("a.png"), row("b.png", seed=2), row("c.png", minute=None)])
    code, out, err = cli("trace", "import-diffusiondb", str(meta), "--out", str(tmp_path / "t.parquet"),
                         "--embedder", "none")
    assert code == 0, err
    assert "rows read 3; requests written 1 (1 images merged into 1 multi-image jobs)" in out
    assert "null_timestamp 1" in out and f"next: python -m sim trace embed {tmp_path / 't.parquet'}" in out


def test_cli_embeds_by_default_so_two_commands_reach_a_simulation(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sim.embedding import embed

    monkeypatch.setattr(embed, "DEFAULT_CACHE", tmp_path / "cache")
    meta = write(tmp_path / "metadata.parquet", [row("a.png"), row("b.png", minute=3)])
    trace = tmp_path / "t.parquet"
    code, out, err = cli("trace", "import-diffusiondb", str(meta), "--out", str(trace), "--embedder", "hash")
    assert code == 0, err
    assert f"next: python -m sim run EXPERIMENT.yaml --set trace.path={trace}" in out
    exp = tmp_path / "e.yaml"
    exp.write_text(f"name: e\ntrace: {{path: {trace}}}\n")
    code, _, err = cli("run", str(exp), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err


def test_import_embed_simulate(tmp_path: Path) -> None:
    from sim.embedding.embed import embed_trace
    from sim.experiments.runner import simulate
    from sim.experiments.sweep import experiment_from_data
    from sim.trace import load_trace

    rows = [row(f"i{i}-{k}.png", f"a cat number {i % 40}", i, user=f"u{i % 7}", seed=k)
            for i in range(120) for k in range(2)]
    _, report = run(tmp_path, rows)
    assert report["requests"] == 120 and report["images_collapsed"] == 120
    path = tmp_path / "t.parquet"
    embed_trace(path, "hash", cache_dir=None)
    trace = load_trace(path)
    assert len(trace) == 120 and len(trace.prompts) == 40
    _, records, summary = simulate(experiment_from_data({"trace": {"path": str(path)}}).base)
    # 40 prompts, each asked 3 times: the 80 exact repeats hit at similarity 1.0 (K = 25); the hash
    # embedder's unrelated vectors give no approximate hits.
    assert (summary["requests"], summary["hits"], summary["k_histogram"]["25"]) == (120, 80, 80)
    assert len(records["k_used"]) == 120
