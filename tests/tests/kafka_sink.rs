//! The Kafka sink (`kind = "kafka"`, `host/src/sinks/kafka.rs`) against a real Kafka-protocol
//! broker (`sluice_tests::kafka::Broker`, noida-db), driven through the real `host run`:
//! exactly-once output seen by an independent `read_committed` consumer, the same under
//! `kill -9` at random moments, topic routing and headers from record fields, and the bad
//! inputs (an unreachable broker, a record missing its topic field, a refused property).
//!
//! Broker tests hold [`ONE_BROKER`], so this file runs one broker at a time; consumers are
//! dropped as soon as they have read (the broker spins on idle consumers).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{Message, TopicPartitionList};
use sluice_tests::kafka::Broker;
use sluice_tests::{JobDir, Rng, describe, free_port, lines_of};

/// Broker tests take turns.
static ONE_BROKER: Mutex<()> = Mutex::new(());

fn one_broker() -> std::sync::MutexGuard<'static, ()> {
    ONE_BROKER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("an admin client");
    let topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(topic, e)| panic!("create {topic}: {e}"));
    }
}

/// One record as a consumer read it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Read {
    key: Option<String>,
    value: String,
    headers: Vec<(String, Option<String>)>,
}

/// Every record of `topic`'s `partitions` partitions from the start, read with `isolation`
/// (`read_committed` / `read_uncommitted`) until every partition is at its end and nothing
/// new came for a second; the consumer is closed before returning.
fn read_all(broker: &Broker, topic: &str, partitions: i32, isolation: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("check-{topic}-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("an offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let mut at_end = std::collections::BTreeSet::new();
    let mut last_new = Instant::now();
    let started = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), text(h.value)))
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Read {
                    key: text(m.key()),
                    value: text(m.payload()).unwrap_or_default(),
                    headers,
                });
                at_end.remove(&m.partition());
                last_new = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {}
        }
        if at_end.len() == partitions as usize && last_new.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reading {topic} ({isolation}) did not reach its end in 60 s"
        );
    }
    drop(consumer);
    records
}

/// `host run` lines `k<i> <i>` for `i` in `from..to`, one file per `per_file` lines.
fn write_lines(dir: &JobDir, from: usize, to: usize, per_file: usize) {
    let mut i = from;
    let mut file = 0;
    while i < to {
        let end = (i + per_file).min(to);
        let text: String = (i..end).map(|i| format!("k{i} {i}\n")).collect();
        dir.file(&format!("in/part-{from:06}-{file:05}.txt"), text);
        i = end;
        file += 1;
    }
}

/// A job: `in/` lines `KEY N` → (key, number) → the kafka sink with `sink` settings.
fn keyed_job(bootstrap: &str, sink: &str, extra_job: &str) -> String {
    format!(
        r#"[job]
name = "to-kafka"
batch_interval = "200ms"
partitions = 2
checkpoint = "ckpt"
{extra_job}

[[sources]]
name = "lines"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "numbers"
op = "map"
input = "lines"
udf = "text#key_number"

[[sinks]]
kind = "kafka"
input = "numbers"
bootstrap = "{bootstrap}"
{sink}
"#
    )
}

/// The `(key, value)` pairs read, counted.
fn counted(records: &[Read]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts
            .entry((r.key.clone().unwrap_or_default(), r.value.clone()))
            .or_insert(0) += 1;
    }
    counts
}

/// Every `k<i> i` for `i < n` exactly once, and nothing else.
fn assert_exactly_once(records: &[Read], n: usize, what: &str) {
    let counts = counted(records);
    let lost: Vec<usize> = (0..n)
        .filter(|i| !counts.contains_key(&(format!("k{i}"), i.to_string())))
        .collect();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(10).collect();
    assert!(
        lost.is_empty() && twice.is_empty() && records.len() == n,
        "{what}: {} records read for {n} inputs; lost {} (first {:?}); written twice {:?}",
        records.len(),
        lost.len(),
        &lost[..lost.len().min(10)],
        twice
    );
}

#[test]
fn an_exactly_once_job_writes_every_record_once_with_key_value_and_header() {
    let _turn = one_broker();
    let broker = Broker::start();
    create_topic(&broker, "numbers", 3);
    let dir = JobDir::new();
    write_lines(&dir, 0, 3000, 500);
    dir.manifest(&keyed_job(
        &broker.bootstrap(),
        "topic = \"numbers\"\nexactly_once = true\nheaders = { source = \"sluice\" }",
        "",
    ));
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));

    let records = read_all(&broker, "numbers", 3, "read_committed");
    assert_exactly_once(&records, 3000, "read_committed");
    for r in &records {
        assert_eq!(
            r.headers,
            vec![("source".to_string(), Some("sluice".to_string()))],
            "{r:?}"
        );
    }
    // A second run over the same checkpoint and topic adds only the new files.
    write_lines(&dir, 3000, 3600, 300);
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    assert_exactly_once(
        &read_all(&broker, "numbers", 3, "read_committed"),
        3600,
        "after a restart",
    );
    // A fresh checkpoint numbers batches from 1 again, below the sink's marker, but later in
    // time: its batches are written, not mistaken for batches committed before.
    std::fs::remove_dir_all(dir.path().join("ckpt")).expect("remove the checkpoint");
    std::fs::remove_dir_all(dir.path().join("in")).expect("remove the input read");
    write_lines(&dir, 3600, 4000, 200);
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("was committed to Kafka before"),
        "{}",
        describe(&out)
    );
    assert_exactly_once(
        &read_all(&broker, "numbers", 3, "read_committed"),
        4000,
        "with a fresh checkpoint",
    );
}

/// Where a kill lands: after a line the run logs at that point (plus a few random
/// milliseconds for the first two).
const MOMENTS: [(&str, Option<&str>); 4] = [
    ("while starting or recovering", None),
    ("while a batch runs and produces", Some("input read")),
    (
        "inside an open transaction, its records delivered",
        Some("records delivered, committing the transaction"),
    ),
    (
        "after the Kafka commit, before the checkpoint",
        Some("kafka sink: batch written"),
    ),
];

#[test]
fn kill_nine_at_random_moments_and_the_committed_output_holds_each_record_once() {
    let kills: usize = std::env::var("SLUICE_KAFKA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("kafka crash test: seed {seed} (SLUICE_CRASH_SEED replays it), {kills} kills");
    let _turn = one_broker();
    let broker = Broker::start();
    create_topic(&broker, "numbers", 3);
    let dir = JobDir::new();
    // About eight batches a run, each large enough that its transaction stays open a while.
    let per_file = 2000;
    let n = per_file * (kills * 8).max(24);
    write_lines(&dir, 0, n, per_file);
    dir.manifest(&keyed_job(
        &broker.bootstrap(),
        "topic = \"numbers\"\nexactly_once = true",
        "",
    ));
    let command = || {
        let mut cmd = dir.command(&["--until-idle"]);
        cmd.env(
            "SLUICE_LOG",
            "info,sluice_host::engine=debug,sluice_host::sinks=debug",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        cmd
    };
    let mut rng = Rng(seed);
    let mut killed = 0;
    let mut by_moment = [0usize; MOMENTS.len()];
    let mut finished_early = 0;
    let mut skipped_after_restart = 0;
    // Every moment in turn from a random first one, so a few kills cover them all.
    let first = rng.below(MOMENTS.len() as u64) as usize;
    while killed < kills {
        let moment = (first + killed) % MOMENTS.len();
        let occurrence = rng.below(3) + 1;
        let jitter = match moment {
            0 | 1 => Duration::from_micros(rng.below(20_000)),
            _ => Duration::ZERO,
        };
        let mut child = command().spawn().expect("start the job");
        let lines = lines_of(&mut child);
        let started = Instant::now();
        let startup = Duration::from_millis(rng.below(600));
        let mut seen = 0;
        let mut exited = None;
        loop {
            while let Ok(line) = lines.try_recv() {
                if line.contains("was committed to Kafka before") {
                    skipped_after_restart += 1;
                }
                if MOMENTS[moment].1.is_some_and(|m| line.contains(m)) {
                    seen += 1;
                }
            }
            if let Some(status) = child.try_wait().expect("poll the job") {
                exited = Some(status);
                break;
            }
            let due = match MOMENTS[moment].1 {
                None => started.elapsed() >= startup,
                Some(_) => seen >= occurrence,
            };
            if due {
                std::thread::sleep(jitter);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the job neither finished nor reached '{}'",
                MOMENTS[moment].0
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        match exited {
            Some(status) => {
                assert!(status.success(), "the job failed after {killed} kills");
                finished_early += 1;
                if finished_early > 2 {
                    break;
                }
            }
            None => {
                child.kill().expect("kill -9");
                child.wait().expect("reap the job");
                killed += 1;
                by_moment[moment] += 1;
            }
        }
    }
    let out = command().output().expect("run the job to the end");
    assert!(out.status.success(), "seed {seed}: {}", describe(&out));
    skipped_after_restart += String::from_utf8_lossy(&out.stderr)
        .matches("was committed to Kafka before")
        .count();
    println!(
        "kafka crash test: {killed} kills ({}); {skipped_after_restart} batches found committed before their restart",
        MOMENTS
            .iter()
            .zip(by_moment)
            .map(|((what, _), k)| format!("{k} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(killed >= 3.min(kills), "only {killed} kills landed");
    if by_moment[3] > 0 {
        assert!(
            skipped_after_restart > 0,
            "seed {seed}: {} kills after a Kafka commit, but no batch run again found its marker",
            by_moment[3]
        );
    }

    let committed = read_all(&broker, "numbers", 3, "read_committed");
    assert_exactly_once(&committed, n, &format!("seed {seed}: read_committed"));
    let all = read_all(&broker, "numbers", 3, "read_uncommitted");
    let aborted = all.len() - committed.len();
    println!(
        "kafka crash test: read_uncommitted sees {} records, {aborted} of them from aborted transactions",
        all.len()
    );
    if by_moment[2] > 0 {
        assert!(
            aborted > 0,
            "seed {seed}: {} kills inside an open transaction, but read_uncommitted saw no aborted record",
            by_moment[2]
        );
    }
}

#[test]
fn topic_key_and_headers_come_from_record_fields() {
    let _turn = one_broker();
    let broker = Broker::start();
    create_topic(&broker, "clicks", 1);
    create_topic(&broker, "views", 2);
    let dir = JobDir::new();
    let mut text = String::new();
    for i in 0..20 {
        let to = if i % 4 == 0 { "clicks" } else { "views" };
        text.push_str(&format!(
            "{{\"to\":\"{to}\",\"user\":{},\"h\":{{\"trace\":\"t{i}\"}},\"n\":{i}}}\n",
            i % 3
        ));
    }
    dir.file("in/events.jsonl", text);
    dir.manifest(&format!(
        r#"[job]
name = "route"
batch_interval = "200ms"

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "events"
op = "filter"
input = "lines"
udf = "text#non_empty"
value_codec = "json"

[[sinks]]
kind = "kafka"
input = "events"
bootstrap = "{}"
topic_field = "to"
key_field = "user"
headers_field = "h"
headers = {{ source = "sluice" }}
"#,
        broker.bootstrap()
    ));
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let clicks = read_all(&broker, "clicks", 1, "read_committed");
    let views = read_all(&broker, "views", 2, "read_committed");
    assert_eq!((clicks.len(), views.len()), (5, 15), "{clicks:?} {views:?}");
    for (records, to) in [(&clicks, "clicks"), (&views, "views")] {
        for r in records.iter() {
            let v: serde_json::Value = serde_json::from_str(&r.value).expect("JSON text");
            assert_eq!(v["to"], to, "{r:?}");
            let i = v["n"].as_u64().expect("n");
            assert_eq!(r.key, Some((i % 3).to_string()), "{r:?}");
            assert_eq!(
                r.headers,
                vec![
                    ("source".to_string(), Some("sluice".to_string())),
                    ("trace".to_string(), Some(format!("t{i}"))),
                ],
                "{r:?}"
            );
        }
    }
}

#[test]
fn a_producer_fenced_by_another_with_its_transactional_id_fails_the_job_saying_so() {
    let _turn = one_broker();
    let broker = Broker::start();
    create_topic(&broker, "numbers", 3);
    let dir = JobDir::new();
    write_lines(&dir, 0, 100, 100);
    dir.manifest(&keyed_job(
        &broker.bootstrap(),
        "topic = \"numbers\"\nexactly_once = true",
        "",
    ));
    let mut cmd = dir.command(&[]);
    cmd.env("SLUICE_LOG", "info,sluice_host::sinks=debug");
    let (mut child, log) = sluice_tests::spawn_logged(&mut cmd);
    let text = || log.lock().map(|l| l.clone()).unwrap_or_default();
    sluice_tests::wait_for("the first batch in Kafka", || {
        text().contains("kafka sink: batch written")
    });
    // Another producer with the job's sink's transactional.id (sluice.<tenant>.<job>.sink<N>).
    let other: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", "sluice.local.to-kafka.sink1")
        .create()
        .expect("a producer");
    rdkafka::producer::Producer::init_transactions(&other, Duration::from_secs(30))
        .expect("init_transactions fences the job's producer");
    write_lines(&dir, 100, 200, 100);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the job") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the fenced job did not fail:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(other);
    assert!(!status.success(), "{}", text());
    assert!(
        text().contains(
            "the producer with transactional.id `sluice.local.to-kafka.sink1` was fenced"
        ) && text().contains("is the job running twice"),
        "{}",
        text()
    );
    assert_exactly_once(
        &read_all(&broker, "numbers", 3, "read_committed"),
        100,
        "before the fencing",
    );
}

/// `host run --until-idle` of a job whose sink writes to `bootstrap`: the output, and how long
/// it took.
fn run_timed(dir: &JobDir) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = dir.run_until_idle();
    (out, started.elapsed())
}

#[test]
fn an_unreachable_broker_fails_the_job_within_its_timeout_naming_the_address() {
    // A port nobody listens on.
    let bootstrap = format!("127.0.0.1:{}", free_port());
    for exactly_once in [true, false] {
        let dir = JobDir::new();
        write_lines(&dir, 0, 10, 10);
        dir.manifest(&keyed_job(
            &bootstrap,
            &format!("topic = \"numbers\"\ntimeout = \"2s\"\nexactly_once = {exactly_once}"),
            "",
        ));
        let (out, took) = run_timed(&dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            err.contains(&format!(
                "kafka sink (bootstrap {bootstrap}): no answer from the broker within 2s"
            )) && err.contains("check that a Kafka broker listens at `bootstrap`"),
            "exactly_once = {exactly_once}: {}",
            describe(&out)
        );
        assert!(
            took < Duration::from_secs(30),
            "exactly_once = {exactly_once}: the job took {took:?} to fail"
        );
        println!("unreachable broker, exactly_once = {exactly_once}: failed after {took:?}");
    }
}

#[test]
fn a_record_without_its_topic_field_fails_the_batch_naming_field_and_record() {
    let dir = JobDir::new();
    dir.file("in/events.jsonl", "{\"to\":\"a\",\"n\":1}\n{\"n\":2}\n");
    dir.manifest(&format!(
        r#"[job]
name = "route"
batch_interval = "200ms"

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "events"
op = "filter"
input = "lines"
udf = "text#non_empty"
value_codec = "json"

[[sinks]]
kind = "kafka"
input = "events"
bootstrap = "127.0.0.1:{}"
topic_field = "to"
"#,
        free_port()
    ));
    let out = dir.run_until_idle();
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sink 1 (of stream 'events')")
            && err.contains(r#"({"n":2}): the value has no field `to`"#),
        "{}",
        describe(&out)
    );
}

#[test]
fn refused_and_unknown_properties_are_plan_errors_at_their_sink_line() {
    for (property, says) in [
        (
            "\"transactional.id\" = \"mine\"",
            "properties: `transactional.id` is set by `exactly_once = true`",
        ),
        ("\"lingr.ms\" = 5", "properties: `lingr.ms` = \"5\""),
    ] {
        let dir = JobDir::new();
        dir.file("in/a.txt", "k 1\n");
        let manifest = dir.manifest(&keyed_job(
            "127.0.0.1:9092",
            &format!("topic = \"numbers\"\nproperties = {{ {property} }}"),
            "",
        ));
        let out = dir.command(&["--until-idle"]).output().expect("run");
        assert!(!out.status.success(), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        // `[[sinks]]` of keyed_job is on line 20.
        let at = format!("{}:20: sink 1 (numbers): {says}", manifest.display());
        assert!(err.contains(&at), "wanted {at:?} in\n{}", describe(&out));
    }
    // A field of another sink kind is named too.
    let dir = JobDir::new();
    let manifest = dir.manifest(
        "[job]\nname = \"x\"\n[[sources]]\nname = \"l\"\nkind = \"directory\"\npath = \"in\"\n[[sinks]]\nkind = \"kafka\"\ninput = \"l\"\nbootstrap = \"127.0.0.1:9092\"\ntopic = \"t\"\nprefix = \"out\"\n",
    );
    let out = dir.command(&[]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:7: `prefix` does not apply to a kafka sink",
            manifest.display()
        )),
        "{}",
        describe(&out)
    );
}
