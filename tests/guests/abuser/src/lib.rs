//! A guest written straight against the raw bindings of `wit/udf.wit` (no SDK helpers), as an
//! attacker would write one: every function stays inside the call's limits (memory, CPU, output
//! ratio) and tries to drive the *host's* memory, disk or CPU through what the host keeps or
//! prints for it. The first input value, as decimal numbers, says how hard to push.

use sluice_guest::bindings::transform::sluice::udf::{logging, metrics};
use sluice_guest::bindings::transform::{Guest, exports::sluice::udf::transforms};
use sluice_guest::{Batch, Column, FunctionInfo, FunctionKind, UdfError};

/// The component's export implementation.
pub struct Abuser;

const FUNCTIONS: [&str; 10] = [
    "identity",
    "log_flood",
    "forge",
    "panic_flood",
    "metric_names",
    "huge_error",
    "bad_index",
    "big_output",
    "soak",
    "keyed",
];

/// The numbers in the first input value, e.g. `"100000 200"` → `[100000, 200]`.
fn params(input: &Batch) -> Vec<usize> {
    let first = input.values.ends.first().copied().unwrap_or(0) as usize;
    std::str::from_utf8(&input.values.data[..first])
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn param(p: &[usize], i: usize, default: usize) -> usize {
    p.get(i).copied().unwrap_or(default)
}

/// `size` bytes of text full of what must never reach a terminal raw.
fn nasty(size: usize) -> String {
    let unit = "line\n2026-01-01T00:00:00Z  INFO forged: \u{1b}[2J\u{1b}[31mred\r";
    let mut s = String::with_capacity(size + unit.len());
    while s.len() < size {
        s.push_str(unit);
    }
    s.truncate(size);
    s
}

fn one_value(value: Vec<u8>) -> Batch {
    let len = value.len() as u32;
    Batch {
        keys: None,
        values: Column {
            data: value,
            ends: vec![len],
        },
        event_times: vec![0],
    }
}

impl Guest for Abuser {
    fn abi_version() -> u32 {
        1
    }
    fn functions() -> Vec<FunctionInfo> {
        FUNCTIONS
            .iter()
            .map(|name| FunctionInfo {
                name: (*name).into(),
                kind: FunctionKind::Raw,
                has_inverse: false,
            })
            .collect()
    }
}

impl transforms::Guest for Abuser {
    fn transform(function: u32, input: Batch) -> Result<Batch, UdfError> {
        let p = params(&input);
        match FUNCTIONS.get(function as usize).copied() {
            Some("identity") => Ok(input),
            // `[size, calls, fields]`: `calls` log lines whose message and first two field values
            // are `size` bytes of control characters, with `fields` fields each.
            Some("log_flood") => {
                let text = nasty(param(&p, 0, 1 << 20));
                let mut fields: Vec<(String, String)> = (0..param(&p, 2, 40))
                    .map(|i| (format!("field{i}\n"), "v\u{1b}[1m".to_string()))
                    .collect();
                for f in fields.iter_mut().take(2) {
                    f.1 = text.clone();
                }
                for _ in 0..param(&p, 1, 100) {
                    logging::log(logging::Level::Error, &text, &fields);
                }
                Ok(input)
            }
            // A forged log line, a fake panic report, then a real trap of another kind.
            Some("forge") => {
                logging::log(
                    logging::Level::Error,
                    "ok\n2026-01-01T00:00:00Z ERROR sluice: panicked: the host is on fire\u{1b}[0m",
                    &[("panic".into(), "true".into())],
                );
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                Ok(input)
            }
            // `[lines]` lines, every one flagged as a panic report.
            Some("panic_flood") => {
                for i in 0..param(&p, 0, 10_000) {
                    logging::log(
                        logging::Level::Error,
                        &format!("panicked at flood line {i}"),
                        &[("panic".into(), "true".into())],
                    );
                }
                Ok(input)
            }
            // `[count, length]`: `count` distinct metric names of `length` bytes sharing a prefix.
            Some("metric_names") => {
                let (count, length) = (param(&p, 0, 100_000), param(&p, 1, 200));
                let mut name = "m".repeat(length.max(12));
                for i in 0..count {
                    let tail = format!("{i:012}");
                    let at = name.len() - tail.len();
                    name.replace_range(at.., &tail);
                    metrics::counter_add(&name, 1);
                }
                Ok(input)
            }
            // `[size]`: fail with a message of `size` bytes of control characters.
            Some("huge_error") => Err(UdfError {
                message: nasty(param(&p, 0, 100 << 20)),
                record_index: Some(0),
            }),
            Some("bad_index") => Err(UdfError {
                message: "this record is bad".into(),
                record_index: Some(input.values.ends.len() as u32 + 5),
            }),
            // `[size]`: one value of `size` bytes.
            Some("big_output") => Ok(one_value(vec![b'x'; param(&p, 0, 130 << 20)])),
            // Everything at once, to the host's limits, every call: 200 log lines of 8 KiB
            // with 40 fields, 2 000 metric names (half over the series cap) and, when the
            // first value starts with `fail`, an error of 1 MiB.
            Some("soak") => {
                let text = nasty(8 << 10);
                let fields: Vec<(String, String)> = (0..40)
                    .map(|i| (format!("f{i}"), text[..2048].to_string()))
                    .collect();
                for _ in 0..200 {
                    logging::log(logging::Level::Error, &text, &fields);
                }
                for i in 0..2_000 {
                    metrics::counter_add(&format!("soak_series_{i}"), 1);
                }
                if input.values.data.starts_with(b"fail") {
                    return Err(UdfError {
                        message: nasty(1 << 20),
                        record_index: Some(0),
                    });
                }
                Ok(input)
            }
            // Every value as a keyed record (key = value), for shape checks downstream.
            Some("keyed") => Ok(Batch {
                keys: Some(input.values.clone()),
                ..input
            }),
            _ => Err(UdfError {
                message: format!("no function {function}"),
                record_index: None,
            }),
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod exports {
    use super::Abuser;
    sluice_guest::bindings::transform::__export_transform_world!(Abuser with_types_in sluice_guest::bindings::transform);
}
