"""DiffusionDB importer: metadata(-large).parquet -> canonical trace, streamed in three bounded passes.

Source schema (poloclub/diffusiondb README, "Metadata Schema"; both tables share it):
image_name string, prompt string, part_id uint16, seed uint32, step uint16, cfg float32,
sampler uint8 (code, mapping below), width uint16, height uint16, user_name string,
timestamp timestamp (UTC, minute resolution; read by Arrow as timestamp[us, tz=UTC]),
image_nsfw float32, prompt_nsfw float32. Accepted variants, because re-exports of the table exist:
any integer width, float64, large_string / dictionary-encoded strings, any timestamp unit, and a
string sampler (the Hugging Face loader maps the code to its name).

Passes: (1) read only the key columns, drop and count bad rows, hash each image's job key
(prompt, user_name, step, cfg, sampler, width, height) and keep 20 bytes per image; group jobs
by (minute, key) with a numpy lexsort; (2) re-read, keep the first image of each job (file
order) and spill it to a time-bucket file; (3) sort each bucket by arrival and append it to the
output. Memory is O(rows × ~24 bytes) plus one bucket, never the prompt text of the whole table.

Arrival: arrival_s = (minute - first kept minute) × 60 + jitter, jitter = 60 × top 53 bits of
SHA-1(image_name) / 2^53, in [0, 60): deterministic, independent of file order and of any RNG.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sim.errors import InputError
from sim.fileio import atomic_path, check_output_file, write_text_atomic, writing
from sim.trace import TRACE_SCHEMA, embeddings_path, parquet_errors

EXPECTED = {  # column -> the type DiffusionDB documents (used in error messages)
    "image_name": "string", "prompt": "string", "part_id": "uint16", "seed": "uint32", "step": "uint16",
    "cfg": "float32", "sampler": "uint8 (sampler code) or string", "width": "uint16", "height": "uint16",
    "user_name": "string", "timestamp": "timestamp[us, tz=UTC]", "image_nsfw": "float32",
    "prompt_nsfw": "float32",
}
# DiffusionDB README mapping (its HF loading script spells 5 as "ddik_heunm", a typo of k_heun).
SAMPLERS = {1: "ddim", 2: "plms", 3: "k_euler", 4: "k_euler_ancestral", 5: "k_heun", 6: "k_dpm_2",
            7: "k_dpm_2_ancestral", 8: "k_lms", 9: "others"}
DELETED_USER = "deleted_account"
PARAMS = ("step", "cfg", "sampler", "width", "height")  # seed differs between the images of one job
SCAN_COLUMNS = ["image_name", "prompt", "user_name", "timestamp", *PARAMS]
SPILL_COLUMNS = ["image_name", "prompt", "user_name", "timestamp", "step", "sampler", "width", "height"]
_UNIT_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_string(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _type_ok(name: str, t: pa.DataType) -> bool:
    kind = EXPECTED[name].split()[0]
    if kind == "string":
        return _is_string(t)
    if kind.startswith("uint8"):
        return pa.types.is_integer(t) or _is_string(t)
    if kind.startswith(("uint", "int")):
        return pa.types.is_integer(t)
    if kind.startswith("float"):
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    return pa.types.is_timestamp(t)


def open_metadata(path: Path) -> pq.ParquetFile:
    """Open a DiffusionDB metadata table; a missing column or a wrong type is an InputError naming it."""
    if not str(path).strip() or str(path) == ".":
        raise InputError("metadata: empty path (name DiffusionDB's metadata parquet file)")
    with parquet_errors(path, "DiffusionDB metadata"):
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected DiffusionDB's metadata parquet file")
        # No pre-buffering: a 14M-row table may be one row group, and buffering it whole costs GBs.
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 23)
    schema = pf.schema_arrow
    for name, expected in EXPECTED.items():
        if name not in schema.names:
            raise InputError(f"{path}: missing column '{name}' (expected {expected}; DiffusionDB metadata has "
                             f"13 columns: {', '.join(EXPECTED)})")
        actual = schema.field(name).type
        if not _type_ok(name, actual):
            raise InputError(f"{path}: column '{name}': expected {expected}, got {actual}")
    return pf


def _strings(arr: pa.Array) -> pa.Array:
    return arr if arr.type == pa.string() else arr.cast(pa.string())


def _epoch_s(ts: pa.Array) -> np.ndarray:
    """Whole seconds since the epoch (UTC; Arrow stores instants in UTC whatever the tz); nulls -> 0."""
    raw = ts.cast(pa.int64()).fill_null(0).to_numpy()
    return np.floor_divide(raw, _UNIT_PER_S[ts.type.unit])


def _ints(arr: pa.Array) -> np.ndarray:
    return arr.cast(pa.int64()).fill_null(-1).to_numpy()


def _job_hash(b: pa.RecordBatch) -> np.ndarray:
    """64-bit hash of each image's job key: pandas' SipHash (fixed key, so deterministic) per column,
    mixed by multiply-xor. Collisions only matter within one minute (a few hundred keys): ~1e-15."""
    import pandas as pd  # only here: `python -m sim --help` should not pay for pandas

    def column(name: str) -> np.ndarray:
        arr = b.column(name)
        if _is_string(arr.type):  # object arrays straight from Arrow: no pandas string-dtype round trip
            values = _strings(arr).to_numpy(zero_copy_only=False)
        elif pa.types.is_floating(arr.type):
            values = arr.cast(pa.float64()).fill_null(-1.0).to_numpy()
        else:
            values = _ints(arr)
        return pd.util.hash_array(values, categorize=False)

    h = column("prompt")
    for name in ("user_name", *PARAMS):
        h = (h * np.uint64(0x100000001B3)) ^ column(name)  # uint64 arithmetic wraps, as intended
    return h


def _parse_time(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{flag}: {text!r} is not an ISO date or datetime "
                         "(e.g. 2022-08-10 or 2022-08-10T12:00)") from None
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp())


def _utc(seconds: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=int(seconds))).isoformat()


def _scan(pf: pq.ParquetFile, start: int | None, end: int | None, batch_rows: int, progress: bool
          ) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1: counts, and (row, minute, job hash) of every kept image."""
    from tqdm import tqdm

    counts = dict(rows_read=0, null_timestamp=0, empty_prompt=0, null_image_name=0, outside_date_range=0)
    total = pf.metadata.num_rows
    # Preallocated (untouched pages cost no memory) so that no concatenation doubles the peak:
    # 20 bytes per kept image, the importer's only O(rows) state besides pass 2's 4-byte sizes.
    rows = np.empty(total, np.uint32 if total < 2**32 else np.int64)
    minutes = np.empty(total, np.int64)
    hashes = np.empty(total, np.uint64)
    kept = 0
    bar = tqdm(total=pf.metadata.num_rows, unit="row", unit_scale=True, desc="scan", disable=not progress)
    for b in pf.iter_batches(batch_size=batch_rows, columns=SCAN_COLUMNS):
        n = b.num_rows
        secs = _epoch_s(b.column("timestamp"))
        null_ts = b.column("timestamp").is_null().to_numpy(zero_copy_only=False)
        text = pc.utf8_trim_whitespace(_strings(b.column("prompt")))
        empty = pc.fill_null(pc.equal(pc.utf8_length(text), 0), True).to_numpy(zero_copy_only=False) & ~null_ts
        no_name = b.column("image_name").is_null().to_numpy(zero_copy_only=False) & ~null_ts & ~empty
        ok = ~(null_ts | empty | no_name)
        in_range = ok.copy()
        if start is not None:
            in_range &= secs >= start
        if end is not None:
            in_range &= secs < end
        # Each row is counted under its first reason: data problems first, then the date filter.
        counts["null_timestamp"] += int(null_ts.sum())
        counts["empty_prompt"] += int(empty.sum())
        counts["null_image_name"] += int(no_name.sum())
        counts["outside_date_range"] += int((ok & ~in_range).sum())
        idx = np.flatnonzero(in_range)
        end_kept = kept + len(idx)
        rows[kept:end_kept] = idx + counts["rows_read"]
        minutes[kept:end_kept] = secs[idx] // 60
        hashes[kept:end_kept] = _job_hash(b)[idx]  # hashing the dropped rows too is cheaper than a take
        kept = end_kept
        counts["rows_read"] += n
        bar.update(n)
    bar.close()
    return counts, rows[:kept], minutes[:kept], hashes[:kept]


def _group(rows: np.ndarray, minutes: np.ndarray, hashes: np.ndarray, collapse: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first row, minute, number of images) of each job; first = earliest in file order."""
    if not collapse:
        return rows, minutes, np.ones(len(rows), np.int64)
    order = np.lexsort((hashes, minutes))  # stable: rows of one job stay in file order
    m, h = minutes[order], hashes[order]
    starts = np.flatnonzero(np.r_[True, (m[1:] != m[:-1]) | (h[1:] != h[:-1])])
    sizes = np.diff(np.r_[starts, len(order)])
    return rows[order[starts]], m[starts], sizes


def _spill(pf: pq.ParquetFile, job_size: np.ndarray, uniq_minutes: np.ndarray, bucket_of: np.ndarray,
           folder: Path, batch_rows: int) -> None:
    """Pass 2: write the first image of every selected job to the bucket file of its minute."""
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    offset = 0
    try:
        for b in pf.iter_batches(batch_size=batch_rows, columns=SPILL_COLUMNS):
            sizes = job_size[offset:offset + b.num_rows]
            idx = np.flatnonzero(sizes)
            if len(idx):
                t = b.take(pa.array(idx))
                secs = _epoch_s(t.column("timestamp"))
                minute = secs // 60
                bucket = bucket_of[np.searchsorted(uniq_minutes, minute)]
                cols = {
                    "row": pa.array(idx + offset), "minute": pa.array(minute),
                    "images": pa.array(sizes[idx]), "off_minute": pa.array(secs % 60 != 0),
                    **{c: (_strings(t.column(c)) if _is_string(t.column(c).type) else t.column(c))
                       for c in SPILL_COLUMNS if c != "timestamp"},
                }
                out = pa.RecordBatch.from_pydict(cols)
                for k in np.unique(bucket):
                    w = writers.get(int(k))
                    if w is None:
                        w = writers[int(k)] = pa.ipc.new_file(str(folder / f"bucket-{k:06d}.arrow"), out.schema)
                    w.write_batch(out.filter(pa.array(bucket == k)))
            offset += b.num_rows
    finally:
        for w in writers.values():
            w.close()


def _sampler_names(arr: pa.ChunkedArray) -> tuple[pa.Array, int]:
    """Lower-case sampler names, and how many codes were outside DiffusionDB's mapping."""
    arr = arr.combine_chunks()
    if _is_string(arr.type):
        return pc.utf8_lower(_strings(arr)), 0
    codes = _ints(arr)
    uniq, inverse = np.unique(codes, return_inverse=True)
    names = [None if c < 0 else SAMPLERS.get(int(c), f"diffusiondb-code-{c}") for c in uniq]
    known = np.isin(uniq, list(SAMPLERS)) | (uniq < 0)
    unknown = int(np.bincount(inverse, minlength=len(uniq))[~known].sum())
    return pc.take(pa.array(names, pa.string()), pa.array(inverse)), unknown


def _positive_int32(arr: pa.ChunkedArray) -> tuple[pa.Array, int]:
    v = _ints(arr.combine_chunks())
    bad = (v < 1) | (v > np.iinfo(np.int32).max)
    return pa.array(np.where(bad, 0, v).astype(np.int32), mask=bad), int((bad & (v != -1)).sum())


def _write_bucket(table: pa.Table, origin_min: int, remaining: int, writer: pq.ParquetWriter,
                  caveats: dict[str, int], model_defaults: bool = False) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Pass 3 for one bucket: sort by arrival, cut at the limit, map columns, append. Returns
    (arrival_s, 64-bit id hash, images merged, jobs with > 1 image) of the written rows."""
    names = table.column("image_name").to_pylist()
    digests = np.frombuffer(b"".join(hashlib.sha1(s.encode("utf-8")).digest()[:8] for s in names), ">u8")
    jitter = (digests >> np.uint64(11)).astype(np.float64) * (60.0 / 2**53)
    minute = table.column("minute").to_numpy()
    order = np.lexsort((table.column("row").to_numpy(), jitter, minute))[:remaining]
    table = table.take(pa.array(order))
    arrival = (minute[order] - origin_min) * 60.0 + jitter[order]
    user = table.column("user_name")
    unknown = pc.fill_null(pc.equal(user, DELETED_USER), True)
    caveats["null_user"] += user.null_count
    caveats["deleted_account_user"] += int(pc.sum(pc.fill_null(pc.equal(user, DELETED_USER), False)).as_py() or 0)
    sampler, bad_code = _sampler_names(table.column("sampler"))
    caveats["unknown_sampler_code"] += bad_code
    caveats["null_sampler"] += sampler.null_count
    ints = {}
    for src, dst in (("width", "width"), ("height", "height"), ("step", "steps")):
        ints[dst], bad = _positive_int32(table.column(src))
        caveats["invalid_size_or_steps_to_null"] += bad
    caveats["timestamp_not_on_minute"] += int(pc.sum(table.column("off_minute")).as_py() or 0)
    if model_defaults:  # counted above all the same: the report describes the source rows
        ints = {k: pa.nulls(len(order), pa.int32()) for k in ints}
        sampler = pa.nulls(len(order), pa.string())
    out = pa.Table.from_arrays([
        table.column("image_name"), pa.array(arrival, pa.float64()), table.column("prompt"),
        pc.if_else(unknown, pa.scalar(None, pa.string()), user), ints["width"], ints["height"], ints["steps"],
        sampler,
    ], schema=TRACE_SCHEMA)
    writer.write_table(out)
    images = table.column("images").to_numpy()
    return arrival, digests[order], int((images - 1).sum()), int((images > 1).sum())


def _duplicate_name(path: Path, dup: set[int]) -> str:
    for b in pq.ParquetFile(path).iter_batches(columns=["request_id"]):
        for s in b.column(0).to_pylist():
            if int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:8], "big") in dup:
                return str(s)
    return "?"


def import_diffusiondb(src: Path, out: Path, *, start: str | None = None, end: str | None = None,
                       limit: int | None = None, collapse: bool = True, model_defaults: bool = False,
                       batch_rows: int = 65_536, bucket_rows: int = 250_000, progress: bool = False
                       ) -> dict[str, Any]:
    """Write the canonical trace ``out`` (atomically) and ``out``'s ``.import.json`` report; return the report.
    ``model_defaults`` writes width, height, steps and sampler as null (the experiment's model applies)."""
    t0, t1 = _parse_time(start, "--start"), _parse_time(end, "--end")
    if limit is not None and limit < 1:
        raise InputError(f"--limit: expected a positive number of requests, got {limit}")
    check_output_file(out, [src])
    report_path = out.with_name(out.name.removesuffix(".parquet") + ".import.json")
    check_output_file(report_path, [src], flag="--out (its .import.json report)")
    check_output_file(embeddings_path(out), [src], flag="--out (its embeddings)")
    pf = open_metadata(src)
    try:
        counts, rows, minutes, hashes = _scan(pf, t0, t1, batch_rows, progress)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{src}: not a readable parquet file ({' '.join(str(exc).split())[:160]})") from None
    if len(rows) == 0:
        raise InputError(f"{src}: no rows left to import ({json.dumps(counts)})")
    first_rows, job_min, sizes = _group(rows, minutes, hashes, collapse)
    del rows, minutes, hashes
    uniq_minutes, per_minute = np.unique(job_min, return_counts=True)
    before = np.cumsum(per_minute) - per_minute  # requests in earlier minutes
    keep_min = before < (limit if limit is not None else len(first_rows))
    uniq_minutes, before = uniq_minutes[keep_min], before[keep_min]
    bucket_of = before // bucket_rows  # whole minutes per bucket, ~bucket_rows requests each
    job_size = np.zeros(counts["rows_read"], np.uint32)  # 4 bytes per row read: the only O(rows) array of pass 2
    selected = job_min <= uniq_minutes[-1]
    job_size[first_rows[selected]] = sizes[selected]
    origin_min = int(uniq_minutes[0])

    caveats = dict.fromkeys(("deleted_account_user", "null_user", "unknown_sampler_code", "null_sampler",
                             "invalid_size_or_steps_to_null", "timestamp_not_on_minute"), 0)
    with writing(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    written, merged, multi = 0, 0, 0
    ids: list[np.ndarray] = []
    first_arrival, last_arrival = 0.0, 0.0
    remaining = limit if limit is not None else len(first_rows)
    with atomic_path(out) as tmp_out:  # never leave a half-written trace behind, whatever stops the import
        try:
            with tempfile.TemporaryDirectory(dir=out.parent, prefix=".import-diffusiondb-") as tmp:
                _spill(pf, job_size, uniq_minutes, bucket_of, Path(tmp), batch_rows)
                del job_size
                with pq.ParquetWriter(tmp_out, TRACE_SCHEMA) as writer:
                    for k in np.unique(bucket_of):
                        with pa.OSFile(str(Path(tmp) / f"bucket-{k:06d}.arrow")) as fh:
                            table = pa.ipc.open_file(fh).read_all()
                        arrival, id64, m, j = _write_bucket(table, origin_min, remaining, writer, caveats,
                                                            model_defaults)
                        written, merged, multi = written + len(arrival), merged + m, multi + j
                        remaining -= len(arrival)
                        first_arrival = float(arrival[0]) if not ids else first_arrival
                        ids.append(id64)
                        last_arrival = float(arrival[-1])
                        del table
        except OSError as exc:
            if exc.errno is None:  # Arrow's read errors carry no errno: the metadata file is damaged
                raise InputError(f"{src}: not a readable parquet file ({' '.join(str(exc).split())[:160]})") from None
            raise  # a write error: atomic_path names the output
        except pa.ArrowException as exc:
            raise InputError(f"{src}: not a readable parquet file ({' '.join(str(exc).split())[:160]})") from None
        uniq_ids, id_counts = np.unique(np.concatenate(ids), return_counts=True)
        if len(uniq_ids) != written:
            name = _duplicate_name(tmp_out, {int(x) for x in uniq_ids[id_counts > 1]})
            raise InputError(f"{src}: column 'image_name': {name!r} appears in more than one job; "
                             "request ids must be unique")

    report = {
        "source": str(src), "output": str(out),
        "filters": {"start": start, "end": end, "limit": limit, "collapse_jobs": collapse,
                    "model_defaults": model_defaults},
        "rows_read": counts["rows_read"],
        "dropped": {k: counts[k] for k in ("null_timestamp", "empty_prompt", "null_image_name")},
        "outside_date_range": counts["outside_date_range"],
        "rows_kept": int(sizes.sum()),
        "requests": written,
        "requests_beyond_limit": len(first_rows) - written,
        "jobs_collapsed": multi, "images_collapsed": merged,
        "caveats": caveats,
        "origin_utc": _utc(origin_min * 60),  # arrival_s = 0; `trace stats` uses it for calendar days and hours
        "first_utc": _utc(origin_min * 60 + int(first_arrival)),
        "last_utc": _utc(origin_min * 60 + int(last_arrival)),
        "span_s": round(last_arrival - first_arrival, 3),
        "arrival": "arrival_s = (minute - origin minute) * 60 + 60 * (top 53 bits of SHA-1(image_name)) / 2**53",
    }
    write_text_atomic(report_path, json.dumps(report, indent=2) + "\n")
    return report


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "import-diffusiondb", help="convert DiffusionDB metadata(-large).parquet to a trace",
        description="Convert DiffusionDB's metadata.parquet (2M) or metadata-large.parquet (14M) to a canonical "
                    "trace: sorted by time, jittered inside each minute, one request per multi-image job, "
                    "then embed its prompts (--embedder none skips that: `python -m sim trace embed OUT` later).",
    )
    cmd.add_argument("metadata", help="DiffusionDB metadata.parquet or metadata-large.parquet")
    cmd.add_argument("--out", required=True, help="trace parquet to write (report beside it: NAME.import.json)")
    cmd.add_argument("--start", help="keep images at or after this UTC date/time (ISO, e.g. 2022-08-10)")
    cmd.add_argument("--end", help="keep images before this UTC date/time (exclusive)")
    cmd.add_argument("--limit", type=int, help="write only the first N requests by arrival")
    cmd.add_argument("--no-collapse", action="store_true",
                     help="one request per image (default: one per job = same prompt, user, minute, parameters)")
    cmd.add_argument("--model-defaults", action="store_true",
                     help="write width/height/steps/sampler as null so the experiment's model applies "
                          "(DiffusionDB is SD 1.x at 512-768 px; the shipped latency profile is SDXL 1024x1024)")
    cmd.add_argument("--embedder", default="minilm",
                     help="embed the trace's prompts right away with this embedder (default minilm; none = skip)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    out = Path(args.out)
    r = import_diffusiondb(Path(args.metadata), out, start=args.start, end=args.end, limit=args.limit,
                           collapse=not args.no_collapse, model_defaults=args.model_defaults,
                           progress=sys.stderr.isatty())
    print(f"rows read {r['rows_read']:,}; requests written {r['requests']:,} "
          f"({r['images_collapsed']:,} images merged into {r['jobs_collapsed']:,} multi-image jobs)")
    print("dropped: " + ", ".join(f"{k} {v:,}" for k, v in r["dropped"].items())
          + f"; outside date range {r['outside_date_range']:,}; beyond --limit {r['requests_beyond_limit']:,}")
    print("kept with caveats: " + ", ".join(f"{k} {v:,}" for k, v in r["caveats"].items()))
    print(f"time span {r['first_utc']} .. {r['last_utc']} ({r['span_s'] / 3600:.1f} h)")
    print(f"wrote {out} and {out.with_name(out.name.removesuffix('.parquet') + '.import.json')}")
    if args.embedder == "none":
        print(f"next: python -m sim trace embed {out}")
        return 0
    from sim.embedding import embed

    written = embed.embed_trace(out, args.embedder, embed.DEFAULT_CACHE)
    print(f"wrote {written}; next: python -m sim run EXPERIMENT.yaml --set trace.path={out}")
    return 0
