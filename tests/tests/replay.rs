//! `host replay`: a recorded batch run again as a dry run — a served job's on a real
//! `host serve` (`POST /api/v1/jobs/{job}/replay`, `host replay JOB --batch T`), and a
//! `host run` job's locally (`host replay --manifest`). What it shows, that it uses the
//! current UDF version, that it writes nothing (no sink output, no checkpoint, no state), that
//! another tenant gets 404, and that a batch no longer recorded is named with those that are.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_tests::serve::{ALICE, BOB, Server, UPPER, json};
use sluice_tests::{JobDir, host_bin, udf, wait_for};

/// A started `host serve` with tenants `alice` and `bob`.
fn started() -> Server {
    let mut server = Server::new(16);
    server.start();
    server
}

/// A request that must be answered `status`; its body as JSON.
fn expect(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
    status: u16,
) -> serde_json::Value {
    json(&server.expect(method, path, token, body, status))
}

/// The output lines of stream `name` in a replay answer, sorted.
fn stream_lines(answer: &serde_json::Value, name: &str) -> Vec<String> {
    let stream = answer["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == name))
        .unwrap_or_else(|| panic!("no stream {name:?} in {answer}"));
    let mut lines: Vec<String> = stream["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {stream}"))
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect();
    lines.sort();
    lines
}

/// Every file under `dir` with its length: to see that nothing was written.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(listing(&path));
        } else {
            let len = entry.metadata().map_or(0, |m| m.len());
            out.push((path, len));
        }
    }
    out.sort();
    out
}

/// Job `upper`, its batches kept in the checkpoint's metadata until a data checkpoint covers
/// them (every hour here).
fn manifest() -> String {
    UPPER.replace(
        "batch_interval = \"200ms\"",
        "batch_interval = \"200ms\"\ncheckpoint_interval = \"1h\"",
    )
}

#[test]
fn a_served_jobs_batch_replays_with_the_current_udf_writes_nothing_and_is_the_tenants_own() {
    let server = started();
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    expect(&server, "POST", "/api/v1/udfs/text", ALICE, &text, 201);
    expect(
        &server,
        "POST",
        "/api/v1/jobs",
        ALICE,
        manifest().as_bytes(),
        201,
    );
    expect(
        &server,
        "POST",
        "/api/v1/jobs/upper/ingest/lines",
        ALICE,
        b"hello\nworld\n",
        200,
    );
    // The batch that took the two lines.
    let mut batch = 0;
    wait_for("the batch with the two lines", || {
        let status = expect(&server, "GET", "/api/v1/jobs/upper", ALICE, b"", 200);
        batch = status["batches"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["records_in"] == 2)
            .and_then(|b| b["id"].as_u64())
            .unwrap_or(0);
        batch > 0
    });
    let replay = format!("/api/v1/jobs/upper/replay?batch={batch}");

    // Not while it runs: its state and logs are its own.
    let running = expect(&server, "POST", &replay, ALICE, b"", 409);
    assert!(
        running["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("host stop upper"),
        "{running}"
    );
    // Stopped without a graceful end: no data checkpoint is taken, the batches stay listed.
    expect(&server, "POST", "/api/v1/jobs/upper/stop", ALICE, b"", 200);
    let before = listing(&server.job_dir("alice", "upper"));
    assert!(
        before
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains("/out/up-")),
        "the job wrote output: {before:?}"
    );

    let answer = expect(&server, "POST", &replay, ALICE, b"", 200);
    assert_eq!(answer["batch"], batch, "{answer}");
    assert_eq!(answer["records_in"], 2, "{answer}");
    assert_eq!(stream_lines(&answer, "up"), ["HELLO", "WORLD"], "{answer}");
    assert_eq!(
        stream_lines(&answer, "lines"),
        ["hello", "world"],
        "{answer}"
    );
    let up = answer["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == "up"))
        .expect("stream up");
    assert_eq!(up["sink"], true, "{up}");
    assert_eq!(up["records"], 2, "{up}");

    // Another tenant's job is not there for bob, exactly like a job that does not exist.
    let theirs = expect(&server, "POST", &replay, BOB, b"", 404);
    let none = expect(
        &server,
        "POST",
        &format!("/api/v1/jobs/nosuch/replay?batch={batch}"),
        BOB,
        b"",
        404,
    );
    assert_eq!(
        theirs["error"]
            .as_str()
            .map(|e| e.replace("upper", "nosuch")),
        none["error"].as_str().map(str::to_string)
    );

    // A new version deployed since: the replay runs it.
    let v2 = std::fs::read(sluice_tests::test_guest("text_v2")).expect("read text_v2.wasm");
    expect(&server, "POST", "/api/v1/udfs/text", ALICE, &v2, 201);
    let answer = expect(&server, "POST", &replay, ALICE, b"", 200);
    assert_eq!(
        stream_lines(&answer, "up"),
        ["v2:HELLO", "v2:WORLD"],
        "{answer}"
    );

    // The command line, the same through the client.
    let out = Command::new(host_bin())
        .args(["replay", "upper", "--batch", &batch.to_string()])
        .env("SLUICE_SERVER", format!("http://127.0.0.1:{}", server.port))
        .env("SLUICE_TOKEN", ALICE)
        .output()
        .expect("run host replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host replay: {out:?}");
    assert!(
        stdout.contains(&format!("job 'upper', batch {batch}")) && stdout.contains("2 records in"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stream 'up' (map): 2 records, written by a sink")
            && stdout.contains("  v2:HELLO")
            && stdout.contains("  v2:WORLD"),
        "{stdout}"
    );

    // A batch the checkpoint does not hold: said so, with those it holds.
    let gone = expect(
        &server,
        "POST",
        "/api/v1/jobs/upper/replay?batch=999",
        ALICE,
        b"",
        404,
    );
    let error = gone["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("batch 999")
            && error.contains("holds batches")
            && error.contains(&batch.to_string()),
        "{gone}"
    );
    expect(
        &server,
        "POST",
        "/api/v1/jobs/upper/replay",
        ALICE,
        b"",
        400,
    );
    expect(
        &server,
        "POST",
        "/api/v1/jobs/upper/replay?batch=1&other=2",
        ALICE,
        b"",
        400,
    );

    // Nothing written: no output folder, no metadata file, no state file changed.
    assert_eq!(listing(&server.job_dir("alice", "upper")), before);
}

#[test]
fn a_failed_jobs_batch_is_there_to_replay_and_fails_the_same_way() {
    let server = started();
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    expect(&server, "POST", "/api/v1/udfs/text", ALICE, &text, 201);
    let manifest = manifest()
        .replace("name = \"upper\"", "name = \"keys\"")
        .replace("text#uppercase", "text#key_number");
    expect(
        &server,
        "POST",
        "/api/v1/jobs",
        ALICE,
        manifest.as_bytes(),
        201,
    );
    expect(
        &server,
        "POST",
        "/api/v1/jobs/keys/ingest/lines",
        ALICE,
        b"a 1\nnot a number\n",
        200,
    );
    let mut failed = serde_json::Value::Null;
    wait_for("the job to fail", || {
        failed = expect(&server, "GET", "/api/v1/jobs/keys", ALICE, b"", 200);
        failed["state"] == "failed"
    });
    let batch = failed["batches"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| !b["error"].is_null())
        .and_then(|b| b["id"].as_u64())
        .unwrap_or_else(|| panic!("no failed batch in {failed}"));
    let answer = expect(
        &server,
        "POST",
        &format!("/api/v1/jobs/keys/replay?batch={batch}"),
        ALICE,
        b"",
        422,
    );
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("batch {batch} fails when run again"))
            && error.contains("is not `KEY INTEGER`"),
        "{answer}"
    );
    assert!(
        answer["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("deploy a fixed version"),
        "{answer}"
    );
}

#[test]
fn a_local_stateful_batch_replays_against_the_state_as_it_is_and_commits_nothing() {
    let job = JobDir::new();
    job.file("in/1.txt", "a 1\nb 2\n");
    job.file("in/2.txt", "a 5\n");
    job.manifest(
        r#"
[job]
name = "totals"
batch_interval = "100ms"
checkpoint = "ckpt"

[[sources]]
name = "numbers"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "pairs"
op = "map"
input = "numbers"
udf = "text#key_number"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "pairs"
builtin = "sum_i64"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"
"#,
    );
    let run = job.run_until_idle();
    assert!(run.status.success(), "{}", sluice_tests::describe(&run));
    let sorted = |mut lines: Vec<String>| {
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(job.last_batch_lines("out/totals")),
        ["(a,6)", "(b,2)"]
    );
    let before = listing(job.path());

    let replay = |batch: &str| {
        Command::new(host_bin())
            .args(["replay", "--manifest"])
            .arg(job.path().join("job.toml"))
            .args(["--udfs"])
            .arg(job.path().join("udfs"))
            .args(["--batch", batch])
            .env("SLUICE_COMPONENT_CACHE", job.path().join("cache"))
            .output()
            .expect("run host replay")
    };
    // Batch 1 (a 1, b 2) on top of the state as committed (a 6, b 2), twice: the same answer,
    // since nothing is committed.
    for _ in 0..2 {
        let out = replay("1");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", sluice_tests::describe(&out));
        assert!(
            stdout.contains("job 'totals', batch 1") && stdout.contains("2 records in"),
            "{stdout}"
        );
        assert!(
            stdout.contains("stream 'totals' (update_state_by_key): 2 records, written by a sink")
                && stdout.contains("  (a,7)")
                && stdout.contains("  (b,4)"),
            "{stdout}"
        );
        assert!(
            stdout.contains("stream 'pairs' (map): 2 records\n"),
            "{stdout}"
        );
    }
    // Nothing written but the state store's own files on opening: no output, no metadata.
    let outside_state = |files: Vec<(PathBuf, u64)>| -> Vec<(PathBuf, u64)> {
        files
            .into_iter()
            .filter(|(p, _)| {
                !p.starts_with(job.path().join("cache"))
                    && !p.starts_with(job.path().join("ckpt/state"))
            })
            .collect()
    };
    assert_eq!(outside_state(listing(job.path())), outside_state(before));
    // Nothing committed: the next real batch adds to the state as the run left it.
    job.file("in/3.txt", "b 1\n");
    let run = job.run_until_idle();
    assert!(run.status.success(), "{}", sluice_tests::describe(&run));
    assert_eq!(
        sorted(job.last_batch_lines("out/totals")),
        ["(a,6)", "(b,3)"]
    );

    let out = replay("9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("batch 9 of job 'totals' is not in its checkpoint")
            && stderr.contains("it holds batches 1..=")
            && stderr.contains("hint:"),
        "{stderr}"
    );
}
