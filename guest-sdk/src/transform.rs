//! Runners for transform functions: how a typed function becomes `transforms.transform`.
//!
//! Each runner's name is the kind an author writes in [`export_transforms!`](crate::export_transforms).
//! A runner decodes each record into the function's parameter type ([`FromRecord`]), calls the
//! function, and encodes what it returns ([`Emit`]). Output records keep the input record's event
//! time unless the function returns [`Timed`](crate::Timed).

use std::fmt::Display;

use crate::bindings::{Batch, UdfError};
use crate::records::{Emit, FromRecord, Input, Output, RecordRef, error};

/// An output sized like the input, so a map or filter never regrows its buffers.
fn output_for(input: &Input<'_>) -> Output {
    Output::with_capacity(input.len(), input.value_bytes())
}

/// The error of a fallible function, tied to the record it failed on.
fn record_error(record: &RecordRef<'_>, e: impl Display) -> UdfError {
    error(format!("record {}: {e}", record.index), Some(record.index))
}

/// One record in, one record out: `fn(A) -> R`.
pub fn map<'a, A: FromRecord<'a>, R: Emit>(
    input: Input<'a>,
    mut f: impl FnMut(A) -> R,
) -> Result<Batch, UdfError> {
    let mut out = output_for(&input);
    for record in input.records_for::<A>() {
        f(A::from_record(&record)?).emit(&mut out, record.event_time)?;
    }
    Ok(out.finish())
}

/// Like [`map`], for `fn(A) -> Result<R, E>`: an `Err` fails the batch, naming the record.
pub fn try_map<'a, A: FromRecord<'a>, R: Emit, E: Display>(
    input: Input<'a>,
    mut f: impl FnMut(A) -> Result<R, E>,
) -> Result<Batch, UdfError> {
    let mut out = output_for(&input);
    for record in input.records_for::<A>() {
        f(A::from_record(&record)?)
            .map_err(|e| record_error(&record, e))?
            .emit(&mut out, record.event_time)?;
    }
    Ok(out.finish())
}

/// One record in, any number out: `fn(A) -> I` where `I` iterates over records (a `Vec`, an
/// `Option`, an iterator).
pub fn flat_map<'a, A: FromRecord<'a>, I>(
    input: Input<'a>,
    mut f: impl FnMut(A) -> I,
) -> Result<Batch, UdfError>
where
    I: IntoIterator,
    I::Item: Emit,
{
    let mut out = output_for(&input);
    for record in input.records_for::<A>() {
        for item in f(A::from_record(&record)?) {
            item.emit(&mut out, record.event_time)?;
        }
    }
    Ok(out.finish())
}

/// Like [`flat_map`], for `fn(A) -> Result<I, E>`.
pub fn try_flat_map<'a, A: FromRecord<'a>, I, E: Display>(
    input: Input<'a>,
    mut f: impl FnMut(A) -> Result<I, E>,
) -> Result<Batch, UdfError>
where
    I: IntoIterator,
    I::Item: Emit,
{
    let mut out = output_for(&input);
    for record in input.records_for::<A>() {
        for item in f(A::from_record(&record)?).map_err(|e| record_error(&record, e))? {
            item.emit(&mut out, record.event_time)?;
        }
    }
    Ok(out.finish())
}

/// Keep the records for which `fn(A) -> bool` is true, unchanged (key, value and time).
pub fn filter<'a, A: FromRecord<'a>>(
    input: Input<'a>,
    mut f: impl FnMut(A) -> bool,
) -> Result<Batch, UdfError> {
    let mut out = output_for(&input);
    for record in input.records_for::<A>() {
        if f(A::from_record(&record)?) {
            record.emit(&mut out, record.event_time)?;
        }
    }
    Ok(out.finish())
}

/// Like [`filter`], for `fn(A) -> Result<bool, E>`.
pub fn try_filter<'a, A: FromRecord<'a>, E: Display>(
    input: Input<'a>,
    mut f: impl FnMut(A) -> Result<bool, E>,
) -> Result<Batch, UdfError> {
    let mut out = output_for(&input);
    for record in input.records_for::<A>() {
        if f(A::from_record(&record)?).map_err(|e| record_error(&record, e))? {
            record.emit(&mut out, record.event_time)?;
        }
    }
    Ok(out.finish())
}

/// A whole partition in, any number of records out: `fn(Vec<A>) -> I`. Output records carry the
/// latest event time of the partition (there is no single input record they come from).
pub fn map_partitions<'a, A: FromRecord<'a>, I>(
    input: Input<'a>,
    mut f: impl FnMut(Vec<A>) -> I,
) -> Result<Batch, UdfError>
where
    I: IntoIterator,
    I::Item: Emit,
{
    let mut latest = i64::MIN;
    let mut items = Vec::with_capacity(input.len());
    for record in input.records_for::<A>() {
        latest = latest.max(record.event_time);
        items.push(A::from_record(&record)?);
    }
    let mut out = output_for(&input);
    for item in f(items) {
        item.emit(&mut out, latest)?;
    }
    Ok(out.finish())
}

/// The columns themselves, for authors who want no decoding at all: `fn(Batch) -> Result<Batch,
/// UdfError>`. The function must return well-formed columns; the host checks them.
pub fn raw(
    batch: Batch,
    mut f: impl FnMut(Batch) -> Result<Batch, UdfError>,
) -> Result<Batch, UdfError> {
    f(batch)
}
