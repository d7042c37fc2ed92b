//! The TOML job manifest: strict (`deny_unknown_fields`), humane durations, every item
//! remembering its line so the planner can point at it.
//!
//! ```toml
//! [job]
//! name = "wordcount"
//! batch_interval = "500ms"
//!
//! [[sources]]
//! name = "lines"
//! kind = "directory"
//! path = "in"
//!
//! [[streams]]
//! name = "words"
//! op = "flat_map"
//! input = "lines"
//! udf = "text#split_words"
//!
//! [[sinks]]
//! kind = "print"
//! input = "words"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::limits::{FileError, MAX_MANIFEST_BYTES, read_regular_file};
use super::spec::{
    Builtin, CheckpointSpec, Codec, DEFAULT_MAX_REQUEST_BYTES, ErrorPolicy, JobSpec, OnError,
    OutputFormat, OutputMode, SinkKind, SinkSpec, SourceKind, SourceSpec, Start, StaticFormat,
    StreamSpec, default_partitions,
};
use crate::config::ByteSize;
use crate::sinks::kafka::{self as kafka_sink, KafkaSinkConfig, Properties};
use crate::sources::kafka;
use crate::wal::WalSync;

/// A manifest that could not be read as TOML of the expected shape.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read the job manifest {path}: {error}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// Why (not a `source`: the message already says it).
        error: std::io::Error,
    },
    /// A directory, device, FIFO or socket: a manifest is read only from a regular file.
    #[error("the job manifest {} is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The manifest.
        path: PathBuf,
        /// What it is, e.g. "a FIFO (named pipe)".
        kind: &'static str,
    },
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error(
        "the job manifest {} holds {size} bytes, more than the {max} bytes (1 MiB) a manifest may hold; keep data in files the job reads, not in the manifest",
        path.display()
    )]
    TooLarge {
        /// The manifest.
        path: PathBuf,
        /// Its size, or how much was read before stopping.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// Bytes that are not UTF-8.
    #[error(
        "{}:{line}:{column}: byte {offset} (0x{byte:02x}) is not valid UTF-8; save the manifest as UTF-8",
        path.display()
    )]
    NotUtf8 {
        /// The manifest.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in characters) of the first invalid byte.
        column: usize,
        /// 0-based byte offset of the first invalid byte in the file.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// Not TOML, or not the shape of a manifest (an unknown field, a wrong type, a bad duration).
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The manifest.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What toml says, with the offending text.
        message: String,
    },
    /// An item of the right shape whose values do not fit together.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// 1-based line of the item.
        line: usize,
        /// What is wrong and what to write instead.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    job: Spanned<JobToml>,
    #[serde(default)]
    sources: Vec<Spanned<SourceToml>>,
    #[serde(default)]
    streams: Vec<Spanned<StreamToml>>,
    #[serde(default)]
    sinks: Vec<Spanned<SinkToml>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobToml {
    name: String,
    #[serde(with = "humantime_serde", default = "default_interval")]
    batch_interval: Duration,
    partitions: Option<usize>,
    max_batch_records: Option<usize>,
    #[serde(default)]
    backpressure: bool,
    #[serde(default)]
    on_udf_error: ErrorPolicy,
    probation_batches: Option<u32>,
    state_dir: Option<PathBuf>,
    max_state_bytes: Option<ByteSize>,
    checkpoint: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    checkpoint_interval: Option<Duration>,
    keep_checkpoints: Option<usize>,
    wal_fsync: Option<WalFsyncToml>,
}

/// `wal_fsync = "block"` or a duration such as `"200ms"`.
#[derive(Debug)]
struct WalFsyncToml(WalSync);

impl<'de> Deserialize<'de> for WalFsyncToml {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "block" {
            return Ok(Self(WalSync::EveryBlock));
        }
        humantime::parse_duration(&text)
            .map(|d| Self(WalSync::Interval(d)))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "wal_fsync = {text:?}: {e}; write \"block\" (fsync every received block) or an interval such as \"200ms\""
                ))
            })
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum SourceKindToml {
    Socket,
    Directory,
    Http,
    Kafka,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceToml {
    name: String,
    kind: SourceKindToml,
    host: Option<String>,
    port: Option<u16>,
    #[serde(default, with = "humantime_serde")]
    reconnect_delay: Option<Duration>,
    path: Option<PathBuf>,
    start: Option<Start>,
    max_files_per_batch: Option<usize>,
    address: Option<String>,
    max_request_bytes: Option<ByteSize>,
    max_line_bytes: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    body_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_inflight_bytes: Option<ByteSize>,
    max_rate: Option<u64>,
    initial_rate: Option<u64>,
    bootstrap: Option<String>,
    topics: Option<Vec<String>>,
    pattern: Option<String>,
    starting_offsets: Option<kafka::StartingOffsets>,
    starting_timestamp: Option<i64>,
    max_rate_per_partition: Option<u64>,
    format: Option<kafka::KafkaFormat>,
    on_decode_error: Option<kafka::DecodePolicy>,
    group_id: Option<String>,
    isolation: Option<kafka::Isolation>,
    #[serde(default, with = "humantime_serde")]
    broker_timeout: Option<Duration>,
    properties: Option<BTreeMap<String, String>>,
}

impl SourceToml {
    /// The fields only a kafka source has, and whether each is set.
    fn kafka_fields(&self) -> [(&'static str, bool); 12] {
        [
            ("bootstrap", self.bootstrap.is_some()),
            ("topics", self.topics.is_some()),
            ("pattern", self.pattern.is_some()),
            ("starting_offsets", self.starting_offsets.is_some()),
            ("starting_timestamp", self.starting_timestamp.is_some()),
            (
                "max_rate_per_partition",
                self.max_rate_per_partition.is_some(),
            ),
            ("format", self.format.is_some()),
            ("on_decode_error", self.on_decode_error.is_some()),
            ("group_id", self.group_id.is_some()),
            ("isolation", self.isolation.is_some()),
            ("broker_timeout", self.broker_timeout.is_some()),
            ("properties", self.properties.is_some()),
        ]
    }
}

/// `input = "a"` or `inputs = ["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamToml {
    name: String,
    #[serde(deserialize_with = "operator_name")]
    op: String,
    #[serde(alias = "inputs")]
    input: Inputs,
    udf: Option<String>,
    partitions: Option<usize>,
    path: Option<PathBuf>,
    format: Option<StaticFormat>,
    how: Option<String>,
    key_codec: Option<Codec>,
    value_codec: Option<Codec>,
    static_codec: Option<Codec>,
    builtin: Option<Builtin>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    slide: Option<Duration>,
    inverse: Option<bool>,
    filter: Option<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    initial_state: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    watermark: Option<Duration>,
    output_mode: Option<OutputMode>,
    #[serde(default, with = "humantime_serde")]
    max_event_time_ahead: Option<Duration>,
    on_error: Option<OnError>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum SinkKindToml {
    Print,
    TextFiles,
    Udf,
    Kafka,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkToml {
    kind: SinkKindToml,
    input: String,
    num: Option<usize>,
    prefix: Option<PathBuf>,
    suffix: Option<String>,
    format: Option<OutputFormat>,
    udf: Option<String>,
    bootstrap: Option<String>,
    topic: Option<String>,
    topic_field: Option<String>,
    key_field: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    headers_field: Option<String>,
    exactly_once: Option<bool>,
    commit_topic: Option<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    properties: Option<Properties>,
}

/// Read and parse a manifest file. Relative paths in it (directories, static data, output
/// prefixes) are taken relative to the manifest's own directory.
pub fn load(path: &Path) -> Result<JobSpec, ManifestError> {
    load_with(path, None)
}

/// [`load`], with the checkpoint folder given on the command line (`--checkpoint`) in place of
/// the manifest's; the state then defaults to `state/` inside it too.
///
/// The manifest is read only if it is a regular file of at most [`MAX_MANIFEST_BYTES`]; bytes
/// that are not UTF-8 are refused with their line, column and offset.
pub fn load_with(path: &Path, checkpoint: Option<&Path>) -> Result<JobSpec, ManifestError> {
    let bytes = read_regular_file(path, MAX_MANIFEST_BYTES).map_err(|e| match e {
        FileError::NotRegular { path, kind } => ManifestError::NotRegular { path, kind },
        FileError::TooLarge { path, size, max } => ManifestError::TooLarge { path, size, max },
        FileError::Io { path, error } => ManifestError::Read { path, error },
    })?;
    let text = utf8(&bytes, path)?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse_with(text, path, base, checkpoint)
}

/// The manifest as text, or where its first byte that is not UTF-8 is.
fn utf8<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, ManifestError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let before = &bytes[..offset];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // The prefix is valid UTF-8, so its characters can be counted.
        let column = std::str::from_utf8(&before[line_start..])
            .map_or(offset - line_start, |l| l.chars().count())
            + 1;
        ManifestError::NotUtf8 {
            path: path.to_path_buf(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            column,
            offset,
            byte: bytes.get(offset).copied().unwrap_or_default(),
        }
    })
}

/// Line numbers of byte offsets, in O(log lines) each.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Self(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The 1-based line of `offset`.
    fn of(&self, offset: usize) -> usize {
        self.0.partition_point(|&newline| newline < offset) + 1
    }
}

/// Parse manifest text; `path` names it in errors, `base` resolves relative paths.
pub fn parse(text: &str, path: &Path, base: &Path) -> Result<JobSpec, ManifestError> {
    parse_with(text, path, base, None)
}

fn parse_with(
    text: &str,
    path: &Path,
    base: &Path,
    checkpoint_override: Option<&Path>,
) -> Result<JobSpec, ManifestError> {
    let lines = Lines::new(text);
    let line_of = |offset: usize| lines.of(offset);
    let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
        path: path.to_path_buf(),
        line: e.span().map_or(1, |s| line_of(s.start)),
        message: super::clip(e.message().trim()).into_owned(),
    })?;
    let invalid = |span: std::ops::Range<usize>, message: String| ManifestError::Invalid {
        path: path.to_path_buf(),
        line: line_of(span.start),
        message,
    };
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    let job_span = manifest.job.span();
    let job = manifest.job.into_inner();
    let mut spec = JobSpec::new(job.name, job.batch_interval);
    spec.line = Some(line_of(job_span.start));
    spec.partitions = job.partitions.unwrap_or_else(default_partitions);
    spec.max_batch_records = job.max_batch_records;
    spec.backpressure = job.backpressure;
    spec.on_udf_error = job.on_udf_error;
    if let Some(n) = job.probation_batches {
        spec.probation_batches = n;
    }
    let checkpoint = checkpoint_override
        .map(Path::to_path_buf)
        .or(job.checkpoint.map(resolve));
    spec.state_dir = Some(match (job.state_dir, &checkpoint) {
        (Some(dir), _) => resolve(dir),
        (None, Some(checkpoint)) => checkpoint.join("state"),
        (None, None) => resolve("state".into()),
    });
    match checkpoint {
        Some(dir) => {
            let mut c = CheckpointSpec::new(dir);
            c.interval = job.checkpoint_interval;
            c.keep = job.keep_checkpoints.unwrap_or(c.keep);
            c.wal_sync = job.wal_fsync.map_or(c.wal_sync, |w| w.0);
            spec.checkpoint = Some(c);
        }
        None => {
            let needs = [
                ("checkpoint_interval", job.checkpoint_interval.is_some()),
                ("keep_checkpoints", job.keep_checkpoints.is_some()),
                ("wal_fsync", job.wal_fsync.is_some()),
            ];
            if let Some((field, _)) = needs.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    job_span,
                    format!(
                        "[job]: `{field}` needs `checkpoint`, the folder the job checkpoints to"
                    ),
                ));
            }
        }
    }
    if let Some(max) = job.max_state_bytes {
        spec.max_state_bytes = max.0;
    }

    for source in manifest.sources {
        let span = source.span();
        let s = source.into_inner();
        let kafka_fields = s.kafka_fields();
        let misplaced = |fields: &[(&str, bool)], kind: &str| {
            let kafka: &[(&str, bool)] = if kind == "kafka" { &[] } else { &kafka_fields };
            fields
                .iter()
                .chain(kafka)
                .find(|(_, present)| *present)
                .map(|(field, _)| {
                    invalid(
                        span.clone(),
                        format!(
                            "source '{}': `{field}` does not apply to a {kind} source",
                            s.name
                        ),
                    )
                })
        };
        let kind = match s.kind {
            SourceKindToml::Socket => {
                if let Some(e) = misplaced(
                    &[
                        ("path", s.path.is_some()),
                        ("start", s.start.is_some()),
                        ("max_files_per_batch", s.max_files_per_batch.is_some()),
                        ("address", s.address.is_some()),
                        ("max_request_bytes", s.max_request_bytes.is_some()),
                        ("header_timeout", s.header_timeout.is_some()),
                        ("body_timeout", s.body_timeout.is_some()),
                        ("max_connections", s.max_connections.is_some()),
                        ("max_inflight_bytes", s.max_inflight_bytes.is_some()),
                    ],
                    "socket",
                ) {
                    return Err(e);
                }
                let (Some(host), Some(port)) = (s.host.clone(), s.port) else {
                    return Err(invalid(
                        span,
                        format!(
                            "source '{}': a socket source needs `host` and `port`, e.g. host = \"127.0.0.1\", port = 9999",
                            s.name
                        ),
                    ));
                };
                SourceKind::Socket {
                    host,
                    port,
                    reconnect_delay: s.reconnect_delay.unwrap_or(Duration::from_secs(1)),
                    max_line_bytes: s.max_line_bytes.map(|b| b.0),
                }
            }
            SourceKindToml::Directory => {
                if let Some(e) = misplaced(
                    &[
                        ("host", s.host.is_some()),
                        ("port", s.port.is_some()),
                        ("reconnect_delay", s.reconnect_delay.is_some()),
                        ("address", s.address.is_some()),
                        ("max_request_bytes", s.max_request_bytes.is_some()),
                    ],
                    "directory",
                ) {
                    return Err(e);
                }
                let Some(dir) = s.path.clone() else {
                    return Err(invalid(
                        span,
                        format!(
                            "source '{}': a directory source needs `path`, the directory to watch",
                            s.name
                        ),
                    ));
                };
                SourceKind::Directory {
                    path: resolve(dir),
                    start: s.start.unwrap_or_default(),
                    max_files_per_batch: s.max_files_per_batch,
                }
            }
            SourceKindToml::Http => {
                if let Some(e) = misplaced(
                    &[
                        ("host", s.host.is_some()),
                        ("port", s.port.is_some()),
                        ("reconnect_delay", s.reconnect_delay.is_some()),
                        ("path", s.path.is_some()),
                        ("start", s.start.is_some()),
                        ("max_files_per_batch", s.max_files_per_batch.is_some()),
                        ("max_line_bytes", s.max_line_bytes.is_some()),
                    ],
                    "http",
                ) {
                    return Err(e);
                }
                let Some(address) = s.address.clone() else {
                    return Err(invalid(
                        span,
                        format!(
                            "source '{}': an http source needs `address`, where it listens, e.g. address = \"127.0.0.1:8081\"",
                            s.name
                        ),
                    ));
                };
                SourceKind::Http {
                    address,
                    max_request_bytes: s
                        .max_request_bytes
                        .map_or(DEFAULT_MAX_REQUEST_BYTES, |b| b.0),
                    header_timeout: s.header_timeout,
                    body_timeout: s.body_timeout,
                    max_connections: s.max_connections,
                    max_inflight_bytes: s.max_inflight_bytes.map(|b| b.0),
                }
            }
            SourceKindToml::Kafka => {
                if let Some(e) = misplaced(
                    &[
                        ("host", s.host.is_some()),
                        ("port", s.port.is_some()),
                        ("reconnect_delay", s.reconnect_delay.is_some()),
                        ("path", s.path.is_some()),
                        ("start", s.start.is_some()),
                        ("max_files_per_batch", s.max_files_per_batch.is_some()),
                        ("address", s.address.is_some()),
                        ("max_request_bytes", s.max_request_bytes.is_some()),
                        ("max_line_bytes", s.max_line_bytes.is_some()),
                        ("header_timeout", s.header_timeout.is_some()),
                        ("body_timeout", s.body_timeout.is_some()),
                        ("max_connections", s.max_connections.is_some()),
                        ("max_inflight_bytes", s.max_inflight_bytes.is_some()),
                    ],
                    "kafka",
                ) {
                    return Err(e);
                }
                let Some(bootstrap) = s.bootstrap.clone() else {
                    return Err(invalid(
                        span,
                        format!(
                            "source '{}': a kafka source needs `bootstrap`, its brokers, e.g. bootstrap = \"127.0.0.1:9092\"",
                            s.name
                        ),
                    ));
                };
                SourceKind::Kafka(kafka::KafkaConfig {
                    bootstrap,
                    topics: s.topics.clone().unwrap_or_default(),
                    pattern: s.pattern.clone(),
                    starting_offsets: s.starting_offsets.clone().unwrap_or_default(),
                    starting_timestamp: s.starting_timestamp,
                    max_rate_per_partition: s.max_rate_per_partition,
                    format: s.format.unwrap_or_default(),
                    on_decode_error: s.on_decode_error.unwrap_or_default(),
                    group_id: s.group_id.clone(),
                    isolation: s.isolation.unwrap_or_default(),
                    broker_timeout: s.broker_timeout.unwrap_or(Duration::from_secs(30)),
                    properties: s.properties.clone().unwrap_or_default(),
                })
            }
        };
        spec.sources.push(SourceSpec {
            name: s.name,
            kind,
            line: Some(line_of(span.start)),
            max_rate: s.max_rate,
            initial_rate: s.initial_rate,
        });
    }

    for stream in manifest.streams {
        let span = stream.span();
        let s = stream.into_inner();
        let inputs = match s.input {
            Inputs::One(one) => vec![one],
            Inputs::Many(many) => many,
        };
        spec.streams.push(StreamSpec {
            name: s.name,
            op: s.op,
            inputs,
            udf: s.udf,
            partitions: s.partitions,
            path: s.path.map(resolve),
            format: s.format,
            how: s.how,
            key_codec: s.key_codec,
            value_codec: s.value_codec,
            static_codec: s.static_codec,
            builtin: s.builtin,
            window: s.window,
            slide: s.slide,
            inverse: s.inverse,
            filter: s.filter,
            timeout: s.timeout,
            initial_state: s.initial_state.map(resolve),
            watermark: s.watermark,
            output_mode: s.output_mode,
            max_event_time_ahead: s.max_event_time_ahead,
            on_error: s.on_error,
            line: Some(line_of(span.start)),
        });
    }

    for sink in manifest.sinks {
        let span = sink.span();
        let s = sink.into_inner();
        let kind = match s.kind {
            SinkKindToml::Print => {
                only(&s, &["num"], "print").map_err(|m| invalid(span.clone(), m))?;
                SinkKind::Print {
                    num: s.num.unwrap_or(10),
                }
            }
            SinkKindToml::TextFiles => {
                only(&s, &["prefix", "suffix", "format"], "text_files")
                    .map_err(|m| invalid(span.clone(), m))?;
                let Some(prefix) = s.prefix.clone() else {
                    return Err(invalid(
                        span,
                        "a text_files sink needs `prefix`, e.g. prefix = \"out/counts\" (batches land in out/counts-<batch time ms>)".into(),
                    ));
                };
                SinkKind::TextFiles {
                    prefix: resolve(prefix),
                    suffix: s.suffix.clone(),
                    format: s.format.unwrap_or_default(),
                }
            }
            SinkKindToml::Udf => {
                only(&s, &["udf"], "udf").map_err(|m| invalid(span.clone(), m))?;
                let Some(udf) = s.udf.clone() else {
                    return Err(invalid(
                        span,
                        "a udf sink needs `udf = \"component#function\"`, a function of the sink world".into(),
                    ));
                };
                SinkKind::Udf { udf }
            }
            SinkKindToml::Kafka => {
                only(&s, KAFKA_FIELDS, "kafka").map_err(|m| invalid(span.clone(), m))?;
                let Some(bootstrap) = s.bootstrap.clone() else {
                    return Err(invalid(
                        span,
                        "a kafka sink needs `bootstrap`, the brokers to start from, e.g. bootstrap = \"127.0.0.1:9092\"".into(),
                    ));
                };
                SinkKind::Kafka(Box::new(KafkaSinkConfig {
                    bootstrap,
                    topic: s.topic.clone(),
                    topic_field: s.topic_field.clone(),
                    key_field: s.key_field.clone(),
                    headers: s.headers.clone().unwrap_or_default(),
                    headers_field: s.headers_field.clone(),
                    exactly_once: s.exactly_once.unwrap_or(false),
                    commit_topic: s.commit_topic.clone(),
                    timeout: s.timeout.unwrap_or(kafka_sink::DEFAULT_TIMEOUT),
                    properties: s.properties.clone().unwrap_or_default().0,
                }))
            }
        };
        spec.sinks.push(SinkSpec {
            input: s.input,
            kind,
            line: Some(line_of(span.start)),
        });
    }
    Ok(spec)
}

/// The fields of a kafka sink.
const KAFKA_FIELDS: &[&str] = &[
    "bootstrap",
    "topic",
    "topic_field",
    "key_field",
    "headers",
    "headers_field",
    "exactly_once",
    "commit_topic",
    "timeout",
    "properties",
];

/// Refuse a sink field that its kind does not use.
fn only(s: &SinkToml, allowed: &[&str], kind: &str) -> Result<(), String> {
    let present = [
        ("num", s.num.is_some()),
        ("prefix", s.prefix.is_some()),
        ("suffix", s.suffix.is_some()),
        ("format", s.format.is_some()),
        ("udf", s.udf.is_some()),
        ("bootstrap", s.bootstrap.is_some()),
        ("topic", s.topic.is_some()),
        ("topic_field", s.topic_field.is_some()),
        ("key_field", s.key_field.is_some()),
        ("headers", s.headers.is_some()),
        ("headers_field", s.headers_field.is_some()),
        ("exactly_once", s.exactly_once.is_some()),
        ("commit_topic", s.commit_topic.is_some()),
        ("timeout", s.timeout.is_some()),
        ("properties", s.properties.is_some()),
    ];
    match present
        .iter()
        .find(|(field, is)| *is && !allowed.contains(field))
    {
        Some((field, _)) => Err(format!(
            "`{field}` does not apply to a {kind} sink (it takes {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// An operator's name, one of [`operators::KINDS`](crate::operators::KINDS); anything else
/// is refused where it stands, with the names there are.
fn operator_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if crate::operators::kind(&name).is_some() {
        return Ok(name);
    }
    let known: Vec<&str> = crate::operators::KINDS.iter().map(|k| k.name()).collect();
    Err(serde::de::Error::custom(format!(
        "unknown operator `{}`, expected one of {}",
        super::clip(&name),
        known.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<JobSpec, ManifestError> {
        parse(text, Path::new("job.toml"), Path::new("/base"))
    }

    #[test]
    fn a_whole_manifest_parses_with_lines_and_paths() {
        let spec = parse_str(
            r#"
[job]
name = "wc"
batch_interval = "250ms"
partitions = 3

[[sources]]
name = "lines"
kind = "directory"
path = "in"
start = "latest"

[[streams]]
name = "words"
op = "flat_map"
input = "lines"
udf = "text#split_words"

[[streams]]
name = "both"
op = "union"
inputs = ["words", "lines"]

[[sinks]]
kind = "text_files"
input = "both"
prefix = "out/w"
format = "jsonl"
"#,
        )
        .unwrap();
        assert_eq!(spec.batch_interval, Duration::from_millis(250));
        assert_eq!(spec.partitions, 3);
        assert_eq!(
            spec.sources[0].line,
            Some(7),
            "the line of the [[sources]] header"
        );
        assert!(matches!(
            &spec.sources[0].kind,
            SourceKind::Directory { path, start: Start::Latest, .. } if path == Path::new("/base/in")
        ));
        assert_eq!(spec.streams[0].line, Some(13));
        assert_eq!(spec.streams[1].inputs, ["words", "lines"]);
        assert!(matches!(
            &spec.sinks[0].kind,
            SinkKind::TextFiles { prefix, format: OutputFormat::Jsonl, .. } if prefix == Path::new("/base/out/w")
        ));
    }

    #[test]
    fn unknown_fields_and_bad_values_name_their_line() {
        let err = parse_str("[job]\nname = \"x\"\n\n[[streams]]\nname = \"a\"\nop = \"map\"\ninput = \"b\"\nudff = \"t#f\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("job.toml:8:"), "{err}");
        assert!(err.contains("unknown field `udff`"), "{err}");

        let err = parse_str("[job]\nname = \"x\"\nbatch_interval = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("job.toml:3:"), "{err}");

        let err = parse_str(
            "[job]\nname = \"x\"\n[[streams]]\nname = \"a\"\nop = \"mapp\"\ninput = \"b\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mapp") && err.contains("flat_map"), "{err}");

        let err = parse_str("[job\nname = 1").unwrap_err().to_string();
        assert!(err.starts_with("job.toml:1:"), "{err}");
    }

    #[test]
    fn manifests_are_regular_utf8_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(&path, b"[job]\nname = \"x\"\n# caf\xc3\xa9 \xff\n").unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::NotUtf8 {
                    line: 3,
                    column: 8,
                    offset: 25,
                    byte: 0xff,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("job.toml:3:8: byte 25 (0xff)"),
            "{err}"
        );

        std::fs::write(&path, vec![b'#'; MAX_MANIFEST_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            load(&path),
            Err(ManifestError::TooLarge {
                max: MAX_MANIFEST_BYTES,
                ..
            })
        ));
        assert!(matches!(
            load(dir.path()),
            Err(ManifestError::NotRegular {
                kind: "a directory",
                ..
            })
        ));
        assert!(matches!(
            load(Path::new("/dev/null")),
            Err(ManifestError::NotRegular { .. })
        ));
    }

    #[test]
    fn lines_are_found_by_offset() {
        let lines = Lines::new("a\nbc\n\nd");
        assert_eq!(
            [0, 1, 2, 4, 5, 6, 7].map(|o| lines.of(o)),
            [1, 1, 2, 2, 3, 4, 4]
        );
    }

    #[test]
    fn fields_of_another_kind_are_refused() {
        let err = parse_str(
            "[job]\nname = \"x\"\n[[sources]]\nname = \"s\"\nkind = \"socket\"\nhost = \"127.0.0.1\"\nport = 1\npath = \"d\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`path` does not apply to a socket source"),
            "{err}"
        );
        let err = parse_str(
            "[job]\nname = \"x\"\n[[sinks]]\nkind = \"print\"\ninput = \"a\"\nprefix = \"p\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`prefix` does not apply to a print sink"),
            "{err}"
        );
    }
}
