//! Rolling a new UDF version out on a real `host serve`: a version that traps on its first
//! batches is rolled back by itself (job and registry) with nothing lost or doubled; a canary
//! shows what the candidate would change without committing any of it, then is promoted or
//! aborted; and a batch sealed before a restart runs again with the version it was sealed with.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_tests::serve::{ALICE, Server, batches, json, request};
use sluice_tests::{test_guest, udf, wait_for};

/// `key number` lines summed per key: every pair is written, and the running totals.
const MANIFEST: &str = r#"
[job]
name = "sums"
batch_interval = "200ms"

[[sources]]
name = "lines"
kind = "http"
address = "127.0.0.1:9"

[[streams]]
name = "pairs"
op = "map"
input = "lines"
udf = "text#key_number"
key_codec = "text"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "pairs"
builtin = "sum_i64"

[[sinks]]
kind = "text_files"
input = "pairs"
prefix = "out/pairs"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"
format = "jsonl"
"#;

const INGEST: &str = "/api/v1/jobs/sums/ingest/lines";

/// Every pair written, counted.
fn pairs(dir: &Path) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for line in batches(dir, "pairs").into_iter().flatten() {
        *counted.entry(line).or_insert(0) += 1;
    }
    counted
}

/// The newest total of key `all`.
fn total(dir: &Path) -> Option<i64> {
    batches(dir, "totals")
        .into_iter()
        .rev()
        .flatten()
        .map(|l| json(&l))
        .find(|v| v["key"] == "all")
        .and_then(|v| v["value"].as_i64())
}

/// Posts `r<i> 1` and `all 1` per request until stopped; the `i`s acknowledged.
struct Poster {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<usize>>,
}

impl Poster {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("r{i} 1\nall 1\n");
                    match request(port, "POST", INGEST, Some(ALICE), body.as_bytes()) {
                        Ok((200, _)) => acked.push(i),
                        other => eprintln!("r{i} not acknowledged: {other:?}"),
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                acked
            })
        };
        Self { stop, thread }
    }

    fn finish(self) -> Vec<usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the poster")
    }
}

/// Every acknowledged record once, with the value one version or the other gave it; the
/// total of `all` their sum. Returns how many came out of each value.
fn check_exactly_once(dir: &Path, acked: &[usize], values: &[i64]) -> BTreeMap<i64, usize> {
    wait_for("every acknowledged record's pair", || {
        let out = pairs(dir);
        acked.iter().all(|i| {
            values
                .iter()
                .any(|v| out.contains_key(&format!("(r{i},{v})")))
        })
    });
    let out = pairs(dir);
    let mut by_value = BTreeMap::new();
    for i in acked {
        let found: Vec<i64> = values
            .iter()
            .copied()
            .filter(|v| out.contains_key(&format!("(r{i},{v})")))
            .collect();
        assert_eq!(found.len(), 1, "r{i}: {found:?}");
        assert_eq!(out[&format!("(r{i},{})", found[0])], 1, "r{i} twice");
        *by_value.entry(found[0]).or_insert(0) += 1;
    }
    let all: usize = out
        .iter()
        .filter(|(l, _)| l.starts_with("(all,"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(all, acked.len(), "one `all` pair per request");
    let expected: i64 = by_value.iter().map(|(v, n)| v * *n as i64).sum();
    wait_for("the total of every record", || total(dir) == Some(expected));
    by_value
}

/// A host with `text` version 1 and job `sums` running on it, fed by a poster, past its
/// first output.
fn running_job() -> (Server, std::path::PathBuf, Poster) {
    let mut server = Server::new(16);
    server.start();
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    server.expect("POST", "/api/v1/udfs/text", ALICE, &text, 201);
    server.expect("POST", "/api/v1/jobs", ALICE, MANIFEST.as_bytes(), 201);
    let dir = server.job_dir("alice", "sums");
    let poster = Poster::start(server.port);
    wait_for("version 1's output", || pairs(&dir).len() >= 20);
    (server, dir, poster)
}

#[test]
fn a_version_that_traps_on_its_first_batches_is_rolled_back_and_nothing_is_lost() {
    let (server, dir, poster) = running_job();

    let v3 = test_guest("text_v3");
    let out = server.host(
        ALICE,
        &[
            "deploy",
            v3.to_str().expect("a UTF-8 path"),
            "--name",
            "text",
            "--wait",
            "60s",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("deployed as version 2"), "{stdout}");
    assert!(
        stderr.contains("text version 2 failed batch")
            && stderr.contains("rolled back: version 3 now runs the code of version 1")
            && stderr.contains("this release is broken"),
        "{stderr}\n{}",
        server.log()
    );
    // Records keep flowing on version 1 (the code of version 3 now).
    let before = pairs(&dir).len();
    wait_for("more output after the rollback", || {
        pairs(&dir).len() >= before + 20
    });
    let acked = poster.finish();
    let by_value = check_exactly_once(&dir, &acked, &[1]);
    assert_eq!(by_value[&1], acked.len());

    let udfs = json(&server.expect("GET", "/api/v1/udfs/text", ALICE, b"", 200));
    let versions = udfs["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 3, "{udfs}");
    assert_eq!(versions[2]["sha256"], versions[0]["sha256"], "{udfs}");
    let status = json(&server.expect("GET", "/api/v1/jobs/sums", ALICE, b"", 200));
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["udfs"][0]["version"], 3, "{status}");
    assert!(
        status["batches"]
            .as_array()
            .expect("batches")
            .iter()
            .all(|b| b["error"].is_null()),
        "the failing batch ran again and passed: {status}"
    );
}

#[test]
fn a_canary_shows_its_differences_commits_nothing_and_is_promoted_or_aborted() {
    let (server, dir, poster) = running_job();

    let v2 = test_guest("text_v2");
    let v2 = v2.to_str().expect("a UTF-8 path");
    let out = server.host(
        ALICE,
        &[
            "deploy", v2, "--name", "text", "--canary", "3", "--wait", "60s",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}\n{}", server.log());
    assert!(stdout.contains("canary of text started"), "{stdout}");
    assert!(
        stdout.contains("job 'sums': 3 of 3 batches compared, 0 identical"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    - (all,1)") && stdout.contains("    + (all,100)"),
        "{stdout}"
    );
    assert!(stdout.contains("host promote text"), "{stdout}");
    // Nothing of the candidate reached a sink or the state.
    assert!(
        !pairs(&dir).keys().any(|l| l.ends_with(",100)")),
        "a candidate's pair was written"
    );
    assert!(
        total(&dir).is_some_and(|t| t
            <= pairs(&dir)
                .iter()
                .filter(|(l, _)| l.starts_with("(all,"))
                .map(|(_, n)| *n as i64)
                .sum()),
        "the candidate's state changes were committed"
    );
    let status = json(&server.expect("GET", "/api/v1/udfs/text/canary", ALICE, b"", 200));
    assert_eq!(
        status["jobs"][0]["report"]["batches_compared"], 3,
        "{status}"
    );

    let out = server.host(ALICE, &["promote", "text"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("promoted: the candidate is text version 2"),
        "{stdout}"
    );
    wait_for("version 2's output", || {
        pairs(&dir).keys().filter(|l| l.ends_with(",100)")).count() >= 20
    });
    // No canary any more.
    server.expect("GET", "/api/v1/udfs/text/canary", ALICE, b"", 404);

    // A canary of version 1's code again, aborted: the job stays on version 2.
    let v1 = udf("text");
    let out = server.host(
        ALICE,
        &[
            "deploy",
            v1.to_str().expect("a UTF-8 path"),
            "--name",
            "text",
            "--canary",
            "2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = server.host(ALICE, &["abort", "text"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("aborted"), "{stdout}");
    let before = pairs(&dir).keys().filter(|l| l.ends_with(",100)")).count();
    wait_for("more version 2 output", || {
        pairs(&dir).keys().filter(|l| l.ends_with(",100)")).count() >= before + 10
    });

    let acked = poster.finish();
    let by_value = check_exactly_once(&dir, &acked, &[1, 100]);
    assert!(by_value[&1] > 0 && by_value[&100] > 0, "{by_value:?}");
    let udfs = json(&server.expect("GET", "/api/v1/udfs/text", ALICE, b"", 200));
    assert_eq!(
        udfs["versions"].as_array().map(Vec::len),
        Some(2),
        "an aborted candidate is no version: {udfs}"
    );
}

/// A directory-source job (its files in its own folder), for a checkpoint written by hand.
const FILES_MANIFEST: &str = r#"
[job]
name = "files"
batch_interval = "200ms"

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "pairs"
op = "map"
input = "lines"
udf = "text#key_number"
key_codec = "text"
value_codec = "number"

[[sinks]]
kind = "text_files"
input = "pairs"
prefix = "out/pairs"
"#;

#[test]
fn a_batch_sealed_before_a_restart_runs_again_with_the_version_it_was_sealed_with() {
    use sluice_host::checkpoint::{BatchRecord, CheckpointDir, RecordedInput, RecordedUdf};

    let mut server = Server::new(16);
    server.start();
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    let v1 = json(&server.expect("POST", "/api/v1/udfs/text", ALICE, &text, 201));
    let dir = server.job_dir("alice", "files");
    std::fs::create_dir_all(dir.join("in")).expect("the job's input folder");
    server.expect(
        "POST",
        "/api/v1/jobs",
        ALICE,
        FILES_MANIFEST.as_bytes(),
        201,
    );
    std::fs::write(dir.join("in/f1.txt"), "a 1\n").expect("f1");
    wait_for("f1's pair", || pairs(&dir).contains_key("(a,1)"));
    let v2 = std::fs::read(test_guest("text_v2")).expect("read text_v2.wasm");
    server.expect("POST", "/api/v1/udfs/text", ALICE, &v2, 201);
    wait_for("the job to run version 2", || {
        json(&server.expect("GET", "/api/v1/jobs/files", ALICE, b"", 200))["udfs"][0]["version"]
            == 2
    });
    server.kill();

    // As if f2 had been sealed into a batch with version 1 just before the deploy, and the
    // host killed before that batch ran.
    let (mut log, meta) = CheckpointDir::open(&dir.join("checkpoint")).expect("the checkpoint");
    let mut meta = meta.expect("metadata");
    let f1 = meta.sources["lines"].files[0].clone();
    let f2 = f1.replace("f1.txt", "f2.txt");
    std::fs::write(dir.join("in/f2.txt"), "b 2\n").expect("f2");
    let id = meta.next_batch;
    let time = meta.last_time.expect("a batch time") + 200;
    meta.batches.push(BatchRecord {
        id,
        time,
        inputs: vec![RecordedInput::Files {
            files: vec![f2.clone()],
        }],
        udfs: vec![RecordedUdf {
            component: "text".into(),
            function: "key_number".into(),
            hash: v1["sha256"].as_str().expect("a hash").to_string(),
            version: Some(1),
        }],
    });
    meta.sources
        .get_mut("lines")
        .expect("the source")
        .files
        .push(f2);
    meta.next_batch = id + 1;
    meta.last_time = Some(time);
    log.write(&meta).expect("write the metadata");
    drop(log);

    server.start();
    wait_for("f2's pair", || {
        pairs(&dir).keys().any(|l| l.starts_with("(b,"))
    });
    std::fs::write(dir.join("in/f3.txt"), "c 3\n").expect("f3");
    wait_for("f3's pair", || {
        pairs(&dir).keys().any(|l| l.starts_with("(c,"))
    });
    let out = pairs(&dir);
    assert!(out.contains_key("(b,2)"), "f2 ran with version 1: {out:?}");
    assert!(
        out.contains_key("(c,300)"),
        "f3 ran with version 2: {out:?}"
    );
    assert!(
        server
            .log()
            .contains(&format!("batch {id} runs again with text version 1")),
        "{}",
        server.log()
    );
}
