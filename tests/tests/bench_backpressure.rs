//! `host bench backpressure` in a short run (12 s at 3× the sustainable rate, 250 ms batches)
//! through the real binary: the job with `backpressure = true` is fed over HTTP by the
//! bench's client on 127.0.0.1. Behaviour is asserted, not speed: every acknowledged record
//! was processed exactly once; the CSV and the SVG are written and parse; over the last third
//! of the load the rate is below the offered rate (it came down), the scheduling delay stays
//! within a generous bound (it does not keep growing, as it would without backpressure: two
//! intervals more per batch), and the records held and the process's memory stay bounded.

use std::path::Path;
use std::process::Command;

use sluice_tests::{host_bin, test_guest};

const SECONDS: f64 = 12.0;
const INTERVAL_MS: f64 = 250.0;

const HEADER: [&str; 11] = [
    "t_s",
    "done_s",
    "batch",
    "rate",
    "offered",
    "records",
    "processing_ms",
    "scheduling_delay_ms",
    "total_delay_ms",
    "buffered",
    "rss_mib",
];

/// The number after `prefix` on the stdout line that contains it.
fn figure(stdout: &str, prefix: &str) -> f64 {
    let at = stdout
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{stdout}"));
    stdout[at + prefix.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in\n{stdout}"))
}

/// Every row of the CSV, as numbers by column name.
fn read_csv(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).expect("the CSV is written");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    assert_eq!(header, HEADER, "the CSV's columns");
    lines
        .map(|line| {
            let row: Vec<f64> = line
                .split(',')
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("not a number: {v:?} in {line:?}"))
                })
                .collect();
            assert_eq!(row.len(), HEADER.len(), "{line:?}");
            row
        })
        .collect()
}

/// Whether `svg` is one well-nested `<svg>` element: every opened tag closed in order.
fn well_formed_svg(svg: &str) -> Result<(), String> {
    let svg = svg.trim();
    let body = svg
        .strip_prefix("<?xml")
        .and_then(|s| s.split_once("?>").map(|(_, rest)| rest.trim_start()))
        .unwrap_or(svg);
    if !body.starts_with("<svg") || !body.ends_with("</svg>") {
        return Err("not one <svg> element".into());
    }
    let mut open: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find('<') {
        let end = rest[at..]
            .find('>')
            .ok_or_else(|| format!("a tag never closed at {:?}", &rest[at..]))?;
        let tag = &rest[at + 1..at + end];
        rest = &rest[at + end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(o) if o == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or_default();
            open.push(name.to_string());
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("never closed: {open:?}"))
    }
}

#[test]
fn under_three_times_the_sustainable_input_the_rate_comes_down_and_nothing_is_lost() {
    let out = tempfile::tempdir().expect("a temporary folder");
    let cache = tempfile::tempdir().expect("a temporary folder");
    let guests = test_guest("slow");
    let output = Command::new(host_bin())
        .args(["bench", "backpressure", "--seconds", "12", "--interval"])
        .arg(format!("{INTERVAL_MS}ms"))
        .arg("--out")
        .arg(out.path())
        .arg("--guests")
        .arg(guests.parent().expect("the guests' folder"))
        .env("SLUICE_COMPONENT_CACHE", cache.path())
        .env("SLUICE_LOG", "warn")
        .output()
        .expect("run host bench backpressure");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}",
        sluice_tests::describe(&output)
    );
    eprintln!("{stdout}");

    // Nothing lost (the bench checked each sequence number; the figures must agree).
    let acked = figure(&stdout, "nothing lost:");
    let processed = figure(&stdout, "acknowledged =");
    assert!(acked > 0.0, "no record was acknowledged:\n{stdout}");
    assert_eq!(acked, processed, "{stdout}");
    let offered = figure(&stdout, "offered rate:");
    let sustainable = figure(&stdout, "sustainable rate:");
    assert!(
        offered > 2.5 * sustainable,
        "the offered rate is 3× the sustainable one:\n{stdout}"
    );

    // The files.
    let rows = read_csv(&out.path().join("backpressure.csv"));
    let col = |name: &str| {
        HEADER
            .iter()
            .position(|h| *h == name)
            .expect("a column of HEADER")
    };
    let (t, rate, offered_col, records) = (col("t_s"), col("rate"), col("offered"), col("records"));
    let (delay, buffered, rss) = (col("scheduling_delay_ms"), col("buffered"), col("rss_mib"));
    // A tick the scheduler could not take in time (a busy machine: its seal fsyncs the
    // checkpoint) is delayed, not made up: fewer batches than 48, but some.
    assert!(rows.len() >= 12, "{} batches in 12 s of 250 ms", rows.len());
    assert!(
        rows.iter().all(|r| r[offered_col] == offered),
        "offered column"
    );
    let taken: f64 = rows.iter().map(|r| r[records]).sum();
    assert_eq!(taken, acked, "the batches took every acknowledged record");
    let svg = std::fs::read_to_string(out.path().join("backpressure.svg")).expect("the SVG");
    if let Err(e) = well_formed_svg(&svg) {
        panic!("the SVG does not parse: {e}");
    }
    assert!(
        svg.contains("<polyline") || svg.contains("<path"),
        "the SVG draws no line"
    );
    for caption in ["Source rate", "Batch delays", "Resident memory"] {
        assert!(svg.contains(caption), "no {caption:?} panel in the SVG");
    }

    // The last third of the load.
    let last: Vec<&Vec<f64>> = rows
        .iter()
        .filter(|r| r[t] >= SECONDS * 2.0 / 3.0 && r[t] < SECONDS)
        .collect();
    assert!(last.len() >= 4, "{} batches in the last third", last.len());
    let mean_rate = last.iter().map(|r| r[rate]).sum::<f64>() / last.len() as f64;
    let max_rate = last.iter().map(|r| r[rate]).fold(0.0, f64::max);
    assert!(
        mean_rate < 0.8 * offered && max_rate < offered,
        "the rate did not come down from the offered {offered}/s: mean {mean_rate:.0}, max {max_rate:.0} in the last third"
    );
    // The delay does not keep growing. Without backpressure it would grow by two intervals a
    // batch, to about 24 s by the end, its maximum at the end. With it, the delay peaks while
    // the batches sealed at the initial rate (the offered one) run, before the first estimate
    // comes back, and then comes down: on a busy machine whose speed changes during the run
    // that peak can be seconds and still draining in the last third, so the bound is the
    // larger of 16 intervals and the peak before the last third.
    let max_delay = last.iter().map(|r| r[delay]).fold(0.0, f64::max);
    let earlier_peak = rows
        .iter()
        .filter(|r| r[t] < SECONDS * 2.0 / 3.0)
        .map(|r| r[delay])
        .fold(0.0, f64::max);
    assert!(
        max_delay <= (16.0 * INTERVAL_MS).max(earlier_peak),
        "scheduling delay up to {max_delay} ms in the last third, after a peak of {earlier_peak} ms before it: batches keep falling behind"
    );
    // Held records: the receiver's high-water mark is 4 budgets; 2 s of the offered input is
    // far above it, and far below what 12 s of 3× overload would pile up without push-back.
    let max_held = last.iter().map(|r| r[buffered]).fold(0.0, f64::max);
    assert!(
        max_held <= 2.0 * offered,
        "{max_held} records held in the last third (offered {offered}/s)"
    );
    let max_rss = rows.iter().map(|r| r[rss]).fold(0.0, f64::max);
    assert!(
        max_rss > 0.0 && max_rss < 1024.0,
        "resident memory up to {max_rss} MiB"
    );
}
