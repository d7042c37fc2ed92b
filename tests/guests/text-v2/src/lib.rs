//! A second version of two functions of `udfs/text`, with outputs that tell the versions
//! apart: the tests that swap a UDF in a running job check which version made each batch.

use sluice_guest::export_transforms;

/// `"key 12" -> (key, 1200)`: as `text#key_number`, the number times 100.
pub fn key_number(line: &str) -> Result<(&str, i64), String> {
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().map(str::parse::<i64>),
        parts.next(),
    ) {
        (Some(key), Some(Ok(n)), None) => Ok((key, n.saturating_mul(100))),
        _ => Err(format!("{line:?} is not `KEY INTEGER`")),
    }
}

/// The line in upper case, marked `v2:`.
pub fn uppercase(line: &str) -> String {
    format!("v2:{}", line.to_uppercase())
}

export_transforms! {
    try_map key_number,
    map uppercase,
}
