//! Calls within bounds: an input larger than one guest call may be given
//! (`UdfLimits::max_call_records` records or `max_call_bytes` bytes of keys and values) is cut
//! into consecutive pieces within them and the guest is called piece by piece, its results
//! joined so that the caller cannot tell. A piece boundary never splits a record, and a record
//! larger than the byte limit goes alone into a piece of its own.
//!
//! - **transform**: the outputs are concatenated in order (keyed if any piece's is); a guest
//!   error's `record-index` is made relative to the whole input again.
//! - **reduce**: cut only at group boundaries, one value per group as before. A single group
//!   over the limits is reduced in pieces and the pieces' results reduced again, as often as
//!   needed (a tree, in order). This relies on what Spark requires of a reducer: it is
//!   associative, and a UDF reducer's values and accumulators are the same type
//!   (`fn(V, V) -> V`), so its outputs are valid inputs. (Builtin reducers lift raw values to
//!   accumulators and say which they get with `raw`; they run in the host and are not cut.)
//!   The pieces of a reduction hold at least two values, so every round at least halves them.
//! - **invert**: cut item by item.
//! - **update**: cut at key boundaries (an updater sees all of a key's values at once); a key
//!   whose values alone pass a limit is [`CallErrorKind::KeyTooLarge`], never a panic.
//! - **sink**: the pieces in order, each with the same batch id, time and partition.
//!
//! The output cap (`max_output_ratio` …) applies to each call against its own piece.

use std::ops::Range;

use super::bindings::updater::exports::sluice::udf::updaters::{UpdateInput, UpdateOutput};
use super::config::UdfLimits;
use super::error::{CallError, CallErrorKind};
use super::guest_text;
use crate::batch::{Batch, BatchError, Column, cut};
use crate::config::ByteSize;

/// How much one call may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallBounds {
    /// Records (values, groups) per call; at least 1.
    pub records: u64,
    /// Bytes of keys and values (and states) per call.
    pub bytes: u64,
}

impl CallBounds {
    /// The bounds `limits` set.
    pub fn of(limits: &UdfLimits) -> Self {
        Self {
            records: limits.max_call_records.max(1),
            bytes: limits.max_call_bytes.0,
        }
    }

    fn fits(self, records: usize, bytes: usize) -> bool {
        records as u64 <= self.records && bytes as u64 <= self.bytes
    }
}

/// How a failure that is no single call's is turned into the function's [`CallError`].
pub(crate) type Fail<'a> = &'a dyn Fn(CallErrorKind) -> CallError;

fn joined(fail: Fail<'_>, pieces: usize) -> impl Fn(BatchError) -> CallError + '_ {
    move |source| fail(CallErrorKind::JoinedTooLarge { pieces, source })
}

/// Append `next` to `acc`, keyed if either is (as `Batch::concat`).
fn append(acc: &mut Batch, next: Batch) -> Result<(), BatchError> {
    if acc.is_empty() && (next.is_keyed() || !acc.is_keyed()) {
        *acc = next;
        return Ok(());
    }
    if !acc.is_keyed() && next.is_keyed() {
        acc.keys = Some(Column {
            data: Vec::new(),
            ends: vec![0; acc.len()],
        });
    }
    acc.try_extend_from(&next, 0..next.len())
}

/// A guest error naming record `i` of a piece names record `start + i` of the whole input.
fn shift_record_index(mut error: CallError, start: usize) -> CallError {
    if let CallErrorKind::Guest {
        record_index: Some(i),
        ..
    } = &mut error.kind
        && let Ok(shifted) = u32::try_from(*i as usize + start)
    {
        *i = shifted;
    }
    error
}

/// A transform over `input`, piece by piece.
pub(crate) fn transform(
    bounds: CallBounds,
    input: &Batch,
    fail: Fail<'_>,
    mut call: impl FnMut(&Batch) -> Result<Batch, CallError>,
) -> Result<Batch, CallError> {
    let ranges = input.chunk_ranges(bounds.records, bounds.bytes);
    if ranges.len() <= 1 {
        return call(input);
    }
    let pieces = ranges.len();
    let mut out = Batch::empty(false);
    for range in ranges {
        let start = range.start;
        let piece = input.slice(range);
        let output = call(&piece).map_err(|e| shift_record_index(e, start))?;
        append(&mut out, output).map_err(joined(fail, pieces))?;
    }
    Ok(out)
}

/// A sink over `input`, piece by piece, in order.
pub(crate) fn sink(
    bounds: CallBounds,
    input: &Batch,
    mut call: impl FnMut(&Batch) -> Result<(), CallError>,
) -> Result<(), CallError> {
    let ranges = input.chunk_ranges(bounds.records, bounds.bytes);
    if ranges.len() <= 1 {
        return call(input);
    }
    for range in ranges {
        let start = range.start;
        call(&input.slice(range)).map_err(|e| shift_record_index(e, start))?;
    }
    Ok(())
}

/// Item range of group `g` (`ends` checked by the caller).
fn group(ends: &[u32], g: usize) -> Range<usize> {
    let start = if g == 0 { 0 } else { ends[g - 1] as usize };
    start..ends[g] as usize
}

/// Whether `ends` are group ends over `len` items: never decreasing, the last within `len`.
fn well_formed(ends: &[u32], len: usize) -> bool {
    ends.windows(2).all(|w| w[0] <= w[1]) && ends.last().is_none_or(|&e| e as usize <= len)
}

/// A reducer over groups of `values`, piece by piece at group boundaries; a group over the
/// bounds alone is reduced as a tree.
pub(crate) fn reduce(
    bounds: CallBounds,
    values: &Column,
    group_ends: &[u32],
    fail: Fail<'_>,
    mut call: impl FnMut(&Column, &[u32]) -> Result<Column, CallError>,
) -> Result<Column, CallError> {
    // Within bounds, or ends the guest will have to judge: one call, as it always was.
    if bounds.fits(values.len(), values.data.len()) || !well_formed(group_ends, values.len()) {
        return call(values, group_ends);
    }
    let ranges = cut(
        (0..group_ends.len()).map(|g| {
            let items = group(group_ends, g);
            (items.len() as u64, values.span_bytes(items) as u64)
        }),
        bounds.records,
        bounds.bytes,
    );
    let pieces = ranges.len();
    let mut out = Column::with_capacity(group_ends.len(), 0);
    for range in ranges {
        let first = group(group_ends, range.start).start;
        let last = group(group_ends, range.end - 1).end;
        let partial =
            if range.len() == 1 && !bounds.fits(last - first, values.span_bytes(first..last)) {
                reduce_tree(bounds, values.slice(first..last), &mut call)?
            } else {
                let ends: Vec<u32> = group_ends[range]
                    .iter()
                    .map(|&e| e - first as u32)
                    .collect();
                call(&values.slice(first..last), &ends)?
            };
        out.try_extend_from(&partial, 0..partial.len())
            .map_err(joined(fail, pieces))?;
    }
    Ok(out)
}

/// One group's values reduced to one value in rounds: each round cuts them into pieces within
/// the bounds (at least two values each, so each round at least halves them) and reduces each
/// piece to one value; the last round is a single call.
fn reduce_tree(
    bounds: CallBounds,
    mut level: Column,
    call: &mut impl FnMut(&Column, &[u32]) -> Result<Column, CallError>,
) -> Result<Column, CallError> {
    loop {
        let ranges = cut_at_least_two(&level, bounds);
        if ranges.len() <= 1 {
            return call(&level, &[level.len() as u32]);
        }
        let mut next = Column::with_capacity(ranges.len(), 0);
        for range in ranges {
            let piece = level.slice(range.clone());
            let partial = call(&piece, &[piece.len() as u32])?;
            // One value per piece, each at most the call's output cap: the round's values are
            // fewer than the last round's and cannot pass a column.
            next.extend_from(&partial, 0..partial.len());
        }
        level = next;
    }
}

/// Consecutive item ranges within `bounds`, but never a single item where two could go
/// together: a round of reduction must make progress even when values are over the byte
/// bound.
fn cut_at_least_two(column: &Column, bounds: CallBounds) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0usize, 0u64);
    for i in 0..column.len() {
        let len = column.item_len(i) as u64;
        let count = (i - start) as u64;
        let fits = count < bounds.records.max(2) && bytes.saturating_add(len) <= bounds.bytes;
        if count >= 2 && !fits {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(len);
    }
    if column.len() > start {
        ranges.push(start..column.len());
    }
    ranges
}

/// The inverse reducer, item by item in pieces.
pub(crate) fn invert(
    bounds: CallBounds,
    left: &Column,
    right: &Column,
    fail: Fail<'_>,
    mut call: impl FnMut(&Column, &Column) -> Result<Column, CallError>,
) -> Result<Column, CallError> {
    if left.len() != right.len() || bounds.fits(left.len(), left.data.len() + right.data.len()) {
        return call(left, right);
    }
    let ranges = cut(
        (0..left.len()).map(|i| (1, (left.item_len(i) + right.item_len(i)) as u64)),
        bounds.records,
        bounds.bytes,
    );
    let pieces = ranges.len();
    let mut out = Column::with_capacity(left.len(), 0);
    for range in ranges {
        let partial = call(&left.slice(range.clone()), &right.slice(range))?;
        out.try_extend_from(&partial, 0..partial.len())
            .map_err(joined(fail, pieces))?;
    }
    Ok(out)
}

/// A state updater over the keys of one partition, in pieces of whole keys.
pub(crate) fn update(
    bounds: CallBounds,
    input: &UpdateInput,
    fail: Fail<'_>,
    mut call: impl FnMut(&UpdateInput) -> Result<UpdateOutput, CallError>,
) -> Result<UpdateOutput, CallError> {
    let groups = input.group_ends.len();
    let total_bytes = input.keys.data.len() + input.values.data.len() + input.states.data.len();
    let shaped = input.keys.len() == groups
        && input.states.len() == groups
        && input.has_state.len() == groups
        && input.timing_out.len() == groups
        && well_formed(&input.group_ends, input.values.len());
    if !shaped || bounds.fits(input.values.len().max(groups), total_bytes) {
        return call(input);
    }
    let weight = |g: usize| {
        let values = group(&input.group_ends, g);
        let records = values.len() as u64;
        let bytes =
            input.keys.item_len(g) + input.values.span_bytes(values) + input.states.item_len(g);
        (records, bytes as u64)
    };
    for g in 0..groups {
        let (records, bytes) = weight(g);
        // A key with one value (or none) is one record: it goes alone, whatever its size.
        if records > bounds.records || (bytes > bounds.bytes && records > 1) {
            let key = String::from_utf8_lossy(input.keys.get(g).unwrap_or_default());
            return Err(fail(CallErrorKind::KeyTooLarge {
                key: format!("{:?}", guest_text::sanitize(&key, 64)),
                records,
                bytes,
                max_records: bounds.records,
                max_bytes: ByteSize(bounds.bytes),
            }));
        }
    }
    let ranges = cut(
        (0..groups).map(|g| {
            let (records, bytes) = weight(g);
            (records.max(1), bytes)
        }),
        bounds.records,
        bounds.bytes,
    );
    let pieces = ranges.len();
    let mut out = UpdateOutput {
        states: Column::with_capacity(groups, 0),
        has_state: Vec::with_capacity(groups),
        emitted: Batch::empty(false),
    };
    for range in ranges {
        let first = group(&input.group_ends, range.start).start;
        let last = group(&input.group_ends, range.end - 1).end;
        let piece = UpdateInput {
            keys: input.keys.slice(range.clone()),
            values: input.values.slice(first..last),
            group_ends: input.group_ends[range.clone()]
                .iter()
                .map(|&e| e - first as u32)
                .collect(),
            states: input.states.slice(range.clone()),
            has_state: input.has_state[range.clone()].to_vec(),
            timing_out: input.timing_out[range].to_vec(),
            batch_time: input.batch_time,
        };
        let partial = call(&piece)?;
        out.states
            .try_extend_from(&partial.states, 0..partial.states.len())
            .map_err(joined(fail, pieces))?;
        out.has_state.extend_from_slice(&partial.has_state);
        append(&mut out.emitted, partial.emitted).map_err(joined(fail, pieces))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(records: u64, bytes: u64) -> CallBounds {
        CallBounds { records, bytes }
    }

    fn error(kind: CallErrorKind) -> CallError {
        CallError {
            component: "c".into(),
            function: "f".into(),
            batch: 1,
            partition: 0,
            kind,
        }
    }

    fn texts(column: &Column) -> Vec<String> {
        column
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// A reducer that concatenates a group's values with `+` (associative, order kept), and
    /// checks that no call is given more than `bounds`.
    fn concat_reducer(
        b: CallBounds,
        calls: &mut usize,
    ) -> impl FnMut(&Column, &[u32]) -> Result<Column, CallError> + '_ {
        move |values, ends| {
            *calls += 1;
            assert!(
                values.len() as u64 <= b.records.max(2),
                "{} values",
                values.len()
            );
            let mut out = Column::new();
            let mut start = 0;
            for &end in ends {
                let items: Vec<String> = (start..end as usize)
                    .map(|i| String::from_utf8_lossy(values.get(i).unwrap()).into_owned())
                    .collect();
                out.push(items.join("+").as_bytes());
                start = end as usize;
            }
            Ok(out)
        }
    }

    #[test]
    fn transform_pieces_join_in_order_and_errors_point_into_the_whole_input() {
        let mut input = Batch::empty(false);
        for i in 0..10 {
            input.push(None, format!("v{i}").as_bytes(), i);
        }
        let fail = |kind| error(kind);
        let mut sizes = Vec::new();
        let out = transform(bounds(3, 1000), &input, &fail, |piece| {
            sizes.push(piece.len());
            let mut out = Batch::empty(true);
            for r in piece.records() {
                out.push(Some(b"k"), &r.value.to_ascii_uppercase(), r.event_time);
            }
            Ok(out)
        })
        .unwrap();
        assert_eq!(sizes, [3, 3, 3, 1]);
        assert_eq!(out.len(), 10);
        assert_eq!(out.values.get(9), Some(&b"V9"[..]));
        assert_eq!(out.event_times, (0..10).collect::<Vec<_>>());
        assert!(out.is_keyed());

        // Record 1 of the third piece is record 7 of the input.
        let mut n = 0;
        let err = transform(bounds(3, 1000), &input, &fail, |piece| {
            n += 1;
            if n == 3 {
                return Err(error(CallErrorKind::Guest {
                    message: "bad".into(),
                    record_index: Some(1),
                }));
            }
            Ok(piece.clone())
        })
        .unwrap_err();
        assert!(
            matches!(
                err.kind,
                CallErrorKind::Guest {
                    record_index: Some(7),
                    ..
                }
            ),
            "{err}"
        );

        // Within bounds: one call with the input itself; empty: one call too.
        let mut calls = 0;
        transform(bounds(10, 1000), &input, &fail, |p| {
            calls += 1;
            Ok(p.clone())
        })
        .unwrap();
        transform(bounds(1, 1), &Batch::empty(false), &fail, |p| {
            calls += 1;
            Ok(p.clone())
        })
        .unwrap();
        assert_eq!(calls, 2);
    }

    #[test]
    fn reduce_cuts_at_group_boundaries_and_reduces_a_huge_group_as_a_tree() {
        let fail = |kind| error(kind);
        // groups: [a b] [c] [d e f g h i j] [k]
        let values = Column::from_items(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]);
        let ends = [2, 3, 10, 11];
        let b = bounds(3, 1000);
        let mut calls = 0;
        let out = reduce(b, &values, &ends, &fail, concat_reducer(b, &mut calls)).unwrap();
        assert_eq!(texts(&out), ["a+b", "c", "d+e+f+g+h+i+j", "k"]);
        // [a b c], then 7 values → 3 pieces → 1 call over 3 partials, then [k]
        assert_eq!(calls, 1 + 3 + 1 + 1);

        // By bytes: each value 10 bytes, 25 bytes per call: pairs, then pairs of pairs.
        let big: Vec<String> = (0..5).map(|i| format!("{i}").repeat(10)).collect();
        let values = Column::from_items(&big);
        let b = bounds(100, 25);
        let mut calls = 0;
        let out = reduce(b, &values, &[5], &fail, concat_reducer(b, &mut calls)).unwrap();
        assert_eq!(texts(&out), [big.join("+")]);

        // A single value over the byte bound is still reduced, once.
        let values = Column::from_items(["x".repeat(50)]);
        let mut calls = 0;
        let out = reduce(b, &values, &[1], &fail, concat_reducer(b, &mut calls)).unwrap();
        assert_eq!((texts(&out), calls), (vec!["x".repeat(50)], 1));

        // max_call_records = 1 still makes progress (pieces of two values).
        let values = Column::from_items(["a", "b", "c", "d", "e"]);
        let b = bounds(1, 1000);
        let mut calls = 0;
        let out = reduce(b, &values, &[5], &fail, concat_reducer(b, &mut calls)).unwrap();
        assert_eq!(texts(&out), ["a+b+c+d+e"]);
    }

    #[test]
    fn invert_goes_item_by_item() {
        let fail = |kind| error(kind);
        let left = Column::from_items(["10", "20", "30", "40", "50"]);
        let right = Column::from_items(["1", "2", "3", "4", "5"]);
        let mut calls = 0;
        let out = invert(bounds(2, 1000), &left, &right, &fail, |l, r| {
            calls += 1;
            assert!(l.len() <= 2);
            let mut out = Column::new();
            for (a, b) in l.iter().zip(r.iter()) {
                let a: i64 = std::str::from_utf8(a).unwrap().parse().unwrap();
                let b: i64 = std::str::from_utf8(b).unwrap().parse().unwrap();
                out.push((a - b).to_string().as_bytes());
            }
            Ok(out)
        })
        .unwrap();
        assert_eq!(texts(&out), ["9", "18", "27", "36", "45"]);
        assert_eq!(calls, 3);
    }

    fn update_input(groups: &[(&str, &[&str], Option<&str>)]) -> UpdateInput {
        let mut input = UpdateInput {
            keys: Column::new(),
            values: Column::new(),
            group_ends: Vec::new(),
            states: Column::new(),
            has_state: Vec::new(),
            timing_out: Vec::new(),
            batch_time: 7,
        };
        for (key, values, state) in groups {
            input.keys.push(key.as_bytes());
            for v in *values {
                input.values.push(v.as_bytes());
            }
            input.group_ends.push(input.values.len() as u32);
            input.states.push(state.unwrap_or("").as_bytes());
            input.has_state.push(state.is_some());
            input.timing_out.push(false);
        }
        input
    }

    /// An updater that appends a key's values to its state and emits `key=count`.
    fn appender(input: &UpdateInput) -> Result<UpdateOutput, CallError> {
        let mut out = UpdateOutput {
            states: Column::new(),
            has_state: Vec::new(),
            emitted: Batch::empty(true),
        };
        let mut start = 0;
        for g in 0..input.group_ends.len() {
            let end = input.group_ends[g] as usize;
            let mut state = String::from_utf8_lossy(input.states.get(g).unwrap()).into_owned();
            for i in start..end {
                state.push_str(std::str::from_utf8(input.values.get(i).unwrap()).unwrap());
            }
            out.states.push(state.as_bytes());
            out.has_state.push(!state.is_empty());
            out.emitted.push(
                input.keys.get(g),
                (end - start).to_string().as_bytes(),
                input.batch_time,
            );
            start = end;
        }
        Ok(out)
    }

    #[test]
    fn update_cuts_at_keys_and_refuses_a_key_it_cannot_split() {
        let fail = |kind| error(kind);
        let input = update_input(&[
            ("a", &["1", "2"], Some("s")),
            ("b", &[], Some("t")),
            ("c", &["3"], None),
            ("d", &["4", "5", "6"], None),
            ("e", &[], None),
        ]);
        let whole = appender(&input).unwrap();
        let mut calls = 0;
        let out = update(bounds(3, 1000), &input, &fail, |piece| {
            calls += 1;
            assert_eq!(piece.batch_time, 7);
            appender(piece)
        })
        .unwrap();
        assert!(calls > 1);
        assert_eq!(out.states, whole.states);
        assert_eq!(out.has_state, whole.has_state);
        assert_eq!(out.emitted, whole.emitted);

        // Key d has 3 values: over a bound of 2 records, it cannot be split.
        let err = update(bounds(2, 1000), &input, &fail, appender).unwrap_err();
        match &err.kind {
            CallErrorKind::KeyTooLarge {
                key,
                records,
                max_records,
                ..
            } => {
                assert_eq!((key.as_str(), *records, *max_records), ("\"d\"", 3, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("--udf-max-call-records"), "{err}");

        // One key with one huge value goes alone; two values over the byte bound do not.
        let huge = "x".repeat(100);
        let input = update_input(&[("a", &["1"], None), ("h", &[&huge], None)]);
        let out = update(bounds(10, 10), &input, &fail, appender).unwrap();
        assert_eq!(out.states.get(1), Some(huge.as_bytes()));
        let input = update_input(&[("a", &["1"], None), ("h", &[&huge, "y"], None)]);
        assert!(matches!(
            update(bounds(10, 10), &input, &fail, appender).map_err(|e| e.kind),
            Err(CallErrorKind::KeyTooLarge { .. })
        ));
    }

    #[test]
    fn sink_pieces_come_in_order() {
        let mut input = Batch::empty(false);
        for i in 0..5 {
            input.push(None, &[b'a' + i as u8], i);
        }
        let mut seen = Vec::new();
        sink(bounds(2, 1000), &input, |piece| {
            seen.push(texts(&piece.values).join(""));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["ab", "cd", "e"]);
    }
}
