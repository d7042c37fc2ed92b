//! Records on the guest side: a borrowed view of an input column set, and a builder for output.
//!
//! Input arrives as one buffer plus end offsets per column (see `wit/udf.wit`); [`Input`] hands
//! out [`RecordRef`]s that borrow from it without copying. Output is appended to one growing
//! buffer per column by [`Output`], so a function that emits a million records makes a handful of
//! allocations, not a million.

use crate::bindings::{Batch, Column, UdfError};
use crate::codec::{CodecError, Decode, Encode};

/// One record of an input batch, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// The record's key, if the stream is keyed.
    pub key: Option<&'a [u8]>,
    /// The record's value.
    pub value: &'a [u8],
    /// The record's event time, in milliseconds since the Unix epoch.
    pub event_time: i64,
    /// The record's position in its input batch (used in error messages).
    pub index: u32,
    /// Whether `key` / `value` are known to be UTF-8 (their column was checked as a whole).
    key_is_text: bool,
    value_is_text: bool,
}

impl PartialEq for RecordRef<'_> {
    /// Records are equal when their contents are; what the SDK knows about them does not count.
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.value, self.event_time, self.index)
            == (other.key, other.value, other.event_time, other.index)
    }
}

impl Eq for RecordRef<'_> {}

/// What is known of a column's bytes as UTF-8. A text parameter checks its column once per
/// batch instead of once per record: a record-by-record `from_utf8` in wasm32 took ~11 % of
/// `text#uppercase`'s time (`perf`, 100-byte lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Utf8 {
    /// Not checked, or not valid as a whole: each item is checked on its own, so an error still
    /// names its record.
    Unknown,
    /// Every byte is ASCII: every item is text.
    Ascii,
    /// The whole buffer is UTF-8: an item is text when it starts and ends on character
    /// boundaries.
    Valid,
}

/// A checked, read-only view of a column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnRef<'a> {
    data: &'a [u8],
    ends: &'a [u32],
    utf8: Utf8,
}

/// Whether every byte is ASCII. OR-folds blocks without an early exit inside a block, so that
/// LLVM vectorises it (`simd128` in wasm).
fn all_ascii(bytes: &[u8]) -> bool {
    const BLOCK: usize = 256;
    let (blocks, rest) = bytes.as_chunks::<BLOCK>();
    blocks
        .iter()
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) < 0x80)
        && rest.iter().fold(0u8, |acc, &b| acc | b) < 0x80
}

/// Whether `i` is a character boundary of UTF-8 `data` (the end counts as one).
fn on_boundary(data: &[u8], i: usize) -> bool {
    // Continuation bytes are 0b10xx_xxxx, i.e. -64..-1 as i8.
    data.get(i).is_none_or(|&b| (b as i8) >= -0x40)
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
            utf8: Utf8::Unknown,
        })
    }

    /// Check the whole column as UTF-8 once, so that reading an item as text afterwards only
    /// checks that it starts and ends on character boundaries.
    pub fn check_utf8(&mut self) {
        self.utf8 = if all_ascii(self.data) {
            Utf8::Ascii
        } else if std::str::from_utf8(self.data).is_ok() {
            Utf8::Valid
        } else {
            Utf8::Unknown
        };
    }

    /// Whether the item `data[start..end]` is known to be UTF-8 (false when not checked).
    fn is_text(&self, start: usize, end: usize) -> bool {
        match self.utf8 {
            Utf8::Ascii => true,
            Utf8::Valid => on_boundary(self.data, start) && on_boundary(self.data, end),
            Utf8::Unknown => false,
        }
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
        self.items().map(|(item, _)| item)
    }

    /// Every item, in order, with whether it is known to be UTF-8.
    fn items(self) -> impl Iterator<Item = (&'a [u8], bool)> + 'a {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let end = end as usize;
            let item = (&self.data[start..end], self.is_text(start, end));
            start = end;
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
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'a>> + use<'a> {
        let mut keys = self.keys.map(|k| k.items());
        let times = self.event_times;
        self.values
            .items()
            .enumerate()
            .map(move |(i, (value, value_is_text))| {
                let (key, key_is_text) = match keys.as_mut().and_then(Iterator::next) {
                    Some((key, is_text)) => (Some(key), is_text),
                    None => (None, false),
                };
                RecordRef {
                    key,
                    value,
                    event_time: times[i],
                    index: i as u32,
                    key_is_text,
                    value_is_text,
                }
            })
    }

    /// Every record, in order, read as `A` reads them: the columns `A` reads as text are
    /// checked as UTF-8 once here instead of record by record.
    pub fn records_for<A: FromRecord<'a>>(
        mut self,
    ) -> impl Iterator<Item = RecordRef<'a>> + use<'a, A> {
        if A::VALUE_TEXT {
            self.values.check_utf8();
        }
        if A::KEY_TEXT
            && let Some(keys) = self.keys.as_mut()
        {
            keys.check_utf8();
        }
        self.records()
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

    // The per-record path of `push_*` is kept small enough to inline into a runner's loop (a
    // call in Cranelift-compiled wasm saves and restores registers); what is rare is cold.
    #[inline]
    fn set_keyed(&mut self, keyed: bool) -> Result<(), UdfError> {
        if self.keyed == Some(keyed) {
            Ok(())
        } else {
            self.set_keyed_first(keyed)
        }
    }

    #[cold]
    fn set_keyed_first(&mut self, keyed: bool) -> Result<(), UdfError> {
        match self.keyed {
            None => {
                self.keyed = Some(keyed);
                if keyed {
                    self.key_ends.reserve(self.value_ends.capacity());
                }
                Ok(())
            }
            Some(_) => Err(error(
                "the function emitted keyed and unkeyed records in one batch; a stream is either keyed or not",
                None,
            )),
        }
    }

    #[inline]
    fn end_of(buffer: &[u8]) -> Result<u32, UdfError> {
        u32::try_from(buffer.len()).map_err(|_| too_large())
    }

    /// Add an unkeyed record.
    #[inline]
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

/// A record whose `what` (key or value) could not be read.
#[cold]
fn decode_error(record: &RecordRef<'_>, what: &str, e: CodecError) -> UdfError {
    error(
        format!("record {}: {what} {e}", record.index),
        Some(record.index),
    )
}

#[cold]
fn too_large() -> UdfError {
    error("one output batch passed 4 GiB; emit less per record", None)
}

#[cold]
fn codec_error(e: CodecError) -> UdfError {
    error(format!("could not encode output: {e}"), None)
}

/// Something a function's parameter can be read from a record as.
///
/// Implemented for every [`Decode`] type (reads the value), for `(K, V)` tuples (reads key and
/// value) and for [`RecordRef`] itself (the raw record).
pub trait FromRecord<'a>: Sized {
    /// Whether the key is read as text (see [`Decode::TEXT`]).
    const KEY_TEXT: bool = false;
    /// Whether the value is read as text.
    const VALUE_TEXT: bool = false;

    /// Read the parameter from `record`.
    fn from_record(record: &RecordRef<'a>) -> Result<Self, UdfError>;
}

/// Decode `bytes`, skipping the UTF-8 check when its column already passed it.
#[inline]
fn decode<'a, T: Decode<'a>>(bytes: &'a [u8], is_text: bool) -> Result<T, CodecError> {
    if T::TEXT && is_text {
        // SAFETY: `is_text` is only true for an item of a column that `check_utf8` found to be
        // all ASCII, or valid UTF-8 as a whole with the item starting and ending on character
        // boundaries; either way the item is valid UTF-8.
        T::decode_str(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        T::decode(bytes)
    }
}

impl<'a, V: Decode<'a>> FromRecord<'a> for V {
    const VALUE_TEXT: bool = V::TEXT;

    #[inline]
    fn from_record(record: &RecordRef<'a>) -> Result<Self, UdfError> {
        decode(record.value, record.value_is_text).map_err(|e| decode_error(record, "value", e))
    }
}

impl<'a, K: Decode<'a>, V: Decode<'a>> FromRecord<'a> for (K, V) {
    const KEY_TEXT: bool = K::TEXT;
    const VALUE_TEXT: bool = V::TEXT;

    #[inline]
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
        let key = decode(key, record.key_is_text).map_err(|e| decode_error(record, "key", e))?;
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
    #[inline]
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

    /// A value column made of raw items (which need not be UTF-8).
    fn raw_batch(items: &[&[u8]]) -> Batch {
        let mut out = Output::default();
        for item in items {
            out.push_value(*item, 0).unwrap();
        }
        out.finish()
    }

    /// Every record of `b` read as `&str`, through the once-per-column UTF-8 check.
    fn texts(b: &Batch) -> Vec<Result<&str, UdfError>> {
        let input = Input::new(b).unwrap();
        input
            .records_for::<&str>()
            .map(|r| <&str>::from_record(&r))
            .collect()
    }

    #[test]
    fn ascii_check_sees_a_high_byte_anywhere() {
        for len in [0, 1, 255, 256, 257, 1000] {
            let mut bytes = vec![b'a'; len];
            assert!(all_ascii(&bytes), "{len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    bytes[at] = 0x80;
                    assert!(!all_ascii(&bytes), "{len} at {at}");
                    bytes[at] = b'a';
                }
            }
        }
    }

    #[test]
    fn text_checked_per_column_reads_like_text_checked_per_record() {
        // ASCII, multi-byte UTF-8, and an empty item.
        let b = raw_batch(&[b"plain", "h\u{e9}llo \u{1f600}".as_bytes(), b"", b"end"]);
        let got: Vec<_> = texts(&b).into_iter().map(Result::unwrap).collect();
        assert_eq!(got, ["plain", "h\u{e9}llo \u{1f600}", "", "end"]);
    }

    #[test]
    fn an_item_cut_inside_a_character_is_still_an_error() {
        // The buffer as a whole is valid UTF-8 ("é" = C3 A9), but the items split the character.
        let b = raw_batch(&[b"ok", b"\xc3", b"\xa9", b"fine"]);
        assert!(std::str::from_utf8(&b.values.data).is_ok());
        let got = texts(&b);
        assert_eq!(got[0].as_ref().unwrap(), &"ok");
        assert_eq!(got[1].as_ref().unwrap_err().record_index, Some(1));
        assert!(got[1].as_ref().unwrap_err().message.contains("UTF-8"));
        assert_eq!(got[2].as_ref().unwrap_err().record_index, Some(2));
        assert_eq!(got[3].as_ref().unwrap(), &"fine");
    }

    #[test]
    fn invalid_utf8_names_its_record_and_spares_the_others() {
        let b = raw_batch(&[b"good", b"bad \xff", "\u{e9}t\u{e9}".as_bytes()]);
        let got = texts(&b);
        assert_eq!(got[0].as_ref().unwrap(), &"good");
        let err = got[1].as_ref().unwrap_err();
        assert_eq!(err.record_index, Some(1));
        assert!(err.message.contains("record 1"), "{}", err.message);
        assert_eq!(got[2].as_ref().unwrap(), &"\u{e9}t\u{e9}");
    }

    #[test]
    fn keys_are_checked_as_text_too() {
        let mut out = Output::default();
        out.push_keyed(&b"k\xff"[..], "v", 0).unwrap();
        out.push_keyed("k\u{e9}", "w", 0).unwrap();
        let b = out.finish();
        let input = Input::new(&b).unwrap();
        let got: Vec<_> = input
            .records_for::<(&str, &str)>()
            .map(|r| <(&str, &str)>::from_record(&r))
            .collect();
        assert!(got[0].as_ref().unwrap_err().message.contains("key"));
        assert_eq!(got[1].as_ref().unwrap(), &("k\u{e9}", "w"));
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
