//! The shared host's UDF registry end to end: a real `host serve` on a free port of 127.0.0.1
//! with a temporary data directory, the real `host deploy` / `udfs` / `rollback` commands, raw
//! HTTP for what the CLI does not send (no token, a traversal name), and a real `kill -9`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sluice_tests::{free_port, host_bin, spawn_logged, test_guest, udf, wait_for};

/// One `host serve` process over a data directory that outlives it.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    config: Option<PathBuf>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn new(config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = config.map(|text| {
            let path = dir.path().join("host.toml");
            std::fs::write(&path, text).expect("write host.toml");
            path
        });
        Self {
            dir,
            port: free_port(),
            config,
            child: None,
            log: Arc::default(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start `host serve` and wait until it says it serves.
    fn start(&mut self) {
        let mut cmd = Command::new(host_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data())
            .env("SLUICE_COMPONENT_CACHE", self.dir.path().join("cache"))
            .env("SLUICE_LOG", "info");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let (child, log) = spawn_logged(&mut cmd);
        self.child = Some(child);
        self.log = log;
        wait_for("host serve to listen", || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("host serve exited ({status}):\n{}", self.log());
            }
            self.log().contains("sluice host serving on")
        });
    }

    /// SIGKILL the server and reap it.
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

    /// One raw HTTP/1.1 request: the status and the answer's JSON.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the host");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .expect("a read timeout");
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text:?}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// A request that must be answered `status`; its JSON.
    fn expect(&self, method: &str, path: &str, token: &str, body: &[u8], status: u16) -> Value {
        let (got, answer) = self.call(method, path, Some(token), body);
        assert_eq!(got, status, "{method} {path}: {answer}\n{}", self.log());
        answer
    }

    /// `host ARGS` as a client of this server (token from the data directory's token file
    /// unless `--token` is among `args`).
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(host_bin())
            .args(args)
            .env("SLUICE_SERVER", self.url())
            .env("SLUICE_DATA_DIR", self.data())
            .env_remove("SLUICE_TOKEN")
            .output()
            .expect("run the host binary")
    }

    /// `host ARGS` that must succeed; its stdout.
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "host {args:?}: {}\n--- server log\n{}",
            sluice_tests::describe(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tenant`'s versions of `name`: (version, sha256, deployed_at).
    fn versions(&self, token: &str, name: &str) -> Vec<(u64, String, String)> {
        let answer = self.expect("GET", &format!("/api/v1/udfs/{name}"), token, b"", 200);
        answer["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| {
                (
                    v["version"].as_u64().expect("a version number"),
                    v["sha256"].as_str().expect("a hash").to_string(),
                    v["deployed_at"].as_str().expect("a time").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn deploy_list_rollback_and_refusals_survive_kill_9() {
    let mut server = Server::new(None);
    server.start();

    // No config: the default tenant's token, in a 0600 file whose path was printed.
    let token_file = server.data().join("default.token");
    assert!(
        server.log().contains(&token_file.display().to_string()),
        "{}",
        server.log()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)
        .expect("the token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).expect("read the token");
    let token = token.trim();
    assert_eq!(token.len(), 64);

    let text = udf("text");
    let text_v2 = test_guest("text_v2");
    let text_str = text.to_str().expect("a UTF-8 path");
    let v2_str = text_v2.to_str().expect("a UTF-8 path");

    // Deploy: v1; the same bytes again: a no-op that says so; other bytes: v2.
    let out = server.cli_ok(&["deploy", text_str]);
    assert!(out.contains("deployed as version 1"), "{out}");
    let out = server.cli_ok(&["deploy", text_str]);
    assert!(
        out.contains("identical to version 1") && out.contains("nothing deployed"),
        "{out}"
    );
    let again = server.expect(
        "POST",
        "/api/v1/udfs/text",
        token,
        &std::fs::read(&text).expect("read text.wasm"),
        200,
    );
    assert_eq!(
        (again["version"].as_u64(), again["unchanged"].as_bool()),
        (Some(1), Some(true))
    );
    let out = server.cli_ok(&["deploy", v2_str, "--name", "text"]);
    assert!(out.contains("deployed as version 2"), "{out}");

    // List.
    let out = server.cli_ok(&["udfs"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("text") && l.contains("1, 2")),
        "{out}"
    );
    let out = server.cli_ok(&["udfs", "text"]);
    assert_eq!(out.lines().count(), 3, "{out}");

    // Rollback: v3 with v1's bytes.
    let out = server.cli_ok(&["rollback", "text"]);
    assert!(
        out.contains("version 1's bytes deployed again as version 3"),
        "{out}"
    );
    let versions = server.versions(token, "text");
    let numbers: Vec<u64> = versions.iter().map(|v| v.0).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(versions[0].1, sha256_of(&text));
    assert_eq!(versions[1].1, sha256_of(&text_v2));
    assert_eq!(versions[2].1, versions[0].1);

    // No token, a wrong token: 401 saying where the token is.
    let (status, answer) = server.call("GET", "/api/v1/udfs", None, b"");
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["hint"]
            .as_str()
            .unwrap_or("")
            .contains(&token_file.display().to_string()),
        "{answer}"
    );
    let (status, answer) = server.call("GET", "/api/v1/udfs/text", Some(&"0".repeat(64)), b"");
    assert_eq!(status, 401, "{answer}");
    assert!(answer.get("versions").is_none());
    let out = server.cli(&["udfs", "--token", "wrong"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the token was refused"),
        "{}",
        stderr(&out)
    );

    // A truncated component: 400 with the loader's reason; nothing stored.
    let bytes = std::fs::read(&text).expect("read text.wasm");
    let truncated = &bytes[..bytes.len() / 2];
    let answer = server.expect("POST", "/api/v1/udfs/text", token, truncated, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot deploy 'text'"),
        "{answer}"
    );
    assert!(
        !answer["hint"].as_str().unwrap_or("").is_empty(),
        "{answer}"
    );
    let cut = server.dir.path().join("cut.wasm");
    std::fs::write(&cut, truncated).expect("write cut.wasm");
    let out = server.cli(&["deploy", cut.to_str().expect("a UTF-8 path")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    server.expect("GET", "/api/v1/udfs/cut", token, b"", 404);
    assert_eq!(server.versions(token, "text"), versions);

    // Names that climb out: refused.
    for path in [
        "/api/v1/udfs/..%2Fx",
        "/api/v1/udfs/%2E%2E",
        "/api/v1/udfs/a%2Fb",
    ] {
        let answer = server.expect("POST", path, token, &bytes, 400);
        assert!(
            answer["error"].as_str().unwrap_or("").contains("not valid"),
            "{answer}"
        );
    }
    let (status, _) = server.call("POST", "/api/v1/udfs/../x", Some(token), &bytes);
    assert!(!(200..300).contains(&status), "{status}");
    let out = server.cli(&["deploy", text_str, "--name", "../x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not valid"), "{}", stderr(&out));
    let listed = server.expect("GET", "/api/v1/udfs", token, b"", 200);
    assert_eq!(listed["udfs"].as_array().map(Vec::len), Some(1), "{listed}");

    // kill -9, start again: every version as it was (numbers, bytes, times), and numbering
    // goes on.
    server.kill9();
    let out = server.cli(&["udfs"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no host is listening") && stderr(&out).contains("host serve"),
        "{}",
        stderr(&out)
    );
    server.start();
    assert!(!server.log().contains("created now"), "{}", server.log());
    assert_eq!(server.versions(token, "text"), versions);
    let out = server.cli_ok(&["deploy", text_str]);
    assert!(out.contains("identical to version 3"), "{out}");
    let out = server.cli_ok(&["deploy", v2_str, "--name", "text"]);
    assert!(out.contains("deployed as version 4"), "{out}");
    let out = server.cli_ok(&["rollback", "text", "--to", "2"]);
    assert!(out.contains("version 2 is the newest already"), "{out}");
}

#[test]
fn tenants_see_only_their_own_and_quotas_are_named() {
    let hash = |token: &str| -> String {
        use std::io::Write;
        let mut child = Command::new(host_bin())
            .arg("hash-token")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run host hash-token");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(token.as_bytes())
            .expect("write the token");
        let out = child.wait_with_output().expect("host hash-token");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (acme, globex) = ("acme-token-0123456789", "globex-token-9876543210");
    let config = format!(
        "[[tenants]]\nname = \"acme\"\ntoken_sha256 = \"{}\"\n[tenants.quotas]\nmax_component_bytes = \"80KiB\"\nversions_kept = 2\n\n[[tenants]]\nname = \"globex\"\ntoken_sha256 = \"{}\"\n",
        hash(acme),
        hash(globex)
    );
    let mut server = Server::new(Some(&config));
    server.start();
    assert!(!server.data().join("default.token").exists());

    let read = |name: &str, guest: bool| {
        let path = if guest { test_guest(name) } else { udf(name) };
        std::fs::read(path).expect("read a component")
    };
    let (template, sinks, bench, text) = (
        read("template", false),
        read("sinks", false),
        read("bench", true),
        read("text", false),
    );

    // acme deploys `tpl`; globex sees none of it: 404 everywhere, never data.
    let first = server.expect("POST", "/api/v1/udfs/tpl", acme, &template, 201);
    assert_eq!(first["version"].as_u64(), Some(1));
    let sha = first["sha256"].as_str().expect("a hash").to_string();
    for (method, path, body) in [
        ("GET", "/api/v1/udfs/tpl", &b""[..]),
        ("POST", "/api/v1/udfs/tpl/rollback", &b""[..]),
        ("POST", "/api/v1/udfs/tpl/rollback", &br#"{"to": 1}"#[..]),
    ] {
        let (status, answer) = server.call(method, path, Some(globex), body);
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains(&sha), "{answer}");
        assert!(!answer.to_string().contains("tpl\","), "{answer}");
    }
    let listed = server.expect("GET", "/api/v1/udfs", globex, b"", 200);
    assert_eq!(listed["udfs"].as_array().map(Vec::len), Some(0), "{listed}");

    // globex's own `tpl` is its own, numbered on its own; acme's is untouched.
    let own = server.expect("POST", "/api/v1/udfs/tpl", globex, &sinks, 201);
    assert_eq!(own["version"].as_u64(), Some(1));
    assert_eq!(server.versions(acme, "tpl")[0].1, sha);
    assert_ne!(server.versions(globex, "tpl")[0].1, sha);

    // acme's component quota: 413 naming it; nothing stored.
    let answer = server.expect("POST", "/api/v1/udfs/big", acme, &text, 413);
    assert!(
        answer["error"].as_str().unwrap_or("").contains("80KiB"),
        "{answer}"
    );
    server.expect("GET", "/api/v1/udfs/big", acme, b"", 404);
    // globex has the default quota.
    server.expect("POST", "/api/v1/udfs/big", globex, &text, 201);

    // versions_kept = 2: the oldest is dropped.
    server.expect("POST", "/api/v1/udfs/tpl", acme, &sinks, 201);
    let third = server.expect("POST", "/api/v1/udfs/tpl", acme, &bench, 201);
    assert_eq!(third["dropped"], serde_json::json!([1]), "{third}");
    let kept = server.versions(acme, "tpl");
    assert_eq!(kept.iter().map(|v| v.0).collect::<Vec<_>>(), [2, 3]);

    // After kill -9 the kept versions keep their numbers: the next deploy is 4, and version 1
    // stays gone.
    server.kill9();
    server.start();
    assert_eq!(server.versions(acme, "tpl"), kept);
    let fourth = server.expect("POST", "/api/v1/udfs/tpl", acme, &template, 201);
    assert_eq!(fourth["version"].as_u64(), Some(4), "{fourth}");
    let answer = server.expect(
        "POST",
        "/api/v1/udfs/tpl/rollback",
        acme,
        br#"{"to": 1}"#,
        404,
    );
    assert!(
        answer["hint"].as_str().unwrap_or("").contains("3, 4"),
        "{answer}"
    );
    let back = server.expect(
        "POST",
        "/api/v1/udfs/tpl/rollback",
        acme,
        br#"{"to": 3}"#,
        201,
    );
    assert_eq!(back["version"].as_u64(), Some(5));
    assert_eq!(back["sha256"], third["sha256"]);
    assert_eq!(server.versions(globex, "tpl").len(), 1);
}
