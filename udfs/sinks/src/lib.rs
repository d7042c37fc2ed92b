//! Foreach-batch sinks. Guests have no files or sockets, so these observe: `log_batch` logs one
//! line per partition and counts records in the `records_seen` counter; `log_records` logs every
//! record at debug level.

use sluice_guest::{BatchInfo, Input, RecordRef, export_sinks, log};

/// Log the size of each partition and count its records.
pub fn log_batch(info: BatchInfo, input: Input<'_>) -> Result<(), String> {
    sluice_guest::log::counter("records_seen", input.len() as u64);
    log!(
        info,
        "batch {} (time {}) partition {}: {} records",
        info.batch_id,
        info.batch_time,
        info.partition,
        input.len()
    );
    Ok(())
}

/// Log each record.
pub fn log_records(record: RecordRef<'_>) {
    let key = record.key.map(String::from_utf8_lossy);
    log!(
        debug,
        "record key={key:?} value={:?}",
        String::from_utf8_lossy(record.value)
    );
}

export_sinks! {
    foreach_batch log_batch,
    foreach log_records,
}
