//! Spark's direct Kafka source (`KafkaUtils.createDirectStream`): no receiver and no
//! write-ahead log. Each batch is a set of offset ranges, one per partition it read, which the
//! scheduler records in the metadata checkpoint before the batch runs; after a crash a batch
//! runs again by reading exactly its ranges again ([`Source::refetch`]), and the source goes on
//! from the offsets recorded with the last sealed batch. Committing offsets to the consumer
//! group (`group_id`) only mirrors the position for monitoring tools; the checkpoint is the truth.
//!
//! - Topics by name (`topics`) or by a regular expression over the cluster's topics (`pattern`).
//! - Where a job without a checkpoint starts: `starting_offsets` (`"earliest"`, `"latest"`, or
//!   per partition), or `starting_timestamp` (ms since the epoch: the first record at or after
//!   it, in each partition). Partitions that appear while the job runs (added to a topic, or a
//!   new topic matching `pattern`) are read from their earliest record.
//! - `max_rate_per_partition` caps what one batch takes from a partition (records per second ×
//!   the batch interval), beside the source's `max_rate` and backpressure budget.
//! - Each record's Kafka timestamp is its event time; `format` says what the record becomes:
//!   its value as text, its value checked to be JSON, or an envelope (JSON with key, value,
//!   headers, topic, partition, offset and timestamp). A record that does not decode so is
//!   handled by `on_decode_error`: the job fails naming topic, partition and offset, the
//!   record is skipped, counted and logged, or it goes to the job's dead-letter store.
//! - Reads with `isolation.level = read_committed` by default: records of aborted or still open
//!   transactions are never seen.
//! - A broker that cannot be reached for `broker_timeout`, a topic that is missing or deleted, or
//!   records deleted (by retention) before they were read end the job with a clear error
//!   ([`KafkaSourceError`]) instead of waiting for ever.
//!
//! A background thread refreshes the cluster's metadata (new partitions, deleted topics) and
//! each partition's high watermark (for consumer lag, [`PartitionLag`]) every second; records are
//! polled from librdkafka's prefetch queue when a batch is sealed. A partition holding more than
//! a few batches' worth of fetched records is paused until the batches catch up, so a burst
//! never grows memory without bound.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{Source, SourceContext, SourceInput, SourceStatus, now_ms};
use crate::batch::Batch;

/// How a Kafka source is set up (`kind = "kafka"` in a manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` of the brokers (librdkafka's `bootstrap.servers`).
    pub bootstrap: String,
    /// The topics read. Either this or `pattern`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression matched against whole topic names: every topic of the cluster
    /// that matches is read, including topics created while the job runs.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Where a job without a checkpoint starts. Default `latest`, as Spark's.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// Start at the first record at or after this time (ms since the epoch) in each partition,
    /// instead of `starting_offsets`: replay from a point in time.
    #[serde(default)]
    pub starting_timestamp: Option<i64>,
    /// At most this many records per second from each partition (Spark's
    /// `spark.streaming.kafka.maxRatePerPartition`). Default: no limit.
    #[serde(default)]
    pub max_rate_per_partition: Option<u64>,
    /// What each Kafka record becomes. Default `value`.
    #[serde(default)]
    pub format: KafkaFormat,
    /// What a record that does not decode as `format` says does. Default `fail`.
    #[serde(default)]
    pub on_decode_error: DecodePolicy,
    /// The consumer group the source mirrors its position to, for monitoring tools. Default
    /// `sluice.<job>.<source>`. Nothing is read back from it.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Which records are read. Default `read_committed`.
    #[serde(default)]
    pub isolation: Isolation,
    /// How long the brokers may be unreachable (at start or while running) before the job
    /// fails. Default 30 s.
    #[serde(default = "default_broker_timeout", with = "humantime_serde")]
    pub broker_timeout: Duration,
    /// Further librdkafka consumer settings (`fetch.max.bytes`, `security.protocol`, …). The
    /// settings the source owns (see [`OWNED_PROPERTIES`]) are refused.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_broker_timeout() -> Duration {
    Duration::from_secs(30)
}

/// librdkafka settings a Kafka source sets itself: `properties` may not name them.
pub const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// Where a job without a checkpoint starts reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartingOffsets {
    /// `"earliest"` or `"latest"`.
    Named(StartAt),
    /// Per topic, per partition (as a string key: `{ clicks = { "0" = 42 } }`): the offset to
    /// start at; `-2` is earliest and `-1` latest, as in Spark. Partitions not named start at
    /// their earliest record.
    Offsets(BTreeMap<String, BTreeMap<String, i64>>),
}

impl Default for StartingOffsets {
    fn default() -> Self {
        StartingOffsets::Named(StartAt::Latest)
    }
}

/// A named starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Each partition's first record still kept.
    Earliest,
    /// Only records written after the job starts.
    Latest,
}

/// What each Kafka record becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// Its value, which must be UTF-8 text.
    #[default]
    Value,
    /// Its value, which must be JSON.
    Json,
    /// A JSON object: `{"topic", "partition", "offset", "timestamp", "key", "value",
    /// "headers": {name: value}}`, key, value and header values as text (or null).
    Envelope,
}

/// What a record that does not decode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DecodePolicy {
    /// The job fails, naming topic, partition and offset; its position stays before the
    /// record.
    #[default]
    Fail,
    /// The record is skipped, counted in the batch's `invalid_lines` and logged with its
    /// topic, partition and offset.
    Skip,
    /// The record goes to the job's dead-letter store (key, raw value, topic, partition,
    /// offset and why), beside the letters of its UDFs; the job goes on.
    DeadLetter,
}

/// Which records a consumer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones).
    #[default]
    ReadCommitted,
    /// Every record written, aborted transactions included.
    ReadUncommitted,
}

impl KafkaConfig {
    /// Check what can be checked without a broker; the error says what to change.
    pub fn check(&self) -> Result<(), String> {
        if self.bootstrap.trim().is_empty() {
            return Err(
                "`bootstrap` is empty: give the brokers, e.g. bootstrap = \"127.0.0.1:9092\""
                    .into(),
            );
        }
        match (&self.topics.is_empty(), &self.pattern) {
            (true, None) => {
                return Err(
                    "a kafka source needs `topics = [\"…\"]` or `pattern = \"regex\"`".into(),
                );
            }
            (false, Some(_)) => {
                return Err("give either `topics` or `pattern`, not both".into());
            }
            (_, Some(p)) => {
                regex::Regex::new(p)
                    .map_err(|e| format!("`pattern` is not a regular expression: {e}"))?;
            }
            (false, None) => {}
        }
        if let Some(t) = self.topics.iter().find(|t| !valid_topic(t)) {
            return Err(format!(
                "topic name '{t}' is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"
            ));
        }
        if let StartingOffsets::Offsets(map) = &self.starting_offsets {
            for (topic, parts) in map {
                for (p, offset) in parts {
                    if p.parse::<i32>().map_or(true, |p| p < 0) {
                        return Err(format!(
                            "starting_offsets.{topic}: partition '{p}' is not a partition number"
                        ));
                    }
                    if *offset < -2 {
                        return Err(format!(
                            "starting_offsets.{topic}.{p} = {offset}: an offset is ≥ 0, or -2 (earliest) or -1 (latest)"
                        ));
                    }
                }
            }
        }
        if self.starting_timestamp.is_some_and(|t| t < 0) {
            return Err("`starting_timestamp` is ms since the Unix epoch, ≥ 0".into());
        }
        if self.max_rate_per_partition == Some(0) {
            return Err("`max_rate_per_partition` must be at least 1 record per second".into());
        }
        if let Some(owned) = self
            .properties
            .keys()
            .find(|k| OWNED_PROPERTIES.contains(&k.as_str()))
        {
            return Err(format!(
                "properties.\"{owned}\" is set by the source itself ({}); use the source's own fields",
                OWNED_PROPERTIES.join(", ")
            ));
        }
        Ok(())
    }

    fn client(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "error")
            .set("allow.auto.create.topics", "false")
            .set(
                "isolation.level",
                match self.isolation {
                    Isolation::ReadCommitted => "read_committed",
                    Isolation::ReadUncommitted => "read_uncommitted",
                },
            );
        if !self.properties.contains_key("queued.max.messages.kbytes") {
            // librdkafka's prefetch per partition: bounded, the source pauses past its own.
            c.set("queued.max.messages.kbytes", "16384");
        }
        c
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// One partition's records in one batch: offsets `from..to` (records of aborted transactions
/// and transaction markers in between are not records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset of the range.
    pub from: i64,
    /// One past the last record taken.
    pub to: i64,
}

/// Where a source stands in one partition: the next offset a batch takes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset.
    pub next: i64,
}

/// How far a source is behind a partition's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the source takes.
    pub next: i64,
    /// The partition's high watermark, as last fetched.
    pub end: i64,
    /// `end − next`, at least 0.
    pub lag: i64,
}

/// Why a Kafka source cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaSourceError {
    /// The Kafka client could not be made (a bad property).
    #[error("kafka source '{source_name}': cannot make a consumer: {error}")]
    Client {
        /// The source.
        source_name: String,
        /// librdkafka's message.
        error: String,
    },
    /// No broker answered for `broker_timeout`.
    #[error(
        "kafka source '{source_name}': no broker of {bootstrap} answered for {waited:?} (last error: {error}); check that the brokers run and the address is right, or raise `broker_timeout`"
    )]
    Unreachable {
        /// The source.
        source_name: String,
        /// Its brokers.
        bootstrap: String,
        /// How long it tried.
        waited: Duration,
        /// The last error.
        error: String,
    },
    /// A topic the source reads is not in the cluster.
    #[error(
        "kafka source '{source_name}': topic '{topic}' does not exist on {bootstrap}; create it or fix `topics` (the cluster has: {available})"
    )]
    MissingTopic {
        /// The source.
        source_name: String,
        /// The topic.
        topic: String,
        /// Its brokers.
        bootstrap: String,
        /// Some topics that exist.
        available: String,
    },
    /// A topic the source was reading is gone.
    #[error(
        "kafka source '{source_name}': topic '{topic}' was deleted while the job read it; its remaining records are lost to the job. Recreate the topic and restart from a fresh checkpoint, or remove it from the source"
    )]
    TopicDeleted {
        /// The source.
        source_name: String,
        /// The topic.
        topic: String,
    },
    /// Records the job needs are no longer in the partition (retention deleted them).
    #[error(
        "kafka source '{source_name}': {topic}/{partition} no longer holds offsets {from}..{to} (it starts at {low}): records were deleted before the job read them. Raise the topic's retention; to go on without them, restart from a fresh checkpoint with starting_offsets"
    )]
    Deleted {
        /// The source.
        source_name: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first offset needed.
        from: i64,
        /// One past the last needed.
        to: i64,
        /// Where the partition starts now.
        low: i64,
    },
    /// A record did not decode as the source's `format` says, with `on_decode_error = "fail"`.
    #[error(
        "kafka source '{source_name}': the record at {topic}/{partition} offset {offset} is not {format}: {why}. Set on_decode_error = \"skip\" to count and skip such records"
    )]
    Undecodable {
        /// The source.
        source_name: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// The format expected.
        format: &'static str,
        /// Why not.
        why: String,
    },
    /// A batch's recorded range could not be read again within `broker_timeout`.
    #[error(
        "kafka source '{source_name}': cannot read {topic}/{partition} offsets {from}..{to} again within {waited:?} (got up to {got}): {why}"
    )]
    Refetch {
        /// The source.
        source_name: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The range's start.
        from: i64,
        /// Its end.
        to: i64,
        /// The offset reached.
        got: i64,
        /// How long it tried.
        waited: Duration,
        /// What went wrong.
        why: String,
    },
    /// The broker refused a request in a way that ends the source.
    #[error("kafka source '{source_name}': {what}: {error}")]
    Broker {
        /// The source.
        source_name: String,
        /// What was being done.
        what: String,
        /// librdkafka's message.
        error: String,
    },
}

/// A record fetched and decoded (or not) into what a batch holds.
struct Fetched {
    offset: i64,
    time: i64,
    value: Result<Vec<u8>, String>,
    /// Key and value as they came, kept when the record did not decode.
    raw: Option<(Option<Vec<u8>>, Vec<u8>)>,
}

impl Fetched {
    fn of(m: &impl Message, format: KafkaFormat) -> Self {
        let value = decode(m, format);
        let raw = value.is_err().then(|| {
            (
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )
        });
        Fetched {
            offset: m.offset(),
            time: m.timestamp().to_millis().unwrap_or_else(now_ms),
            value,
            raw,
        }
    }

    /// The record as a dead letter of its source.
    fn rejected(self, topic: &str, partition: i32, why: String) -> Rejected {
        let (key, value) = self.raw.unwrap_or_default();
        Rejected {
            topic: topic.to_string(),
            partition,
            offset: self.offset,
            key,
            value,
            time: self.time,
            why,
        }
    }
}

/// A record that did not decode, for the dead-letter store (`on_decode_error = "dead_letter"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, as it came.
    pub key: Option<Vec<u8>>,
    /// Its value, as it came.
    pub value: Vec<u8>,
    /// Its Kafka timestamp.
    pub time: i64,
    /// Why it did not decode.
    pub why: String,
}

type Tp = (String, i32);

struct Part {
    /// The next offset a batch takes from.
    next: i64,
    /// Fetched, not yet taken.
    carry: VecDeque<Fetched>,
    paused: bool,
    /// Whether a batch has recorded where this partition stands (a first batch records an
    /// empty range, so that a restart does not start over from `latest`).
    recorded: bool,
}

/// What the background thread learns about the cluster.
#[derive(Default)]
struct Watch {
    /// High watermarks.
    high: BTreeMap<Tp, i64>,
    /// Partitions found since the last batch, with their earliest offset.
    discovered: Vec<(Tp, i64)>,
    failure: Option<KafkaSourceError>,
}

/// A running Kafka source.
pub struct KafkaSource {
    name: String,
    job: Arc<str>,
    config: KafkaConfig,
    group: String,
    consumer: Arc<BaseConsumer>,
    parts: BTreeMap<Tp, Part>,
    budget: Option<usize>,
    per_partition: Option<usize>,
    watch: Arc<Mutex<Watch>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    until_idle: bool,
    /// With `--until-idle`: each partition's end when the job started.
    targets: BTreeMap<Tp, i64>,
    failure: Option<KafkaSourceError>,
    stopped: bool,
}

impl KafkaSource {
    /// Connect, find the partitions, and start at `positions` (from a checkpoint) or where the
    /// config says.
    pub fn start(
        name: &str,
        config: &KafkaConfig,
        positions: &[PartitionOffset],
        ctx: &SourceContext,
    ) -> Result<Self, KafkaSourceError> {
        let group = config
            .group_id
            .clone()
            .unwrap_or_else(|| format!("sluice.{}.{name}", ctx.job));
        let consumer: BaseConsumer =
            config
                .client(&group)
                .create()
                .map_err(|e| KafkaSourceError::Client {
                    source_name: name.to_string(),
                    error: e.to_string(),
                })?;
        let consumer = Arc::new(consumer);
        let pattern = config
            .pattern
            .as_deref()
            .map(|p| regex::Regex::new(&format!("^(?:{p})$")))
            .transpose()
            .map_err(|e| KafkaSourceError::Client {
                source_name: name.to_string(),
                error: format!("`pattern`: {e}"),
            })?;
        let started = Instant::now();
        let cluster = loop {
            match partitions_of(&consumer, config, pattern.as_ref()) {
                Ok(c) => break c,
                Err(e) if started.elapsed() >= config.broker_timeout => {
                    return Err(KafkaSourceError::Unreachable {
                        source_name: name.to_string(),
                        bootstrap: config.bootstrap.clone(),
                        waited: started.elapsed(),
                        error: e.to_string(),
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        if let Some(missing) = config.topics.iter().find(|t| !cluster.topics.contains(*t)) {
            let mut available: Vec<&str> =
                cluster.all.iter().map(String::as_str).take(10).collect();
            if available.is_empty() {
                available.push("no topics");
            }
            return Err(KafkaSourceError::MissingTopic {
                source_name: name.to_string(),
                topic: missing.clone(),
                bootstrap: config.bootstrap.clone(),
                available: available.join(", "),
            });
        }
        let recorded: BTreeMap<Tp, i64> = positions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.next))
            .collect();
        let broker = |what: String, e: KafkaError| KafkaSourceError::Broker {
            source_name: name.to_string(),
            what,
            error: e.to_string(),
        };
        let timeout = config.broker_timeout;
        let by_time = match (config.starting_timestamp, recorded.is_empty()) {
            (Some(ts), true) => {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &cluster.partitions {
                    tpl.add_partition_offset(t, *p, Offset::Offset(ts))
                        .map_err(|e| broker(format!("offsets at time {ts}"), e))?;
                }
                let found = consumer
                    .offsets_for_times(tpl, timeout)
                    .map_err(|e| broker(format!("offsets at time {ts}"), e))?;
                found
                    .elements()
                    .iter()
                    .map(|e| ((e.topic().to_string(), e.partition()), e.offset()))
                    .collect()
            }
            _ => BTreeMap::new(),
        };
        let mut parts = BTreeMap::new();
        let mut targets = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &cluster.partitions {
            let tp = (topic.clone(), *partition);
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, timeout)
                .map_err(|e| broker(format!("the offsets of {topic}/{partition}"), e))?;
            let next = if let Some(next) = recorded.get(&tp) {
                *next
            } else if !recorded.is_empty() {
                // A partition that appeared since the checkpoint: from its start.
                low
            } else if let Some(offset) = by_time.get(&tp) {
                match offset {
                    Offset::Offset(o) => *o,
                    // No record at or after the time: from the end.
                    _ => high,
                }
            } else {
                match &config.starting_offsets {
                    StartingOffsets::Named(StartAt::Earliest) => low,
                    StartingOffsets::Named(StartAt::Latest) => high,
                    StartingOffsets::Offsets(map) => match map
                        .get(topic)
                        .and_then(|parts| parts.get(&partition.to_string()))
                    {
                        Some(-1) => high,
                        Some(-2) | None => low,
                        Some(o) => *o,
                    },
                }
            };
            if next < low {
                return Err(KafkaSourceError::Deleted {
                    source_name: name.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                    from: next,
                    to: high,
                    low,
                });
            }
            tpl.add_partition_offset(topic, *partition, Offset::Offset(next))
                .map_err(|e| broker(format!("assigning {topic}/{partition}"), e))?;
            targets.insert(tp.clone(), high);
            parts.insert(
                tp,
                Part {
                    next,
                    carry: VecDeque::new(),
                    paused: false,
                    recorded: false,
                },
            );
        }
        consumer
            .assign(&tpl)
            .map_err(|e| broker("assigning the partitions".into(), e))?;
        let watch = Arc::new(Mutex::new(Watch::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, config, watch, stop) = (
                consumer.clone(),
                config.clone(),
                watch.clone(),
                stop.clone(),
            );
            let known: BTreeSet<Tp> = parts.keys().cloned().collect();
            let topics = cluster.topics.clone();
            let source_name = name.to_string();
            std::thread::Builder::new()
                .name(format!("sluice-kafka-{name}"))
                .spawn(move || {
                    watch_cluster(
                        &source_name,
                        &consumer,
                        &config,
                        pattern.as_ref(),
                        known,
                        topics,
                        &watch,
                        &stop,
                    )
                })
                .map_err(|e| KafkaSourceError::Client {
                    source_name: name.to_string(),
                    error: format!("cannot start its thread: {e}"),
                })?
        };
        let per_partition = config.max_rate_per_partition.map(|rate| {
            let records = rate as u128 * ctx.batch_interval.as_millis() / 1000;
            usize::try_from(records).unwrap_or(usize::MAX).max(1)
        });
        tracing::info!(job = %ctx.job, source = %name, "reading {} partitions of {} from {} ({:?}, group {group} mirrors the position)", parts.len(), cluster.topics.iter().cloned().collect::<Vec<_>>().join(", "), config.bootstrap, config.isolation);
        Ok(Self {
            name: name.to_string(),
            job: ctx.job.clone(),
            config: config.clone(),
            group,
            consumer,
            parts,
            budget: None,
            per_partition,
            watch,
            stop,
            thread: Some(thread),
            until_idle: ctx.until_idle,
            targets,
            failure: None,
            stopped: false,
        })
    }

    fn watch(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Most records a partition holds fetched before it is paused.
    fn hold(&self) -> usize {
        let per_batch = match (self.budget, self.per_partition) {
            (Some(b), Some(p)) => b.min(p),
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => 25_000,
        };
        per_batch.saturating_mul(4).clamp(1_000, 100_000)
    }

    /// Assign partitions found since, and move what librdkafka prefetched into the partitions'
    /// carries; pause partitions that hold enough, resume those that were taken from.
    fn pump(&mut self) {
        if self.stopped {
            return;
        }
        let discovered = std::mem::take(&mut self.watch().discovered);
        if !discovered.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), low) in &discovered {
                if self.parts.contains_key(&(topic.clone(), *partition)) {
                    continue;
                }
                if tpl
                    .add_partition_offset(topic, *partition, Offset::Offset(*low))
                    .is_ok()
                {
                    tracing::info!(job = %self.job, source = %self.name, "new partition {topic}/{partition}: reading it from offset {low}");
                    self.parts.insert(
                        (topic.clone(), *partition),
                        Part {
                            next: *low,
                            carry: VecDeque::new(),
                            paused: false,
                            recorded: false,
                        },
                    );
                }
            }
            if let Err(e) = self.consumer.incremental_assign(&tpl) {
                self.failure.get_or_insert(KafkaSourceError::Broker {
                    source_name: self.name.clone(),
                    what: "assigning new partitions".into(),
                    error: e.to_string(),
                });
            }
        }
        let hold = self.hold();
        let mut room: usize = self
            .parts
            .values()
            .map(|p| hold.saturating_sub(p.carry.len()))
            .sum::<usize>()
            .max(1);
        while room > 0 {
            let Some(polled) = self.consumer.poll(Duration::ZERO) else {
                break;
            };
            match polled {
                Ok(m) => {
                    let tp = (m.topic().to_string(), m.partition());
                    let fetched = Fetched::of(&m, self.config.format);
                    if let Some(part) = self.parts.get_mut(&tp)
                        && fetched.offset >= part.carry.back().map_or(part.next, |f| f.offset + 1)
                    {
                        part.carry.push_back(fetched);
                        room -= 1;
                    }
                }
                Err(KafkaError::MessageConsumption(code)) => self.consumption_error(code),
                Err(e) => {
                    tracing::warn!(job = %self.job, source = %self.name, "kafka: {e}");
                }
            }
        }
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        for ((topic, partition), part) in &mut self.parts {
            if !part.paused && part.carry.len() >= hold {
                pause.add_partition(topic, *partition);
                part.paused = true;
            } else if part.paused && part.carry.len() < hold / 2 {
                resume.add_partition(topic, *partition);
                part.paused = false;
            }
        }
        if pause.count() > 0 {
            let _ = self.consumer.pause(&pause);
        }
        if resume.count() > 0 {
            let _ = self.consumer.resume(&resume);
        }
    }

    fn consumption_error(&mut self, code: RDKafkaErrorCode) {
        match code {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                // The watcher names the topic once the metadata shows it gone.
                tracing::warn!(job = %self.job, source = %self.name, "kafka: {code}");
            }
            RDKafkaErrorCode::OffsetOutOfRange => {
                self.failure.get_or_insert(KafkaSourceError::Broker {
                    source_name: self.name.clone(),
                    what: "reading on from the recorded offsets".into(),
                    error: format!(
                        "{code}: records were deleted before they were read; raise the topic's retention"
                    ),
                });
            }
            other => tracing::warn!(job = %self.job, source = %self.name, "kafka: {other}"),
        }
    }

    /// Each partition's share of `total` (at most `per_partition` each): what is left by
    /// partitions holding less goes to the others.
    fn shares(&self, total: Option<usize>) -> Vec<usize> {
        let cap = self.per_partition.unwrap_or(usize::MAX);
        let mut want: Vec<usize> = self
            .parts
            .values()
            .map(|p| p.carry.len().min(cap))
            .collect();
        let Some(mut left) = total else {
            return want;
        };
        let mut shares = vec![0; want.len()];
        while left > 0 && want.iter().any(|w| *w > 0) {
            let open = want.iter().filter(|w| **w > 0).count();
            let each = (left / open).max(1);
            for (share, w) in shares.iter_mut().zip(&mut want) {
                let n = each.min(*w).min(left);
                *share += n;
                *w -= n;
                left -= n;
                if left == 0 {
                    break;
                }
            }
        }
        shares
    }
}

/// A record's value as the batch holds it, or why it does not decode.
fn decode(m: &impl Message, format: KafkaFormat) -> Result<Vec<u8>, String> {
    let text = |bytes: Option<&[u8]>, what: &str| -> Result<Option<String>, String> {
        bytes
            .map(|b| {
                std::str::from_utf8(b)
                    .map(str::to_string)
                    .map_err(|e| format!("its {what} is not UTF-8 ({e})"))
            })
            .transpose()
    };
    match format {
        KafkaFormat::Value | KafkaFormat::Json => {
            let value = text(m.payload(), "value")?
                .ok_or_else(|| "it has no value (a tombstone)".to_string())?;
            if format == KafkaFormat::Json {
                serde_json::from_str::<serde::de::IgnoredAny>(&value)
                    .map_err(|e| format!("its value is not JSON ({e})"))?;
            }
            Ok(value.into_bytes())
        }
        KafkaFormat::Envelope => {
            let mut headers = serde_json::Map::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    let value = text(h.value, &format!("header '{}'", h.key))?;
                    headers.insert(
                        h.key.to_string(),
                        value.map_or(serde_json::Value::Null, Into::into),
                    );
                }
            }
            let envelope = serde_json::json!({
                "topic": m.topic(),
                "partition": m.partition(),
                "offset": m.offset(),
                "timestamp": m.timestamp().to_millis(),
                "key": text(m.key(), "key")?,
                "value": text(m.payload(), "value")?,
                "headers": headers,
            });
            Ok(envelope.to_string().into_bytes())
        }
    }
}

fn format_name(format: KafkaFormat) -> &'static str {
    match format {
        KafkaFormat::Value => "UTF-8 text",
        KafkaFormat::Json => "JSON",
        KafkaFormat::Envelope => "an envelope (UTF-8 key, value and headers)",
    }
}

struct Cluster {
    /// Every topic of the cluster.
    all: BTreeSet<String>,
    /// The topics the source reads.
    topics: BTreeSet<String>,
    /// Their partitions.
    partitions: Vec<Tp>,
}

/// The topics and partitions the source reads, as the cluster has them now.
fn partitions_of(
    consumer: &BaseConsumer,
    config: &KafkaConfig,
    pattern: Option<&regex::Regex>,
) -> Result<Cluster, KafkaError> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5))?;
    let mut cluster = Cluster {
        all: BTreeSet::new(),
        topics: BTreeSet::new(),
        partitions: Vec::new(),
    };
    for t in metadata.topics() {
        if t.error().is_some() || t.name().starts_with("__") {
            continue;
        }
        cluster.all.insert(t.name().to_string());
        let wanted = match pattern {
            Some(p) => p.is_match(t.name()),
            None => config.topics.iter().any(|n| n == t.name()),
        };
        if wanted {
            cluster.topics.insert(t.name().to_string());
            for p in t.partitions() {
                cluster.partitions.push((t.name().to_string(), p.id()));
            }
        }
    }
    cluster.partitions.sort();
    Ok(cluster)
}

/// The background thread: every second, the cluster's metadata (new partitions, deleted
/// topics) and each partition's high watermark; past `broker_timeout` without an answer, the
/// source's failure.
#[allow(clippy::too_many_arguments)]
fn watch_cluster(
    name: &str,
    consumer: &BaseConsumer,
    config: &KafkaConfig,
    pattern: Option<&regex::Regex>,
    mut known: BTreeSet<Tp>,
    mut topics: BTreeSet<String>,
    watch: &Mutex<Watch>,
    stop: &AtomicBool,
) {
    let mut last_ok = Instant::now();
    let fail = |failure: KafkaSourceError| {
        watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failure
            .get_or_insert(failure);
    };
    while !stop.load(Ordering::Relaxed) {
        match partitions_of(consumer, config, pattern) {
            Ok(cluster) => {
                last_ok = Instant::now();
                if let Some(gone) = topics.iter().find(|t| !cluster.all.contains(*t)) {
                    fail(KafkaSourceError::TopicDeleted {
                        source_name: name.to_string(),
                        topic: gone.clone(),
                    });
                    return;
                }
                topics = cluster.topics;
                let mut high = BTreeMap::new();
                let mut found = Vec::new();
                for tp in &cluster.partitions {
                    let Ok((low, hi)) =
                        consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(5))
                    else {
                        continue;
                    };
                    high.insert(tp.clone(), hi);
                    if known.insert(tp.clone()) {
                        found.push((tp.clone(), low));
                    }
                }
                let mut w = watch.lock().unwrap_or_else(PoisonError::into_inner);
                w.high = high;
                w.discovered.extend(found);
            }
            Err(e) => {
                if last_ok.elapsed() >= config.broker_timeout {
                    fail(KafkaSourceError::Unreachable {
                        source_name: name.to_string(),
                        bootstrap: config.bootstrap.clone(),
                        waited: last_ok.elapsed(),
                        error: e.to_string(),
                    });
                    return;
                }
            }
        }
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn take(&mut self, max_records: Option<usize>) -> SourceInput {
        self.pump();
        let total = match (max_records, self.budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let shares = self.shares(total);
        let mut records = Batch::empty(false);
        let mut ranges = Vec::new();
        let mut undecodable = 0u64;
        let mut rejected = Vec::new();
        let mut commit = TopicPartitionList::new();
        let format = self.config.format;
        for (((topic, partition), part), share) in self.parts.iter_mut().zip(shares) {
            let from = part.next;
            let mut taken = 0;
            while taken < share {
                let Some(f) = part.carry.front() else { break };
                match &f.value {
                    Ok(v) => records.push(None, v, f.time),
                    Err(why) => match self.config.on_decode_error {
                        DecodePolicy::Fail => {
                            self.failure.get_or_insert(KafkaSourceError::Undecodable {
                                source_name: self.name.clone(),
                                topic: topic.clone(),
                                partition: *partition,
                                offset: f.offset,
                                format: format_name(format),
                                why: why.clone(),
                            });
                            break;
                        }
                        DecodePolicy::Skip => {
                            undecodable += 1;
                            tracing::warn!(job = %self.job, source = %self.name, topic = %topic, partition, offset = f.offset, "skipped a record that is not {}: {why}", format_name(format));
                        }
                        DecodePolicy::DeadLetter => {}
                    },
                }
                part.next = f.offset + 1;
                if let Some(f) = part.carry.pop_front()
                    && let Err(why) = &f.value
                    && self.config.on_decode_error == DecodePolicy::DeadLetter
                {
                    let why = format!("not {}: {why}", format_name(format));
                    rejected.push(f.rejected(topic, *partition, why));
                }
                taken += 1;
            }
            if part.next > from || !part.recorded {
                part.recorded = true;
                ranges.push(OffsetRange {
                    topic: topic.clone(),
                    partition: *partition,
                    from,
                    to: part.next,
                });
            }
            if part.next > from {
                let _ = commit.add_partition_offset(topic, *partition, Offset::Offset(part.next));
            }
        }
        if commit.count() > 0
            && let Err(e) = self.consumer.commit(&commit, CommitMode::Async)
        {
            tracing::debug!(job = %self.job, source = %self.name, group = %self.group, "mirroring offsets to the group: {e}");
        }
        SourceInput::Fetched {
            records,
            undecodable,
            ranges,
            rejected,
        }
    }

    fn status(&mut self) -> SourceStatus {
        self.pump();
        let buffered: usize = self.parts.values().map(|p| p.carry.len()).sum();
        let exhausted = self.until_idle && {
            let positions = self.consumer.position().ok();
            self.parts.iter().all(|(tp, part)| {
                let target = self.targets.get(tp).copied().unwrap_or(0);
                let position = positions
                    .as_ref()
                    .and_then(|p| p.find_partition(&tp.0, tp.1))
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(-1);
                part.carry.is_empty() && (part.next >= target || position >= target)
            })
        };
        SourceStatus {
            buffered,
            backlog: self.budget.is_some_and(|b| buffered > b),
            exhausted,
        }
    }

    fn set_budget(&mut self, records: Option<usize>) {
        self.budget = records;
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.stop.store(true, Ordering::Relaxed);
    }

    fn check(&mut self) -> Result<(), super::SourceError> {
        let watched = self.watch().failure.clone();
        if let Some(f) = watched {
            self.failure.get_or_insert(f);
        }
        match &self.failure {
            Some(f) => Err(super::SourceError::Kafka(f.clone())),
            None => Ok(()),
        }
    }

    fn lag(&self) -> Vec<PartitionLag> {
        let watch = self.watch();
        self.parts
            .iter()
            .filter_map(|(tp, part)| {
                let end = *watch.high.get(tp)?;
                Some(PartitionLag {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    next: part.next,
                    end,
                    lag: (end - part.next).max(0),
                })
            })
            .collect()
    }

    fn refetch(&mut self, ranges: &[OffsetRange]) -> Result<SourceInput, super::SourceError> {
        fetch_ranges(&self.name, &self.config, ranges).map_err(super::SourceError::Kafka)
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The records of `ranges` read again (a batch run again after a restart, or a dry run), in
/// the order a batch took them: range after range, each in offset order.
pub fn fetch_ranges(
    name: &str,
    config: &KafkaConfig,
    ranges: &[OffsetRange],
) -> Result<SourceInput, KafkaSourceError> {
    let mut records = Batch::empty(false);
    let mut undecodable = 0;
    let mut rejected = Vec::new();
    if ranges.iter().all(|r| r.to <= r.from) {
        return Ok(SourceInput::Fetched {
            records,
            undecodable,
            ranges: ranges.to_vec(),
            rejected,
        });
    }
    let consumer: BaseConsumer = config
        .client(&format!("sluice.refetch.{name}"))
        .create()
        .map_err(|e| KafkaSourceError::Client {
            source_name: name.to_string(),
            error: e.to_string(),
        })?;
    let mut tpl = TopicPartitionList::new();
    let mut got: BTreeMap<Tp, (i64, Vec<Fetched>)> = BTreeMap::new();
    for r in ranges.iter().filter(|r| r.to > r.from) {
        let refetch = |why: String| KafkaSourceError::Refetch {
            source_name: name.to_string(),
            topic: r.topic.clone(),
            partition: r.partition,
            from: r.from,
            to: r.to,
            got: r.from,
            waited: Duration::ZERO,
            why,
        };
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.from))
            .map_err(|e| refetch(e.to_string()))?;
        got.insert((r.topic.clone(), r.partition), (r.from, Vec::new()));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaSourceError::Broker {
            source_name: name.to_string(),
            what: "assigning the ranges to read again".into(),
            error: e.to_string(),
        })?;
    let end: BTreeMap<Tp, i64> = ranges
        .iter()
        .map(|r| ((r.topic.clone(), r.partition), r.to))
        .collect();
    let started = Instant::now();
    let done = |got: &BTreeMap<Tp, (i64, Vec<Fetched>)>| {
        got.iter()
            .all(|(tp, (reached, _))| end.get(tp).is_none_or(|to| reached >= to))
    };
    let mut last_error = String::from("no records arrived");
    while !done(&got) {
        if started.elapsed() >= config.broker_timeout {
            let Some((tp, reached)) = got
                .iter()
                .find(|(tp, (reached, _))| end.get(*tp).is_some_and(|to| reached < to))
                .map(|(tp, (reached, _))| (tp.clone(), *reached))
            else {
                break;
            };
            let (from, to) = ranges
                .iter()
                .find(|r| r.topic == tp.0 && r.partition == tp.1)
                .map_or((0, 0), |r| (r.from, r.to));
            if let Ok((low, _)) = consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(5))
                && low > reached
            {
                return Err(KafkaSourceError::Deleted {
                    source_name: name.to_string(),
                    topic: tp.0.clone(),
                    partition: tp.1,
                    from,
                    to,
                    low,
                });
            }
            return Err(KafkaSourceError::Refetch {
                source_name: name.to_string(),
                topic: tp.0.clone(),
                partition: tp.1,
                from,
                to,
                got: reached,
                waited: started.elapsed(),
                why: last_error,
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let tp = (m.topic().to_string(), m.partition());
                if let (Some((reached, list)), Some(to)) = (got.get_mut(&tp), end.get(&tp))
                    && m.offset() < *to
                    && m.offset() >= *reached
                {
                    list.push(Fetched::of(&m, config.format));
                    *reached = m.offset() + 1;
                } else if let (Some((reached, _)), Some(to)) = (got.get_mut(&tp), end.get(&tp))
                    && m.offset() >= *to
                {
                    *reached = (*reached).max(*to);
                }
            }
            Some(Err(e)) => last_error = e.to_string(),
        }
        // Past the last record of a range there may be only transaction markers: the
        // consumer's position says when they are behind it.
        if let Ok(positions) = consumer.position() {
            for e in positions.elements() {
                let tp = (e.topic().to_string(), e.partition());
                if let (Offset::Offset(p), Some((reached, _)), Some(to)) =
                    (e.offset(), got.get_mut(&tp), end.get(&tp))
                    && p >= *to
                {
                    *reached = (*reached).max(*to);
                }
            }
        }
    }
    for r in ranges {
        let Some((_, list)) = got.get_mut(&(r.topic.clone(), r.partition)) else {
            continue;
        };
        for f in list.drain(..) {
            match &f.value {
                Ok(v) => records.push(None, v, f.time),
                // As the batch first took it: a dead letter again (same key in the store).
                Err(why) if config.on_decode_error == DecodePolicy::DeadLetter => {
                    let why = format!("not {}: {why}", format_name(config.format));
                    rejected.push(f.rejected(&r.topic, r.partition, why));
                }
                Err(why) => {
                    undecodable += 1;
                    tracing::warn!(source = %name, topic = %r.topic, partition = r.partition, offset = f.offset, "skipped a record that is not {}: {why}", format_name(config.format));
                }
            }
        }
    }
    Ok(SourceInput::Fetched {
        records,
        undecodable,
        ranges: ranges.to_vec(),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaConfig {
        KafkaConfig {
            bootstrap: "127.0.0.1:9092".into(),
            topics: vec!["clicks".into()],
            pattern: None,
            starting_offsets: StartingOffsets::default(),
            starting_timestamp: None,
            max_rate_per_partition: None,
            format: KafkaFormat::Value,
            on_decode_error: DecodePolicy::Fail,
            group_id: None,
            isolation: Isolation::ReadCommitted,
            broker_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn config_checks_say_what_to_change() {
        assert!(config().check().is_ok());
        let mut c = config();
        c.topics.clear();
        assert!(c.check().unwrap_err().contains("topics"));
        c.pattern = Some("(".into());
        assert!(c.check().unwrap_err().contains("regular expression"));
        let mut c = config();
        c.topics = vec!["a b".into()];
        assert!(c.check().unwrap_err().contains("'a b'"));
        let mut c = config();
        c.properties.insert("isolation.level".into(), "x".into());
        assert!(c.check().unwrap_err().contains("isolation.level"));
        let mut c = config();
        c.starting_offsets = StartingOffsets::Offsets(BTreeMap::from([(
            "clicks".into(),
            BTreeMap::from([("x".into(), 1)]),
        )]));
        assert!(c.check().unwrap_err().contains("partition 'x'"));
    }

    #[test]
    fn starting_offsets_read_as_in_spark() {
        #[derive(Deserialize)]
        struct T {
            s: StartingOffsets,
        }
        let t: T = toml::from_str("s = \"earliest\"").unwrap();
        assert_eq!(t.s, StartingOffsets::Named(StartAt::Earliest));
        let t: T = toml::from_str("s = { clicks = { \"0\" = 5, \"1\" = -2 } }").unwrap();
        let StartingOffsets::Offsets(m) = t.s else {
            panic!("offsets")
        };
        assert_eq!(m["clicks"]["0"], 5);
    }
}
