"""Registering functions for a role, and the classes componentize-py exports.

A decorator (`@sluice.map`, `@sluice.reduce(inverse=...)`, …) records a function's kind and
builds its runner when the module is imported, which componentize-py does once, at build time:
a wrong annotation fails the build, not a batch. The decorated function is returned unchanged,
so it stays a plain function for the author's own tests.

`WitWorld, Transforms = sluice.export_transforms(split, pair)` (likewise `export_reducers`,
`export_updaters`, `export_sinks`) makes the two classes componentize-py looks for in the
app module: the world's `abi-version` and `functions`, and the role's interface. Functions are
numbered in the order given (default: every function registered for the role, in the order
defined).
"""

from __future__ import annotations

import gc
from typing import Any, Callable, List, Optional, Tuple

from . import log, runners
from ._wit import Err, FunctionInfo, FunctionKind, UdfError
from .codec import UdfFailure
from .runners import BatchInfo

#: The Sluice UDF ABI version this SDK speaks (as the Rust SDK's `ABI_VERSION`).
ABI_VERSION = 1

_ROLES = {
    "map": "transform",
    "flat_map": "transform",
    "filter": "transform",
    "map_partitions": "transform",
    "raw": "transform",
    "reduce": "reducer",
    "update": "updater",
    "update_with_key": "updater",
    "map_with_state": "updater",
    "foreach": "sink",
    "foreach_batch": "sink",
}

_KINDS = {
    "map": FunctionKind.MAP,
    "flat_map": FunctionKind.FLAT_MAP,
    "filter": FunctionKind.FILTER,
    "map_partitions": FunctionKind.MAP_PARTITIONS,
    "raw": FunctionKind.RAW,
    "reduce": FunctionKind.REDUCE,
    "update": FunctionKind.UPDATE,
    "update_with_key": FunctionKind.UPDATE_WITH_KEY,
    "map_with_state": FunctionKind.MAP_WITH_STATE,
    "foreach": FunctionKind.FOREACH,
    "foreach_batch": FunctionKind.FOREACH_BATCH,
}


class Registered:
    """One registered function: its name, kind, role and runner."""

    def __init__(self, function: Callable, kind: str, name: str, run: Any, inverse: Any = None):
        self.function = function
        self.kind = kind
        self.role = _ROLES[kind]
        self.name = name
        self.run = run
        self.inverse = inverse

    def info(self) -> Any:
        """The WIT `function-info`."""
        return FunctionInfo(self.name, _KINDS[self.kind], self.inverse is not None)


_REGISTERED: List[Registered] = []


def _register(kind: str, function: Callable, name: Optional[str], **extra: Any) -> Callable:
    name = name or function.__name__
    if kind == "reduce":
        value_codec = runners.reducer(function)
        inverse = extra.get("inverse")
        if inverse is not None:
            runners.reducer(inverse)
        entry = Registered(function, kind, name, value_codec, inverse)
    elif _ROLES[kind] == "transform":
        entry = Registered(function, kind, name, runners.transform(kind, function))
    elif _ROLES[kind] == "updater":
        entry = Registered(function, kind, name, runners.Updater(kind, function))
    else:
        entry = Registered(function, kind, name, runners.sink(kind, function))
    _REGISTERED.append(entry)
    function.__sluice__ = entry  # type: ignore[attr-defined]
    return function


def _decorator(kind: str) -> Callable:
    def decorate(function: Optional[Callable] = None, *, name: Optional[str] = None) -> Any:
        if function is None:
            return lambda f: _register(kind, f, name)
        return _register(kind, function, name)

    decorate.__name__ = kind
    decorate.__doc__ = (
        f"Register a {kind} function: `@sluice.{kind}` or `@sluice.{kind}(name=\"...\")` "
        "(the name a job uses after `#`; default the function's own)."
    )
    return decorate


map = _decorator("map")
flat_map = _decorator("flat_map")
filter = _decorator("filter")
map_partitions = _decorator("map_partitions")
raw = _decorator("raw")
update = _decorator("update")
update_with_key = _decorator("update_with_key")
map_with_state = _decorator("map_with_state")
foreach = _decorator("foreach")
foreach_batch = _decorator("foreach_batch")


def reduce(
    function: Optional[Callable] = None,
    *,
    inverse: Optional[Callable] = None,
    name: Optional[str] = None,
) -> Any:
    """Register a reducer `(a, b) -> value`: `@sluice.reduce`, or `@sluice.reduce(inverse=f)`
    where `f(a, b)` takes `b` out of `a`, so a sliding window can be updated incrementally."""
    if function is None:
        return lambda f: _register("reduce", f, name, inverse=inverse)
    return _register("reduce", function, name, inverse=inverse)


def _chosen(role: str, functions: Tuple[Callable, ...]) -> List[Registered]:
    if functions:
        chosen = []
        for f in functions:
            entry = getattr(f, "__sluice__", None)
            if entry is None:
                raise TypeError(
                    f"{getattr(f, '__name__', f)!r} is not registered: decorate it with "
                    f"@sluice.<kind> first"
                )
            chosen.append(entry)
    else:
        chosen = list(_REGISTERED)
    if not chosen:
        raise TypeError(f"a {role} component exports at least one function")
    for entry in chosen:
        if entry.role != role:
            raise TypeError(
                f"{entry.name} is a {entry.kind} function ({entry.role} world); a component "
                f"serves one role, and this one is a {role}: put it in a component of its own"
            )
    names = [e.name for e in chosen]
    for n in names:
        if names.count(n) > 1:
            raise TypeError(f"two functions are named {n!r}; names must be unique")
    return chosen


def _numbered(chosen: List[Registered], function: int) -> Registered:
    if 0 <= function < len(chosen):
        return chosen[function]
    raise UdfFailure(
        f"this component has no function number {function}; the host must call `functions` first"
    )


def _call(run: Callable, *args: Any) -> Any:
    """Run one call; every failure becomes the WIT error the host reports."""
    try:
        return run(*args)
    except UdfFailure as e:
        raise Err(UdfError(e.message, e.record_index)) from None
    except BaseException as e:
        raise Err(UdfError(runners.describe(e), None)) from None
    finally:
        log.flush()


def _world(chosen: List[Registered]) -> type:
    infos = [e.info() for e in chosen]
    # Everything made while the module was imported (at build time, then snapshotted) lives as
    # long as the component: keep it out of the collector's way, so each call's garbage
    # collections walk only what that call made.
    gc.freeze()

    class WitWorld:
        """The world's exports: the ABI version and the function list."""

        def abi_version(self) -> int:
            return ABI_VERSION

        def functions(self) -> list:
            return list(infos)

    return WitWorld


def export_transforms(*functions: Callable) -> Tuple[type, type]:
    """`WitWorld, Transforms = sluice.export_transforms(f, g, …)`: the component's exports."""
    chosen = _chosen("transform", functions)

    class Transforms:
        """The `transforms` interface."""

        def transform(self, function: int, input: Any) -> Any:
            return _call(lambda: _numbered(chosen, function).run(input))

    return _world(chosen), Transforms


def export_reducers(*functions: Callable) -> Tuple[type, type]:
    """`WitWorld, Reducers = sluice.export_reducers(f, …)`: the component's exports."""
    chosen = _chosen("reducer", functions)

    def run_reduce(function: int, values: Any, group_ends: list) -> Any:
        entry = _numbered(chosen, function)
        return runners.reduce(entry.function, entry.run, values, group_ends)

    def run_invert(function: int, left: Any, right: Any) -> Any:
        entry = _numbered(chosen, function)
        if entry.inverse is None:
            raise UdfFailure(
                f"reducer `{entry.name}` has no inverse; register it with "
                f"@sluice.reduce(inverse=...) to use it in a sliding window with an inverse"
            )
        return runners.invert(entry.inverse, entry.run, left, right)

    class Reducers:
        """The `reducers` interface."""

        def reduce(self, function: int, values: Any, group_ends: list) -> Any:
            return _call(run_reduce, function, values, group_ends)

        def invert(self, function: int, left: Any, right: Any) -> Any:
            return _call(run_invert, function, left, right)

    return _world(chosen), Reducers


def export_updaters(*functions: Callable) -> Tuple[type, type]:
    """`WitWorld, Updaters = sluice.export_updaters(f, …)`: the component's exports."""
    chosen = _chosen("updater", functions)

    class Updaters:
        """The `updaters` interface."""

        def update(self, function: int, input: Any) -> Any:
            return _call(lambda: _numbered(chosen, function).run.run(input))

    return _world(chosen), Updaters


def export_sinks(*functions: Callable) -> Tuple[type, type]:
    """`WitWorld, Sinks = sluice.export_sinks(f, …)`: the component's exports."""
    chosen = _chosen("sink", functions)

    class Sinks:
        """The `sinks` interface."""

        def write(
            self, function: int, batch_id: int, batch_time: int, partition: int, input: Any
        ) -> None:
            info = BatchInfo(batch_id, batch_time, partition)
            return _call(lambda: _numbered(chosen, function).run(info, input))

    return _world(chosen), Sinks
