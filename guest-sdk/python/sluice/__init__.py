"""Write Sluice UDFs in Python.

A UDF is a plain, annotated Python function; a decorator registers it for a kind and one
`export_*` line turns the module into a WebAssembly component of one role (`wit/udf.wit`):

    import sluice

    @sluice.flat_map
    def split_words(line: str) -> list[str]:
        return line.split()

    @sluice.map
    def pair_one(word: str) -> tuple[str, int]:
        return (word, 1)

    WitWorld, Transforms = sluice.export_transforms(split_words, pair_one)

The annotations pick the codec of keys and values (`sluice.codec`); a `(key, value)` tuple is
a keyed record. Kinds: `map`, `flat_map`, `filter`, `map_partitions`, `raw` (transform);
`reduce(inverse=...)` (reducer); `update`, `update_with_key`, `map_with_state` (updater);
`foreach`, `foreach_batch` (sink). Build with `cargo xtask udfs --python` (the README says how
to set the toolchain up); the component imports nothing but the host's logging and metrics.

A component has no files, clock, randomness source or network: import every module at the top
of the file (an import inside a function would look for files at call time, and trap), and
keep state in the job's state operators, not in module globals.
"""

from . import codec, log
from ._wit import Batch, Column, IN_COMPONENT
from .codec import Json, Record, Timed, UdfFailure
from .export import (
    ABI_VERSION,
    export_reducers,
    export_sinks,
    export_transforms,
    export_updaters,
    filter,
    flat_map,
    foreach,
    foreach_batch,
    map,
    map_partitions,
    map_with_state,
    raw,
    reduce,
    update,
    update_with_key,
)
from .log import counter, gauge
from .runners import BatchInfo, State

__all__ = [
    "ABI_VERSION",
    "Batch",
    "BatchInfo",
    "Column",
    "IN_COMPONENT",
    "Json",
    "Record",
    "State",
    "Timed",
    "UdfFailure",
    "codec",
    "counter",
    "export_reducers",
    "export_sinks",
    "export_transforms",
    "export_updaters",
    "filter",
    "flat_map",
    "foreach",
    "foreach_batch",
    "gauge",
    "log",
    "map",
    "map_partitions",
    "map_with_state",
    "raw",
    "reduce",
    "update",
    "update_with_key",
]

log.install()
