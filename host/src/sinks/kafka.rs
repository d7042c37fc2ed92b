//! The Kafka sink: every record of a batch to a Kafka topic, with librdkafka (`rdkafka`).
//!
//! ```toml
//! [[sinks]]
//! kind = "kafka"
//! input = "totals"
//! bootstrap = "127.0.0.1:9092"
//! topic = "totals"
//! exactly_once = true
//! ```
//!
//! **A record** is the stream's key (shown as text by its codec, as `print` shows it; none for
//! an unkeyed stream) and value (shown the same way: numbers as their decimal text, JSON as JSON
//! text, bytes as hex). Options: `topic` (fixed) or `topic_field` (a top-level string field of
//! a JSON value), `key_field` (a top-level field of a JSON value in place of the stream's key),
//! `headers` (a fixed table added to every record) and `headers_field` (a JSON object field of
//! the value, each member one header). A record missing a field fails the batch before anything
//! of it is produced, naming the field and the record.
//!
//! **Idempotent mode** (the default): `enable.idempotence = true`, so a retry inside the
//! producer never writes a record twice; each batch is produced and flushed within `timeout`.
//! Across crashes it is *at-least-once*: a batch run again after `kill -9` (same id, same
//! records) is written again.
//!
//! **Exactly-once** (`exactly_once = true`): a transactional producer with
//! `transactional.id = sluice.<tenant>.<job>.sink<N>` (N: the sink's 1-based position among
//! the job's sinks), one transaction per batch. Inside the transaction, after the records, the
//! sink commits an offset for the consumer group of the same name
//! ([`KafkaSinkConfig::commit_topic`] partition 0, offset = batch id + 1, metadata = the batch
//! time): the marker of the last batch whose output is committed. So the batch's output and
//! its marker commit together or not at all. On its first batch the sink calls
//! `init_transactions` (fencing a previous incarnation, e.g. a killed host's producer, and
//! aborting its open transaction) and then reads the marker. The executor runs sinks before it
//! commits the batch's state and records the batch finished, so after a crash:
//! - before the Kafka commit: the zombie's transaction is aborted (never visible to
//!   `read_committed` readers) and the batch runs again into a new one;
//! - after the Kafka commit, before the state commit: the batch runs again, finds its id and
//!   time covered by the marker, produces nothing and logs that it was committed before.
//!
//! A batch with no records opens no transaction. A delivery error, a fenced producer or a broker
//! that does not answer within `timeout` (default 30 s; also the producer's
//! `message.timeout.ms` and `transaction.timeout.ms`) fails the batch with the broker's message;
//! the producer is then dropped (its open transaction aborted when the broker answers) and made
//! again for the next batch.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata, DefaultConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::SinkBatch;
use crate::batch::codec::Codec;
use crate::metrics::{Registry, SeriesKey};

/// The default [`KafkaSinkConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest and longest `timeout`: librdkafka's least `transaction.timeout.ms`, and the
/// broker's default `transaction.max.timeout.ms` (15 minutes), past which `init_transactions`
/// is refused.
pub const TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(15 * 60));

/// librdkafka settings the sink sets itself, with what sets them; `properties` may not name
/// them.
pub const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "`bootstrap`"),
    ("metadata.broker.list", "`bootstrap`"),
    (
        "transactional.id",
        "`exactly_once = true` (it is sluice.<tenant>.<job>.sink<N>)",
    ),
    (
        "enable.idempotence",
        "the sink (always true: a retry never writes a record twice)",
    ),
    ("acks", "the sink (all, which idempotence requires)"),
    (
        "request.required.acks",
        "the sink (all, which idempotence requires)",
    ),
    ("message.timeout.ms", "`timeout`"),
    ("delivery.timeout.ms", "`timeout`"),
    ("transaction.timeout.ms", "`timeout`"),
    (
        "group.id",
        "the sink (its commit marker's group is sluice.<tenant>.<job>.sink<N>)",
    ),
    (
        "plugin.library.paths",
        "nobody: it would load a library into the host",
    ),
];

/// A Kafka sink's settings: plain data, part of a job's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// The brokers to start from, librdkafka's `bootstrap.servers`: `host:port[,host:port…]`.
    pub bootstrap: String,
    /// The topic every record goes to. Exactly one of `topic` and `topic_field`.
    #[serde(default)]
    pub topic: Option<String>,
    /// A top-level field of each (JSON) value naming the record's topic.
    #[serde(default)]
    pub topic_field: Option<String>,
    /// A top-level field of each (JSON) value to key the record by, in place of the stream's
    /// key: a string as it is, `null` no key, anything else its JSON text.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Headers added to every record, name → value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A top-level field of each (JSON) value holding an object: each member a header (a
    /// string as it is, `null` a header without value, anything else its JSON text).
    #[serde(default)]
    pub headers_field: Option<String>,
    /// One transaction per batch, committed with the batch's marker (see the module docs).
    /// Default false: an idempotent producer, at-least-once across crashes.
    #[serde(default)]
    pub exactly_once: bool,
    /// With `exactly_once`: the topic whose partition 0 carries the commit marker (as an
    /// offset of the sink's consumer group; nothing is written to the topic). Default: `topic`;
    /// needed with `topic_field`.
    #[serde(default)]
    pub commit_topic: Option<String>,
    /// How long the broker may take to take a batch, commit, or answer at all; also the
    /// producer's `message.timeout.ms` and `transaction.timeout.ms`. Default 30 s.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// More librdkafka producer settings (e.g. `"linger.ms" = "20"`, `"compression.type" =
    /// "lz4"`); not those in [`OWNED_PROPERTIES`].
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// `properties` as a manifest writes them: a table of librdkafka names (quoted, since they
/// hold dots) to strings, numbers or booleans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Text(String),
            Integer(i64),
            Float(f64),
            Bool(bool),
            Table(BTreeMap<String, serde::de::IgnoredAny>),
        }
        let raw = BTreeMap::<String, Value>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let text = match value {
                Value::Text(s) => s,
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Table(inner) => {
                    let first = inner.keys().next().cloned().unwrap_or_default();
                    return Err(serde::de::Error::custom(format!(
                        "properties: `{name}` is a table; librdkafka names hold dots, so quote them: \"{name}.{first}\" = \"…\""
                    )));
                }
            };
            out.insert(name, text);
        }
        Ok(Self(out))
    }
}

/// One problem with a Kafka sink's settings, found when the job is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// The names a sink's producer and marker use on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkIds {
    /// `transactional.id` of an exactly-once sink, also the marker's consumer group:
    /// `sluice.<tenant>.<job>.sink<N>`.
    pub transactional_id: String,
}

impl SinkIds {
    /// The ids of the `index`-th (1-based) sink of `tenant`'s `job`.
    pub fn new(tenant: &str, job: &str, index: usize) -> Self {
        Self {
            transactional_id: format!("sluice.{tenant}.{job}.sink{index}"),
        }
    }
}

impl KafkaSinkConfig {
    /// Settings with a fixed topic and every default.
    pub fn new(bootstrap: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            topic: Some(topic.into()),
            topic_field: None,
            key_field: None,
            headers: BTreeMap::new(),
            headers_field: None,
            exactly_once: false,
            commit_topic: None,
            timeout: DEFAULT_TIMEOUT,
            properties: BTreeMap::new(),
        }
    }

    /// The topic carrying the commit marker of an exactly-once sink.
    pub fn marker_topic(&self) -> Option<&str> {
        self.commit_topic.as_deref().or(self.topic.as_deref())
    }

    /// Whether records are read as JSON for a field.
    fn reads_fields(&self) -> bool {
        self.topic_field.is_some() || self.key_field.is_some() || self.headers_field.is_some()
    }

    /// Every problem with these settings for a stream whose values read as `value_codec`,
    /// without touching the network (librdkafka checks `properties` offline).
    pub fn check(&self, value_codec: Codec, ids: &SinkIds) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |message: String, hint: Option<&str>| {
            problems.push(Problem {
                message,
                hint: hint.map(String::from),
            })
        };
        if self.bootstrap.trim().is_empty()
            || self
                .bootstrap
                .split(',')
                .any(|b| b.trim().is_empty() || b.contains(char::is_whitespace))
        {
            problem(
                format!("bootstrap = {:?} names no broker", self.bootstrap),
                Some(
                    "write host:port, several separated by commas, e.g. bootstrap = \"127.0.0.1:9092\"",
                ),
            );
        }
        match (&self.topic, &self.topic_field) {
            (Some(_), Some(_)) => problem(
                "both `topic` and `topic_field` are set".into(),
                Some("keep `topic` for one topic, or `topic_field` to take it from each record"),
            ),
            (None, None) => problem(
                "a kafka sink needs `topic` (or `topic_field`)".into(),
                Some("e.g. topic = \"totals\""),
            ),
            _ => {}
        }
        for (what, topic) in [("topic", &self.topic), ("commit_topic", &self.commit_topic)] {
            if let Some(t) = topic
                && let Err(why) = topic_name(t)
            {
                problem(
                    format!("{what} = {t:?}: {why}"),
                    Some("a Kafka topic name is 1 to 249 of A-Z a-z 0-9 . _ -"),
                );
            }
        }
        for (what, field) in [
            ("topic_field", &self.topic_field),
            ("key_field", &self.key_field),
            ("headers_field", &self.headers_field),
        ] {
            if field.as_deref().is_some_and(str::is_empty) {
                problem(
                    format!("{what} is empty"),
                    Some("name a top-level field of the records' JSON values"),
                );
            }
        }
        if self.reads_fields() && value_codec != Codec::Json {
            let field = [
                ("topic_field", &self.topic_field),
                ("key_field", &self.key_field),
                ("headers_field", &self.headers_field),
            ]
            .into_iter()
            .find_map(|(what, f)| f.as_ref().map(|_| what))
            .unwrap_or("a field");
            problem(
                format!(
                    "`{field}` reads a field of each record's JSON value, but the stream's values are {}",
                    value_codec.as_str()
                ),
                Some("give the stream value_codec = \"json\", or use fixed `topic` and `headers`"),
            );
        }
        if self.headers.keys().any(String::is_empty) {
            problem("a header name is empty".into(), None);
        }
        if self.commit_topic.is_some() && !self.exactly_once {
            problem(
                "`commit_topic` applies only with exactly_once = true".into(),
                Some("remove it, or set exactly_once = true"),
            );
        }
        if self.exactly_once && self.marker_topic().is_none() {
            problem(
                "an exactly-once sink with `topic_field` needs `commit_topic`: an existing topic whose partition 0 carries the sink's commit marker (a consumer-group offset; nothing is written to it)".into(),
                Some("e.g. commit_topic = \"sluice-markers\""),
            );
        }
        if self.timeout < TIMEOUT_RANGE.0 || self.timeout > TIMEOUT_RANGE.1 {
            problem(
                format!(
                    "timeout = \"{}\" is outside 1s..=15min",
                    humantime::format_duration(self.timeout)
                ),
                Some("leave it out for the default, 30s"),
            );
        }
        let mut owned = false;
        for name in self.properties.keys() {
            if let Some((_, by)) = OWNED_PROPERTIES.iter().find(|(p, _)| p == name) {
                owned = true;
                problem(
                    format!("properties: `{name}` is set by {by}, not by `properties`"),
                    Some("remove it from `properties`"),
                );
            }
        }
        if !owned && let Err(e) = self.client_config(ids).create_native_config() {
            let message = match e {
                KafkaError::ClientConfig(_, desc, key, value) => {
                    format!("properties: `{key}` = {value:?}: {desc}")
                }
                other => format!("properties: {other}"),
            };
            problem(
                message,
                Some("see librdkafka's CONFIGURATION.md for producer properties"),
            );
        }
        problems
    }

    /// The producer's librdkafka settings: `properties`, then what the sink owns.
    fn client_config(&self, ids: &SinkIds) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        let ms = self.timeout.as_millis().to_string();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", &ms);
        if self.exactly_once {
            config
                .set("transactional.id", &ids.transactional_id)
                .set("transaction.timeout.ms", &ms);
        }
        config.set_log_level(RDKafkaLogLevel::Warning);
        config
    }
}

/// Whether `name` is a legal Kafka topic name.
fn topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 249 {
        return Err("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("not a topic name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("holds a character other than A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// Why a Kafka sink could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// The broker did not answer within `timeout`.
    #[error(
        "no answer from the broker within {timeout} while {step}: {message}; check that a Kafka broker listens at `bootstrap` and this host can reach it (or raise `timeout`)"
    )]
    Unreachable {
        /// `timeout`, humanly.
        timeout: String,
        /// What the sink was doing: "starting transactions", "delivering 10 records", ….
        step: String,
        /// librdkafka's and the broker's messages.
        message: String,
    },
    /// Records were refused or could not be delivered.
    #[error("{failed} of {records} records to topic `{topic}` were not delivered: {message}")]
    Delivery {
        /// The topic of the first failed record.
        topic: String,
        /// Records that failed.
        failed: u64,
        /// Records of the batch.
        records: u64,
        /// The broker's (or librdkafka's) message for the first failure.
        message: String,
    },
    /// Another producer with the same `transactional.id` started: this one may not write.
    #[error(
        "the producer with transactional.id `{transactional_id}` was fenced: {message}; another producer with that id started (is the job running twice, on this or another host?)"
    )]
    Fenced {
        /// The id.
        transactional_id: String,
        /// The broker's message.
        message: String,
    },
    /// A step of the transaction failed.
    #[error("{step} failed: {message}")]
    Transaction {
        /// `init_transactions`, `begin_transaction`, `send_offsets_to_transaction`,
        /// `commit_transaction`, reading the commit marker.
        step: &'static str,
        /// The broker's (or librdkafka's) message.
        message: String,
    },
    /// A record lacks what the sink's settings read from it.
    #[error("partition {partition}, record {index} ({value}): {problem}")]
    Record {
        /// Its partition in the batch.
        partition: usize,
        /// Its position in the partition.
        index: usize,
        /// Its value, cut to 200 characters.
        value: String,
        /// What is missing or wrong, naming the field.
        problem: String,
    },
    /// librdkafka would not create the producer or the marker's reader.
    #[error("cannot create the Kafka client: {0}")]
    Client(String),
}

/// What a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Records produced (and, exactly-once, committed).
    Produced(u64),
    /// The batch's output was committed before (a batch run again after a crash): nothing
    /// was produced.
    AlreadyCommitted,
}

/// The last batch whose output an exactly-once sink committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    batch: u64,
    /// The batch time, when the broker kept the offset's metadata.
    time: Option<i64>,
}

impl Marker {
    /// Whether batch `id` at `time` was committed: ids and times only grow within one
    /// checkpoint, and a fresh checkpoint (ids from 1 again) has later times.
    fn covers(&self, id: u64, time: i64) -> bool {
        id <= self.batch && self.time.is_none_or(|t| time <= t)
    }

    /// The offset of the marker's partition: the next batch.
    fn offset(&self) -> i64 {
        (self.batch as i64).saturating_add(1)
    }

    fn metadata(&self) -> String {
        self.time.map(|t| format!("time={t}")).unwrap_or_default()
    }

    /// Read back from the group's committed offset and metadata.
    fn read(offset: Offset, metadata: &str) -> Option<Self> {
        let Offset::Offset(next) = offset else {
            return None;
        };
        let batch = u64::try_from(next.checked_sub(1)?).ok()?;
        let time = metadata
            .strip_prefix("time=")
            .and_then(|t| t.parse::<i64>().ok());
        Some(Self { batch, time })
    }
}

/// A sink's running half: its settings and, from its first batch on, its producer. It lives
/// as long as the job's executor, so one producer (and one `transactional.id` incarnation)
/// serves every batch.
pub struct KafkaSink {
    config: Arc<KafkaSinkConfig>,
    ids: SinkIds,
    tenant: Arc<str>,
    job: Arc<str>,
    index: usize,
    metrics: Arc<Registry>,
    connected: Option<Connected>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("bootstrap", &self.config.bootstrap)
            .field("sink", &self.index)
            .field("connected", &self.connected.is_some())
            .finish()
    }
}

/// A producer ready for batches.
struct Connected {
    producer: ThreadedProducer<Reports>,
    /// Exactly-once: the marker's consumer group.
    group: Option<ConsumerGroupMetadata>,
    /// Exactly-once: the last batch committed.
    last: Option<Marker>,
}

/// What librdkafka reports back (on the producer's polling thread): how many records of the
/// current batch were delivered or failed, its delivery failures, and the last error it logged
/// (a broker that refuses connections says so only there).
struct Reports {
    tenant: Arc<str>,
    job: Arc<str>,
    /// Records of the batch delivered or failed.
    reported: AtomicU64,
    /// Records of the batch sent: the waiter is woken when `reported` reaches it.
    expected: AtomicU64,
    /// Guards the wait for `reported` (no data of its own).
    waiting: Mutex<()>,
    wake: Condvar,
    failed: AtomicU64,
    first_failure: Mutex<Option<Failure>>,
    last_error: Mutex<Option<String>>,
}

impl Reports {
    fn new(tenant: Arc<str>, job: Arc<str>) -> Self {
        Self {
            tenant,
            job,
            reported: AtomicU64::new(0),
            expected: AtomicU64::new(u64::MAX),
            waiting: Mutex::new(()),
            wake: Condvar::new(),
            failed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    fn remember(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Before a batch's records are sent.
    fn reset(&self) {
        self.expected.store(u64::MAX, Ordering::SeqCst);
        self.reported.store(0, Ordering::SeqCst);
        self.failed.store(0, Ordering::Relaxed);
        *self.first_failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Wait until all `sent` records of the batch are reported, at most until `until`:
    /// whether they were.
    fn wait_reported(&self, sent: u64, until: Instant) -> bool {
        self.expected.store(sent, Ordering::SeqCst);
        let mut guard = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        while self.reported.load(Ordering::SeqCst) < sent {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            guard = self
                .wake
                .wait_timeout(guard, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// The batch's first delivery failure, with how many failed.
    fn failure(&self) -> Option<Failure> {
        let failed = self.failed.load(Ordering::Relaxed);
        let first = self
            .first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        first.map(|f| Failure { failed, ..f })
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(tenant = %self.tenant, job = %self.job, "librdkafka {fac}: {message}");
                self.remember(message.to_string());
            }
            _ => {
                tracing::debug!(tenant = %self.tenant, job = %self.job, "librdkafka {fac}: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(tenant = %self.tenant, job = %self.job, "librdkafka: {error}: {reason}");
        self.remember(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let reported = self.reported.fetch_add(1, Ordering::SeqCst) + 1;
        if reported >= self.expected.load(Ordering::SeqCst) {
            let _guard = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        if let Err((error, message)) = result
            && self.failed.fetch_add(1, Ordering::Relaxed) == 0
        {
            *self.first_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(Failure {
                failed: 1,
                topic: message.topic().to_string(),
                code: error.rdkafka_error_code(),
                message: error.to_string(),
            });
        }
    }
}

/// A record librdkafka could not deliver.
#[derive(Debug, Clone)]
struct Failure {
    /// How many of the batch failed.
    failed: u64,
    topic: String,
    code: Option<RDKafkaErrorCode>,
    message: String,
}

/// One record to produce.
struct Out<'a> {
    topic: Cow<'a, str>,
    key: Option<Cow<'a, [u8]>>,
    value: Cow<'a, [u8]>,
    headers: Option<OwnedHeaders>,
}

/// `bytes` shown as text by `codec`, borrowed when it already is (as [`Codec::show`] does).
fn shown(codec: Codec, bytes: &[u8]) -> Cow<'_, [u8]> {
    match codec {
        Codec::Bytes => Cow::Owned(hex::encode(bytes).into_bytes()),
        _ => match String::from_utf8_lossy(bytes) {
            Cow::Borrowed(_) => Cow::Borrowed(bytes),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        },
    }
}

/// A JSON member as header or key bytes: a string as it is, anything else its JSON text.
fn member_bytes(value: &serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// The first 200 characters of a value, for an error.
fn clipped(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

impl KafkaSink {
    /// The `index`-th (1-based) sink of `tenant`'s `job`. Nothing connects until its first
    /// batch.
    pub fn new(
        config: Arc<KafkaSinkConfig>,
        tenant: Arc<str>,
        job: Arc<str>,
        index: usize,
        metrics: Arc<Registry>,
    ) -> Self {
        Self {
            ids: SinkIds::new(&tenant, &job, index),
            config,
            tenant,
            job,
            index,
            metrics,
            connected: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &KafkaSinkConfig {
        &self.config
    }

    /// Produce one batch (see the module docs).
    pub fn write(&mut self, batch: &SinkBatch<'_>) -> Result<Written, KafkaSinkError> {
        let config = self.config.clone();
        let outs = records(&config, batch)?;
        let started = Instant::now();
        let result = self.send(batch, &outs);
        match &result {
            Ok(Written::Produced(n)) => {
                tracing::debug!(tenant = %self.tenant, job = %self.job, batch = batch.id, sink = self.index, records = n, ms = started.elapsed().as_secs_f64() * 1e3, exactly_once = self.config.exactly_once, "kafka sink: batch written");
                let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
                for o in &outs {
                    *per_topic.entry(&o.topic).or_default() += 1;
                }
                for (topic, n) in per_topic {
                    self.metrics.add(
                        &SeriesKey::new(
                            "sluice_kafka_sink_records_total",
                            &[
                                ("tenant", &self.tenant),
                                ("job", &self.job),
                                ("topic", topic),
                            ],
                        ),
                        n,
                    );
                }
            }
            Ok(Written::AlreadyCommitted) => {}
            Err(e) => {
                tracing::warn!(tenant = %self.tenant, job = %self.job, batch = batch.id, sink = self.index, "kafka sink: batch not written: {e}");
                // Start over with a new producer at the next batch: an exactly-once one
                // fences this one and reads the marker again (the commit may have happened).
                self.connected = None;
            }
        }
        result
    }
}

/// Every record of the batch, checked before anything is produced.
fn records<'a>(
    config: &'a KafkaSinkConfig,
    batch: &SinkBatch<'a>,
) -> Result<Vec<Out<'a>>, KafkaSinkError> {
    let total: usize = batch.partitions.iter().map(crate::batch::Batch::len).sum();
    let mut outs = Vec::with_capacity(total);
    for (partition, part) in batch.partitions.iter().enumerate() {
        for (index, r) in part.records().enumerate() {
            let fail = |problem: String| KafkaSinkError::Record {
                partition,
                index,
                value: clipped(r.value),
                problem,
            };
            let json = if config.reads_fields() {
                match serde_json::from_slice::<serde_json::Value>(r.value) {
                    Ok(serde_json::Value::Object(map)) => Some(map),
                    Ok(_) => {
                        return Err(fail(
                            "the value is not a JSON object, so it has no fields".into(),
                        ));
                    }
                    Err(e) => return Err(fail(format!("the value is not JSON: {e}"))),
                }
            } else {
                None
            };
            let field = |name: &str| {
                json.as_ref()
                    .and_then(|m| m.get(name))
                    .ok_or_else(|| fail(format!("the value has no field `{name}`")))
            };
            let topic = match (&config.topic, &config.topic_field) {
                (Some(t), _) => Cow::Borrowed(t.as_str()),
                (None, Some(name)) => match field(name)? {
                    serde_json::Value::String(t) if topic_name(t).is_ok() => Cow::Owned(t.clone()),
                    serde_json::Value::String(t) => {
                        return Err(fail(format!(
                            "field `{name}` = {t:?} is not a topic name: {}",
                            topic_name(t).err().unwrap_or_default()
                        )));
                    }
                    other => {
                        return Err(fail(format!(
                            "field `{name}` is {other}, not a topic name (a string)"
                        )));
                    }
                },
                (None, None) => {
                    return Err(fail("the sink has no topic".into()));
                }
            };
            let key = match &config.key_field {
                Some(name) => match field(name)? {
                    serde_json::Value::Null => None,
                    v => Some(Cow::Owned(member_bytes(v))),
                },
                None => r.key.map(|k| shown(batch.key_codec, k)),
            };
            let extra = match &config.headers_field {
                Some(name) => match field(name)? {
                    serde_json::Value::Object(m) => Some(m),
                    other => {
                        return Err(fail(format!(
                            "field `{name}` is {other}, not an object of headers"
                        )));
                    }
                },
                None => None,
            };
            let count = config.headers.len() + extra.map_or(0, serde_json::Map::len);
            let headers = (count > 0).then(|| {
                let mut h = OwnedHeaders::new_with_capacity(count);
                for (name, value) in &config.headers {
                    h = h.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    });
                }
                for (name, value) in extra.into_iter().flatten() {
                    let bytes = (!value.is_null()).then(|| member_bytes(value));
                    h = h.insert(Header {
                        key: name,
                        value: bytes.as_deref(),
                    });
                }
                h
            });
            outs.push(Out {
                topic,
                key,
                value: shown(batch.value_codec, r.value),
                headers,
            });
        }
    }
    Ok(outs)
}

impl KafkaSink {
    fn unreachable(
        &self,
        step: impl Into<String>,
        error: &dyn std::fmt::Display,
    ) -> KafkaSinkError {
        let message = self
            .connected_reports_last_error()
            .unwrap_or_else(|| error.to_string());
        KafkaSinkError::Unreachable {
            timeout: humantime::format_duration(self.config.timeout).to_string(),
            step: step.into(),
            message,
        }
    }

    fn connected_reports_last_error(&self) -> Option<String> {
        self.connected
            .as_ref()
            .and_then(|c| c.producer.context().last_error())
    }

    /// Make the producer; exactly-once, fence the previous incarnation and read the marker.
    fn connect(&mut self) -> Result<(), KafkaSinkError> {
        let reports = Reports::new(self.tenant.clone(), self.job.clone());
        let producer: ThreadedProducer<Reports> = self
            .config
            .client_config(&self.ids)
            .create_with_context(reports)
            .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
        if !self.config.exactly_once {
            self.connected = Some(Connected {
                producer,
                group: None,
                last: None,
            });
            return Ok(());
        }
        let timeout = self.config.timeout;
        let started = Instant::now();
        let init = producer.init_transactions(timeout);
        let last = producer.context().last_error();
        if let Err(e) = init {
            return Err(self.classify(&e, "init_transactions", "starting transactions", last));
        }
        // The marker: the group's committed offset, read after the fencing above resolved
        // any transaction left open.
        let marker_topic = self.config.marker_topic().unwrap_or_default().to_string();
        let mut reader_config = ClientConfig::new();
        for (name, value) in &self.config.properties {
            reader_config.set(name, value);
        }
        let reader: BaseConsumer<DefaultConsumerContext> = reader_config
            .set("bootstrap.servers", &self.config.bootstrap)
            .set("group.id", &self.ids.transactional_id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set_log_level(RDKafkaLogLevel::Error)
            .create()
            .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&marker_topic, 0);
        let remaining = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        let committed = reader.committed_offsets(wanted, remaining).map_err(|e| {
            self.classify(
                &e,
                "reading the commit marker",
                "reading the commit marker",
                last.clone(),
            )
        })?;
        let marker = committed
            .find_partition(&marker_topic, 0)
            .and_then(|p| Marker::read(p.offset(), p.metadata()));
        let group = reader.group_metadata();
        drop(reader);
        let Some(group) = group else {
            return Err(KafkaSinkError::Client(
                "librdkafka gave no consumer group metadata for the commit marker".into(),
            ));
        };
        tracing::info!(
            tenant = %self.tenant,
            job = %self.job,
            sink = self.index,
            transactional_id = %self.ids.transactional_id,
            "kafka sink: transactions started (a previous producer with this id is fenced); last committed batch: {}",
            marker.map_or_else(|| "none".to_string(), |m| m.batch.to_string())
        );
        self.connected = Some(Connected {
            producer,
            group: Some(group),
            last: marker,
        });
        Ok(())
    }

    /// A librdkafka error as the sink reports it.
    fn classify(
        &self,
        error: &KafkaError,
        step: &'static str,
        doing: &str,
        last: Option<String>,
    ) -> KafkaSinkError {
        let code = error.rdkafka_error_code();
        let mut message = error.to_string();
        if let Some(last) = &last {
            message.push_str(&format!(" (last: {last})"));
        }
        match code {
            Some(
                RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::TimedOutQueue
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::CoordinatorNotAvailable,
            ) => KafkaSinkError::Unreachable {
                timeout: humantime::format_duration(self.config.timeout).to_string(),
                step: doing.to_string(),
                // What the broker (or the connection to it) last said tells more than
                // librdkafka's "timed out".
                message: last.unwrap_or(message),
            },
            Some(
                RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch,
            ) => KafkaSinkError::Fenced {
                transactional_id: self.ids.transactional_id.clone(),
                message,
            },
            _ => KafkaSinkError::Transaction { step, message },
        }
    }

    fn send(&mut self, batch: &SinkBatch<'_>, outs: &[Out<'_>]) -> Result<Written, KafkaSinkError> {
        if self.connected.is_none() {
            self.connect()?;
        }
        let Some(c) = &self.connected else {
            return Err(KafkaSinkError::Client("no producer".into()));
        };
        if self.config.exactly_once {
            if let Some(m) = c.last
                && m.covers(batch.id, batch.time)
            {
                tracing::info!(tenant = %self.tenant, job = %self.job, batch = batch.id, sink = self.index, "kafka sink: batch {} was committed to Kafka before (last committed batch {}): not written again", batch.id, m.batch);
                return Ok(Written::AlreadyCommitted);
            }
            if outs.is_empty() {
                return Ok(Written::Produced(0));
            }
            return self.transaction(batch, outs);
        }
        if outs.is_empty() {
            return Ok(Written::Produced(0));
        }
        let deadline = Instant::now() + self.config.timeout;
        self.produce(outs, deadline)?;
        Ok(Written::Produced(outs.len() as u64))
    }

    /// Exactly-once: one transaction holding the records and the marker.
    fn transaction(
        &mut self,
        batch: &SinkBatch<'_>,
        outs: &[Out<'_>],
    ) -> Result<Written, KafkaSinkError> {
        let timeout = self.config.timeout;
        let Some(c) = &self.connected else {
            return Err(KafkaSinkError::Client("no producer".into()));
        };
        let last = || c.producer.context().last_error();
        c.producer.begin_transaction().map_err(|e| {
            self.classify(&e, "begin_transaction", "beginning a transaction", last())
        })?;
        let deadline = Instant::now() + timeout;
        let result = self.produce(outs, deadline).and_then(|()| {
            let Some(c) = &self.connected else {
                return Err(KafkaSinkError::Client("no producer".into()));
            };
            tracing::debug!(tenant = %self.tenant, job = %self.job, batch = batch.id, sink = self.index, "kafka sink: {} records delivered, committing the transaction", outs.len());
            let marker = Marker {
                batch: batch.id,
                time: Some(batch.time),
            };
            let topic = self.config.marker_topic().unwrap_or_default();
            let mut offsets = TopicPartitionList::new();
            let mut p = offsets.add_partition(topic, 0);
            p.set_offset(Offset::Offset(marker.offset()))
                .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
            p.set_metadata(marker.metadata());
            if let Some(group) = &c.group {
                c.producer
                    .send_offsets_to_transaction(&offsets, group, left(deadline))
                    .map_err(|e| {
                        self.classify(
                            &e,
                            "send_offsets_to_transaction",
                            "recording the batch in its transaction",
                            last(),
                        )
                    })?;
            }
            c.producer
                .commit_transaction(left(deadline))
                .map_err(|e| self.classify(&e, "commit_transaction", "committing", last()))?;
            Ok(marker)
        });
        let outcome = match &result {
            Ok(_) => "committed",
            Err(_) => "aborted",
        };
        self.metrics.add(
            &SeriesKey::new(
                "sluice_kafka_sink_transactions_total",
                &[
                    ("tenant", &self.tenant),
                    ("job", &self.job),
                    ("sink", &self.index.to_string()),
                    ("outcome", outcome),
                ],
            ),
            1,
        );
        match result {
            Ok(marker) => {
                if let Some(c) = &mut self.connected {
                    c.last = Some(marker);
                }
                Ok(Written::Produced(outs.len() as u64))
            }
            Err(e) => {
                // Abort now when the broker answers; when it does not, the next producer's
                // `init_transactions` aborts it.
                if !matches!(
                    e,
                    KafkaSinkError::Unreachable { .. } | KafkaSinkError::Fenced { .. }
                ) && let Some(c) = &self.connected
                    && let Err(abort) = c.producer.abort_transaction(timeout)
                {
                    tracing::warn!(tenant = %self.tenant, job = %self.job, batch = batch.id, sink = self.index, "kafka sink: abort_transaction: {abort}");
                }
                Err(e)
            }
        }
    }

    /// Send every record and wait until each is delivered (or failed) by `deadline`.
    fn produce(&self, outs: &[Out<'_>], deadline: Instant) -> Result<(), KafkaSinkError> {
        let Some(c) = &self.connected else {
            return Err(KafkaSinkError::Client("no producer".into()));
        };
        let producer = &c.producer;
        producer.context().reset();
        for o in outs {
            let mut record = BaseRecord::<[u8], [u8]>::to(&o.topic).payload(&o.value);
            if let Some(key) = &o.key {
                record = record.key(key);
            }
            if let Some(h) = &o.headers {
                record = record.headers(h.clone());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if Instant::now() >= deadline {
                            return Err(self.unreachable(
                                format!(
                                    "delivering {} records (the send queue stayed full)",
                                    outs.len()
                                ),
                                &"librdkafka's queue is full",
                            ));
                        }
                        // The polling thread frees the queue as records are delivered.
                        std::thread::sleep(Duration::from_millis(2));
                        record = back;
                    }
                    Err((e, _)) => {
                        return Err(KafkaSinkError::Delivery {
                            topic: o.topic.to_string(),
                            failed: 1,
                            records: outs.len() as u64,
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
        // Wait for every record's delivery report, woken by the last one. Not rdkafka's
        // `flush`, which waits in steps of 100 ms (that added 100 ms to every batch).
        // librdkafka fails a record still undelivered at `message.timeout.ms` (= `timeout`):
        // a second more hears that, with its reason.
        let flushed = producer
            .context()
            .wait_reported(outs.len() as u64, deadline + Duration::from_secs(1));
        if let Some(failure) = producer.context().failure() {
            let mut message = format!(
                "{} of {} records to topic `{}` failed: {}",
                failure.failed,
                outs.len(),
                failure.topic,
                failure.message
            );
            if let Some(last) = producer.context().last_error() {
                message.push_str(&format!(" (last: {last})"));
            }
            return Err(match failure.code {
                Some(RDKafkaErrorCode::MessageTimedOut) => KafkaSinkError::Unreachable {
                    timeout: humantime::format_duration(self.config.timeout).to_string(),
                    step: format!("delivering {} records", outs.len()),
                    message,
                },
                _ => KafkaSinkError::Delivery {
                    topic: failure.topic,
                    failed: failure.failed,
                    records: outs.len() as u64,
                    message: failure.message,
                },
            });
        }
        if !flushed {
            return Err(self.unreachable(
                format!("delivering {} records", outs.len()),
                &format!(
                    "{} records still in flight",
                    producer.in_flight_count().max(0)
                ),
            ));
        }
        Ok(())
    }
}

/// What is left of the time until `deadline` (at least a millisecond: librdkafka reads 0 as
/// "do not wait").
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;

    fn ids() -> SinkIds {
        SinkIds::new("local", "job", 1)
    }

    fn sink(config: KafkaSinkConfig) -> KafkaSink {
        KafkaSink::new(
            Arc::new(config),
            "local".into(),
            "job".into(),
            1,
            Arc::new(Registry::default()),
        )
    }

    #[test]
    fn ids_are_derived_from_tenant_job_and_position() {
        assert_eq!(
            SinkIds::new("acme", "totals", 2).transactional_id,
            "sluice.acme.totals.sink2"
        );
    }

    #[test]
    fn the_marker_covers_a_batch_run_again_but_not_a_fresh_checkpoint() {
        let m = Marker {
            batch: 7,
            time: Some(7000),
        };
        assert!(m.covers(7, 7000));
        assert!(m.covers(3, 3000));
        assert!(!m.covers(8, 8000));
        // A new checkpoint starts at batch 1 again, later in time.
        assert!(!m.covers(1, 9000));
        assert_eq!(
            Marker::read(Offset::Offset(m.offset()), &m.metadata()),
            Some(m)
        );
        assert_eq!(Marker::read(Offset::Invalid, ""), None);
        assert_eq!(
            Marker::read(Offset::Offset(5), ""),
            Some(Marker {
                batch: 4,
                time: None
            })
        );
        assert_eq!(Marker::read(Offset::Offset(0), ""), None);
    }

    #[test]
    fn settings_are_checked_offline() {
        let good = KafkaSinkConfig::new("127.0.0.1:9092", "totals");
        assert_eq!(good.check(Codec::Text, &ids()), vec![]);

        let mut both = good.clone();
        both.topic_field = Some("t".into());
        let p = both.check(Codec::Json, &ids());
        assert!(
            p[0].message.contains("both `topic` and `topic_field`"),
            "{p:?}"
        );

        let mut routed = good.clone();
        routed.topic = None;
        routed.topic_field = Some("t".into());
        let p = routed.check(Codec::Number, &ids());
        assert!(
            p.iter()
                .any(|p| p.message.contains("`topic_field` reads a field")),
            "{p:?}"
        );
        routed.exactly_once = true;
        let p = routed.check(Codec::Json, &ids());
        assert!(
            p.iter().any(|p| p.message.contains("needs `commit_topic`")),
            "{p:?}"
        );
        routed.commit_topic = Some("markers".into());
        assert_eq!(routed.check(Codec::Json, &ids()), vec![]);

        let mut owned = good.clone();
        owned
            .properties
            .insert("transactional.id".into(), "mine".into());
        let p = owned.check(Codec::Text, &ids());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message
                .contains("`transactional.id` is set by `exactly_once"),
            "{p:?}"
        );

        let mut unknown = good.clone();
        unknown.properties.insert("lingr.ms".into(), "5".into());
        let p = unknown.check(Codec::Text, &ids());
        assert!(p[0].message.contains("`lingr.ms`"), "{p:?}");
        let mut fine = good.clone();
        fine.properties.insert("linger.ms".into(), "5".into());
        assert_eq!(fine.check(Codec::Text, &ids()), vec![]);

        let mut bad = good.clone();
        bad.topic = Some("to pic".into());
        bad.bootstrap = " ".into();
        bad.timeout = Duration::from_millis(10);
        let p = bad.check(Codec::Text, &ids());
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn properties_take_numbers_and_name_unquoted_dotted_keys() {
        let p: Properties = toml::from_str("\"linger.ms\" = 5\n\"compression.type\" = \"lz4\"\n\"enable.ssl.certificate.verification\" = false\n").unwrap();
        assert_eq!(p.0["linger.ms"], "5");
        assert_eq!(p.0["compression.type"], "lz4");
        assert_eq!(p.0["enable.ssl.certificate.verification"], "false");
        let e = toml::from_str::<Properties>("linger.ms = 5\n").unwrap_err();
        assert!(e.to_string().contains("quote them: \"linger.ms\""), "{e}");
    }

    #[test]
    fn records_take_key_value_topic_and_headers_from_the_batch() {
        let mut config = KafkaSinkConfig::new("127.0.0.1:9", "fixed");
        config.headers.insert("source".into(), "sluice".into());
        let s = sink(config);
        let mut b = Batch::empty(true);
        b.push(Some(b"k"), b"42", 0);
        b.push(Some(&[0xff]), b"7", 0);
        let parts = [b];
        let batch = SinkBatch {
            id: 1,
            time: 1000,
            partitions: &parts,
            key_codec: Codec::Text,
            value_codec: Codec::Number,
        };
        let outs = records(&s.config, &batch).unwrap();
        assert_eq!(outs.len(), 2);
        assert_eq!(&*outs[0].topic, "fixed");
        assert_eq!(outs[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&*outs[0].value, b"42");
        assert_eq!(outs[1].key.as_deref(), Some("\u{fffd}".as_bytes()));
        let h = outs[0].headers.as_ref().unwrap();
        use rdkafka::message::Headers;
        assert_eq!(h.count(), 1);
        assert_eq!(h.get(0).key, "source");
        assert_eq!(h.get(0).value, Some(&b"sluice"[..]));

        let mut bytes = Batch::empty(false);
        bytes.push(None, &[1, 2], 0);
        let parts = [bytes];
        let batch = SinkBatch {
            value_codec: Codec::Bytes,
            partitions: &parts,
            ..batch
        };
        let outs = records(&s.config, &batch).unwrap();
        assert_eq!(outs[0].key, None);
        assert_eq!(&*outs[0].value, b"0102");
    }

    #[test]
    fn fields_route_key_and_head_json_records_and_a_missing_one_is_named() {
        let mut config = KafkaSinkConfig::new("127.0.0.1:9", "x");
        config.topic = None;
        config.topic_field = Some("to".into());
        config.key_field = Some("user".into());
        config.headers_field = Some("h".into());
        let s = sink(config);
        let mut b = Batch::empty(false);
        b.push(
            None,
            br#"{"to":"a","user":12,"h":{"trace":"t1","n":3,"none":null}}"#,
            0,
        );
        b.push(None, br#"{"to":"b","user":"u","h":{}}"#, 0);
        let parts = [b];
        let batch = SinkBatch {
            id: 1,
            time: 1000,
            partitions: &parts,
            key_codec: Codec::Text,
            value_codec: Codec::Json,
        };
        let outs = records(&s.config, &batch).unwrap();
        assert_eq!(&*outs[0].topic, "a");
        assert_eq!(outs[0].key.as_deref(), Some(&b"12"[..]));
        use rdkafka::message::Headers;
        let h = outs[0].headers.as_ref().unwrap();
        let all: Vec<(String, Option<Vec<u8>>)> = h
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            all,
            vec![
                ("n".into(), Some(b"3".to_vec())),
                ("none".into(), None),
                ("trace".into(), Some(b"t1".to_vec())),
            ]
        );
        assert_eq!(&*outs[1].topic, "b");
        assert_eq!(outs[1].key.as_deref(), Some(&b"u"[..]));
        assert!(outs[1].headers.is_none());

        let mut b = Batch::empty(false);
        b.push(None, br#"{"to":"a","user":1,"h":{}}"#, 0);
        b.push(None, br#"{"user":2,"h":{}}"#, 0);
        let parts = [b];
        let batch = SinkBatch {
            partitions: &parts,
            ..batch
        };
        let e = records(&s.config, &batch).err().unwrap().to_string();
        assert_eq!(
            e,
            r#"partition 0, record 1 ({"user":2,"h":{}}): the value has no field `to`"#
        );
        let mut b = Batch::empty(false);
        b.push(None, br#"{"to":"no way","user":1,"h":{}}"#, 0);
        let parts = [b];
        let batch = SinkBatch {
            partitions: &parts,
            ..batch
        };
        let e = records(&s.config, &batch).err().unwrap().to_string();
        assert!(
            e.contains("field `to` = \"no way\" is not a topic name"),
            "{e}"
        );
    }
}
