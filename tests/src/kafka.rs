//! A real Kafka-protocol broker for tests: noida-db (PyPI, pinned by `scripts/setup-broker`),
//! started on a free port of 127.0.0.1 with a temporary data folder and killed when dropped.
//!
//! What it does and does not do (issue 17's probe): 3-partition topics, idempotent and
//! transactional producers, `read_committed` readers, offsets for times, group offsets and a
//! fenced zombie producer all behave. It does not enforce `transaction.timeout.ms` (a crashed
//! producer's open transaction blocks `read_committed` readers until a producer with the same
//! `transactional.id` starts again), idle consumers make it spin (close them promptly), it
//! deletes records with old timestamps at once (create topics with `retention.ms=-1`) and keeps
//! its data in memory only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The venv `scripts/setup-broker` makes.
fn venv() -> PathBuf {
    std::env::var_os("SLUICE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")))
        .expect("HOME or SLUICE_CACHE is set")
        .join("venv-broker")
}

/// The broker's binary inside its Python package (not the console script, which leaves its
/// child running when killed).
fn binary() -> PathBuf {
    let python = venv().join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import noida_db,os;print(os.path.join(os.path.dirname(noida_db.__file__),'noida-db'))",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the Kafka tests' broker is not installed ({} cannot run: {e}); run scripts/setup-broker (scripts/test does)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "the Kafka tests' broker is not installed in {}: {}; run scripts/setup-broker",
        venv().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A running broker.
pub struct Broker {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Broker {
    /// Start one and wait until it accepts connections (at most 30 s).
    pub fn start() -> Self {
        let data = tempfile::tempdir().expect("a temporary folder");
        let port = free_port();
        let child = Command::new(binary())
            .arg("start")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--host", "127.0.0.1", "--only", "kafka", "--kafka-port"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        let mut broker = Self {
            child,
            port,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("the broker exited ({status}) before it listened on {port}");
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
