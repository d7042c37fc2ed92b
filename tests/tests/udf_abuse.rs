//! A guest written against the raw WIT (`tests/guests/abuser`) stays inside every per-call limit
//! and tries to drive the *host* through what the host keeps or prints for it: log floods with
//! control characters, forged panic reports, metric names without end, huge error messages,
//! outputs past the copy budget, hostile metadata. Each case runs the real `host` binary and
//! asserts the error, the bound, and the host's peak memory against a baseline run of the same
//! binary in the same test.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_host::batch::Batch;
use sluice_host::config::ByteSize;
use sluice_host::udf::{CallContext, CallErrorKind, LoadError, RuntimeConfig, UdfComponent};
use sluice_tests::{Measured, host_bin, load, run_measured, runtime_with, test_guest};

/// `host [global…] call abuser.wasm#FUNCTION` with `input` on stdin, measured.
fn call_abuser(global: &[&str], function: &str, input: &str) -> Measured {
    let cache = tempfile::tempdir().expect("a cache folder");
    let target = format!("{}#{function}", test_guest("abuser").display());
    run_measured(
        Command::new(host_bin())
            .args(global)
            .arg("--component-cache")
            .arg(cache.path())
            .args(["--log", "info", "call", &target]),
        input.as_bytes(),
    )
}

/// The peak memory of a run that does nothing hostile: the envelope's base.
fn baseline() -> u64 {
    let run = call_abuser(&[], "identity", "1");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.peak_rss
}

/// Nothing a guest wrote reaches stderr raw: no escape character, no carriage return, and no
/// line that starts the way the guest's forged lines do.
fn assert_no_raw_guest_text(run: &Measured) {
    assert!(
        !run.stderr.contains(&0x1b) && !run.stderr.contains(&b'\r'),
        "an escape or CR reached stderr raw\n{}",
        run.describe()
    );
    let text = run.stderr_text();
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged log line reached stderr\n{}",
        run.describe()
    );
}

const MIB: u64 = 1 << 20;

#[test]
fn a_log_flood_is_cut_escaped_and_summed_up_once() {
    let base = baseline();
    // 100 log calls, each a 10 MB message plus two 10 MB fields and 38 more: 3 GB of text that
    // used to reach stderr whole.
    let run = call_abuser(&[], "log_flood", "10000000 100 40");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        run.stderr.len() < 256 << 10,
        "stderr holds {} bytes; the budget is 64 KiB of guest lines per call\n{}",
        run.stderr.len(),
        run.describe()
    );
    assert_no_raw_guest_text(&run);
    let text = run.stderr_text();
    assert!(
        text.contains("\\n2026-01-01T00:00:00Z  INFO forged: \\u{1b}[2J"),
        "{}",
        run.describe()
    );
    let summaries = text.matches("past its per-call budget").count();
    assert_eq!(summaries, 1, "one summary per call\n{}", run.describe());
    assert!(
        text.contains("log_lines_dropped=")
            && text.contains("log_fields_dropped=")
            && text.contains("log_values_cut="),
        "{}",
        run.describe()
    );
    // The lift of one 30 MB log call is transient; nothing accumulates.
    assert!(
        run.peak_rss < base + 160 * MIB,
        "peak RSS {} MiB against a baseline of {} MiB",
        run.peak_rss / MIB,
        base / MIB
    );
}

#[test]
fn a_forged_panic_report_never_becomes_the_reason_of_a_trap() {
    let run = call_abuser(&[], "forge", "1");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let text = run.stderr_text();
    // The reason is the runtime's; the guest's words are shown as its report, escaped.
    assert!(
        text.contains("trapped (wasm trap: wasm `unreachable` instruction executed) after the guest reported a panic: ok\\n2026-01-01T00:00:00Z ERROR sluice: panicked: the host is on fire\\u{1b}[0m"),
        "{}",
        run.describe()
    );
    assert_no_raw_guest_text(&run);
}

#[test]
fn panic_reports_count_against_the_line_budget() {
    let run = call_abuser(&[], "panic_flood", "10000");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let printed = run.stderr_text().matches("panicked at flood line").count();
    assert_eq!(printed, 100, "{}", run.describe());
    assert!(
        run.stderr_text().contains("log_lines_dropped=9900"),
        "{}",
        run.describe()
    );
}

#[test]
fn metric_names_are_bounded_in_count_length_and_warnings() {
    let base = baseline();
    for input in [
        // 100 000 names of 200 bytes sharing a prefix: refused as too long.
        "100000 200",
        // 1 000 names of 1 MB.
        "1000 1000000",
        // 100 000 distinct short names: 1 000 series, then one warning for the rest.
        "100000 12",
    ] {
        let run = call_abuser(&[], "metric_names", input);
        assert_eq!(run.code, Some(0), "{input}: {}", run.describe());
        let text = run.stderr_text();
        assert_eq!(
            text.matches("past its per-call budget").count(),
            1,
            "{input}: one summary, not one warning per name\n{}",
            run.describe()
        );
        assert!(text.lines().count() < 10, "{input}: {}", run.describe());
        assert!(
            run.peak_rss < base + 64 * MIB,
            "{input}: peak RSS {} MiB against a baseline of {} MiB",
            run.peak_rss / MIB,
            base / MIB
        );
    }
}

fn call(
    component: &Arc<UdfComponent>,
    function: &str,
    input: &str,
) -> Result<Batch, CallErrorKind> {
    let mut batch = Batch::empty(false);
    batch.push(None, input.as_bytes(), 0);
    component
        .function(function)
        .expect("the abuser exports it")
        .transform(&CallContext::adhoc(), &batch)
        .map_err(|e| e.kind)
}

#[test]
fn series_stay_under_the_cap_and_every_name_is_a_metric_name() {
    let rt = runtime_with(RuntimeConfig::default());
    let abuser = load(&rt, &test_guest("abuser"));
    for input in ["100000 12", "100000 200", "1000 1000000", "3000 40"] {
        call(&abuser, "metric_names", input).expect("metrics never fail a call");
    }
    let series: Vec<_> = rt
        .registry()
        .counters()
        .into_iter()
        .filter(|(k, _)| {
            k.labels
                .iter()
                .any(|(l, v)| l == "component" && v == "abuser")
                && k.labels
                    .iter()
                    .any(|(l, v)| l == "function" && v == "metric_names")
        })
        .collect();
    assert_eq!(series.len(), 1000, "the series cap per component");
    assert!(series.iter().all(|(k, _)| k.name.len() <= 128));
    // The excess is counted for the tenant.
    let over: u64 = rt
        .registry()
        .counters()
        .into_iter()
        .filter(|(k, _)| k.name == "sluice_guest_budget_exceeded_total")
        .map(|(_, v)| v)
        .sum();
    assert!(over >= 100_000, "{over}");
}

#[test]
fn a_huge_error_message_is_cut_before_it_is_kept_or_printed() {
    let base = baseline();
    let run = call_abuser(&[], "huge_error", "100000000");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.len() < 16 << 10,
        "stderr holds {} bytes\n{}",
        run.stderr.len(),
        run.describe()
    );
    assert!(
        run.stderr_text().contains("more bytes)"),
        "{}",
        run.describe()
    );
    assert_no_raw_guest_text(&run);
    assert!(
        run.peak_rss < base + 400 * MIB,
        "peak RSS {} MiB against a baseline of {} MiB",
        run.peak_rss / MIB,
        base / MIB
    );
    // In the library: the kept message is bounded.
    let rt = runtime_with(RuntimeConfig::default());
    let abuser = load(&rt, &test_guest("abuser"));
    match call(&abuser, "huge_error", "10000000") {
        Err(CallErrorKind::Guest {
            message,
            record_index,
        }) => {
            assert_eq!(record_index, Some(0));
            assert!(message.len() <= 4096 + 32, "{}", message.len());
            assert!(!message.contains('\n'));
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}

#[test]
fn a_record_index_past_the_input_is_named_as_the_guests_bug() {
    let run = call_abuser(&[], "bad_index", "1");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr_text()
            .contains("reported an error naming input record 6, but it was given 1 records"),
        "{}",
        run.describe()
    );
}

#[test]
fn output_past_the_copy_budget_names_the_limit() {
    // Through the binary with the defaults: 130 MiB of output, over the 128 MiB budget.
    let run = call_abuser(&[], "big_output", &format!("{}", 130 << 20));
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr_text()
            .contains("at most 128MiB in all: udf max_output_bytes"),
        "{}",
        run.describe()
    );
    // In the library, with the budget lowered.
    let mut config = RuntimeConfig::default();
    config.limits.max_output_bytes = ByteSize::mib(1);
    let rt = runtime_with(config);
    let abuser = load(&rt, &test_guest("abuser"));
    match call(&abuser, "big_output", "2000000") {
        Err(CallErrorKind::Unreadable { copy_limit, .. }) => {
            assert_eq!(copy_limit, ByteSize::mib(1))
        }
        other => panic!("expected an unreadable result, got {other:?}"),
    }
    assert_eq!(
        call(&abuser, "big_output", "500000")
            .expect("under the budget")
            .byte_len(),
        500_000
    );
}

fn check(global: &[&str], path: &Path) -> Measured {
    let cache = tempfile::tempdir().expect("a cache folder");
    run_measured(
        Command::new(host_bin())
            .args(global)
            .arg("--component-cache")
            .arg(cache.path())
            .arg("check")
            .arg(path),
        b"",
    )
}

#[test]
fn hostile_metadata_is_refused_at_load_without_a_panic() {
    let run = check(&[], &test_guest("bad_metadata"));
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let text = run.stderr_text();
    assert!(
        text.contains("describes its functions in a way the host refuses")
            && text.contains("(65536 bytes)")
            && text.contains("names must be 1 to 128 bytes"),
        "{}",
        run.describe()
    );
    assert!(run.stderr.len() < 4096, "{}", run.describe());
    assert_no_raw_guest_text(&run);
}

#[test]
fn a_describe_call_that_loops_is_stopped_and_named() {
    let started = Instant::now();
    let run = check(&["--udf-timeout", "500ms"], &test_guest("describe_loop"));
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(started.elapsed() < Duration::from_secs(180));
    let text = run.stderr_text();
    assert!(
        text.contains("failed when the host asked for its functions")
            && text.contains("ran past its CPU deadline of 500ms"),
        "{}",
        run.describe()
    );
    assert!(!text.contains("rebuild"), "{}", run.describe());
}

#[test]
fn component_sizes_are_enforced_on_bytes_read() {
    let started = Instant::now();
    let run = check(&[], Path::new("/dev/zero"));
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(started.elapsed() < Duration::from_secs(180));
    assert!(
        run.stderr_text().contains("not a regular file"),
        "{}",
        run.describe()
    );
    // A regular file that is over the cap is refused after reading at most the cap.
    let dir = tempfile::tempdir().expect("a folder");
    let big = dir.path().join("big.wasm");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(200 << 20).expect("a sparse 200 MiB file");
    let run = check(&[], &big);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr_text()
            .contains("over the limit of 64MiB (udf max_component_size)"),
        "{}",
        run.describe()
    );
    assert!(run.peak_rss < 200 * MIB, "{}", run.describe());
    // Through the library: the same refusal is typed.
    let rt = runtime_with(RuntimeConfig::default());
    assert!(matches!(
        rt.load_file(&big),
        Err(LoadError::TooLarge { size: Some(_), .. })
    ));
}

#[test]
fn a_filter_that_adds_keys_fails_its_batch_saying_why() {
    let job = sluice_tests::JobDir::new();
    job.file("in/a.txt", "one\ntwo\n");
    job.manifest(
        r#"
[job]
name = "shapes"
batch_interval = "100ms"
partitions = 1

[[sources]]
name = "in"
kind = "directory"
path = "in"

[[streams]]
name = "kept"
op = "filter"
input = "in"
udf = "abuser#keyed"

[[sinks]]
kind = "print"
input = "kept"
"#,
    );
    let out = job.run_until_idle();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        sluice_tests::describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the filter UDF abuser#keyed returned 2 keyed records for partition")
            && stderr.contains(
                "a filter keeps or drops records, it cannot add them or change their keys"
            ),
        "{stderr}"
    );
}
