"""State updaters for `update_state_by_key` and `map_with_state`, in Python.

`running_total` keeps the sum of a key's integer values; `balance` does too but removes a key
whose sum returns to zero; `running_count_and_sum` keeps `[count, sum]` (the W4 workload);
`session` (map_with_state) counts a key's events while it is active and, when the operator's
timeout fires for the key, emits the finished session
`(key, {"events":…,"first_batch_ms":…,"last_batch_ms":…})`. The same as the Rust `udfs/state`.
"""

from typing import Optional

import sluice

_HALF = 1 << 63
_FULL = 1 << 64


def _wrap(n: int) -> int:
    """`n` as a wrapping 64-bit signed integer."""
    if -_HALF <= n < _HALF:
        return n
    return (n + _HALF) % _FULL - _HALF


@sluice.update
def running_total(new: list[int], old: Optional[int]) -> Optional[int]:
    """The new total: the old one (0 if none) plus this batch's values."""
    return _wrap((old or 0) + sum(new))


@sluice.update
def balance(new: list[int], old: Optional[int]) -> Optional[int]:
    """The old balance plus this batch's values; a key back at exactly zero is removed."""
    b = _wrap((old or 0) + sum(new))
    return b if b != 0 else None


@sluice.update
def running_count_and_sum(new: list[int], old: Optional[sluice.Json]) -> Optional[list]:
    """`[count, sum]` of every value seen so far."""
    count, total = old if old is not None else (0, 0)
    return [count + len(new), _wrap(total + sum(new))]


@sluice.map_with_state
def session(key: str, events: list[bytes], state: sluice.State[sluice.Json]):
    """Count events per key; when the key times out, emit its session and forget it."""
    now = state.batch_time()
    if state.is_timing_out():
        finished = state.take()
        return None if finished is None else (key, sluice.Json(finished))
    current = state.get() or {"events": 0, "first_batch_ms": now, "last_batch_ms": now}
    if events:
        current["events"] += len(events)
        current["last_batch_ms"] = now
    state.update(current)
    return None


WitWorld, Updaters = sluice.export_updaters(running_total, balance, running_count_and_sum, session)
