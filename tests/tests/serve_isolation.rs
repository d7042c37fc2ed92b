//! Tenant isolation on a shared host: a real `host serve` on a free port of 127.0.0.1 where
//! `mallory` (tenant `alice` of the test server, quotas `udf_timeout = "300ms"`, `udf_memory = "32MiB"`) runs an infinite loop and
//! a memory bomb while `bob` (default quotas) runs a steady job. Mallory's jobs fail with her
//! own limits named, both when the component was just deployed and after the host was killed
//! with SIGKILL and its jobs resumed; bob's job keeps running and produces every record.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tests::serve::{ALICE, BOB, Server, json, request, two_tenants};
use sluice_tests::{host_bin, part_lines, test_guest, udf, wait_for};

/// The runaway tenant (`alice` of the shared test server, with small quotas).
const MALLORY: &str = ALICE;

/// A host whose tenant `alice` (mallory here) has a 300 ms deadline and 32 MiB per instance.
fn server() -> Server {
    Server::with_config(Some(&two_tenants(
        "udf_timeout = \"300ms\"\nudf_memory = \"32MiB\"",
        "",
    )))
}

fn status(server: &Server, token: &str, job: &str) -> serde_json::Value {
    json(&server.expect("GET", &format!("/api/v1/jobs/{job}"), token, b"", 200))
}

/// Wait until `job` of `token`'s tenant failed; its error and how long that took.
fn failure(server: &Server, token: &str, job: &str) -> (String, Duration) {
    let start = Instant::now();
    let mut error = String::new();
    wait_for(&format!("job {job} to fail"), || {
        let status = status(server, token, job);
        if status["state"] == "failed" {
            error = status["error"].as_str().unwrap_or_default().to_string();
            true
        } else {
            false
        }
    });
    (error, start.elapsed())
}

/// A job reading http source `lines`, mapping it with `udf`, writing `out/out-*`.
fn manifest(name: &str, udf: &str) -> String {
    format!(
        "[job]\nname = \"{name}\"\nbatch_interval = \"200ms\"\n\n[[sources]]\nname = \"lines\"\nkind = \"http\"\naddress = \"127.0.0.1:9\"\n\n[[streams]]\nname = \"m\"\nop = \"map\"\ninput = \"lines\"\nudf = \"{udf}\"\n\n[[sinks]]\nkind = \"text_files\"\ninput = \"m\"\nprefix = \"out/out\"\n"
    )
}

/// Every line of the whole batches of `<dir>/out/out-*`, counted.
fn output(dir: &Path) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join("out")) else {
        return lines;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.path().join("_SUCCESS").exists() {
            for line in part_lines(&entry.path()) {
                *lines.entry(line).or_insert(0) += 1;
            }
        }
    }
    lines
}

/// Post bob's `lines` one request each, on another thread; the acknowledged ones.
fn feed_bob(port: u16, lines: Vec<String>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in lines {
            let path = "/api/v1/jobs/steady/ingest/lines";
            match request(
                port,
                "POST",
                path,
                Some(BOB),
                format!("{line}\n").as_bytes(),
            ) {
                Ok((200, _)) => acked.push(line),
                other => panic!("bob's {line} not acknowledged: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(20)); // a steady trickle, not a flood
        }
        acked
    })
}

#[test]
fn a_runaway_tenant_hits_its_own_limits_and_the_other_tenant_loses_nothing() {
    let mut server = server();
    server.start();
    let hostile = std::fs::read(test_guest("hostile")).expect("read hostile.wasm");
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    server.expect("POST", "/api/v1/udfs/hostile", MALLORY, &hostile, 201);
    server.expect("POST", "/api/v1/udfs/text", BOB, &text, 201);
    for (token, job, udf) in [
        (BOB, "steady", "text#uppercase"),
        (MALLORY, "bomb", "hostile#bomb"),
        (MALLORY, "spin", "hostile#spin"),
    ] {
        server.expect(
            "POST",
            "/api/v1/jobs",
            token,
            manifest(job, udf).as_bytes(),
            201,
        );
    }

    // The memory bomb, just deployed: its batch fails at mallory's 32 MiB, not the host's
    // 256 MiB; bob's records flow meanwhile.
    let first: Vec<String> = (0..40).map(|i| format!("first-{i}")).collect();
    let feeding = feed_bob(server.port, first.clone());
    server.expect(
        "POST",
        "/api/v1/jobs/bomb/ingest/lines",
        MALLORY,
        b"x\n",
        200,
    );
    let (error, took) = failure(&server, MALLORY, "bomb");
    assert!(
        error.contains("past the limit of 32MiB (udf memory)"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(20),
        "the bomb failed after {took:?}"
    );
    assert_eq!(feeding.join().expect("bob's feeder"), first);

    // Killed and started again: the spin job resumes with mallory's limits (from the
    // restored registry); the failed bomb job stays failed.
    server.kill();
    server.start();
    assert_eq!(status(&server, MALLORY, "spin")["state"], "running");
    assert_eq!(status(&server, MALLORY, "bomb")["state"], "failed");
    assert_eq!(status(&server, BOB, "steady")["state"], "running");
    let second: Vec<String> = (0..40).map(|i| format!("second-{i}")).collect();
    let feeding = feed_bob(server.port, second.clone());
    server.expect(
        "POST",
        "/api/v1/jobs/spin/ingest/lines",
        MALLORY,
        b"x\n",
        200,
    );
    let (error, took) = failure(&server, MALLORY, "spin");
    assert!(
        error.contains("CPU deadline of 300ms (udf call_timeout)"),
        "{error}"
    );
    // Interrupted at its own 300 ms (the host's default is 10 s): a batch interval, the
    // deadline and a poll, with room for a slow machine.
    assert!(
        took < Duration::from_secs(8),
        "the loop failed after {took:?}"
    );
    assert_eq!(feeding.join().expect("bob's feeder"), second);

    // Bob's job ran on: every record of both rounds once, uppercased.
    let dir = server.job_dir("bob", "steady");
    let expected: BTreeMap<String, usize> = first
        .iter()
        .chain(&second)
        .map(|l| (l.to_uppercase(), 1))
        .collect();
    wait_for("bob's records in his output", || output(&dir) == expected);
    let status = status(&server, BOB, "steady");
    assert_eq!(status["state"], "running", "{status}");
    assert!(status["error"].is_null(), "{status}");
}

/// `host bench noisy` in a short mode: the report is complete and tenant b lost nothing (no
/// timing is asserted: the figures are the benchmark's, see README.md).
#[test]
fn the_noisy_neighbour_benchmark_reports_and_loses_nothing() {
    let udfs = udf("text");
    let guests = test_guest("hostile");
    let dir = |p: &Path| p.parent().expect("a folder").to_path_buf();
    let out = Command::new(host_bin())
        .args(["bench", "noisy", "--seconds", "3", "--udfs"])
        .arg(dir(&udfs))
        .arg("--guests")
        .arg(dir(&guests))
        .output()
        .expect("run host bench noisy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "b batch processing, baseline:",
        "b batch processing, under noise:",
        "p99 ratio:",
        "loop runs",
        "memory bombs",
        "slow compiles refused",
    ] {
        assert!(stdout.contains(part), "no {part:?} in:\n{stdout}");
    }
    let records = stdout
        .lines()
        .find(|l| l.starts_with("b records:"))
        .unwrap_or_else(|| panic!("no record count in:\n{stdout}"));
    let numbers: Vec<u64> = records
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        numbers.len() >= 2 && numbers[0] > 0 && numbers[0] == numbers[1],
        "{records}"
    );
    assert!(
        records.contains("none lost") && records.contains("job running"),
        "{records}"
    );
}
