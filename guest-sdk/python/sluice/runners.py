"""Runners: how a typed Python function becomes one call over a whole partition.

Each runner decodes the call's columns in bulk by the function's annotations (`codec`), calls
the function once per record (or group, or partition), and encodes what it returns. Output
records keep the input record's event time unless the function returns `Timed`. An exception
raised by the function fails the call with its type, message and line, and names the record it
was raised for (the WIT `udf-error`'s `record-index`), as a Rust UDF's `Err` does.
"""

from __future__ import annotations

import functools
import typing
from itertools import chain, repeat
from typing import Any, Callable, Generic, List, Optional, TypeVar

from . import codec
from ._wit import Batch, Column, UpdateInput, UpdateOutput
from .codec import Json, Record, Timed, UdfFailure

S = TypeVar("S")


def describe(error: BaseException, function: Optional[Callable] = None) -> str:
    """`ValueError: bad line (app.py:12 in parse)`: the exception and the innermost line of the
    function's own file it passed through (reading no source file: a component has none)."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    home = getattr(getattr(function, "__code__", None), "co_filename", None)
    frame = None
    tb = error.__traceback__
    while tb is not None:
        if frame is None or home is None or tb.tb_frame.f_code.co_filename == home:
            frame = tb
        tb = tb.tb_next
    if frame is not None:
        code = frame.tb_frame.f_code
        file = code.co_filename.rsplit("/", 1)[-1]
        text += f" ({file}:{frame.tb_lineno} in {code.co_name})"
    return text


def record_failure(index: int, error: BaseException, function: Callable) -> UdfFailure:
    """The failure of a function called for input record `index`."""
    if isinstance(error, UdfFailure):
        return error
    return UdfFailure(f"record {index}: {describe(error, function)}", index)


class State(Generic[S]):
    """The state of one key during a `map_with_state` call (Spark's `State[S]`). Annotate the
    parameter `State[T]` to read and write the state with T's codec."""

    __slots__ = ("_value", "_timing_out", "_batch_time")

    def __init__(self, value: Optional[S], timing_out: bool, batch_time: int):
        self._value = value
        self._timing_out = timing_out
        self._batch_time = batch_time

    def batch_time(self) -> int:
        """The time of the batch being processed, in milliseconds since the Unix epoch."""
        return self._batch_time

    def get(self) -> Optional[S]:
        """The current state, or None."""
        return self._value

    def exists(self) -> bool:
        """Whether the key has state."""
        return self._value is not None

    def update(self, value: S) -> None:
        """Replace the state (ignored when the key is timing out: it is removed regardless)."""
        self._value = value

    def remove(self) -> None:
        """Remove the key's state."""
        self._value = None

    def take(self) -> Optional[S]:
        """Take the state out, leaving none."""
        value, self._value = self._value, None
        return value

    def is_timing_out(self) -> bool:
        """Whether this is the key's last call because it was idle longer than the timeout."""
        return self._timing_out

    def final(self) -> Optional[S]:
        """What is kept after the call."""
        return None if self._timing_out else self._value


class BatchInfo:
    """Where a sink call's partition comes from: `batch_id` (the same when a batch is delivered
    again after a crash), `batch_time` (ms since the Unix epoch) and `partition`."""

    __slots__ = ("batch_id", "batch_time", "partition")

    def __init__(self, batch_id: int, batch_time: int, partition: int):
        self.batch_id = batch_id
        self.batch_time = batch_time
        self.partition = partition

    def __repr__(self) -> str:
        return (
            f"BatchInfo(batch_id={self.batch_id}, batch_time={self.batch_time}, "
            f"partition={self.partition})"
        )


# ---------------------------------------------------------------------------------------------
# Reading parameters


def hints(function: Callable) -> dict:
    """The function's annotations, resolved (string annotations included)."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve: read what is there
        return dict(getattr(function, "__annotations__", {}))


def parameters(function: Callable) -> List[Any]:
    """The annotation of each positional parameter, `None` where there is none."""
    code = function.__code__
    names = code.co_varnames[: code.co_argcount]
    found = hints(function)
    return [found.get(name) for name in names]


class Reader:
    """Reads a batch's records as a transform or sink parameter is annotated: a value, a
    `(key, value)` pair (`tuple[K, V]`) or the raw `Record`."""

    def __init__(self, annotation: Any, where: str):
        self.key = None
        if annotation is Record:
            self.mode = "record"
        elif annotation is tuple or typing.get_origin(annotation) is tuple:
            args = typing.get_args(annotation)
            if len(args) != 2:
                raise TypeError(
                    f"{where}: a keyed record is read as tuple[K, V] (two types), not "
                    f"{annotation!r}"
                )
            self.mode = "pair"
            self.key = codec.codec_for(args[0], f"{where} (key)")
            self.value = codec.codec_for(args[1], f"{where} (value)")
        else:
            self.mode = "value"
            self.value = codec.codec_for(annotation, where)

    def read(self, batch: Batch) -> list:
        """Every record of `batch`, decoded."""
        n = len(batch.values.ends)
        keys = batch.keys
        if (keys is not None and len(keys.ends) != n) or len(batch.event_times) != n:
            raise UdfFailure(
                f"malformed batch from the host: {n} values, "
                f"{0 if keys is None else len(keys.ends)} keys, "
                f"{len(batch.event_times)} event times"
            )
        if self.mode == "value":
            return self.value.column(batch.values)
        if self.mode == "pair":
            if keys is None:
                if n == 0:
                    return []
                raise UdfFailure(
                    "record 0: the function takes a (key, value) pair but the stream is not "
                    "keyed",
                    0,
                )
            return list(zip(self.key.column(keys, "key"), self.value.column(batch.values)))
        key_items = repeat(None) if keys is None else codec.items(keys, "key")
        return list(
            map(Record, key_items, codec.items(batch.values), batch.event_times, range(n))
        )


def records_of(result: Any) -> list:
    """What one call of a flat_map (map_partitions, map_with_state) emits: a list or any
    iterable of records, one record that is not a list, or None for none."""
    if result is None:
        return []
    kind = type(result)
    if kind is list:
        return result
    if kind in (str, bytes, tuple, dict, Timed, Record, Json, int, float, bool):
        return [result]
    try:
        return list(result)
    except TypeError:
        return [result]


# ---------------------------------------------------------------------------------------------
# Transforms


def transform(kind: str, function: Callable) -> Callable[[Batch], Batch]:
    """The runner of a transform function of `kind`."""
    where = f"{kind} {function.__name__}"
    if kind == "raw":
        return lambda batch: _raw(function, batch)
    params = parameters(function)
    if not params:
        raise TypeError(f"{where}: a {kind} function takes one parameter")
    if kind == "map_partitions":
        annotation = params[0]
        origin = typing.get_origin(annotation)
        element = typing.get_args(annotation)[0] if origin in (list, typing.List) else None
        if annotation is not None and origin not in (list, typing.List):
            raise TypeError(f"{where}: a map_partitions function takes list[T], not {annotation!r}")
        reader = Reader(element, where)
        return lambda batch: _map_partitions(function, reader, batch)
    reader = Reader(params[0], where)
    run = {"map": _map, "flat_map": _flat_map, "filter": _filter}[kind]
    return lambda batch: run(function, reader, batch)


def _map(f: Callable, reader: Reader, batch: Batch) -> Batch:
    out: list = []
    push = out.append
    try:
        for record in reader.read(batch):
            push(f(record))
    except UdfFailure:
        raise
    except BaseException as e:
        raise record_failure(len(out), e, f) from None
    return codec.batch(out, batch.event_times)


def _flat_map(f: Callable, reader: Reader, batch: Batch) -> Batch:
    results: list = []
    push = results.append
    try:
        for record in reader.read(batch):
            push(f(record))
    except UdfFailure:
        raise
    except BaseException as e:
        raise record_failure(len(results), e, f) from None
    if set(map(type, results)) != {list}:
        for i, result in enumerate(results):
            try:
                results[i] = records_of(result)
            except BaseException as e:  # a generator that raised
                raise record_failure(i, e, f) from None
    out = list(chain.from_iterable(results))
    times = list(chain.from_iterable(map(repeat, batch.event_times, map(len, results))))
    return codec.batch(out, times)


def _filter(f: Callable, reader: Reader, batch: Batch) -> Batch:
    keep: list = []
    push = keep.append
    try:
        for record in reader.read(batch):
            push(f(record))
    except UdfFailure:
        raise
    except BaseException as e:
        raise record_failure(len(keep), e, f) from None
    if all(keep):
        return batch
    keys = None if batch.keys is None else codec.select(batch.keys, keep)
    times = [t for t, k in zip(batch.event_times, keep) if k]
    return Batch(keys, codec.select(batch.values, keep), times)


def _map_partitions(f: Callable, reader: Reader, batch: Batch) -> Batch:
    records = reader.read(batch)
    latest = max(batch.event_times, default=codec.I64_MIN)
    try:
        out = records_of(f(records))
    except BaseException as e:
        raise UdfFailure(describe(e, f)) from None
    return codec.batch(out, [latest] * len(out))


def _raw(f: Callable, batch: Batch) -> Batch:
    try:
        out = f(batch)
    except BaseException as e:
        raise UdfFailure(describe(e, f)) from None
    if not isinstance(out, Batch):
        raise UdfFailure(f"a raw function returns a Batch, not a {type(out).__name__}")
    return out


# ---------------------------------------------------------------------------------------------
# Reducers


def reducer(function: Callable) -> Any:
    """The codec of a reducer's values, from its first parameter."""
    params = parameters(function)
    if len(params) != 2:
        raise TypeError(f"reducer {function.__name__}: a reducer takes two values, (a, b)")
    return codec.codec_for(params[0], f"reducer {function.__name__}")


def reduce(f: Callable, value_codec: Any, values: Column, group_ends: List[int]) -> Column:
    """Fold `f` over each group of `values`; `group_ends[g]` is the exclusive end of group g."""
    decoded = value_codec.column(values, "", "value")
    n = len(decoded)
    out = []
    push = out.append
    start = 0
    fold = functools.reduce
    for g, end in enumerate(group_ends):
        if end <= start or end > n:
            raise UdfFailure(
                f"malformed groups from the host: group {g} spans items {start}..{end} of {n}"
            )
        try:
            push(decoded[start] if end - start == 1 else fold(f, decoded[start:end]))
        except BaseException as e:
            raise UdfFailure(f"group {g} (values {start}..{end}): {describe(e, f)}") from None
        start = end
    return codec.column(out)


def invert(f: Callable, value_codec: Any, left: Column, right: Column) -> Column:
    """Apply the inverse `f(left[i], right[i])` item by item."""
    lefts = value_codec.column(left, "", "left item")
    rights = value_codec.column(right, "", "right item")
    if len(lefts) != len(rights):
        raise UdfFailure(
            f"malformed inverse call from the host: {len(lefts)} left items, {len(rights)} right"
        )
    out: list = []
    push = out.append
    try:
        for a, b in zip(lefts, rights):
            push(f(a, b))
    except BaseException as e:
        raise UdfFailure(f"item {len(out)}: {describe(e, f)}", len(out)) from None
    return codec.column(out)


# ---------------------------------------------------------------------------------------------
# Updaters


class Updater:
    """An updater's codecs, read from its annotations: `update(values: list[V], state: S |
    None)`, `update_with_key(key: K, values: list[V], state: S | None)`, `map_with_state(key:
    K, values: list[V], state: State[S])`."""

    def __init__(self, kind: str, function: Callable):
        where = f"{kind} {function.__name__}"
        params = parameters(function)
        want = 2 if kind == "update" else 3
        if len(params) != want:
            raise TypeError(f"{where}: takes {want} parameters, not {len(params)}")
        if kind != "update":
            self.key = codec.codec_for(params[0], f"{where} (key)")
        values, state = params[-2], params[-1]
        if values is not None and typing.get_origin(values) not in (list, typing.List):
            raise TypeError(f"{where}: the values parameter is list[V], not {values!r}")
        element = typing.get_args(values)[0] if values is not None else None
        self.value = codec.codec_for(element, f"{where} (values)")
        if kind == "map_with_state":
            if state is not None and typing.get_origin(state) is not State and state is not State:
                raise TypeError(f"{where}: the state parameter is sluice.State[S], not {state!r}")
            args = typing.get_args(state) if state is not None else ()
            self.state = codec.codec_for(args[0] if args else None, f"{where} (state)")
        else:
            self.state = codec.codec_for(codec.strip_optional(state), f"{where} (state)")
        self.kind = kind
        self.function = function

    def run(self, input: UpdateInput) -> UpdateOutput:
        """One update call: every group's new state, and what map_with_state emitted."""
        f = self.function
        n = len(input.keys.ends)
        group_ends = input.group_ends
        if (
            len(group_ends) != n
            or len(input.states.ends) != n
            or len(input.has_state) != n
            or len(input.timing_out) != n
        ):
            raise UdfFailure(
                f"malformed update call from the host: {n} keys, {len(group_ends)} groups, "
                f"{len(input.states.ends)} states, {len(input.has_state)} has-state flags, "
                f"{len(input.timing_out)} timing-out flags"
            )
        values = self.value.column(input.values, "value", "item")
        raw_states = codec.items(input.states, "state")
        state_codec = self.state
        olds = [
            state_codec.one(raw, "state", "group", g) if has else None
            for g, (raw, has) in enumerate(zip(raw_states, input.has_state))
        ]
        keys = self.key.column(input.keys, "key", "group") if self.kind != "update" else None
        news: list = []
        emitted: list = []
        batch_time = input.batch_time
        start = 0
        for g in range(n):
            end = group_ends[g]
            if end < start or end > len(values):
                raise UdfFailure(
                    f"malformed groups from the host: group {g} spans items {start}..{end} of "
                    f"{len(values)}"
                )
            group = values[start:end]
            start = end
            try:
                if self.kind == "update":
                    new = f(group, olds[g])
                elif self.kind == "update_with_key":
                    new = f(keys[g], group, olds[g])
                else:
                    state = State(olds[g], input.timing_out[g], batch_time)
                    emitted.extend(records_of(f(keys[g], group, state)))
                    new = state.final()
            except BaseException as e:
                raise UdfFailure(f"group {g}: {describe(e, f)}") from None
            news.append(None if input.timing_out[g] else new)
        has_state = [s is not None for s in news]
        states = codec.column([b"" if s is None else s for s in news])
        return UpdateOutput(states, has_state, codec.batch(emitted, [batch_time] * len(emitted)))


# ---------------------------------------------------------------------------------------------
# Sinks


def sink(kind: str, function: Callable) -> Callable[[BatchInfo, Batch], None]:
    """The runner of a sink function: `foreach(record)` per record, `foreach_batch(info,
    records: list[T])` once per partition (`records: Batch` gets the columns as they are)."""
    where = f"{kind} {function.__name__}"
    params = parameters(function)
    if kind == "foreach":
        if len(params) != 1:
            raise TypeError(f"{where}: a foreach function takes one record")
        reader = Reader(params[0], where)

        def foreach(info: BatchInfo, batch: Batch) -> None:
            done = 0
            try:
                for record in reader.read(batch):
                    function(record)
                    done += 1
            except UdfFailure:
                raise
            except BaseException as e:
                raise record_failure(done, e, function) from None

        return foreach
    if len(params) != 2:
        raise TypeError(f"{where}: a foreach_batch function takes (info, records)")
    annotation = params[1]
    if annotation is Batch:
        read: Callable[[Batch], Any] = lambda batch: batch  # noqa: E731
    else:
        origin = typing.get_origin(annotation)
        if annotation is not None and origin not in (list, typing.List):
            raise TypeError(f"{where}: records are list[T] or Batch, not {annotation!r}")
        element = typing.get_args(annotation)[0] if annotation is not None else None
        read = Reader(element, where).read

    def foreach_batch(info: BatchInfo, batch: Batch) -> None:
        records = read(batch)
        try:
            function(info, records)
        except BaseException as e:
            raise UdfFailure(describe(e, function)) from None

    return foreach_batch

