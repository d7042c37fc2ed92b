//! An http source mounted on a router the caller owns (`JobOptions::mount_http`,
//! `Job::ingest_router`): the job binds no port; a POST through the caller's server under its own
//! prefix is answered 200 only once the records are in the write-ahead log (they survive an
//! abort and come out of the restarted job exactly once); the per-request limits hold (413);
//! once the job has ended the mounted endpoint answers 503.

use std::path::Path;
use std::sync::Arc;

use sluice_host::engine::{Job, JobError, JobOptions};
use sluice_host::plan::{self, Plan, manifest};
use sluice_host::udf::{RuntimeConfig, UdfDirectory, UdfRuntime};
use sluice_tests::{JobDir, free_port, post, runtime_with};

fn job_manifest(unbound: u16) -> String {
    // A long interval: nothing posted is sealed into a batch before the abort below.
    format!(
        r#"[job]
name = "mounted"
batch_interval = "60s"
partitions = 2
checkpoint = "ckpt"

[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{unbound}"
max_request_bytes = "1024B"

[[streams]]
name = "upper"
op = "map"
input = "events"
udf = "text#uppercase"

[[sinks]]
kind = "text_files"
input = "upper"
prefix = "out/upper"
"#
    )
}

fn planned(dir: &JobDir, runtime: &UdfRuntime) -> Plan {
    let path = dir.path().join("job.toml");
    let spec = manifest::load_with(&path, None).expect("the manifest loads");
    let udfs = UdfDirectory::new(dir.path().join("udfs"), runtime);
    plan::plan(spec, &udfs, Some(&path)).expect("the job plans")
}

/// Whether some file under `dir` holds `needle`.
fn some_file_holds(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let path = e.path();
        if path.is_dir() {
            some_file_holds(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn a_caller_mounted_ingest_router_acks_after_the_log_and_keeps_request_limits() {
    let dir = JobDir::new();
    let unbound = free_port();
    dir.manifest(&job_manifest(unbound));
    let runtime = Arc::new(runtime_with(RuntimeConfig::default()));
    let job = Job::start(
        planned(&dir, &runtime),
        JobOptions {
            mount_http: true,
            ..JobOptions::default()
        },
        runtime.registry().clone(),
    )
    .expect("the job starts");
    // The scheduler's first tick seals at once (an empty batch): the records posted below must
    // come after it, so that no batch holds them before the abort.
    sluice_tests::wait_for("the job's first batch", || !job.reports().is_empty());
    let router = job.ingest_router().expect("the job mounts its http source");

    // The caller's own server, runtime and routes; the job's endpoint under its prefix.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the caller's runtime");
    let listener = server
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("the caller's port");
    let port = listener.local_addr().expect("its address").port();
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .nest("/tenants/acme", router);
    server.spawn(async move { axum::serve(listener, app).await });

    assert!(
        std::net::TcpStream::connect(("127.0.0.1", unbound)).is_err(),
        "a mounted source binds nothing (its manifest address is 127.0.0.1:{unbound})"
    );
    let (status, _) = post(port, "/health", b"").expect("the caller's own route");
    assert_eq!(status, 405, "the caller's GET-only route, POSTed");

    let (status, body) =
        post(port, "/tenants/acme/ingest/events", b"alpha\nbeta\n").expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"accepted\":2"), "{body}");
    // Acknowledged means logged: the records are in the write-ahead log on disk now.
    assert!(
        some_file_holds(&dir.path().join("ckpt"), b"alpha\nbeta"),
        "the acknowledged records are in the checkpoint's write-ahead log"
    );

    let (status, body) =
        post(port, "/tenants/acme/ingest/events", &vec![b'x'; 2000]).expect("an answer");
    assert_eq!(status, 413, "over max_request_bytes (1024 B): {body}");
    assert!(body.contains("max_request_bytes"), "{body}");
    let (status, body) = post(port, "/tenants/acme/ingest/other", b"a\n").expect("an answer");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("POST /ingest/events"), "{body}");

    // Abort: the records were never sealed into a batch; only the log has them.
    job.abort();
    match job.wait() {
        Err(JobError::Aborted { .. }) => {}
        other => panic!("an aborted job says so: {other:?}"),
    }
    let (status, body) = post(port, "/tenants/acme/ingest/events", b"late\n").expect("an answer");
    assert_eq!(status, 503, "the job has ended: {body}");

    // The restarted job finds them in the log and runs them, once.
    let again = Job::start(
        planned(&dir, &runtime),
        JobOptions {
            mount_http: true,
            until_idle: true,
            ..JobOptions::default()
        },
        runtime.registry().clone(),
    )
    .expect("the job restarts");
    let summary = again.wait().expect("the restarted job ends");
    assert_eq!(summary.records_in, 2);
    assert_eq!(dir.output_lines("out/upper"), ["ALPHA", "BETA"]);
}
