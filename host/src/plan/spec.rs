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
    /// Where the job's state (RocksDB) lives; needed by stateful streams. A manifest defaults it
    /// to `state/` beside the manifest.
    pub state_dir: Option<PathBuf>,
    /// The most state the job may hold, in bytes; past it the job fails with a clear error
    /// instead of growing until the machine runs out of memory or disk. Default 1 GiB.
    pub max_state_bytes: u64,
    /// Where the job checkpoints, so a restart picks it up where it stopped; without one, a
    /// restart starts afresh (state in `state_dir` aside).
    pub checkpoint: Option<CheckpointSpec>,
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
            state_dir: None,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            checkpoint: None,
            line: None,
            sources: Vec::new(),
            streams: Vec::new(),
            sinks: Vec::new(),
        }
    }
}

/// How a job checkpoints (Spark's `ssc.checkpoint(dir)` and `checkpointInterval`).
#[derive(Debug, Clone)]
pub struct CheckpointSpec {
    /// The checkpoint folder: metadata, data checkpoints, write-ahead logs, and the state
    /// unless `state_dir` says otherwise.
    pub dir: PathBuf,
    /// How often the state is copied into a data checkpoint: a multiple of the batch interval.
    /// Default: 10 batch intervals.
    pub interval: Option<Duration>,
    /// How many data checkpoints are kept. Default 3.
    pub keep: usize,
    /// When receivers force their write-ahead logs to disk. Default: every block.
    pub wal_sync: crate::wal::WalSync,
    /// Keep what is before damage in a write-ahead log and go on without the rest, instead of
    /// refusing to start (`--accept-wal-loss`).
    pub accept_wal_loss: bool,
}

impl CheckpointSpec {
    /// A checkpoint in `dir` with the defaults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            interval: None,
            keep: DEFAULT_KEEP_CHECKPOINTS,
            wal_sync: crate::wal::WalSync::EveryBlock,
            accept_wal_loss: false,
        }
    }
}

/// The default of an http source's `max_request_bytes`: 16 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 << 20;

/// Data checkpoints kept by default.
pub const DEFAULT_KEEP_CHECKPOINTS: usize = 3;

/// Batch intervals between data checkpoints by default.
pub const DEFAULT_CHECKPOINT_BATCHES: u64 = 10;

/// The default of [`JobSpec::max_state_bytes`]: 1 GiB.
pub const DEFAULT_MAX_STATE_BYTES: u64 = 1 << 30;

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
    /// Batches pushed by the program through a [`QueueSender`](crate::sources::QueueSender)
    /// (Spark's `queueStream`, one queued batch per micro-batch).
    Queue(QueueReceiver),
}

pub use crate::sources::Start;

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
    /// The records of the last `window` of batches, every `slide`.
    Window,
    /// One record per slide: how many records the window holds.
    CountByWindow,
    /// One record per slide: the window's values reduced.
    ReduceByWindow,
    /// Per key, the window's values reduced; with `inverse = true`, updated incrementally.
    ReduceByKeyAndWindow,
    /// Per distinct value, how many records of the window have it.
    CountByValueAndWindow,
    /// Per key, a JSON array of the window's values.
    GroupByKeyAndWindow,
    /// Spark's updateStateByKey: per key, new values and old state in, new state out; the
    /// stream is the whole state after every batch.
    UpdateStateByKey,
    /// Spark's mapWithState: per key with new values (or timing out), state in, records out.
    MapWithState,
    /// The whole state of a `map_with_state` stream after every batch (Spark's `stateSnapshots`).
    StateSnapshots,
    /// Structured Streaming's `groupBy(window(eventTime, …), key).agg(…)` with a watermark.
    EventTimeWindow,
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
            Op::Window => "window",
            Op::CountByWindow => "count_by_window",
            Op::ReduceByWindow => "reduce_by_window",
            Op::ReduceByKeyAndWindow => "reduce_by_key_and_window",
            Op::CountByValueAndWindow => "count_by_value_and_window",
            Op::GroupByKeyAndWindow => "group_by_key_and_window",
            Op::UpdateStateByKey => "update_state_by_key",
            Op::MapWithState => "map_with_state",
            Op::StateSnapshots => "state_snapshots",
            Op::EventTimeWindow => "event_time_window",
        }
    }

    /// Whether the operator is one of the batch-time window family.
    pub fn is_window(self) -> bool {
        matches!(
            self,
            Op::Window
                | Op::CountByWindow
                | Op::ReduceByWindow
                | Op::ReduceByKeyAndWindow
                | Op::CountByValueAndWindow
                | Op::GroupByKeyAndWindow
        )
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

/// Reducers that run natively in the host, so the common aggregations need no guest call.
/// Values are read as decimal numbers (the `number` codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// How many values (whatever they are).
    Count,
    /// The sum of 64-bit integers (wrapping, like Spark's `Long`).
    SumI64,
    /// The sum of 64-bit floats.
    SumF64,
    /// `[count, sum]` of 64-bit integers, as JSON.
    CountAndSum,
}

impl Builtin {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::Count => "count",
            Builtin::SumI64 => "sum_i64",
            Builtin::SumF64 => "sum_f64",
            Builtin::CountAndSum => "count_and_sum",
        }
    }
}

/// When an event-time window's results are written (Structured Streaming's output modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// Each window once, when the watermark passes its end; then it is forgotten (default).
    #[default]
    Append,
    /// Every window that changed in the batch, every batch.
    Update,
    /// Every window, every batch; nothing is forgotten and nothing is late.
    Complete,
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
    /// Reducing operators: a reducer that runs in the host instead of a UDF.
    pub builtin: Option<Builtin>,
    /// Windows: the window length (a multiple of the batch interval, or of the input's slide).
    pub window: Option<Duration>,
    /// Windows: how often a window ends. Default: the window length (tumbling) for event time,
    /// the batch interval for batch-time windows.
    pub slide: Option<Duration>,
    /// `reduce_by_key_and_window`: update the window incrementally with the reducer's inverse.
    pub inverse: Option<bool>,
    /// `reduce_by_key_and_window` with `inverse`: a filter UDF over `(key, value)`; the keys it
    /// drops are left out of the output (Spark's `filterFunc`).
    pub filter: Option<String>,
    /// `map_with_state`: a key idle this long gets one last call marked as timing out, then
    /// is removed (Spark's `StateSpec.timeout`).
    pub timeout: Option<Duration>,
    /// `update_state_by_key` / `map_with_state`: a file of initial states (`format` applies).
    pub initial_state: Option<PathBuf>,
    /// `event_time_window`: how far behind the largest event time seen the watermark trails.
    pub watermark: Option<Duration>,
    /// `event_time_window`: when windows are written.
    pub output_mode: Option<OutputMode>,
    /// `event_time_window`: records whose event time is further than this ahead of the
    /// largest event time seen (or, before any, of the batch time) are dropped and counted,
    /// and never move the watermark. Default one day.
    pub max_event_time_ahead: Option<Duration>,
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
            builtin: None,
            window: None,
            slide: None,
            inverse: None,
            filter: None,
            timeout: None,
            initial_state: None,
            watermark: None,
            output_mode: None,
            max_event_time_ahead: None,
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

pub use crate::sinks::OutputFormat;
