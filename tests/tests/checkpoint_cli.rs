//! Checkpoints and the write-ahead log through the `host` binary: the reliable HTTP receiver
//! under `kill -9` (every acknowledged record counted exactly once), a graceful SIGTERM that
//! exits 0 with a checkpoint, damaged write-ahead logs and metadata, lost state restored from
//! a data checkpoint, and plan changes a checkpoint can and cannot follow.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_tests::{JobDir, describe, free_port, post, wait_for};

/// http source → "key n" lines → running sum per key → text files.
fn http_job(port: u16, interval: &str, extra_job: &str) -> String {
    format!(
        r#"[job]
name = "ingest"
batch_interval = "{interval}"
partitions = 2
checkpoint = "ckpt"
{extra_job}
[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{port}"
{}"#,
        totals_pipeline("events", "text", "totals")
    )
}

/// `input` lines "key n" → `pairs` (keys read as `key_codec`) → running sum per key in stream
/// `totals` → text files under `out/totals`.
fn totals_pipeline(input: &str, key_codec: &str, totals: &str) -> String {
    format!(
        r#"
[[streams]]
name = "pairs"
op = "map"
input = "{input}"
udf = "text#key_number"
key_codec = "{key_codec}"
value_codec = "number"

[[streams]]
name = "{totals}"
op = "update_state_by_key"
input = "pairs"
builtin = "sum_i64"

[[sinks]]
kind = "text_files"
input = "{totals}"
prefix = "out/totals"
"#
    )
}

/// `(key,value)` lines of the newest finished batch folder.
fn last_totals(dir: &JobDir) -> BTreeMap<String, i64> {
    dir.last_batch_lines("out/totals")
        .iter()
        .map(|line| {
            let (k, v) = line
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split_once(',')
                .expect("(key,value)");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_listening(log: &Arc<Mutex<String>>) {
    wait_for("the ingest endpoint", || {
        log.lock().expect("log").contains("listening on http://")
    });
}

/// Whether the client was told the records are safe.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Acked,
    Unknown,
}

#[test]
fn every_acknowledged_post_counts_exactly_once_across_kill_nine_and_sigterm_exits_zero() {
    const LINES: i64 = 5;
    let port = free_port();
    let dir = JobDir::new();
    dir.manifest(&http_job(
        port,
        "100ms",
        "checkpoint_interval = \"300ms\"\n",
    ));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let posting = Arc::new(AtomicBool::new(true));
    let poster = {
        let (outcomes, posting) = (outcomes.clone(), posting.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while posting.load(Ordering::Acquire) {
                let body: String = (0..LINES).map(|_| format!("p{i} 1\n")).collect();
                let outcome = match post(port, "/ingest/events", body.as_bytes()) {
                    Ok((200, _)) => Outcome::Acked,
                    _ => Outcome::Unknown,
                };
                outcomes.lock().expect("outcomes").push(outcome);
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    for round in 0..5u64 {
        let (mut child, log) = dir.spawn_logged(&[]);
        wait_listening(&log);
        std::thread::sleep(Duration::from_millis(150 + round * 97 % 400));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }
    let (child, log) = dir.spawn_logged(&[]);
    wait_listening(&log);
    std::thread::sleep(Duration::from_millis(500));
    posting.store(false, Ordering::Release);
    poster.join().expect("the poster");
    // What is buffered goes into a last batch on SIGTERM.
    sigterm(&child);
    let out = child.wait_with_output().expect("wait for the job");
    let log = log.lock().expect("log").clone();
    assert_eq!(out.status.code(), Some(0), "SIGTERM exits 0\n{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("checkpoint written at batch"), "{log}");

    let outcomes = outcomes.lock().expect("outcomes").clone();
    let totals = last_totals(&dir);
    let acked = outcomes.iter().filter(|o| **o == Outcome::Acked).count();
    assert!(acked > 50, "the test posted too little: {acked} acked");
    for (i, outcome) in outcomes.iter().enumerate() {
        let got = totals.get(&format!("p{i}")).copied();
        match outcome {
            Outcome::Acked => assert_eq!(got, Some(LINES), "post {i} was acknowledged"),
            Outcome::Unknown => assert!(
                got.is_none() || got == Some(LINES),
                "post {i} (no answer) counted {got:?} times {LINES}"
            ),
        }
    }
    assert!(totals.len() <= outcomes.len(), "keys nobody posted");
}

/// Post three bodies while the first batch interval runs, kill -9 before they are sealed:
/// they live only in the write-ahead log.
fn three_posts_in_the_log_only(dir: &JobDir, port: u16) -> Vec<u64> {
    dir.manifest(&http_job(port, "20s", ""));
    let (mut child, log) = dir.spawn_logged(&[]);
    wait_listening(&log);
    // The first tick seals at once; the next is 20 s away.
    wait_for("the first, empty batch", || {
        log.lock().expect("log").contains("batch done")
    });
    for key in ["a", "b", "c"] {
        let (status, body) = post(
            port,
            "/ingest/events",
            format!("{key} 1\n{key} 2\n").as_bytes(),
        )
        .expect("post");
        assert_eq!(status, 200, "{body}");
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let wal = dir.path().join("ckpt/wal/events/00000000000000000000.wal");
    let data = std::fs::read(&wal).expect("the log");
    // Records: [len u32][crc u32][arrival i64][lines]; find where each starts.
    let mut starts = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        starts.push(at as u64);
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 8 + len;
    }
    assert_eq!(starts.len(), 3, "one record per post");
    starts
}

#[test]
fn a_damaged_write_ahead_log_is_reported_and_only_an_explicit_choice_goes_on_without_it() {
    let port = free_port();
    let dir = JobDir::new();
    let starts = three_posts_in_the_log_only(&dir, port);
    let wal = dir.path().join("ckpt/wal/events/00000000000000000000.wal");
    let mut data = std::fs::read(&wal).expect("the log");
    data[starts[1] as usize + 20] ^= 0x01;
    std::fs::write(&wal, &data).expect("flip a byte");

    let out = dir.command(&[]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        err.contains("00000000000000000000.wal")
            && err.contains(&format!("at byte {}", starts[1]))
            && err.contains("checksum mismatch")
            && err.contains("--accept-wal-loss"),
        "{err}"
    );
    assert!(
        dir.batch_dirs("out/totals")
            .iter()
            .all(|d| last_totals_of(d).is_empty())
    );

    // Accepting the loss: the record before the damage is counted, the rest moved aside.
    let (child, log) = dir.spawn_logged(&["--accept-wal-loss"]);
    wait_listening(&log);
    wait_for("the recovered record in a batch", || {
        last_totals(&dir).contains_key("a")
    });
    sigterm(&child);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", log.lock().expect("log"));
    let totals = last_totals(&dir);
    assert_eq!(totals.get("a"), Some(&3));
    assert!(
        !totals.contains_key("b") && !totals.contains_key("c"),
        "{totals:?}"
    );
    assert!(dir.path().join("ckpt/wal/events/lost").is_dir());
    let log = log.lock().expect("log").clone();
    assert!(log.contains("--accept-wal-loss"), "{log}");
}

fn last_totals_of(batch: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(batch)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                .flat_map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn records_acknowledged_before_a_crash_come_back_from_the_log() {
    let port = free_port();
    let dir = JobDir::new();
    three_posts_in_the_log_only(&dir, port);
    assert!(
        last_totals(&dir).is_empty(),
        "nothing was sealed before the kill"
    );
    dir.manifest(&http_job(port, "100ms", ""));
    let (child, log) = dir.spawn_logged(&[]);
    wait_listening(&log);
    wait_for("the logged records in a batch", || {
        last_totals(&dir).len() == 3
    });
    sigterm(&child);
    assert_eq!(
        child.wait_with_output().expect("wait").status.code(),
        Some(0)
    );
    let totals = last_totals(&dir);
    assert_eq!(
        totals,
        BTreeMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)])
    );
    assert!(
        log.lock()
            .expect("log")
            .contains("back from the write-ahead log")
    );
}

/// A directory job with state and a checkpoint, run to the end.
fn directory_job(dir: &JobDir, totals_stream: &str, key_codec: &str) {
    dir.manifest(&format!(
        r#"[job]
name = "files"
batch_interval = "100ms"
checkpoint = "ckpt"
checkpoint_interval = "200ms"

[[sources]]
name = "lines"
kind = "directory"
path = "in"
max_files_per_batch = 1
{}"#,
        totals_pipeline("lines", key_codec, totals_stream)
    ));
}

fn directory_totals(dir: &JobDir) -> BTreeMap<String, i64> {
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    last_totals(dir)
}

#[test]
fn a_restart_reads_only_new_files_and_lost_state_comes_back_from_a_data_checkpoint() {
    let dir = JobDir::new();
    directory_job(&dir, "totals", "text");
    for i in 0..5 {
        dir.file(&format!("in/{i}.txt"), "a 1\nb 10\n");
    }
    let first = directory_totals(&dir);
    assert_eq!(first, BTreeMap::from([("a".into(), 5), ("b".into(), 50)]));
    // Again: the files were read; nothing is counted twice.
    dir.file("in/5.txt", "a 1\n");
    assert_eq!(
        directory_totals(&dir),
        BTreeMap::from([("a".into(), 6), ("b".into(), 50)])
    );
    // The live state is lost: the newest data checkpoint and the batches after it bring it back.
    std::fs::remove_dir_all(dir.path().join("ckpt/state")).expect("remove the state");
    dir.file("in/6.txt", "b 1\n");
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("restored the data checkpoint of batch"),
        "{err}"
    );
    assert_eq!(
        last_totals(&dir),
        BTreeMap::from([("a".into(), 6), ("b".into(), 51)])
    );
}

#[test]
fn damaged_metadata_falls_back_to_the_previous_good_file() {
    let dir = JobDir::new();
    directory_job(&dir, "totals", "text");
    dir.file("in/0.txt", "a 1\n");
    directory_totals(&dir);
    let meta_dir = dir.path().join("ckpt/metadata");
    let mut files: Vec<_> = std::fs::read_dir(&meta_dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    let newest = files.last().expect("a metadata file").clone();
    let mut data = std::fs::read(&newest).expect("read");
    let n = data.len();
    data[n - 5] ^= 0x10;
    std::fs::write(&newest, data).expect("damage it");
    dir.file("in/1.txt", "a 1\n");
    let out = dir.run_until_idle();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        err.contains(&format!(
            "{} cannot be used: checksum mismatch",
            newest.display()
        )),
        "{err}"
    );
    assert!(err.contains("recovering from"), "{err}");
    assert_eq!(last_totals(&dir), BTreeMap::from([("a".into(), 2)]));
}

#[test]
fn a_plan_that_cannot_carry_its_state_is_refused_naming_the_operator() {
    let dir = JobDir::new();
    directory_job(&dir, "totals", "text");
    dir.file("in/0.txt", "a 1\n");
    directory_totals(&dir);

    directory_job(&dir, "sums", "text");
    let out = dir.run_until_idle();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        err.contains("stateful operator 'totals' (update_state_by_key) is no longer in the job (removed or renamed)"),
        "{err}"
    );

    directory_job(&dir, "totals", "json");
    let out = dir.run_until_idle();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        err.contains("'totals' had keys read as text and now as json"),
        "{err}"
    );

    // A new version of a stateless UDF's component is accepted: same code, one more custom
    // section, so other bytes and another content hash.
    directory_job(&dir, "totals", "text");
    let text = dir.path().join("udfs/text.wasm");
    let mut bytes = std::fs::read(&text).expect("read the component");
    bytes.extend_from_slice(&[0, 6, 5, b'n', b'o', b't', b'e', b'!']);
    std::fs::write(&text, bytes).expect("write the new version");
    dir.file("in/1.txt", "a 1\n");
    let out = dir.run_until_idle();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(err.contains("component 'text' has a new version"), "{err}");
    assert_eq!(last_totals(&dir), BTreeMap::from([("a".into(), 2)]));
}

#[test]
fn checkpoint_settings_that_do_not_fit_are_refused() {
    let dir = JobDir::new();
    dir.file("in/0.txt", "a 1\n");
    directory_job(&dir, "totals", "text");
    let text = std::fs::read_to_string(dir.path().join("job.toml")).expect("read");
    dir.manifest(&text.replace(
        "checkpoint_interval = \"200ms\"",
        "checkpoint_interval = \"250ms\"",
    ));
    let out = dir.run_until_idle();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        err.contains("checkpoint_interval = 250ms is not a multiple of the batch interval (100ms)")
            && err.contains("hint: use 200ms or 300ms"),
        "{err}"
    );

    dir.manifest(&http_job(free_port(), "100ms", "").replace("checkpoint = \"ckpt\"\n", ""));
    let out = dir.run_until_idle();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        err.contains(
            "source 'events': an http source answers only once records are in its write-ahead log"
        ),
        "{err}"
    );

    dir.manifest(&http_job(
        free_port(),
        "100ms",
        "wal_fsync = \"sometimes\"\n",
    ));
    let out = dir.run_until_idle();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(err.contains("wal_fsync = \"sometimes\""), "{err}");
}

#[test]
fn the_ingest_endpoint_refuses_what_it_cannot_take_whole() {
    let port = free_port();
    let dir = JobDir::new();
    dir.manifest(
        &http_job(port, "100ms", "")
            .replace("address = ", "max_request_bytes = \"64B\"\naddress = "),
    );
    let (child, log) = dir.spawn_logged(&[]);
    wait_listening(&log);
    let (status, body) = post(port, "/ingest/events", b"a 1\n\xff\xfe 2\n").expect("post");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 2 of the body is not UTF-8"), "{body}");
    let (status, _) = post(port, "/ingest/events", &[b'x'; 100]).expect("post");
    assert_eq!(status, 413);
    let (status, body) = post(port, "/ingest/other", b"a 1\n").expect("post");
    assert_eq!(status, 404);
    assert!(body.contains("POST /ingest/events"), "{body}");
    let (status, body) = post(port, "/ingest/events", b"z 7\n").expect("post");
    assert_eq!((status, body.trim()), (200, "{\"accepted\":1}"));
    wait_for("the accepted record", || {
        last_totals(&dir).contains_key("z")
    });
    sigterm(&child);
    child.wait_with_output().expect("wait");
    assert_eq!(last_totals(&dir), BTreeMap::from([("z".into(), 7)]));
}

#[test]
fn a_window_kept_in_memory_gets_its_partials_back_after_a_restart() {
    let dir = JobDir::new();
    dir.manifest(
        r#"[job]
name = "windowed"
batch_interval = "100ms"
checkpoint = "ckpt"

[[sources]]
name = "lines"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "pairs"
op = "map"
input = "lines"
udf = "text#key_number"
value_codec = "number"

[[streams]]
name = "totals"
op = "reduce_by_key_and_window"
input = "pairs"
builtin = "sum_i64"
window = "30s"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"
"#,
    );
    dir.file("in/a.txt", "a 1\n");
    dir.file("in/b.txt", "b 2\n");
    // Stopped gracefully (not --until-idle, which would slide the window past its data as
    // Spark's windows slide when left running), so the window still holds both batches.
    assert_eq!(
        totals_until_stopped(&dir, &[("a", 1), ("b", 2)]),
        BTreeMap::from([("a".into(), 1), ("b".into(), 2)])
    );
    dir.file("in/c.txt", "c 3\na 10\n");
    assert_eq!(
        totals_until_stopped(&dir, &[("a", 11), ("b", 2), ("c", 3)]),
        BTreeMap::from([("a".into(), 11), ("b".into(), 2), ("c".into(), 3)]),
        "the 30 s window still holds the first run's batches"
    );
}

/// Run the job until its newest output is `expected` (or 60 s pass), stop it with SIGTERM and
/// return its newest output.
fn totals_until_stopped(dir: &JobDir, expected: &[(&str, i64)]) -> BTreeMap<String, i64> {
    let expected: BTreeMap<String, i64> =
        expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let (mut child, log) = dir.spawn_logged(&[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while last_totals(dir) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&child);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{}", log.lock().expect("log"));
    last_totals(dir)
}

#[test]
fn checkpoint_on_the_command_line_takes_the_place_of_the_manifests() {
    let dir = JobDir::new();
    directory_job(&dir, "totals", "text");
    dir.file("in/0.txt", "a 1\n");
    let elsewhere = dir.path().join("elsewhere");
    let run = || {
        let out = dir
            .command(&[
                "--until-idle",
                "--checkpoint",
                elsewhere.to_str().expect("utf-8"),
            ])
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", describe(&out));
    };
    run();
    assert!(elsewhere.join("metadata").is_dir() && elsewhere.join("state/CURRENT").exists());
    assert!(
        !dir.path().join("ckpt").exists(),
        "the manifest's folder is not used"
    );
    dir.file("in/1.txt", "a 1\n");
    run();
    assert_eq!(last_totals(&dir), BTreeMap::from([("a".into(), 2)]));
}

#[test]
fn lines_a_socket_receiver_read_survive_kill_nine_through_its_log() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("its address").port();
    // The peer: sends three lines to the first who connects once told to, then keeps
    // connections open.
    let (send, go) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut first = true;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            if first {
                let _ = go.recv();
                let _ = stream.write_all(b"s 1\ns 2\nt 5\n");
                first = false;
            }
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(60));
                drop(stream);
            });
        }
    });
    let manifest = |interval: &str| {
        http_job(0, interval, "").replace(
            "kind = \"http\"\naddress = \"127.0.0.1:0\"",
            &format!("kind = \"socket\"\nhost = \"127.0.0.1\"\nport = {port}"),
        )
    };
    let dir = JobDir::new();
    dir.manifest(&manifest("20s"));
    let (mut child, log) = dir.spawn_logged(&[]);
    // Lines sent after the job's first, immediate seal wait 20 s for the next.
    wait_for("the first, empty batch", || {
        log.lock().expect("log").contains("batch done")
    });
    send.send(()).expect("the peer");
    let wal = dir.path().join("ckpt/wal/events/00000000000000000000.wal");
    wait_for("the lines in the log", || {
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0)
    });
    assert!(log.lock().expect("log").contains("connected to"));
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(
        last_totals(&dir).is_empty(),
        "nothing was sealed before the kill"
    );

    dir.manifest(&manifest("100ms"));
    let (child, log) = dir.spawn_logged(&[]);
    wait_for("the logged lines in a batch", || {
        last_totals(&dir).len() == 2
    });
    sigterm(&child);
    assert_eq!(
        child.wait_with_output().expect("wait").status.code(),
        Some(0)
    );
    assert_eq!(
        last_totals(&dir),
        BTreeMap::from([("s".into(), 3), ("t".into(), 5)])
    );
    assert!(
        log.lock()
            .expect("log")
            .contains("back from the write-ahead log")
    );
}
