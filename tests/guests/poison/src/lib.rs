//! Poison records for the dead-letter tests: `check` traps (a panic) on a record containing
//! `TRAP` and returns a guest error naming the record (`record-index`) on one containing `BAD`;
//! `check_blind` fails the same records but its guest error names no record, so the host has to
//! find the record by halving; `keep` is a filter with the same poison.

use sluice_guest::{Batch, Input, UdfError, export_transforms, transform};

/// `ok:LINE`; a panic on `TRAP`, an error on `BAD`.
pub fn check(line: &str) -> Result<String, String> {
    if line.contains("TRAP") {
        panic!("poison record: {line}");
    }
    if line.contains("BAD") {
        return Err(format!("bad record: {line}"));
    }
    Ok(format!("ok:{line}"))
}

/// As [`check`], but a guest error without `record-index`.
pub fn check_blind(batch: Batch) -> Result<Batch, UdfError> {
    transform::try_map(Input::new(&batch)?, check).map_err(|mut e| {
        e.record_index = None;
        e
    })
}

/// Keeps lines not starting with `drop`; the same poison as [`check`].
pub fn keep(line: &str) -> Result<bool, String> {
    check(line).map(|_| !line.starts_with("drop"))
}

export_transforms! {
    try_map check,
    raw check_blind,
    try_filter keep,
}
