//! A guest whose list of functions is hostile: one name of 64 KiB carrying a newline and ANSI
//! escapes. The host must refuse it at load with a clear message, print nothing raw, and never
//! panic while showing it (`host check` used to, on the formatter's width).

use sluice_guest::bindings::transform::{Guest, exports::sluice::udf::transforms};
use sluice_guest::{Batch, FunctionInfo, FunctionKind, UdfError};

/// The component's export implementation.
pub struct BadMetadata;

impl Guest for BadMetadata {
    fn abi_version() -> u32 {
        1
    }
    fn functions() -> Vec<FunctionInfo> {
        let mut name = "\u{1b}[31mforged\nline".to_string();
        while name.len() < 64 << 10 {
            name.push('n');
        }
        vec![FunctionInfo {
            name,
            kind: FunctionKind::Map,
            has_inverse: false,
        }]
    }
}

impl transforms::Guest for BadMetadata {
    fn transform(_function: u32, input: Batch) -> Result<Batch, UdfError> {
        Ok(input)
    }
}

#[cfg(target_arch = "wasm32")]
mod exports {
    use super::BadMetadata;
    sluice_guest::bindings::transform::__export_transform_world!(BadMetadata with_types_in sluice_guest::bindings::transform);
}
