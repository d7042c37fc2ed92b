//! The shared host's security, route by route: a real `host serve` on a free port of
//! 127.0.0.1 with two tenants. Every route of the API is a row of [`ROUTES`]; the test reads
//! the routers in `host/src/server/*.rs` and fails when a route has no row, so a new route is
//! noticed. Each row is called without a token and with a wrong one (401), and by `bob` on
//! `alice`'s job or UDF (404, nothing of alice's in the answer). Then: names that would reach
//! paths (jobs, sources, UDFs) refused, a malformed upload refused with the registry
//! unchanged, and the rate limits answered 429 with `Retry-After`, naming the quota.
//!
//! Already covered elsewhere and not repeated here: a truncated upload, UDF-name traversal and
//! the `max_component_bytes` 413 (serve_registry.rs), the `max_jobs` quota 403 (serve_jobs.rs).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use sluice_tests::serve::UPPER;
use sluice_tests::{free_port, host_bin, root, spawn_logged, udf, wait_for};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-9876543210";
const CAROL: &str = "carol-token-5555555555";

/// What `bob` gets calling a row on alice's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Other {
    /// 404: alice's job or UDF does not exist for bob.
    NotFound,
    /// A listing: 200, without alice's names.
    OwnList,
    /// A submission: bob's own job (checked elsewhere); only 401 is checked here.
    Own,
}

/// One route: method, path as the router declares it, the path called (alice's job `upper`,
/// alice's UDF `text`, source `lines`), the body, what bob gets.
struct Row {
    method: &'static str,
    route: &'static str,
    called: &'static str,
    body: &'static [u8],
    other: Other,
}

const fn row(
    method: &'static str,
    route: &'static str,
    called: &'static str,
    body: &'static [u8],
    other: Other,
) -> Row {
    Row {
        method,
        route,
        called,
        body,
        other,
    }
}

/// Every route of the API. A route added to a router without a row here fails
/// `every_route_has_a_row_and_refuses_strangers`.
const ROUTES: &[Row] = &[
    // The UDF registry (server/udfs.rs).
    row("GET", "/api/v1/udfs", "/api/v1/udfs", b"", Other::OwnList),
    row(
        "GET",
        "/api/v1/udfs/{name}",
        "/api/v1/udfs/text",
        b"",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/udfs/{name}/rollback",
        "/api/v1/udfs/text/rollback",
        br#"{"to": 1}"#,
        Other::NotFound,
    ),
    // (POST /api/v1/udfs/{name}, a deploy into alice's name, is a row of its own below: bob's
    // deploy of the same name makes bob's own UDF, never a version of alice's.)
    // The jobs (server/jobs_api.rs).
    row("POST", "/api/v1/jobs", "/api/v1/jobs", b"", Other::Own),
    row("GET", "/api/v1/jobs", "/api/v1/jobs", b"", Other::OwnList),
    row(
        "GET",
        "/api/v1/jobs/{job}",
        "/api/v1/jobs/upper",
        b"",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/jobs/{job}/stop",
        "/api/v1/jobs/upper/stop",
        b"",
        Other::NotFound,
    ),
    row(
        "GET",
        "/api/v1/jobs/{job}/logs",
        "/api/v1/jobs/upper/logs",
        b"",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/jobs/{job}/ingest/{source}",
        "/api/v1/jobs/upper/ingest/lines",
        b"bob was here\n",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/jobs/{job}/replay",
        "/api/v1/jobs/upper/replay?batch=1",
        b"",
        Other::NotFound,
    ),
    // Dead letters (server/dlq.rs).
    row(
        "GET",
        "/api/v1/jobs/{job}/dead-letters",
        "/api/v1/jobs/upper/dead-letters",
        b"",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/jobs/{job}/dead-letters/replay",
        "/api/v1/jobs/upper/dead-letters/replay",
        b"",
        Other::NotFound,
    ),
    // Rollouts (server/rollout.rs): a trial, a canary, promote, abort.
    row(
        "GET",
        "/api/v1/udfs/{name}/trial",
        "/api/v1/udfs/text/trial?version=1",
        b"",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/udfs/{name}/canary",
        "/api/v1/udfs/text/canary?batches=2",
        b"not a component",
        Other::NotFound,
    ),
    row(
        "GET",
        "/api/v1/udfs/{name}/canary",
        "/api/v1/udfs/text/canary",
        b"",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/udfs/{name}/promote",
        "/api/v1/udfs/text/promote",
        b"",
        Other::NotFound,
    ),
    row(
        "POST",
        "/api/v1/udfs/{name}/abort",
        "/api/v1/udfs/text/abort",
        b"",
        Other::NotFound,
    ),
];

/// Deploying into a name: bob's deploy is bob's own UDF (alice's stays as it was).
const DEPLOY: (&str, &str) = ("POST", "/api/v1/udfs/{name}");

/// Every `(METHOD, path)` the routers in host/src/server/*.rs declare with `.route("…", …)`.
fn declared_routes() -> BTreeSet<(String, String)> {
    let dir = root().join("host/src/server");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("host/src/server") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = rest[at + ".route(".len()..].trim_start();
            // `.route(` then the path, on the same line or the next (rustfmt's choice).
            let Some(path) = rest.strip_prefix('"') else {
                continue;
            };
            rest = path;
            let Some(end) = rest.find('"') else { break };
            let route = rest[..end].to_string();
            // The handlers: up to the `)` closing `.route(`.
            let mut depth = 1;
            let mut close = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let handlers = &rest[end..close];
            for method in ["get", "post", "put", "delete", "patch"] {
                let called = |p: &str| {
                    handlers.contains(&format!("{p}{method}("))
                        || handlers.starts_with(&format!("\", {method}("))
                };
                if called(" ") || called(".") || called("(") {
                    routes.insert((method.to_uppercase(), route.clone()));
                }
            }
            rest = &rest[close..];
        }
    }
    routes
}

struct Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(dir.path().join("host.toml"), config).expect("write host.toml");
        let port = free_port();
        let (child, log) = spawn_logged(
            Command::new(host_bin())
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--config")
                .arg(dir.path().join("host.toml"))
                .env("SLUICE_COMPONENT_CACHE", dir.path().join("cache"))
                .env("SLUICE_LOG", "info"),
        );
        let mut server = Self {
            dir,
            port,
            child: Some(child),
            log,
        };
        wait_for("host serve to answer", || {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("host serve exited ({status}):\n{}", server.log());
            }
            server.call("GET", "/api/v1/udfs", Some(ALICE), b"").is_ok()
        });
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// One request: status, `Retry-After` (if any), body.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Option<u64>, String)> {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let answer = sluice_tests::http_answer(self.port, method, path, &auth, body)?;
        let retry_after = answer.header("retry-after").and_then(|v| v.parse().ok());
        Ok((answer.status, retry_after, answer.body))
    }

    fn expect(&self, method: &str, path: &str, token: &str, body: &[u8], status: u16) -> String {
        let (got, _, answer) = self
            .call(method, path, Some(token), body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn config(alice_quotas: &str) -> String {
    let hash = sluice_host::server::tenants::hash_token;
    format!(
        "[[tenants]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\n[tenants.quotas]\n{alice_quotas}\n\n[[tenants]]\nname = \"bob\"\ntoken_sha256 = \"{}\"\n\n[[tenants]]\nname = \"carol\"\ntoken_sha256 = \"{}\"\n[tenants.quotas]\napi_rate = \"2/s\"\napi_burst = 3\ndeploy_rate = \"1/min\"\ndeploy_burst = 1\nmax_ingest_rate = \"1KiB/s\"\n",
        hash(ALICE),
        hash(BOB),
        hash(CAROL)
    )
}

#[test]
fn every_route_has_a_row_and_refuses_strangers() {
    // The table covers the routers, and nothing else.
    let declared = declared_routes();
    let mut table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.route.to_string()))
        .collect();
    table.insert((DEPLOY.0.to_string(), DEPLOY.1.to_string()));
    assert_eq!(
        declared, table,
        "the routes of host/src/server/*.rs (left) and the rows of ROUTES (right) differ: give every route a row"
    );
    assert_eq!(table.len(), ROUTES.len() + 1, "a route has two rows");

    let server = Server::start(&config(""));
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    server.expect("POST", "/api/v1/udfs/text", ALICE, &text, 201);
    let sha =
        json(&server.expect("GET", "/api/v1/udfs/text", ALICE, b"", 200))["versions"][0]["sha256"]
            .as_str()
            .expect("a sha256")
            .to_string();
    server.expect("POST", "/api/v1/jobs", ALICE, UPPER.as_bytes(), 201);
    server.expect(
        "POST",
        "/api/v1/jobs/upper/ingest/lines",
        ALICE,
        b"alice-secret\n",
        200,
    );

    for r in ROUTES {
        let what = format!("{} {}", r.method, r.called);
        // No token, a wrong one: 401, JSON saying what to do.
        for token in [None, Some("not-a-token"), Some("")] {
            let (status, _, answer) = server
                .call(r.method, r.called, token, r.body)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(status, 401, "{what} with {token:?}: {answer}");
            assert!(json(&answer)["hint"].is_string(), "{what}: {answer}");
        }
        // Bob on alice's things.
        let (status, _, answer) = server
            .call(r.method, r.called, Some(BOB), r.body)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        for secret in ["alice", "ALICE-SECRET", "alice-secret", sha.as_str()] {
            assert!(
                !answer.contains(secret),
                "{what} showed bob {secret:?}: {answer}"
            );
        }
        match r.other {
            Other::NotFound => {
                assert_eq!(status, 404, "{what} by bob: {answer}");
                assert!(json(&answer)["error"].is_string(), "{what}: {answer}");
            }
            Other::OwnList => {
                assert_eq!(status, 200, "{what} by bob: {answer}");
                assert!(
                    !answer.contains("upper") && !answer.contains("\"text\""),
                    "{answer}"
                );
            }
            Other::Own => assert_ne!(status, 401, "{what} by bob: {answer}"),
        }
    }

    // The deploy route: 401 for strangers; bob's deploy of `text` is bob's version 1, alice's
    // `text` is untouched.
    for token in [None, Some("not-a-token")] {
        let (status, _, _) = server
            .call("POST", "/api/v1/udfs/text", token, &text)
            .expect("an answer");
        assert_eq!(status, 401);
    }
    let v2 = std::fs::read(sluice_tests::test_guest("text_v2")).expect("read text_v2.wasm");
    let answer = json(&server.expect("POST", "/api/v1/udfs/text", BOB, &v2, 201));
    assert_eq!(answer["version"], 1, "{answer}");
    let alice = json(&server.expect("GET", "/api/v1/udfs/text", ALICE, b"", 200));
    assert_eq!(
        alice["versions"].as_array().map(Vec::len),
        Some(1),
        "{alice}"
    );
    assert_eq!(alice["versions"][0]["sha256"], sha.as_str(), "{alice}");
    // Alice's job still runs, and still takes her records.
    let status = json(&server.expect("GET", "/api/v1/jobs/upper", ALICE, b"", 200));
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["udfs"][0]["version"], 1, "{status}");
}

#[test]
fn names_that_would_reach_paths_are_refused() {
    let server = Server::start(&config(""));
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    server.expect("POST", "/api/v1/udfs/text", ALICE, &text, 201);

    // Job names and source names reach folders: `..`, `/`, `\`, control characters, a dot
    // first, too long: 400 naming the rule, nothing made.
    let long = "j".repeat(65);
    for bad in [
        "..",
        ".",
        "a/b",
        "a\\\\b",
        "a\\nb",
        ".hidden",
        long.as_str(),
    ] {
        let job = UPPER.replace("name = \"upper\"", &format!("name = \"{bad}\""));
        let answer = json(&server.expect("POST", "/api/v1/jobs", ALICE, job.as_bytes(), 400));
        assert!(answer["error"].is_string(), "job {bad:?}: {answer}");
        let source = UPPER
            .replace("name = \"lines\"", &format!("name = \"{bad}\""))
            .replace("input = \"lines\"", &format!("input = \"{bad}\""));
        let answer = json(&server.expect("POST", "/api/v1/jobs", ALICE, source.as_bytes(), 400));
        assert!(answer["error"].is_string(), "source {bad:?}: {answer}");
    }
    assert_eq!(server.expect("GET", "/api/v1/jobs", ALICE, b"", 200), "[]");
    let tenant_dir = server.data().join("tenants/alice/jobs");
    let made: Vec<_> = std::fs::read_dir(&tenant_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "folders made for refused jobs: {made:?}");
    assert!(!server.data().join("tenants/alice/jobs/j").exists());

    // Job and UDF names in paths: control characters, encoded slashes and dots, too long:
    // refused (400 or 404), never another tenant's or the host's files.
    let long_udf = format!("/api/v1/udfs/{}", "u".repeat(65));
    for path in [
        "/api/v1/udfs/a%0Ab",
        "/api/v1/udfs/a%5Cb",
        "/api/v1/udfs/%2E%2E%2F%2E%2E%2Fregistry",
        long_udf.as_str(),
    ] {
        let (status, _, answer) = server
            .call("POST", path, Some(ALICE), &text)
            .expect("answer");
        assert_eq!(status, 400, "{path}: {answer}");
        let (status, _, _) = server.call("GET", path, Some(ALICE), b"").expect("answer");
        assert_eq!(status, 400, "{path}");
    }
    for path in [
        "/api/v1/jobs/%2E%2E",
        "/api/v1/jobs/..%2F..%2Fregistry",
        "/api/v1/jobs/a%0Ab/logs",
        "/api/v1/jobs/%2E%2E/ingest/lines",
    ] {
        let (status, _, answer) = server.call("GET", path, Some(ALICE), b"").expect("answer");
        assert!(
            matches!(status, 400 | 404 | 405),
            "{path}: {status} {answer}"
        );
        let (status, _, answer) = server
            .call("POST", path, Some(ALICE), b"x\n")
            .expect("answer");
        assert!(
            matches!(status, 400 | 404 | 405),
            "{path}: {status} {answer}"
        );
    }

    // A malformed upload (not wasm at all; wasm with a broken section): 400 with the reason,
    // the registry as it was.
    let before = server.expect("GET", "/api/v1/udfs/text", ALICE, b"", 200);
    let mut broken = text.clone();
    let mid = broken.len() / 2;
    for b in &mut broken[mid..mid + 64] {
        *b = 0xff;
    }
    for bad in [&b"#!/bin/sh\nrm -rf /\n"[..], &broken[..], &[][..]] {
        let answer = json(&server.expect("POST", "/api/v1/udfs/text", ALICE, bad, 400));
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains("text")),
            "{answer}"
        );
        assert!(answer["hint"].is_string(), "{answer}");
    }
    assert_eq!(
        server.expect("GET", "/api/v1/udfs/text", ALICE, b"", 200),
        before
    );
    server.expect("GET", "/api/v1/udfs/other", ALICE, b"", 404);
}

#[test]
fn rate_limits_answer_429_naming_the_quota() {
    let server = Server::start(&config(""));
    let text = std::fs::read(udf("text")).expect("read text.wasm");
    let too_many = |answer: &str, quota: &str, value: &str| {
        let answer = json(answer);
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains(quota) && e.contains(value)),
            "{answer}"
        );
        assert!(
            answer["hint"].as_str().is_some_and(|h| h.contains("quota")),
            "{answer}"
        );
    };

    // carol: deploy_rate 1/min, burst 1: the second upload within the minute is 429 with
    // Retry-After, naming the quota; nothing of it stored.
    server.expect("POST", "/api/v1/udfs/text", CAROL, &text, 201);
    let (status, retry, answer) = server
        .call("POST", "/api/v1/udfs/text2", Some(CAROL), &text)
        .expect("answer");
    assert_eq!(status, 429, "{answer}");
    assert!(retry.is_some_and(|s| s >= 10), "Retry-After: {retry:?}");
    too_many(&answer, "deploy_rate", "1/min");

    // carol: max_ingest_rate 1KiB/s. 4 KiB go in (the bucket was full), then the next post
    // waits the debt out: 429 with Retry-After of seconds.
    server.expect("POST", "/api/v1/jobs", CAROL, UPPER.as_bytes(), 201);
    let lines: String = (0..400).map(|i| format!("line-{i:04}\n")).collect();
    server.expect(
        "POST",
        "/api/v1/jobs/upper/ingest/lines",
        CAROL,
        lines.as_bytes(),
        200,
    );
    let (status, retry, answer) = server
        .call(
            "POST",
            "/api/v1/jobs/upper/ingest/lines",
            Some(CAROL),
            b"one more\n",
        )
        .expect("answer");
    assert_eq!(status, 429, "{answer}");
    assert!(retry.is_some_and(|s| s >= 2), "Retry-After: {retry:?}");
    too_many(&answer, "max_ingest_rate", "1KiB/s");

    // carol: api_rate 2/s, burst 3, partly spent above. A burst of calls is refused within
    // a few, with Retry-After and the quota named.
    let mut refused = None;
    for _ in 0..10 {
        let (status, retry, answer) = server
            .call("GET", "/api/v1/jobs", Some(CAROL), b"")
            .expect("answer");
        if status == 429 {
            refused = Some((retry, answer));
            break;
        }
        assert_eq!(status, 200, "{answer}");
    }
    let (retry, answer) = refused.expect("carol's burst was refused");
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
    too_many(&answer, "api_rate", "2/s");

    // Other tenants are not slowed by carol's limits.
    for _ in 0..10 {
        server.expect("GET", "/api/v1/jobs", BOB, b"", 200);
    }
    server.expect("POST", "/api/v1/udfs/text", BOB, &text, 201);
}
