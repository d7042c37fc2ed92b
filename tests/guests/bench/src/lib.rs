//! A guest for the boundary benchmark: the same data through more and less work, so the
//! benchmark can tell the cost of crossing the boundary from the cost of the SDK and of the
//! function itself.

use sluice_guest::{Batch, UdfError, export_transforms};

/// The input columns back, untouched: only the boundary (copy in, copy out).
pub fn echo(batch: Batch) -> Result<Batch, UdfError> {
    Ok(batch)
}

/// Every value through the SDK's decode and encode, unchanged: boundary plus SDK.
pub fn copy(value: &[u8]) -> &[u8] {
    value
}

/// ASCII upper case, no allocation per record beyond the output buffer.
pub fn uppercase_ascii(value: &[u8]) -> Vec<u8> {
    value.to_ascii_uppercase()
}

/// Unicode upper case, as `text#uppercase`.
pub fn uppercase(line: &str) -> String {
    line.to_uppercase()
}

export_transforms! {
    raw echo,
    map copy,
    map uppercase_ascii,
    map uppercase,
}
