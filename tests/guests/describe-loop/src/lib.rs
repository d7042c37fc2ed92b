//! A guest whose `functions` export never returns: the host must stop it at its CPU deadline
//! and refuse the component saying so.

use std::hint::black_box;

use sluice_guest::bindings::transform::{Guest, exports::sluice::udf::transforms};
use sluice_guest::{Batch, FunctionInfo, UdfError};

/// The component's export implementation.
pub struct DescribeLoop;

impl Guest for DescribeLoop {
    fn abi_version() -> u32 {
        1
    }
    fn functions() -> Vec<FunctionInfo> {
        let mut i = 0u64;
        loop {
            i = black_box(i.wrapping_add(1));
        }
    }
}

impl transforms::Guest for DescribeLoop {
    fn transform(_function: u32, input: Batch) -> Result<Batch, UdfError> {
        Ok(input)
    }
}

#[cfg(target_arch = "wasm32")]
mod exports {
    use super::DescribeLoop;
    sluice_guest::bindings::transform::__export_transform_world!(DescribeLoop with_types_in sluice_guest::bindings::transform);
}
