//! A guest that claims ABI version 999, which no host speaks. Written against the raw bindings,
//! as a component from a future (or foreign) SDK would be.

use sluice_guest::bindings::transform::{Guest, exports::sluice::udf::transforms};
use sluice_guest::{Batch, FunctionInfo, FunctionKind, UdfError};

/// The component's export implementation.
pub struct FromTheFuture;

impl Guest for FromTheFuture {
    fn abi_version() -> u32 {
        999
    }
    fn functions() -> Vec<FunctionInfo> {
        vec![FunctionInfo {
            name: "identity".into(),
            kind: FunctionKind::Raw,
            has_inverse: false,
        }]
    }
}

impl transforms::Guest for FromTheFuture {
    fn transform(_function: u32, input: Batch) -> Result<Batch, UdfError> {
        Ok(input)
    }
}

#[cfg(target_arch = "wasm32")]
mod exports {
    use super::FromTheFuture;
    sluice_guest::bindings::transform::__export_transform_world!(FromTheFuture with_types_in sluice_guest::bindings::transform);
}
