//! `update_state_by_key` and `map_with_state` through the Rust API, state in RocksDB: running
//! totals over many batches (Wasm updater and builtin), removal, a timeout that fires exactly
//! once, initial state, snapshots, and the per-job state limit.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_host::engine::{ContextError, DStream, StateSpec, StreamingContext};
use sluice_host::plan::{Builtin, Codec, StaticFormat};
use sluice_host::sources::QueueSender;
use sluice_tests::{JobDir, Seen, record_batches, root, udf};

fn record(stream: &DStream) -> Seen {
    record_batches(stream)
}

fn take(seen: &Seen) -> Vec<(i64, BTreeMap<String, String>)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|b| (b.time, b.records.iter().cloned().collect()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A context with state in `dir`, and `(word, 1)` pairs from queued lines.
fn job(name: &str, dir: &JobDir, interval_ms: u64) -> (StreamingContext, DStream, QueueSender) {
    udf("state");
    let ctx = StreamingContext::new(
        name,
        Duration::from_millis(interval_ms),
        root().join("dist/udfs"),
    )
    .expect("a context")
    .partitions(2)
    .state_dir(dir.path().join("state"));
    let (lines, queue) = ctx.queue_stream("lines");
    let pairs = lines
        .flat_map("text#split_words")
        .map("text#pair_one")
        .named("pairs")
        .codecs(Codec::Text, Codec::Number);
    (ctx, pairs, queue)
}

#[test]
fn running_totals_over_many_batches_in_wasm_and_builtin() {
    let dir = JobDir::new();
    let (ctx, pairs, queue) = job("totals", &dir, 20);
    let wasm = record(&pairs.update_state_by_key("state#running_total", StateSpec::default()));
    let builtin = record(&pairs.update_state_by_key(Builtin::CountAndSum, StateSpec::default()));
    let mut expect: BTreeMap<String, i64> = BTreeMap::new();
    let mut expected = Vec::new();
    for i in 0..30 {
        let line = format!("k{} k{} all", i % 7, i % 3);
        for w in line.split(' ') {
            *expect.entry(w.to_string()).or_default() += 1;
        }
        queue.push_lines([line]);
        expected.push(expect.clone());
    }
    drop(queue);
    ctx.run_until_idle().expect("the job runs");
    let wasm = take(&wasm);
    let builtin = take(&builtin);
    assert_eq!(wasm.len(), 30);
    for (i, want) in expected.iter().enumerate() {
        // The stream is the whole state after every batch.
        let totals: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        assert_eq!(wasm[i].1, totals, "batch {i}");
        let pairs: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.clone(), format!("[{v},{v}]")))
            .collect();
        assert_eq!(builtin[i].1, pairs, "batch {i}");
    }
}

#[test]
fn an_updater_removes_keys_and_initial_state_is_loaded_once() {
    let dir = JobDir::new();
    dir.file("initial.tsv", "acct\t10\nother\t5\n");
    for round in 0..2 {
        udf("state");
        let ctx = StreamingContext::new(
            "balances",
            Duration::from_millis(20),
            root().join("dist/udfs"),
        )
        .expect("a context")
        .partitions(2)
        .state_dir(dir.path().join("state"));
        let (lines, queue) = ctx.queue_stream("lines");
        // Lines "key amount" → (key, amount).
        let moves = lines
            .map("text#key_number")
            .codecs(Codec::Text, Codec::Number);
        let spec = StateSpec {
            initial_state: Some((dir.path().join("initial.tsv"), StaticFormat::Kv)),
            ..StateSpec::default()
        };
        let balances = record(&moves.update_state_by_key("state#balance", spec));
        if round == 0 {
            queue.push_lines(["acct -4"]);
            queue.push_lines(["acct -6", "new 3"]);
            queue.push_lines(["new 1"]);
        } else {
            queue.push_lines(["other 1"]);
        }
        drop(queue);
        ctx.run_until_idle().expect("the job runs");
        let seen: Vec<_> = take(&balances).into_iter().map(|(_, m)| m).collect();
        if round == 0 {
            assert_eq!(
                seen,
                [
                    map(&[("acct", "6"), ("other", "5")]),
                    // acct came back to zero: removed.
                    map(&[("new", "3"), ("other", "5")]),
                    map(&[("new", "4"), ("other", "5")]),
                ]
            );
        } else {
            // The initial state is not loaded again over the state the first run left.
            assert_eq!(seen, [map(&[("new", "4"), ("other", "6")])]);
        }
    }
}

#[test]
fn a_timeout_fires_exactly_once_and_snapshots_show_the_state() {
    let dir = JobDir::new();
    let (ctx, pairs, queue) = job("sessions", &dir, 50);
    let spec = StateSpec {
        timeout: Some(Duration::from_millis(200)),
        ..StateSpec::default()
    };
    let sessions = pairs
        .map_with_state("state#session", spec)
        .named("sessions")
        .codecs(Codec::Text, Codec::Json);
    let emitted = record(&sessions);
    let snapshots = record(&sessions.state_snapshots());
    queue.push_lines(["a b"]);
    queue.push_lines(["a"]);
    queue.push_lines(["b"]);
    for _ in 0..10 {
        queue.push_lines(Vec::<String>::new());
    }
    drop(queue);
    ctx.run_until_idle().expect("the job runs");
    let emitted = take(&emitted);
    let fired: Vec<(i64, String, serde_json::Value)> = emitted
        .iter()
        .flat_map(|(t, m)| {
            m.iter()
                .map(|(k, v)| (*t, k.clone(), serde_json::from_str(v).expect("JSON")))
        })
        .collect();
    // Each key's session is emitted once, when it has been idle for over 200 ms.
    let keys: Vec<&str> = fired.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 2, "{fired:?}");
    assert!(keys.contains(&"a") && keys.contains(&"b"), "{fired:?}");
    let first = emitted[0].0;
    let times: Vec<i64> = emitted.iter().map(|(t, _)| *t).collect();
    for (t, key, session) in &fired {
        assert_eq!(session["events"], 2, "{key}: {session}");
        let last = session["last_batch_ms"].as_i64().expect("a time");
        // It fired in the first batch more than 200 ms after the key's last data, not later.
        assert!(t - last > 200, "{key} fired at {t}, last active {last}");
        let at = times.iter().position(|x| x == t).expect("a batch time");
        assert!(
            times[at - 1] - last <= 200,
            "{key} fired late: {times:?}, last active {last}"
        );
    }
    // Snapshots: both keys while active, none once both timed out.
    let snapshots = take(&snapshots);
    assert_eq!(snapshots.len(), emitted.len());
    assert_eq!(
        snapshots[0].1.keys().cloned().collect::<Vec<_>>(),
        ["a", "b"],
        "after the first batch"
    );
    let a_first: serde_json::Value = serde_json::from_str(&snapshots[0].1["a"]).expect("JSON");
    assert_eq!(a_first["events"], 1);
    assert_eq!(a_first["first_batch_ms"], first);
    assert!(snapshots.last().expect("a snapshot").1.is_empty());
}

#[test]
fn state_past_the_limit_fails_the_job_with_a_clear_error() {
    let dir = JobDir::new();
    let (ctx, pairs, queue) = job("limited", &dir, 20);
    let ctx = ctx.max_state_bytes(200);
    let _ = record(&pairs.update_state_by_key(Builtin::Count, StateSpec::default()));
    queue.push_lines(["a b c"]);
    let many: Vec<String> = (0..100).map(|i| format!("key-number-{i}")).collect();
    queue.push_lines([many.join(" ")]);
    drop(queue);
    let err = ctx.run_until_idle().expect_err("over the limit");
    let text = err.to_string();
    assert!(matches!(err, ContextError::Job(_)), "{text}");
    assert!(text.contains("max_state_bytes = 200"), "{text}");
    assert!(text.contains("stream 'update_state_by_key"), "{text}");
    assert!(text.contains("batch 2"), "{text}");
}
