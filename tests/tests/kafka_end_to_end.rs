//! Kafka in, Kafka out, exactly once (issue 17's "Show"): a 3-partition topic → parse → a running
//! total per user and an event-time window → Kafka topics written in one transaction per batch,
//! read back by an independent `read_committed` consumer.
//!
//! - `kill -9` at random moments, restarted each time (`SLUICE_KAFKA_KILLS`, default 20; the
//!   README's long run uses 200): every input record is in the output topic exactly once and the
//!   last total of each user is the input's.
//! - A restart from the checkpoint goes on where the job stopped; a new job with
//!   `starting_timestamp` replays from a point in time; a partition added while the job runs is
//!   read.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_tests::kafka::{Broker, Read, Record};
use sluice_tests::{JobDir, Rng, describe, lines_of, wait_for};

/// Clickstream in, two Kafka topics out: every record as it came (`raw`) and the running
/// `(count, sum)` per user (`totals`), both in one transaction per batch.
fn manifest(bootstrap: &str, start: &str) -> String {
    format!(
        r#"[job]
name = "kafka-e2e"
batch_interval = "200ms"
partitions = 2
checkpoint = "ckpt"
checkpoint_interval = "600ms"

[[sources]]
name = "clicks"
kind = "kafka"
bootstrap = "{bootstrap}"
topics = ["clicks"]
{start}
max_rate_per_partition = 3000
broker_timeout = "10s"

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

[[streams]]
name = "typed"
op = "map"
input = "clicks"
udf = "clickstream#type_amount"
value_codec = "number"

[[streams]]
name = "per_window"
op = "event_time_window"
input = "typed"
builtin = "count_and_sum"
window = "100ms"
watermark = "10ms"
output_mode = "append"

[[sinks]]
kind = "kafka"
input = "totals"
bootstrap = "{bootstrap}"
topic = "totals"
exactly_once = true

[[sinks]]
kind = "kafka"
input = "clicks"
bootstrap = "{bootstrap}"
topic = "raw"
exactly_once = true

[[sinks]]
kind = "kafka"
input = "per_window"
bootstrap = "{bootstrap}"
topic = "windows"
exactly_once = true
"#
    )
}

type Totals = BTreeMap<u64, (u64, u64)>;

/// Clickstream lines `from..to` over 3 partitions (event times 1 ms apart from
/// 1 700 000 000 000), adding their totals to `expected`.
fn clicks(from: u64, to: u64, expected: &mut Totals) -> Vec<(i32, String)> {
    let mut rng = Rng(from ^ 0x5EED);
    (from..to)
        .map(|i| {
            let user = rng.below(150);
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

fn produce(broker: &Broker, records: &[(i32, String)]) {
    broker.produce(
        "clicks",
        records.iter().map(|(p, v)| Record {
            partition: *p,
            key: None,
            value: v.as_bytes(),
            timestamp: None,
        }),
    );
}

fn topics(broker: &Broker, partitions: i32) {
    broker.create_topic("clicks", partitions);
    for out in ["raw", "totals", "windows"] {
        broker.create_topic(out, 3);
    }
}

/// The last `(count, sum)` per user in `totals`, as a `read_committed` reader sees it: a user
/// always goes to one partition, so its last record there is its newest total.
fn committed_totals(broker: &Broker) -> Totals {
    let mut last: BTreeMap<u64, (i32, i64, (u64, u64))> = BTreeMap::new();
    for Read {
        partition,
        offset,
        key,
        value,
        ..
    } in broker.read_all("totals", 3, "read_committed")
    {
        let user: u64 = key.expect("a keyed total").parse().expect("a user id");
        let pair: (u64, u64) = serde_json::from_str::<[u64; 2]>(&value)
            .map(|[c, s]| (c, s))
            .unwrap_or_else(|e| panic!("total '{value}': {e}"));
        let newer = last
            .get(&user)
            .is_none_or(|(p, o, _)| (*p, *o) < (partition, offset));
        assert!(
            last.get(&user).is_none_or(|(p, _, _)| *p == partition),
            "user {user} in two partitions"
        );
        if newer {
            last.insert(user, (partition, offset, pair));
        }
    }
    last.into_iter().map(|(u, (_, _, t))| (u, t)).collect()
}

/// Every value of `raw`, sorted, as a `read_committed` reader sees it.
fn committed_raw(broker: &Broker) -> Vec<String> {
    let mut raw: Vec<String> = broker
        .read_all("raw", 3, "read_committed")
        .into_iter()
        .map(|r| r.value)
        .collect();
    raw.sort();
    raw
}

fn assert_exactly_once(broker: &Broker, all: &mut [String], expected: &Totals, seed: u64) {
    let raw = committed_raw(broker);
    all.sort();
    let twice: Vec<_> = raw.windows(2).filter(|w| w[0] == w[1]).take(5).collect();
    assert!(twice.is_empty(), "seed {seed}: output twice: {twice:?}");
    assert_eq!(
        raw.len(),
        all.len(),
        "seed {seed}: every record's output once"
    );
    assert_eq!(raw, all, "seed {seed}");
    assert_eq!(
        &committed_totals(broker),
        expected,
        "seed {seed}: the totals"
    );
}

#[test]
fn kill_nine_again_and_again_kafka_to_kafka_exactly_once() {
    let kills: usize = std::env::var("SLUICE_KAFKA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("SLUICE_KAFKA_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("kafka end-to-end crash test: seed {seed} (SLUICE_KAFKA_SEED), {kills} kills");
    let broker = Broker::start();
    topics(&broker, 3);
    let dir = JobDir::new();
    dir.manifest(&manifest(
        &broker.bootstrap(),
        "starting_offsets = \"earliest\"",
    ));
    let mut expected = Totals::new();
    let mut all: Vec<String> = Vec::new();
    let mut next = 0u64;
    let mut rng = Rng(seed);
    let mut aborted_seen = false;
    for k in 0..kills {
        let batch = clicks(next, next + 600, &mut expected);
        next += 600;
        produce(&broker, &batch);
        all.extend(batch.into_iter().map(|(_, v)| v));
        let mut child = dir
            .command(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the job");
        let lines = lines_of(&mut child);
        // Kill while starting and recovering, or after the 1st–3rd batch, plus a little.
        let batches = rng.below(4);
        let mut done = 0;
        while done < batches {
            match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains("batch done") => done += 1,
                Ok(_) => {}
                Err(_) => panic!("seed {seed}, kill {k}: no batch finished in 60 s"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(200_000)));
        assert!(
            child.try_wait().expect("poll").is_none(),
            "seed {seed}, kill {k}: the job ended by itself"
        );
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        if !aborted_seen {
            aborted_seen = broker.read_all("raw", 3, "read_uncommitted").len()
                > broker.read_all("raw", 3, "read_committed").len();
        }
    }
    let out = dir
        .command(&["--until-idle"])
        .output()
        .expect("run to the end");
    assert!(out.status.success(), "seed {seed}: {}", describe(&out));
    assert_exactly_once(&broker, &mut all, &expected, seed);
    println!(
        "kafka end-to-end crash test: {} records, {} users, aborted output seen by a read_uncommitted reader: {aborted_seen}",
        all.len(),
        expected.len()
    );
}

#[test]
fn restart_replay_from_a_time_and_a_new_partition() {
    let broker = Broker::start();
    topics(&broker, 2);
    let dir = JobDir::new();
    dir.manifest(&manifest(
        &broker.bootstrap(),
        "starting_offsets = \"earliest\"",
    ));
    let mut expected = Totals::new();
    // Two partitions first.
    let first: Vec<(i32, String)> = clicks(0, 400, &mut expected)
        .into_iter()
        .map(|(p, v)| (p % 2, v))
        .collect();
    produce(&broker, &first);
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let mut all: Vec<String> = first.iter().map(|(_, v)| v.clone()).collect();
    assert_exactly_once(&broker, &mut all, &expected, 0);

    // Restarted from its checkpoint, the job reads only what is new, including a partition
    // added meanwhile and one added while it runs.
    broker.add_partitions("clicks", 3);
    let second = clicks(400, 700, &mut expected);
    produce(&broker, &second);
    all.extend(second.iter().map(|(_, v)| v.clone()));
    let (mut child, log) = dir.spawn_logged(&[]);
    wait_for("the second part's output", || {
        broker.read_all("raw", 3, "read_committed").len() == all.len()
    });
    broker.add_partitions("clicks", 4);
    let third: Vec<(i32, String)> = clicks(700, 800, &mut expected)
        .into_iter()
        .map(|(_, v)| (3, v))
        .collect();
    produce(&broker, &third);
    all.extend(third.iter().map(|(_, v)| v.clone()));
    wait_for("the new partition's output", || {
        broker.read_all("raw", 3, "read_committed").len() == all.len()
    });
    child.kill().expect("stop");
    child.wait().expect("reap");
    assert!(
        log.lock().expect("log").contains("new partition clicks/3"),
        "the new partition is logged"
    );
    assert_exactly_once(&broker, &mut all, &expected, 0);
    // The event-time windows came out too (100 ms windows over events 1 ms apart).
    let windows = broker.read_all("windows", 3, "read_committed");
    assert!(!windows.is_empty(), "windows written");
    assert!(
        windows[0]
            .key
            .as_deref()
            .is_some_and(|k| k.contains("start")),
        "{:?}",
        windows[0]
    );

    // A new job on the same topic, from a point in time: records from then on only.
    let replay = JobDir::new();
    let since = broker
        .read_all("clicks", 4, "read_committed")
        .iter()
        .map(|r| r.timestamp)
        .max()
        .expect("records");
    let late = clicks(800, 850, &mut Totals::new());
    std::thread::sleep(Duration::from_millis(20));
    let cut = sluice_host::sources::now_ms();
    std::thread::sleep(Duration::from_millis(20));
    produce(&broker, &late);
    assert!(since < cut);
    replay.manifest(
        &manifest(&broker.bootstrap(), &format!("starting_timestamp = {cut}"))
            .replace("kafka-e2e", "kafka-replay")
            .replace("topic = \"raw\"", "topic = \"replayed\"")
            .replace("topic = \"totals\"", "topic = \"totals2\"")
            .replace("topic = \"windows\"", "topic = \"windows2\""),
    );
    for t in ["replayed", "totals2", "windows2"] {
        broker.create_topic(t, 3);
    }
    let started = Instant::now();
    let out = replay.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let mut replayed: Vec<String> = broker
        .read_all("replayed", 3, "read_committed")
        .into_iter()
        .map(|r| r.value)
        .collect();
    replayed.sort();
    let mut want: Vec<String> = late.into_iter().map(|(_, v)| v).collect();
    want.sort();
    assert_eq!(replayed, want, "in {:?}", started.elapsed());
}
