"""Unit tests for similarity -> K selection, hole resolution and threshold-table validation."""

from __future__ import annotations

import pytest

from sim.cache.kselect import DEFAULT_KS, DEFAULT_THRESHOLDS, MISS, KTable, check_table, resolve_hole


def test_defaults_are_nirvanas_table() -> None:
    # DESIGN.md §1: s > 0.95 -> 25, > 0.90 -> 20, > 0.85 -> 15, > 0.75 -> 10, > 0.65 -> 5.
    assert DEFAULT_THRESHOLDS == ((0.95, 25), (0.90, 20), (0.85, 15), (0.75, 10), (0.65, 5))
    assert DEFAULT_KS == (5, 10, 15, 20, 25)
    assert MISS == 0
    assert KTable().thresholds == DEFAULT_THRESHOLDS


@pytest.mark.parametrize(
    ("similarity", "expected_k"),
    [
        (1.0, 25),
        (0.9500001, 25),
        (0.95, 20),  # strictly greater than: exactly on a threshold falls to the next bin
        (0.93, 20),
        (0.90, 15),
        (0.86, 15),
        (0.85, 10),
        (0.80, 10),
        (0.75, 5),
        (0.70, 5),
        (0.6500001, 5),
        (0.65, MISS),
        (0.3, MISS),
        (0.0, MISS),
        (-1.0, MISS),
    ],
)
def test_select_default_boundaries(similarity: float, expected_k: int) -> None:
    assert KTable().select(similarity) == expected_k


def test_select_nan_is_a_miss() -> None:
    assert KTable().select(float("nan")) == MISS


def test_select_custom_table() -> None:
    table = KTable(((0.8, 10), (0.5, 5)))
    assert [table.select(s) for s in (0.81, 0.8, 0.51, 0.5, -0.2)] == [10, 5, 5, MISS, MISS]
    assert table.lowest == 0.5
    assert KTable().lowest == 0.65


def test_select_takes_first_exceeded_threshold_not_largest_k() -> None:
    # A tunable table need not map higher similarity to higher K; select follows the table order.
    table = KTable(((0.9, 5), (0.7, 25)))
    assert table.select(0.95) == 5
    assert table.select(0.8) == 25


@pytest.mark.parametrize(
    ("k_selected", "cached", "expected"),
    [
        (25, (5, 10, 15, 20, 25), 25),
        (15, (5, 10, 15, 20, 25), 15),
        (20, (5, 10, 15, 25), 15),  # hole at 20 -> largest cached K' <= 20
        (25, (5, 10), 10),
        (25, (5,), 5),
        (15, (20, 25), MISS),  # nothing at or below the asked K
        (10, (), MISS),
        (MISS, (5, 10, 15, 20, 25), MISS),
        (20, (25, 5, 15), 15),  # order of the cached Ks does not matter
        (5, (5,), 5),
    ],
)
def test_resolve_hole(k_selected: int, cached: tuple[int, ...], expected: int) -> None:
    assert resolve_hole(k_selected, cached) == expected


def test_resolve_hole_accepts_any_iterable() -> None:
    assert resolve_hole(20, iter([5, 10, 25])) == 10
    assert resolve_hole(20, {15, 25}) == 15


def test_check_table_accepts_defaults() -> None:
    assert check_table(DEFAULT_THRESHOLDS, DEFAULT_KS) is None
    assert check_table(((0.5, 10),), DEFAULT_KS) is None
    assert check_table(((-1.0, 5),), DEFAULT_KS) is None


def test_check_table_empty() -> None:
    assert check_table((), DEFAULT_KS) == "at least one threshold"


def test_check_table_not_descending() -> None:
    msg = check_table(((0.90, 20), (0.95, 25)), DEFAULT_KS)
    assert msg == "strictly descending similarities, entry 1 (0.95) is not below 0.9"


def test_check_table_equal_similarities_are_not_strictly_descending() -> None:
    msg = check_table(((0.95, 25), (0.85, 15), (0.85, 10)), DEFAULT_KS)
    assert msg == "strictly descending similarities, entry 2 (0.85) is not below 0.85"


def test_check_table_k_not_in_cached_set() -> None:
    msg = check_table(((0.95, 25), (0.90, 30)), DEFAULT_KS)
    assert msg == "entry 1: K in the cached set [5, 10, 15, 20, 25], got 30"
    assert check_table(((0.9, 25),), (5, 10)) == "entry 0: K in the cached set [5, 10], got 25"


@pytest.mark.parametrize("above", [1.0, 1.5, -1.01])
def test_check_table_similarity_out_of_range(above: float) -> None:
    assert check_table(((above, 25),), DEFAULT_KS) == f"entry 0: similarity in [-1, 1), got {above}"


def test_check_table_reports_first_problem() -> None:
    # Entry 0 is out of range and entry 1 has a bad K: the first problem wins.
    assert check_table(((1.2, 25), (0.9, 7)), DEFAULT_KS) == "entry 0: similarity in [-1, 1), got 1.2"
