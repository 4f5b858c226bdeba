"""Stratified, seeded sample of a run's requests: misses and hits at every K, plus the misses the hits read from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError, InputError
from sim.rng import rng_stream


@dataclass(frozen=True)
class Pick:
    """One request to execute: its row in the run, its stratum, and whether it was sampled or is support."""

    row: int
    stratum: int  # K used (0 = miss)
    role: str  # sample | support (a miss executed only so that a sampled hit finds its latents)


def stratum_label(k: int) -> str:
    return "miss" if k == 0 else f"K={k}"


def _allocate(sizes: list[int], n: int) -> list[int]:
    """Equal shares per stratum, capped by its size; what a small stratum cannot take goes to the others."""
    take = [0] * len(sizes)
    left = n
    while left > 0:
        open_ = [i for i, s in enumerate(sizes) if take[i] < s]
        if not open_:
            break
        share = max(left // len(open_), 1)
        for i in open_:
            if left == 0:
                break
            extra = min(share, sizes[i] - take[i], left)
            take[i] += extra
            left -= extra
    return take


def stratified_sample(k_used: np.ndarray, matched_entry: np.ndarray, admitted_entry: np.ndarray,
                      service_s: np.ndarray, n: int, seed: int) -> tuple[list[Pick], int]:
    """``n`` requests spread equally over the strata (miss, each K used), uniformly at random within each,
    then every sampled hit's admitting miss (admitted_entry == matched_entry) as support; in arrival (row)
    order. Rows without GPU time, and hits whose admitting miss is not in the run, are not sampled.
    Returns (picks, hits left out because their entry was admitted outside the run)."""
    if n < 1:
        raise ConfigError(f"--sample: expected an integer >= 1, got {n}")
    k = np.asarray(k_used, dtype=np.int64)
    admitter = {int(e): i for i, e in enumerate(np.asarray(admitted_entry, dtype=np.int64)) if e >= 0 and k[i] == 0}
    service = np.asarray(service_s, dtype=float)
    usable = np.isfinite(service) & (service > 0)  # zero GPU time (e.g. a served final image): nothing to run
    orphan = 0
    for i in np.flatnonzero(usable & (k > 0)):
        if int(matched_entry[i]) not in admitter:
            usable[i] = False
            orphan += 1
    if not usable.any():
        raise InputError("requests.parquet: no request with a latency and its cached entry's miss to sample")
    strata = sorted({int(v) for v in k[usable]})
    members = [np.flatnonzero(usable & (k == s)) for s in strata]
    take = _allocate([len(m) for m in members], n)
    rng = rng_stream(seed, "validate_sample")
    chosen: dict[int, Pick] = {}
    for s, rows, t in zip(strata, members, take, strict=True):
        for r in rng.choice(rows, size=t, replace=False):
            chosen[int(r)] = Pick(int(r), s, "sample")
    for pick in list(chosen.values()):
        if pick.stratum > 0:
            source = admitter[int(matched_entry[pick.row])]
            if source not in chosen:
                chosen[source] = Pick(source, 0, "support")
    return [chosen[r] for r in sorted(chosen)], orphan
