//! Error policy per stream and dead letters (issue 16, point 5), through the real `host`
//! binary: a served job isolating 3 poison records among 100 000 (one trap, two guest errors),
//! its letters kept across `kill -9`, listed and replayed per tenant; `host run` jobs with the
//! halving path (an error without `record-index`), a filter, `retry(n)`, `skip_batch` and
//! `fail` per stream; manifests refused with their line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sluice_tests::serve::{ALICE, BOB, Server, json};
use sluice_tests::{JobDir, describe, host_bin, test_guest, wait_for};

/// The dead letters of alice's job `poisoned`.
fn letters(server: &Server) -> Vec<serde_json::Value> {
    let answer = server.expect("GET", "/api/v1/jobs/poisoned/dead-letters", ALICE, b"", 200);
    match json(&answer) {
        serde_json::Value::Array(letters) => letters,
        other => panic!("not a list: {other}"),
    }
}

/// Every line of the whole batch folders `<dir>/<prefix>-*`, counted.
fn output(dir: &Path, prefix: &str) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return lines;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{prefix}-")) || !path.join("_SUCCESS").exists() {
            continue;
        }
        for part in std::fs::read_dir(&path).expect("a batch folder").flatten() {
            if part.file_name().to_string_lossy().starts_with("part-") {
                let text = std::fs::read_to_string(part.path()).expect("a part file");
                for line in text.lines() {
                    *lines.entry(line.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
    lines
}

/// The line (1-based) of the first line of `text` starting with `start`, from line `from` on.
fn line_of(text: &str, start: &str, from: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.starts_with(start))
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("no line starting with {start:?}"))
}

const N: usize = 100_000;
/// Record index → its poison: one trap, two guest errors.
const POISON: [(usize, &str, &str); 3] = [
    (12_345, "TRAP", "trap"),
    (50_000, "BAD", "guest"),
    (70_001, "BAD", "guest"),
];

fn record(i: usize) -> String {
    match POISON.iter().find(|(p, ..)| *p == i) {
        Some((_, word, _)) => format!("rec-{i} {word}"),
        None => format!("rec-{i}"),
    }
}

const SERVED: &str = r#"
[job]
name = "poisoned"
batch_interval = "500ms"
partitions = 4

[[sources]]
name = "lines"
kind = "http"
address = "127.0.0.1:9"

[[streams]]
name = "checked"
op = "map"
input = "lines"
udf = "poison#check"
on_error = "dead_letter"

[[sinks]]
kind = "text_files"
input = "checked"
prefix = "out/ok"
"#;

#[test]
fn a_served_job_dead_letters_3_poison_records_of_100_000_keeps_them_across_kill_9_and_replays_them()
{
    let mut server = Server::new(16);
    server.start();
    let poison = std::fs::read(test_guest("poison")).expect("poison.wasm");
    server.expect("POST", "/api/v1/udfs/poison", ALICE, &poison, 201);

    // Refused at submit, naming the line: dead_letter where records cannot be isolated, and a
    // value that is not a policy.
    let partitions = SERVED.replace("op = \"map\"", "op = \"map_partitions\"");
    let answer = server.expect("POST", "/api/v1/jobs", ALICE, partitions.as_bytes(), 400);
    let line = line_of(&partitions, "[[streams]]", 0);
    assert!(answer.contains(&format!("job.toml:{line}:")), "{answer}");
    assert!(
        answer.contains("does not apply to map_partitions")
            && answer.contains("map, flat_map, filter"),
        "{answer}"
    );
    let malformed = SERVED.replace("\"dead_letter\"", "\"retry(x)\"");
    let answer = server.expect("POST", "/api/v1/jobs", ALICE, malformed.as_bytes(), 400);
    let line = line_of(&malformed, "on_error", 0);
    assert!(answer.contains(&format!("job.toml:{line}:")), "{answer}");
    assert!(
        answer.contains("retry(N)") && answer.contains("dead_letter"),
        "{answer}"
    );

    server.expect("POST", "/api/v1/jobs", ALICE, SERVED.as_bytes(), 201);
    // One request: one block, one batch of 100 000 records.
    let body: String = (0..N).map(|i| record(i) + "\n").collect();
    let answer = server.expect(
        "POST",
        "/api/v1/jobs/poisoned/ingest/lines",
        ALICE,
        body.as_bytes(),
        200,
    );
    assert!(answer.contains("100000"), "{answer}");
    let out = server.data().join("tenants/alice/jobs/poisoned/out");
    wait_for("99 997 results", || {
        output(&out, "ok").values().sum::<usize>() == N - 3
    });
    // The batch report counts them (the status keeps the last 10 batches of 500 ms).
    let status = json(&server.expect("GET", "/api/v1/jobs/poisoned", ALICE, b"", 200));
    let counted: u64 = status["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .filter_map(|b| b["dead_letters"].as_u64())
        .sum();
    assert_eq!(counted, 3, "{status}");
    let results = output(&out, "ok");
    for i in [0, 12_344, 12_346, 49_999, 50_001, 70_000, 70_002, N - 1] {
        assert_eq!(results.get(&format!("ok:rec-{i}")), Some(&1), "record {i}");
    }
    assert!(
        results
            .keys()
            .all(|l| !l.contains("TRAP") && !l.contains("BAD"))
    );

    let check = |letters: &[serde_json::Value]| {
        assert_eq!(letters.len(), 3, "{letters:?}");
        let batch_time = &letters[0]["batch_time"];
        for (letter, (i, word, kind)) in letters.iter().zip(POISON) {
            assert_eq!(letter["value"], format!("rec-{i} {word}"), "{letter}");
            assert_eq!(letter["kind"], kind, "{letter}");
            assert_eq!(letter["stream"], "checked", "{letter}");
            assert_eq!(letter["udf"], "poison#check", "{letter}");
            assert_eq!(letter["version"], 1, "{letter}");
            assert_eq!(letter["hash"].as_str().map(str::len), Some(64), "{letter}");
            assert_eq!(&letter["batch_time"], batch_time, "one batch: {letter}");
            // 100 000 records in 4 partitions of 25 000, in order.
            assert_eq!(letter["partition"], i / 25_000, "{letter}");
            assert_eq!(letter["position"], i % 25_000, "{letter}");
        }
        assert!(
            letters[0]["error"]
                .as_str()
                .unwrap_or("")
                .contains("poison record")
        );
        assert!(
            letters[1]["error"]
                .as_str()
                .unwrap_or("")
                .contains("bad record")
        );
    };
    check(&letters(&server));
    let metrics = server.log();
    assert!(metrics.contains("dead-lettered"), "the isolation is logged");

    // Another tenant: 404 for the letters and the replay.
    server.expect("GET", "/api/v1/jobs/poisoned/dead-letters", BOB, b"", 404);
    server.expect(
        "POST",
        "/api/v1/jobs/poisoned/dead-letters/replay",
        BOB,
        b"",
        404,
    );
    let out_bob = server.host(BOB, &["dlq", "poisoned"]);
    assert!(!out_bob.status.success(), "{}", describe(&out_bob));
    assert!(out_bob.stdout.is_empty(), "{}", describe(&out_bob));

    // kill -9 after the letters are written, start again: still exactly 3, no result twice.
    server.kill();
    server.start();
    wait_for("the job to run again", || {
        server
            .call("GET", "/api/v1/jobs/poisoned", Some(ALICE), b"")
            .is_ok_and(|(s, b)| s == 200 && b.contains("\"running\""))
    });
    check(&letters(&server));
    assert!(output(&out, "ok").values().all(|&n| n == 1));

    // `host dlq`: the table.
    let listed = server.host(ALICE, &["dlq", "poisoned"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", describe(&listed));
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stdout.contains("poison#check@1") && stdout.contains("rec-12345 TRAP"),
        "{stdout}"
    );

    // Replay through version 1: they fail again. Deploy the fix as version 2: they pass.
    let again = server.host(ALICE, &["dlq", "replay", "poisoned", "--udf-version", "1"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        stdout.contains("0 passed (marked replayed), 3 failed again"),
        "{stdout}"
    );
    let fixed = std::fs::read(test_guest("poison_fixed")).expect("poison_fixed.wasm");
    server.expect("POST", "/api/v1/udfs/poison", ALICE, &fixed, 201);
    let replayed = json(&server.expect(
        "POST",
        "/api/v1/jobs/poisoned/dead-letters/replay",
        ALICE,
        b"",
        200,
    ));
    assert_eq!(replayed["passed"], 3, "{replayed}");
    assert_eq!(replayed["letters"][0]["version"], 2, "{replayed}");
    assert_eq!(
        replayed["letters"][0]["output"][0], "fixed:rec-12345 TRAP",
        "{replayed}"
    );
    let letters = letters(&server);
    assert!(
        letters
            .iter()
            .all(|l| l["replayed"] == true && l["replayed_with"] == 2)
    );
    // A second replay has nothing left to run.
    let replayed = json(&server.expect(
        "POST",
        "/api/v1/jobs/poisoned/dead-letters/replay",
        ALICE,
        b"",
        200,
    ));
    assert_eq!(replayed["letters"].as_array().map(Vec::len), Some(0));
}

const LOCAL: &str = r#"
[job]
name = "poisoned"
batch_interval = "100ms"
partitions = 3

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "checked"
op = "map"
input = "lines"
udf = "poison#check_blind"
on_error = "dead_letter"

[[streams]]
name = "kept"
op = "filter"
input = "lines"
udf = "poison#keep"
on_error = "dead_letter"

[[sinks]]
kind = "text_files"
input = "checked"
prefix = "out/ok"

[[sinks]]
kind = "text_files"
input = "kept"
prefix = "out/kept"
"#;

#[test]
fn host_run_finds_records_without_record_index_by_halving_and_lists_and_replays_them_locally() {
    let job = JobDir::new();
    job.manifest(LOCAL);
    let lines: Vec<String> = (0..3000)
        .map(|i| match i {
            7 => "a TRAP".to_string(),
            1500 | 1501 => format!("{i} BAD"),
            i if i % 10 == 0 => format!("drop {i}"),
            i => format!("line {i}"),
        })
        .collect();
    job.file("in/a.txt", lines.join("\n") + "\n");
    let out = job.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let ok = output(&job.path().join("out"), "ok");
    assert_eq!(ok.values().sum::<usize>(), 2997);
    assert!(ok.contains_key("ok:line 1") && ok.contains_key("ok:drop 1490"));
    let kept = output(&job.path().join("out"), "kept");
    // The "drop" lines (0, 10, … 2990 but 1500) and the 3 poison records are not kept.
    let dropped = lines.iter().filter(|l| l.starts_with("drop")).count();
    assert_eq!(dropped, 299);
    assert_eq!(kept.values().sum::<usize>(), 3000 - dropped - 3);
    assert!(kept.contains_key("line 1") && !kept.contains_key("drop 10"));

    let dlq = |args: &[&str]| {
        let out = Command::new(host_bin())
            .arg("dlq")
            .args(args)
            .arg("--dir")
            .arg(job.path())
            .env("SLUICE_COMPONENT_CACHE", job.path().join("cache"))
            .output()
            .expect("run host dlq");
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&dlq(&["poisoned", "--json"])).expect("JSON");
    assert_eq!(listed.len(), 6, "{listed:?}");
    for stream in ["checked", "kept"] {
        let values: Vec<&str> = listed
            .iter()
            .filter(|l| l["stream"] == stream)
            .filter_map(|l| l["value"].as_str())
            .collect();
        assert_eq!(values, ["a TRAP", "1500 BAD", "1501 BAD"], "{stream}");
    }
    let blind = listed
        .iter()
        .find(|l| l["stream"] == "checked" && l["value"] == "1500 BAD")
        .expect("a letter");
    assert_eq!(blind["kind"], "guest");
    assert!(
        !blind["error"]
            .as_str()
            .unwrap_or("")
            .contains("input record"),
        "{blind}"
    );

    // Replay through a folder where `poison` is the fixed component.
    let fixed = job.path().join("fixed");
    std::fs::create_dir_all(&fixed).expect("a folder");
    std::fs::copy(test_guest("poison_fixed"), fixed.join("poison.wasm")).expect("copy");
    let fixed_arg = fixed.to_string_lossy().into_owned();
    let stdout = dlq(&["replay", "poisoned", "--udfs", &fixed_arg]);
    assert!(
        stdout.contains("6 passed (marked replayed), 0 failed again"),
        "{stdout}"
    );
    assert!(stdout.contains("fixed:a TRAP"), "{stdout}");
    assert!(dlq(&["poisoned"]).matches("(replayed)").count() == 6);
}

fn policy_job(on_error: &str, job_default: &str) -> JobDir {
    let job = JobDir::new();
    job.manifest(&format!(
        r#"
[job]
name = "policy"
batch_interval = "100ms"
partitions = 2
on_udf_error = "{job_default}"

[[sources]]
name = "lines"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "checked"
op = "map"
input = "lines"
udf = "poison#check"
on_error = "{on_error}"

[[sinks]]
kind = "text_files"
input = "checked"
prefix = "out/ok"
"#
    ));
    job.file("in/1.txt", "good 1\ngood 2\n");
    job.file("in/2.txt", "good 3\nBAD 4\n");
    job
}

#[test]
fn retry_skip_batch_and_fail_per_stream() {
    // retry(2): the failing call runs twice more, each retry logged, then the job fails.
    let job = policy_job("retry(2)", "skip_batch");
    let out = job.run_until_idle();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains("retry 1 of 2") && stderr.contains("retry 2 of 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("retry 3 of"), "{stderr}");

    // skip_batch on the stream over the job's fail: the poisoned batch is skipped, the job
    // ends well with the other batch's output.
    let job = policy_job("skip_batch", "fail");
    let out = job.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let ok = output(&job.path().join("out"), "ok");
    assert_eq!(
        ok.keys().cloned().collect::<Vec<_>>(),
        ["ok:good 1", "ok:good 2"],
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skip_batch"),
        "{}",
        describe(&out)
    );

    // fail on the stream over the job's skip_batch: the job fails.
    let job = policy_job("fail", "skip_batch");
    let out = job.run_until_idle();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad record"),
        "{}",
        describe(&out)
    );

    // retry(N) where a retry would change state twice: refused, naming the stream's line.
    let job = JobDir::new();
    let text = r#"
[job]
name = "policy"

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "sums"
op = "update_state_by_key"
input = "lines"
udf = "state#running_total"
on_error = "retry(3)"

[[sinks]]
kind = "print"
input = "sums"
"#;
    job.manifest(text);
    let out = job
        .command(&["--check"])
        .output()
        .expect("host run --check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    let line = line_of(text, "[[streams]]", 0);
    assert!(
        stderr.contains(&format!("job.toml:{line}:")) && stderr.contains("keeps state"),
        "{stderr}"
    );
}
