//! A real Kafka-protocol broker for tests: noida-db (PyPI, pinned by `scripts/setup-broker`),
//! started on a free port of 127.0.0.1 with a temporary data folder and killed when dropped.
//!
//! What it does and does not do (issue 17's probe): 3-partition topics, idempotent and
//! transactional producers, `read_committed` readers, offsets for times, group offsets and a
//! fenced zombie producer all behave. It does not enforce `transaction.timeout.ms` (a crashed
//! producer's open transaction blocks `read_committed` readers until a producer with the same
//! `transactional.id` starts again), idle consumers make it spin (close them promptly), it
//! deletes records with old timestamps at once (create topics with `retention.ms=-1`) and keeps
//! its data in memory only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::free_port;

/// The venv `scripts/setup-broker` makes.
fn venv() -> PathBuf {
    std::env::var_os("SLUICE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")))
        .expect("HOME or SLUICE_CACHE is set")
        .join("venv-broker")
}

/// The broker's binary inside its Python package (not the console script, which leaves its
/// child running when killed).
fn binary() -> PathBuf {
    let python = venv().join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import noida_db,os;print(os.path.join(os.path.dirname(noida_db.__file__),'noida-db'))",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the Kafka tests' broker is not installed ({} cannot run: {e}); run scripts/setup-broker (scripts/test does)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "the Kafka tests' broker is not installed in {}: {}; run scripts/setup-broker",
        venv().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A running broker.
pub struct Broker {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Broker {
    /// Start one and wait until it accepts connections (at most 30 s).
    pub fn start() -> Self {
        let data = tempfile::tempdir().expect("a temporary folder");
        let port = free_port();
        let child = Command::new(binary())
            .arg("start")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--host", "127.0.0.1", "--only", "kafka", "--kafka-port"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        let mut broker = Self {
            child,
            port,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("the broker exited ({status}) before it listened on {port}");
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One record to produce: partition, key, value, and timestamp (ms; `None`: now).
pub struct Record<'a> {
    /// The partition.
    pub partition: i32,
    /// The key, if any.
    pub key: Option<&'a str>,
    /// The value (bytes: a test may write ones that are not UTF-8).
    pub value: &'a [u8],
    /// The timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, as text.
    pub key: Option<String>,
    /// The value, as text.
    pub value: String,
    /// Headers, as text.
    pub headers: Vec<(String, String)>,
    /// Its timestamp, ms since the epoch (0 when it has none).
    pub timestamp: i64,
}

impl Broker {
    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("an admin client")
    }

    /// Create `name` with `partitions` partitions, keeping records for ever (the broker deletes
    /// records with old timestamps at once otherwise).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let topic =
            NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
        let results = block_on(self.admin().create_topics([&topic], &AdminOptions::new()))
            .expect("create topics");
        for r in results {
            r.unwrap_or_else(|(topic, e)| panic!("create {topic}: {e}"));
        }
    }

    /// Grow `name` to `total` partitions.
    pub fn add_partitions(&self, name: &str, total: usize) {
        let new = NewPartitions::new(name, total);
        let results = block_on(self.admin().create_partitions([&new], &AdminOptions::new()))
            .expect("create partitions");
        for r in results {
            r.unwrap_or_else(|(topic, e)| panic!("add partitions to {topic}: {e}"));
        }
    }

    /// Produce `records` to `topic` with an idempotent producer, and wait until all are
    /// acknowledged.
    pub fn produce<'a>(&self, topic: &str, records: impl IntoIterator<Item = Record<'a>>) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("a producer");
        for r in records {
            let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
                .partition(r.partition)
                .payload(r.value);
            if let Some(k) = r.key {
                record = record.key(k);
            }
            if let Some(t) = r.timestamp {
                record = record.timestamp(t);
            }
            let mut record = Some(record);
            while let Some(rec) = record.take() {
                if let Err((e, rec)) = producer.send(rec) {
                    assert!(
                        matches!(
                            e,
                            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                        ),
                        "produce: {e}"
                    );
                    producer.poll(Duration::from_millis(50));
                    record = Some(rec);
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every record of `topic`'s first `partitions` partitions, read from the start with
    /// `isolation` (`read_committed` or `read_uncommitted`) by an independent consumer, until
    /// each partition's end as it is now has been read.
    pub fn read_all(&self, topic: &str, partitions: i32, isolation: &str) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("check-{isolation}"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .create()
            .expect("a consumer");
        let mut assignment = TopicPartitionList::new();
        let mut ends = std::collections::BTreeMap::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            ends.insert(p, high);
            assignment
                .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .expect("an offset");
        }
        consumer.assign(&assignment).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let done = |consumer: &BaseConsumer| {
            let positions = consumer.position().expect("positions");
            ends.iter().all(|(p, end)| {
                *end == 0
                    || positions
                        .find_partition(topic, *p)
                        .and_then(|e| e.offset().to_raw())
                        .is_some_and(|o| o >= *end)
            })
        };
        while !done(&consumer) {
            assert!(
                Instant::now() < deadline,
                "reading {topic} back took over 30 s (got {} records)",
                out.len()
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    timestamp: m.timestamp().to_millis().unwrap_or(0),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(e)) => panic!("consume {topic}: {e}"),
                None => {}
            }
        }
        out
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}
