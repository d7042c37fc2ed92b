//! How large a batch may grow, and cutting one into pieces within limits.
//!
//! A column's end offsets are `u32` (the WIT contract), so one column holds less than 4 GiB:
//! [`MAX_COLUMN_BYTES`]. Every builder has a fallible form (`try_push`, `try_extend_from`,
//! [`Batch::try_concat`], [`Batch::spread`]) that refuses to pass it with a typed
//! [`BatchError`], leaving the batch as it was; the infallible forms are for batches bounded by
//! construction (a slice of a valid batch, a guest's output).
//!
//! [`cut`] splits a sequence of weighted units (records, groups of records) into consecutive
//! pieces of at most `max_records` records and `max_bytes` bytes; a unit heavier than either
//! limit goes alone into a piece of its own, never dropped. [`Batch::chunks`] applies it to
//! records: the UDF runtime (`udf::chunks`) calls a guest piece by piece with it.

use std::ops::Range;

use super::{Batch, Column};

/// The most bytes one column may hold: its end offsets are `u32` (`wit/udf.wit`).
pub const MAX_COLUMN_BYTES: u64 = u32::MAX as u64;

/// A batch could not be built because it would be too large for its representation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A column would pass the bytes its `u32` end offsets can address.
    #[error(
        "a {what} column would hold {bytes} bytes, over the {limit} bytes its 32-bit offsets can address (wit/udf.wit); the records must be spread over more partitions (raise the job's `partitions`) or smaller batches (`max_batch_records`, a shorter `batch_interval`)"
    )]
    ColumnFull {
        /// `key` or `value`.
        what: &'static str,
        /// The bytes it would hold.
        bytes: u64,
        /// The most it may hold.
        limit: u64,
    },
}

/// The end offset of a column of `bytes` bytes, if it is within `limit`.
pub(super) fn end_within(what: &'static str, bytes: u64, limit: u64) -> Result<u32, BatchError> {
    let full = || BatchError::ColumnFull { what, bytes, limit };
    if bytes > limit.min(MAX_COLUMN_BYTES) {
        return Err(full());
    }
    u32::try_from(bytes).map_err(|_| full())
}

/// Cut consecutive units, each weighing `(records, bytes)`, into consecutive ranges of units
/// holding at most `max_records` records and `max_bytes` bytes each. A unit heavier than either
/// limit alone takes a range of its own: it is never dropped nor merged with others. No range
/// is empty; no units, no ranges.
pub fn cut(
    units: impl IntoIterator<Item = (u64, u64)>,
    max_records: u64,
    max_bytes: u64,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut records, mut bytes) = (0usize, 0u64, 0u64);
    let mut end = 0usize;
    for (i, (r, b)) in units.into_iter().enumerate() {
        let fits = records.saturating_add(r) <= max_records && bytes.saturating_add(b) <= max_bytes;
        if i > start && !fits {
            ranges.push(start..i);
            (start, records, bytes) = (i, 0, 0);
        }
        records = records.saturating_add(r);
        bytes = bytes.saturating_add(b);
        end = i + 1;
    }
    if end > start {
        ranges.push(start..end);
    }
    ranges
}

impl Column {
    /// Bytes of item range `range` (assumes a [`validate`d](Self::validate) column and a range
    /// within it).
    pub fn span_bytes(&self, range: Range<usize>) -> usize {
        if range.is_empty() {
            return 0;
        }
        let start = if range.start == 0 {
            0
        } else {
            self.ends[range.start - 1] as usize
        };
        self.ends[range.end - 1] as usize - start
    }

    /// Length in bytes of item `i` (0 past the end).
    pub fn item_len(&self, i: usize) -> usize {
        self.get(i).map_or(0, <[u8]>::len)
    }

    /// A copy of item range `range` (which must lie within the column).
    pub fn slice(&self, range: Range<usize>) -> Column {
        let mut out = Column::with_capacity(range.len(), self.span_bytes(range.clone()));
        // A part of a valid column is smaller than it: it always fits.
        out.extend_from(self, range);
        out
    }
}

impl Batch {
    /// The records of `range` (which must lie within the batch), copied into a batch of their
    /// own, keyed like this one.
    pub fn slice(&self, range: Range<usize>) -> Batch {
        let mut out = Batch {
            keys: self
                .keys
                .as_ref()
                .map(|k| Column::with_capacity(range.len(), k.span_bytes(range.clone()))),
            values: Column::with_capacity(range.len(), self.values.span_bytes(range.clone())),
            event_times: Vec::with_capacity(range.len()),
        };
        out.extend_from(self, range);
        out
    }

    /// Bytes (key and value) of record `i`.
    pub fn record_bytes(&self, i: usize) -> usize {
        self.values.item_len(i) + self.keys.as_ref().map_or(0, |k| k.item_len(i))
    }

    /// Consecutive record ranges of at most `max_records` records and `max_bytes` bytes of keys
    /// and values each, covering the batch in order (see [`cut`]: a record over `max_bytes`
    /// goes alone). An empty batch has none; a batch within both limits has one.
    pub fn chunk_ranges(&self, max_records: u64, max_bytes: u64) -> Vec<Range<usize>> {
        if (self.len() as u64) <= max_records && (self.byte_len() as u64) <= max_bytes {
            return if self.is_empty() {
                Vec::new()
            } else {
                std::iter::once(0..self.len()).collect()
            };
        }
        cut(
            (0..self.len()).map(|i| (1, self.record_bytes(i) as u64)),
            max_records,
            max_bytes,
        )
    }

    /// The batch as consecutive sub-batches within `max_records` and `max_bytes` (see
    /// [`chunk_ranges`](Self::chunk_ranges)), each with the index of its first record. The
    /// records are copied piece by piece, as the iterator goes, so at most one piece is held
    /// beside the batch.
    pub fn chunks(
        &self,
        max_records: u64,
        max_bytes: u64,
    ) -> impl Iterator<Item = (usize, Batch)> + '_ {
        self.chunk_ranges(max_records, max_bytes)
            .into_iter()
            .map(|range| (range.start, self.slice(range)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[&str]) -> Batch {
        let mut b = Batch::empty(true);
        for (i, v) in values.iter().enumerate() {
            b.push(Some(format!("k{i}").as_bytes()), v.as_bytes(), i as i64);
        }
        b
    }

    fn texts(b: &Batch) -> Vec<String> {
        b.values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn cut_keeps_every_unit_in_order_within_limits() {
        // records limit
        assert_eq!(cut((0..7).map(|_| (1, 0)), 3, 100), [0..3, 3..6, 6..7]);
        // bytes limit: 4+4 fit in 10, the third does not
        assert_eq!(cut([(1, 4), (1, 4), (1, 4), (1, 1)], 100, 10), [0..2, 2..4]);
        // exactly at the limit fits
        assert_eq!(cut([(1, 5), (1, 5), (1, 5)], 100, 10), [0..2, 2..3]);
        // empty
        assert!(cut(std::iter::empty(), 3, 3).is_empty());
        // a unit heavier than the limit goes alone, before and after lighter ones
        assert_eq!(
            cut([(1, 1), (1, 50), (1, 1), (1, 1)], 100, 10),
            [0..1, 1..2, 2..4]
        );
        assert_eq!(cut([(9, 1), (1, 1)], 3, 10), [0..1, 1..2]);
        // zero-weight units still respect nothing but the limits
        assert_eq!(
            cut([(0, 0), (0, 0)], 1, 1),
            std::iter::once(0..2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn chunks_cover_the_batch_and_never_drop_a_huge_record() {
        let huge = "x".repeat(100);
        let b = batch(&["a", "bb", &huge, "c", "", "dd"]);
        let pieces: Vec<(usize, Batch)> = b.chunks(2, 10).collect();
        let starts: Vec<usize> = pieces.iter().map(|(s, _)| *s).collect();
        // "a"+"k0" (3) + "bb"+"k1" (4) = 7 ≤ 10; the huge record alone; then 2 records max.
        assert_eq!(starts, [0, 2, 3, 5]);
        assert_eq!(texts(&pieces[1].1), [huge.as_str()]);
        for (_, p) in &pieces {
            p.validate().unwrap();
            assert!(p.is_keyed());
            assert!(p.len() <= 2);
        }
        let whole = Batch::try_concat(pieces.iter().map(|(_, p)| p)).unwrap();
        assert_eq!(whole, b);
        // Within the limits: one piece, the whole batch.
        assert_eq!(
            b.chunk_ranges(100, 1000),
            std::iter::once(0..6).collect::<Vec<_>>()
        );
        // Empty: no pieces.
        assert_eq!(Batch::empty(false).chunks(1, 1).count(), 0);
        // One record per piece.
        assert_eq!(b.chunk_ranges(1, u64::MAX).len(), 6);
        // Event times follow their records.
        assert_eq!(pieces[3].1.event_times, [5]);
    }

    #[test]
    fn slices_copy_their_range() {
        let b = batch(&["a", "bb", "ccc"]);
        let s = b.slice(1..3);
        assert_eq!(texts(&s), ["bb", "ccc"]);
        assert_eq!(s.keys.as_ref().unwrap().ends, [2, 4]);
        assert_eq!(b.values.span_bytes(1..3), 5);
        assert_eq!(b.values.span_bytes(1..1), 0);
        assert!(b.slice(0..0).is_empty());
    }
}
