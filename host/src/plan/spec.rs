//! What a job says, before it is checked: the common form of a TOML manifest and of a job built
//! with the Rust API (the engine's `StreamingContext`). The planner turns it into
//! a validated [`Plan`](super::Plan) or a list of problems, each with the manifest line it is on.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::batch::codec::Codec;
pub use crate::operators::spec::{Builtin, OnError, OutputMode, StaticFormat, StreamSpec};
pub use crate::sources::SourceKind;

/// A whole job: settings, sources, the streams derived from them, and sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Spark's `spark.streaming.backpressure.enabled`: each source's rate follows what the job
    /// processes (a PID estimator fed by each finished batch, see
    /// [`sources::rate`](crate::sources::rate)), within its `max_rate`. Default false.
    #[serde(default)]
    pub backpressure: bool,
    /// Batches a newly bound UDF version is on trial for: if it fails one of them, the job
    /// goes back to the version it replaced and runs the batch again with it. 0: no trial.
    pub probation_batches: u32,
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
            backpressure: false,
            probation_batches: DEFAULT_PROBATION_BATCHES,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// Stop the job with the error and a non-zero exit (Spark's default: the job fails).
    #[default]
    Fail,
    /// Log the error, count the batch in `sluice_batches_failed_total`, skip its outputs and go
    /// on with the next batch.
    SkipBatch,
}

/// The default of [`JobSpec::probation_batches`].
pub const DEFAULT_PROBATION_BATCHES: u32 = 3;

/// One source: a named stream of records from outside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// The stream name other streams refer to.
    pub name: String,
    /// What it reads.
    pub kind: SourceKind,
    /// The manifest line it was declared on.
    pub line: Option<usize>,
    /// The most records per second a batch takes from it (`max_rate × interval` per batch);
    /// the rest waits (see [`sources::rate`](crate::sources::rate)). Default: no limit.
    #[serde(default)]
    pub max_rate: Option<u64>,
    /// With [`JobSpec::backpressure`], the rate before the first estimate. Default: none
    /// (only `max_rate` bounds the first batches).
    #[serde(default)]
    pub initial_rate: Option<u64>,
}

pub use crate::sources::Start;

/// One output of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkSpec {
    /// The stream written.
    pub input: String,
    /// Where it goes.
    pub kind: SinkKind,
    /// The manifest line it was declared on.
    pub line: Option<usize>,
}

/// The kinds of sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Every record to a Kafka topic (`sinks::kafka`): idempotent, or one transaction per
    /// batch with `exactly_once`.
    Kafka(Box<KafkaSinkConfig>),
    /// A Rust closure called once per batch (Spark's `foreachRDD`), for embedding programs:
    /// named here, given beside the job's description ([`Handles`](super::Handles)).
    Native {
        /// The closure's name in [`Handles::sinks`](super::Handles).
        name: String,
    },
}

pub use crate::sinks::OutputFormat;
pub use crate::sinks::kafka::KafkaSinkConfig;

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's description is plain data: every example manifest's spec, and a job built with
    /// the Rust API (queue sources and native sinks by name), go to JSON and back unchanged.
    #[test]
    fn a_job_spec_is_plain_data() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        let manifests = std::fs::read_dir(&root)
            .expect("examples")
            .flat_map(|e| {
                std::fs::read_dir(e.expect("an example").path())
                    .into_iter()
                    .flatten()
            })
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"));
        for manifest in manifests {
            let spec = crate::plan::manifest::load(&manifest).expect("an example parses");
            let json = serde_json::to_string(&spec).expect("to JSON");
            let back: JobSpec = serde_json::from_str(&json).expect("from JSON");
            assert_eq!(back, spec, "{}", manifest.display());
            seen += 1;
        }
        assert!(seen >= 5, "example manifests found: {seen}");
        let mut spec = JobSpec::new("rust", Duration::from_millis(500));
        spec.sources.push(SourceSpec {
            name: "q".into(),
            kind: SourceKind::Queue,
            line: None,
            max_rate: Some(100),
            initial_rate: None,
        });
        spec.sinks.push(SinkSpec {
            input: "q".into(),
            kind: SinkKind::Native {
                name: "seen".into(),
            },
            line: None,
        });
        let json = serde_json::to_string(&spec).expect("to JSON");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).expect("back"), spec);
    }
}
