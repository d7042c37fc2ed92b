//! Flow control for every source (issue 17, point 3), through the real `host` binary on real
//! files and real sockets on 127.0.0.1: `max_rate` caps what each batch takes from a source
//! and everything still comes out exactly once; an HTTP burst past the rate's high-water mark
//! is answered 429 with `Retry-After` and no acknowledged record is lost; a socket source over
//! its rate stops reading, so TCP pushes back on the peer; the rate is a metric; with
//! `backpressure = true` and a UDF that is slow per record, the rate falls below the offered
//! load and batches stop falling behind, then rises again once the records are cheap.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_host::engine::{Job, JobOptions};
use sluice_host::metrics::SeriesKey;
use sluice_host::plan::{self, manifest};
use sluice_host::udf::{RuntimeConfig, UdfDirectory};
use sluice_tests::{JobDir, free_port, runtime_with, wait_for};

/// `(records, scheduling delay ms)` of every "batch done" line of a job's log.
fn batches(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter(|l| l.contains("batch done"))
        .map(|l| (field(l, "records="), field(l, "scheduling_delay_ms=")))
        .collect()
}

/// The rates a job logged for its sources, in order.
fn rates(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("source rate"))
        .map(|l| field(l, "rate="))
        .collect()
}

fn field(line: &str, name: &str) -> u64 {
    let at = line
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"));
    line[at + name.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {line:?}"))
}

/// One `POST /ingest/events` with `body`: the status and the whole answer, headers included.
fn ingest(port: u16, body: &[u8]) -> (u16, String) {
    let answer = sluice_tests::http_answer(port, "POST", "/ingest/events", "", body)
        .expect("an HTTP answer");
    (
        answer.status,
        format!("{}\r\n\r\n{}", answer.head, answer.body),
    )
}

/// Ask the job to stop (SIGTERM: a graceful stop) and wait for it, at most 60 s.
fn stop(child: &mut Child) {
    // SAFETY: signalling a child process this test started and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the job did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the job if the test ends without stopping it.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(log: &Arc<Mutex<String>>) -> String {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[test]
fn max_rate_caps_every_batch_of_a_directory_and_everything_comes_out_once() {
    let dir = JobDir::new();
    // 12 files of 25 lines; 100 records/s × 500 ms: 50 a batch, two whole files.
    let mut expected = Vec::new();
    for f in 0..12 {
        let lines: Vec<String> = (0..25).map(|i| format!("f{f:02}-{i:02}")).collect();
        dir.file(&format!("in/{f:02}.txt"), lines.join("\n") + "\n");
        expected.extend(lines);
    }
    expected.sort();
    dir.manifest(
        r#"[job]
name = "capped"
batch_interval = "500ms"
partitions = 2

[[sources]]
name = "files"
kind = "directory"
path = "in"
max_rate = 100

[[sinks]]
kind = "text_files"
input = "files"
prefix = "out/files"
"#,
    );
    let output = dir.run_until_idle();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let sizes: Vec<u64> = batches(&log).iter().map(|b| b.0).collect();
    assert!(
        sizes.iter().all(|&n| n <= 50),
        "a batch over 100/s × 500 ms: {sizes:?}"
    );
    assert_eq!(
        sizes.iter().filter(|&&n| n > 0).count(),
        6,
        "two files a batch: {sizes:?}"
    );
    assert_eq!(dir.output_lines("out/files"), expected, "each record once");
    assert_eq!(
        rates(&log),
        [100],
        "the rate is logged once, as it is fixed"
    );
}

#[test]
fn an_http_burst_past_the_high_water_mark_gets_429_and_loses_nothing() {
    let dir = JobDir::new();
    let port = free_port();
    // 400 records/s × 250 ms: 100 a batch; the high-water mark is 4 batches, 400 records.
    dir.manifest(&format!(
        r#"[job]
name = "burst"
batch_interval = "250ms"
partitions = 1
checkpoint = "ckpt"

[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{port}"
max_rate = 400

[[sinks]]
kind = "text_files"
input = "events"
prefix = "out/events"
"#
    ));
    let (child, log) = dir.spawn_logged(&[]);
    let mut job = Killed(child);
    wait_for("the endpoint to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // A burst of 20 bodies of 100 records, sent as fast as they are answered.
    let bodies: Vec<String> = (0..20)
        .map(|b| {
            (0..100)
                .map(|i| format!("b{b:02}-{i:03}\n"))
                .collect::<String>()
        })
        .collect();
    let mut pending: Vec<usize> = (0..bodies.len()).collect();
    let (mut refused, mut retry_after) = (0, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "not all accepted within 60 s");
        let mut wait = Duration::ZERO;
        pending.retain(|&b| {
            let (status, answer) = ingest(port, bodies[b].as_bytes());
            match status {
                200 => {
                    assert!(answer.contains("\"accepted\":100"), "{answer}");
                    false
                }
                429 => {
                    refused += 1;
                    let seconds: u64 = answer
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("retry-after:")
                                .map(|v| v.trim().parse().expect("Retry-After seconds"))
                        })
                        .unwrap_or_else(|| panic!("429 without Retry-After: {answer}"));
                    retry_after = Some(seconds);
                    wait = Duration::from_secs(seconds);
                    true
                }
                other => panic!("answer {other}: {answer}"),
            }
        });
        std::thread::sleep(wait);
    }
    assert!(
        refused > 0,
        "a burst of 2000 records past a mark of 400 was never refused"
    );
    assert_eq!(retry_after, Some(1));
    let mut expected: Vec<String> = bodies
        .iter()
        .flat_map(|b| b.lines().map(str::to_string))
        .collect();
    expected.sort();
    wait_for("every acknowledged record in the output", || {
        dir.output_lines("out/events").len() >= expected.len()
    });
    stop(&mut job.0);
    assert_eq!(dir.output_lines("out/events"), expected, "each record once");
    let log = text(&log);
    let sizes: Vec<u64> = batches(&log).iter().map(|b| b.0).collect();
    assert!(
        sizes.iter().all(|&n| n <= 100),
        "a batch over 400/s × 250 ms: {sizes:?}"
    );
    assert!(log.contains("answered 429"), "the push back is logged");
}

#[test]
fn backpressure_lowers_the_rate_under_a_slow_udf_then_raises_it() {
    let dir = JobDir::new();
    let port = free_port();
    dir.manifest(&format!(
        r#"[job]
name = "pressed"
batch_interval = "500ms"
partitions = 1
checkpoint = "ckpt"
backpressure = true

[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{port}"
initial_rate = 2000

[[streams]]
name = "worked"
op = "map"
input = "events"
udf = "slow#work"

[[sinks]]
kind = "text_files"
input = "worked"
prefix = "out/worked"
"#
    ));
    let (child, log) = dir.spawn_logged(&[]);
    let mut job = Killed(child);
    wait_for("the endpoint to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Offer `per_second` records a second of `kind` for `seconds`, in bodies of 1/40 s (a
    // batch takes whole bodies: they must be smaller than its budget), sending a refused body
    // again at the next tick; returns the records acknowledged.
    let offer = |kind: &str, per_second: usize, seconds: u64, from: usize| {
        let mut sent = Vec::new();
        let mut next = from;
        let start = Instant::now();
        let tick = Duration::from_millis(25);
        let mut due = start;
        while start.elapsed() < Duration::from_secs(seconds) {
            let body: String = (next..next + per_second / 40)
                .map(|i| format!("{kind}:{i:06}\n"))
                .collect();
            let (status, answer) = ingest(port, body.as_bytes());
            match status {
                200 => {
                    sent.extend(body.lines().map(str::to_string));
                    next += per_second / 40;
                }
                429 => assert!(answer.to_ascii_lowercase().contains("retry-after: 1")),
                other => panic!("answer {other}: {answer}"),
            }
            due += tick;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        sent
    };
    let slow_offered = 2000;
    let mut sent = offer("slow", slow_offered, 12, 0);
    let after_slow = text(&log);
    let slow_rates = rates(&after_slow);
    let lowest = *slow_rates.iter().min().expect("a rate estimate under load");
    eprintln!("rates under {slow_offered}/s of slow records: {slow_rates:?}");
    assert!(
        (lowest as usize) < slow_offered / 2,
        "the rate did not fall below the offered {slow_offered}/s: {slow_rates:?}"
    );
    // Batches keep up: the last ones under load do not queue behind each other.
    let done = batches(&after_slow);
    let tail: Vec<u64> = done.iter().rev().take(4).map(|b| b.1).collect();
    assert!(
        tail.iter().all(|&delay| delay < 1500),
        "scheduling delay still growing at the end of the load: {tail:?} (batches {done:?})"
    );
    // Cheap records: the rate goes back up.
    sent.extend(offer("fast", 2000, 6, sent.len()));
    let after_fast = text(&log);
    let fast_rates = rates(&after_fast)[slow_rates.len()..].to_vec();
    let highest = fast_rates.iter().max().copied().unwrap_or(0);
    eprintln!(
        "scheduling delays of the last batches under load: {tail:?} ms; rates with fast records: {fast_rates:?}"
    );
    assert!(
        highest > lowest * 2,
        "the rate did not recover: lowest {lowest} under load, then {fast_rates:?}"
    );
    sent.sort();
    wait_for("every acknowledged record in the output", || {
        dir.output_lines("out/worked").len() >= sent.len()
    });
    stop(&mut job.0);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in dir.output_lines("out/worked") {
        *seen.entry(line).or_default() += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "a record came out twice");
    assert_eq!(
        seen.into_keys().collect::<Vec<_>>(),
        sent,
        "each acknowledged record once"
    );
}

#[test]
fn the_rate_of_each_source_is_a_metric() {
    let dir = JobDir::new();
    dir.file("in/a.txt", "x\ny\n");
    dir.manifest(
        r#"[job]
name = "metered"
batch_interval = "200ms"

[[sources]]
name = "files"
kind = "directory"
path = "in"
max_rate = 250

[[sources]]
name = "open"
kind = "directory"
path = "in"

[[sinks]]
kind = "text_files"
input = "files"
prefix = "out/files"

[[sinks]]
kind = "text_files"
input = "open"
prefix = "out/open"
"#,
    );
    let path = dir.path().join("job.toml");
    let runtime = Arc::new(runtime_with(RuntimeConfig::default()));
    let spec = manifest::load(&path).expect("the manifest loads");
    let udfs = UdfDirectory::new(dir.path().join("udfs"), &runtime);
    let planned = plan::plan(spec, &udfs, Some(&path)).expect("the job plans");
    let job = Job::start(
        planned,
        JobOptions {
            until_idle: true,
            ..JobOptions::default()
        },
        runtime.registry().clone(),
    )
    .expect("the job starts");
    job.wait().expect("the job runs");
    let rate = |source: &str| {
        runtime.registry().gauge(&SeriesKey::new(
            "sluice_source_rate",
            &[("tenant", "local"), ("job", "metered"), ("source", source)],
        ))
    };
    assert_eq!(rate("files"), Some(250.0));
    assert_eq!(
        rate("open"),
        None,
        "no rate without max_rate or backpressure"
    );
}

#[test]
fn rates_are_checked_in_the_manifest() {
    let dir = JobDir::new();
    std::fs::create_dir_all(dir.path().join("in")).expect("mkdir");
    let check = |source_fields: &str| {
        dir.manifest(&format!(
            "[job]\nname = \"checked\"\n\n[[sources]]\nname = \"files\"\nkind = \"directory\"\npath = \"in\"\n{source_fields}\n\n[[sinks]]\nkind = \"print\"\ninput = \"files\"\n"
        ));
        let output = dir.command(&["--check"]).output().expect("run host");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, err) = check("max_rate = 0");
    assert!(!ok && err.contains("max_rate = 0"), "{err}");
    let (ok, err) = check("initial_rate = 500");
    assert!(
        !ok && err.contains("backpressure = true"),
        "initial_rate without backpressure: {err}"
    );
    let (ok, err) = check("max_rate = 500");
    assert!(ok, "{err}");
}

#[test]
fn a_socket_source_over_its_rate_stops_reading_and_tcp_pushes_back() {
    let dir = JobDir::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // 400 records/s × 250 ms: 100 a batch; the receiver stops reading at 400 held.
    dir.manifest(&format!(
        r#"[job]
name = "socketed"
batch_interval = "250ms"
partitions = 1

[[sources]]
name = "lines"
kind = "socket"
host = "127.0.0.1"
port = {port}
max_rate = 400

[[sinks]]
kind = "text_files"
input = "lines"
prefix = "out/lines"
"#
    ));
    let (child, log) = dir.spawn_logged(&[]);
    let _job = Killed(child);
    let (mut peer, _) = listener.accept().expect("the job connects");
    peer.set_nonblocking(true).expect("nonblocking");
    // Offer 64 MiB of lines for 3 s: what the kernel's buffers and one read hold goes in, the
    // rest waits at the peer.
    let line = b"0123456789abcdef\n";
    let chunk: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 4096)
        .collect();
    let offered = 64usize << 20;
    let mut written = 0usize;
    let start = Instant::now();
    while written < offered && start.elapsed() < Duration::from_secs(3) {
        match peer.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the job closed the connection: {e}"),
        }
    }
    eprintln!("the peer wrote {written} of {offered} bytes in 3 s");
    assert!(
        written < offered / 4,
        "{written} bytes went in: the receiver did not push back"
    );
    wait_for("a few batches", || batches(&text(&log)).len() >= 4);
    let sizes: Vec<u64> = batches(&text(&log)).iter().map(|b| b.0).collect();
    assert!(
        sizes.iter().all(|&n| n <= 100),
        "a batch over 400/s × 250 ms: {sizes:?}"
    );
    assert!(sizes.contains(&100), "batches take their budget: {sizes:?}");
}
