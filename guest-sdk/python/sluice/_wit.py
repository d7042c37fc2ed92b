"""The WIT types of `wit/udf.wit` as Python sees them.

Inside a component, componentize-py generates the `wit_world` package from the WIT at build
time and these names are its classes. Outside one (the SDK's own unit tests, an author's
tests with plain `python3`), the same shapes are plain dataclasses here, and logging and metrics
go to lists that tests can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional, Tuple

try:  # inside a component built by componentize-py
    from componentize_py_types import Err  # type: ignore[import-not-found]
    from wit_world.imports import logging as _logging  # type: ignore[import-not-found]
    from wit_world.imports import metrics as _metrics  # type: ignore[import-not-found]
    from wit_world.imports.types import (  # type: ignore[import-not-found]
        Batch,
        Column,
        FunctionInfo,
        FunctionKind,
        UdfError,
    )

    Level = _logging.Level
    host_log = _logging.log
    counter_add = _metrics.counter_add
    gauge_set = _metrics.gauge_set
    IN_COMPONENT = True
except ImportError:  # plain Python: stand-ins with the same shapes
    IN_COMPONENT = False

    @dataclass
    class Column:  # type: ignore[no-redef]
        """A column of byte strings back to back in `data`; item i ends at `ends[i]`."""

        data: bytes
        ends: List[int]

    @dataclass
    class Batch:  # type: ignore[no-redef]
        """One partition: optional keys, values and event times, column by column."""

        keys: Optional[Column]
        values: Column
        event_times: List[int]

    @dataclass
    class UdfError:  # type: ignore[no-redef]
        """Why a function failed, and the input record that caused it when one did."""

        message: str
        record_index: Optional[int]

    class FunctionKind(Enum):  # type: ignore[no-redef]
        """The WIT `function-kind` enum, in its order."""

        MAP = 0
        TRY_MAP = 1
        FLAT_MAP = 2
        TRY_FLAT_MAP = 3
        FILTER = 4
        TRY_FILTER = 5
        MAP_PARTITIONS = 6
        RAW = 7
        REDUCE = 8
        UPDATE = 9
        UPDATE_WITH_KEY = 10
        MAP_WITH_STATE = 11
        FOREACH = 12
        TRY_FOREACH = 13
        FOREACH_BATCH = 14

    @dataclass
    class FunctionInfo:  # type: ignore[no-redef]
        """One exported function: its name, kind and whether it has an inverse."""

        name: str
        kind: FunctionKind
        has_inverse: bool

    class Level(Enum):  # type: ignore[no-redef]
        """The WIT logging `level` enum."""

        TRACE = 0
        DEBUG = 1
        INFO = 2
        WARN = 3
        ERROR = 4

    @dataclass(frozen=True)
    class Err(Exception):  # type: ignore[no-redef]
        """componentize-py's error case of a WIT `result`."""

        value: UdfError

    #: What the stand-in imports received: `(level, message, fields)` lines and metric calls.
    LOGGED: List[Tuple[Level, str, List[Tuple[str, str]]]] = []
    METRICS: List[Tuple[str, str, float]] = []

    def host_log(level, message, fields):  # type: ignore[no-redef]
        """Stand-in for the host's `logging.log`."""
        LOGGED.append((level, message, list(fields)))

    def counter_add(name, delta):  # type: ignore[no-redef]
        """Stand-in for the host's `metrics.counter-add`."""
        METRICS.append(("counter", name, delta))

    def gauge_set(name, value):  # type: ignore[no-redef]
        """Stand-in for the host's `metrics.gauge-set`."""
        METRICS.append(("gauge", name, value))


try:  # the updater world's own records
    from wit_world.exports.updaters import UpdateInput, UpdateOutput  # type: ignore[import-not-found]
except ImportError:

    @dataclass
    class UpdateInput:  # type: ignore[no-redef]
        """One partition's keys to update (the WIT `update-input`)."""

        keys: Column
        values: Column
        group_ends: List[int]
        states: Column
        has_state: List[bool]
        timing_out: List[bool]
        batch_time: int

    @dataclass
    class UpdateOutput:  # type: ignore[no-redef]
        """The result of an update call (the WIT `update-output`)."""

        states: Column
        has_state: List[bool]
        emitted: Batch = field(default_factory=lambda: Batch(None, Column(b"", []), []))
