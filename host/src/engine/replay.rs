//! `host replay`: run one recorded batch again, as a dry run, to see what the plan makes of its
//! input now (with the UDF versions the plan was resolved with: after a deploy, the new ones).
//!
//! The batch's input is found again as recovery finds it ([`super::recovery`]): the sealed
//! batches the checkpoint's metadata still lists (those no data checkpoint covers yet, and the
//! batches skipped with `--skip-batch`), each with its input — the files a directory source
//! read, the write-ahead log range of a receiver. The batch then runs through an
//! [`Executor`] in dry-run mode: every stream computes, stateful operators read the state as
//! it is committed, but no sink runs, nothing is committed and no checkpoint is written.
//!
//! A receiver's write-ahead log is copied and the copy opened, so the job's own log is never
//! touched. The job should not be running: its state store is locked while it runs (a
//! stateful job's replay is then refused), and the server refuses a running job outright.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::executor::{Executor, SealedBatch, StartError};
use crate::checkpoint::{
    BatchRecord, CheckpointDir, CheckpointError, Metadata, RecordedInput, read_metadata,
};
use crate::metrics::Registry;
use crate::plan::{NodeKind, Plan, SourceKind};
use crate::sinks::SinkBatch;
use crate::sources::SourceInput;
use crate::sources::received::Received;
use crate::wal::{Wal, WalError};

/// The format of [`Replayed`] as the API answers it.
pub const FORMAT: u32 = 1;

/// One stream's output in a replayed batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamOutput {
    /// The stream's name.
    pub stream: String,
    /// Its operator (`source` for a source).
    pub op: String,
    /// Whether a sink writes it.
    pub sink: bool,
    /// Whether the stream has a batch at this time (a window between slides has none).
    pub active: bool,
    /// How many records it produced.
    pub records: u64,
    /// The first `limit` records, as `print` shows them: `(key,value)` or `value`.
    pub lines: Vec<String>,
}

/// What a replayed batch produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replayed {
    /// [`FORMAT`].
    pub format: u32,
    /// The job.
    pub job: String,
    /// The batch replayed.
    pub batch: u64,
    /// Its time, ms since the Unix epoch.
    pub time: i64,
    /// Records read from its input.
    pub records_in: u64,
    /// Each UDF the plan calls, as `spec` → component hash, as run here.
    pub udfs: Vec<(String, String)>,
    /// Every stream of the plan, in plan order (inputs first).
    pub streams: Vec<StreamOutput>,
    /// How long the dry run took, ms.
    pub ms: f64,
}

/// Why a batch could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The job keeps no checkpoint, so no batch is recorded.
    #[error("job '{job}' has no checkpoint, so its batches' input is not recorded")]
    NoCheckpoint {
        /// The job.
        job: String,
    },
    /// The checkpoint does not (or no longer) list the batch.
    #[error("batch {batch} of job '{job}' is not in its checkpoint {dir} any more: {held}")]
    NotRecorded {
        /// The job.
        job: String,
        /// The batch asked for.
        batch: u64,
        /// The checkpoint folder.
        dir: PathBuf,
        /// Which batches are there, in words.
        held: String,
    },
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A source's recorded input cannot be read again.
    #[error("batch {batch}, source '{source_name}': {why}")]
    Input {
        /// The batch.
        batch: u64,
        /// The source.
        source_name: String,
        /// Why.
        why: String,
    },
    /// A write-ahead log could not be read.
    #[error("batch {batch}, source '{source_name}': {error}")]
    Wal {
        /// The batch.
        batch: u64,
        /// The source.
        source_name: String,
        /// What went wrong.
        error: WalError,
    },
    /// The dry run could not open the job's state (locked by the running job, damaged).
    #[error("cannot open the job's state for a dry run: {0}")]
    Start(#[from] StartError),
    /// The batch failed again (a UDF error, a state limit).
    #[error("batch {batch} fails when run again: {error}")]
    Failed {
        /// The batch.
        batch: u64,
        /// The batch's error.
        error: String,
    },
}

impl ReplayError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            Self::NoCheckpoint { .. } => "only jobs with a checkpoint can replay a batch".into(),
            Self::NotRecorded { .. } => {
                "a batch leaves the checkpoint once a data checkpoint covers it (every `checkpoint_interval`); replay one of the batches listed".into()
            }
            Self::Start(_) => {
                "a running job holds its state: stop it first (`host stop JOB --graceful`)".into()
            }
            Self::Failed { .. } => {
                "this is the error the batch has with the current UDF versions; deploy a fixed version and replay again".into()
            }
            Self::Checkpoint(_) | Self::Input { .. } | Self::Wal { .. } => {
                "the checkpoint or its write-ahead logs are damaged or were moved".into()
            }
        }
    }
}

/// Copy the regular files of the write-ahead log in `from` into `to` (a symlink or a folder
/// such as `lost/` is left out; the log opened on the copy then says what is missing).
fn copy_log(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Every metadata file of the checkpoint in `dir` but `newest`, newest first, that reads and
/// fits `plan` (others are passed over: the newest good one is what counts).
fn older_metadata(dir: &Path, newest: Option<&Path>, plan: &Plan) -> Vec<Metadata> {
    let Ok(entries) = std::fs::read_dir(dir.join("metadata")) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("metadata-")?
                .strip_suffix(".ckpt")?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .filter(|(_, p)| Some(p.as_path()) != newest)
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files
        .into_iter()
        .filter_map(|(_, path)| read_metadata(&path).ok())
        .filter(|meta| meta.validate(plan).is_ok())
        .collect()
}

/// The batches `metas` can replay, in words.
fn held(metas: &[Metadata]) -> String {
    if metas.is_empty() {
        return "it holds no batch yet".into();
    }
    let mut ids: Vec<u64> = metas
        .iter()
        .flat_map(|meta| {
            meta.batches
                .iter()
                .map(|b| b.id)
                .chain(meta.skipped.iter().map(|s| s.id))
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match (ids.first(), ids.last()) {
        (Some(first), Some(last)) if ids.len() as u64 == last - first + 1 => {
            format!("it holds batches {first}..={last}")
        }
        (Some(_), Some(_)) => format!(
            "it holds batches {}",
            ids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "it holds no batch (every batch so far is covered by a data checkpoint, and the older metadata files no longer list them)".into(),
    }
}

/// Run batch `batch` of `plan` again as a dry run on `pool` and return every stream's output
/// (at most `limit` lines each). `plan` must not be running.
pub fn replay(
    plan: Arc<Plan>,
    batch: u64,
    pool: Arc<rayon::ThreadPool>,
    limit: usize,
) -> Result<Replayed, ReplayError> {
    let started = Instant::now();
    let job = plan.name.to_string();
    let Some(c) = &plan.checkpoint else {
        return Err(ReplayError::NoCheckpoint { job });
    };
    let not_recorded = |metas: &[Metadata]| ReplayError::NotRecorded {
        job: job.clone(),
        batch,
        dir: c.dir.clone(),
        held: held(metas),
    };
    if !c.dir.join("metadata").is_dir() {
        return Err(not_recorded(&[]));
    }
    let (dir, newest) = CheckpointDir::open(&c.dir)?;
    let Some(newest) = newest else {
        return Err(not_recorded(&[]));
    };
    // The newest metadata lists the sealed batches no data checkpoint covers yet; the older
    // files kept beside it (the last ten) may still list batches covered since, such as the
    // last ones before a graceful stop.
    let mut metas = vec![newest];
    metas.extend(older_metadata(&c.dir, dir.loaded(), &plan));
    let found = metas.iter().find_map(|meta| {
        meta.batches
            .iter()
            .find(|b| b.id == batch)
            .cloned()
            .or_else(|| {
                meta.skipped
                    .iter()
                    .find(|s| s.id == batch)
                    .map(|s| BatchRecord {
                        id: s.id,
                        time: s.time,
                        inputs: s.inputs.clone(),
                        udfs: Vec::new(),
                    })
            })
            .map(|record| (record, meta))
    });
    let Some((record, meta)) = found else {
        return Err(not_recorded(&metas));
    };
    let mut inputs = Vec::with_capacity(plan.sources.len());
    for (source, input) in plan.sources.iter().zip(&record.inputs) {
        let input_error = |why: String| ReplayError::Input {
            batch,
            source_name: source.name.clone(),
            why,
        };
        inputs.push(match input {
            RecordedInput::Files { files } => {
                if let Some(gone) = files.iter().find(|f| !std::path::Path::new(f).is_file()) {
                    return Err(input_error(format!("its file {gone} is gone")));
                }
                SourceInput::Files(files.iter().map(PathBuf::from).collect())
            }
            RecordedInput::Wal { from, to } => {
                if !matches!(source.kind, SourceKind::Socket { .. } | SourceKind::Http { .. }) {
                    return Err(input_error("a log range recorded for a source without a log".into()));
                }
                let wal_error = |error| ReplayError::Wal {
                    batch,
                    source_name: source.name.clone(),
                    error,
                };
                // A copy: opening a log may cut an unacknowledged tail, which must never
                // happen to a log a running process appends to.
                let copy = tempfile::tempdir()
                    .and_then(|t| copy_log(&dir.wal_dir(&source.name), t.path()).map(|()| t))
                    .map_err(|e| {
                        input_error(format!(
                            "cannot copy its write-ahead log {} to read it: {e}",
                            dir.wal_dir(&source.name).display()
                        ))
                    })?;
                let wal = Wal::open(copy.path(), c.wal_sync, false).map_err(wal_error)?;
                let sealed = meta.sources.get(&source.name).and_then(|p| p.wal_sealed);
                let (received, _) =
                    Received::logged(Arc::new(std::sync::Mutex::new(wal)), sealed, false)
                        .map_err(wal_error)?;
                received.replay(*from, *to).map_err(wal_error)?
            }
            RecordedInput::Offsets { ranges } => {
                let SourceKind::Kafka(config) = &source.kind else {
                    return Err(input_error(
                        "Kafka offsets recorded for a source that is not Kafka".into(),
                    ));
                };
                crate::sources::kafka::fetch_ranges(&source.name, config, ranges)
                    .map_err(|e| input_error(e.to_string()))?
            }
            RecordedInput::Unlogged { records } => {
                return Err(input_error(format!(
                    "its {records} records came from a source without a write-ahead log (a queue) and cannot be read again"
                )));
            }
        });
    }
    let mut executor =
        Executor::new(plan.clone(), pool, Arc::new(Registry::default()), None)?.dry_run();
    // The current versions, whatever the batch ran with: what a replay is for.
    let report = executor.run(
        SealedBatch {
            id: record.id,
            time: record.time,
            sealed_at: Instant::now(),
            inputs,
            udfs: plan.udfs.snapshot(),
        },
        None,
    );
    if let Some(error) = report.error {
        return Err(ReplayError::Failed { batch, error });
    }
    let outputs = executor.take_outputs();
    drop(executor);
    let streams = plan
        .nodes
        .iter()
        .zip(outputs)
        .enumerate()
        .map(|(i, (node, parts))| {
            let parts = parts.as_deref();
            let records = parts.map_or(0, |p| p.iter().map(|b| b.len() as u64).sum());
            let lines = parts.map_or_else(Vec::new, |partitions| {
                SinkBatch {
                    id: record.id,
                    time: record.time,
                    partitions,
                    key_codec: node.key_codec,
                    value_codec: node.value_codec,
                }
                .lines()
                .take(limit)
                .collect()
            });
            StreamOutput {
                stream: node.name.to_string(),
                op: match node.kind {
                    NodeKind::Source(_) => "source".into(),
                    NodeKind::Stream(_) => node.op_name.to_string(),
                },
                sink: plan.sinks.iter().any(|(n, _)| *n == i),
                active: parts.is_some(),
                records,
                lines,
            }
        })
        .collect();
    Ok(Replayed {
        format: FORMAT,
        job,
        batch: record.id,
        time: record.time,
        records_in: report.records_in,
        udfs: plan
            .udfs
            .snapshot()
            .iter()
            .map(|(_, b)| (b.function.spec().to_string(), b.hash().to_string()))
            .collect(),
        streams,
        ms: super::executor::ms(started.elapsed()),
    })
}
