"""One contract suite that every registered eviction policy must pass, for each unit it supports."""

from __future__ import annotations

import importlib
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cache.admission import ADMISSIONS
from sim.cache.kselect import DEFAULT_KS
from sim.cache.offline import OFFLINE
from sim.cache.policies import POLICIES, WHOLE_PROMPT, Item, Policy, RequestContext, Unit
from sim.errors import RegistryError
from sim.registry import Registry
from tests.helpers import drain

ALL_UNITS: tuple[Unit, ...] = typing.get_args(Unit)


def make(name: str, unit: Unit) -> Policy:
    """An online policy, or an offline reference without a trace (its hooks must still keep the contract)."""
    return (OFFLINE if name in OFFLINE else POLICIES).get(name)(unit)


CASES = [
    pytest.param(name, unit, id=f"{name}-{unit}")
    for reg in (POLICIES, OFFLINE) for name in reg.names() for unit in reg.get(name).units  # type: ignore[attr-defined]
]

# An operation on a policy: ("insert" | "hit" | "remove", index into the item universe).
Op = tuple[str, int]
OPS = st.lists(
    st.tuples(st.sampled_from(["insert", "hit", "hit", "remove"]), st.integers(0, 19)), min_size=1, max_size=60
)


def universe(unit: Unit) -> list[Item]:
    """Twenty distinct items of the shape the store produces for ``unit``."""
    if unit == "prompt":
        return [(entry_id, WHOLE_PROMPT) for entry_id in range(20)]
    return [(entry_id, k) for entry_id in range(4) for k in DEFAULT_KS]


def apply_ops(policy: Policy, items: list[Item], ops: list[Op]) -> set[Item]:
    """Apply ops, skipping those invalid for the current membership; returns the expected membership."""
    tracked: set[Item] = set()
    for now, (op, i) in enumerate(ops):
        item = items[i]
        if op == "insert" and item not in tracked:
            policy.on_insert(item, float(now))
            tracked.add(item)
        elif op == "hit" and item in tracked:
            policy.on_hit(item, float(now))
        elif op == "remove" and item in tracked:
            policy.on_remove(item)
            tracked.discard(item)
    return tracked


def populated(name: str, unit: Unit) -> tuple[Policy, set[Item]]:
    """A policy after a fixed mix of inserts, hits and removes."""
    items = universe(unit)
    ops: list[Op] = [("insert", i) for i in range(12)]
    ops += [("hit", i) for i in (3, 7, 7, 1, 11, 3, 3, 0)]
    ops += [("remove", 5), ("remove", 0), ("insert", 15), ("hit", 15), ("insert", 5)]
    policy = make(name, unit)
    return policy, apply_ops(policy, items, ops)



# -- registry -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", POLICIES.names())
def test_registry_key_is_module_file_name(name: str) -> None:
    cls = POLICIES.get(name)
    assert cls.__module__.rsplit(".", 1)[1] == name
    assert cls.name == name
    assert importlib.import_module(cls.__module__).__file__.endswith(f"{name}.py")  # type: ignore[union-attr]


@pytest.mark.parametrize("name", POLICIES.names())
def test_units_are_known_and_unsupported_units_are_refused(name: str) -> None:
    cls = POLICIES.get(name)
    assert cls.units and set(cls.units) <= set(ALL_UNITS)
    for unit in ALL_UNITS:
        if unit in cls.units:
            assert cls(unit).unit == unit
        else:
            with pytest.raises(ValueError, match=f"policy {name} supports eviction units"):
                cls(unit)


def test_registry_has_the_papers_policies() -> None:
    assert {"fifo", "lru", "lfu", "lcbfu"} <= set(POLICIES.names())


def test_registering_twice_is_an_error() -> None:
    reg: Registry[type[Policy]] = Registry("eviction policy")
    first, second = POLICIES.get("fifo"), POLICIES.get("lru")
    reg.register("x")(first)
    with pytest.raises(RegistryError, match="eviction policy 'x' is registered twice"):
        reg.register("x")(second)
    assert reg.get("x") is first  # the first registration is not overwritten
    assert reg.names() == ("x",)


def test_unknown_name_is_a_registry_error() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)
    reg.register("a")(1)
    with pytest.raises(RegistryError, match="unknown thing 'c'; known: a, b"):
        reg.get("c")
    assert "a" in reg and "c" not in reg


# -- contract -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "unit"), CASES)
def test_new_policy_is_empty(name: str, unit: Unit) -> None:
    policy = make(name, unit)
    assert len(policy) == 0
    assert policy.items() == []
    assert (0, 5) not in policy and (0, WHOLE_PROMPT) not in policy


@pytest.mark.parametrize(("name", "unit"), CASES)
def test_victim_is_tracked(name: str, unit: Unit) -> None:
    policy, tracked = populated(name, unit)
    assert len(tracked) == 12
    victim = policy.victim()
    assert victim in tracked
    assert victim in policy


@pytest.mark.parametrize(("name", "unit"), CASES)
def test_single_item_is_the_victim(name: str, unit: Unit) -> None:
    policy = make(name, unit)
    item = universe(unit)[7]
    policy.on_insert(item, 0.0)
    policy.on_hit(item, 1.0)
    assert policy.victim() == item


@pytest.mark.parametrize(("name", "unit"), CASES)
def test_victim_is_pure(name: str, unit: Unit) -> None:
    policy, tracked = populated(name, unit)
    before_items = sorted(policy.items())
    first = policy.victim()
    assert policy.victim() == first
    assert policy.victim() == first
    assert len(policy) == len(tracked)
    assert sorted(policy.items()) == before_items == sorted(tracked)
    # Repeated victim() calls must not change the eviction order either.
    twin, _ = populated(name, unit)
    assert drain(policy) == drain(twin)


@pytest.mark.parametrize(("name", "unit"), CASES)
def test_on_remove_forgets_exactly_that_item(name: str, unit: Unit) -> None:
    policy, tracked = populated(name, unit)
    victim = policy.victim()
    other = sorted(tracked - {victim})[3]
    policy.on_remove(other)
    assert other not in policy
    assert len(policy) == len(tracked) - 1
    assert sorted(policy.items()) == sorted(tracked - {other})
    assert policy.victim() == victim  # removing a non-victim keeps the victim
    policy.on_remove(victim)
    assert victim not in policy
    assert policy.victim() not in (victim, other)
    assert sorted(policy.items()) == sorted(tracked - {victim, other})


@pytest.mark.parametrize(("name", "unit"), CASES)
def test_drain_returns_every_item_once(name: str, unit: Unit) -> None:
    policy, tracked = populated(name, unit)
    order = drain(policy)
    assert sorted(order) == sorted(tracked)
    assert len(order) == len(set(order))
    assert len(policy) == 0 and policy.items() == []


@pytest.mark.parametrize(("name", "unit"), CASES)
def test_removed_item_can_be_reinserted(name: str, unit: Unit) -> None:
    policy, tracked = populated(name, unit)
    item = sorted(tracked)[0]
    policy.on_remove(item)
    policy.on_insert(item, 100.0)
    policy.on_hit(item, 101.0)
    assert item in policy
    assert sorted(policy.items()) == sorted(tracked)
    assert sorted(drain(policy)) == sorted(tracked)


@pytest.mark.parametrize(("name", "unit"), CASES)
@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_random_ops_track_inserted_minus_removed(name: str, unit: Unit, ops: list[Op]) -> None:
    policy = make(name, unit)
    tracked = apply_ops(policy, universe(unit), ops)
    assert len(policy) == len(tracked)
    assert set(policy.items()) == tracked
    assert all(item in policy for item in tracked)
    assert not any(item in policy for item in set(universe(unit)) - tracked)
    if tracked:
        first = policy.victim()
        assert first in tracked
        assert policy.victim() == first
        assert set(policy.items()) == tracked
    assert sorted(drain(policy)) == sorted(tracked)


# -- admission contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ADMISSIONS.names())
def test_admission_is_deterministic_per_seed_and_answers_bools(name: str) -> None:
    import numpy as np

    def answers(seed: int) -> list[bool]:
        adm = ADMISSIONS.get(name)(None, np.random.default_rng(seed))
        return [adm.admit(RequestContext(i, float(i), key=i % 7)) for i in range(200)]

    first = answers(3)
    assert first == answers(3)
    assert all(isinstance(a, bool) for a in first)
    assert any(first), "an admission policy that never admits would empty every cache"
