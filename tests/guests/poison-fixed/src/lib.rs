//! A fixed version of `tests/guests/poison`, same functions: every record passes (`fixed:LINE`).
//! The dead-letter tests deploy it as the next version of `poison` and replay the letters.

use sluice_guest::{Batch, Input, UdfError, export_transforms, transform};

/// `fixed:LINE`, whatever the line.
pub fn check(line: &str) -> Result<String, String> {
    Ok(format!("fixed:{line}"))
}

/// As [`check`].
pub fn check_blind(batch: Batch) -> Result<Batch, UdfError> {
    transform::try_map(Input::new(&batch)?, check)
}

/// Keeps every line.
pub fn keep(_line: &str) -> Result<bool, String> {
    Ok(true)
}

export_transforms! {
    try_map check,
    raw check_blind,
    try_filter keep,
}
