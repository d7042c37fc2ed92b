//! `host bench swap` in short mode: the real binary swaps `text#uppercase` between two
//! versions every few batches through the job's UDF slots; its report must be complete (every
//! figure present) and it must have checked that every record came out exactly once, each batch
//! wholly by the version bound for it.

use std::process::Command;

use sluice_tests::{host_bin, root};

#[test]
fn the_swap_benchmark_reports_every_figure_and_every_record_once() {
    let cache = tempfile::tempdir().expect("a temporary folder");
    let out = Command::new(host_bin())
        .args(["bench", "swap", "--batches", "24", "--swap-every", "3"])
        .args(["--batch-records", "500", "--partitions", "2", "--udfs"])
        .arg(root().join("dist/udfs"))
        .arg("--v2")
        .arg(root().join("dist/test-guests/text_v2.wasm"))
        .env("SLUICE_COMPONENT_CACHE", cache.path())
        .env("SLUICE_LOG", "warn")
        .output()
        .expect("run host bench swap");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", sluice_tests::describe(&out));
    assert!(
        stdout.contains("24 batches of 500 records") && stdout.contains("(8 swaps, 2 partitions)"),
        "{stdout}"
    );
    for figure in [
        "batch processing, no swap:",
        "added by a swap (vs neighbours):",
        "rebind call itself:",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(figure))
            .unwrap_or_else(|| panic!("no {figure:?} in\n{stdout}"));
        assert!(
            line.contains("p50") && line.contains("p99") && line.matches("µs").count() >= 2,
            "{line}"
        );
    }
    assert!(stdout.contains("target ≤ 1000 µs added:"), "{stdout}");
    assert!(
        stdout.contains("every record came out once: 12000 records in 24 batches"),
        "{stdout}"
    );
}
