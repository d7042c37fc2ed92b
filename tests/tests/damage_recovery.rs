//! Damage to a checkpoint folder, through the `host` binary: every restart either resumes
//! exactly (totals as acknowledged / committed: nothing lost, nothing counted twice) or exits
//! non-zero within a bounded time naming the file and what to do. And a job stuck on a batch
//! its UDF rejects goes on with `--skip-batch ID`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{JobDir, copy_tree, describe, free_port, post, wait_for};

/// The longest any run may take: damage must never hang a start.
const BOUND: Duration = Duration::from_secs(60);

/// Files in `in/` (one per batch) → "key n" pairs → running sum per key → text files.
fn directory_job(extra_job: &str) -> String {
    format!(
        r#"[job]
name = "files"
batch_interval = "100ms"
partitions = 2
checkpoint = "ckpt"
checkpoint_interval = "300ms"
{extra_job}
[[sources]]
name = "input"
kind = "directory"
path = "in"
max_files_per_batch = 1
{}"#,
        PIPELINE.replace("{input}", "input")
    )
}

/// An HTTP source instead.
fn http_job(port: u16) -> String {
    format!(
        r#"[job]
name = "ingest"
batch_interval = "100ms"
partitions = 2
checkpoint = "ckpt"
checkpoint_interval = "300ms"

[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{port}"
{}"#,
        PIPELINE.replace("{input}", "events")
    )
}

const PIPELINE: &str = r#"
[[streams]]
name = "pairs"
op = "map"
input = "{input}"
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
input = "totals"
prefix = "out/totals"
"#;

/// The running totals in the newest whole batch folder.
fn totals(dir: &JobDir) -> BTreeMap<String, i64> {
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

/// Input file `n`: keys a, b, c with values n, 10 n, 100 n.
fn input_file(dir: &JobDir, n: i64) {
    dir.file(
        &format!("in/f{n:03}.txt"),
        format!("a {n}\nb {}\nc {}\n", 10 * n, 100 * n),
    );
}

/// The totals of input files `ns`.
fn expected(ns: impl IntoIterator<Item = i64>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for n in ns {
        *out.entry("a".to_string()).or_insert(0) += n;
        *out.entry("b".to_string()).or_insert(0) += 10 * n;
        *out.entry("c".to_string()).or_insert(0) += 100 * n;
    }
    out
}

/// `host run job.toml --until-idle ARGS`, killed (and failed) past [`BOUND`].
fn run(dir: &JobDir, args: &[&str]) -> Output {
    let mut all = vec!["--until-idle"];
    all.extend_from_slice(args);
    let child = dir
        .command(&all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host run");
    let id = child.id();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BOUND) {
        Ok(output) => output.expect("wait for host run"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &id.to_string()])
                .status();
            panic!(
                "host run {args:?} did not end within {BOUND:?} (started {:?} ago)",
                started.elapsed()
            );
        }
    }
}

fn ok(output: &Output) {
    assert!(output.status.success(), "{}", describe(output));
}

/// Exited non-zero, and stderr holds every one of `needles`.
fn refused(output: &Output, needles: &[&str]) {
    assert!(
        !output.status.success(),
        "expected a refusal\n{}",
        describe(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not name '{needle}'\n{}",
            describe(output)
        );
    }
}

/// Metadata files, newest first.
fn metadata_files(dir: &JobDir) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("ckpt/metadata"))
        .expect("list metadata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .collect();
    files.sort();
    files.reverse();
    files
}

/// The path a metadata file of sequence `seq` has.
fn metadata_path(dir: &JobDir, seq: u64) -> PathBuf {
    dir.path()
        .join(format!("ckpt/metadata/metadata-{seq:020}.ckpt"))
}

fn seq_of(path: &Path) -> u64 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("metadata-"))
        .and_then(|n| n.strip_suffix(".ckpt"))
        .and_then(|n| n.parse().ok())
        .expect("a metadata file name")
}

/// CRC-32 (IEEE), as the metadata header has it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The body of a metadata file, as JSON.
fn read_body(path: &Path) -> serde_json::Value {
    let data = std::fs::read(path).expect("read metadata");
    let newline = data.iter().position(|&b| b == b'\n').expect("a header");
    serde_json::from_slice(&data[newline + 1..]).expect("JSON")
}

/// Write `body` to `path` with a valid header: length and checksum match.
fn write_body(path: &Path, body: &serde_json::Value) {
    let body = serde_json::to_vec_pretty(body).expect("encode");
    let mut data = format!(
        "sluice-checkpoint v2 len={} crc32={:08x}\n",
        body.len(),
        crc32(&body)
    )
    .into_bytes();
    data.extend_from_slice(&body);
    std::fs::write(path, data).expect("write metadata");
}

/// A directory job that ran files 1..=n to the end.
fn ran_directory_job(n: i64) -> JobDir {
    let dir = JobDir::new();
    dir.manifest(&directory_job(""));
    for i in 1..=n {
        input_file(&dir, i);
    }
    ok(&run(&dir, &[]));
    assert_eq!(totals(&dir), expected(1..=n));
    dir
}

#[test]
fn deleted_or_stale_metadata_over_live_state_is_refused_never_replayed_twice() {
    // Deleted metadata: the state has committed batches, nothing says what they read.
    let dir = ran_directory_job(3);
    std::fs::remove_dir_all(dir.path().join("ckpt/metadata")).expect("delete metadata");
    input_file(&dir, 4);
    let out = run(&dir, &[]);
    refused(
        &out,
        &["has no metadata", "ckpt/state", "committed batch", "aside"],
    );
    assert_eq!(totals(&dir), expected(1..=3), "nothing was counted twice");

    // Stale metadata: the newest three files damaged, the fallback is older than the state.
    let dir = ran_directory_job(4);
    let files = metadata_files(&dir);
    for f in &files[..3] {
        let data = std::fs::read(f).expect("read");
        std::fs::write(f, &data[..data.len() / 2]).expect("damage");
    }
    input_file(&dir, 5);
    let out = run(&dir, &[]);
    if out.status.success() {
        // The fallback knew every committed batch: an exact resume.
        assert_eq!(totals(&dir), expected(1..=5), "{}", describe(&out));
    } else {
        refused(
            &out,
            &["knows batches up to", "metadata-", "Restore the newer"],
        );
        assert_eq!(totals(&dir), expected(1..=4), "nothing was counted twice");
    }
    // Stale for sure: only the oldest kept file left, from the first batches.
    let dir = ran_directory_job(6);
    let files = metadata_files(&dir);
    for f in &files[..files.len() - 1] {
        std::fs::remove_file(f).expect("delete");
    }
    input_file(&dir, 7);
    let out = run(&dir, &[]);
    refused(
        &out,
        &[
            &*files[files.len() - 1].to_string_lossy(),
            "knows batches up to",
            "committed batch",
        ],
    );
    assert_eq!(totals(&dir), expected(1..=6));
}

#[test]
fn unreadable_metadata_files_huge_dev_zero_fifo_are_skipped_in_bounded_time() {
    let dir = ran_directory_job(2);
    let mut n = 2;
    for kind in ["sparse", "dev-zero", "fifo"] {
        let newest = seq_of(&metadata_files(&dir)[0]);
        let bogus = metadata_path(&dir, newest + 1);
        match kind {
            "sparse" => std::fs::File::create(&bogus)
                .and_then(|f| f.set_len(8 << 30))
                .expect("a sparse 8 GiB file"),
            "dev-zero" => std::os::unix::fs::symlink("/dev/zero", &bogus).expect("symlink"),
            _ => {
                let c = std::ffi::CString::new(bogus.to_string_lossy().as_bytes()).expect("path");
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
            }
        }
        n += 1;
        input_file(&dir, n);
        let started = Instant::now();
        let out = run(&dir, &[]);
        ok(&out);
        assert!(started.elapsed() < BOUND);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&*bogus.to_string_lossy()),
            "{kind}: the log names the file\n{stderr}"
        );
        assert_eq!(totals(&dir), expected(1..=n), "{kind}: an exact resume");
        let _ = std::fs::remove_file(&bogus);
    }
}

#[test]
fn hostile_metadata_values_with_a_valid_checksum_are_refused_naming_the_field() {
    let dir = ran_directory_job(2);
    let newest = metadata_files(&dir)[0].clone();
    let good = std::fs::read(&newest).expect("read");
    let body = read_body(&newest);
    let in_dir = dir.path().join("in");
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("next_batch", {
            let mut b = body.clone();
            b["next_batch"] = serde_json::json!(u64::MAX);
            b
        }),
        ("sources.input.files", {
            let mut b = body.clone();
            b["sources"]["input"]["files"] = serde_json::json!(["/dev/zero"]);
            b
        }),
        ("batches[0].inputs[0]", {
            let mut b = body.clone();
            let next = b["next_batch"].as_u64().expect("next_batch");
            b["batches"] = serde_json::json!([{
                "id": next - 1, "time": b["last_time"], "inputs": [{"kind": "wal", "from": 0, "to": 1u64 << 40}]
            }]);
            b
        }),
        ("batches[0].inputs[0]", {
            let mut b = body.clone();
            let next = b["next_batch"].as_u64().expect("next_batch");
            let outside = in_dir.join("../job.toml");
            b["batches"] = serde_json::json!([{
                "id": next - 1, "time": b["last_time"], "inputs": [{"kind": "files", "files": [outside]}]
            }]);
            b
        }),
        ("finished", {
            let mut b = body.clone();
            b["finished"] = serde_json::json!(1u64 << 40);
            b
        }),
    ];
    input_file(&dir, 3);
    for (field, hostile) in cases {
        write_body(&newest, &hostile);
        let out = run(&dir, &[]);
        refused(
            &out,
            &[&*newest.to_string_lossy(), &format!("`{field}`"), "restore"],
        );
    }
    std::fs::write(&newest, good).expect("put back");
    ok(&run(&dir, &[]));
    assert_eq!(
        totals(&dir),
        expected(1..=3),
        "the good metadata resumes exactly"
    );
}

#[test]
fn a_damaged_live_sst_is_restored_from_a_verified_data_checkpoint() {
    let dir = ran_directory_job(5);
    let data: Vec<PathBuf> = std::fs::read_dir(dir.path().join("ckpt/data"))
        .expect("list data")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(!data.is_empty(), "data checkpoints were made");
    for d in &data {
        assert!(
            d.join("SLUICE-CHECKSUMS").exists(),
            "{} is listed",
            d.display()
        );
    }
    let ssts: Vec<PathBuf> = std::fs::read_dir(dir.path().join("ckpt/state"))
        .expect("list state")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert!(!ssts.is_empty(), "the live state has table files");
    for sst in &ssts {
        let mut bytes = std::fs::read(sst).expect("read");
        for b in bytes.iter_mut().take(64) {
            *b ^= 0x5a;
        }
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(sst, bytes).expect("damage in place");
    }
    input_file(&dir, 6);
    let out = run(&dir, &[]);
    if !out.status.success() {
        // Found while a batch read it: the message says how to restore.
        refused(&out, &["damaged", "--restore-state"]);
        let out = run(&dir, &["--restore-state"]);
        ok(&out);
    }
    assert_eq!(totals(&dir), expected(1..=6), "{}", describe(&out));
    // The data checkpoints were copies: the damage did not reach them.
    ok(&run(&dir, &["--restore-state"]));
    input_file(&dir, 7);
    ok(&run(&dir, &[]));
    assert_eq!(totals(&dir), expected(1..=7));
}

/// Start the HTTP job, post `bodies` (each acknowledged), stop it with SIGTERM (exit 0).
fn http_round(dir: &JobDir, port: u16, bodies: &[&str], args: &[&str]) -> String {
    let (mut child, log) = dir.spawn_logged(args);
    wait_for("the ingest endpoint", || {
        log.lock().expect("log").contains("listening on http://")
            || child.try_wait().ok().flatten().is_some()
    });
    if let Some(status) = child.try_wait().expect("poll") {
        panic!(
            "the job ended at start: {status}\n{}",
            log.lock().expect("log")
        );
    }
    for body in bodies {
        let (code, _) = post(port, "/ingest/events", body.as_bytes()).expect("post");
        assert_eq!(code, 200);
    }
    std::thread::sleep(Duration::from_millis(400));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = child.wait().expect("wait");
    let text = log.lock().expect("log").clone();
    assert!(status.success(), "{text}");
    text
}

/// Start the HTTP job and expect it to refuse within [`BOUND`], naming `needles`.
fn http_refused(dir: &JobDir, needles: &[&str]) {
    let out = run_plain(dir, &[]);
    refused(&out, needles);
}

fn run_plain(dir: &JobDir, args: &[&str]) -> Output {
    let mut child = dir
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + BOUND;
    loop {
        if child.try_wait().expect("poll").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the job did not refuse within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_totals(dir: &JobDir) -> BTreeMap<String, i64> {
    totals(dir)
}

#[test]
fn a_write_ahead_log_shorter_than_sealed_or_deleted_is_refused_unless_the_loss_is_accepted() {
    // The log cut at a record boundary: it reads clean, but ends before what was sealed.
    let dir = JobDir::new();
    let port = free_port();
    dir.manifest(&http_job(port));
    http_round(&dir, port, &["a 1\n", "a 2\n", "b 5\n"], &[]);
    assert_eq!(
        http_totals(&dir),
        BTreeMap::from([("a".into(), 3), ("b".into(), 5)])
    );
    let wal = dir.path().join("ckpt/wal/events");
    let segment = std::fs::read_dir(&wal)
        .expect("list wal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .expect("a segment");
    let bytes = std::fs::read(&segment).expect("read");
    let first = 8 + u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    assert!(first < bytes.len(), "more than one record");
    std::fs::write(&segment, &bytes[..first]).expect("cut at a record boundary");
    // The log's own record of what it acknowledged (when it keeps one) catches it first.
    http_refused(&dir, &["ckpt/wal/events", "--accept-wal-loss"]);
    // Without that record, the checkpoint's sealed offsets do.
    for entry in std::fs::read_dir(&wal).expect("list wal") {
        let path = entry.expect("entry").path();
        if path.is_file() && path.extension().is_none_or(|e| e != "wal") {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    http_refused(
        &dir,
        &["ckpt/wal/events", "sealed log offsets", "--accept-wal-loss"],
    );

    // The whole folder deleted.
    std::fs::remove_dir_all(dir.path().join("ckpt/wal")).expect("delete wal");
    http_refused(
        &dir,
        &["ckpt/wal/events", "sealed log offsets", "--accept-wal-loss"],
    );
    // Knowingly: it goes on, says what is lost, and new records count once on top of the state.
    let log = http_round(&dir, port, &["a 10\n"], &["--accept-wal-loss"]);
    assert!(log.contains("bytes of sealed log are lost"), "{log}");
    assert_eq!(
        http_totals(&dir),
        BTreeMap::from([("a".into(), 13), ("b".into(), 5)])
    );
    // And the next start is clean.
    http_round(&dir, port, &["b 1\n"], &[]);
    assert_eq!(
        http_totals(&dir),
        BTreeMap::from([("a".into(), 13), ("b".into(), 6)])
    );
}

#[test]
fn a_poison_record_fails_every_restart_until_skip_batch_goes_past_it() {
    let dir = JobDir::new();
    dir.manifest(&directory_job(""));
    input_file(&dir, 1);
    input_file(&dir, 2);
    dir.file("in/f003.txt", "a 1000\nthis is not a number\n");
    input_file(&dir, 4);
    input_file(&dir, 5);
    let mut failed = None;
    for _ in 0..2 {
        let out = run(&dir, &[]);
        assert!(!out.status.success(), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let at = stderr
            .find("--skip-batch ")
            .unwrap_or_else(|| panic!("the error names --skip-batch\n{stderr}"));
        let id: u64 = stderr[at + 13..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a batch id after --skip-batch");
        assert!(
            failed.is_none_or(|f| f == id),
            "the same batch fails on every restart"
        );
        failed = Some(id);
    }
    let id = failed.expect("a failed batch").to_string();
    // Another batch than the next one cannot be skipped.
    let wrong = (failed.expect("id") + 5).to_string();
    refused(
        &run(&dir, &["--skip-batch", &wrong]),
        &["--skip-batch", "only the next batch"],
    );
    let out = run(&dir, &["--skip-batch", &id]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--skip-batch {id}: batch {id}")),
        "logged\n{stderr}"
    );
    assert_eq!(
        totals(&dir),
        expected([1, 2, 4, 5]),
        "every other record counted once; the skipped batch's none"
    );
    let body = read_body(&metadata_files(&dir)[0]);
    assert_eq!(body["version"], sluice_host::checkpoint::metadata::VERSION);
    assert_eq!(body["skipped"][0]["id"].to_string(), id, "recorded: {body}");
    // A later run goes on from there.
    input_file(&dir, 6);
    ok(&run(&dir, &[]));
    assert_eq!(totals(&dir), expected([1, 2, 4, 5, 6]));
}

#[test]
fn a_checkpoint_written_before_format_v2_still_loads() {
    let fixture = sluice_tests::root().join("tests/fixtures/checkpoint-v1");
    let dir = JobDir::new();
    copy_tree(&fixture.join("ckpt"), &dir.path().join("ckpt"));
    let port = free_port();
    let manifest = std::fs::read_to_string(fixture.join("job.toml")).expect("fixture manifest");
    dir.manifest(&manifest.replace("127.0.0.1:47123", &format!("127.0.0.1:{port}")));
    let log = http_round(&dir, port, &["a 1\nd 4\n"], &[]);
    assert!(
        log.contains("restored the data checkpoint of batch 22"),
        "{log}"
    );
    assert_eq!(
        http_totals(&dir),
        BTreeMap::from([
            ("a".into(), 6),
            ("b".into(), 10),
            ("c".into(), 15),
            ("d".into(), 4)
        ]),
        "{log}"
    );
    let body = read_body(&metadata_files(&dir)[0]);
    assert_eq!(
        body["version"],
        sluice_host::checkpoint::metadata::VERSION,
        "written in the new format from now on"
    );
}

/// A stateless job has no committed batch to guard it: its metadata, written before any
/// record is acknowledged, is what says which logged records were counted. With metadata/
/// deleted, a restart refuses instead of replaying the whole log into the sink again.
#[test]
fn deleted_metadata_of_a_stateless_receiver_job_is_refused_not_replayed() {
    let dir = JobDir::new();
    let port = free_port();
    dir.manifest(&format!(
        r#"[job]
name = "ingest"
batch_interval = "100ms"
checkpoint = "ckpt"

[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{port}"

[[sinks]]
kind = "text_files"
input = "events"
prefix = "out/lines"
"#
    ));
    http_round(&dir, port, &["a 1\n", "b 2\n"], &[]);
    assert_eq!(dir.output_lines("out/lines"), ["a 1", "b 2"]);
    std::fs::remove_dir_all(dir.path().join("ckpt/metadata")).expect("delete metadata");
    http_refused(
        &dir,
        &[
            "has no metadata",
            "ckpt/wal/events",
            "bytes of received records",
        ],
    );
    assert_eq!(
        dir.output_lines("out/lines"),
        ["a 1", "b 2"],
        "nothing replayed"
    );
}
