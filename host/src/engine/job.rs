//! A running job: the scheduler (a task on the [`Core`]'s runtime: ticks, receivers, early
//! seals) and the executor (its own thread, batches in order, partitions on the core's worker
//! pool). Batches run one after another while the next is received. Jobs on one core share
//! its threads: a job adds only its executor thread.
//!
//! The library never exits the process nor handles signals: [`Job::stop`] asks for a graceful
//! stop and [`Job::abort`] abandons the batches not yet running; `host run` maps Ctrl-C and
//! SIGTERM onto them.
//!
//! Batch times are multiples of the batch interval (Spark's), strictly increasing: a batch
//! sealed early or back to back (`--until-idle`) takes the next free multiple.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::canary::{Canary, CanaryReport};
use super::core::{Core, CoreConfig, CoreError};
use super::executor::{Executor, SealedBatch, StartError, ms};
use super::recovery::{self, Recovered};
use super::stats::{BatchReport, JobSummary};
use super::trial::Rollback;
use crate::checkpoint::{BatchRecord, CheckpointLog, RecordedInput, RecordedUdf};
use crate::metrics::{Registry, SeriesKey};
use crate::plan::Plan;
use crate::sources::http::IngestEndpoint;
use crate::sources::rate::RateLimiter;
use crate::sources::{BuildContext, Source, SourceContext, SourceInput, now_ms};
use crate::state::StateError;
use crate::udf::Bindings;

/// How many finished batches a job remembers.
const HISTORY: usize = 1000;

/// How a job runs.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// End once every source is exhausted and every batch is done (Structured Streaming's
    /// available-now trigger): batches run back to back while input is ready.
    pub until_idle: bool,
    /// The worker pool and runtime the job runs on, shared with the other jobs given the same
    /// core. Default: [`Core::global`] (or a core of its own when `workers` is set).
    pub core: Option<Arc<Core>>,
    /// Without `core`: run on a core of the job's own with this many workers rather than on
    /// the shared one (for measuring a pool size; it does not share threads).
    pub workers: Option<usize>,
    /// Serve every `http` source through [`Job::ingest_router`], a router the caller mounts on
    /// its own server, instead of binding the source's `address`. Only the per-request limits
    /// apply then; the connection limits are the caller server's (see
    /// [`sources::http`](crate::sources::http)).
    pub mount_http: bool,
    /// Go past this sealed batch without running it (`host run --skip-batch ID`): it must be
    /// the next batch to run again; recorded in the checkpoint, logged and counted.
    pub skip_batch: Option<u64>,
    /// Put the newest data checkpoint in place of the live state before starting
    /// (`host run --restore-state`): for state found damaged while a batch ran.
    pub restore_state: bool,
    /// Where a batch re-run after a restart finds the UDF versions it was sealed with (the
    /// registry under `host serve`). None: a recorded version other than the plan's runs with
    /// the plan's, with a warning (a folder of components keeps only its current files).
    pub versions: Option<Versions>,
}

/// A resolver of `name@N` for [`JobOptions::versions`].
#[derive(Clone)]
pub struct Versions(pub Arc<dyn crate::udf::UdfResolver>);

impl std::fmt::Debug for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Versions(..)")
    }
}

/// Why a job ended badly.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A batch failed under `on_udf_error = "fail"`.
    #[error("job '{job}' failed in batch {batch} (time {time} ms): {error}{hint}")]
    BatchFailed {
        /// The job.
        job: String,
        /// The batch id.
        batch: u64,
        /// Its batch time.
        time: i64,
        /// What failed.
        error: String,
        /// What to do (empty when there is nothing to add): with a checkpoint, a batch that
        /// fails the same way on every restart can be skipped with `--skip-batch`.
        hint: String,
    },
    /// A source cannot go on (a Kafka broker unreachable past its retries, a deleted topic,
    /// a record that does not decode), or cannot read a batch's input again.
    #[error("job '{job}': {error}")]
    Source {
        /// The job.
        job: String,
        /// What the source says (boxed: Kafka errors carry offsets and messages).
        error: Box<crate::sources::SourceError>,
    },
    /// The job's state could not be opened.
    #[error("job '{job}': {error}")]
    Start {
        /// The job.
        job: String,
        /// What happened (boxed: checkpoint errors carry the offsets and files a user needs).
        error: Box<super::executor::StartError>,
    },
    /// The worker pool and runtime the job runs on could not be started.
    #[error("job '{job}': {error}")]
    Core {
        /// The job.
        job: String,
        /// Why.
        error: CoreError,
    },
    /// [`Job::abort`] ended the job: the batches sealed but not yet running were abandoned
    /// (with a checkpoint they run again, with the same input, when the job restarts).
    #[error(
        "job '{job}' was aborted: {abandoned} batches sealed but not finished were abandoned; with a checkpoint they run again when the job restarts"
    )]
    Aborted {
        /// The job.
        job: String,
        /// Batches sent to the executor and not finished when the job was aborted.
        abandoned: usize,
    },
    /// A batch sealed before a restart ran with a UDF version that cannot be found again.
    #[error(
        "job '{job}' cannot run batch {batch} again: it ran with {component} version {version} (component {hash}), and that version is not in the registry any more ({error}); deploy that component again (the same bytes get a new version number but the same hash), or skip the batch with the job's skip-batch command"
    )]
    VersionGone {
        /// The job.
        job: String,
        /// The batch.
        batch: u64,
        /// The component.
        component: String,
        /// The version recorded.
        version: u64,
        /// Its hash, recorded.
        hash: String,
        /// Why it could not be found.
        error: String,
    },
    /// The job's threads could not be started or died.
    #[error("job '{job}': {message}")]
    Internal {
        /// The job.
        job: String,
        /// What happened.
        message: String,
    },
}

struct Shared {
    stop: Notify,
    stopping: AtomicBool,
    abort: Notify,
    aborted: AtomicBool,
    history: Mutex<VecDeque<BatchReport>>,
    /// The job's UDF slots (the plan's), which a later version can be bound to.
    udfs: Arc<crate::udf::SlotSet>,
    /// A version run beside the bound one, compared and discarded.
    canary: Mutex<Option<Arc<Canary>>>,
    /// Every version this job rolled back after it failed on trial, with the batch.
    rollbacks: Mutex<Vec<(u64, Rollback)>>,
    /// Each Kafka partition's consumer lag, as of the last batch sealed.
    lag: Mutex<Vec<SourceLag>>,
}

/// How far a source is behind one of its partitions (Kafka consumer lag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceLag {
    /// The source.
    pub source: String,
    /// The partition and its lag.
    #[serde(flatten)]
    pub lag: crate::sources::kafka::PartitionLag,
}

/// A job that is running; [`wait`](Job::wait) for it to end.
pub struct Job {
    name: String,
    handle: JobHandle,
    /// The scheduler task's result, sent once when it ends.
    done: mpsc::Receiver<Result<JobSummary, JobError>>,
    executor: std::thread::JoinHandle<()>,
    /// The http sources served on the caller's router ([`JobOptions::mount_http`]).
    mounted: Vec<IngestEndpoint>,
    /// Kept alive until the job has ended.
    _core: Arc<Core>,
}

/// A handle to ask a running [`Job`] to stop or abort, or to read its batch reports, from
/// anywhere (another thread, a signal handler task) while the job's owner waits for it.
#[derive(Clone)]
pub struct JobHandle {
    shared: Arc<Shared>,
}

impl JobHandle {
    /// Ask the job to stop gracefully: receivers stop, what they received is sealed into a
    /// last batch, batches in flight finish, then [`Job::wait`] returns its summary.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.stop.notify_one();
    }

    /// End the job without finishing what it has sealed: receivers stop, no further batch
    /// starts (the one running finishes: its UDF calls are bounded by their deadlines), and
    /// [`Job::wait`] returns [`JobError::Aborted`] once the executor has let go of the job's
    /// state. With a checkpoint the abandoned batches run again on restart, as after a crash.
    pub fn abort(&self) {
        self.shared.aborted.store(true, Ordering::Release);
        self.shared.abort.notify_one();
    }

    /// Bind every UDF of the job that calls component `name` (but those pinned to a version)
    /// to the same function of `component`, from the next batch on: a batch runs wholly with
    /// one version, state and source positions carry on, and the switch is logged with the
    /// batch it takes effect in. All or none: when a function is missing from `component` (or
    /// of another world) nothing changes and the error says which.
    pub fn rebind_udf(
        &self,
        name: &str,
        component: Arc<crate::udf::UdfComponent>,
        version: Option<u64>,
    ) -> Result<Vec<crate::udf::RebindOutcome>, crate::udf::RebindError> {
        self.shared.udfs.rebind_component(name, component, version)
    }

    /// Run version `version` (`component`) of component `name` beside the bound one on the
    /// next `batches` batches: outputs compared and discarded, state changes not committed
    /// (see [`Canary`]). Replaces a canary running. An error when a function the job calls is
    /// missing from `component`; `Ok(false)` when the job does not call `name`.
    pub fn start_canary(
        &self,
        name: &str,
        component: Arc<crate::udf::UdfComponent>,
        version: Option<u64>,
        batches: u32,
    ) -> Result<bool, crate::udf::ResolveError> {
        let canary = Canary::new(name, component, version, batches);
        let live = self.shared.udfs.snapshot();
        if !live.iter().any(|(_, b)| b.component().name() == name) {
            return Ok(false);
        }
        canary.bindings(&live)?;
        *self
            .shared
            .canary
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(canary));
        Ok(true)
    }

    /// Every version this job rolled back after it failed on trial (see
    /// [`JobOptions`]' plan's `probation_batches`), with the batch, oldest first.
    pub fn rollbacks(&self) -> Vec<(u64, Rollback)> {
        self.shared
            .rollbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the canary of component `name` found so far, if one runs.
    pub fn canary(&self, name: &str) -> Option<CanaryReport> {
        self.shared
            .canary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| c.component == name)
            .map(|c| c.report())
    }

    /// End the canary of component `name`, returning what it found.
    pub fn end_canary(&self, name: &str) -> Option<CanaryReport> {
        let mut slot = self
            .shared
            .canary
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|c| c.component == name) {
            return slot.take().map(|c| c.report());
        }
        None
    }

    /// Each Kafka partition's consumer lag, as of the last batch sealed (empty for jobs
    /// without a Kafka source).
    pub fn lag(&self) -> Vec<SourceLag> {
        self.shared
            .lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The most recent finished batches, oldest first.
    pub fn reports(&self) -> Vec<BatchReport> {
        self.shared
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

impl Job {
    /// Start a planned job on [`JobOptions::core`] (by default the process's shared
    /// [`Core::global`]). Sources are started before this returns: a port that cannot be bound
    /// is an error here.
    pub fn start(
        plan: Plan,
        options: JobOptions,
        registry: Arc<Registry>,
    ) -> Result<Job, JobError> {
        let job = plan.name.to_string();
        let internal = |message: String| JobError::Internal {
            job: job.clone(),
            message,
        };
        let core = match (&options.core, options.workers) {
            (Some(core), _) => Ok(core.clone()),
            (None, Some(workers)) => Core::new(CoreConfig {
                workers: Some(workers),
                ..CoreConfig::default()
            }),
            (None, None) => Core::global(),
        }
        .map_err(|error| JobError::Core {
            job: job.clone(),
            error,
        })?;
        for warning in &plan.warnings {
            tracing::warn!(job = %plan.name, "{warning}");
        }
        let plan = Arc::new(plan);
        let shared = Arc::new(Shared {
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            abort: Notify::new(),
            aborted: AtomicBool::new(false),
            history: Mutex::new(VecDeque::new()),
            udfs: plan.udfs.clone(),
            canary: Mutex::new(None),
            rollbacks: Mutex::new(Vec::new()),
            lag: Mutex::new(Vec::new()),
        });
        let start_error = |error: StartError| JobError::Start {
            job: plan.name.to_string(),
            error: Box::new(error),
        };
        let mut recovered = recovery::open(&plan).map_err(|e| start_error(e.into()))?;
        if let Some(r) = &mut recovered {
            if options.restore_state {
                recovery::restore_newest(&plan, r).map_err(|e| start_error(e.into()))?;
            }
            recovery::skip(&plan, r, options.skip_batch, &registry)
                .map_err(|e| start_error(e.into()))?;
        } else if options.skip_batch.is_some() || options.restore_state {
            return Err(internal(
                "--skip-batch and --restore-state need a checkpoint (set `checkpoint` in [job] or pass --checkpoint DIR)".into(),
            ));
        }
        let log = recovered.as_ref().map(|r| r.log.clone());
        let pool = core
            .pool_for(&plan.tenant)
            .map_err(|error| JobError::Core {
                job: job.clone(),
                error,
            })?;
        let mut executor = match Executor::new(
            plan.clone(),
            pool.clone(),
            registry.clone(),
            log.clone(),
        ) {
            // Live state that cannot be opened (damaged, not locked by another run) comes
            // back from the newest data checkpoint when there is one.
            Err(StartError::State(
                error @ (StateError::Open { .. } | StateError::Damaged { .. }),
            )) if let (Some(r), Some(state_dir)) = (&recovered, &plan.state_dir)
                && let Some(batch) = r.meta.data_checkpoint =>
            {
                tracing::error!(job = %plan.name, "the state in {} cannot be opened: {error}", state_dir.display());
                recovery::restore_state(
                    &r.log.data_path(batch),
                    batch,
                    state_dir,
                    "cannot be opened",
                )
                .map_err(|e| start_error(e.into()))?;
                Executor::new(plan.clone(), pool, registry.clone(), log.clone())
                    .map_err(start_error)?
            }
            other => other.map_err(start_error)?,
        };
        let committed = executor.committed();
        let replay = match &mut recovered {
            Some(r) => {
                let state = recovery::state_of(&plan, executor.has_state(), committed);
                r.resume(&plan, state, &registry)
                    .map_err(|e| start_error(e.into()))?;
                let done = if executor.has_state() {
                    committed
                } else {
                    r.meta.finished
                };
                r.replay(done)
            }
            None => Vec::new(),
        };
        let (to_executor, batches) = mpsc::channel::<SealedBatch>();
        let (report_tx, reports) = tokio::sync::mpsc::unbounded_channel::<BatchReport>();
        let executor_shared = shared.clone();
        let executor = std::thread::Builder::new()
            .name(format!("sluice-{job}-executor"))
            .spawn(move || {
                for batch in batches {
                    if executor_shared.aborted.load(Ordering::Acquire) {
                        break;
                    }
                    let canary = executor_shared
                        .canary
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    let report = executor.run(batch, canary.as_deref());
                    if let Some(rollback) = &report.rollback {
                        executor_shared
                            .rollbacks
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((report.id, rollback.clone()));
                    }
                    // After a batch that ends the job, later batches must not run (nor commit).
                    let ends_job = report.error.is_some() && (report.fatal || !report.skipped);
                    if report_tx.send(report).is_err() || ends_job {
                        break;
                    }
                }
                executor.close();
            })
            .map_err(|e| internal(format!("cannot start the executor thread: {e}")))?;
        // The sources start here, on the caller's thread (their tasks on the core's runtime);
        // the scheduler's loop then runs as a task there too.
        let mut scheduler = match Scheduler::new(
            plan,
            options,
            shared.clone(),
            to_executor,
            registry,
            core.handle().clone(),
            recovered,
            replay,
            committed,
        ) {
            Ok(scheduler) => scheduler,
            Err(e) => {
                // The executor's queue is gone with the scheduler: it ends and lets go of the
                // job's state before the error is returned.
                let _ = executor.join();
                return Err(e);
            }
        };
        let mounted = std::mem::take(&mut scheduler.mounted);
        let (done_tx, done) = mpsc::sync_channel(1);
        core.handle().spawn(async move {
            let result = scheduler.run(reports).await;
            // Sources end (their tasks, listeners, connections) before the job is said done.
            let _ = done_tx.send(result);
        });
        Ok(Job {
            name: job,
            handle: JobHandle { shared },
            done,
            executor,
            mounted,
            _core: core,
        })
    }

    /// Ask the job to stop gracefully: receivers stop, what they received is sealed into a
    /// last batch, batches in flight finish, then [`wait`](Job::wait) returns.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// End the job without finishing what it sealed; see [`JobHandle::abort`].
    pub fn abort(&self) {
        self.handle.abort();
    }

    /// A handle to stop or abort the job, or read its reports, while another thread waits
    /// for it.
    pub fn handle(&self) -> JobHandle {
        self.handle.clone()
    }

    /// See [`JobHandle::lag`].
    pub fn lag(&self) -> Vec<SourceLag> {
        self.handle.lag()
    }

    /// The most recent finished batches, oldest first.
    pub fn reports(&self) -> Vec<BatchReport> {
        self.handle.reports()
    }

    /// See [`JobHandle::rebind_udf`].
    pub fn rebind_udf(
        &self,
        name: &str,
        component: Arc<crate::udf::UdfComponent>,
        version: Option<u64>,
    ) -> Result<Vec<crate::udf::RebindOutcome>, crate::udf::RebindError> {
        self.handle.rebind_udf(name, component, version)
    }

    /// With [`JobOptions::mount_http`]: an axum router serving `POST /ingest/<source>` for
    /// the job's http sources, to nest on the caller's own router and server (e.g.
    /// `app.nest("/tenants/a", job.ingest_router()?)`); `None` when the job mounts none.
    /// Answers and per-request limits are the standalone endpoint's; once the job ends it
    /// answers `503`.
    pub fn ingest_router(&self) -> Option<axum::Router> {
        (!self.mounted.is_empty())
            .then(|| crate::sources::http::ingest_router(self.mounted.iter().cloned()))
    }

    /// Wait for the job to end (blocking the calling thread: do not call it from a task on the
    /// job's own runtime).
    pub fn wait(self) -> Result<JobSummary, JobError> {
        let result = self.done.recv().unwrap_or_else(|_| {
            Err(JobError::Internal {
                job: self.name.clone(),
                message: "the scheduler panicked".into(),
            })
        });
        // The scheduler has let go of the executor's queue: the executor finishes what it has,
        // flushes the job's state and ends, so a new job may open the same state at once.
        let _ = self.executor.join();
        result
    }
}

struct Scheduler {
    plan: Arc<Plan>,
    options: JobOptions,
    shared: Arc<Shared>,
    to_executor: mpsc::Sender<SealedBatch>,
    registry: Arc<Registry>,
    sources: Vec<Box<dyn Source>>,
    early_seal: Arc<Notify>,
    next_id: u64,
    last_time: i64,
    in_flight: usize,
    first_seal: Option<Instant>,
    /// Empty batches sealed after the input ended (`--until-idle`; see `Plan::drain_batches`).
    drained: u64,
    /// The job's checkpoint: batches are recorded in it before they run.
    log: Option<Arc<CheckpointLog>>,
    /// Sealed batches to run again first (recovery).
    replay: Vec<BatchRecord>,
    /// Batches sealed but not yet recorded and sent.
    sealing: Vec<SealedBatch>,
    /// Http sources served on the caller's router, handed to the [`Job`].
    mounted: Vec<IngestEndpoint>,
    /// Each source's rate (`max_rate`, backpressure), by source index.
    rates: Vec<RateLimiter>,
}

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: Arc<Plan>,
        options: JobOptions,
        shared: Arc<Shared>,
        to_executor: mpsc::Sender<SealedBatch>,
        registry: Arc<Registry>,
        runtime: tokio::runtime::Handle,
        recovered: Option<Recovered>,
        replay: Vec<BatchRecord>,
        committed: Option<u64>,
    ) -> Result<Self, JobError> {
        let early_seal = Arc::new(Notify::new());
        let ctx = SourceContext {
            runtime,
            early_seal: early_seal.clone(),
            max_batch_records: plan.max_batch_records,
            batch_interval: plan.batch_interval,
            until_idle: options.until_idle,
            job: plan.name.clone(),
        };
        let position = |name: &str| {
            recovered
                .as_ref()
                .and_then(|r| r.meta.sources.get(name).cloned())
                .unwrap_or_default()
        };
        let received = |name: &str| {
            recovered
                .as_ref()
                .and_then(|r| r.received.get(name).cloned())
                .unwrap_or_default()
        };
        let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(plan.sources.len());
        let mut mounted = Vec::new();
        for s in &plan.sources {
            let built = s
                .kind
                .build(
                    &s.name,
                    BuildContext {
                        ctx: &ctx,
                        received: received(&s.name),
                        files_read: &position(&s.name).files,
                        offsets: &position(&s.name).offsets,
                        mount_http: options.mount_http,
                        queue: plan.queues.get(&s.name).cloned(),
                    },
                )
                .map_err(|error| JobError::Source {
                    job: plan.name.to_string(),
                    error: Box::new(error),
                })?;
            mounted.extend(built.endpoint);
            sources.push(built.source);
        }
        // Ids go on from the checkpoint, and always past the state's last committed batch
        // (a job without a checkpoint that keeps state, or metadata that fell back to an older
        // file): the executor would take a reused id for a batch it already has.
        let (next_id, last_time) = match &recovered {
            Some(r) if r.resumed => (r.meta.next_batch, r.meta.last_time.unwrap_or(i64::MIN)),
            _ => (1, i64::MIN),
        };
        let next_id = next_id.max(committed.map_or(1, |c| c.saturating_add(1)));
        let rates = plan
            .sources
            .iter()
            .map(|s| {
                RateLimiter::new(
                    s.max_rate,
                    plan.backpressure,
                    s.initial_rate,
                    plan.batch_interval,
                )
            })
            .collect();
        let mut scheduler = Self {
            plan,
            options,
            shared,
            to_executor,
            registry,
            sources,
            early_seal,
            next_id,
            last_time,
            in_flight: 0,
            first_seal: None,
            drained: 0,
            log: recovered.map(|r| r.log),
            replay,
            sealing: Vec::new(),
            mounted,
            rates,
        };
        for i in 0..scheduler.sources.len() {
            scheduler.rate_changed(i);
        }
        Ok(scheduler)
    }

    /// Feed each source's rate estimator with a finished batch (the records it took from the
    /// source, its processing time and scheduling delay), as Spark's rate controller does.
    fn update_rates(&mut self, report: &BatchReport) {
        if report.error.is_some() {
            return;
        }
        for i in 0..self.rates.len() {
            let name = &self.plan.sources[i].name;
            let records = report
                .operators
                .iter()
                .find(|op| op.stream.as_ref() == name.as_str() && op.op == "source")
                .map_or(0, |op| op.records_in);
            let changed = self.rates[i].update(
                report.time,
                records,
                report.processing_time,
                report.scheduling_delay,
            );
            if changed.is_some() {
                self.rate_changed(i);
            }
        }
    }

    /// Give source `i` its budget for the next batches, and show its rate.
    fn rate_changed(&mut self, i: usize) {
        let rate = self.rates[i].rate();
        self.sources[i].set_budget(self.rates[i].budget(self.plan.batch_interval));
        let Some(rate) = rate else { return };
        let (tenant, job, source) = (
            &self.plan.tenant,
            &self.plan.name,
            &self.plan.sources[i].name,
        );
        self.registry.set(
            &SeriesKey::new(
                "sluice_source_rate",
                &[("tenant", &**tenant), ("job", &**job), ("source", source)],
            ),
            rate,
        );
        tracing::info!(%tenant, %job, %source, rate = rate.round() as u64, "source rate: {} records/s", rate.round() as u64);
    }

    /// Each Kafka partition's consumer lag, as a metric and in the job's status.
    fn show_lag(&mut self) {
        let mut all = Vec::new();
        for source in &self.sources {
            for lag in source.lag() {
                self.registry.set(
                    &SeriesKey::new(
                        "sluice_kafka_lag",
                        &[
                            ("tenant", &*self.plan.tenant),
                            ("job", &*self.plan.name),
                            ("source", source.name()),
                            ("topic", &lag.topic),
                            ("partition", &lag.partition.to_string()),
                        ],
                    ),
                    lag.lag as f64,
                );
                all.push(SourceLag {
                    source: source.name().to_string(),
                    lag,
                });
            }
        }
        if !all.is_empty() {
            *self
                .shared
                .lag
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = all;
        }
    }

    /// Send the batches sealed before a crash that did not finish, with the input they had.
    fn resend(&mut self) -> Result<(), JobError> {
        let replay = std::mem::take(&mut self.replay);
        if replay.is_empty() {
            return Ok(());
        }
        tracing::info!(job = %self.plan.name, "recovering: running batches {}..={} again with the input they had", replay[0].id, replay[replay.len() - 1].id);
        for record in replay {
            let mut inputs = Vec::with_capacity(record.inputs.len());
            for (source, input) in self.sources.iter_mut().zip(&record.inputs) {
                inputs.push(match input {
                    RecordedInput::Files { files } => {
                        SourceInput::Files(files.iter().map(std::path::PathBuf::from).collect())
                    }
                    RecordedInput::Wal { from, to } => {
                        source.replay(*from, *to).map_err(|e| JobError::Internal {
                            job: self.plan.name.to_string(),
                            message: format!("cannot run batch {} again: {e}", record.id),
                        })?
                    }
                    RecordedInput::Offsets { ranges } => {
                        source.refetch(ranges).map_err(|error| JobError::Source {
                            job: self.plan.name.to_string(),
                            error: Box::new(error),
                        })?
                    }
                    RecordedInput::Unlogged { records } => {
                        tracing::warn!(job = %self.plan.name, source = %source.name(), batch = record.id, "{records} records of this batch came from a source without a write-ahead log and are lost");
                        SourceInput::Records {
                            records: crate::batch::Batch::empty(false),
                            invalid_lines: 0,
                            wal: None,
                        }
                    }
                });
            }
            let udfs = self.recorded_bindings(&record)?;
            self.dispatch(SealedBatch {
                id: record.id,
                time: record.time,
                sealed_at: Instant::now(),
                inputs,
                udfs,
            });
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut reports: tokio::sync::mpsc::UnboundedReceiver<BatchReport>,
    ) -> Result<JobSummary, JobError> {
        let job = self.plan.name.clone();
        let interval = self.plan.batch_interval;
        tracing::info!(
            %job,
            "running: batch interval {}, {} partitions, {} sources, {} streams, {} sinks{}",
            humantime::format_duration(interval),
            self.plan.partitions,
            self.plan.sources.len(),
            self.plan.nodes.len() - self.plan.sources.len().min(self.plan.nodes.len()),
            self.plan.sinks.len(),
            if self.options.until_idle { " (until idle)" } else { "" }
        );
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut summary = JobSummary::default();
        self.blocking(Self::resend)?;
        let mut stopping = false;
        let mut last_end = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = self.shared.abort.notified() => {
                    tracing::warn!(%job, "abort requested: ending now; {} batches in flight are abandoned", self.in_flight);
                    for s in &mut self.sources { s.stop(); }
                    return Err(JobError::Aborted { job: job.to_string(), abandoned: self.in_flight });
                }
                _ = self.shared.stop.notified(), if !stopping => {
                    tracing::info!(%job, "stop requested: stopping gracefully after the batches in flight");
                    stopping = true;
                    summary.stopped = true;
                    self.blocking(Self::drain)?;
                    if self.in_flight == 0 { break; }
                }
                report = reports.recv() => {
                    let Some(report) = report else {
                        return Err(JobError::Internal { job: job.to_string(), message: "the executor thread died".into() });
                    };
                    self.in_flight -= 1;
                    last_end = Instant::now();
                    self.finished(&report, &mut summary);
                    self.update_rates(&report);
                    if let Some(error) = &report.error
                        && (report.fatal || !report.skipped)
                    {
                        for s in &mut self.sources { s.stop(); }
                        let hint = if self.log.is_some() && !report.fatal {
                            format!(". The batch runs again, with the same input, when the job restarts; if it fails the same way every time, `host run JOB.toml --skip-batch {}` goes past it: its records produce no output and no state change (recorded in the checkpoint, logged and counted)", report.id)
                        } else {
                            String::new()
                        };
                        return Err(JobError::BatchFailed { job: job.to_string(), batch: report.id, time: report.time, error: error.clone(), hint });
                    }
                    if stopping {
                        if self.in_flight == 0 { break; }
                        continue;
                    }
                    if self.options.until_idle && self.in_flight == 0 {
                        let statuses: Vec<_> = self.sources.iter_mut().map(|s| s.status()).collect();
                        if statuses.iter().any(|s| s.backlog || s.buffered > 0) {
                            self.blocking(Self::seal)?;
                        } else if statuses.iter().all(|s| s.exhausted) {
                            if self.drained < self.plan.drain_batches {
                                // Available-now: batches with no data, in which event-time
                                // watermarks move past the last records seen and batch-time
                                // windows slide past them.
                                if self.drained == 0 && self.plan.drain_batches == 1 {
                                    tracing::info!(%job, "input exhausted: one last, empty batch to advance watermarks");
                                } else if self.drained == 0 {
                                    tracing::info!(%job, "input exhausted: {} last, empty batches to slide windows and advance watermarks past the last records", self.plan.drain_batches);
                                }
                                self.drained += 1;
                                self.blocking(Self::seal)?;
                                continue;
                            }
                            tracing::info!(%job, "every source is exhausted and every batch is done");
                            break;
                        }
                    }
                }
                _ = self.early_seal.notified(), if !stopping => {
                    self.blocking(Self::seal)?;
                    if self.any_full() { self.early_seal.notify_one(); }
                }
                _ = ticker.tick(), if !stopping => {
                    if !(self.options.until_idle && self.in_flight > 0) {
                        self.blocking(Self::seal)?;
                    }
                }
            }
        }
        for s in &mut self.sources {
            s.stop();
        }
        summary.elapsed = self.first_seal.map_or(Duration::ZERO, |first| {
            last_end.saturating_duration_since(first)
        });
        Ok(summary)
    }

    /// Run `work` (sealing: with a checkpoint, metadata and log files written and fsynced)
    /// while the runtime's other tasks move to another thread, so that one job's disk does not
    /// hold up the receivers and schedulers of every job on the core. Without a checkpoint
    /// sealing touches no disk but directory listings, and runs in place.
    fn blocking<R>(&mut self, work: impl FnOnce(&mut Self) -> R) -> R {
        if self.log.is_some() {
            tokio::task::block_in_place(|| work(self))
        } else {
            work(self)
        }
    }

    fn any_full(&mut self) -> bool {
        let max = self.plan.max_batch_records.unwrap_or(usize::MAX);
        self.sources.iter_mut().any(|s| s.status().buffered >= max)
    }

    /// Stop receiving and seal what receivers hold, so nothing received is left behind.
    fn drain(&mut self) -> Result<(), JobError> {
        for s in &mut self.sources {
            s.stop();
        }
        for _ in 0..10_000 {
            if !self.sources.iter_mut().any(|s| s.status().buffered > 0) {
                break;
            }
            self.seal()?;
        }
        Ok(())
    }

    /// Seal a batch from what every source has, record it in the checkpoint, and send it to
    /// the executor.
    fn seal(&mut self) -> Result<(), JobError> {
        let interval = self.plan.batch_interval.as_millis().max(1) as i64;
        let aligned = now_ms() / interval * interval;
        let time = if self.last_time == i64::MIN {
            aligned
        } else {
            aligned.max(self.last_time + interval)
        };
        // Windows need every slide time to have a batch: times the clock skipped (a stalled
        // machine, a long batch, a restart after downtime) get empty batches, as Spark's timer
        // would have made them — as many as a window can still hold data over (past that,
        // every window is empty and stays so), never more than 10,000.
        let windowed = self.plan.every_batch;
        if windowed && self.last_time != i64::MIN {
            let fill = i64::try_from(self.plan.drain_batches.saturating_add(1))
                .unwrap_or(i64::MAX)
                .min(10_000);
            let skipped = (time - self.last_time) / interval - 1;
            if skipped > fill {
                tracing::info!(job = %self.plan.name, "the clock skipped {skipped} batch times: the {fill} a window can still hold data over get empty batches, the others none");
            }
            let mut gap = self.last_time + interval;
            while gap < time
                && gap
                    < self
                        .last_time
                        .saturating_add(interval.saturating_mul(fill + 1))
            {
                let empty = self
                    .sources
                    .iter()
                    .map(|_| SourceInput::Records {
                        records: crate::batch::Batch::empty(false),
                        invalid_lines: 0,
                        wal: None,
                    })
                    .collect();
                self.send(gap, empty);
                gap += interval;
            }
        }
        for source in &mut self.sources {
            source.check().map_err(|error| JobError::Source {
                job: self.plan.name.to_string(),
                error: Box::new(error),
            })?;
        }
        self.last_time = time;
        let max = self.plan.max_batch_records;
        let inputs = self.sources.iter_mut().map(|s| s.take(max)).collect();
        self.send(time, inputs);
        self.show_lag();
        // Recorded before any of them runs: a batch whose state is committed is always in
        // the checkpoint, so a restart never reuses its id for other input.
        let sealed = std::mem::take(&mut self.sealing);
        if let Some(log) = &self.log {
            let records = sealed.iter().map(record).collect();
            log.sealed(records, self.next_id, self.last_time)
                .map_err(|e| JobError::Internal {
                    job: self.plan.name.to_string(),
                    message: format!("cannot record the batch in the checkpoint: {e}"),
                })?;
        }
        for batch in sealed {
            self.dispatch(batch);
        }
        Ok(())
    }

    /// The UDFs a batch sealed before a restart runs with: the versions recorded with it,
    /// found again through [`JobOptions::versions`].
    fn recorded_bindings(&self, record: &BatchRecord) -> Result<Bindings, JobError> {
        let mut bindings = self.plan.udfs.snapshot();
        if record.udfs.len() != bindings.len() {
            if !record.udfs.is_empty() {
                tracing::warn!(job = %self.plan.name, batch = record.id, "batch {} recorded {} UDFs but the plan has {}: it runs with the plan's", record.id, record.udfs.len(), bindings.len());
            }
            return Ok(bindings);
        }
        let now: Vec<(crate::udf::SlotId, String, String)> = bindings
            .iter()
            .map(|(id, b)| (id, b.hash().to_string(), b.component().name().to_string()))
            .collect();
        for ((id, hash, name), was) in now.into_iter().zip(&record.udfs) {
            if was.hash == hash {
                continue;
            }
            let short = |h: &str| h[..h.len().min(12)].to_string();
            let (Some(version), Some(versions), true) =
                (was.version, &self.options.versions, was.component == name)
            else {
                tracing::warn!(job = %self.plan.name, batch = record.id, udf = %was.component, "batch {} ran with component {} before the restart, which cannot be found again: it runs again with {}", record.id, short(&was.hash), short(&hash));
                continue;
            };
            let gone = |error: String| JobError::VersionGone {
                job: self.plan.name.to_string(),
                batch: record.id,
                component: was.component.clone(),
                version,
                hash: short(&was.hash),
                error,
            };
            let component = versions
                .0
                .component(&format!("{}@{version}", was.component))
                .map_err(|e| gone(e.to_string()))?;
            if component.hash() != was.hash {
                return Err(gone(format!(
                    "version {version} is now component {}",
                    short(component.hash())
                )));
            }
            bindings = bindings
                .with(id, &component, Some(version))
                .map_err(|e| gone(e.to_string()))?;
            tracing::info!(tenant = %self.plan.tenant, job = %self.plan.name, batch = record.id, udf = %was.component, version, "batch {} runs again with {} version {version}, the version it was sealed with", record.id, was.component);
        }
        Ok(bindings)
    }

    fn send(&mut self, time: i64, inputs: Vec<SourceInput>) {
        let sealed_at = Instant::now();
        self.first_seal.get_or_insert(sealed_at);
        self.sealing.push(SealedBatch {
            id: self.next_id,
            time,
            sealed_at,
            inputs,
            // The versions are fixed when the batch is sealed, and recorded with it.
            udfs: self.plan.udfs.snapshot(),
        });
        self.next_id += 1;
    }

    fn dispatch(&mut self, batch: SealedBatch) {
        self.first_seal.get_or_insert(batch.sealed_at);
        if self.to_executor.send(batch).is_ok() {
            self.in_flight += 1;
        }
    }

    fn finished(&mut self, report: &BatchReport, summary: &mut JobSummary) {
        summary.add(report);
        let (job, tenant) = (&self.plan.name, &self.plan.tenant);
        let labels = [("tenant", &**tenant), ("job", &**job)];
        self.registry
            .add(&SeriesKey::new("sluice_batches_total", &labels), 1);
        self.registry.set(
            &SeriesKey::new("sluice_batch_processing_seconds", &labels),
            report.processing_time.as_secs_f64(),
        );
        self.registry.set(
            &SeriesKey::new("sluice_batch_scheduling_delay_seconds", &labels),
            report.scheduling_delay.as_secs_f64(),
        );
        match &report.error {
            None => tracing::info!(
                %tenant, %job, batch = report.id, time = report.time,
                records = report.records_in,
                processing_ms = ms(report.processing_time),
                scheduling_delay_ms = ms(report.scheduling_delay),
                total_delay_ms = ms(report.total_delay),
                "batch done"
            ),
            Some(error) => {
                self.registry
                    .add(&SeriesKey::new("sluice_batches_failed_total", &labels), 1);
                tracing::error!(%tenant, %job, batch = report.id, time = report.time, records = report.records_in, "batch failed: {error}");
                if report.skipped {
                    tracing::warn!(%job, batch = report.id, "on_udf_error = \"skip_batch\": the batch's {} records produce no output; going on", report.records_in);
                }
            }
        }
        if report.invalid_lines > 0 {
            tracing::warn!(%job, batch = report.id, "{} input lines were not UTF-8 and were skipped", report.invalid_lines);
        }
        for op in &report.operators {
            tracing::debug!(%job, batch = report.id, stream = %op.stream, op = op.op, records_in = op.records_in, records_out = op.records_out, ms = ms(op.time), "operator");
        }
        let mut history = self
            .shared
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(report.clone());
    }
}

/// A sealed batch as the checkpoint records it.
fn record(batch: &SealedBatch) -> BatchRecord {
    BatchRecord {
        id: batch.id,
        time: batch.time,
        udfs: RecordedUdf::of(&batch.udfs),
        inputs: batch
            .inputs
            .iter()
            .map(|input| match input {
                SourceInput::Files(files) => RecordedInput::Files {
                    files: files
                        .iter()
                        .map(|f| f.to_string_lossy().into_owned())
                        .collect(),
                },
                SourceInput::Records {
                    wal: Some((from, to)),
                    ..
                } => RecordedInput::Wal {
                    from: *from,
                    to: *to,
                },
                SourceInput::Fetched { ranges, .. } => RecordedInput::Offsets {
                    ranges: ranges.clone(),
                },
                SourceInput::Records { records, .. } => RecordedInput::Unlogged {
                    records: records.len() as u64,
                },
            })
            .collect(),
    }
}
