//! Records on the guest side: a borrowed view of an input column set, and a builder for output.
//!
//! Input arrives as one buffer plus end offsets per column (see `wit/udf.wit`); [`Input`] hands
//! out [`RecordRef`]s that borrow from it without copying. Output is appended to one growing
//! buffer per column by [`Output`], so a function that emits a million records makes a handful of
//! allocations, not a million.

use crate::bindings::{Batch, Column, UdfError};
use crate::codec::{CodecError, Decode, Encode};

/// One record of an input batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's key, if the stream is keyed.
    pub key: Option<&'a [u8]>,
    /// The record's value.
    pub value: &'a [u8],
    /// The record's event time, in milliseconds since the Unix epoch.
    pub event_time: i64,
    /// The record's position in its input batch (used in error messages).
    pub index: u32,
}

/// A checked, read-only view of a column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnRef<'a> {
    data: &'a [u8],
    ends: &'a [u32],
}

impl<'a> ColumnRef<'a> {
    /// Check that `ends` is non-decreasing and stays inside `data`; `what` names the column in
    /// the error.
    pub fn new(column: &'a Column, what: &str) -> Result<Self, UdfError> {
        let mut previous = 0u32;
        for (i, &end) in column.ends.iter().enumerate() {
            if end < previous || end as usize > column.data.len() {
                return Err(error(
                    format!(
                        "malformed {what} column from the host: item {i} ends at {end}, after {previous}, in {} bytes",
                        column.data.len()
                    ),
                    None,
                ));
            }
            previous = end;
        }
        Ok(Self {
            data: &column.data,
            ends: &column.ends,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the column has no items.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Item `i`. Panics when `i >= len()`.
    pub fn get(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// Every item, in order.
    pub fn iter(self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let item = &data[start..end as usize];
            start = end as usize;
            item
        })
    }
}

/// A checked, read-only view of an input batch.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    keys: Option<ColumnRef<'a>>,
    values: ColumnRef<'a>,
    event_times: &'a [i64],
}

impl<'a> Input<'a> {
    /// Check the batch's shape once, so that reading records afterwards cannot fail.
    pub fn new(batch: &'a Batch) -> Result<Self, UdfError> {
        let values = ColumnRef::new(&batch.values, "value")?;
        let keys = match &batch.keys {
            Some(keys) => Some(ColumnRef::new(keys, "key")?),
            None => None,
        };
        let n = values.len();
        if keys.is_some_and(|k| k.len() != n) || batch.event_times.len() != n {
            return Err(error(
                format!(
                    "malformed batch from the host: {n} values, {} keys, {} event times",
                    keys.map_or(0, |k| k.len()),
                    batch.event_times.len()
                ),
                None,
            ));
        }
        Ok(Self {
            keys,
            values,
            event_times: &batch.event_times,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bytes of all values: a good first guess of how much output a function writes.
    pub fn value_bytes(&self) -> usize {
        self.values.data.len()
    }

    /// Whether the records carry keys.
    pub fn is_keyed(&self) -> bool {
        self.keys.is_some()
    }

    /// Every record, in order.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'a>> + 'a {
        let mut keys = self.keys.map(|k| k.iter());
        let times = self.event_times;
        self.values
            .iter()
            .enumerate()
            .map(move |(i, value)| RecordRef {
                key: keys.as_mut().and_then(Iterator::next),
                value,
                event_time: times[i],
                index: i as u32,
            })
    }
}

/// Builds an output batch, one record at a time.
///
/// The first record decides whether the batch is keyed; mixing keyed and unkeyed records in one
/// batch is an error, because a stream is either keyed or not.
#[derive(Debug, Default)]
pub struct Output {
    keyed: Option<bool>,
    keys: Vec<u8>,
    key_ends: Vec<u32>,
    values: Vec<u8>,
    value_ends: Vec<u32>,
    event_times: Vec<i64>,
}

impl Output {
    /// An empty output with room for `records` records of `bytes` value bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            values: Vec::with_capacity(bytes),
            value_ends: Vec::with_capacity(records),
            event_times: Vec::with_capacity(records),
            ..Self::default()
        }
    }

    /// Number of records so far.
    pub fn len(&self) -> usize {
        self.value_ends.len()
    }

    /// Whether no record was added yet.
    pub fn is_empty(&self) -> bool {
        self.value_ends.is_empty()
    }

    fn set_keyed(&mut self, keyed: bool) -> Result<(), UdfError> {
        match self.keyed {
            None => {
                self.keyed = Some(keyed);
                if keyed {
                    self.key_ends.reserve(self.value_ends.capacity());
                }
                Ok(())
            }
            Some(k) if k == keyed => Ok(()),
            Some(_) => Err(error(
                "the function emitted keyed and unkeyed records in one batch; a stream is either keyed or not",
                None,
            )),
        }
    }

    fn end_of(buffer: &[u8]) -> Result<u32, UdfError> {
        u32::try_from(buffer.len())
            .map_err(|_| error("one output batch passed 4 GiB; emit less per record", None))
    }

    /// Add an unkeyed record.
    pub fn push_value<V: Encode + ?Sized>(
        &mut self,
        value: &V,
        event_time: i64,
    ) -> Result<(), UdfError> {
        self.set_keyed(false)?;
        value.encode(&mut self.values).map_err(codec_error)?;
        self.value_ends.push(Self::end_of(&self.values)?);
        self.event_times.push(event_time);
        Ok(())
    }

    /// Add a keyed record.
    pub fn push_keyed<K: Encode + ?Sized, V: Encode + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
        event_time: i64,
    ) -> Result<(), UdfError> {
        self.set_keyed(true)?;
        key.encode(&mut self.keys).map_err(codec_error)?;
        self.key_ends.push(Self::end_of(&self.keys)?);
        value.encode(&mut self.values).map_err(codec_error)?;
        self.value_ends.push(Self::end_of(&self.values)?);
        self.event_times.push(event_time);
        Ok(())
    }

    /// Add a record as raw bytes, e.g. an input record passed through unchanged.
    pub fn push_raw(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        event_time: i64,
    ) -> Result<(), UdfError> {
        match key {
            Some(key) => self.push_keyed(key, value, event_time),
            None => self.push_value(value, event_time),
        }
    }

    /// The finished batch.
    pub fn finish(self) -> Batch {
        let keys = (self.keyed == Some(true)).then_some(Column {
            data: self.keys,
            ends: self.key_ends,
        });
        Batch {
            keys,
            values: Column {
                data: self.values,
                ends: self.value_ends,
            },
            event_times: self.event_times,
        }
    }
}

/// Builds one column (reducer results, updater states).
#[derive(Debug, Default)]
pub struct ColumnBuilder {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl ColumnBuilder {
    /// An empty column with room for `items` items.
    pub fn with_capacity(items: usize) -> Self {
        Self {
            data: Vec::with_capacity(items * 8),
            ends: Vec::with_capacity(items),
        }
    }

    /// Append one encoded item.
    pub fn push<V: Encode + ?Sized>(&mut self, value: &V) -> Result<(), UdfError> {
        value.encode(&mut self.data).map_err(codec_error)?;
        self.ends.push(Output::end_of(&self.data)?);
        Ok(())
    }

    /// Append an empty placeholder item (for an absent state).
    pub fn push_empty(&mut self) -> Result<(), UdfError> {
        self.ends.push(Output::end_of(&self.data)?);
        Ok(())
    }

    /// The finished column.
    pub fn finish(self) -> Column {
        Column {
            data: self.data,
            ends: self.ends,
        }
    }
}

/// A UDF error with a message and, when known, the input record that caused it.
pub fn error(message: impl Into<String>, record_index: Option<u32>) -> UdfError {
    UdfError {
        message: message.into(),
        record_index,
    }
}

fn codec_error(e: CodecError) -> UdfError {
    error(format!("could not encode output: {e}"), None)
}

/// Something a function's parameter can be read from a record as.
///
/// Implemented for every [`Decode`] type (reads the value), for `(K, V)` tuples (reads key and
/// value) and for [`RecordRef`] itself (the raw record).
pub trait FromRecord<'a>: Sized {
    /// Read the parameter from `record`.
    fn from_record(record: &RecordRef<'a>) -> Result<Self, UdfError>;
}

impl<'a, V: Decode<'a>> FromRecord<'a> for V {
    fn from_record(record: &RecordRef<'a>) -> Result<Self, UdfError> {
        V::decode(record.value).map_err(|e| {
            error(
                format!("record {}: value {e}", record.index),
                Some(record.index),
            )
        })
    }
}

impl<'a, K: Decode<'a>, V: Decode<'a>> FromRecord<'a> for (K, V) {
    fn from_record(record: &RecordRef<'a>) -> Result<Self, UdfError> {
        let key = record.key.ok_or_else(|| {
            error(
                format!(
                    "record {}: the function takes a (key, value) pair but the stream is not keyed",
                    record.index
                ),
                Some(record.index),
            )
        })?;
        let key = K::decode(key).map_err(|e| {
            error(
                format!("record {}: key {e}", record.index),
                Some(record.index),
            )
        })?;
        Ok((key, V::from_record(record)?))
    }
}

impl<'a> FromRecord<'a> for RecordRef<'a> {
    fn from_record(record: &RecordRef<'a>) -> Result<Self, UdfError> {
        Ok(*record)
    }
}

/// A record with an explicit event time, e.g. one parsed out of the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed<T> {
    /// Milliseconds since the Unix epoch.
    pub event_time: i64,
    /// What to emit: a value or a `(key, value)` pair.
    pub record: T,
}

/// Something a function can emit as one output record.
///
/// A plain value becomes an unkeyed record, a `(key, value)` tuple a keyed one, [`Timed`] sets
/// the event time (otherwise the input record's time is kept) and a [`RecordRef`] is passed
/// through as it is.
pub trait Emit {
    /// Append `self` to `out`; `event_time` is the time of the input it came from.
    fn emit(self, out: &mut Output, event_time: i64) -> Result<(), UdfError>;
}

impl<V: Encode> Emit for V {
    fn emit(self, out: &mut Output, event_time: i64) -> Result<(), UdfError> {
        out.push_value(&self, event_time)
    }
}

impl<K: Encode, V: Encode> Emit for (K, V) {
    fn emit(self, out: &mut Output, event_time: i64) -> Result<(), UdfError> {
        out.push_keyed(&self.0, &self.1, event_time)
    }
}

impl<T: Emit> Emit for Timed<T> {
    fn emit(self, out: &mut Output, _event_time: i64) -> Result<(), UdfError> {
        self.record.emit(out, self.event_time)
    }
}

impl Emit for RecordRef<'_> {
    fn emit(self, out: &mut Output, _event_time: i64) -> Result<(), UdfError> {
        out.push_raw(self.key, self.value, self.event_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[&str], keys: Option<&[&str]>) -> Batch {
        let mut out = Output::default();
        for (i, v) in values.iter().enumerate() {
            match keys {
                Some(k) => out.push_keyed(k[i], *v, 100 + i as i64).unwrap(),
                None => out.push_value(*v, 100 + i as i64).unwrap(),
            }
        }
        out.finish()
    }

    #[test]
    fn records_round_trip_through_output() {
        let b = batch(&["a", "", "ccc"], Some(&["k1", "k2", ""]));
        let input = Input::new(&b).unwrap();
        let records: Vec<_> = input.records().collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].key, Some(&b"k2"[..]));
        assert_eq!(records[1].value, b"");
        assert_eq!(records[2].value, b"ccc");
        assert_eq!(records[2].key, Some(&b""[..]));
        assert_eq!(records[2].event_time, 102);
        let pair: (&str, &str) = FromRecord::from_record(&records[0]).unwrap();
        assert_eq!(pair, ("k1", "a"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut b = batch(&["ab", "c"], None);
        b.values.ends = vec![2, 1];
        assert!(
            Input::new(&b)
                .unwrap_err()
                .message
                .contains("item 1 ends at 1")
        );
        let mut b = batch(&["ab"], None);
        b.event_times.clear();
        assert!(
            Input::new(&b)
                .unwrap_err()
                .message
                .contains("0 event times")
        );
    }

    #[test]
    fn keyed_and_unkeyed_do_not_mix() {
        let mut out = Output::default();
        out.push_value("x", 0).unwrap();
        let err = out.push_keyed("k", "y", 0).unwrap_err();
        assert!(err.message.contains("keyed and unkeyed"));
    }

    #[test]
    fn pair_parameter_on_unkeyed_stream_names_the_record() {
        let b = batch(&["x"], None);
        let input = Input::new(&b).unwrap();
        let rec = input.records().next().unwrap();
        let err = <(String, String)>::from_record(&rec).unwrap_err();
        assert_eq!(err.record_index, Some(0));
        assert!(err.message.contains("not keyed"));
    }
}
