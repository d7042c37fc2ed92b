//! What a job says, before it is checked: the common form of a TOML manifest and of a job built
//! with the Rust [`StreamingContext`](crate::engine::StreamingContext). The planner turns it into
//! a validated [`Plan`](super::Plan) or a list of problems, each with the manifest line it is on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use crate::batch::codec::Codec;
use crate::sinks::NativeSink;
use crate::sources::QueueReceiver;

/// A whole job: settings, sources, the streams derived from them, and sinks.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job's name: in every log line and metric.
    pub name: String,
    /// How often a batch is sealed. Default 1 s.
    pub batch_interval: Duration,
    /// How many partitions a batch is split into. Default: the number of cores.
    pub partitions: usize,
    /// Seal a batch early when a source has this many records buffered.
    pub max_batch_records: Option<usize>,
    /// What a failed UDF call does to the job.
    pub on_udf_error: ErrorPolicy,
    /// The tenant the job belongs to (`local` for `host run`).
    pub tenant: String,
    /// Where sources, streams and sinks were declared; `None` for jobs built in Rust.
    pub line: Option<usize>,
    /// Inputs.
    pub sources: Vec<SourceSpec>,
    /// Derived streams, in any order: the planner sorts them.
    pub streams: Vec<StreamSpec>,
    /// Outputs.
    pub sinks: Vec<SinkSpec>,
}

impl JobSpec {
    /// A job with the defaults and nothing in it.
    pub fn new(name: impl Into<String>, batch_interval: Duration) -> Self {
        Self {
            name: name.into(),
            batch_interval,
            partitions: default_partitions(),
            max_batch_records: None,
            on_udf_error: ErrorPolicy::Fail,
            tenant: "local".into(),
            line: None,
            sources: Vec::new(),
            streams: Vec::new(),
            sinks: Vec::new(),
        }
    }
}

/// The default partition count: one per core.
pub fn default_partitions() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What a failed UDF call (a trap, a limit, a guest error) does to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// Stop the job with the error and a non-zero exit (Spark's default: the job fails).
    #[default]
    Fail,
    /// Log the error, count the batch in `sluice_batches_failed_total`, skip its outputs and go
    /// on with the next batch.
    SkipBatch,
}

/// One source: a named stream of records from outside.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The stream name other streams refer to.
    pub name: String,
    /// What it reads.
    pub kind: SourceKind,
    /// The manifest line it was declared on.
    pub line: Option<usize>,
}

/// Where a source's records come from. Every source yields unkeyed text lines, one record per
/// line, with the arrival time as event time.
#[derive(Debug, Clone)]
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
    /// Batches pushed by the program through a [`QueueSender`](crate::sources::QueueSender)
    /// (Spark's `queueStream`, one queued batch per micro-batch).
    Queue(QueueReceiver),
}

/// Whether a directory source reads the files already present when the job starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Read them (default).
    #[default]
    Earliest,
    /// Skip them: only files that appear later are read.
    Latest,
}

/// The operators of a derived stream, with Spark's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// One record out per record in (a transform UDF of kind `map`).
    Map,
    /// Any number of records out per record in.
    FlatMap,
    /// Keep the records the UDF keeps.
    Filter,
    /// A transform UDF over each partition as a whole.
    MapPartitions,
    /// A transform UDF over the whole batch at once (Spark's `transform`).
    Transform,
    /// The records of all inputs.
    Union,
    /// Spread the records evenly over `partitions` partitions.
    Repartition,
    /// One record: the number of records in the batch.
    Count,
    /// Per distinct value, the number of records with it (keys are ignored).
    CountByValue,
    /// One record: the values of the batch reduced by a reducer UDF (keys are ignored).
    Reduce,
    /// Per key, its values reduced by a reducer UDF.
    ReduceByKey,
    /// Per key, a JSON array of its values.
    GroupByKey,
    /// Inner join of two keyed streams: per key, `[left, right]` for every pair.
    Join,
    /// Every left record, `[left, right or null]`.
    LeftOuterJoin,
    /// Every right record, `[left or null, right]`.
    RightOuterJoin,
    /// Every record of both sides, `[left or null, right or null]`.
    FullOuterJoin,
    /// Per key present on either side, `[[left values], [right values]]`.
    Cogroup,
    /// Join a keyed stream with a static data set loaded when the job starts.
    JoinStatic,
}

impl Op {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Map => "map",
            Op::FlatMap => "flat_map",
            Op::Filter => "filter",
            Op::MapPartitions => "map_partitions",
            Op::Transform => "transform",
            Op::Union => "union",
            Op::Repartition => "repartition",
            Op::Count => "count",
            Op::CountByValue => "count_by_value",
            Op::Reduce => "reduce",
            Op::ReduceByKey => "reduce_by_key",
            Op::GroupByKey => "group_by_key",
            Op::Join => "join",
            Op::LeftOuterJoin => "left_outer_join",
            Op::RightOuterJoin => "right_outer_join",
            Op::FullOuterJoin => "full_outer_join",
            Op::Cogroup => "cogroup",
            Op::JoinStatic => "join_static",
        }
    }
}

/// How a static data set for `join_static` is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StaticFormat {
    /// `KEY<TAB>VALUE` per line (default).
    #[default]
    Kv,
    /// `{"key": …, "value": …}` per line; strings are taken as text, anything else as JSON.
    Jsonl,
}

/// One derived stream: an operator over upstream streams.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: String,
    /// The operator.
    pub op: Op,
    /// Upstream streams or sources: one, or two for joins and cogroup, two or more for union.
    pub inputs: Vec<String>,
    /// `component#function` for operators that call a UDF.
    pub udf: Option<String>,
    /// `repartition`: the new partition count.
    pub partitions: Option<usize>,
    /// `join_static`: the data file, relative to the manifest.
    pub path: Option<PathBuf>,
    /// `join_static`: the file's layout.
    pub format: Option<StaticFormat>,
    /// `join_static`: `inner` (default) or `left_outer`.
    pub how: Option<String>,
    /// The codec of the output keys; defaults by operator.
    pub key_codec: Option<Codec>,
    /// The codec of the output values; defaults by operator.
    pub value_codec: Option<Codec>,
    /// `join_static`: the codec of the static values. Default text.
    pub static_codec: Option<Codec>,
    /// The manifest line it was declared on.
    pub line: Option<usize>,
}

impl StreamSpec {
    /// A stream with only name, operator and inputs set.
    pub fn new(name: impl Into<String>, op: Op, inputs: Vec<String>) -> Self {
        Self {
            name: name.into(),
            op,
            inputs,
            udf: None,
            partitions: None,
            path: None,
            format: None,
            how: None,
            key_codec: None,
            value_codec: None,
            static_codec: None,
            line: None,
        }
    }
}

/// One output of a job.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The stream written.
    pub input: String,
    /// Where it goes.
    pub kind: SinkKind,
    /// The manifest line it was declared on.
    pub line: Option<usize>,
}

/// The kinds of sink.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// Spark's `print(num)`: the batch time header and the first `num` records to stdout.
    Print {
        /// Records shown per batch. Default 10.
        num: usize,
    },
    /// Spark's `saveAsTextFiles`: one directory per batch, `prefix-<batch time ms>.suffix`,
    /// with one `part-NNNNN` file per partition and `_SUCCESS`, renamed into place when whole.
    TextFiles {
        /// Path prefix of the batch directories.
        prefix: PathBuf,
        /// Suffix after the batch time, without the dot; none by default.
        suffix: Option<String>,
        /// `text` (Spark's `(key,value)` lines) or `jsonl`.
        format: OutputFormat,
    },
    /// A foreach-batch UDF (the `sink` world), called once per partition.
    Udf {
        /// `component#function`.
        udf: String,
    },
    /// A Rust closure called once per batch (Spark's `foreachRDD`), for embedding programs.
    Native(Arc<NativeSink>),
}

/// The line format of `text_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// `(key,value)` or `value` per line, as `print` shows them.
    #[default]
    Text,
    /// `{"key": …, "value": …}` per line, keys and values decoded by their codecs.
    Jsonl,
}
