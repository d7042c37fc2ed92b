//! Runners for foreach-batch sinks.

use std::fmt::Display;

use crate::bindings::UdfError;
use crate::records::{FromRecord, Input, error};

/// Where a sink call's partition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batch's id: the same id when a batch is delivered again after a crash.
    pub batch_id: u64,
    /// The batch time, in milliseconds since the Unix epoch.
    pub batch_time: i64,
    /// The partition of the batch this call carries.
    pub partition: u32,
}

/// Call `fn(A)` for every record.
pub fn foreach<'a, A: FromRecord<'a>>(
    _info: BatchInfo,
    input: Input<'a>,
    mut f: impl FnMut(A),
) -> Result<(), UdfError> {
    for record in input.records_for::<A>() {
        f(A::from_record(&record)?);
    }
    Ok(())
}

/// Call `fn(A) -> Result<(), E>` for every record; an `Err` fails the batch.
pub fn try_foreach<'a, A: FromRecord<'a>, E: Display>(
    _info: BatchInfo,
    input: Input<'a>,
    mut f: impl FnMut(A) -> Result<(), E>,
) -> Result<(), UdfError> {
    for record in input.records_for::<A>() {
        f(A::from_record(&record)?)
            .map_err(|e| error(format!("record {}: {e}", record.index), Some(record.index)))?;
    }
    Ok(())
}

/// Call `fn(BatchInfo, Input) -> Result<(), E>` once for the whole partition.
pub fn foreach_batch<'a, E: Display>(
    info: BatchInfo,
    input: Input<'a>,
    mut f: impl FnMut(BatchInfo, Input<'a>) -> Result<(), E>,
) -> Result<(), UdfError> {
    f(info, input).map_err(|e| error(e.to_string(), None))
}
