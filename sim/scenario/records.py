"""The per-request record schema every executor writes (one flat row per request, Ciw style)."""

from __future__ import annotations

import numpy as np

#: what happened to a request; ``outcome`` holds an index into this tuple (names in requests.parquet)
OUTCOMES = ("miss", "approx_hit", "hole_hit", "image_hit", "small_model", "no_cache")
MISS, APPROX_HIT, HOLE_HIT, IMAGE_HIT, SMALL_MODEL, NO_CACHE = range(len(OUTCOMES))
#: outcomes that served a request from something cached
HIT_OUTCOMES = (APPROX_HIT, HOLE_HIT, IMAGE_HIT)

# name -> (dtype, fill value); the order is the column order of requests.parquet after request_id and user.
# Times are seconds; NaN where a stage did not happen or the executor keeps no clock (sequential).
RECORD_SCHEMA: dict[str, tuple[str, object]] = {
    "arrival_s": ("f8", np.nan),
    "embed_s": ("f8", np.nan),  # prompt embedding
    "search_s": ("f8", np.nan),  # vector search over the cached prompts
    "fetch_s": ("f8", np.nan),  # reading the cached latent or image from its storage tier
    "queue_wait_s": ("f8", np.nan),
    "start_s": ("f8", np.nan),  # GPU start
    "service_s": ("f8", np.nan),  # GPU time: text encoder + steps + VAE decode
    "finish_s": ("f8", np.nan),
    "latency_s": ("f8", np.nan),  # finish - arrival
    "admit_s": ("f8", np.nan),  # when what a miss produced became usable (NaN: nothing admitted)
    "similarity": ("f8", np.nan),  # cosine to the nearest cached prompt on the K table's scale
    "similarity_raw": ("f8", np.nan),  # the retriever's cosine before the similarity map
    "matched_entry": ("i8", -1),
    "k_selected": ("i8", 0),  # K the similarity asked for
    "k_used": ("i8", 0),  # K of the latent actually reused (0: none)
    "hole": ("?", False),
    "outcome": ("i1", MISS),
    "gpu_steps": ("i8", 0),  # denoising steps run on a GPU (0: no GPU work)
    "num_steps": ("i8", 0),  # N
    "gpu": ("i8", -1),
    "batch_id": ("i8", -1),
    "batch_size": ("i8", 0),
    "quality": ("f8", np.nan),  # derived after the run from (outcome, K, similarity)
    "num_evicted": ("i8", 0),
    "admitted_entry": ("i8", -1),
    "warmup": ("?", False),  # excluded from summary statistics (metrics.warmup_*)
}
RECORD_COLUMNS = tuple(RECORD_SCHEMA)

Records = dict[str, np.ndarray]


def new_records(n: int) -> Records:
    """Empty records for ``n`` requests, every column at its fill value."""
    return {name: np.full(n, fill, dtype=dtype) for name, (dtype, fill) in RECORD_SCHEMA.items()}
