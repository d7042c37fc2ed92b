//! A hostile guest for the sandbox tests. Every function misbehaves in one way; the host must
//! turn each into a typed error within its limits and keep running. `identity` behaves, so a
//! test can show that the next call on a fresh instance works.

use std::hint::black_box;

use sluice_guest::{Batch, Column, UdfError, export_transforms};

/// Passes values through.
pub fn identity(value: &[u8]) -> Vec<u8> {
    value.to_vec()
}

/// Never returns.
pub fn spin(_: &[u8]) -> Vec<u8> {
    let mut i = 0u64;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Allocates until something stops it.
pub fn bomb(_: &[u8]) -> Vec<u8> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![1u8; 1 << 20]));
    }
}

fn depth(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        1 + black_box(depth(black_box(n - 1)))
    }
}

/// Recurses far deeper than any stack allows.
pub fn recurse(_: &[u8]) -> Vec<u8> {
    depth(black_box(u64::MAX)).to_le_bytes().to_vec()
}

/// Panics with a message the host must report.
pub fn panic(_: &[u8]) -> Vec<u8> {
    panic!("the hostile guest panicked on purpose")
}

/// Emits 100 000 copies of every input record.
pub fn explode(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::repeat_n(value, 100_000)
}

/// Fails on a value that says `bad`, with a typed error naming the record.
pub fn reject_bad(value: &str) -> Result<String, String> {
    if value == "bad" {
        Err(format!("value {value:?} is not allowed"))
    } else {
        Ok(value.to_string())
    }
}

/// Returns columns whose end offsets point past the data.
pub fn garbage(_: Batch) -> Result<Batch, UdfError> {
    Ok(Batch {
        keys: None,
        values: Column {
            data: vec![1, 2, 3],
            ends: vec![2, 1_000_000],
        },
        event_times: vec![0, 0],
    })
}

/// Writes 1000 log lines per record.
pub fn chatty(value: &[u8]) -> Vec<u8> {
    for i in 0..1000 {
        sluice_guest::log!(info, "chatty line {i}");
    }
    value.to_vec()
}

/// Creates 5000 distinct metric series.
pub fn many_metrics(value: &[u8]) -> Vec<u8> {
    for i in 0..5000 {
        sluice_guest::log::counter(&format!("series_{i}"), 1);
    }
    value.to_vec()
}

export_transforms! {
    map identity,
    map spin,
    map bomb,
    map recurse,
    map panic,
    flat_map explode,
    try_map reject_bad,
    raw garbage,
    map chatty,
    map many_metrics,
}
