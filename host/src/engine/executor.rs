//! Runs one sealed batch through the plan: reads its input, computes every stream in plan
//! order (partitions in parallel on the worker pool), hands the results to the sinks, and
//! reports what each operator did and how long it all took.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::canary::{Canary, SinkStream};
use super::stats::{BatchReport, OperatorStats, UsedUdf};
use super::trial::{Trials, version_name};
use crate::batch::Batch;
use crate::checkpoint::CheckpointLog;
use crate::metrics::{Registry, SeriesKey};
pub use crate::operators::BatchScope;
use crate::operators::{Input, Memory, OnError, OpError, OpenCx, RunCx};
use crate::plan::{NodeKind, Plan, PlannedSink};
use crate::sinks::kafka::KafkaSink;
use crate::sinks::{self, SinkBatch, SinkError, text_files};
use crate::sources::{SourceInput, push_lines};
use crate::state::dead_letters::{DeadLetter, DeadLetterError, DeadLetterStore};
use crate::state::{Committed, SIZE, StateError, StateStore, StateWrites};
use crate::udf::{Bindings, UdfFunction};

/// A batch the scheduler sealed: its id, time and each source's input.
#[derive(Debug)]
pub struct SealedBatch {
    /// 1, 2, 3 … in seal order.
    pub id: u64,
    /// The batch time, ms since the Unix epoch: a multiple of the batch interval.
    pub time: i64,
    /// When it was sealed.
    pub sealed_at: Instant,
    /// Per source of the plan, in order.
    pub inputs: Vec<SourceInput>,
    /// The UDF versions it runs with, fixed when it was sealed (and recorded with it).
    pub udfs: Bindings,
}

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// An operator failed.
    #[error("stream '{stream}' ({op}): {error}")]
    Operator {
        /// The stream.
        stream: String,
        /// Its operator.
        op: &'static str,
        /// What happened.
        error: OpError,
    },
    /// A sink failed.
    #[error("sink {index} (of stream '{stream}'): {error}")]
    Sink {
        /// 1-based, in manifest order.
        index: usize,
        /// The stream it writes.
        stream: String,
        /// What happened.
        error: SinkError,
    },
    /// State could not be written, or would grow past the job's limit.
    #[error(transparent)]
    State(#[from] StateError),
    /// Dead letters could not be written.
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
}

/// Why a finished batch could not be recorded in the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointWriteError {
    /// The state could not be read or copied into a data checkpoint.
    #[error(transparent)]
    State(#[from] StateError),
    /// The metadata could not be written.
    #[error(transparent)]
    Metadata(#[from] crate::checkpoint::CheckpointError),
}

/// Why an executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The worker pool could not be built.
    #[error("cannot start the worker pool: {0}")]
    Pool(String),
    /// The state store could not be opened or seeded.
    #[error(transparent)]
    State(#[from] StateError),
    /// The checkpoint could not be opened, or the plan cannot carry on from it.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The dead-letter store could not be opened.
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
}

/// Runs batches of one plan, in order, and owns what its streams remember.
pub struct Executor {
    plan: Arc<Plan>,
    pool: Arc<rayon::ThreadPool>,
    registry: Arc<Registry>,
    store: Option<StateStore>,
    memory: Vec<Memory>,
    /// Bytes of state per stream, as last committed.
    sizes: Vec<u64>,
    /// The job's checkpoint, when it has one.
    log: Option<Arc<CheckpointLog>>,
    /// The last batch whose state is committed: re-sent batches up to it are done already.
    committed: Option<u64>,
    /// The bindings of the last batch, to log a new version once and put it on trial.
    bound: Option<Bindings>,
    /// New versions on trial, and those rolled back.
    trial: Trials,
    /// Per node: whether a later stream reads its snapshot (`state_snapshots`).
    snapshot_wanted: Vec<bool>,
    /// A dry run (`host replay`, see [`Executor::dry_run`]): each stream's output of the last
    /// batch, kept instead of running sinks and committing state.
    dry_run: Option<Vec<Option<Vec<Batch>>>>,
    /// Where dead letters go, when a stream makes them.
    dead_letters: Option<Arc<DeadLetterStore>>,
    /// The batch's records its sources could not decode, as dead letters (Kafka's
    /// `on_decode_error = "dead_letter"`), written with the batch's other letters.
    source_letters: Vec<DeadLetter>,
    /// This batch's UDFs: `component#function`, registry version, component hash.
    versions: Vec<(String, Option<u64>, String)>,
    /// The Kafka sinks' producers, by sink index: made at a sink's first batch and kept for
    /// every batch after it (one `transactional.id` incarnation per run).
    kafka: std::collections::BTreeMap<usize, KafkaSink>,
}

impl Executor {
    /// An executor running partitions on `pool` (the process's shared worker pool, see
    /// [`Core`](super::core::Core)); opens the job's state, if it has any, and loads initial
    /// states the first time.
    pub fn new(
        plan: Arc<Plan>,
        pool: Arc<rayon::ThreadPool>,
        registry: Arc<Registry>,
        log: Option<Arc<CheckpointLog>>,
    ) -> Result<Self, StartError> {
        let stateful: Vec<&str> = plan.stateful_nodes().map(|(_, n)| &*n.name).collect();
        let store = match &plan.state_dir {
            Some(dir) if !stateful.is_empty() => {
                Some(StateStore::open(dir, &plan.tenant, &plan.name, &stateful)?)
            }
            _ => None,
        };
        let mut memory = Vec::with_capacity(plan.nodes.len());
        let mut sizes = vec![0; plan.nodes.len()];
        for (i, node) in plan.nodes.iter().enumerate() {
            let Some(op) = node.operator() else {
                memory.push(Memory::None);
                continue;
            };
            let cx = OpenCx {
                store: store.as_ref(),
                stream: &node.name,
                job: &plan.name,
                checkpointed: plan.checkpoint.is_some(),
            };
            let m = op.open(&cx)?;
            sizes[i] = match (&m, &store) {
                (Memory::Buffer(b), _) => b.size(),
                (Memory::Table(_), Some(store)) => {
                    store.number(&node.name, SIZE)?.unwrap_or(0).max(0) as u64
                }
                (Memory::Table(_) | Memory::None, _) => 0,
            };
            memory.push(m);
        }
        let mut committed = None;
        if let Some(store) = &store {
            let total: u64 = sizes.iter().sum();
            committed = store.committed()?.map(|c| c.batch);
            match store.committed()? {
                Some(c) => {
                    tracing::info!(job = %plan.name, "state in {}: {total} bytes, last committed batch {} (time {} ms)", store.dir().display(), c.batch, c.time)
                }
                None => tracing::info!(job = %plan.name, "state in {}: new", store.dir().display()),
            }
        }
        let dead_letters = match &plan.dead_letter_dir {
            Some(dir) => Some(DeadLetterStore::open(dir)?),
            None => None,
        };
        Ok(Self {
            dead_letters,
            source_letters: Vec::new(),
            versions: Vec::new(),
            kafka: std::collections::BTreeMap::new(),
            pool,
            registry,
            store,
            memory,
            sizes,
            log,
            committed,
            bound: None,
            trial: Trials::default(),
            snapshot_wanted: (0..plan.nodes.len())
                .map(|i| {
                    plan.nodes.iter().any(|n| {
                        n.inputs.first() == Some(&i)
                            && n.operator().is_some_and(|op| op.reads_snapshot())
                    })
                })
                .collect(),
            dry_run: None,
            plan,
        })
    }

    /// Make this a dry run (`host replay`): a batch runs every stream, reading state as it is,
    /// but no sink runs and nothing is committed; [`Executor::take_outputs`] has the streams'
    /// outputs.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = Some(Vec::new());
        self
    }

    /// A dry run's outputs of the last batch, per plan node (`None`: no batch at this time).
    pub fn take_outputs(&mut self) -> Vec<Option<Vec<Batch>>> {
        self.dry_run
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The last batch whose state is committed, when the job keeps state.
    pub fn committed(&self) -> Option<u64> {
        self.committed
    }

    /// Whether the job keeps state in a store.
    pub fn has_state(&self) -> bool {
        self.store.is_some()
    }

    /// Flush the state store, so the next start reads no log, and take a data checkpoint of
    /// the last finished batch if the newest one is older (a graceful stop).
    pub fn close(&self) {
        if let Some(store) = &self.store
            && let Err(e) = store.flush()
        {
            tracing::warn!(job = %self.plan.name, "{e}");
        }
        if let Some(log) = &self.log {
            let meta = log.metadata();
            if let Some(finished) = meta.finished {
                let current = meta.data_checkpoint.is_some_and(|c| c >= finished);
                match if current {
                    Ok(())
                } else {
                    self.data_checkpoint(log, finished)
                } {
                    Ok(()) => {
                        tracing::info!(job = %self.plan.name, "checkpoint written at batch {finished}: a restart goes on from there")
                    }
                    Err(e) => tracing::error!(job = %self.plan.name, "{e}"),
                }
            }
        }
    }

    /// Copy the state after batch `id` into a data checkpoint and record it.
    fn data_checkpoint(&self, log: &CheckpointLog, id: u64) -> Result<(), CheckpointWriteError> {
        if let Some(store) = &self.store {
            let started = Instant::now();
            store.checkpoint(&log.data_path(id))?;
            tracing::debug!(job = %self.plan.name, batch = id, ms = ms(started.elapsed()), "data checkpoint written");
        }
        Ok(log.covered(id)?)
    }

    /// After a batch: record it finished in the checkpoint, and take a data checkpoint when
    /// one is due.
    fn checkpointed(&mut self, id: u64) -> Result<(), CheckpointWriteError> {
        let Some(log) = self.log.clone() else {
            return Ok(());
        };
        let mut watermarks = std::collections::BTreeMap::new();
        for (node, memory) in self.plan.nodes.iter().zip(&self.memory) {
            if let Some(op) = node.operator()
                && let Some(w) = op.watermark(memory)?
            {
                watermarks.insert(node.name.to_string(), w);
            }
        }
        log.finished(id, watermarks)?;
        if log.due(id) {
            self.data_checkpoint(&log, id)?;
        }
        Ok(())
    }

    /// Run one batch to the end: every needed stream, then every sink; then commit its state.
    /// With a `canary`, first run the batch with the canary's version too, and compare.
    pub fn run(&mut self, batch: SealedBatch, canary: Option<&Canary>) -> BatchReport {
        let started = Instant::now();
        if self.dry_run.is_none() && self.committed.is_some_and(|c| batch.id <= c) {
            // Re-sent after a restart, but its state (and so its sinks) were done before.
            tracing::info!(job = %self.plan.name, batch = batch.id, "batch {} was committed before the restart: not run again", batch.id);
            let mut report = BatchReport {
                id: batch.id,
                time: batch.time,
                ..BatchReport::default()
            };
            if let Err(e) = self.checkpointed(batch.id) {
                report.error = Some(format!("cannot write the checkpoint: {e}"));
                report.fatal = true;
            }
            return report;
        }
        let plan = self.plan.clone();
        // The UDFs as bound when the batch was sealed (one set, so it never mixes versions),
        // but never a version this job has rolled back.
        let bindings = self.trial.keep_out_refused(batch.udfs);
        self.note_rebinds(&bindings, batch.id, batch.time);
        self.versions = versions_of(&bindings);
        let mut report = BatchReport {
            id: batch.id,
            time: batch.time,
            scheduling_delay: started - batch.sealed_at,
            udfs: used_versions(&bindings),
            ..BatchReport::default()
        };
        let mut sources: Vec<Option<Vec<Batch>>> = Vec::with_capacity(batch.inputs.len());
        self.source_letters.clear();
        for (i, mut input) in batch.inputs.into_iter().enumerate() {
            if let SourceInput::Fetched { rejected, .. } = &mut input {
                for r in std::mem::take(rejected) {
                    let letter = self.source_letter(i, batch.id, batch.time, r);
                    self.source_letters.push(letter);
                }
            }
            let (parts, invalid) = self.read_input(i, input, batch.time);
            let records: usize = parts.iter().map(Batch::len).sum();
            report.records_in += records as u64;
            report.invalid_lines += invalid;
            self.count(i, records as u64, invalid);
            sources.push(Some(parts));
        }
        tracing::debug!(job = %plan.name, batch = batch.id, read_ms = ms(started.elapsed()), "input read");
        let canary = canary.filter(|c| c.wants_more());
        let on_trial = self.trial.any();
        // What the batch starts from, for a canary's shadow run and for a run again with the
        // old version when a new one fails on trial.
        let retained =
            (on_trial || canary.is_some()).then(|| (sources.clone(), self.memory.clone()));
        let canary_outputs = match (canary, &retained) {
            (Some(c), Some((input, memory))) => {
                self.shadow(c, &bindings, &batch_ids(&report), input, memory)
            }
            _ => None,
        };
        let mut result = self.compute(&bindings, &mut sources, &mut report);
        if let Err(e) = &result
            && let Some((input, memory)) = retained
            && let Some((rollback, old)) = self.trial.failed(e, &bindings)
        {
            let bindings = self.trial.keep_out_refused(bindings.clone());
            if let Err(e) =
                plan.udfs
                    .rebind_component(&rollback.component, old, rollback.to_version)
            {
                tracing::warn!(job = %plan.name, "{e}");
            }
            tracing::warn!(
                tenant = %plan.tenant,
                job = %plan.name,
                batch = batch.id,
                udf = %rollback.component,
                version = rollback.from_version.map_or_else(|| "-".to_string(), |v| v.to_string()),
                "{} failed in batch {}, within its first batches: rolled back to {}, and the batch runs again with it ({})",
                version_name(&rollback.component, rollback.from_version),
                batch.id,
                version_name(&rollback.component, rollback.to_version),
                rollback.error
            );
            self.memory = memory;
            sources = input;
            report.operators.clear();
            report.late_records = 0;
            report.udfs = used_versions(&bindings);
            report.dead_letters = 0;
            self.versions = versions_of(&bindings);
            report.rollback = Some(rollback);
            result = self.compute(&bindings, &mut sources, &mut report);
        }
        if let (Some(c), Ok(live)) = (canary, &result) {
            match canary_outputs {
                Some(Ok(shadow)) => c.compare(batch.id, &self.sink_streams(live, &shadow)),
                Some(Err(e)) => c.failed(batch.id, e),
                None => {}
            }
        }
        if result.is_ok() {
            self.trial.passed(&bindings, &plan);
        }
        if let Err(e) = &result {
            report.fatal = matches!(**e, BatchError::State(_) | BatchError::DeadLetters(_));
            report.error = Some(e.to_string());
            // The failing stream's own policy, else the job's.
            let policy = match &**e {
                BatchError::Operator { stream, .. } => plan
                    .nodes
                    .iter()
                    .find(|n| *n.name == **stream)
                    .map(|n| plan.on_error(n)),
                _ => None,
            };
            let policy = policy.unwrap_or(match plan.on_udf_error {
                crate::plan::ErrorPolicy::Fail => OnError::Fail,
                crate::plan::ErrorPolicy::SkipBatch => OnError::SkipBatch,
            });
            report.skipped = !report.fatal && policy == OnError::SkipBatch;
        }
        let done = result.is_ok() || report.skipped;
        if !done
            && let Some(log) = &self.log
            && let Err(e) = log.unpin_udfs(batch.id)
        {
            tracing::warn!(job = %plan.name, batch = batch.id, "{e}");
        }
        if done && let Err(e) = self.checkpointed(batch.id) {
            report.error = Some(format!("cannot write the checkpoint: {e}"));
            report.fatal = true;
            report.skipped = false;
        }
        report.state_bytes = self.sizes.iter().sum();
        report.processing_time = started.elapsed();
        report.total_delay = batch.sealed_at.elapsed();
        report
    }

    /// Run the batch with `canary`'s version over copies of its input and memory; the store is
    /// only read and nothing is written. The outputs of every stream, or why it failed.
    fn shadow(
        &mut self,
        canary: &Canary,
        live: &Bindings,
        ids: &(u64, i64),
        input: &[Option<Vec<Batch>>],
        memory: &[Memory],
    ) -> Option<Result<Vec<Option<Vec<Batch>>>, String>> {
        let bindings = match canary.bindings(live) {
            Ok(b) => b,
            Err(e) => return Some(Err(e.to_string())),
        };
        let mut input = input.to_vec();
        let live_memory = std::mem::replace(&mut self.memory, memory.to_vec());
        let mut scratch = BatchReport {
            id: ids.0,
            time: ids.1,
            ..BatchReport::default()
        };
        let parts = ScopeParts::new(self, &bindings, &scratch);
        let outputs = self
            .run_nodes(&parts.scope(), &mut input, &mut scratch)
            .map(|ran| ran.outputs)
            .map_err(|e| e.to_string());
        self.memory = live_memory;
        Some(outputs)
    }

    /// Each sink's stream, live and canary, once per stream.
    fn sink_streams<'a>(
        &'a self,
        live: &'a [Option<Vec<Batch>>],
        canary: &'a [Option<Vec<Batch>>],
    ) -> Vec<SinkStream<'a>> {
        let mut nodes: Vec<usize> = self.plan.sinks.iter().map(|(n, _)| *n).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
            .into_iter()
            .map(|n| {
                let node = &self.plan.nodes[n];
                SinkStream {
                    stream: &node.name,
                    key_codec: node.key_codec,
                    value_codec: node.value_codec,
                    live: live.get(n).and_then(Option::as_deref).unwrap_or(&[]),
                    canary: canary.get(n).and_then(Option::as_deref).unwrap_or(&[]),
                }
            })
            .collect()
    }

    /// Log each UDF whose bound version differs from the last batch's: the batch from which a
    /// new version runs; it is then on trial for the job's `probation_batches`.
    fn note_rebinds(&mut self, bindings: &Bindings, id: u64, time: i64) {
        if let Some(before) = &self.bound {
            for ((slot, b), (_, old)) in bindings.iter().zip(before.iter()) {
                if old.hash() == b.hash() && old.version == b.version {
                    continue;
                }
                let hash = b.hash();
                tracing::info!(
                    tenant = %self.plan.tenant,
                    job = %self.plan.name,
                    batch = id,
                    udf = %b.function.spec(),
                    version = b.version.map_or_else(|| "-".to_string(), |v| v.to_string()),
                    "from batch {id} (time {time} ms) on, {} runs component {}",
                    b.function.spec(),
                    &hash[..hash.len().min(12)]
                );
                if old.hash() != b.hash() {
                    self.trial.start(slot, old, b, self.plan.probation_batches);
                }
            }
        }
        self.bound = Some(bindings.clone());
    }

    fn count(&self, source: usize, records: u64, invalid: u64) {
        let name = &self.plan.sources[source].name;
        let labels = [
            ("tenant", &*self.plan.tenant),
            ("job", &*self.plan.name),
            ("source", name.as_str()),
        ];
        self.registry.add(
            &SeriesKey::new("sluice_source_records_total", &labels),
            records,
        );
        if invalid > 0 {
            self.registry.add(
                &SeriesKey::new("sluice_source_invalid_lines_total", &labels),
                invalid,
            );
        }
    }

    /// A record source `source` could not decode, as a dead letter: its partition and offset
    /// for place, its key and value as they came.
    fn source_letter(
        &self,
        source: usize,
        id: u64,
        time: i64,
        r: crate::sources::kafka::Rejected,
    ) -> DeadLetter {
        DeadLetter {
            format: crate::state::dead_letters::FORMAT,
            stream: self.plan.sources[source].name.clone(),
            batch_id: id,
            batch_time: time,
            partition: u32::try_from(r.partition).unwrap_or(0),
            position: u64::try_from(r.offset).unwrap_or(0),
            key: r.key,
            value: r.value,
            event_time: r.time,
            error: format!("{}/{} offset {}: {}", r.topic, r.partition, r.offset, r.why),
            kind: "decode".into(),
            // Not a UDF: a replay reports such a letter as not replayable.
            udf: format!("(kafka source {})", self.plan.sources[source].name),
            version: None,
            hash: String::new(),
            replayed: None,
        }
    }

    /// A source's input as partitions; files are read here, each cut at line boundaries into
    /// the job's partitions and split into lines in parallel.
    fn read_input(&self, source: usize, input: SourceInput, time: i64) -> (Vec<Batch>, u64) {
        let n = self.plan.partitions;
        match input {
            SourceInput::Records {
                records,
                invalid_lines,
                ..
            } => (records.split(n), invalid_lines),
            SourceInput::Fetched {
                records,
                undecodable,
                ..
            } => (records.split(n), undecodable),
            SourceInput::Files(files) => {
                let name = &self.plan.sources[source].name;
                let mut read: Vec<(Vec<Batch>, u64)> = files
                    .iter()
                    .map(|f| self.read_file(name, f, time))
                    .collect();
                let invalid = read.iter().map(|(_, i)| i).sum();
                if read.len() == 1 {
                    return (read.remove(0).0, invalid);
                }
                let width = read.iter().map(|(parts, _)| parts.len()).max().unwrap_or(0);
                let joined: Result<Vec<Batch>, _> = (0..width.max(n))
                    .map(|i| Batch::try_concat(read.iter().filter_map(|(parts, _)| parts.get(i))))
                    .collect();
                match joined {
                    Ok(parts) => (parts, invalid),
                    // Together past what a partition holds: each file keeps its own partitions.
                    Err(_) => (
                        read.into_iter().flat_map(|(parts, _)| parts).collect(),
                        invalid,
                    ),
                }
            }
        }
    }

    /// One file as the job's partitions of lines.
    fn read_file(&self, source: &str, path: &Path, time: i64) -> (Vec<Batch>, u64) {
        let job = &self.plan.name;
        let n = self.plan.partitions;
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(%job, %source, "cannot read {}: {e}; the file is skipped", path.display());
                self.registry.add(
                    &SeriesKey::new(
                        "sluice_source_unreadable_files_total",
                        &[("job", job), ("source", source)],
                    ),
                    1,
                );
                return ((0..n).map(|_| Batch::empty(false)).collect(), 0);
            }
        };
        // At least the job's partitions, and no partition past MAX_READ_PART_BYTES: a batch
        // column holds at most 4 GiB, so a larger file is cut into more partitions.
        let ranges = line_ranges(&data, n.max(data.len().div_ceil(MAX_READ_PART_BYTES)));
        let parts: Vec<(Batch, Vec<u64>)> = self.pool.install(|| {
            ranges
                .par_iter()
                .map(|range| {
                    let chunk = &data[range.clone()];
                    let mut batch = Batch {
                        keys: None,
                        values: crate::batch::Column::with_capacity(chunk.len() / 24, chunk.len()),
                        event_times: Vec::with_capacity(chunk.len() / 24),
                    };
                    let mut invalid = Vec::new();
                    push_lines(chunk, true, &mut batch, time, &mut invalid);
                    (batch, invalid)
                })
                .collect()
        });
        let mut invalid_lines = 0;
        for (range, (_, invalid)) in ranges.iter().zip(&parts) {
            if invalid.is_empty() {
                continue;
            }
            let first_line = data[..range.start].iter().filter(|&&b| b == b'\n').count() as u64;
            for i in invalid {
                tracing::warn!(%job, %source, "{}:{} is not UTF-8: the line is skipped and counted", path.display(), first_line + i + 1);
            }
            invalid_lines += invalid.len() as u64;
        }
        (parts.into_iter().map(|(b, _)| b).collect(), invalid_lines)
    }

    /// Run every stream, then the sinks, then commit; the outputs of every stream.
    fn compute(
        &mut self,
        bindings: &Bindings,
        sources: &mut [Option<Vec<Batch>>],
        report: &mut BatchReport,
    ) -> Result<Vec<Option<Vec<Batch>>>, Box<BatchError>> {
        let parts = ScopeParts::new(self, bindings, report);
        let scope = parts.scope();
        let Ran {
            outputs,
            writes,
            buffer_sizes,
            letters,
        } = self.run_nodes(&scope, sources, report)?;
        let mut letters = letters;
        letters.extend(self.source_letters.iter().cloned());
        self.count_letters(&letters, report);
        if let Some(kept) = &mut self.dry_run {
            kept.clone_from(&outputs);
            return Ok(outputs);
        }
        let plan = self.plan.clone();
        let sinks_started = Instant::now();
        let sizes = self
            .check_state(&writes, &buffer_sizes)
            .map_err(|e| Box::new(BatchError::State(e)))?;
        for (index, (node, sink)) in plan.sinks.iter().enumerate() {
            let n = &plan.nodes[*node];
            let Some(partitions) = &outputs[*node] else {
                continue;
            };
            let batch = SinkBatch {
                id: scope.id,
                time: scope.time,
                partitions,
                key_codec: n.key_codec,
                value_codec: n.value_codec,
            };
            self.write(index, &scope, &batch, sink)
                .map_err(|error| BatchError::Sink {
                    index: index + 1,
                    stream: n.name.to_string(),
                    error,
                })?;
        }
        let commit_started = Instant::now();
        if let Some(store) = &self.dead_letters {
            store
                .write(&plan.tenant, &plan.name, &letters)
                .map_err(|e| Box::new(BatchError::DeadLetters(e)))?;
        }
        self.commit(&scope, writes, sizes)
            .map_err(|e| Box::new(BatchError::State(e)))?;
        tracing::debug!(job = %plan.name, batch = scope.id, sinks_ms = ms(commit_started - sinks_started), commit_ms = ms(commit_started.elapsed()), "sinks and state commit");
        Ok(outputs)
    }

    /// Run every stream of the plan, in order, with `bindings`: their outputs, the state
    /// changes to commit and the sizes of in-memory window buffers.
    #[allow(clippy::type_complexity)]
    fn run_nodes(
        &mut self,
        scope: &BatchScope<'_>,
        sources: &mut [Option<Vec<Batch>>],
        report: &mut BatchReport,
    ) -> Result<Ran, Box<BatchError>> {
        let plan = self.plan.clone();
        // `None`: the stream has no batch at this time (a window between slides).
        let mut outputs: Vec<Option<Vec<Batch>>> = Vec::with_capacity(plan.nodes.len());
        let mut snapshots: Vec<Option<Vec<Batch>>> = vec![None; plan.nodes.len()];
        let mut writes = StateWrites::default();
        let mut buffer_sizes: Vec<(usize, u64)> = Vec::new();
        let mut letters: Vec<DeadLetter> = Vec::new();
        for (index, node) in plan.nodes.iter().enumerate() {
            let started = Instant::now();
            let inputs_active = node.inputs.iter().all(|&i| outputs[i].is_some());
            let result: Result<Option<Vec<Batch>>, OpError> = match &node.kind {
                NodeKind::Source(i) => Ok(Some(
                    sources
                        .get_mut(*i)
                        .and_then(Option::take)
                        .unwrap_or_default(),
                )),
                NodeKind::Stream(op) => {
                    if !inputs_active && !op.runs_without_input() {
                        outputs.push(None);
                        continue;
                    }
                    let mut attempt = 0;
                    let result = loop {
                        let inputs = node
                            .inputs
                            .iter()
                            .map(|&i| Input {
                                parts: outputs[i].as_deref().unwrap_or(&[][..]),
                                active: outputs[i].is_some(),
                                key_codec: plan.nodes[i].key_codec,
                                value_codec: plan.nodes[i].value_codec,
                                snapshot: snapshots[i].as_deref(),
                            })
                            .collect();
                        let mut cx = RunCx {
                            scope,
                            stream: &node.name,
                            inputs,
                            memory: &mut self.memory[index],
                            writes: &mut writes,
                            snapshot_wanted: self.snapshot_wanted[index],
                            snapshot: None,
                            late_records: 0,
                            dead_letters: Vec::new(),
                        };
                        let result = op.run(&mut cx);
                        // `retry(n)` (planned only for operators that keep no state).
                        if let (Err(OpError::Udf(e)), OnError::Retry(n)) =
                            (&result, plan.on_error(node))
                            && attempt < n
                        {
                            attempt += 1;
                            tracing::warn!(tenant = %plan.tenant, job = %plan.name, batch = scope.id, stream = %node.name, "on_error = \"retry({n})\": retry {attempt} of {n} after: {e}");
                            continue;
                        }
                        report.late_records += cx.late_records;
                        break (
                            result,
                            cx.snapshot.take(),
                            std::mem::take(&mut cx.dead_letters),
                        );
                    };
                    let (result, snapshot, mut found) = result;
                    snapshots[index] = snapshot;
                    self.label_letters(&mut found);
                    letters.append(&mut found);
                    if let Some(bytes) = self.memory[index].buffered_bytes() {
                        buffer_sizes.push((index, bytes));
                    }
                    result
                }
            };
            let records_in = node
                .inputs
                .iter()
                .map(|&i| {
                    outputs[i]
                        .as_deref()
                        .unwrap_or(&[][..])
                        .iter()
                        .map(Batch::len)
                        .sum::<usize>()
                })
                .sum::<usize>() as u64;
            let parts = result.map_err(|error| {
                Box::new(BatchError::Operator {
                    stream: node.name.to_string(),
                    op: node.op_name,
                    error,
                })
            })?;
            let Some(parts) = parts else {
                outputs.push(None);
                continue;
            };
            let records_out = parts.iter().map(Batch::len).sum::<usize>() as u64;
            report.operators.push(OperatorStats {
                stream: node.name.clone(),
                op: node.op_name,
                records_in: if matches!(node.kind, NodeKind::Source(_)) {
                    records_out
                } else {
                    records_in
                },
                records_out,
                time: started.elapsed(),
            });
            outputs.push(Some(parts));
        }
        Ok(Ran {
            outputs,
            writes,
            buffer_sizes,
            letters,
        })
    }

    /// Fill in the version and hash of each dead letter's UDF, as bound for the batch.
    fn label_letters(&self, letters: &mut [DeadLetter]) {
        for letter in letters.iter_mut() {
            if let Some((_, version, hash)) = self.versions.iter().find(|(s, ..)| *s == letter.udf)
            {
                letter.version = *version;
                letter.hash.clone_from(hash);
            }
        }
    }

    /// Count the batch's dead letters, per stream, in its report and the metrics.
    fn count_letters(&self, letters: &[DeadLetter], report: &mut BatchReport) {
        report.dead_letters += letters.len() as u64;
        for letter in letters {
            self.registry.add(
                &SeriesKey::new(
                    "sluice_dead_letters_total",
                    &[
                        ("tenant", &*self.plan.tenant),
                        ("job", &*self.plan.name),
                        ("stream", &letter.stream),
                    ],
                ),
                1,
            );
        }
    }

    /// The job's state size after this batch, per stream; an error past the limit.
    fn check_state(
        &self,
        writes: &StateWrites,
        buffers: &[(usize, u64)],
    ) -> Result<Vec<u64>, StateError> {
        let mut sizes = self.sizes.clone();
        for (stream, delta) in &writes.size_delta {
            if let Some(i) = self.plan.nodes.iter().position(|n| n.name == *stream) {
                sizes[i] = sizes[i].saturating_add_signed(*delta);
            }
        }
        for &(i, bytes) in buffers {
            sizes[i] = bytes;
        }
        let total: u64 = sizes.iter().sum();
        if total > self.plan.max_state_bytes {
            let (largest, bytes) = sizes
                .iter()
                .enumerate()
                .max_by_key(|(_, s)| **s)
                .map(|(i, s)| (&*self.plan.nodes[i].name, *s))
                .unwrap_or(("?", 0));
            return Err(StateError::Limit {
                size: total,
                limit: self.plan.max_state_bytes,
                largest: format!("stream '{largest}' holds {bytes} bytes"),
            });
        }
        Ok(sizes)
    }

    /// Write the batch's state changes, sizes and id in one atomic write.
    fn commit(
        &mut self,
        scope: &BatchScope<'_>,
        mut writes: StateWrites,
        sizes: Vec<u64>,
    ) -> Result<(), StateError> {
        if let Some(store) = &self.store {
            for ((old, new), memory) in self.sizes.iter().zip(&sizes).zip(&self.memory) {
                if old != new
                    && let Memory::Table(table) = memory
                {
                    writes.set_number(table, SIZE, *new as i64);
                }
            }
            store.commit(
                writes,
                Some(Committed {
                    batch: scope.id,
                    time: scope.time,
                }),
            )?;
            self.committed = Some(scope.id);
        }
        self.sizes = sizes;
        let total: u64 = self.sizes.iter().sum();
        self.registry.set(
            &SeriesKey::new(
                "sluice_state_bytes",
                &[("tenant", &*self.plan.tenant), ("job", &*self.plan.name)],
            ),
            total as f64,
        );
        Ok(())
    }

    fn write(
        &mut self,
        index: usize,
        scope: &BatchScope<'_>,
        batch: &SinkBatch<'_>,
        sink: &PlannedSink,
    ) -> Result<(), SinkError> {
        match sink {
            PlannedSink::Print { num } => {
                // A closed stdout (`host run … | head`) is not the job's failure.
                let _ = sinks::print(batch, *num, &mut std::io::stdout().lock());
                Ok(())
            }
            PlannedSink::TextFiles {
                prefix,
                suffix,
                format,
            } => {
                let (dir, undecodable) =
                    text_files::write(batch, prefix, suffix.as_deref(), *format)?;
                if undecodable > 0 {
                    tracing::warn!(job = %self.plan.name, batch = batch.id, "{undecodable} keys or values in {} did not decode as their codec says; written as JSON strings", dir.display());
                }
                Ok(())
            }
            PlannedSink::Udf(f) => {
                let f = scope.udf(*f);
                scope.pool.install(|| {
                    batch
                        .partitions
                        .par_iter()
                        .enumerate()
                        .try_for_each(|(i, p)| {
                            f.sink(&scope.context(i), p).map_err(SinkError::from)
                        })
                })
            }
            PlannedSink::Kafka(config) => {
                let kafka = self.kafka.entry(index).or_insert_with(|| {
                    KafkaSink::new(
                        config.clone(),
                        self.plan.tenant.clone(),
                        self.plan.name.clone(),
                        index + 1,
                        self.registry.clone(),
                    )
                });
                kafka
                    .write(batch)
                    .map(|_| ())
                    .map_err(|error| SinkError::Kafka {
                        bootstrap: config.bootstrap.clone(),
                        error,
                    })
            }
            PlannedSink::Native(f) => (f.0)(batch).map_err(SinkError::Native),
        }
    }
}

/// What running every stream of a batch gave, before its sinks and commit.
struct Ran {
    /// Every stream's output (`None`: no batch at this time).
    outputs: Vec<Option<Vec<Batch>>>,
    /// The state changes to commit.
    writes: StateWrites,
    /// The sizes of in-memory window buffers, by node.
    buffer_sizes: Vec<(usize, u64)>,
    /// Records isolated as dead letters.
    letters: Vec<DeadLetter>,
}

/// What a batch's [`BatchScope`] borrows: the pool, the metrics, the plan and the functions
/// bound for it.
struct ScopeParts {
    pool: Arc<rayon::ThreadPool>,
    registry: Arc<Registry>,
    plan: Arc<Plan>,
    udfs: Vec<Arc<UdfFunction>>,
    id: u64,
    time: i64,
}

impl ScopeParts {
    fn new(executor: &Executor, bindings: &Bindings, report: &BatchReport) -> Self {
        Self {
            pool: executor.pool.clone(),
            registry: executor.registry.clone(),
            plan: executor.plan.clone(),
            udfs: bindings.iter().map(|(_, b)| b.function.clone()).collect(),
            id: report.id,
            time: report.time,
        }
    }

    fn scope(&self) -> BatchScope<'_> {
        BatchScope {
            pool: &self.pool,
            partitions: self.plan.partitions,
            time: self.time,
            id: self.id,
            tenant: &self.plan.tenant,
            job: &self.plan.name,
            udfs: &self.udfs,
            registry: &self.registry,
        }
    }
}

/// Per slot of `bindings`: `component#function`, registry version, component hash (what a
/// dead letter records of its UDF).
fn versions_of(bindings: &Bindings) -> Vec<(String, Option<u64>, String)> {
    bindings
        .iter()
        .map(|(_, b)| (b.function.spec(), b.version, b.hash().to_string()))
        .collect()
}

/// The batch's id and time, as its report has them.
fn batch_ids(report: &BatchReport) -> (u64, i64) {
    (report.id, report.time)
}

/// The component versions `bindings` call, one per component and code.
fn used_versions(bindings: &Bindings) -> Vec<UsedUdf> {
    let mut used: Vec<UsedUdf> = Vec::new();
    for (_, b) in bindings.iter() {
        let name = b.component().name();
        if !used
            .iter()
            .any(|u| u.component == name && u.hash == b.hash())
        {
            used.push(UsedUdf {
                component: name.to_string(),
                version: b.version,
                hash: b.hash().to_string(),
            });
        }
    }
    used
}

/// The most bytes of a file read into one partition (well under a batch column's 4 GiB).
const MAX_READ_PART_BYTES: usize = 1 << 30;

/// Round a duration to milliseconds for logs.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64 / 1000.0 * 10.0).round() / 10.0
}

/// Cut `data` into `n` byte ranges of about equal size, each ending just after a newline (the
/// last at the end of the data), so every line falls in exactly one range.
fn line_ranges(data: &[u8], n: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..=n {
        let end = if i == n {
            data.len()
        } else {
            let target = (data.len() * i / n).max(start);
            data[target..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(data.len(), |p| target + p + 1)
        };
        ranges.push(start..end);
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::line_ranges;

    #[test]
    fn ranges_cut_at_line_ends_and_cover_everything() {
        let data = b"aa\nbbbb\nc\ndd\n";
        let ranges = line_ranges(data, 3);
        assert_eq!(ranges, [0..8, 8..10, 10..13]);
        assert_eq!(line_ranges(b"", 2), [0..0, 0..0]);
        assert_eq!(line_ranges(b"no newline", 2), [0..10, 10..10]);
    }
}
