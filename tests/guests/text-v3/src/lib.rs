//! A third version of two functions of `udfs/text` that traps on every call: the tests of
//! automatic rollback deploy it over a working version and check that the job goes back.

use sluice_guest::export_transforms;

/// Traps (a Rust panic is a Wasm trap): a bad release of `text#key_number`.
pub fn key_number(line: &str) -> Result<(&str, i64), String> {
    panic!("text v3 cannot parse {line:?}: this release is broken")
}

/// Traps too.
pub fn uppercase(line: &str) -> String {
    panic!("text v3 cannot upper-case {line:?}: this release is broken")
}

export_transforms! {
    try_map key_number,
    map uppercase,
}
