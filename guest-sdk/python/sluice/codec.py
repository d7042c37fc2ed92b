"""How keys and values become Python values and back, a whole column at a time.

The host moves keys and values as opaque bytes, one buffer plus end offsets per column (see
`wit/udf.wit`). The annotation of a UDF's parameter picks the codec, as the Rust SDK's parameter
types do:

| annotation | codec | bytes |
| --- | --- | --- |
| `str` (or none) | `text` | UTF-8, as is |
| `bytes` | `bytes` | as is |
| `int`, `float`, `bool` | `text` (also valid `json`) | decimal text: `42`, `-1.5`, `true` |
| `sluice.Json`, `dict`, `list` | `json` | one JSON document |
| `tuple[K, V]` | keyed record | the key by K's codec, the value by V's |
| `sluice.Record` | none | the raw record: key and value bytes, event time, index |

What a function returns is written by its type: `str` as UTF-8, `bytes` as is, `int`,
`float` and `bool` as decimal text (the way Rust prints them, so that Rust and Python UDFs
write the same bytes), `dict`, `list` and `sluice.Json(x)` as compact JSON, a `(key, value)`
tuple as a keyed record, `sluice.Timed(t, record)` with event time `t`.

Columns are decoded in bulk: an ASCII text column is decoded once and sliced, numbers are
parsed by `map` over the slices, so the per-record work left in Python is the UDF's own.
"""

from __future__ import annotations

import json
import typing
from decimal import Decimal
from itertools import accumulate, compress
from operator import attrgetter, itemgetter, le
from typing import Any, Callable, List, Optional

from ._wit import Batch, Column

#: Event time of records that come from no single input record (an empty partition's latest).
I64_MIN = -(2**63)


class UdfFailure(Exception):
    """A failure the host is told about: a message and, when known, the input record's index."""

    def __init__(self, message: str, record_index: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.record_index = record_index


class Json:
    """A value written (and, as an annotation, read) as one JSON document: the `json` codec.

    `Json(x)` in a function's result writes `x` as compact JSON whatever its type (a string
    becomes `"..."`, a tuple an array); `Json` or `Json[T]` as a parameter's annotation reads
    the bytes with `json.loads`.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __class_getitem__(cls, item: Any) -> type:
        return cls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Json) and other.value == self.value

    def __repr__(self) -> str:
        return f"Json({self.value!r})"


class Timed:
    """A record with an explicit event time (milliseconds since the Unix epoch), e.g. one parsed
    out of the data. Other records keep the time of the input record they came from."""

    __slots__ = ("event_time", "record")

    def __init__(self, event_time: int, record: Any):
        self.event_time = event_time
        self.record = record

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Timed)
            and (other.event_time, other.record) == (self.event_time, self.record)
        )

    def __repr__(self) -> str:
        return f"Timed({self.event_time!r}, {self.record!r})"


class Record:
    """One input record as it is: `key` (bytes or None), `value` (bytes), `event_time`, and
    `index` (its position in the call's input). Returned from a function, it is passed through
    unchanged."""

    __slots__ = ("key", "value", "event_time", "index")

    def __init__(self, key: Optional[bytes], value: bytes, event_time: int, index: int):
        self.key = key
        self.value = value
        self.event_time = event_time
        self.index = index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and (
            other.key,
            other.value,
            other.event_time,
            other.index,
        ) == (self.key, self.value, self.event_time, self.index)

    def __repr__(self) -> str:
        return f"Record(key={self.key!r}, value={self.value!r}, event_time={self.event_time})"


def preview(data: bytes) -> str:
    """At most the first 64 bytes of a bad input, so an error message stays readable."""
    shown = data[:64].decode("utf-8", "replace")
    return repr(shown + ("…" if len(data) > 64 else ""))


# ---------------------------------------------------------------------------------------------
# Reading columns


def at(where: str, index: int, what: str) -> str:
    """The start of a decoding error: `record 3: value ` (or `value 3: ` without `what`)."""
    return f"{where} {index}: {what} " if what else f"{where} {index}: "


def bounds(column: Column, what: str) -> tuple[list, list]:
    """The start and end of every item, after checking that `ends` never decreases and stays
    inside `data` (a malformed column from the host is an error, not an exception in a UDF)."""
    ends = column.ends
    if not ends:
        return [], ends
    starts = [0]
    starts += ends[:-1]
    if ends[-1] > len(column.data) or not all(map(le, starts, ends)):
        previous = 0
        for i, end in enumerate(ends):
            if end < previous or end > len(column.data):
                raise UdfFailure(
                    f"malformed {what} column from the host: item {i} ends at {end}, "
                    f"after {previous}, in {len(column.data)} bytes"
                )
            previous = end
    return starts, ends


def items(column: Column, what: str = "value") -> List[bytes]:
    """Every item of a column as bytes."""
    starts, ends = bounds(column, what)
    return list(map(column.data.__getitem__, map(slice, starts, ends)))


def texts(column: Column, what: str = "value", where: str = "record") -> List[str]:
    """Every item of a column as `str`. An ASCII column is decoded once and sliced; otherwise
    each item is decoded, and one that is not UTF-8 is an error naming it."""
    starts, ends = bounds(column, what)
    data = column.data
    if data.isascii():
        text = data.decode("ascii")
        return list(map(text.__getitem__, map(slice, starts, ends)))
    raw = list(map(data.__getitem__, map(slice, starts, ends)))
    try:
        return list(map(bytes.decode, raw))
    except UnicodeDecodeError:
        for i, item in enumerate(raw):
            try:
                item.decode()
            except UnicodeDecodeError as e:
                raise UdfFailure(
                    f"{at(where, i, what)}expected UTF-8 text: {e.reason} at byte {e.start} "
                    f"in {preview(item)}",
                    i,
                ) from None
        raise  # unreachable: some item failed above


class Codec:
    """How one key or value type is read from a column, and what the host calls it."""

    def __init__(self, name: str, expected: str, parse: Optional[Callable[[str], Any]]):
        self.name = name
        self.expected = expected
        self.parse = parse

    def column(self, column: Column, what: str = "value", where: str = "record") -> list:
        """Decode every item of `column`."""
        if self.name == "bytes":
            return items(column, what)
        strings = texts(column, what, where)
        if self.parse is None:
            return strings
        try:
            return list(map(self.parse, strings))
        except (ValueError, TypeError, RecursionError):
            for i, s in enumerate(strings):
                try:
                    self.parse(s)
                except (ValueError, TypeError, RecursionError) as e:
                    raise UdfFailure(
                        f"{at(where, i, what)}expected {self.expected}: {e} in "
                        f"{preview(s.encode())}",
                        i,
                    ) from None
            raise

    def one(self, data: bytes, what: str, where: str, index: int) -> Any:
        """Decode one item; an error names it as `{where} {index}: {what} ...`."""
        if self.name == "bytes":
            return data
        try:
            text = data.decode()
            return text if self.parse is None else self.parse(text)
        except UnicodeDecodeError as e:
            detail, expected = f"{e.reason} at byte {e.start}", "UTF-8 text"
        except (ValueError, TypeError, RecursionError) as e:
            detail, expected = str(e), self.expected
        raise UdfFailure(f"{at(where, index, what)}expected {expected}: {detail} in {preview(data)}")

    def __repr__(self) -> str:
        return f"<codec {self.name}>"


def _parse_bool(text: str) -> bool:
    word = text.strip()
    if word == "true":
        return True
    if word == "false":
        return False
    raise ValueError(f"{word!r} is neither true nor false")


TEXT = Codec("text", "UTF-8 text", None)
BYTES = Codec("bytes", "bytes", None)
INT = Codec("int", "an integer in decimal", int)
FLOAT = Codec("float", "a float in decimal", float)
BOOL = Codec("bool", "true or false", _parse_bool)
JSON = Codec("json", "JSON", json.loads)


def codec_for(annotation: Any, where: str) -> Codec:
    """The codec a parameter annotated `annotation` is read with; `where` names it in the
    error for an annotation that has none."""
    if annotation is None or annotation is Any or annotation is str:
        return TEXT
    if annotation is bytes:
        return BYTES
    if annotation is bool:
        return BOOL
    if annotation is int:
        return INT
    if annotation is float:
        return FLOAT
    if annotation is Json or annotation in (dict, list):
        return JSON
    origin = typing.get_origin(annotation)
    if origin in (dict, list):
        return JSON
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Union or (origin is not None and "UnionType" in repr(type(annotation))):
        if len(args) == 1:
            return codec_for(args[0], where)
    raise TypeError(
        f"{where}: no codec reads {annotation!r}; annotate it as str, bytes, int, float, bool, "
        "dict, list or sluice.Json"
    )


def strip_optional(annotation: Any) -> Any:
    """`X` for `Optional[X]` / `X | None`, else the annotation itself."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


# ---------------------------------------------------------------------------------------------
# Writing columns


def format_float(x: float) -> str:
    """A float as Rust's `Display` writes it: shortest round-trip digits, never an exponent,
    no `.0` on whole numbers (`1`, `0.5`, `1000000000000000000000`, `NaN`, `inf`)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    text = repr(x)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def json_bytes(value: Any) -> bytes:
    """Compact JSON, as serde_json writes it (no spaces, UTF-8 as is)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise UdfFailure(f"could not encode output as JSON: {e}") from None


def encode(value: Any) -> bytes:
    """One key or value as bytes, by its type."""
    kind = type(value)
    if kind is str:
        return value.encode()
    if kind is bytes:
        return value
    if kind is int:
        return b"%d" % value
    if kind is bool:
        return b"true" if value else b"false"
    if kind is float:
        return format_float(value).encode()
    if kind is Json:
        return json_bytes(value.value)
    if isinstance(value, (dict, list, tuple)):
        return json_bytes(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return b"%d" % int(value)
    if isinstance(value, float):
        return format_float(float(value)).encode()
    if isinstance(value, str):
        return str(value).encode()
    if value is None:
        raise UdfFailure(
            "the function returned None where a value was expected (a flat_map returns [] or "
            "None to emit nothing; a map must return a value)"
        )
    raise UdfFailure(
        f"could not encode output: a {kind.__name__} is not a value; return str, bytes, int, "
        "float, bool, dict, list or sluice.Json(...)"
    )


def column(values: list) -> Column:
    """A column of `values`, each written by its type; common homogeneous columns take a
    path that stays in C."""
    if not values:
        return Column(b"", [])
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is str:
            joined = "".join(values)
            if joined.isascii():
                return Column(joined.encode("ascii"), list(accumulate(map(len, values))))
            parts = list(map(str.encode, values))
        elif kind is bytes:
            parts = values
        elif kind is int:
            strings = list(map(int.__repr__, values))
            return Column("".join(strings).encode("ascii"), list(accumulate(map(len, strings))))
        else:
            parts = list(map(encode, values))
    else:
        parts = list(map(encode, values))
    return Column(b"".join(parts), list(accumulate(map(len, parts))))


def select(col: Column, keep: list) -> Column:
    """The items of `col` whose flag in `keep` is true, bytes unchanged."""
    starts, ends = bounds(col, "value")
    parts = list(map(col.data.__getitem__, map(slice, compress(starts, keep), compress(ends, keep))))
    return Column(b"".join(parts), list(accumulate(map(len, parts))))


_event_time = attrgetter("event_time")
_record = attrgetter("record")


def batch(records: list, times: list) -> Batch:
    """An output batch of `records` (values, `(key, value)` tuples, `Timed`, `Record`), each
    with the event time at the same place in `times` unless it carries its own."""
    if not records:
        return Batch(None, Column(b"", []), [])
    kinds = set(map(type, records))
    if kinds == {Timed}:
        times = list(map(_event_time, records))
        records = list(map(_record, records))
        kinds = set(map(type, records))
    if Timed in kinds or Record in kinds:
        unwrapped = []
        own_times = []
        for record, time in zip(records, times):
            while True:
                kind = type(record)
                if kind is Timed:
                    time = record.event_time
                    record = record.record
                elif kind is Record:
                    time = record.event_time
                    record = record.value if record.key is None else (record.key, record.value)
                else:
                    break
            unwrapped.append(record)
            own_times.append(time)
        records, times = unwrapped, own_times
        kinds = set(map(type, records))
    if tuple in kinds:
        if len(kinds) > 1:
            raise UdfFailure(
                "the function emitted keyed and unkeyed records in one batch; a stream is "
                "either keyed or not"
            )
        sizes = set(map(len, records))
        if sizes != {2}:
            raise UdfFailure(
                f"a keyed record is a (key, value) pair; the function emitted tuples of "
                f"{sorted(sizes)} items"
            )
        return Batch(
            column(list(map(itemgetter(0), records))),
            column(list(map(itemgetter(1), records))),
            list(times),
        )
    return Batch(None, column(records), list(times))
