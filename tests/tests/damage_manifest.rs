//! No manifest can crash, hang or exhaust the planner (issue 14): through the real `host run`,
//! each damaged manifest is refused with exit code 1 (not a panic's 101, not a hang) within a
//! bounded time and memory, and the error names the field, the line and the file.
//!
//! Every run goes through `timeout -s KILL`, so a hang fails the test instead of blocking it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tests::{JobDir, Measured, run_measured};

/// How long one refusal may take, at most (it takes well under a second).
const WITHIN: Duration = Duration::from_secs(60);

/// The most memory a refusing host may use.
const ENVELOPE: u64 = 256 << 20;

/// `cmd` under `timeout -s KILL`, with the same arguments and environment.
fn bounded(cmd: &Command) -> Command {
    let mut t = Command::new("timeout");
    t.args(["-s", "KILL", &WITHIN.as_secs().to_string()])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            t.env(key, value);
        }
    }
    t
}

/// Run `host run job.toml ARGS` and return what it did and how long it took.
fn run(dir: &JobDir, args: &[&str]) -> (Measured, Duration) {
    let started = Instant::now();
    let out = run_measured(&mut bounded(&dir.command(args)), b"");
    (out, started.elapsed())
}

/// Run it, expecting a refusal: exit 1, no output, within the time and memory bounds. Returns
/// stderr.
fn refused(dir: &JobDir, args: &[&str]) -> String {
    let (out, took) = run(dir, args);
    assert_eq!(
        out.code,
        Some(1),
        "{args:?} took {took:?}: {}",
        out.describe()
    );
    assert!(
        out.peak_rss < ENVELOPE,
        "peak RSS {} MiB: {}",
        out.peak_rss >> 20,
        out.describe()
    );
    assert!(took < WITHIN, "took {took:?}");
    let err = out.stderr_text();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Both `--check` and a real run (`--until-idle`) refuse the job; returns `--check`'s stderr.
fn refused_both(dir: &JobDir) -> String {
    let err = refused(dir, &["--check"]);
    let run_err = refused(dir, &["--until-idle"]);
    assert!(
        run_err.contains(err.trim()),
        "a run is refused as --check is:\n{err}\n---\n{run_err}"
    );
    err
}

const SOURCE: &str = "\n[[sources]]\nname = \"lines\"\nkind = \"directory\"\npath = \"in\"\n";

fn job(interval: &str, rest: &str) -> String {
    format!("[job]\nname = \"damaged\"\nbatch_interval = \"{interval}\"\n{SOURCE}{rest}")
}

/// A job dir with `in/a.txt` holding a few records.
fn dir_with_input() -> JobDir {
    let dir = JobDir::new();
    dir.file("in/a.txt", "1\tx\n2\ty\n");
    dir
}

#[test]
fn a_batch_interval_of_two_to_the_64_ms_is_refused_naming_the_field_and_range() {
    let dir = dir_with_input();
    dir.manifest(&job(
        "18446744073709551s 616ms",
        "\n[[sinks]]\nkind = \"print\"\ninput = \"lines\"\n",
    ));
    let err = refused_both(&dir);
    assert!(
        err.contains("job.toml:1: job: batch_interval = 584542046years 1month 2days 15h 52m 15s 616ms is outside the allowed range 1ms … 1day"),
        "{err}"
    );
    assert!(
        err.contains("hint: write a duration from 1ms to 1day"),
        "{err}"
    );

    // Past what a duration holds at all: a syntax error on its line.
    dir.manifest(&job(
        "99999999999999999999999s",
        "\n[[sinks]]\nkind = \"print\"\ninput = \"lines\"\n",
    ));
    let err = refused(&dir, &["--check"]);
    assert!(err.contains("job.toml:3:"), "{err}");
}

#[test]
fn durations_out_of_range_are_each_named_with_their_line() {
    let dir = dir_with_input();
    dir.manifest(&job(
        "100ms",
        "\n[[streams]]\nname = \"w\"\nop = \"event_time_window\"\ninput = \"lines\"\nbuiltin = \"count\"\nwindow = \"10s\"\nwatermark = \"100years\"\nmax_event_time_ahead = \"0s\"\n\n[[streams]]\nname = \"m\"\nop = \"map_with_state\"\ninput = \"lines\"\nudf = \"state#track\"\ntimeout = \"400years\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"w\"\n",
    ));
    let err = refused(&dir, &["--check"]);
    assert!(
        err.contains(
            "job.toml:10: stream 'w': watermark = 100years is outside the allowed range 0s … 1year"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "job.toml:10: stream 'w': max_event_time_ahead = 0s is outside the allowed range 1ms … 1year"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "job.toml:19: stream 'm': timeout = 400years is outside the allowed range 1ms … 1year"
        ),
        "{err}"
    );
}

#[test]
fn an_event_time_window_of_a_year_sliding_by_half_a_second_is_refused() {
    let dir = dir_with_input();
    dir.manifest(&job(
        "100ms",
        "\n[[streams]]\nname = \"w\"\nop = \"event_time_window\"\ninput = \"lines\"\nbuiltin = \"count\"\nwindow = \"1y\"\nslide = \"500ms\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"w\"\n",
    ));
    let err = refused_both(&dir);
    assert!(
        err.contains(
            "job.toml:10: stream 'w': window = 1year sliding by slide = 500ms puts every record into 63115200 windows; at most 1000 are allowed"
        ),
        "{err}"
    );
    assert!(
        err.contains("hint: make the slide at least 8h 45m 57s 600ms"),
        "{err}"
    );
}

#[test]
fn a_batch_time_window_over_too_many_windows_or_batches_is_refused() {
    let dir = dir_with_input();
    dir.manifest(&job(
        "100ms",
        "\n[[streams]]\nname = \"w\"\nop = \"count_by_window\"\ninput = \"lines\"\nwindow = \"1000s\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"w\"\n",
    ));
    let err = refused_both(&dir);
    assert!(
        err.contains("job.toml:10: stream 'w': window = 16m 40s sliding by slide = 100ms puts every record into 10000 windows; at most 1000 are allowed"),
        "{err}"
    );

    // The same window updated incrementally adds and removes each record once: it plans.
    dir.manifest(&job(
        "100ms",
        "\n[[streams]]\nname = \"pairs\"\nop = \"map\"\ninput = \"lines\"\nudf = \"text#key_number\"\nvalue_codec = \"number\"\n\n[[streams]]\nname = \"w\"\nop = \"reduce_by_key_and_window\"\ninput = \"pairs\"\nbuiltin = \"sum_i64\"\ninverse = true\nwindow = \"1000s\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"w\"\n",
    ));
    let (out, _) = run(&dir, &["--check"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());

    // Few windows per record, but a window that spans 500 000 batches.
    dir.manifest(&job(
        "1ms",
        "\n[[streams]]\nname = \"w\"\nop = \"count_by_window\"\ninput = \"lines\"\nwindow = \"500s\"\nslide = \"1s\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"w\"\n",
    ));
    let err = refused(&dir, &["--check"]);
    assert!(
        err.contains("job.toml:10: stream 'w': window = 8m 20s spans 500000 batches of its input (one every 1ms); at most 100000 are allowed"),
        "{err}"
    );
}

#[test]
fn static_data_at_a_device_or_a_fifo_or_too_large_is_refused_without_reading_it() {
    let dir = dir_with_input();
    let join = |path: &str| {
        job(
            "100ms",
            &format!(
                "\n[[streams]]\nname = \"j\"\nop = \"join_static\"\ninput = \"lines\"\npath = \"{path}\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"j\"\n"
            ),
        )
    };
    dir.manifest(&join("/dev/zero"));
    let err = refused_both(&dir);
    assert!(
        err.contains(
            "job.toml:10: stream 'j': path: /dev/zero is a character device, not a regular file"
        ),
        "{err}"
    );

    let fifo = mkfifo(dir.path(), "static.fifo");
    dir.manifest(&join(&fifo));
    let err = refused_both(&dir);
    assert!(
        err.contains(&format!(
            "job.toml:10: stream 'j': path: {fifo} is a FIFO (named pipe), not a regular file"
        )),
        "{err}"
    );

    // 64 MiB and one byte, sparse: refused by its size before a byte is read.
    let big = dir.path().join("big.tsv");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len((64 << 20) + 1))
        .expect("a sparse file");
    dir.manifest(&join("big.tsv"));
    let err = refused(&dir, &["--check"]);
    assert!(
        err.contains("big.tsv holds 67108865 bytes, more than the 67108864 bytes allowed"),
        "{err}"
    );
}

#[test]
fn initial_state_at_a_fifo_is_refused_at_check_instead_of_blocking() {
    let dir = dir_with_input();
    let fifo = mkfifo(dir.path(), "initial.fifo");
    dir.manifest(&job(
        "100ms",
        &format!("\n[[streams]]\nname = \"totals\"\nop = \"update_state_by_key\"\ninput = \"lines\"\nbuiltin = \"count\"\ninitial_state = \"{fifo}\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"totals\"\n"),
    ));
    let err = refused_both(&dir);
    assert!(
        err.contains(&format!(
            "job.toml:10: stream 'totals': initial_state: {fifo} is a FIFO (named pipe), not a regular file"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: point `initial_state` at a regular file"),
        "{err}"
    );
}

#[test]
fn a_manifest_that_is_a_fifo_or_too_large_is_not_read() {
    let dir = JobDir::new();
    let fifo = mkfifo(dir.path(), "job.toml");
    let err = refused(&dir, &["--check"]);
    assert!(
        err.contains(&format!(
            "the job manifest {fifo} is a FIFO (named pipe), not a regular file"
        )),
        "{err}"
    );
    std::fs::remove_file(&fifo).expect("remove the FIFO");

    let mut text = job("1s", "\n[[sinks]]\nkind = \"print\"\ninput = \"lines\"\n");
    text.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    dir.manifest(&text);
    let err = refused(&dir, &["--check"]);
    assert!(
        err.contains("more than the 1048576 bytes (1 MiB) a manifest may hold"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_is_named_by_line_column_and_byte() {
    let dir = dir_with_input();
    let mut text = job("1s", "\n[[sinks]]\nkind = \"print\"\n").into_bytes();
    let offset = text.len() + "input = \"li".len();
    text.extend_from_slice(b"input = \"li\xffnes\"\n");
    dir.write_fresh("job.toml", &text);
    let err = refused(&dir, &["--check"]);
    assert!(
        err.contains(&format!(
            "job.toml:12:12: byte {offset} (0xff) is not valid UTF-8"
        )),
        "{err}"
    );
}

#[test]
fn sixteen_thousand_streams_with_unknown_inputs_plan_fast_with_bounded_errors() {
    let dir = dir_with_input();
    let mut text = job("1s", "");
    for i in 0..16_000 {
        text.push_str(&format!(
            "[[streams]]\nname = \"s{i}\"\nop = \"count\"\ninput = \"m{i}\"\n"
        ));
    }
    text.push_str("[[sinks]]\nkind = \"print\"\ninput = \"s0\"\n");
    assert!(text.len() < 1 << 20, "the manifest fits the cap");
    dir.manifest(&text);
    let (out, took) = run(&dir, &["--check"]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        out.stderr.len() < 64 << 10,
        "{} bytes of errors",
        out.stderr.len()
    );
    assert!(
        out.peak_rss < ENVELOPE,
        "peak RSS {} MiB",
        out.peak_rss >> 20
    );
    let err = out.stderr_text();
    assert!(err.contains("the job has 16000 problems:"), "{err}");
    assert!(
        err.contains("job.toml:9: stream 's0': input 'm0' is not a source or a stream"),
        "{err}"
    );
    assert!(err.contains("hint: did you mean 's0'?"), "{err}");
    assert!(err.contains("… and 15950 more"), "{err}");
}

/// Make a FIFO `name` in `dir`; its path.
fn mkfifo(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let c = std::ffi::CString::new(path.to_str().expect("a UTF-8 path")).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());
    path.to_str().expect("a UTF-8 path").to_string()
}
