//! One core per process, through the Rust API: jobs share the core's worker pool and runtime
//! (N jobs do not multiply threads), and a job leaves no thread, task, listener, connection or
//! file descriptor behind once it has ended.
//!
//! Both tests count the threads and descriptors of this whole test process, so they take turns
//! (`SERIAL`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sluice_host::engine::{Core, JobOptions, StreamingContext};
use sluice_host::plan::{CheckpointSpec, Codec};
use sluice_host::udf::{RuntimeConfig, UdfRuntime};
use sluice_tests::{Seen, free_port, post, record_batches, root, runtime_with, udf, wait_for};

static SERIAL: Mutex<()> = Mutex::new(());

/// The names of this process's threads (`comm`: at most 15 bytes).
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim_end().to_string())
        .collect();
    names.sort();
    names
}

/// This process's open file descriptors.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn shared_runtime() -> Arc<UdfRuntime> {
    udf("text"); // builds the components once
    Arc::new(runtime_with(RuntimeConfig::default()))
}

/// Every record the stream produced, summed per key (values are counts).
fn totals(seen: &Seen) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for batch in seen.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        for (key, value) in &batch.records {
            *totals.entry(key.clone()).or_insert(0) += value.parse::<i64>().expect("a count");
        }
    }
    totals
}

/// Wait up to 30 s for `done`, then fail with what `state` says.
fn settle(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 30 s: {}", state());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_jobs_on_one_core_add_a_small_constant_of_threads_each_and_share_one_pool() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = shared_runtime();
    let core = Core::global().expect("the process's core");

    let start = |i: usize| {
        let ctx = StreamingContext::with_runtime(
            &format!("core-{i}"),
            Duration::from_millis(50),
            root().join("dist/udfs"),
            runtime.clone(),
        )
        .partitions(3);
        let (lines, queue) = ctx.queue_stream("lines");
        let counts = lines
            .flat_map("text#split_words")
            .map("text#pair_one")
            .reduce_by_key("aggregates#sum_i64")
            .named("counts")
            .codecs(Codec::Text, Codec::Number);
        let seen = record_batches(&counts);
        let job = ctx
            .start(JobOptions {
                core: Some(core.clone()),
                ..JobOptions::default()
            })
            .expect("the job starts");
        let word = format!("job{i}");
        queue.push_lines([format!("{word} shared {word}"), format!("shared {word}")]);
        wait_for(&format!("job {i}'s counts"), || {
            totals(&seen).get(&word) == Some(&3)
        });
        (i, job, queue, seen)
    };

    // A first job makes what the UDF runtime keeps for every job (its epoch thread, the
    // compiled components, and wasmtime's parallel compilation starts rayon's global pool,
    // whose threads take the name of the compile thread that started them): then the count.
    let (_, first, queue, _) = start(9);
    drop(queue);
    first.stop();
    first.wait().expect("the first job ends cleanly");
    let base = threads();

    let mut jobs = vec![start(0)];
    let one = threads();
    jobs.push(start(1));
    jobs.push(start(2));
    let three = threads();

    let per_job = 2;
    assert!(
        one.len() <= base.len() + per_job,
        "one job added {} threads (at most {per_job} expected)\nbefore: {base:?}\nwith one job: {one:?}",
        one.len() - base.len().min(one.len()),
    );
    assert!(
        three.len() <= one.len() + 2 * per_job,
        "two more jobs added {} threads (at most {per_job} each expected)\nwith one job: {one:?}\nwith three: {three:?}",
        three.len() - one.len().min(three.len()),
    );
    let workers = three
        .iter()
        .filter(|n| n.starts_with("sluice-worker"))
        .count();
    assert_eq!(
        workers,
        core.workers(),
        "one pool of the core's workers, not one per job: {three:?}"
    );
    // `sluice-core-N-executor`, cut to 15 bytes: a job's own threads are its executor only.
    let own = three
        .iter()
        .filter(|n| n.starts_with("sluice-core-"))
        .count();
    assert_eq!(
        own, 3,
        "one executor thread per job, nothing else: {three:?}"
    );

    for (i, job, queue, seen) in jobs {
        drop(queue);
        job.stop();
        let summary = job.wait().expect("the job ends cleanly");
        assert!(summary.stopped);
        assert_eq!(summary.records_in, 2, "job {i}");
        let word = format!("job{i}");
        assert_eq!(
            totals(&seen),
            BTreeMap::from([(word, 3), ("shared".to_string(), 2)]),
            "job {i} counts only its own input"
        );
    }
    settle(
        "the jobs' threads end",
        || threads().len() <= base.len(),
        || format!("before: {base:?}\nafter: {:?}", threads()),
    );
}

/// A peer for socket sources: sends `hello` on each connection and reads until the job closes
/// it. Counts the connections open and the ones the job closed.
struct Peer {
    port: u16,
    open: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Peer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a peer port");
        let port = listener.local_addr().expect("its address").port();
        let (open, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (o, c) = (open.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                o.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(b"hello\n");
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                drop(stream);
                o.fetch_sub(1, Ordering::SeqCst);
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { port, open, closed }
    }
}

#[test]
fn starting_and_stopping_jobs_with_socket_and_http_sources_leaves_no_threads_or_descriptors() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = shared_runtime();
    let peer = Peer::start();
    let mut baseline = None;
    for round in 0..4 {
        let dir = tempfile::tempdir().expect("a checkpoint folder");
        let ctx = StreamingContext::with_runtime(
            "core-io",
            Duration::from_millis(100),
            root().join("dist/udfs"),
            runtime.clone(),
        )
        .checkpoint(CheckpointSpec::new(dir.path()));
        let http = free_port();
        let lines = ctx.socket_text_stream("lines", "127.0.0.1", peer.port);
        let events = ctx.http_ingest_stream("events", &format!("127.0.0.1:{http}"));
        let seen = record_batches(&lines.union(&[&events]));
        let job = ctx.start(JobOptions::default()).expect("the job starts");
        wait_for("the socket source to connect", || {
            peer.open.load(Ordering::SeqCst) == 1
        });
        let (status, answer) = post(http, "/ingest/events", b"posted\n").expect("an answer");
        assert_eq!(status, 200, "{answer}");
        wait_for("both records in a batch", || {
            let values: Vec<String> = seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .flat_map(|b| b.records.iter().map(|(_, v)| v.clone()))
                .collect();
            values.contains(&"hello".to_string()) && values.contains(&"posted".to_string())
        });
        job.stop();
        let summary = job.wait().expect("the job ends cleanly");
        assert!(summary.stopped);
        assert_eq!(summary.records_in, 2, "round {round}");
        // The job's side of the connection and its listener are closed.
        settle(
            "the socket source's connection closes",
            || peer.closed.load(Ordering::SeqCst) == round + 1,
            || format!("{} closed", peer.closed.load(Ordering::SeqCst)),
        );
        settle(
            "the http listener closes",
            || std::net::TcpStream::connect(("127.0.0.1", http)).is_err(),
            || format!("127.0.0.1:{http} still accepts"),
        );
        drop(dir);
        match &baseline {
            // The first round made what lives as long as the process (the core, its
            // blocking pool's threads, the UDF runtime's pools): later rounds add nothing.
            None => baseline = Some((threads(), fds())),
            Some((base_threads, base_fds)) => settle(
                &format!("round {round}: threads and descriptors back to the first round's"),
                || threads().len() <= base_threads.len() && fds() <= *base_fds,
                || {
                    format!(
                        "threads {} (first round {}), descriptors {} (first round {base_fds})\nnow: {:?}\nfirst round: {base_threads:?}",
                        threads().len(),
                        base_threads.len(),
                        fds(),
                        threads()
                    )
                },
            ),
        }
    }
}
