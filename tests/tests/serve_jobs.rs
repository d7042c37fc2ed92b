//! Jobs on a shared host: a real `host serve` on a free port of 127.0.0.1 with a temporary
//! data directory and two tenants, jobs submitted, fed and stopped over its API, the server
//! killed with SIGKILL and started again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_tests::serve::{ALICE, BOB, Server, UPPER, batches, json, request};
use sluice_tests::{udf, wait_for};

/// Every line of every whole batch folder `<dir>/out/up-*` holds, counted.
fn output(dir: &Path) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join("out")) else {
        return lines;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("up-") || !path.join("_SUCCESS").exists() {
            continue;
        }
        for part in std::fs::read_dir(&path)
            .expect("a batch folder")
            .filter_map(Result::ok)
        {
            if !part.file_name().to_string_lossy().starts_with("part-") {
                continue;
            }
            let text = std::fs::read_to_string(part.path()).expect("a part file");
            for line in text.lines() {
                *lines.entry(line.to_string()).or_insert(0) += 1;
            }
        }
    }
    lines
}

const INGEST: &str = "/api/v1/jobs/upper/ingest/lines";

/// Post `lines` one request each until one is not acknowledged; the acknowledged ones.
fn post_all(port: u16, lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut acked = Vec::new();
    for line in lines {
        match request(
            port,
            "POST",
            INGEST,
            Some(ALICE),
            format!("{line}\n").as_bytes(),
        ) {
            Ok((200, _)) => acked.push(line),
            other => {
                eprintln!("{line} not acknowledged: {other:?}");
                break;
            }
        }
    }
    acked
}

#[test]
fn a_served_job_takes_records_survives_kill_9_and_stays_stopped() {
    let mut server = Server::new(16);
    server.start();

    // Deploy `text`, then submit a job calling it.
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    server.expect("POST", "/api/v1/udfs/text", ALICE, &text, 201);
    let submitted = json(&server.expect("POST", "/api/v1/jobs", ALICE, UPPER.as_bytes(), 201));
    assert_eq!(submitted["name"], "upper", "{submitted}");
    assert_eq!(submitted["state"], "running", "{submitted}");
    // The same name again while it runs: 409.
    server.expect("POST", "/api/v1/jobs", ALICE, UPPER.as_bytes(), 409);

    // Records in through the host's own listener, acknowledged after the write-ahead log.
    let first: Vec<String> = (0..20).map(|i| format!("first-{i}")).collect();
    assert_eq!(post_all(server.port, first.iter().cloned()), first);
    let dir = server.job_dir("alice", "upper");
    wait_for("the first records in the output", || {
        first
            .iter()
            .all(|l| output(&dir).contains_key(&l.to_uppercase()))
    });

    // The list and the status show it, with the UDF version it runs.
    let list = json(&server.expect("GET", "/api/v1/jobs", ALICE, b"", 200));
    assert_eq!(list[0]["name"], "upper", "{list}");
    assert_eq!(list[0]["state"], "running", "{list}");
    let status = json(&server.expect("GET", "/api/v1/jobs/upper", ALICE, b"", 200));
    assert_eq!(status["udfs"][0]["spec"], "text#uppercase", "{status}");
    assert_eq!(status["udfs"][0]["version"], 1, "{status}");
    assert!(
        !status["batches"].as_array().expect("batches").is_empty(),
        "{status}"
    );

    // So do `host jobs` and `host status`, finding the server and token in the environment.
    let out = server.host(ALICE, &["jobs"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host jobs: {out:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("upper") && l.contains("running")),
        "{stdout}"
    );
    let out = server.host(ALICE, &["status", "upper"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host status: {out:?}");
    assert!(stdout.contains("text#uppercase version 1"), "{stdout}");
    assert!(stdout.contains("state:   running"), "{stdout}");
    let out = server.host(BOB, &["status", "upper"]);
    assert!(!out.status.success(), "bob's host status: {out:?}");
    // Its log lines: `host logs` for alice, 404 for bob.
    let out = server.host(ALICE, &["logs", "upper"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host logs: {out:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("batch done") && l.contains("records=")),
        "{stdout}"
    );
    server.expect("GET", "/api/v1/jobs/upper/logs", BOB, b"", 404);
    let out = server.host(BOB, &["logs", "upper"]);
    assert!(!out.status.success(), "bob's host logs: {out:?}");
    assert!(out.stdout.is_empty(), "nothing of alice's job: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no job named"),
        "{out:?}"
    );

    // Another tenant does not see it: 404 for its status, stop and ingest, and an empty list.
    server.expect("GET", "/api/v1/jobs/upper", BOB, b"", 404);
    server.expect("POST", "/api/v1/jobs/upper/stop", BOB, b"", 404);
    server.expect("POST", INGEST, BOB, b"bob was here\n", 404);
    assert_eq!(server.expect("GET", "/api/v1/jobs", BOB, b"", 200), "[]");
    // No token, a wrong one: 401.
    assert_eq!(
        server
            .call("GET", "/api/v1/jobs", None, b"")
            .expect("answer")
            .0,
        401
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/jobs/upper", Some("wrong"), b"")
            .expect("answer")
            .0,
        401
    );

    // kill -9 while records stream in.
    let port = server.port;
    let feeder = std::thread::spawn(move || post_all(port, (0..).map(|i| format!("second-{i}"))));
    wait_for("records of the second run in the output", || {
        output(&dir).keys().any(|l| l.starts_with("SECOND-"))
    });
    server.kill();
    let second = feeder.join().expect("the feeder");
    assert!(!second.is_empty(), "no record acknowledged before the kill");
    eprintln!("{} records acknowledged before the kill", second.len());

    // Started again, the job resumes from its checkpoint by itself.
    server.start();
    let status = json(&server.expect("GET", "/api/v1/jobs/upper", ALICE, b"", 200));
    assert_eq!(status["state"], "running", "{status}\n{}", server.log());
    let third: Vec<String> = (0..10).map(|i| format!("third-{i}")).collect();
    assert_eq!(post_all(server.port, third.iter().cloned()), third);
    let acked: Vec<String> = first.iter().chain(&second).chain(&third).cloned().collect();
    wait_for("every acknowledged record in the output", || {
        let out = output(&dir);
        acked.iter().all(|l| out.contains_key(&l.to_uppercase()))
    });
    // Exactly once: no acknowledged line twice.
    let out = output(&dir);
    for line in &acked {
        assert_eq!(
            out[&line.to_uppercase()],
            1,
            "{line} in the output more than once"
        );
    }

    // Stop it: stopped, and a restart of the host leaves it stopped.
    let stopped = json(&server.expect(
        "POST",
        "/api/v1/jobs/upper/stop?graceful=true",
        ALICE,
        b"",
        200,
    ));
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    server.kill();
    server.start();
    let status = json(&server.expect("GET", "/api/v1/jobs/upper", ALICE, b"", 200));
    assert_eq!(status["state"], "stopped", "{status}");
    server.expect("POST", INGEST, ALICE, b"late\n", 404);
}

#[test]
fn a_served_job_stays_in_its_folder_and_its_quota() {
    let mut server = Server::new(1);
    server.start();
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    server.expect("POST", "/api/v1/udfs/text", ALICE, &text, 201);

    // Paths out of the job's folder, a socket source, a bad job name: 400, nothing started.
    let escape = UPPER.replace("out/up", "../../../escaped/up");
    let answer = json(&server.expect("POST", "/api/v1/jobs", ALICE, escape.as_bytes(), 400));
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("outside the job's folder")),
        "{answer}"
    );
    let absolute = UPPER.replace("out/up", "/tmp/escaped/up");
    server.expect("POST", "/api/v1/jobs", ALICE, absolute.as_bytes(), 400);
    let traversal = UPPER.replace("name = \"upper\"", "name = \"..\"");
    server.expect("POST", "/api/v1/jobs", ALICE, traversal.as_bytes(), 400);
    let socket = UPPER.replace(
        "kind = \"http\"\naddress = \"127.0.0.1:9\"",
        "kind = \"socket\"\nhost = \"127.0.0.1\"\nport = 9",
    );
    server.expect("POST", "/api/v1/jobs", ALICE, socket.as_bytes(), 400);
    let garbage = server.expect("POST", "/api/v1/jobs", ALICE, b"[job\nname = ", 400);
    assert!(json(&garbage)["hint"].is_string(), "{garbage}");
    assert_eq!(server.expect("GET", "/api/v1/jobs", ALICE, b"", 200), "[]");
    // A UDF of another tenant is not found.
    server.expect("POST", "/api/v1/jobs", BOB, UPPER.as_bytes(), 400);

    // max_jobs = 1: the second job is refused naming the quota.
    server.expect("POST", "/api/v1/jobs", ALICE, UPPER.as_bytes(), 201);
    let second = UPPER.replace("name = \"upper\"", "name = \"upper2\"");
    let answer = json(&server.expect("POST", "/api/v1/jobs", ALICE, second.as_bytes(), 403));
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_jobs = 1")),
        "{answer}"
    );
    // Stopped (not gracefully, with `host stop`), it no longer counts.
    let out = server.host(ALICE, &["stop", "upper"]);
    assert!(out.status.success(), "host stop: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job 'upper': stopped"),
        "{out:?}"
    );
    let path = server.folder().join("second.toml");
    std::fs::write(&path, &second).expect("write second.toml");
    let path = path.to_str().expect("a UTF-8 path");
    let out = server.host(ALICE, &["submit", path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host submit: {out:?}");
    assert!(
        stdout.contains("submitted job 'upper2': running"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/api/v1/jobs/upper2/ingest/lines"),
        "{stdout}"
    );
    // Over the quota again, `host submit` says so and what to do.
    let third = UPPER.replace("name = \"upper\"", "name = \"upper3\"");
    let path = server.folder().join("third.toml");
    std::fs::write(&path, &third).expect("write third.toml");
    let out = server.host(ALICE, &["submit", path.to_str().expect("a UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("max_jobs = 1") && stderr.contains("hint: stop a job"),
        "{stderr}"
    );
}

/// `host deploy` of a new version while records flow: the running job switches at a batch
/// boundary, every acknowledged record comes out exactly once, each batch wholly from one
/// version, and the status shows the new version.
#[test]
fn deploying_a_new_version_hot_reloads_a_running_job() {
    let mut server = Server::new(16);
    server.start();
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    server.expect("POST", "/api/v1/udfs/text", ALICE, &text, 201);
    server.expect("POST", "/api/v1/jobs", ALICE, UPPER.as_bytes(), 201);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let (port, stop) = (server.port, stop.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                acked.extend(post_all(port, std::iter::once(format!("hot-{i}"))));
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            acked
        })
    };
    let dir = server.job_dir("alice", "upper");
    wait_for("version 1's output", || {
        output(&dir)
            .keys()
            .filter(|l| l.starts_with("HOT-"))
            .count()
            >= 20
    });
    let v2 = sluice_tests::test_guest("text_v2");
    let out = server.host(
        ALICE,
        &[
            "deploy",
            v2.to_str().expect("a UTF-8 path"),
            "--name",
            "text",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host deploy: {out:?}");
    assert!(stdout.contains("deployed as version 2"), "{stdout}");
    assert!(
        stdout.contains("job 'upper': text_v2#uppercase run version 2 from its next batch")
            || stdout.contains("job 'upper': text#uppercase run version 2 from its next batch"),
        "{stdout}"
    );
    wait_for("version 2's output", || {
        output(&dir).keys().filter(|l| l.starts_with("v2:")).count() >= 20
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = poster.join().expect("the poster");
    wait_for("every acknowledged record", || {
        let out = output(&dir);
        acked.iter().all(|l| {
            let up = l.to_uppercase();
            out.contains_key(&up) || out.contains_key(&format!("v2:{up}"))
        })
    });

    // Exactly once, in one version or the other.
    let out = output(&dir);
    for line in &acked {
        let up = line.to_uppercase();
        let n =
            out.get(&up).copied().unwrap_or(0) + out.get(&format!("v2:{up}")).copied().unwrap_or(0);
        assert_eq!(n, 1, "{line}: {out:?}");
    }
    assert_eq!(out.values().sum::<usize>(), acked.len(), "nothing else");
    // Each batch wholly v1 or wholly v2, and no v1 batch after the first v2 one.
    let versions: Vec<bool> = batches(&dir, "up")
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(|b| {
            let v2 = b.iter().filter(|l| l.starts_with("v2:")).count();
            assert!(v2 == 0 || v2 == b.len(), "a batch mixes versions: {b:?}");
            v2 > 0
        })
        .collect();
    let first = versions.iter().position(|v| *v).expect("a v2 batch");
    assert!(
        first > 0 && versions[first..].iter().all(|v| *v),
        "{versions:?}"
    );
    let status = json(&server.expect("GET", "/api/v1/jobs/upper", ALICE, b"", 200));
    assert_eq!(status["udfs"][0]["version"], 2, "{status}");
}
