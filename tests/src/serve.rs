//! A real `host serve` for tests: a temporary data directory with a config of two tenants,
//! started on a free port of 127.0.0.1, spoken to over HTTP/1.1 or through the `host` CLI,
//! killed with SIGKILL when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use crate::{free_port, host_bin, spawn_logged, wait_for};

/// Tenant `alice`'s token.
pub const ALICE: &str = "alice-token-0123456789";
/// Tenant `bob`'s token.
pub const BOB: &str = "bob-token-9876543210";

/// A host.toml with tenants `alice` and `bob` (their tokens [`ALICE`] and [`BOB`]), each with
/// these lines under its `[tenants.quotas]` (none when empty).
pub fn two_tenants(alice_quotas: &str, bob_quotas: &str) -> String {
    let hash = sluice_host::server::tenants::hash_token;
    let quotas = |q: &str| {
        if q.is_empty() {
            String::new()
        } else {
            format!("[tenants.quotas]\n{q}\n")
        }
    };
    format!(
        "[[tenants]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\n{}\n[[tenants]]\nname = \"bob\"\ntoken_sha256 = \"{}\"\n{}",
        hash(ALICE),
        quotas(alice_quotas),
        hash(BOB),
        quotas(bob_quotas)
    )
}

/// A host's data directory and config, and the server while it runs.
pub struct Server {
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// A data directory and a config with tenants `alice` (at most `alice_max_jobs` jobs) and
    /// `bob`; not started.
    pub fn new(alice_max_jobs: u32) -> Self {
        Self::with_config(Some(&two_tenants(
            &format!("max_jobs = {alice_max_jobs}"),
            "",
        )))
    }

    /// A data directory and `config` as its host.toml (none: the host's own `default` tenant);
    /// not started.
    pub fn with_config(config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        if let Some(config) = config {
            std::fs::write(dir.path().join("host.toml"), config).expect("write host.toml");
        }
        Self {
            dir,
            port: free_port(),
            child: None,
            log: Arc::default(),
        }
    }

    /// The temporary folder holding the config and the data directory.
    pub fn folder(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Start `host serve` and wait until it answers.
    pub fn start(&mut self) {
        let mut cmd = Command::new(host_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data());
        let config = self.dir.path().join("host.toml");
        if config.exists() {
            cmd.arg("--config").arg(config);
        }
        cmd.env("SLUICE_COMPONENT_CACHE", self.dir.path().join("cache"))
            .env("SLUICE_LOG", "info");
        let (child, log) = spawn_logged(&mut cmd);
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
            // Any answer, 401 included: it listens.
            self.call("GET", "/api/v1/jobs", None, b"").is_ok()
        });
    }

    /// SIGKILL the server and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 host serve");
            child.wait().expect("reap host serve");
        }
    }

    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// One HTTP/1.1 request: the status and the answer's body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        request(self.port, method, path, token, body)
    }

    /// A request that must be answered `status`; its body.
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &[u8],
        status: u16,
    ) -> String {
        let (got, answer) = self
            .call(method, path, Some(token), body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }

    /// The folder of `tenant`'s job `job`.
    pub fn job_dir(&self, tenant: &str, job: &str) -> PathBuf {
        self.data()
            .join("tenants")
            .join(tenant)
            .join("jobs")
            .join(job)
    }

    /// `host ARGS` against this server, with `token`.
    pub fn host(&self, token: &str, args: &[&str]) -> std::process::Output {
        Command::new(host_bin())
            .args(args)
            .env("SLUICE_SERVER", format!("http://127.0.0.1:{}", self.port))
            .env("SLUICE_TOKEN", token)
            .output()
            .expect("run host")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: the status and the answer's body.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    crate::http(port, method, path, &auth, body)
}

/// `text` as JSON (a panic naming it otherwise).
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The lines of each whole batch folder `<dir>/out/<prefix>-*` (one with `_SUCCESS`), oldest
/// first.
pub fn batches(dir: &std::path::Path, prefix: &str) -> Vec<Vec<String>> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir.join("out"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{prefix}-")))
                        && p.join("_SUCCESS").exists()
                })
                .collect()
        })
        .unwrap_or_default();
    folders.sort();
    folders.iter().map(|f| crate::part_lines(f)).collect()
}

/// Job `upper`: its http source `lines` (served on the host's listener; the `address` is
/// required by the manifest but not bound), each line through `text#uppercase`, written to
/// `out/up-*` in the job's folder.
pub const UPPER: &str = r#"
[job]
name = "upper"
batch_interval = "200ms"

[[sources]]
name = "lines"
kind = "http"
address = "127.0.0.1:9"

[[streams]]
name = "up"
op = "map"
input = "lines"
udf = "text#uppercase"

[[sinks]]
kind = "text_files"
input = "up"
prefix = "out/up"
"#;
