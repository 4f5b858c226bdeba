"""The sweep grammar: a base run config varied by a grid, zipped lists and seed replicas, one run folder per point."""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.config import RunConfig, check_removed
from sim.errors import ConfigError
from sim.fileio import parse_yaml, read_yaml_mapping
from sim.limits import MAX_RUN_FOLDER_NAME_BYTES
from sim.schema import INT_LIMIT, build, set_dotted, to_data

#: a sweep of more points than this needs an explicit yes (`python -m sim run --yes`)
MAX_POINTS = 10_000
#: seed replicas of one sweep at most, even with --yes
MAX_SEED_REPLICAS = 1_000_000
SWEEP_SECTIONS = ("sweep", "grid", "zip", "seeds")

Axis = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Experiment:
    """A base run swept three ways: a cartesian grid over dotted keys (``sweep`` holds the grid's axes,
    from ``grid:`` or the older ``sweep:``), ``zipped`` lists that vary together, and seed replicas.
    Point order: the grid's product (first key outermost), then the zip rows, then the seeds."""

    base: RunConfig
    sweep: tuple[Axis, ...] = ()
    zipped: tuple[Axis, ...] = ()
    seeds: tuple[int, ...] = ()

    def num_points(self) -> int:
        n = len(self.zipped[0][1]) if self.zipped else 1
        for _, values in self.sweep:
            n *= len(values)
        return n * (len(self.seeds) or 1)

    def swept_keys(self) -> list[str]:
        """The dotted keys that vary, in run-name order (``seed`` last when replicated)."""
        return [k for k, _ in self.sweep] + [k for k, _ in self.zipped] + (["seed"] if self.seeds else [])

    def spec(self) -> dict[str, Any]:
        """The plain-data form of the whole experiment (what a results folder's experiment.yaml holds)."""
        out: dict[str, Any] = {"base": to_data(self.base), "sweep": {k: list(v) for k, v in self.sweep}}
        if self.zipped:
            out["zip"] = {k: list(v) for k, v in self.zipped}
        if self.seeds:
            out["seeds"] = list(self.seeds)
        return out

    def points(self) -> list[list[tuple[str, Any]]]:
        """(dotted key, value) assignments per point, in run order."""
        rows = [list(zip([k for k, _ in self.zipped], vals, strict=True))
                for vals in zip(*(v for _, v in self.zipped), strict=True)] if self.zipped else [[]]
        seeds: list[list[tuple[str, Any]]] = [[("seed", s)] for s in self.seeds] or [[]]
        keys = [k for k, _ in self.sweep]
        return [list(zip(keys, values, strict=True)) + row + seed
                for values in itertools.product(*(v for _, v in self.sweep)) for row in rows for seed in seeds]

    def runs(self) -> list[tuple[str, RunConfig]]:
        """(run folder name, config) per point; names come from the swept values (Hydra style)."""
        if not (self.sweep or self.zipped or self.seeds):
            return [("run", self.base)]
        out = []
        seen: dict[str, str] = {}
        for assignment in self.points():
            data = to_data(self.base)
            for key, value in assignment:
                set_dotted(data, key, value)
            name = ",".join(f"{k}={_fmt(v)}" for k, v in assignment)
            _check_folder_name(name, seen, assignment)
            try:
                check_removed(data)
                out.append((name, build(RunConfig, data)))
            except ConfigError as exc:
                raise ConfigError(f"sweep point {name}: {exc}") from None
        return out


def _check_folder_name(name: str, seen: dict[str, str], assignment: list[tuple[str, Any]]) -> None:
    """Two points may not share a run folder (the second would silently replace the first: duplicate values in
    a list, or values whose names collide such as ``a/b`` and ``a_b``), and a name must fit the file system."""
    point = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in assignment)
    if name in seen:
        raise ConfigError(f"sweep: the points {seen[name]} and {point} would both write run folder {name!r} "
                          "(a value listed twice, or values whose folder names collide); make them distinct")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_RUN_FOLDER_NAME_BYTES:
        raise ConfigError(f"sweep point {point}: its run folder name is {len(name.encode())} bytes, over the file "
                          f"system's limit ({MAX_RUN_FOLDER_NAME_BYTES}); sweep fewer keys or shorter values")
    seen[name] = point


def _fmt(value: Any) -> str:
    return "null" if value is None else str(value).replace("/", "_")


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """``key.sub=value`` strings; the value is parsed as YAML (numbers, lists, null)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with a dotted key")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            why = " ".join(str(exc).split())
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({why})") from None
        out.append((key, value))
    return out


def load_experiment(
    path: str | Path, overrides: list[tuple[str, Any]] = (), max_points: int | None = MAX_POINTS  # type: ignore[assignment]
) -> Experiment:
    """Read, override and validate an experiment YAML; every error names the file and dotted key.
    ``max_points=None`` accepts a sweep of any size (the CLI's ``--yes``)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "experiment file", ConfigError)
    return experiment_from_data(raw, overrides, source=str(path), max_points=max_points)


def _split_sections(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sweep sections, run config data) of an experiment's data, sweep sections normalised to mappings."""
    if "base" in data:
        unknown = sorted(set(data) - {"base", *SWEEP_SECTIONS})
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown key beside base (known: base, grid, zip, seeds, sweep)")
        if not isinstance(data["base"], dict):
            raise ConfigError("base: expected a mapping (a complete run config)")
    sections = {name: data.pop(name, None) for name in SWEEP_SECTIONS}
    run_data = data.pop("base") if "base" in data else data
    for name in ("sweep", "grid", "zip"):
        if sections[name] is None:
            sections[name] = {}
        elif not isinstance(sections[name], dict):
            raise ConfigError(f"{name}: expected a mapping of dotted key -> list of values")
    if sections["sweep"] and sections["grid"]:
        raise ConfigError("sweep: give the grid as grid: or as sweep:, not both")
    return sections, run_data


def experiment_from_data(
    raw: dict[str, Any], overrides: list[tuple[str, Any]] = (), source: str = "<config>",  # type: ignore[assignment]
    max_points: int | None = MAX_POINTS,
) -> Experiment:
    """An experiment from its data: either ``base`` (a run config) beside ``grid``/``zip``/``seeds``, or a
    run config at the top level with those sections (and the older ``sweep:``, a grid) beside it."""
    data = copy.deepcopy(raw)
    try:
        sections, run_data = _split_sections(data)
        grid_name = "grid" if sections["grid"] else "sweep"
        grid_raw, zip_raw = sections[grid_name], sections["zip"]
        for key, value in overrides:
            head, _, rest = key.partition(".")
            if head in ("sweep", "grid") and rest:
                grid_raw[rest] = value  # sweep.KEY=[..] adds a grid axis, whichever name the file uses
            elif head == "zip" and rest:
                zip_raw[rest] = value
            elif key == "seeds":
                sections["seeds"] = value
            else:
                set_dotted(run_data, key[len("base."):] if head == "base" and rest else key, value)
        check_removed(run_data)
        base = build(RunConfig, run_data)
        known = to_data(base)
        grid = _axes(grid_name, grid_raw, known)
        zipped = _axes("zip", zip_raw, known)
        if len({len(v) for _, v in zipped}) > 1:
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in zipped)
            raise ConfigError(f"zip: lists must have equal lengths, got {lengths}")
        seeds = _seeds(sections["seeds"], base.seed, max_points)
        keys = [k for k, _ in grid] + [k for k, _ in zipped] + (["seed"] if seeds else [])
        for key in keys:
            if keys.count(key) > 1:
                raise ConfigError(f"{key}: swept twice (in more than one of grid, zip, seeds)")
        experiment = Experiment(base, grid, zipped, seeds)
        n = experiment.num_points()
        if max_points is not None and n > max_points:
            raise ConfigError(f"{grid_name}: {n:,} sweep points exceed {max_points:,}; pass --yes to run them all")
        experiment.runs()  # validates every point now, not halfway through a sweep
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return experiment


def _axes(section: str, raw: dict[Any, Any], known: dict[str, Any]) -> tuple[Axis, ...]:
    """Validated (dotted key, values) axes of one sweep section; each key must be a key of the run config."""
    out = []
    for key, values in raw.items():
        key = str(key)
        node: Any = known
        for i, part in enumerate(key.split(".")):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(key.split(".")[:i]) or "the run config"
                raise ConfigError(f"{section}.{key}: unknown key (no {part!r} in {where})")
            node = node[part]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{section}.{key}: expected a non-empty list of values")
        out.append((key, tuple(values)))
    return tuple(out)


def _seeds(raw: Any, first: int, max_points: int | None) -> tuple[int, ...]:
    """``seeds: [3, 7]`` (those seeds) or ``seeds: 4`` (four replicas from the base seed up); a count is checked
    against the sweep's point limit before any seed is made (10**12 replicas is a typo, not a sweep)."""
    if raw is None:
        return ()
    if isinstance(raw, int) and not isinstance(raw, bool):
        most = max_points if max_points is not None else MAX_SEED_REPLICAS
        if raw < 1:
            raise ConfigError(f"seeds: expected a count >= 1 or a list of seeds, got {raw}")
        if raw > most:
            hint = "; pass --yes to run more" if max_points is not None and raw <= MAX_SEED_REPLICAS else ""
            raise ConfigError(f"seeds: {raw:,} replicas exceed {most:,}{hint}")
        if first + raw - 1 > INT_LIMIT:
            raise ConfigError(f"seeds: replicas from seed {first} would pass 2**63 - 1")
        return tuple(range(first, first + raw))
    if (not isinstance(raw, list) or not raw or any(not isinstance(s, int) or isinstance(s, bool) or not
                                                    0 <= s <= INT_LIMIT for s in raw) or len(set(raw)) != len(raw)):
        raise ConfigError("seeds: expected a count >= 1 or a non-empty list of distinct integers in 0..2**63 - 1, "
                          f"got {raw!r}")
    return tuple(raw)


