//! Sources: where a job's records come from. Each source yields unkeyed text lines (one record
//! per line), sealed into batches by the scheduler:
//!
//! - [`socket`]: Spark's `socketTextStream`, a receiver task that reconnects when the peer goes
//!   away;
//! - [`directory`]: Spark's `textFileStream`, each new file read once, never half-written;
//! - [`http`]: a reliable receiver, `POST /ingest/<source>`, answered once the records are in
//!   the write-ahead log;
//! - [`queue`]: batches pushed by a program (Spark's `queueStream`), for the Rust API and tests;
//! - [`kafka`]: Spark's direct Kafka stream, no receiver: each batch is a set of offset ranges,
//!   recorded in the checkpoint and read again after a crash.
//!
//! Receivers (socket, http) buffer what they take in [`received::Received`], which writes each
//! block to the source's write-ahead log first when the job checkpoints.
//!
//! Flow control is the same for every source ([`rate`]): the scheduler gives each source a
//! records budget per batch ([`Source::set_budget`]: `max_rate` × the batch interval, lowered
//! by backpressure), which its `take` keeps to; receivers push back on their clients while
//! they hold [`received::HIGH_WATER_BATCHES`] budgets.
//!
//! A line that is not UTF-8 is not a record: it is counted (`invalid_lines` in the batch's stats
//! and `sluice_source_invalid_lines_total`) and logged with where it came from, and the job goes
//! on. So is a socket line over `max_line_bytes`, dropped as it arrives. No client can hang or
//! exhaust a receiver: see the limits of [`socket`] and [`http`].

pub mod directory;
pub mod http;
pub mod kafka;
pub mod queue;
pub mod rate;
pub mod received;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use directory::Start;
pub use queue::{QueueReceiver, QueueSender, queue};

use crate::batch::Batch;

/// What a source hands the next batch.
#[derive(Debug)]
pub enum SourceInput {
    /// Records already received, with the number of lines refused as not UTF-8.
    Records {
        /// The records.
        records: Batch,
        /// Lines refused since the last batch.
        invalid_lines: u64,
        /// The write-ahead log range the records came from, when the source logs.
        wal: Option<(u64, u64)>,
    },
    /// Files to read as part of the batch (the batch reads them, in parallel).
    Files(Vec<PathBuf>),
    /// Records fetched from a log that keeps them (Kafka), with the offset ranges they came
    /// from: the ranges are what the checkpoint records, and what a re-run reads again.
    Fetched {
        /// The records.
        records: Batch,
        /// Records skipped because they did not decode (`on_decode_error = "skip"`).
        undecodable: u64,
        /// One range per partition read (an empty one the first time a partition is seen).
        ranges: Vec<kafka::OffsetRange>,
        /// Records that did not decode, for the dead-letter store
        /// (`on_decode_error = "dead_letter"`).
        rejected: Vec<kafka::Rejected>,
    },
}

/// Where a source stands, for the scheduler.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceStatus {
    /// Records waiting for the next batch.
    pub buffered: usize,
    /// More input is ready now than one batch may take (files over `max_files_per_batch`,
    /// queued batches): with `--until-idle` the next batch starts at once.
    pub backlog: bool,
    /// Nothing more will come (`--until-idle`: the connection ended, the files are read, the
    /// queue is closed and empty).
    pub exhausted: bool,
}

/// A running source.
pub trait Source: Send {
    /// Its stream name.
    fn name(&self) -> &str;
    /// Take the input of the next batch: at most `max_records` records when set.
    fn take(&mut self, max_records: Option<usize>) -> SourceInput;
    /// Where it stands.
    fn status(&mut self) -> SourceStatus;
    /// The most records each batch takes from now on (the source's rate × the batch
    /// interval; see [`rate`]); `None`: no limit. A source that cannot split its input takes
    /// whole units (files, logged blocks), at least one, within it.
    fn set_budget(&mut self, records: Option<usize>);
    /// Stop receiving (a graceful stop): what was received stays to be taken.
    fn stop(&mut self);
    /// What the source refused, cut off or dropped since it started, by reason (e.g.
    /// `("connections_refused", 3)`), for metrics. Most sources refuse nothing.
    fn refusals(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Whether the source can go on; an error ends the job (a broker unreachable past its
    /// retries, a deleted topic). Asked before every batch is sealed.
    fn check(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// How far behind each partition's end the source is (Kafka consumer lag); most sources
    /// have no partitions.
    fn lag(&self) -> Vec<kafka::PartitionLag> {
        Vec::new()
    }
    /// The records of these offset ranges again, for a batch being re-run after a crash. Only
    /// sources reading a log that keeps records (Kafka) have any.
    fn refetch(&mut self, ranges: &[kafka::OffsetRange]) -> Result<SourceInput, SourceError> {
        Err(SourceError::NotRefetchable {
            source_name: self.name().to_string(),
            ranges: ranges.len(),
        })
    }
    /// The records of write-ahead log range `from..to` again, for a batch being re-run after a
    /// crash. Only receivers with a log have any.
    fn replay(&mut self, from: u64, to: u64) -> Result<SourceInput, crate::wal::WalError> {
        Err(crate::wal::WalError::Missing {
            dir: PathBuf::from(self.name()),
            from,
            to,
            what: "the source keeps no write-ahead log".into(),
        })
    }
}

/// Where a source's records come from. Every source yields unkeyed text lines, one record per
/// line, with the arrival time as event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceKind {
    /// Spark's `socketTextStream`: connect to `host:port` and read lines; reconnect after
    /// `reconnect_delay` when the peer goes away (with `--until-idle`, the end of the first
    /// connection ends the source).
    Socket {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Wait between reconnection attempts. Default 1 s.
        reconnect_delay: Duration,
        /// The longest line kept, in bytes; longer lines are skipped and counted. Default
        /// (none): the source's, 1 MiB.
        max_line_bytes: Option<u64>,
    },
    /// Spark's `textFileStream`: each new file in `path` is read once, whole, into one batch.
    Directory {
        /// The directory watched.
        path: PathBuf,
        /// Whether files already there when the job starts are read.
        start: Start,
        /// At most this many files per batch (Structured Streaming's `maxFilesPerTrigger`).
        max_files_per_batch: Option<usize>,
    },
    /// A reliable receiver: `POST /ingest/<source>` on `address` with newline-separated records
    /// in the body; answered 200 only once the records are in the write-ahead log.
    Http {
        /// `host:port` to listen on.
        address: String,
        /// The largest request body accepted. Default 16 MiB.
        max_request_bytes: u64,
        /// How long a request's head may take to arrive. Default (none): the source's, 10 s.
        header_timeout: Option<Duration>,
        /// How long a request's body may take once its head is in. Default (none): 30 s.
        body_timeout: Option<Duration>,
        /// Connections served at once, `503` beyond. Default (none): 512.
        max_connections: Option<usize>,
        /// Bytes of all bodies being read at once, `429` beyond. Default (none): 4 ×
        /// `max_request_bytes`.
        max_inflight_bytes: Option<u64>,
    },
    /// Batches pushed by the program through a [`QueueSender`] (Spark's `queueStream`, one
    /// queued batch per micro-batch). The receiving end is a runtime handle, given beside the
    /// job's description (the planner's `Handles`), not in it.
    Queue,
    /// Spark's direct Kafka stream (see [`kafka`]).
    Kafka(kafka::KafkaConfig),
}

/// Why a source could not be started, or cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An http source could not listen on its address.
    #[error(transparent)]
    Listen(#[from] http::ListenError),
    /// A queue source was started without its receiving end.
    #[error(
        "queue source '{source_name}' has no receiver: pass the QueueReceiver of its queue() beside the job (plan::Handles)"
    )]
    NoQueue {
        /// The source.
        source_name: String,
    },
    /// A Kafka source cannot start or go on.
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSourceError),
    /// Offset ranges were recorded for a source that cannot read them again.
    #[error(
        "source '{source_name}' cannot read offset ranges again ({ranges} recorded): the checkpoint was written for another kind of source"
    )]
    NotRefetchable {
        /// The source.
        source_name: String,
        /// How many ranges.
        ranges: usize,
    },
}

/// What a source gets when it is built for a job.
pub struct BuildContext<'a> {
    /// The job's receiver tasks' runtime, early seals, limits.
    pub ctx: &'a SourceContext,
    /// What a receiver had logged and not yet sealed before a restart.
    pub received: received::Received,
    /// The files a directory source read before a restart.
    pub files_read: &'a [String],
    /// Serve http sources on the caller's router instead of binding their address.
    pub mount_http: bool,
    /// The receiving end of a queue source, when this is one.
    pub queue: Option<QueueReceiver>,
    /// Where a Kafka source stood in each partition before a restart.
    pub offsets: &'a [kafka::PartitionOffset],
}

impl SourceKind {
    /// Start source `name` of this kind: the one place sources are built.
    pub fn build(&self, name: &str, b: BuildContext<'_>) -> Result<Built, SourceError> {
        let ctx = b.ctx;
        Ok(match self {
            SourceKind::Socket {
                host,
                port,
                reconnect_delay,
                max_line_bytes,
            } => {
                let mut options = socket::SocketOptions::new(*reconnect_delay);
                if let Some(max) = max_line_bytes {
                    options.max_line_bytes = usize::try_from(*max).unwrap_or(usize::MAX);
                }
                Built::new(socket::SocketSource::start_with(
                    name, host, *port, options, b.received, ctx,
                ))
            }
            SourceKind::Directory {
                path,
                start,
                max_files_per_batch,
            } => {
                let mut source =
                    directory::DirectorySource::new(name, path, *start, *max_files_per_batch);
                source.restore(b.files_read);
                Built::new(source)
            }
            SourceKind::Http {
                address,
                max_request_bytes,
                header_timeout,
                body_timeout,
                max_connections,
                max_inflight_bytes,
            } => {
                let mut limits = http::HttpLimits::new(*max_request_bytes);
                limits.header_timeout = header_timeout.unwrap_or(limits.header_timeout);
                limits.body_timeout = body_timeout.unwrap_or(limits.body_timeout);
                limits.max_connections = max_connections.unwrap_or(limits.max_connections);
                limits.max_inflight_bytes = max_inflight_bytes.unwrap_or(limits.max_inflight_bytes);
                if b.mount_http {
                    if header_timeout.is_some() || max_connections.is_some() {
                        tracing::warn!(job = %ctx.job, source = %name, "header_timeout and max_connections limit connections, which the server this source is mounted on owns: set them there (they are not applied here)");
                    }
                    tracing::info!(job = %ctx.job, source = %name, "serving POST /ingest/{name} on the caller's router (not binding {address})");
                    let source = http::HttpSource::mounted(name, limits, b.received, ctx);
                    let endpoint = source.endpoint();
                    Built {
                        source: Box::new(source),
                        endpoint: Some(endpoint),
                    }
                } else {
                    Built::new(http::HttpSource::start_with(
                        name, address, limits, b.received, ctx,
                    )?)
                }
            }
            SourceKind::Queue => match b.queue {
                Some(q) => Built::new(queue::QueueSource::new(name, q)),
                None => {
                    return Err(SourceError::NoQueue {
                        source_name: name.to_string(),
                    });
                }
            },
            SourceKind::Kafka(config) => {
                Built::new(kafka::KafkaSource::start(name, config, b.offsets, ctx)?)
            }
        })
    }

    /// Whether the source is a receiver that logs what it takes (and so needs a checkpoint).
    pub fn is_logged(&self) -> bool {
        match self {
            SourceKind::Socket { .. } | SourceKind::Http { .. } => true,
            SourceKind::Directory { .. } | SourceKind::Queue | SourceKind::Kafka(_) => false,
        }
    }
}

/// A source started for a job.
pub struct Built {
    /// The source.
    pub source: Box<dyn Source>,
    /// An http source's endpoint, when it is served on the caller's router.
    pub endpoint: Option<http::IngestEndpoint>,
}

impl Built {
    fn new(source: impl Source + 'static) -> Self {
        Self {
            source: Box::new(source),
            endpoint: None,
        }
    }
}

/// What a source needs from the job that runs it.
#[derive(Clone)]
pub struct SourceContext {
    /// The runtime the job's scheduler runs on (the engine's `Core`'s, shared by
    /// every job of the process), for receiver tasks; a source ends its tasks when it stops or
    /// is dropped.
    pub runtime: tokio::runtime::Handle,
    /// Woken when a receiver holds `max_batch_records` records.
    pub early_seal: Arc<tokio::sync::Notify>,
    /// The job's early-seal threshold.
    pub max_batch_records: Option<usize>,
    /// The job's batch interval (rates per second become records per batch).
    pub batch_interval: Duration,
    /// End sources when their input ends instead of waiting for more (`--until-idle`).
    pub until_idle: bool,
    /// For logs.
    pub job: Arc<str>,
}

/// Append the complete lines of `data` to `batch` (without `\n` or `\r\n`), each with
/// `event_time`; lines that are not UTF-8 are skipped and their 0-based indexes returned.
/// The bytes after the last newline, if any, are a last line only when `last` is set.
pub fn push_lines(
    data: &[u8],
    last: bool,
    batch: &mut Batch,
    event_time: i64,
    invalid: &mut Vec<u64>,
) -> usize {
    let mut consumed = 0;
    let mut index = 0u64;
    let mut rest = data;
    loop {
        let (line, advance) = match memchr_newline(rest) {
            Some(i) => (&rest[..i], i + 1),
            None if last && !rest.is_empty() => (rest, rest.len()),
            None => break,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if std::str::from_utf8(line).is_ok() {
            batch.push(None, line, event_time);
        } else {
            invalid.push(index);
        }
        index += 1;
        consumed += advance;
        rest = &rest[advance..];
    }
    consumed
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', data)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_bad_utf8_is_counted() {
        let mut b = Batch::empty(false);
        let mut invalid = Vec::new();
        let used = push_lines(b"a\r\nbb\n\xff\xfe\nc", false, &mut b, 7, &mut invalid);
        assert_eq!(used, 9);
        assert_eq!(b.values.iter().collect::<Vec<_>>(), [&b"a"[..], b"bb"]);
        assert_eq!(invalid, [2]);
        let used = push_lines(b"c", true, &mut b, 7, &mut invalid);
        assert_eq!(used, 1);
        assert_eq!(b.len(), 3);
    }
}
