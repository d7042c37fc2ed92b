//! A running job: the scheduler (a tokio loop on its own thread: ticks, receivers, early
//! seals, signals) and the executor (its own thread, batches in order, partitions on the
//! worker pool). Batches run one after another while the next is received.
//!
//! Batch times are multiples of the batch interval (Spark's), strictly increasing: a batch
//! sealed early or back to back (`--until-idle`) takes the next free multiple.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::executor::{Executor, SealedBatch, ms};
use super::stats::{BatchReport, JobSummary};
use crate::metrics::{Registry, SeriesKey};
use crate::plan::{ErrorPolicy, Plan, SourceKind};
use crate::sources::directory::DirectorySource;
use crate::sources::queue::QueueSource;
use crate::sources::socket::SocketSource;
use crate::sources::{Source, SourceContext, SourceInput, now_ms};

/// How many finished batches a job remembers.
const HISTORY: usize = 1000;

/// How a job runs.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// End once every source is exhausted and every batch is done (Structured Streaming's
    /// available-now trigger): batches run back to back while input is ready.
    pub until_idle: bool,
    /// Stop gracefully on Ctrl-C / SIGTERM (a second one exits at once). For `host run`.
    pub handle_signals: bool,
    /// Worker threads; default one per core.
    pub workers: Option<usize>,
}

/// Why a job ended badly.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A batch failed under `on_udf_error = "fail"`.
    #[error("job '{job}' failed in batch {batch} (time {time} ms): {error}")]
    BatchFailed {
        /// The job.
        job: String,
        /// The batch id.
        batch: u64,
        /// Its batch time.
        time: i64,
        /// What failed.
        error: String,
    },
    /// The job's state could not be opened.
    #[error("job '{job}': {error}")]
    Start {
        /// The job.
        job: String,
        /// What happened.
        error: super::executor::StartError,
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
    history: Mutex<VecDeque<BatchReport>>,
}

/// A job that is running; [`wait`](Job::wait) for it to end.
pub struct Job {
    shared: Arc<Shared>,
    scheduler: std::thread::JoinHandle<Result<JobSummary, JobError>>,
    executor: std::thread::JoinHandle<()>,
}

impl Job {
    /// Start a planned job.
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
        for warning in &plan.warnings {
            tracing::warn!(job = %plan.name, "{warning}");
        }
        let plan = Arc::new(plan);
        let shared = Arc::new(Shared {
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            history: Mutex::new(VecDeque::new()),
        });
        let workers = options
            .workers
            .unwrap_or_else(crate::plan::spec::default_partitions);
        let mut executor =
            Executor::new(plan.clone(), workers, registry.clone()).map_err(|error| {
                JobError::Start {
                    job: plan.name.to_string(),
                    error,
                }
            })?;
        let (to_executor, batches) = mpsc::channel::<SealedBatch>();
        let (report_tx, reports) = tokio::sync::mpsc::unbounded_channel::<BatchReport>();
        let policy = plan.on_udf_error;
        let executor = std::thread::Builder::new()
            .name(format!("sluice-{job}-executor"))
            .spawn(move || {
                for batch in batches {
                    let report = executor.run(batch);
                    // After a batch that ends the job, later batches must not run (nor commit).
                    let ends_job =
                        report.error.is_some() && (report.fatal || policy == ErrorPolicy::Fail);
                    if report_tx.send(report).is_err() || ends_job {
                        break;
                    }
                }
                executor.close();
            })
            .map_err(|e| internal(format!("cannot start the executor thread: {e}")))?;
        let scheduler_shared = shared.clone();
        let scheduler = std::thread::Builder::new()
            .name(format!("sluice-{job}-scheduler"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| JobError::Internal {
                        job: plan.name.to_string(),
                        message: format!("cannot start the scheduler: {e}"),
                    })?;
                let scheduler = Scheduler::new(
                    plan,
                    options,
                    scheduler_shared,
                    to_executor,
                    registry,
                    runtime.handle().clone(),
                );
                runtime.block_on(scheduler.run(reports))
            })
            .map_err(|e| internal(format!("cannot start the scheduler thread: {e}")))?;
        Ok(Job {
            shared,
            scheduler,
            executor,
        })
    }

    /// Ask the job to stop gracefully: receivers stop, what they received is sealed into a
    /// last batch, batches in flight finish, then [`wait`](Job::wait) returns.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.stop.notify_one();
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

    /// Wait for the job to end.
    pub fn wait(self) -> Result<JobSummary, JobError> {
        let result = self.scheduler.join().unwrap_or_else(|_| {
            Err(JobError::Internal {
                job: "?".into(),
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
    final_sent: bool,
}

impl Scheduler {
    fn new(
        plan: Arc<Plan>,
        options: JobOptions,
        shared: Arc<Shared>,
        to_executor: mpsc::Sender<SealedBatch>,
        registry: Arc<Registry>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let early_seal = Arc::new(Notify::new());
        let ctx = SourceContext {
            runtime,
            early_seal: early_seal.clone(),
            max_batch_records: plan.max_batch_records,
            until_idle: options.until_idle,
            job: plan.name.clone(),
        };
        let sources = plan
            .sources
            .iter()
            .map(|s| -> Box<dyn Source> {
                match &s.kind {
                    SourceKind::Socket {
                        host,
                        port,
                        reconnect_delay,
                    } => Box::new(SocketSource::start(
                        &s.name,
                        host,
                        *port,
                        *reconnect_delay,
                        &ctx,
                    )),
                    SourceKind::Directory {
                        path,
                        start,
                        max_files_per_batch,
                    } => Box::new(DirectorySource::new(
                        &s.name,
                        path,
                        *start,
                        *max_files_per_batch,
                    )),
                    SourceKind::Queue(q) => Box::new(QueueSource::new(&s.name, q.clone())),
                }
            })
            .collect();
        Self {
            plan,
            options,
            shared,
            to_executor,
            registry,
            sources,
            early_seal,
            next_id: 1,
            last_time: i64::MIN,
            in_flight: 0,
            first_seal: None,
            final_sent: false,
        }
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
        let mut signals = Signals::new(self.options.handle_signals);
        let mut summary = JobSummary::default();
        let mut stopping = false;
        let mut last_end = Instant::now();
        loop {
            tokio::select! {
                biased;
                how = signals.next() => {
                    if stopping {
                        tracing::warn!(%job, "{how} again: exiting now without finishing batches in flight");
                        std::process::exit(130);
                    }
                    tracing::info!(%job, "{how}: stopping gracefully after the batches in flight (send it again to exit at once)");
                    stopping = true;
                    summary.stopped = true;
                    self.drain();
                    if self.in_flight == 0 { break; }
                }
                _ = self.shared.stop.notified(), if !stopping => {
                    tracing::info!(%job, "stop requested: stopping gracefully after the batches in flight");
                    stopping = true;
                    summary.stopped = true;
                    self.drain();
                    if self.in_flight == 0 { break; }
                }
                report = reports.recv() => {
                    let Some(report) = report else {
                        return Err(JobError::Internal { job: job.to_string(), message: "the executor thread died".into() });
                    };
                    self.in_flight -= 1;
                    last_end = Instant::now();
                    self.finished(&report, &mut summary);
                    if let Some(error) = &report.error
                        && (report.fatal || self.plan.on_udf_error == ErrorPolicy::Fail)
                    {
                        for s in &mut self.sources { s.stop(); }
                        return Err(JobError::BatchFailed { job: job.to_string(), batch: report.id, time: report.time, error: error.clone() });
                    }
                    if stopping {
                        if self.in_flight == 0 { break; }
                        continue;
                    }
                    if self.options.until_idle && self.in_flight == 0 {
                        let statuses: Vec<_> = self.sources.iter_mut().map(|s| s.status()).collect();
                        if statuses.iter().any(|s| s.backlog || s.buffered > 0) {
                            self.seal();
                        } else if statuses.iter().all(|s| s.exhausted) {
                            if self.plan.final_batch && !self.final_sent {
                                // Available-now: one more batch, with no data, in which the
                                // watermarks move past the last records seen.
                                tracing::info!(%job, "input exhausted: one last, empty batch to advance watermarks");
                                self.final_sent = true;
                                self.seal();
                                continue;
                            }
                            tracing::info!(%job, "every source is exhausted and every batch is done");
                            break;
                        }
                    }
                }
                _ = self.early_seal.notified(), if !stopping => {
                    self.seal();
                    if self.any_full() { self.early_seal.notify_one(); }
                }
                _ = ticker.tick(), if !stopping => {
                    if !(self.options.until_idle && self.in_flight > 0) {
                        self.seal();
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

    fn any_full(&mut self) -> bool {
        let max = self.plan.max_batch_records.unwrap_or(usize::MAX);
        self.sources.iter_mut().any(|s| s.status().buffered >= max)
    }

    /// Stop receiving and seal what receivers hold, so nothing received is left behind.
    fn drain(&mut self) {
        for s in &mut self.sources {
            s.stop();
        }
        for _ in 0..10_000 {
            if !self.sources.iter_mut().any(|s| s.status().buffered > 0) {
                break;
            }
            self.seal();
        }
    }

    /// Seal a batch from what every source has and send it to the executor.
    fn seal(&mut self) {
        let interval = self.plan.batch_interval.as_millis().max(1) as i64;
        let aligned = now_ms() / interval * interval;
        let time = if self.last_time == i64::MIN {
            aligned
        } else {
            aligned.max(self.last_time + interval)
        };
        // Windows need every slide time to have a batch: times the clock skipped (a stalled
        // machine, a long batch) get empty batches, as Spark's timer would have made them.
        let windowed = self
            .plan
            .nodes
            .iter()
            .any(|n| matches!(n.op, crate::plan::NodeOp::Window(_)));
        if windowed && self.last_time != i64::MIN {
            let mut gap = self.last_time + interval;
            while gap < time && gap < self.last_time + interval * 10_000 {
                let empty = self
                    .sources
                    .iter()
                    .map(|_| SourceInput::Records {
                        records: crate::batch::Batch::empty(false),
                        invalid_lines: 0,
                    })
                    .collect();
                self.send(gap, empty);
                gap += interval;
            }
        }
        self.last_time = time;
        let max = self.plan.max_batch_records;
        let inputs = self.sources.iter_mut().map(|s| s.take(max)).collect();
        self.send(time, inputs);
    }

    fn send(&mut self, time: i64, inputs: Vec<SourceInput>) {
        let sealed_at = Instant::now();
        self.first_seal.get_or_insert(sealed_at);
        let batch = SealedBatch {
            id: self.next_id,
            time,
            sealed_at,
            inputs,
        };
        self.next_id += 1;
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
                if self.plan.on_udf_error == ErrorPolicy::SkipBatch {
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

/// Ctrl-C and SIGTERM, when the job handles them.
struct Signals {
    terminate: Option<tokio::signal::unix::Signal>,
    enabled: bool,
}

impl Signals {
    fn new(enabled: bool) -> Self {
        let terminate = enabled
            .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok())
            .flatten();
        Self { terminate, enabled }
    }

    /// The next signal's name; never, when signals are not handled.
    async fn next(&mut self) -> &'static str {
        if !self.enabled {
            return std::future::pending().await;
        }
        let term = async {
            match &mut self.terminate {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
            _ = term => "terminated (SIGTERM)",
        }
    }
}
