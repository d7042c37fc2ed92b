//! The Rust API: a StreamingContext builds the same job a manifest does, fed by a queue source
//! and observed by foreach-batch closures.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_host::engine::{JobOptions, StreamingContext};
use sluice_host::plan::Codec;
use sluice_tests::{record_batches, root, udf};

fn ctx(name: &str) -> StreamingContext {
    udf("text"); // builds the components once
    StreamingContext::new(name, Duration::from_millis(50), root().join("dist/udfs"))
        .expect("a context")
        .partitions(3)
}

#[test]
fn word_count_over_a_queue_one_batch_per_queued_item() {
    let ctx = ctx("api-wordcount");
    let (lines, queue) = ctx.queue_stream("lines");
    let counts = lines
        .flat_map("text#split_words")
        .map("text#pair_one")
        .reduce_by_key("aggregates#sum_i64")
        .named("counts")
        .codecs(Codec::Text, Codec::Number);
    let seen = record_batches(&counts);
    queue.push_lines(["to be or", "not to be"]);
    queue.push_lines(["be quick"]);
    drop(queue); // closes the queue: the job ends once both batches are done
    let summary = ctx.run_until_idle().expect("the job runs");
    assert_eq!(summary.records_in, 3);
    let seen = seen.lock().unwrap();
    let with_data: Vec<BTreeMap<String, String>> = seen
        .iter()
        .filter(|b| !b.records.is_empty())
        .map(|b| b.records.iter().cloned().collect())
        .collect();
    let expect = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        with_data,
        [
            expect(&[("be", "2"), ("not", "1"), ("or", "1"), ("to", "2")]),
            expect(&[("be", "1"), ("quick", "1")])
        ]
    );
}

#[test]
fn the_api_reports_plan_problems_like_a_manifest() {
    let ctx = ctx("api-bad");
    let (lines, _queue) = ctx.queue_stream("lines");
    lines.reduce_by_key("text#split_words").print(1);
    let err = match ctx.start(JobOptions::default()) {
        Ok(_) => panic!("a transform function planned as a reducer"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("reduce_by_key needs a function of the reducer world"),
        "{err}"
    );
}

#[test]
fn a_job_stops_gracefully_and_keeps_its_batch_reports() {
    let ctx = ctx("api-stop");
    let (lines, queue) = ctx.queue_stream("lines");
    let n = lines.count();
    let seen = record_batches(&n);
    let job = ctx.start(JobOptions::default()).expect("the job starts");
    queue.push_lines(["a", "b", "c"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.records.iter().any(|(_, v)| v == "3"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the queued batch was counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reports = job.reports();
    let counted = reports
        .iter()
        .find(|r| r.records_in == 3)
        .expect("a report for the batch");
    let ops: Vec<(&str, u64, u64)> = counted
        .operators
        .iter()
        .map(|o| (o.op, o.records_in, o.records_out))
        .collect();
    assert_eq!(ops, [("source", 3, 3), ("count", 3, 1)]);
    assert!(counted.error.is_none() && counted.processing_time <= counted.total_delay);
    job.stop();
    let summary = job.wait().expect("a graceful stop");
    assert!(summary.stopped);
    assert_eq!(summary.records_in, 3);
}

#[test]
fn a_checkpointed_context_resumes_with_ids_going_on_and_files_read_once() {
    use sluice_host::engine::StateSpec;
    use sluice_host::plan::{Builtin, CheckpointSpec, Start};
    let dir = sluice_tests::JobDir::new();
    dir.file("in/0.txt", "a 1\nb 2\n");
    let run = || {
        let ctx = ctx("api-checkpointed").checkpoint(CheckpointSpec::new(dir.path().join("ckpt")));
        let totals = ctx
            .directory_stream("lines", dir.path().join("in"), Start::Earliest, Some(1))
            .map("text#key_number")
            .codecs(Codec::Text, Codec::Number)
            .update_state_by_key(Builtin::SumI64, StateSpec::default());
        let seen = record_batches(&totals);
        ctx.run_until_idle().expect("the job runs");
        seen.lock().unwrap().clone()
    };
    let first = run();
    let last = first.last().expect("a batch");
    dir.file("in/1.txt", "a 10\n");
    let second = run();
    assert!(
        second.iter().all(|b| b.id > last.id && b.time > last.time),
        "ids and times go on from the checkpoint: {second:?}"
    );
    let totals: BTreeMap<String, String> = second
        .last()
        .expect("a batch")
        .records
        .iter()
        .cloned()
        .collect();
    assert_eq!(
        totals,
        BTreeMap::from([("a".into(), "11".into()), ("b".into(), "2".into())])
    );
    assert!(
        dir.path().join("ckpt/state/CURRENT").exists(),
        "state inside the checkpoint"
    );
}
