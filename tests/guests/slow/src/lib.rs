//! A guest whose cost per record is chosen by the record, for the flow-control tests: a line
//! starting with `slow:` spins a fixed work loop (about a millisecond) before it passes, any
//! other line passes at once. A test offers more slow records than the job can run per second
//! to push its rate down, then fast ones to let it recover.

use std::hint::black_box;

use sluice_guest::export_transforms;

/// Iterations of the work loop per `slow:` line.
const WORK: u64 = 1_500_000;

/// The line back, after the work loop when it starts with `slow:`.
pub fn work(line: &str) -> String {
    if line.starts_with("slow:") {
        let mut i = 0u64;
        while i < WORK {
            i = black_box(i + 1);
        }
    }
    line.to_string()
}

export_transforms! {
    map work,
}
