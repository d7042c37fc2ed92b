//! A UDF swapped in a running job (the library's `Job::rebind_udf`, what hot reload builds on):
//! the new version takes over at a batch boundary, no batch mixes versions, and the state the
//! old version built carries on.

use std::time::{Duration, Instant};

use sluice_host::engine::{JobOptions, StateSpec, StreamingContext};
use sluice_host::plan::{Builtin, Codec};
use sluice_tests::{JobDir, record_batches, root, test_guest, udf};

#[test]
fn a_new_version_takes_over_at_a_batch_boundary_and_state_carries_on() {
    udf("text");
    let v2 = test_guest("text_v2");
    let dir = JobDir::new();
    let ctx = StreamingContext::new("swap", Duration::from_millis(50), root().join("dist/udfs"))
        .expect("a context")
        .partitions(2)
        .state_dir(dir.path().join("state"));
    let (lines, queue) = ctx.queue_stream("lines");
    let pairs = lines
        .map("text#key_number")
        .named("pairs")
        .codecs(Codec::Text, Codec::Number);
    let totals = pairs
        .update_state_by_key(Builtin::SumI64, StateSpec::default())
        .named("totals");
    let seen_pairs = record_batches(&pairs);
    let seen_totals = record_batches(&totals);
    let job = ctx.start(JobOptions::default()).expect("the job starts");

    // Every batch: 40 records `k 1` over two keys, in both partitions.
    let batch: Vec<String> = (0..40).map(|i| format!("k{} 1", i % 2)).collect();
    let pushed_before = 6;
    let pushed_after = 6;
    let wait_batches = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen_pairs.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "batches did not run");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for _ in 0..pushed_before {
        queue.push_lines(batch.iter().map(String::as_str));
    }
    wait_batches(pushed_before);
    // Swap while batches keep coming: pushes go on during the rebind.
    let component = ctx.runtime().load_file(&v2).expect("load text_v2");
    let pusher = {
        let batch = batch.clone();
        std::thread::spawn(move || {
            for _ in 0..pushed_after {
                queue.push_lines(batch.iter().map(String::as_str));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let outcomes = job
        .rebind_udf("text", component, Some(2))
        .expect("text_v2 has key_number");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(outcomes[0].spec.ends_with("#key_number"), "{outcomes:?}");
    assert!(outcomes[0].changed());
    pusher.join().expect("the pusher");
    wait_batches(pushed_before + pushed_after);
    job.stop();
    job.wait().expect("the job ends cleanly");

    let pairs = seen_pairs.lock().unwrap();
    // Each batch wholly from one version: every value 1 (v1) or every value 100 (v2).
    let versions: Vec<u8> = pairs
        .iter()
        .filter(|b| !b.records.is_empty())
        .map(|b| {
            let values: Vec<&str> = b.records.iter().map(|(_, v)| v.as_str()).collect();
            if values.iter().all(|v| *v == "1") {
                1
            } else if values.iter().all(|v| *v == "100") {
                2
            } else {
                panic!("batch {} mixes versions: {values:?}", b.id)
            }
        })
        .collect();
    assert!(
        versions.len() >= pushed_before + pushed_after,
        "{versions:?}"
    );
    let first_v2 = versions.iter().position(|v| *v == 2).expect("v2 ran");
    assert!(first_v2 >= pushed_before, "{versions:?}");
    assert!(
        versions[first_v2..].iter().all(|v| *v == 2),
        "no batch after the swap runs the old version: {versions:?}"
    );
    // The state went on from what v1 built: the totals are the sum of every batch's pairs.
    let expected: i64 = pairs
        .iter()
        .flat_map(|b| b.records.iter())
        .map(|(_, v)| v.parse::<i64>().expect("a number"))
        .sum();
    let totals = seen_totals.lock().unwrap();
    let last = totals.last().expect("totals");
    let total: i64 = last
        .records
        .iter()
        .map(|(_, v)| v.parse::<i64>().expect("a number"))
        .sum();
    assert_eq!(total, expected, "{:?}", last.records);
    assert_eq!(
        total,
        20 * (first_v2 as i64) * 2 + 40 * 100 * (versions.len() - first_v2) as i64,
        "{versions:?}"
    );
}

#[test]
fn a_version_without_the_function_is_refused_and_the_old_one_keeps_running() {
    udf("text");
    let bench = test_guest("bench");
    let ctx = StreamingContext::new(
        "swap-refused",
        Duration::from_millis(50),
        root().join("dist/udfs"),
    )
    .expect("a context");
    let (lines, queue) = ctx.queue_stream("lines");
    let pairs = lines.map("text#key_number").named("pairs");
    let seen = record_batches(&pairs);
    let job = ctx.start(JobOptions::default()).expect("the job starts");
    let component = ctx.runtime().load_file(&bench).expect("load bench");
    let err = job
        .rebind_udf("text", component, None)
        .expect_err("bench has no key_number");
    let shown = err.to_string();
    assert!(shown.contains("key_number"), "{shown}");
    queue.push_lines(["a 5"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().iter().all(|b| b.records.is_empty()) {
        assert!(Instant::now() < deadline, "the batch did not run");
        std::thread::sleep(Duration::from_millis(10));
    }
    job.stop();
    job.wait().expect("the job ends cleanly");
    let seen = seen.lock().unwrap();
    let records: Vec<&(String, String)> = seen.iter().flat_map(|b| b.records.iter()).collect();
    assert_eq!(
        records,
        [&("a".to_string(), "5".to_string())],
        "v1 still runs"
    );
}
