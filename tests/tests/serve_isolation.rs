//! Tenant isolation on a shared host: a real `host serve` on a free port of 127.0.0.1 where
//! `mallory` (quotas `udf_timeout = "300ms"`, `udf_memory = "32MiB"`) runs an infinite loop and
//! a memory bomb while `bob` (default quotas) runs a steady job. Mallory's jobs fail with her
//! own limits named, both when the component was just deployed and after the host was killed
//! with SIGKILL and its jobs resumed; bob's job keeps running and produces every record.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_tests::{free_port, host_bin, part_lines, spawn_logged, test_guest, udf, wait_for};

const MALLORY: &str = "mallory-token-0123456789";
const BOB: &str = "bob-token-9876543210";

struct Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let hash = sluice_host::server::tenants::hash_token;
        std::fs::write(
            dir.path().join("host.toml"),
            format!(
                "[[tenants]]\nname = \"mallory\"\ntoken_sha256 = \"{}\"\n[tenants.quotas]\nudf_timeout = \"300ms\"\nudf_memory = \"32MiB\"\n\n[[tenants]]\nname = \"bob\"\ntoken_sha256 = \"{}\"\n",
                hash(MALLORY),
                hash(BOB)
            ),
        )
        .expect("write host.toml");
        Self {
            dir,
            port: free_port(),
            child: None,
            log: Arc::default(),
        }
    }

    fn start(&mut self) {
        let (child, log) = spawn_logged(
            Command::new(host_bin())
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("--data-dir")
                .arg(self.dir.path().join("data"))
                .arg("--config")
                .arg(self.dir.path().join("host.toml"))
                .env("SLUICE_COMPONENT_CACHE", self.dir.path().join("cache"))
                .env("SLUICE_LOG", "info"),
        );
        self.child = Some(child);
        self.log = log;
        wait_for("host serve to answer", || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("host serve exited ({status}):\n{}", self.log());
            }
            request(self.port, "GET", "/api/v1/jobs", BOB, b"").is_ok()
        });
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 host serve");
            child.wait().expect("reap host serve");
        }
    }

    fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn expect(&self, method: &str, path: &str, token: &str, body: &[u8], status: u16) -> String {
        let (got, answer) = request(self.port, method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }

    fn status(&self, token: &str, job: &str) -> serde_json::Value {
        json(&self.expect("GET", &format!("/api/v1/jobs/{job}"), token, b"", 200))
    }

    /// Wait until `job` of `token`'s tenant failed; its error and how long that took.
    fn failure(&self, token: &str, job: &str) -> (String, Duration) {
        let start = Instant::now();
        let mut error = String::new();
        wait_for(&format!("job {job} to fail"), || {
            let status = self.status(token, job);
            if status["state"] == "failed" {
                error = status["error"].as_str().unwrap_or_default().to_string();
                true
            } else {
                false
            }
        });
        (error, start.elapsed())
    }

    fn job_dir(&self, tenant: &str, job: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/tenants")
            .join(tenant)
            .join("jobs")
            .join(job)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
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
            match request(port, "POST", path, BOB, format!("{line}\n").as_bytes()) {
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
    let mut server = Server::new();
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
    let (error, took) = server.failure(MALLORY, "bomb");
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
    server.kill9();
    server.start();
    assert_eq!(server.status(MALLORY, "spin")["state"], "running");
    assert_eq!(server.status(MALLORY, "bomb")["state"], "failed");
    assert_eq!(server.status(BOB, "steady")["state"], "running");
    let second: Vec<String> = (0..40).map(|i| format!("second-{i}")).collect();
    let feeding = feed_bob(server.port, second.clone());
    server.expect(
        "POST",
        "/api/v1/jobs/spin/ingest/lines",
        MALLORY,
        b"x\n",
        200,
    );
    let (error, took) = server.failure(MALLORY, "spin");
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
    let status = server.status(BOB, "steady");
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
