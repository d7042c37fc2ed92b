//! The host's record batches: the column types of the WIT contract, with the methods the host
//! needs to build, read and check them.
//!
//! A [`Batch`] is exactly what crosses the Wasm boundary (one buffer plus end offsets per
//! column), so handing a partition to a guest costs no conversion on the host side, and a
//! guest's output becomes the next operator's input as it is. The types are this module's own
//! (the `column` and `batch` records of `sluice:udf/types`, with the WIT's field names for
//! wasmtime's component model); `udf`'s bindings use them, this module does not depend on
//! `udf`.

mod bounds;
pub mod codec;
mod ops;

pub use bounds::{BatchError, MAX_COLUMN_BYTES, cut};
pub use ops::key_hash;

use wasmtime::component::{ComponentType, Lift, Lower};

/// A column of byte strings stored back to back in one buffer (`column` in `wit/udf.wit`).
///
/// Item `i` is `data[start(i)..ends[i]]`, where `start(0) = 0` and `start(i) = ends[i - 1]`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct Column {
    /// Every item's bytes, back to back.
    #[component(name = "data")]
    pub data: Vec<u8>,
    /// The exclusive end offset in `data` of each item.
    #[component(name = "ends")]
    pub ends: Vec<u32>,
}

/// A batch of records, stored column by column (`batch` in `wit/udf.wit`).
///
/// Record `i` is `(keys[i] if keys is present, values[i], event_times[i])`; all present columns
/// have the same number of items (see [`Batch::validate`]).
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct Batch {
    /// The key of every record, or none when the stream is not keyed.
    #[component(name = "keys")]
    pub keys: Option<Column>,
    /// The value of every record.
    #[component(name = "values")]
    pub values: Column,
    /// The event time of every record, in milliseconds since the Unix epoch (UTC).
    #[component(name = "event-times")]
    pub event_times: Vec<i64>,
}

/// One record of a [`Batch`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The key, when the batch is keyed.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Milliseconds since the Unix epoch.
    pub event_time: i64,
}

impl Column {
    /// An empty column.
    pub fn new() -> Self {
        Self {
            data: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// An empty column with room for `items` items of `bytes` bytes in all.
    pub fn with_capacity(items: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(items),
        }
    }

    /// A column of the given items, for items bounded by construction (constants, a guest's
    /// output). Panics past [`MAX_COLUMN_BYTES`]; where input decides the size, use
    /// [`try_from_items`](Self::try_from_items).
    pub fn from_items<I: IntoIterator<Item = T>, T: AsRef<[u8]>>(items: I) -> Self {
        Self::try_from_items(items).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A column of the given items, or [`BatchError::ColumnFull`] past [`MAX_COLUMN_BYTES`].
    pub fn try_from_items<I: IntoIterator<Item = T>, T: AsRef<[u8]>>(
        items: I,
    ) -> Result<Self, BatchError> {
        let mut column = Self::new();
        for item in items {
            column.try_push(item.as_ref())?;
        }
        Ok(column)
    }

    /// Append one item to a column bounded by construction (a part of a partition, a guest's
    /// output, a group's accumulator). Panics past [`MAX_COLUMN_BYTES`]; where input decides
    /// the size (a receiver's buffer, a whole batch gathered into one partition), use
    /// [`try_push`](Self::try_push).
    pub fn push(&mut self, item: &[u8]) {
        if let Err(e) = self.try_push(item) {
            panic!("{e}");
        }
    }

    /// Append one item, or refuse with [`BatchError::ColumnFull`] (the column unchanged) when
    /// the column would pass [`MAX_COLUMN_BYTES`].
    pub fn try_push(&mut self, item: &[u8]) -> Result<(), BatchError> {
        self.push_within(item, MAX_COLUMN_BYTES, "value")
    }

    /// [`try_push`](Self::try_push) against `limit` bytes (lowered in tests).
    fn push_within(
        &mut self,
        item: &[u8],
        limit: u64,
        what: &'static str,
    ) -> Result<(), BatchError> {
        let bytes = (self.data.len() as u64).saturating_add(item.len() as u64);
        let end = bounds::end_within(what, bytes, limit)?;
        self.data.extend_from_slice(item);
        self.ends.push(end);
        Ok(())
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the column has no items.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Item `i`, or `None` past the end. Assumes a [`validate`d](Self::validate) column.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.data.get(start..end)
    }

    /// Every item, in order. Assumes a [`validate`d](Self::validate) column.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let item = self.data.get(start..end as usize).unwrap_or_default();
            start = end as usize;
            item
        })
    }

    /// Check the contract of `wit/udf.wit`: ends never decrease and the last one is the length
    /// of the data. Says what is wrong, for an error message.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        let mut previous = 0u32;
        for (i, &end) in self.ends.iter().enumerate() {
            if end < previous {
                return Err(format!(
                    "{what} column: item {i} ends at {end}, before the previous end {previous}"
                ));
            }
            previous = end;
        }
        if previous as usize != self.data.len() {
            return Err(format!(
                "{what} column: the last item ends at {previous} but the column has {} bytes",
                self.data.len()
            ));
        }
        Ok(())
    }
}

impl Default for Column {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch, keyed or not.
    pub fn empty(keyed: bool) -> Self {
        Self {
            keys: keyed.then(Column::new),
            values: Column::new(),
            event_times: Vec::new(),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether the records carry keys.
    pub fn is_keyed(&self) -> bool {
        self.keys.is_some()
    }

    /// Bytes of keys and values.
    pub fn byte_len(&self) -> usize {
        self.values.data.len() + self.keys.as_ref().map_or(0, |k| k.data.len())
    }

    /// Append a record to a batch bounded by construction (see [`Column::push`]; panics past
    /// [`MAX_COLUMN_BYTES`] in a column). A key on an unkeyed batch (or none on a keyed one) is
    /// a bug of the caller: the engine decides keyedness per stream.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], event_time: i64) {
        if let Err(e) = self.try_push(key, value, event_time) {
            panic!("{e}");
        }
    }

    /// Append a record, or refuse with [`BatchError::ColumnFull`] (the batch unchanged) when
    /// its key or value column would pass [`MAX_COLUMN_BYTES`].
    pub fn try_push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        event_time: i64,
    ) -> Result<(), BatchError> {
        self.push_within(key, value, event_time, MAX_COLUMN_BYTES)
    }

    /// [`try_push`](Self::try_push) against `limit` bytes per column (lowered in tests).
    fn push_within(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        event_time: i64,
        limit: u64,
    ) -> Result<(), BatchError> {
        // Check the value column first so that a refusal leaves both columns as they were.
        let value_bytes = (self.values.data.len() as u64).saturating_add(value.len() as u64);
        bounds::end_within("value", value_bytes, limit)?;
        match (&mut self.keys, key) {
            (Some(keys), Some(key)) => keys.push_within(key, limit, "key")?,
            (None, None) => {}
            (Some(keys), None) => keys.push_within(b"", limit, "key")?,
            (None, Some(_)) => debug_assert!(false, "a key pushed onto an unkeyed batch"),
        }
        self.values.push_within(value, limit, "value")?;
        self.event_times.push(event_time);
        Ok(())
    }

    /// Every record, in order. Assumes a [`validate`d](Self::validate) batch.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        let mut keys = self.keys.as_ref().map(|k| k.iter());
        self.values
            .iter()
            .zip(&self.event_times)
            .map(move |(value, &event_time)| RecordRef {
                key: keys.as_mut().and_then(Iterator::next),
                value,
                event_time,
            })
    }

    /// Check the contract of `wit/udf.wit`: well-formed columns of one length.
    pub fn validate(&self) -> Result<(), String> {
        self.values.validate("value")?;
        let n = self.values.len();
        if let Some(keys) = &self.keys {
            keys.validate("key")?;
            if keys.len() != n {
                return Err(format!("{} keys for {n} values", keys.len()));
            }
        }
        if self.event_times.len() != n {
            return Err(format!(
                "{} event times for {n} values",
                self.event_times.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_records() {
        let mut batch = Batch::empty(true);
        batch.push(Some(b"a"), b"1", 10);
        batch.push(Some(b""), b"", 11);
        batch.push(Some(b"ccc"), b"333", 12);
        batch.validate().unwrap();
        let records: Vec<_> = batch.records().collect();
        assert_eq!(
            records[2],
            RecordRef {
                key: Some(b"ccc"),
                value: b"333",
                event_time: 12
            }
        );
        assert_eq!(records[1].value, b"");
        assert_eq!(batch.byte_len(), 8);
        assert_eq!(batch.values.get(2), Some(&b"333"[..]));
        assert_eq!(batch.values.get(3), None);
    }

    #[test]
    fn validation_says_what_is_wrong() {
        let mut column = Column::from_items(["ab", "c"]);
        column.ends = vec![2, 1];
        assert!(
            column
                .validate("value")
                .unwrap_err()
                .contains("item 1 ends at 1")
        );
        column.ends = vec![2, 9];
        assert!(
            column
                .validate("value")
                .unwrap_err()
                .contains("has 3 bytes")
        );
        let mut batch = Batch::empty(false);
        batch.push(None, b"x", 0);
        batch.event_times.push(1);
        assert!(
            batch
                .validate()
                .unwrap_err()
                .contains("2 event times for 1 values")
        );
    }
}
