"""The clickstream events of `../shared/WORKLOADS.md`, in Python: CSV lines
`event_time_ms,user_id,event_type,amount`, amounts as exact decimals `D.CC` (or `0`).

The same functions as the Rust `udfs/clickstream`, writing the same bytes:
`parse_event` (map) turns a line into the keyed record
`(user_id, {"user_id":…,"event_type":…,"amount_cents":…})` with the line's event time and
fails the batch on a malformed line, naming it; `parse_event_lenient` (flat_map) skips
malformed lines instead, logging each and counting them in `malformed_lines`. Filters
`is_view`, `is_click`, `is_purchase` keep one event type; `amount_cents` projects
`(user_id, cents)`; `by_event_type` re-keys events by their type. For W1, `is_purchase_line`
filters raw lines and `user_amount` projects a line to `(user_id, cents)` (also W4's input);
for W3, `type_amount` projects `(event_type, cents)` and `type_count_amount`
`(event_type, [1, cents])`.
"""

import sluice
from sluice import Json, Timed

_TYPES = ("view", "click", "purchase")
_U32_MAX = (1 << 32) - 1
_I64_MAX = (1 << 63) - 1


def _digits(text: str) -> bool:
    """Whether `text` is a decimal integer as Rust's `parse` reads one: an optional sign, then
    ASCII digits (Python's `int` alone would also take `1_000`, ` 7` and other scripts' digits)."""
    return text.isascii() and text.lstrip("+-").isdigit() and len(text) - len(text.lstrip("+-")) <= 1


def parse_cents(text: str) -> int:
    """Parse `D.CC` or `D` (whole units) into integer cents, exactly."""
    if text == "0":
        return 0
    whole, _, frac = text.partition(".")
    if (
        not whole
        or not (whole.isascii() and whole.isdigit())
        or len(frac) > 2
        or (frac and not (frac.isascii() and frac.isdigit()))
    ):
        raise ValueError(f"amount {text!r} is not a decimal with at most two places")
    cents = int(whole) * 100 + (int(frac) * (10 if len(frac) == 1 else 1) if frac else 0)
    if cents > _I64_MAX:
        raise ValueError(f"amount {text!r} is not a decimal with at most two places")
    return cents


def parse_fields(line: str) -> tuple[int, int, str, int]:
    """`(event_time, user_id, event_type, amount_cents)` of one CSV line, or ValueError saying
    what is wrong with it."""
    try:
        time, user, kind, amount = line.rstrip("\r\n").split(",")
    except ValueError:
        raise ValueError(
            "expected 4 comma-separated fields `event_time_ms,user_id,event_type,amount`, "
            f"got {line!r}"
        ) from None
    if not _digits(time):
        raise ValueError(f"event_time_ms {time!r} is not an integer")
    user_id = int(user) if _digits(user) and user[0] != "-" else -1
    if not 0 <= user_id <= _U32_MAX:
        raise ValueError(f"user_id {user!r} is not an unsigned integer")
    if kind not in _TYPES:
        raise ValueError(f"event_type {kind!r} is not view, click or purchase")
    return int(time), user_id, kind, parse_cents(amount)


def _event(line: str) -> Timed:
    time, user, kind, cents = parse_fields(line)
    return Timed(time, (user, Json({"user_id": user, "event_type": kind, "amount_cents": cents})))


@sluice.map
def parse_event(line: str) -> Timed:
    """Strict parse: a malformed line fails the batch and names the record."""
    return _event(line)


@sluice.filter
def is_purchase_line(line: str) -> bool:
    """Keep the CSV lines of purchases, looking only at the third field (W1's filter)."""
    fields = line.split(",", 3)
    return len(fields) > 2 and fields[2] == "purchase"


@sluice.map
def user_amount(line: str) -> Timed:
    """A CSV line → `(user_id, amount in cents)` with the line's event time (W1, W4)."""
    time, user, _, cents = parse_fields(line)
    return Timed(time, (user, cents))


@sluice.map
def type_amount(line: str) -> Timed:
    """A CSV line → `(event_type, amount in cents)` with the line's event time (W3)."""
    time, _, kind, cents = parse_fields(line)
    return Timed(time, (kind, cents))


@sluice.map
def type_count_amount(line: str) -> Timed:
    """A CSV line → `(event_type, [1, amount in cents])` for `aggregates_py#count_and_sum`."""
    time, _, kind, cents = parse_fields(line)
    return Timed(time, (kind, [1, cents]))


@sluice.flat_map
def parse_event_lenient(line: str):
    """Lenient parse: a malformed line is logged, counted in `malformed_lines` and skipped."""
    try:
        return _event(line)
    except ValueError as reason:
        sluice.counter("malformed_lines", 1)
        sluice.log.warn(f"skipped a malformed line: {reason}")
        return None


@sluice.filter
def is_view(record: tuple[int, Json]) -> bool:
    """Keep views."""
    return record[1]["event_type"] == "view"


@sluice.filter
def is_click(record: tuple[int, Json]) -> bool:
    """Keep clicks."""
    return record[1]["event_type"] == "click"


@sluice.filter
def is_purchase(record: tuple[int, Json]) -> bool:
    """Keep purchases."""
    return record[1]["event_type"] == "purchase"


@sluice.map
def amount_cents(record: tuple[int, Json]) -> tuple[int, int]:
    """`(user_id, event) -> (user_id, amount in cents)`."""
    user, event = record
    return (user, event["amount_cents"])


@sluice.map
def by_event_type(record: tuple[int, Json]) -> tuple[str, Json]:
    """`(user_id, event) -> (event_type, event)`."""
    return (record[1]["event_type"], Json(record[1]))


WitWorld, Transforms = sluice.export_transforms(
    parse_event,
    is_purchase_line,
    user_amount,
    type_amount,
    type_count_amount,
    parse_event_lenient,
    is_view,
    is_click,
    is_purchase,
    amount_cents,
    by_event_type,
)
