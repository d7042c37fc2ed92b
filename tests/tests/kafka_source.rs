//! The Kafka direct source against a real Kafka-protocol broker (`sluice_tests::kafka::Broker`)
//! through the real `host` binary: exactly once across `kill -9` (offset ranges recorded in the
//! checkpoint, read again after a crash), `starting_timestamp`, a partition added while the job
//! runs, consumer lag, and bad input: an unreachable broker, a missing topic, a record that
//! does not decode, a manifest that mixes `topics` and `pattern`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_tests::kafka::{Broker, Record};
use sluice_tests::{JobDir, Rng, describe, free_port, lines_of, wait_for};

fn source(bootstrap: &str, extra: &str) -> String {
    format!(
        r#"[[sources]]
name = "clicks"
kind = "kafka"
bootstrap = "{bootstrap}"
topics = ["clicks"]
starting_offsets = "earliest"
broker_timeout = "5s"
{extra}
"#
    )
}

/// A job that keeps every record (`out/raw`) and a running count and sum per user
/// (`out/totals`).
fn totals_manifest(bootstrap: &str) -> String {
    format!(
        r#"[job]
name = "kafka-totals"
batch_interval = "200ms"
partitions = 2
checkpoint = "ckpt"
checkpoint_interval = "600ms"

{}
[[streams]]
name = "amounts"
op = "map"
input = "clicks"
udf = "clickstream#user_amount"
key_codec = "number"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "amounts"
builtin = "count_and_sum"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"

[[sinks]]
kind = "text_files"
input = "clicks"
prefix = "out/raw"
"#,
        source(bootstrap, "max_rate_per_partition = 2000")
    )
}

/// Clickstream lines `from..to` (WORKLOADS.md's layout), spread over 3 partitions, and the
/// totals they add to `expected`.
fn clicks(from: u64, to: u64, expected: &mut BTreeMap<u64, (u64, u64)>) -> Vec<(i32, String)> {
    let mut rng = Rng(from);
    (from..to)
        .map(|i| {
            let user = rng.below(200);
            let cents = rng.below(10_000);
            let e = expected.entry(user).or_insert((0, 0));
            e.0 += 1;
            e.1 += cents;
            (
                (i % 3) as i32,
                format!(
                    "{},{user},purchase,{}.{:02}",
                    1_700_000_000_000 + i,
                    cents / 100,
                    cents % 100
                ),
            )
        })
        .collect()
}

fn produce(broker: &Broker, topic: &str, records: &[(i32, String)]) {
    broker.produce(
        topic,
        records.iter().map(|(p, v)| Record {
            partition: *p,
            key: None,
            value: v.as_bytes(),
            timestamp: None,
        }),
    );
}

/// `(user, [count, sum])` lines of the newest batch folder.
fn final_totals(dir: &JobDir) -> BTreeMap<u64, (u64, u64)> {
    let mut totals = BTreeMap::new();
    for line in dir.last_batch_lines("out/totals") {
        let line = line.trim_start_matches('(').trim_end_matches("])");
        let (user, rest) = line.split_once(",[").expect("(user,[count,sum])");
        let (count, sum) = rest.split_once(',').expect("count,sum");
        let previous = totals.insert(
            user.parse().expect("a user id"),
            (count.parse().expect("a count"), sum.parse().expect("a sum")),
        );
        assert!(previous.is_none(), "user {user} written twice");
    }
    totals
}

/// Records flowing in, `kill -9` at random moments (while starting, after a batch), restarted
/// each time; then a run to the end: every record is in `out/raw` exactly once and the totals
/// are the input's.
#[test]
fn kill_nine_loses_no_kafka_record_and_counts_none_twice() {
    let kills: usize = std::env::var("SLUICE_KAFKA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    println!("kafka crash test: seed {seed}, {kills} kills");
    let broker = Broker::start();
    broker.create_topic("clicks", 3);
    let dir = JobDir::new();
    dir.manifest(&totals_manifest(&broker.bootstrap()));
    let mut expected = BTreeMap::new();
    let mut all: Vec<String> = Vec::new();
    let mut next = 0u64;
    let mut rng = Rng(seed);
    for k in 0..kills {
        // More records arrive while the job is down and while it runs.
        let batch = clicks(next, next + 1500, &mut expected);
        next += 1500;
        produce(&broker, "clicks", &batch);
        all.extend(batch.into_iter().map(|(_, v)| v));
        let mut child = dir
            .command(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the job");
        let lines = lines_of(&mut child);
        let batches_before_kill = rng.below(4);
        let mut done = 0;
        let started = Instant::now();
        while done < batches_before_kill {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("batch done") => done += 1,
                Ok(_) => {}
                Err(_) => panic!("kill {k}: no batch finished in 30 s"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(150_000)));
        assert!(
            child.try_wait().expect("poll").is_none(),
            "kill {k}: the job ended by itself"
        );
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    let out = dir
        .command(&["--until-idle"])
        .output()
        .expect("run to the end");
    assert!(out.status.success(), "seed {seed}: {}", describe(&out));
    let mut raw = dir.output_lines("out/raw");
    raw.sort();
    all.sort();
    let twice: Vec<_> = raw.windows(2).filter(|w| w[0] == w[1]).take(5).collect();
    assert!(twice.is_empty(), "seed {seed}: records twice: {twice:?}");
    assert_eq!(raw.len(), all.len(), "seed {seed}: every record once");
    assert_eq!(raw, all, "seed {seed}");
    assert_eq!(final_totals(&dir), expected, "seed {seed}: the totals");
}

/// `starting_timestamp` starts each partition at its first record at or after the time; the
/// record's Kafka timestamp is its event time.
#[test]
fn starting_timestamp_replays_from_a_point_in_time() {
    let broker = Broker::start();
    broker.create_topic("clicks", 2);
    let values: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    broker.produce(
        "clicks",
        values.iter().enumerate().map(|(i, v)| Record {
            partition: (i % 2) as i32,
            key: None,
            value: v.as_bytes(),
            timestamp: Some(1_600_000_000_000 + i as i64 * 1000),
        }),
    );
    let dir = JobDir::new();
    dir.manifest(&format!(
        r#"[job]
name = "from-a-time"
batch_interval = "100ms"

[[sources]]
name = "clicks"
kind = "kafka"
bootstrap = "{}"
topics = ["clicks"]
starting_timestamp = 1600000012000
broker_timeout = "5s"

[[sinks]]
kind = "text_files"
input = "clicks"
prefix = "out/raw"
"#,
        broker.bootstrap()
    ));
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(dir.output_lines("out/raw"), values[12..].to_vec());
}

/// A partition added to the topic while the job runs is read from its start.
#[test]
fn a_partition_added_while_running_is_picked_up() {
    let broker = Broker::start();
    broker.create_topic("clicks", 1);
    produce(&broker, "clicks", &[(0, "before".into())]);
    let dir = JobDir::new();
    dir.manifest(&format!(
        r#"[job]
name = "grows"
batch_interval = "100ms"
checkpoint = "ckpt"

{}
[[sinks]]
kind = "text_files"
input = "clicks"
prefix = "out/raw"
"#,
        source(&broker.bootstrap(), "")
    ));
    let (mut child, log) = dir.spawn_logged(&[]);
    wait_for("the first record", || {
        dir.output_lines("out/raw") == ["before"]
    });
    broker.add_partitions("clicks", 3);
    produce(
        &broker,
        "clicks",
        &[(1, "in-1".into()), (2, "in-2".into()), (0, "in-0".into())],
    );
    wait_for("the new partitions' records", || {
        dir.output_lines("out/raw").len() == 4
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        dir.output_lines("out/raw"),
        ["before", "in-0", "in-1", "in-2"]
    );
    let log = log.lock().expect("the log").clone();
    assert!(log.contains("new partition clicks/1"), "{log}");
}

fn fails_with(dir: &JobDir, within: Duration, wanted: &[&str]) -> String {
    let started = Instant::now();
    let out = dir.command(&["--until-idle"]).output().expect("run");
    let text = describe(&out);
    assert!(!out.status.success(), "the job should fail: {text}");
    assert!(
        started.elapsed() < within,
        "failing took {:?}: {text}",
        started.elapsed()
    );
    for w in wanted {
        assert!(text.contains(w), "'{w}' not in: {text}");
    }
    text
}

fn plain_job(dir: &JobDir, source: &str) {
    dir.manifest(&format!(
        r#"[job]
name = "plain"
batch_interval = "100ms"

{source}
[[sinks]]
kind = "text_files"
input = "clicks"
prefix = "out/raw"
"#
    ));
}

#[test]
fn an_unreachable_broker_fails_the_job_after_broker_timeout() {
    let dir = JobDir::new();
    let nobody = format!("127.0.0.1:{}", free_port());
    plain_job(&dir, &source(&nobody, "").replace("\"5s\"", "\"2s\""));
    fails_with(
        &dir,
        Duration::from_secs(20),
        &[&nobody, "no broker", "broker_timeout"],
    );
}

#[test]
fn a_missing_topic_is_named() {
    let broker = Broker::start();
    broker.create_topic("other", 1);
    let dir = JobDir::new();
    plain_job(&dir, &source(&broker.bootstrap(), ""));
    fails_with(
        &dir,
        Duration::from_secs(20),
        &["topic 'clicks' does not exist", "other"],
    );
}

#[test]
fn a_record_that_does_not_decode_fails_or_is_skipped_as_the_source_says() {
    let broker = Broker::start();
    broker.create_topic("clicks", 1);
    let records: [&[u8]; 3] = [b"ok1", b"\xff\xfe", b"ok2"];
    broker.produce(
        "clicks",
        records.iter().map(|v| Record {
            partition: 0,
            key: None,
            value: v,
            timestamp: None,
        }),
    );
    let dir = JobDir::new();
    plain_job(&dir, &source(&broker.bootstrap(), ""));
    fails_with(
        &dir,
        Duration::from_secs(30),
        &[
            "clicks/0 offset 1",
            "not UTF-8",
            "on_decode_error = \"skip\"",
        ],
    );

    let dir = JobDir::new();
    plain_job(
        &dir,
        &source(&broker.bootstrap(), "on_decode_error = \"skip\""),
    );
    let out = dir.run_until_idle();
    let text = describe(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(dir.output_lines("out/raw"), ["ok1", "ok2"]);
    assert!(text.contains("skipped a record"), "{text}");

    // Kept as a dead letter, with where it came from; the others go on.
    let dir = JobDir::new();
    plain_job(
        &dir,
        &source(&broker.bootstrap(), "on_decode_error = \"dead_letter\""),
    );
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(dir.output_lines("out/raw"), ["ok1", "ok2"]);
    let listed = std::process::Command::new(sluice_tests::host_bin())
        .args(["dlq", "plain", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("host dlq");
    let text = describe(&listed);
    assert!(listed.status.success(), "{text}");
    assert!(text.contains("clicks/0 offset 1"), "{text}");
    assert!(text.contains("not UTF-8"), "{text}");
    assert!(text.contains("decode"), "{text}");

    // The envelope keeps key, headers and where the record came from.
    let dir = JobDir::new();
    plain_job(
        &dir,
        &source(
            &broker.bootstrap(),
            "format = \"envelope\"\non_decode_error = \"skip\"",
        ),
    );
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let lines = dir.output_lines("out/raw");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(first["value"], "ok1");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["offset"], 0);
}

#[test]
fn a_manifest_with_topics_and_pattern_is_refused_with_its_line() {
    let dir = JobDir::new();
    plain_job(&dir, &source("127.0.0.1:9", "pattern = \"click.*\""));
    let out = dir.command(&["--until-idle"]).output().expect("run");
    let text = describe(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("either `topics` or `pattern`"), "{text}");
    assert!(text.contains("job.toml:5:"), "{text}");
}

/// Consumer lag per partition: the job's status (`JobHandle::lag`, shown by `host status` and
/// the API) and the gauge `sluice_kafka_lag`, while `max_rate_per_partition` holds the job back.
#[test]
fn consumer_lag_is_in_the_status_and_a_metric() {
    use sluice_host::engine::{Job, JobOptions};
    use sluice_host::metrics::SeriesKey;
    use sluice_host::plan::{self, manifest};
    use sluice_host::udf::{RuntimeConfig, UdfDirectory};
    use std::sync::Arc;

    let broker = Broker::start();
    broker.create_topic("clicks", 2);
    let values: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
    broker.produce(
        "clicks",
        values.iter().enumerate().map(|(i, v)| Record {
            partition: (i % 2) as i32,
            key: None,
            value: v.as_bytes(),
            timestamp: None,
        }),
    );
    let dir = JobDir::new();
    dir.manifest(&format!(
        r#"[job]
name = "lagging"
batch_interval = "100ms"

{}
[[sinks]]
kind = "text_files"
input = "clicks"
prefix = "out/raw"
"#,
        source(&broker.bootstrap(), "max_rate_per_partition = 100")
    ));
    let path = dir.path().join("job.toml");
    let runtime = Arc::new(sluice_tests::runtime_with(RuntimeConfig::default()));
    let spec = manifest::load(&path).expect("the manifest loads");
    let udfs = UdfDirectory::new(dir.path().join("udfs"), &runtime);
    let planned = plan::plan(spec, &udfs, Some(&path)).expect("the job plans");
    let job = Job::start(planned, JobOptions::default(), runtime.registry().clone())
        .expect("the job starts");
    // 10 records per partition per batch: the lag stays high for many seconds.
    wait_for("lag of both partitions", || {
        let lag = job.lag();
        lag.len() == 2 && lag.iter().all(|l| l.lag.end == 1000 && l.lag.lag > 0)
    });
    let lag = job.lag();
    for l in &lag {
        assert_eq!(l.source, "clicks");
        assert_eq!(l.lag.lag, l.lag.end - l.lag.next, "{l:?}");
        let gauge = runtime.registry().gauge(&SeriesKey::new(
            "sluice_kafka_lag",
            &[
                ("tenant", "local"),
                ("job", "lagging"),
                ("source", "clicks"),
                ("topic", "clicks"),
                ("partition", &l.lag.partition.to_string()),
            ],
        ));
        assert!(gauge.is_some_and(|g| g > 0.0), "{gauge:?}");
    }
    job.stop();
    job.wait().expect("the job stops");
}
