"""Reducers for `reduce`, `reduce_by_key` and the windowed operators, in Python.

`sum_i64` and `sum_f64` (with inverses, so sliding windows update incrementally),
`count_and_sum` over JSON pairs `[count, sum]` (with inverse), and `min_i64` / `max_i64` (no
inverse exists). Integers wrap at 64 bits like the Rust `udfs/aggregates`, so both write the
same bytes.
"""

import sluice

_HALF = 1 << 63
_FULL = 1 << 64


def _wrap(n: int) -> int:
    """`n` as a wrapping 64-bit signed integer (Spark's `Long` arithmetic)."""
    if -_HALF <= n < _HALF:
        return n
    return (n + _HALF) % _FULL - _HALF


def sub_i64(a: int, b: int) -> int:
    """`a - b`: the inverse of `sum_i64`."""
    return _wrap(a - b)


@sluice.reduce(inverse=sub_i64)
def sum_i64(a: int, b: int) -> int:
    """`a + b`, wrapping on overflow."""
    return _wrap(a + b)


def sub_f64(a: float, b: float) -> float:
    """`a - b`: the inverse of `sum_f64`."""
    return a - b


@sluice.reduce(inverse=sub_f64)
def sum_f64(a: float, b: float) -> float:
    """`a + b` for floats."""
    return a + b


def uncount_and_unsum(a: sluice.Json, b: sluice.Json) -> list:
    """Component-wise difference: the inverse of `count_and_sum`."""
    return [_wrap(a[0] - b[0]), _wrap(a[1] - b[1])]


@sluice.reduce(inverse=uncount_and_unsum)
def count_and_sum(a: sluice.Json, b: sluice.Json) -> list:
    """Component-wise sum of `[count, sum]` pairs."""
    return [_wrap(a[0] + b[0]), _wrap(a[1] + b[1])]


@sluice.reduce
def min_i64(a: int, b: int) -> int:
    """The smaller value."""
    return a if a <= b else b


@sluice.reduce
def max_i64(a: int, b: int) -> int:
    """The larger value."""
    return a if a >= b else b


WitWorld, Reducers = sluice.export_reducers(sum_i64, sum_f64, count_and_sum, min_i64, max_i64)
