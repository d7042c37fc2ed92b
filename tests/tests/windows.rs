//! Batch-time windows through the Rust API: a queue source gives one micro-batch per queued
//! item, closure sinks record every batch of the input and of each windowed stream, and each
//! window's output is checked exactly against the input batches whose times fall in
//! `(t - length, t]`. Empty batches after the data let the windows slide past its end.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_host::engine::{DStream, StreamingContext};
use sluice_host::plan::{Builtin, Codec};
use sluice_tests::{JobDir, Seen, record_batches, root, udf};

const INTERVAL: i64 = 100;
const LENGTH: i64 = 300;
const SLIDE: i64 = 200;

fn record(stream: &DStream) -> Seen {
    record_batches(stream)
}

fn take(seen: &Seen) -> Vec<(i64, Vec<(String, String)>)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|b| (b.time, b.records.clone()))
        .collect()
}

/// The input records of the window ending at `t`.
fn window_input(input: &[(i64, Vec<(String, String)>)], t: i64) -> Vec<(String, String)> {
    input
        .iter()
        .filter(|(time, _)| *time > t - LENGTH && *time <= t)
        .flat_map(|(_, r)| r.iter().cloned())
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn sums(records: &[(String, String)]) -> Vec<(String, String)> {
    let mut m: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in records {
        *m.entry(k.clone()).or_default() += v.parse::<i64>().expect("a number");
    }
    m.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// A context over `dir`'s state folder, with pairs `(word, 1)` from queued lines.
fn pairs_job(
    name: &str,
    dir: &JobDir,
) -> (
    StreamingContext,
    DStream,
    DStream,
    sluice_host::sources::QueueSender,
) {
    udf("text");
    let ctx = StreamingContext::new(
        name,
        Duration::from_millis(INTERVAL as u64),
        root().join("dist/udfs"),
    )
    .expect("a context")
    .partitions(2)
    .state_dir(dir.path().join("state"));
    let (lines, queue) = ctx.queue_stream("lines");
    let words = lines.flat_map("text#split_words").named("words");
    let pairs = words
        .map("text#pair_one")
        .named("pairs")
        .codecs(Codec::Text, Codec::Number);
    (ctx, words, pairs, queue)
}

fn feed(queue: sluice_host::sources::QueueSender) {
    for lines in [
        &["a b", "a"][..],
        &["b c"],
        &["a"],
        &[],
        &["c c"],
        &[],
        &[],
        &[],
        &[],
        &[],
    ] {
        queue.push_lines(lines.iter().copied());
    }
}

#[test]
fn each_window_is_the_batches_of_its_length_every_slide() {
    let dir = JobDir::new();
    let (ctx, words, pairs, queue) = pairs_job("windows", &dir);
    let len = Duration::from_millis(LENGTH as u64);
    let slide = Duration::from_millis(SLIDE as u64);
    let input = record(&pairs);
    let word_input = record(&words);
    let window = record(&pairs.window(len, slide));
    let count = record(&pairs.count_by_window(len, slide));
    let reduced = record(&pairs.reduce_by_window(Builtin::SumI64, len, slide));
    let by_key = record(&pairs.reduce_by_key_and_window("aggregates#sum_i64", len, slide));
    let by_key_inv =
        record(&pairs.reduce_by_key_and_window_inv("aggregates#sum_i64", len, slide, None));
    let by_key_builtin_inv =
        record(&pairs.reduce_by_key_and_window_inv(Builtin::SumI64, len, slide, None));
    let by_value = record(&words.count_by_value_and_window(len, slide));
    let grouped = record(&pairs.group_by_key_and_window(len, slide));
    feed(queue);
    ctx.run_until_idle().expect("the job runs");

    let input = take(&input);
    let word_input = take(&word_input);
    assert!(input.len() >= 10, "one batch per queued item: {input:?}");
    let window = take(&window);
    assert!(!window.is_empty());
    // Windows exist only at slide times, and every one of them is there.
    let first = input[0].0;
    let last = input[input.len() - 1].0;
    let slide_times: Vec<i64> = (first..=last).filter(|t| t % SLIDE == 0).collect();
    assert_eq!(
        window.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        slide_times
    );
    // The data ends with batch 5; the last windows hold nothing: they slid past its end.
    let data_end = input
        .iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    assert!(slide_times.iter().any(|t| t - LENGTH >= data_end));

    for (t, got) in &window {
        let expect = window_input(&input, *t);
        assert_eq!(sorted(got.clone()), sorted(expect.clone()), "window at {t}");
        let n = expect.len();
        let count_at = take(&count).into_iter().find(|(ct, _)| ct == t);
        assert_eq!(
            count_at.map(|(_, r)| r),
            Some(vec![(String::new(), n.to_string())]),
            "count_by_window at {t}"
        );
        let reduced_at: Vec<_> = take(&reduced)
            .into_iter()
            .filter(|(rt, _)| rt == t)
            .collect();
        let expect_reduced = if n == 0 {
            vec![]
        } else {
            vec![(String::new(), n.to_string())]
        };
        assert_eq!(reduced_at[0].1, expect_reduced, "reduce_by_window at {t}");
        let want = sums(&expect);
        for (name, seen) in [
            ("recomputed", &by_key),
            ("inverse udf", &by_key_inv),
            ("inverse builtin", &by_key_builtin_inv),
        ] {
            let at: Vec<_> = take(seen).into_iter().filter(|(st, _)| st == t).collect();
            assert_eq!(at.len(), 1, "{name}: one output at {t}");
            assert_eq!(
                sorted(at[0].1.clone()),
                want,
                "reduce_by_key_and_window {name} at {t}"
            );
        }
        let words_in: Vec<(String, String)> = window_input(&word_input, *t)
            .into_iter()
            .map(|(_, w)| (w, "1".to_string()))
            .collect();
        let by_value_at: Vec<_> = take(&by_value)
            .into_iter()
            .filter(|(st, _)| st == t)
            .collect();
        assert_eq!(
            sorted(by_value_at[0].1.clone()),
            sums(&words_in),
            "count_by_value_and_window at {t}"
        );
        let grouped_at: Vec<_> = take(&grouped)
            .into_iter()
            .filter(|(st, _)| st == t)
            .collect();
        let group_sizes: Vec<(String, String)> = grouped_at[0]
            .1
            .iter()
            .map(|(k, v)| {
                let values: Vec<i64> = serde_json::from_str(v).expect("a JSON array");
                (k.clone(), values.iter().sum::<i64>().to_string())
            })
            .collect();
        assert_eq!(sorted(group_sizes), want, "group_by_key_and_window at {t}");
    }
    // Past the end of the data, the incremental windows dropped every key, as the recomputed
    // ones have none.
    let (_, last_inv) = take(&by_key_inv).pop().expect("an output");
    assert!(last_inv.is_empty(), "{last_inv:?}");
}

#[test]
fn incremental_window_state_lives_in_rocksdb_and_continues_after_a_restart() {
    let dir = JobDir::new();
    // A window far longer than the test: the first run's batch is still inside it when the
    // second run's batch arrives, so the second run must see both.
    let len = Duration::from_secs(600);
    let slide = Duration::from_millis(INTERVAL as u64);
    for (round, expect) in [(0, [("x", "2"), ("y", "1")]), (1, [("x", "4"), ("y", "2")])] {
        let (ctx, _, pairs, queue) = pairs_job("restart", &dir);
        let windowed =
            record(&pairs.reduce_by_key_and_window_inv(Builtin::SumI64, len, slide, None));
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Stopped gracefully once the window shows the batch (not --until-idle, which would
        // slide the window on past its data, as Spark's windows slide when left running).
        let job = ctx
            .start(sluice_host::engine::JobOptions::default())
            .expect("the job starts");
        queue.push_lines(["x x y"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while take(&windowed)
            .last()
            .is_none_or(|(_, last)| sorted(last.clone()) != expect)
        {
            assert!(std::time::Instant::now() < deadline, "round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
        job.stop();
        job.wait().expect("the job runs");
        drop(queue);
        let last = take(&windowed).pop().expect("an output").1;
        assert_eq!(sorted(last), expect, "round {round}");
    }
    assert!(
        dir.path().join("state/CURRENT").exists(),
        "RocksDB files in the state folder"
    );
}
