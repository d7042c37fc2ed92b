//! `host bench kafka`: workloads W1 and W4 of WORKLOADS.md read from Kafka, beside the same
//! workloads read from the directory of generated files, in the same run (issue 17, "Show").
//!
//! The W1 files are produced, line by line, to the topic `sluice-bench-clicks-N-K` (3
//! partitions, `retention.ms = -1`, created when missing, filled when empty) by an idempotent
//! producer, and the produce rate is reported. Then real jobs — manifests written to a
//! temporary folder, planned and run by the engine as `host run JOB.toml --until-idle` runs
//! them — alternate between a `directory` source (one file per batch) and a `kafka` source
//! (`starting_offsets = "earliest"`, `max_rate_per_partition` set so a batch holds about one
//! file's events), `--runs` times each:
//!
//! - W1: `clickstream#is_purchase_line`, `clickstream#user_amount`, per batch `count` and
//!   `reduce(aggregates#sum_i64)`, each to a sink.
//! - W4: `clickstream#user_amount`, `update_state_by_key` with `builtin = "count_and_sum"`, the
//!   state after each batch to a sink.
//!
//! The directory leg's sinks are `text_files` (`jsonl`); the Kafka leg's are `kafka` sinks with
//! `exactly_once = true` (one transaction per batch), each to a topic of its own created for
//! the run and read back `read_committed` afterwards. Every leg must read all N events and
//! write the same answer (W1: purchases and cents over the run; W4: the final state's users,
//! count and cents — on Kafka each user's last record), or the bench fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_host::engine::{Job, JobOptions, JobSummary};
use sluice_host::plan::{self, manifest};
use sluice_host::udf::{UdfDirectory, UdfRuntime};

use super::{BenchArgs, data_dir, files};

/// Partitions of the bench topic.
const TOPIC_PARTITIONS: i32 = 3;
/// The jobs' batch interval (as `host bench w1`'s).
const INTERVAL_MS: u64 = 100;
/// How long the bench waits for the broker on any one call.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a leg's input comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leg {
    Directory,
    Kafka,
}

impl Leg {
    fn name(self) -> &'static str {
        match self {
            Leg::Directory => "directory",
            Leg::Kafka => "kafka",
        }
    }
}

/// The answer a leg wrote, to be the same in every leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// W1: purchases and their cents over the whole run.
    W1 { purchases: i64, cents: i64 },
    /// W4: the final state's users, and the sums of their counts and cents.
    W4 { users: u64, count: i64, cents: i64 },
}

/// The input both legs read: the files, and the topic they were produced to on `bootstrap`.
#[derive(Clone, Copy)]
struct Input<'a> {
    data: &'a Path,
    bootstrap: &'a str,
    topic: &'a str,
}

/// One leg's run.
struct Row {
    workload: &'static str,
    run: u64,
    leg: Leg,
    summary: JobSummary,
    answer: Answer,
}

pub fn run(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let Some(bootstrap) = args.bootstrap.as_deref() else {
        bail!(
            "`host bench kafka` needs --bootstrap HOST:PORT, a Kafka broker to produce the events to"
        );
    };
    let data = data_dir(args)?;
    let topic = format!("sluice-bench-clicks-{}-{}", args.events, args.files);
    let produced = fill_topic(bootstrap, &topic, &data, args.events)?;

    let runtime = Arc::new(runtime);
    let input = Input {
        data: &data,
        bootstrap,
        topic: &topic,
    };
    let mut rows = Vec::new();
    for run in 1..=args.runs.max(1) {
        for workload in ["W1", "W4"] {
            for leg in [Leg::Directory, Leg::Kafka] {
                let (summary, answer) = run_leg(args, &runtime, workload, leg, run, &input)
                    .with_context(|| format!("{workload}, {} leg, run {run}", leg.name()))?;
                if summary.records_in != args.events {
                    bail!(
                        "{workload}, {} leg, run {run}: the job read {} events of {}",
                        leg.name(),
                        summary.records_in,
                        args.events
                    );
                }
                rows.push(Row {
                    workload,
                    run,
                    leg,
                    summary,
                    answer,
                });
            }
        }
    }
    for workload in ["W1", "W4"] {
        let mut answers = rows
            .iter()
            .filter(|r| r.workload == workload)
            .map(|r| (r.run, r.leg, r.answer));
        if let Some((_, _, first)) = answers.next()
            && let Some((run, leg, other)) = answers.find(|(_, _, a)| *a != first)
        {
            bail!(
                "{workload}: the {} leg of run {run} wrote {other:?}, the first directory leg {first:?}",
                leg.name()
            );
        }
    }

    println!(
        "W1 and W4 through Kafka: {} events in {} files ({}), topic {topic} on {bootstrap} ({TOPIC_PARTITIONS} partitions)",
        args.events,
        args.files,
        data.display()
    );
    match produced {
        Some(time) => println!(
            "  produce:   {:>6.3} M events/s  ({} events in {:.2} s, idempotent producer, acknowledged)",
            args.events as f64 / time.as_secs_f64() / 1e6,
            args.events,
            time.as_secs_f64()
        ),
        None => println!(
            "  produce:   not measured (the topic already held the {} events)",
            args.events
        ),
    }
    println!(
        "  jobs: batch interval {INTERVAL_MS} ms, {} partitions, --until-idle; directory: one file per batch; kafka: about one file's events per batch",
        args.partitions
            .unwrap_or_else(sluice_host::plan::spec::default_partitions)
    );
    println!();
    println!(
        "| workload | run | source | events | batches | seconds | events/s | kafka/directory | written |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for pair in rows.chunks(2) {
        let [dir, kafka] = pair else { continue };
        let ratio = kafka.summary.records_per_second() / dir.summary.records_per_second();
        for (row, ratio) in [(dir, String::new()), (kafka, format!("{ratio:.2}×"))] {
            println!(
                "| {} | {} | {} | {} | {} | {:.2} | {:.3} M | {ratio} | {} |",
                row.workload,
                row.run,
                row.leg.name(),
                row.summary.records_in,
                row.summary.batches,
                row.summary.elapsed.as_secs_f64(),
                row.summary.records_per_second() / 1e6,
                describe(row.answer)
            );
        }
    }
    println!();
    for workload in ["W1", "W4"] {
        let rate = |leg| {
            let rates: Vec<f64> = rows
                .iter()
                .filter(|r| r.workload == workload && r.leg == leg)
                .map(|r| r.summary.records_per_second())
                .collect();
            rates.iter().sum::<f64>() / rates.len().max(1) as f64
        };
        let (dir, kafka) = (rate(Leg::Directory), rate(Leg::Kafka));
        let answer = rows
            .iter()
            .find(|r| r.workload == workload)
            .map(|r| describe(r.answer))
            .unwrap_or_default();
        println!(
            "  {workload}: directory {:.3} M events/s, kafka {:.3} M events/s (means): kafka/directory {:.2}×; every leg wrote {answer}",
            dir / 1e6,
            kafka / 1e6,
            kafka / dir
        );
    }
    Ok(())
}

/// What a leg wrote, in words.
fn describe(answer: Answer) -> String {
    let money = |cents: i64| format!("{}.{:02}", cents / 100, cents % 100);
    match answer {
        Answer::W1 { purchases, cents } => {
            format!("{purchases} purchases, {} in all", money(cents))
        }
        Answer::W4 {
            users,
            count,
            cents,
        } => format!("{users} users, {count} events, {} in all", money(cents)),
    }
}

/// Create `topic` when missing and fill it with the lines of `data` when it is empty. The time
/// producing took, or `None` when the topic already held `events` records.
fn fill_topic(
    bootstrap: &str,
    topic: &str,
    data: &Path,
    events: u64,
) -> anyhow::Result<Option<Duration>> {
    create_topic(bootstrap, topic)?;
    let held = records_in(bootstrap, topic)?;
    if held == events {
        return Ok(None);
    }
    if held != 0 {
        bail!(
            "topic {topic} on {bootstrap} holds {held} records, not 0 or the {events} the bench writes; delete it (or use a fresh broker) and run again"
        );
    }
    eprintln!("bench: producing {events} events to {topic} on {bootstrap}");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", "60000")
        .create()
        .context("creating the Kafka producer")?;
    let started = Instant::now();
    let mut sent: u64 = 0;
    for file in files(data)? {
        let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // Round robin: every partition holds a third of the events, in file order.
            let partition = (sent % TOPIC_PARTITIONS as u64) as i32;
            sent += 1;
            let mut record = Some(
                BaseRecord::<'_, (), [u8]>::to(topic)
                    .partition(partition)
                    .payload(line),
            );
            while let Some(r) = record.take() {
                match producer.send(r) {
                    Ok(()) => {}
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        producer.poll(Duration::from_millis(10));
                        record = Some(r);
                    }
                    Err((e, _)) => bail!("producing to {topic} on {bootstrap}: {e}"),
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .with_context(|| format!("waiting for {bootstrap} to acknowledge the events"))?;
    let time = started.elapsed();
    let held = records_in(bootstrap, topic)?;
    if held != events {
        bail!(
            "topic {topic} holds {held} records after producing {events}: some were not delivered"
        );
    }
    Ok(Some(time))
}

/// Create `topic` (3 partitions, kept for ever) unless it exists.
fn create_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the Kafka admin client")?;
    let new = NewTopic::new(topic, TOPIC_PARTITIONS, TopicReplication::Fixed(1))
        .set("retention.ms", "-1");
    let options = AdminOptions::new().request_timeout(Some(BROKER_TIMEOUT));
    let results = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(admin.create_topics([&new], &options))
        .with_context(|| format!("creating topic {topic} on {bootstrap}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, e)) => bail!("creating topic {topic} on {bootstrap}: {e}"),
        }
    }
    Ok(())
}

/// The records `topic` holds (its partitions' high watermarks minus their low ones).
fn records_in(bootstrap: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .with_context(|| format!("reading the metadata of {topic} on {bootstrap}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    let mut held = 0;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, BROKER_TIMEOUT)
            .with_context(|| format!("reading the offsets of {topic}/{p} on {bootstrap}"))?;
        held += (high - low).max(0) as u64;
    }
    Ok(held)
}

/// Every committed record of `topic` (all its partitions, from the start, `read_committed`),
/// each partition's in order: its key as text and its value as JSON (a number's decimal text
/// is a JSON number).
fn read_topic(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Written>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("sluice-bench-check-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..TOPIC_PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut at_end = BTreeSet::new();
    let started = Instant::now();
    let mut last_new = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = m.payload().unwrap_or_default();
                let value = serde_json::from_slice(value).with_context(|| {
                    format!(
                        "a record of {topic}/{} at {} that is not JSON: {:?}",
                        m.partition(),
                        m.offset(),
                        String::from_utf8_lossy(value)
                    )
                })?;
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                records.push((key, value));
                at_end.remove(&m.partition());
                last_new = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => bail!("reading {topic} on {bootstrap}: {e}"),
            None => {}
        }
        // Every partition at its end (the job has ended: nothing more comes) and nothing new
        // for half a second.
        if at_end.len() == TOPIC_PARTITIONS as usize
            && last_new.elapsed() > Duration::from_millis(500)
        {
            return Ok(records);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "reading {topic} on {bootstrap} back did not reach its end in 120 s ({} records read)",
                records.len()
            );
        }
    }
}

/// Write the manifest of `workload` reading from `leg` into a fresh folder, run it until its
/// input is done, and read back what its sinks wrote.
fn run_leg(
    args: &BenchArgs,
    runtime: &Arc<UdfRuntime>,
    workload: &str,
    leg: Leg,
    run: u64,
    input: &Input<'_>,
) -> anyhow::Result<(JobSummary, Answer)> {
    let Input {
        data,
        bootstrap,
        topic,
    } = *input;
    let folder = tempfile::tempdir().context("a temporary job folder")?;
    let name = format!(
        "bench-kafka-{}-{}-r{run}",
        workload.to_lowercase(),
        leg.name()
    );
    // The Kafka leg writes to topics of its own, empty when it starts.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let output = |what: &str| format!("sluice-{name}-{stamp}-{what}");
    let mut toml = format!("[job]\nname = \"{name}\"\nbatch_interval = \"{INTERVAL_MS}ms\"\n");
    if let Some(n) = args.partitions {
        toml += &format!("partitions = {n}\n");
    }
    toml += "\n[[sources]]\nname = \"events\"\n";
    match leg {
        Leg::Directory => {
            toml += &format!(
                "kind = \"directory\"\npath = {}\nstart = \"earliest\"\nmax_files_per_batch = 1\n",
                toml_string(&data.display().to_string())
            );
        }
        Leg::Kafka => {
            // About one file's events per batch, as the directory leg takes.
            let per_batch = args.events.div_ceil(args.files.max(1));
            let per_partition = per_batch.div_ceil(TOPIC_PARTITIONS as u64);
            let rate = (per_partition * 1000).div_ceil(INTERVAL_MS).max(1);
            toml += &format!(
                "kind = \"kafka\"\nbootstrap = {}\ntopics = [{}]\nstarting_offsets = \"earliest\"\nmax_rate_per_partition = {rate}\n",
                toml_string(bootstrap),
                toml_string(topic)
            );
        }
    }
    if workload == "W1" {
        toml += r#"
[[streams]]
name = "purchases"
op = "filter"
input = "events"
udf = "clickstream#is_purchase_line"

[[streams]]
name = "amounts"
op = "map"
input = "purchases"
udf = "clickstream#user_amount"
key_codec = "number"
value_codec = "number"

[[streams]]
name = "purchase_count"
op = "count"
input = "amounts"

[[streams]]
name = "revenue_cents"
op = "reduce"
input = "amounts"
udf = "aggregates#sum_i64"
"#;
    } else {
        toml += r#"
[[streams]]
name = "amounts"
op = "map"
input = "events"
udf = "clickstream#user_amount"
key_codec = "number"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "amounts"
builtin = "count_and_sum"
"#;
    }
    let outputs: &[(&str, &str)] = if workload == "W1" {
        &[("purchase_count", "count"), ("revenue_cents", "revenue")]
    } else {
        &[("totals", "totals")]
    };
    for (input, what) in outputs {
        toml += &match leg {
            Leg::Directory => format!(
                "\n[[sinks]]\nkind = \"text_files\"\ninput = \"{input}\"\nprefix = \"out/{what}\"\nformat = \"jsonl\"\n"
            ),
            Leg::Kafka => {
                create_topic(bootstrap, &output(what))?;
                format!(
                    "\n[[sinks]]\nkind = \"kafka\"\ninput = \"{input}\"\nbootstrap = {}\ntopic = {}\nexactly_once = true\n",
                    toml_string(bootstrap),
                    toml_string(&output(what))
                )
            }
        };
    }
    let path = folder.path().join("job.toml");
    std::fs::write(&path, &toml).with_context(|| format!("writing {}", path.display()))?;

    let spec = manifest::load_with(&path, None)?;
    let udfs = UdfDirectory::new(args.udfs.dir.clone(), runtime);
    let plan = plan::plan(spec, &udfs, Some(&path))?;
    let job = Job::start(
        plan,
        JobOptions {
            until_idle: true,
            ..JobOptions::default()
        },
        runtime.registry().clone(),
    )?;
    let summary = job.wait()?;
    if summary.failed_batches > 0 || summary.invalid_lines > 0 {
        bail!(
            "{} batches failed and {} lines were invalid",
            summary.failed_batches,
            summary.invalid_lines
        );
    }
    // What each sink wrote, `(key, value)` in order, and for W4 the final state.
    let written = |what: &str| -> anyhow::Result<Vec<Vec<Written>>> {
        match leg {
            Leg::Directory => batches(&folder.path().join("out"), what),
            Leg::Kafka => Ok(vec![read_topic(bootstrap, &output(what))?]),
        }
    };
    let answer = if workload == "W1" {
        let sum = |what: &str| -> anyhow::Result<i64> {
            written(what)?
                .iter()
                .flatten()
                .map(|(_, value)| {
                    value
                        .as_i64()
                        .with_context(|| format!("a {what} record that is not a number: {value}"))
                })
                .sum()
        };
        Answer::W1 {
            purchases: sum("count")?,
            cents: sum("revenue")?,
        }
    } else {
        let state: BTreeMap<Option<String>, serde_json::Value> = match leg {
            // The stream is the whole state after each batch: the newest batch that has any.
            Leg::Directory => written("totals")?
                .into_iter()
                .rev()
                .find(|b| !b.is_empty())
                .unwrap_or_default()
                .into_iter()
                .collect(),
            // Each key's last record, as a compacted topic keeps it.
            Leg::Kafka => written("totals")?.into_iter().flatten().collect(),
        };
        let (mut count, mut cents) = (0, 0);
        for value in state.values() {
            let pair = value
                .as_array()
                .and_then(|v| Some((v.first()?.as_i64()?, v.get(1)?.as_i64()?)))
                .with_context(|| format!("a W4 record that is not [count, cents]: {value}"))?;
            count += pair.0;
            cents += pair.1;
        }
        Answer::W4 {
            users: state.len() as u64,
            count,
            cents,
        }
    };
    Ok((summary, answer))
}

/// `"text"` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if c.is_control() => out += &format!("\\u{:04X}", c as u32),
            c => out.push(c),
        }
    }
    out + "\""
}

/// A record a sink wrote: its key, as text, and its value, as JSON.
type Written = (Option<String>, serde_json::Value);

/// The records of each batch folder `out/<prefix>-<batch time>/` (JSON lines `{"key",
/// "value"}`), oldest batch first.
fn batches(out: &Path, prefix: &str) -> anyhow::Result<Vec<Vec<Written>>> {
    let mut folders: Vec<(u64, std::path::PathBuf)> = Vec::new();
    if out.is_dir() {
        for entry in std::fs::read_dir(out)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(time) = name
                .as_deref()
                .and_then(|n| n.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok())
            {
                folders.push((time, path));
            }
        }
    }
    folders.sort();
    let mut out = Vec::new();
    for (_, folder) in folders {
        let mut records = Vec::new();
        for part in files(&folder)? {
            let name = part.file_name().map(|n| n.to_string_lossy().into_owned());
            if !name.is_some_and(|n| n.starts_with("part-")) {
                continue;
            }
            let text = std::fs::read_to_string(&part)
                .with_context(|| format!("reading {}", part.display()))?;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let mut record: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("a line of {} that is not JSON", part.display()))?;
                let key = match record.get("key") {
                    Some(serde_json::Value::String(k)) => Some(k.clone()),
                    None | Some(serde_json::Value::Null) => None,
                    Some(other) => Some(other.to_string()),
                };
                let value = record
                    .get_mut("value")
                    .map(serde_json::Value::take)
                    .with_context(|| format!("a line of {} without a value", part.display()))?;
                records.push((key, value));
            }
        }
        out.push(records);
    }
    Ok(out)
}
