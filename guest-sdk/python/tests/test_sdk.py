"""Unit tests of the Python SDK, run with plain Python (no component): the WIT types are the
SDK's stand-ins, and logs and metrics land in lists.

    python3 -m unittest discover -s guest-sdk/python/tests

`tests/tests/polyglot.rs` runs them with the pinned toolchain's Python, and the same functions
inside real components against the host.
"""

import sys
import unittest
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sluice  # noqa: E402
from sluice import Batch, Column, Json, Record, Timed, _wit, codec  # noqa: E402
from sluice._wit import Err, UpdateInput  # noqa: E402


def col(items):
    """A column of `items` (str or bytes)."""
    parts = [i.encode() if isinstance(i, str) else i for i in items]
    return Column(b"".join(parts), list(accumulate(map(len, parts))))


def batch(values, keys=None, times=None):
    """A batch of values (and keys), event times 100, 101, … unless given."""
    times = times if times is not None else [100 + i for i in range(len(values))]
    return Batch(None if keys is None else col(keys), col(values), times)


def unpack(column):
    """The items of a column as bytes."""
    return codec.items(column)


# The functions under test, registered once for the whole module as an author's would be.


@sluice.flat_map
def split(line: str) -> list[str]:
    return line.split()


@sluice.map
def pair(word: str) -> tuple[str, int]:
    return (word, 1)


@sluice.map
def strict_int(line: str) -> int:
    return int(line)


@sluice.filter
def long_word(word: str) -> bool:
    return len(word) > 3


@sluice.map
def timed(line: str) -> Timed:
    t, v = line.split(",")
    return Timed(int(t), (v, 1.5))


@sluice.map_partitions
def count_all(lines: list[str]) -> list[int]:
    return [len(lines)]


@sluice.map
def swap(record: tuple[str, int]) -> tuple[int, str]:
    return (record[1], record[0])


@sluice.flat_map
def passthrough(record: Record):
    return record


@sluice.map
def forgot_return(line: str) -> str:
    pass


TRANSFORMS = [split, pair, strict_int, long_word, timed, count_all, swap, passthrough, forgot_return]
World, Transforms = sluice.export_transforms(*TRANSFORMS)


def sub(a: int, b: int) -> int:
    return a - b


@sluice.reduce(inverse=sub)
def add(a: int, b: int) -> int:
    return a + b


@sluice.reduce
def pairs(a: Json, b: Json) -> list:
    return [a[0] + b[0], a[1] + b[1]]


RWorld, Reducers = sluice.export_reducers(add, pairs)


@sluice.update
def total(new: list[int], old: int | None) -> int | None:
    t = (old or 0) + sum(new)
    return t if t else None


@sluice.map_with_state
def sessions(key: str, values: list[int], state: sluice.State[Json]):
    if state.is_timing_out():
        return (key, Json(state.get()))
    state.update({"n": (state.get() or {"n": 0})["n"] + len(values)})
    return None


UWorld, Updaters = sluice.export_updaters(total, sessions)

SEEN = []


@sluice.foreach
def remember(value: int) -> None:
    if value < 0:
        raise ValueError("negative")
    SEEN.append(value)


@sluice.foreach_batch
def remember_batch(info: sluice.BatchInfo, values: list[str]) -> None:
    SEEN.append((info.batch_id, info.partition, values))


SWorld, Sinks = sluice.export_sinks(remember, remember_batch)


class Codecs(unittest.TestCase):
    def test_text_columns_decode_in_bulk_and_name_a_bad_record(self):
        self.assertEqual(codec.texts(col(["ab", "", "c"])), ["ab", "", "c"])
        self.assertEqual(codec.texts(col(["h\u00e9", "\U0001f600", "x"])), ["h\u00e9", "\U0001f600", "x"])
        with self.assertRaises(codec.UdfFailure) as caught:
            codec.texts(col([b"ok", b"bad \xff", b"fine"]))
        self.assertEqual(caught.exception.record_index, 1)
        self.assertIn("record 1: value expected UTF-8 text", caught.exception.message)
        # The buffer is valid UTF-8 as a whole, but an item cuts a character.
        with self.assertRaises(codec.UdfFailure) as caught:
            codec.texts(col([b"\xc3", b"\xa9"]))
        self.assertEqual(caught.exception.record_index, 0)

    def test_malformed_columns_are_errors(self):
        with self.assertRaises(codec.UdfFailure) as caught:
            codec.items(Column(b"abc", [2, 1]))
        self.assertIn("item 1 ends at 1", caught.exception.message)
        with self.assertRaises(codec.UdfFailure):
            codec.items(Column(b"abc", [4]))

    def test_numbers_are_decimal_text_written_as_rust_writes_them(self):
        self.assertEqual(codec.INT.column(col(["1", " -7\n", "+3"])), [1, -7, 3])
        with self.assertRaises(codec.UdfFailure) as caught:
            codec.INT.column(col(["1", "4x"]))
        self.assertEqual(caught.exception.record_index, 1)
        self.assertIn("expected an integer in decimal", caught.exception.message)
        self.assertEqual(codec.BOOL.column(col(["true", "false"])), [True, False])
        for value, text in [
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (float("nan"), "NaN"),
            (float("-inf"), "-inf"),
        ]:
            self.assertEqual(codec.format_float(value), text)
        self.assertEqual(codec.encode(True), b"true")
        self.assertEqual(codec.encode(-12), b"-12")
        self.assertEqual(codec.encode({"a": [1, "\u00e9"]}), '{"a":[1,"\u00e9"]}'.encode())
        self.assertEqual(codec.encode(Json("x")), b'"x"')
        with self.assertRaises(codec.UdfFailure):
            codec.encode(None)

    def test_columns_of_mixed_types(self):
        column = codec.column(["a", 1, 2.5, b"\x00", [1]])
        self.assertEqual(unpack(column), [b"a", b"1", b"2.5", b"\x00", b"[1]"])
        self.assertEqual(unpack(codec.column(["\u00e9", "b"])), ["\u00e9".encode(), b"b"])

    def test_annotations_pick_codecs_or_fail_the_build(self):
        self.assertIs(codec.codec_for(int, "x"), codec.INT)
        self.assertIs(codec.codec_for(dict[str, int], "x"), codec.JSON)
        self.assertIs(codec.codec_for(Json, "x"), codec.JSON)
        with self.assertRaises(TypeError) as caught:

            @sluice.map
            def bad(x: set) -> str:
                return ""

        self.assertIn("no codec reads", str(caught.exception))


class TransformRunners(unittest.TestCase):
    def call(self, fn, b):
        return Transforms().transform(TRANSFORMS.index(fn), b)

    def test_flat_map_keeps_each_input_time(self):
        out = self.call(split, batch(["a b", "", "c"]))
        self.assertEqual(unpack(out.values), [b"a", b"b", b"c"])
        self.assertEqual(out.event_times, [100, 100, 102])
        self.assertIsNone(out.keys)

    def test_map_to_pairs_makes_a_keyed_batch(self):
        out = self.call(pair, batch(["x", "y"]))
        self.assertEqual(unpack(out.keys), [b"x", b"y"])
        self.assertEqual(unpack(out.values), [b"1", b"1"])

    def test_an_exception_names_its_record_type_message_and_line(self):
        with self.assertRaises(Err) as caught:
            self.call(strict_int, batch(["1", "2", "three"]))
        error = caught.exception.value
        self.assertEqual(error.record_index, 2)
        self.assertIn("record 2: ValueError: invalid literal", error.message)
        self.assertIn("test_sdk.py:", error.message)

    def test_filter_keeps_records_unchanged(self):
        out = self.call(long_word, batch(["tiny", "no", "words"], keys=["k1", "k2", "k3"]))
        self.assertEqual(unpack(out.values), [b"tiny", b"words"])
        self.assertEqual(unpack(out.keys), [b"k1", b"k3"])
        self.assertEqual(out.event_times, [100, 102])

    def test_timed_sets_the_event_time(self):
        out = self.call(timed, batch(["5,a", "7,b"]))
        self.assertEqual(out.event_times, [5, 7])
        self.assertEqual(unpack(out.values), [b"1.5", b"1.5"])

    def test_map_partitions_sees_the_whole_partition(self):
        out = self.call(count_all, batch(["a", "b", "c"], times=[3, 9, 4]))
        self.assertEqual(unpack(out.values), [b"3"])
        self.assertEqual(out.event_times, [9])

    def test_keyed_parameters(self):
        out = self.call(swap, batch(["1", "2"], keys=["a", "b"]))
        self.assertEqual(unpack(out.keys), [b"1", b"2"])
        with self.assertRaises(Err) as caught:
            self.call(swap, batch(["1"]))
        self.assertIn("not keyed", caught.exception.value.message)

    def test_records_pass_through(self):
        b = batch([b"\xff", b"x"], keys=["k", "l"], times=[1, 2])
        out = self.call(passthrough, b)
        self.assertEqual(unpack(out.values), [b"\xff", b"x"])
        self.assertEqual(out.event_times, [1, 2])

    def test_none_from_a_map_is_an_error(self):
        with self.assertRaises(Err) as caught:
            self.call(forgot_return, batch(["a"]))
        self.assertIn("returned None", caught.exception.value.message)

    def test_unknown_function_number(self):
        with self.assertRaises(Err) as caught:
            Transforms().transform(99, batch(["a"]))
        self.assertIn("no function number 99", caught.exception.value.message)

    def test_function_list(self):
        infos = World().functions()
        self.assertEqual([i.name for i in infos][:3], ["split", "pair", "strict_int"])
        self.assertEqual(infos[0].kind, _wit.FunctionKind.FLAT_MAP)
        self.assertEqual(World().abi_version(), 1)

    def test_one_role_per_component(self):
        with self.assertRaises(TypeError) as caught:
            sluice.export_transforms(split, add)
        self.assertIn("a component serves one role", str(caught.exception))


class ReducerRunners(unittest.TestCase):
    def test_groups_fold_and_invert(self):
        out = Reducers().reduce(0, col(["1", "2", "3", "10"]), [3, 4])
        self.assertEqual(unpack(out), [b"6", b"10"])
        out = Reducers().invert(0, col(["6", "10"]), col(["1", "4"]))
        self.assertEqual(unpack(out), [b"5", b"6"])
        out = Reducers().reduce(1, col(["[1,2]", "[1,5]"]), [2])
        self.assertEqual(unpack(out), [b"[2,7]"])

    def test_no_inverse_and_malformed_groups(self):
        with self.assertRaises(Err) as caught:
            Reducers().invert(1, col(["[1,2]"]), col(["[1,2]"]))
        self.assertIn("has no inverse", caught.exception.value.message)
        with self.assertRaises(Err) as caught:
            Reducers().reduce(0, col(["1"]), [2])
        self.assertIn("malformed groups", caught.exception.value.message)
        self.assertEqual(RWorld().functions()[0].has_inverse, True)


class UpdaterRunners(unittest.TestCase):
    def test_update_keeps_and_removes_state(self):
        out = Updaters().update(
            0,
            UpdateInput(
                keys=col(["a", "b", "c"]),
                values=col(["1", "2", "-5"]),
                group_ends=[2, 2, 3],
                states=col(["", "7", "5"]),
                has_state=[False, True, True],
                timing_out=[False, False, False],
                batch_time=1000,
            ),
        )
        self.assertEqual(out.has_state, [True, True, False])
        self.assertEqual(unpack(out.states)[:2], [b"3", b"7"])

    def test_map_with_state_emits_on_timeout(self):
        out = Updaters().update(
            1,
            UpdateInput(
                keys=col(["a", "b"]),
                values=col(["1", "1"]),
                group_ends=[2, 2],
                states=col(["", '{"n":4}']),
                has_state=[False, True],
                timing_out=[False, True],
                batch_time=1000,
            ),
        )
        self.assertEqual(out.has_state, [True, False])
        self.assertEqual(unpack(out.states)[0], b'{"n":2}')
        self.assertEqual(unpack(out.emitted.keys), [b"b"])
        self.assertEqual(unpack(out.emitted.values), [b'{"n":4}'])
        self.assertEqual(out.emitted.event_times, [1000])


class SinkRunners(unittest.TestCase):
    def test_foreach_and_foreach_batch(self):
        SEEN.clear()
        Sinks().write(0, 7, 1000, 1, batch(["1", "2"]))
        Sinks().write(1, 7, 1000, 1, batch(["x"]))
        self.assertEqual(SEEN, [1, 2, (7, 1, ["x"])])
        with self.assertRaises(Err) as caught:
            Sinks().write(0, 7, 1000, 1, batch(["3", "-1"]))
        self.assertEqual(caught.exception.value.record_index, 1)


class Logging(unittest.TestCase):
    def test_logs_and_metrics_reach_the_imports(self):
        _wit.LOGGED.clear()
        _wit.METRICS.clear()
        sluice.log.warn("careful", user=42)
        sluice.counter("seen", 3)
        sluice.gauge("depth", 1.5)
        self.assertEqual(_wit.LOGGED, [(_wit.Level.WARN, "careful", [("user", "42")])])
        self.assertEqual(_wit.METRICS, [("counter", "seen", 3), ("gauge", "depth", 1.5)])
        with self.assertRaises(ValueError):
            sluice.log.log("loud", "x")


if __name__ == "__main__":
    unittest.main()
