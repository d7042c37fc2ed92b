//! The job manager of `host serve`: every tenant's jobs, submitted as manifests, started on the
//! host's shared [`Core`], their UDFs resolved in the tenant's part of the [`udf::Registry`],
//! and a job table that outlives the process.
//!
//! A job lives in its folder `<data-dir>/tenants/<tenant>/jobs/<job>/`: the manifest as
//! submitted (`job.toml`), its checkpoint (`checkpoint/`, whatever the manifest says) with the
//! state inside it (`checkpoint/state/`), and its outputs. Every path a manifest names
//! (directory sources, static and initial-state files, `text_files` prefixes) is taken relative
//! to that folder and must stay inside it: an absolute path elsewhere or a `..` is refused.
//! `socket` sources are refused (a shared host does not open connections a tenant chooses);
//! `http` sources are served on the host's own listener ([`JobManager::ingest_router`]).
//!
//! The job table is a RocksDB of its own at `<data-dir>/jobs/`: one typed, versioned record per
//! (tenant, job) — the manifest and what the job should be doing (running, stopped, failed) —
//! each written with one synced put, so a `kill -9` at any moment leaves either the old record
//! or the new one. [`JobManager::resume_all`] starts every job recorded running; each picks up
//! from its checkpoint (the engine's recovery). A job another tenant owns is never found: every
//! lookup is by (tenant, job).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::{
    BatchReport, CanaryReport, Core, Job, JobError, JobHandle, JobOptions, Rollback, Versions,
};
use crate::plan::limits::MAX_MANIFEST_BYTES;
use crate::plan::manifest::{self, ManifestError};
use crate::plan::spec::{JobSpec, SinkKind, SourceKind};
use crate::plan::{self, PlanErrors};
use crate::udf::{self, SlotSet, guest_text};

/// The version of the job table's records ([`JobRecord::format`]).
pub const RECORD_FORMAT: u32 = 1;
/// The manifest's file name in the job's folder.
pub const MANIFEST_FILE: &str = "job.toml";
/// The checkpoint folder's name in the job's folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// How long [`JobManager::stop`] waits for the job to end before answering `stopping`.
pub const STOP_WAIT: Duration = Duration::from_secs(30);
/// The most batch reports [`JobManager::status`] returns.
pub const STATUS_BATCHES: usize = 10;

/// What a job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Batches run.
    Running,
    /// Asked to stop; the last batches are finishing.
    Stopping,
    /// Stopped on request (or never resumed after one): a restart of the host leaves it so.
    Stopped,
    /// Ended with an error (kept in [`JobInfo::error`]); a restart of the host leaves it so.
    Failed,
}

impl JobState {
    /// Its name in the API (`running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Stopping => "stopping",
            JobState::Stopped => "stopped",
            JobState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A UDF a job calls, as bound now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdfInUse {
    /// `component#function`.
    pub spec: String,
    /// The registry version of its component.
    pub version: Option<u64>,
    /// The component's SHA-256, hex.
    pub hash: String,
}

/// One finished batch, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInfo {
    /// The batch id.
    pub id: u64,
    /// The batch time, ms since the Unix epoch.
    pub time_ms: i64,
    /// Records from all sources.
    pub records_in: u64,
    /// Input lines refused as not UTF-8.
    pub invalid_lines: u64,
    /// From sealing to the start of processing, ms.
    pub scheduling_delay_ms: u64,
    /// From the start to the end of processing, ms.
    pub processing_ms: u64,
    /// From sealing to the end of processing, ms.
    pub total_delay_ms: u64,
    /// Why the batch failed, if it did.
    pub error: Option<String>,
    /// Records isolated as dead letters (`on_error = "dead_letter"`).
    #[serde(default)]
    pub dead_letters: u64,
}

impl From<&BatchReport> for BatchInfo {
    fn from(r: &BatchReport) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            id: r.id,
            time_ms: r.time,
            records_in: r.records_in,
            invalid_lines: r.invalid_lines,
            scheduling_delay_ms: ms(r.scheduling_delay),
            processing_ms: ms(r.processing_time),
            total_delay_ms: ms(r.total_delay),
            error: r.error.clone(),
            dead_letters: r.dead_letters,
        }
    }
}

/// How a version on trial fares in one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialInfo {
    /// The job.
    pub job: String,
    /// Batches that ran with it and succeeded.
    pub batches_passed: u32,
    /// Batches it must pass (the job's `probation_batches`).
    pub probation_batches: u32,
    /// Set when the job went back to the version before.
    pub rolled_back: Option<RolledBack>,
}

/// A rollback of a version on trial, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolledBack {
    /// The batch it failed (which then ran with the version before).
    pub batch: u64,
    /// How it failed.
    pub error: String,
    /// The version the job went back to.
    pub to_version: Option<u64>,
}

/// What the API says about one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInfo {
    /// The job's name (its manifest's `[job] name`).
    pub name: String,
    /// What it is doing.
    pub state: JobState,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// When it was (last) submitted, ms since the Unix epoch.
    pub submitted_at_ms: u64,
    /// Its http sources, each served at `/api/v1/jobs/<job>/ingest/<source>`.
    pub ingest: Vec<String>,
    /// The UDFs it calls and their versions (empty for a job not started since the host did).
    pub udfs: Vec<UdfInUse>,
    /// Batches finished since it (re)started, as far as the host remembers (the last 1,000).
    pub batches_done: u64,
    /// The most recent finished batches, oldest first (at most [`STATUS_BATCHES`]; none in
    /// lists).
    pub batches: Vec<BatchInfo>,
    /// Each Kafka partition's consumer lag, as of the last batch sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lag: Vec<crate::engine::SourceLag>,
}

/// What the job table keeps per (tenant, job): format [`RECORD_FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// The record's format, [`RECORD_FORMAT`].
    pub format: u32,
    /// The tenant.
    pub tenant: String,
    /// The job.
    pub name: String,
    /// The manifest as submitted.
    pub manifest: String,
    /// What the job should be doing: `running` (resumed when the host starts), `stopped` or
    /// `failed` (left so).
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was submitted, ms since the Unix epoch.
    pub submitted_at_ms: u64,
}

/// The job table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused to open it.
    #[error(
        "cannot open the job table {}: {source}; is another `host serve` using this data directory? Stop it, or give `--data-dir` another folder",
        path.display()
    )]
    Open {
        /// The table's folder.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A read or write failed.
    #[error("the job table {} could not be {what}: {source}", path.display())]
    Io {
        /// The table's folder.
        path: PathBuf,
        /// `read`, `written`.
        what: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A record is not of a format this host reads.
    #[error(
        "the job table {} holds a record for key {key:?} this host cannot read: {problem}; was it written by a newer host?",
        path.display()
    )]
    Record {
        /// The table's folder.
        path: PathBuf,
        /// The record's key, escaped.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// A job the caller's tenant does not have (another tenant's job is not found either).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No job of that name.
    #[error("no job named \"{job}\"")]
    NotFound {
        /// The name asked for, escaped and cut.
        job: String,
    },
    /// The job has no http source of that name (or none at all), or it is not running.
    #[error("job \"{job}\" has no http source \"{source_name}\" to ingest into")]
    NoIngest {
        /// The job.
        job: String,
        /// The source asked for, escaped and cut.
        source_name: String,
        /// The job's http sources.
        available: Vec<String>,
    },
}

impl LookupError {
    /// What the caller can do about it.
    pub fn hint(&self) -> String {
        match self {
            LookupError::NotFound { .. } => {
                "list your jobs with `host jobs`; submit one with `host submit JOB.toml`".into()
            }
            LookupError::NoIngest { available, .. } if available.is_empty() => {
                "the job has no `http` source; add one to its manifest and submit it again".into()
            }
            LookupError::NoIngest { available, .. } => {
                format!("its http sources: {}", available.join(", "))
            }
        }
    }
}

/// A submitted manifest was refused; nothing changed, but for [`SubmitError::Start`] (the
/// job's record then says it failed, and why).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The tenant name is not one the host keeps.
    #[error(transparent)]
    BadTenant(#[from] udf::NameError),
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error("the manifest is {size} bytes; at most {MAX_MANIFEST_BYTES} are accepted")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Not TOML of the manifest's shape.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The job name cannot name a folder.
    #[error(
        "job name \"{name}\" is not accepted: 1 to 64 bytes of letters, digits, `_`, `-` or `.`, not starting with `.`"
    )]
    BadName {
        /// The name, escaped and cut.
        name: String,
    },
    /// A path in the manifest leads outside the job's folder.
    #[error(
        "{what} {} leads outside the job's folder {}: on a shared host a job reads and writes only inside its folder",
        path.display(), folder.display()
    )]
    OutsideJobFolder {
        /// Which field (`sink text_files prefix`, …).
        what: String,
        /// The path as resolved.
        path: PathBuf,
        /// The job's folder.
        folder: PathBuf,
    },
    /// Something the shared host does not offer.
    #[error("{what} is not available on a shared host")]
    NotAllowed {
        /// What (`socket source "s"`).
        what: String,
        /// What to use instead.
        instead: &'static str,
    },
    /// The planner found problems (each with its line and hint).
    #[error("{0}")]
    Plan(PlanErrors),
    /// A job of that name is running for the tenant.
    #[error("job \"{job}\" is already running")]
    AlreadyRunning {
        /// The job.
        job: String,
    },
    /// The tenant runs as many jobs as its quota allows.
    #[error("tenant \"{tenant}\" already runs {running} jobs, its quota max_jobs = {max_jobs}")]
    Quota {
        /// The tenant.
        tenant: String,
        /// Jobs running.
        running: usize,
        /// The quota.
        max_jobs: usize,
    },
    /// The job could not start (its checkpoint does not fit the manifest, …).
    #[error("{0}")]
    Start(Box<JobError>),
    /// The job's folder could not be made or its manifest written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The job table could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubmitError {
    /// What the submitter can do about it.
    pub fn hint(&self) -> String {
        match self {
            SubmitError::BadTenant(_) => "tenant names are set in the host's config".into(),
            SubmitError::TooLarge { .. } => "split the job or shorten the manifest".into(),
            SubmitError::Manifest(_) | SubmitError::Plan(_) => {
                "fix the manifest at the lines named and submit it again".into()
            }
            SubmitError::BadName { .. } => "rename the job in its [job] table".into(),
            SubmitError::OutsideJobFolder { .. } => {
                "use a relative path without `..`: it is taken inside the job's folder".into()
            }
            SubmitError::NotAllowed { instead, .. } => (*instead).into(),
            SubmitError::AlreadyRunning { .. } => {
                "stop it first (`host stop JOB`), or give the new job another name".into()
            }
            SubmitError::Quota { .. } => {
                "stop a job (`host stop JOB`) or ask the host's operator for a larger max_jobs"
                    .into()
            }
            SubmitError::Start(_) => {
                "a manifest whose stateful streams changed cannot resume the job's checkpoint: give the job another name".into()
            }
            SubmitError::Io { .. } | SubmitError::Store(_) => {
                "the host's data directory needs space and write permission; see the host's log"
                    .into()
            }
        }
    }
}

/// A stop that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// No such job for the tenant.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The job table could not be written (the job was not asked to stop).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A job by (tenant, job).
pub type JobKey = (String, String);

/// A job that could not resume: (tenant, job, why).
pub type ResumeFailure = (String, String, String);

/// What a tenant's jobs may use (from its quotas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobLimits {
    /// Jobs the tenant may run at once (`None`: no limit).
    pub max_jobs: Option<usize>,
    /// The most state one job of the tenant may hold: a manifest's `max_state_bytes` is
    /// lowered to it (`None`: the manifest's).
    pub max_state_bytes: Option<u64>,
}

/// Each tenant's [`JobLimits`].
pub type LimitsOf = Arc<dyn Fn(&str) -> JobLimits + Send + Sync>;

/// What a [`JobManager`] is built from.
#[derive(Clone)]
pub struct JobManagerConfig {
    /// The host's data directory: `jobs/` (the table) and `tenants/<t>/jobs/<job>/`.
    pub data_dir: PathBuf,
    /// The worker pool and runtime every job runs on.
    pub core: Arc<Core>,
    /// Where jobs count their metrics.
    pub metrics: Arc<crate::metrics::Registry>,
    /// Where jobs find their tenant's UDFs.
    pub registry: Arc<udf::Registry>,
    /// Each tenant's quotas for jobs.
    pub limits: LimitsOf,
}

impl std::fmt::Debug for JobManagerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManagerConfig")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A job just started, with what the manager keeps of it.
struct Launched {
    job: Job,
    udfs: Arc<SlotSet>,
    probation: u32,
    ingest: Vec<String>,
}

/// A started job's parts the manager keeps.
struct Live {
    handle: JobHandle,
    router: Option<axum::Router>,
    udfs: Arc<SlotSet>,
    /// Batches a newly bound version is on trial for (the manifest's `probation_batches`).
    probation: u32,
    /// Set by [`JobManager::stop`]: the job's end is a stop, not a failure nor a shutdown.
    stop_requested: AtomicBool,
}

struct Entry {
    record: JobRecord,
    /// What it is doing now (the record says what it should be doing).
    state: JobState,
    error: Option<String>,
    ingest: Vec<String>,
    live: Option<Arc<Live>>,
}

struct Inner {
    config: JobManagerConfig,
    db: rocksdb::DB,
    db_path: PathBuf,
    jobs: Mutex<BTreeMap<(String, String), Entry>>,
    /// One submit or resume at a time: checks, folder, start and record happen together.
    submitting: Mutex<()>,
    shutting_down: AtomicBool,
}

/// Every tenant's jobs; cheap to clone (one shared table).
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

/// Only `[job] name`, read before the whole manifest: the job's folder, where the manifest's
/// relative paths resolve, is named after it. Not `deny_unknown_fields` on purpose: the strict
/// parse of the whole manifest (`manifest::load_with`) follows at once.
#[derive(Deserialize)]
struct PeekName {
    job: PeekJob,
}

#[derive(Deserialize)]
struct PeekJob {
    name: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `name` can name a job's folder: a registry name not starting with `.` (so neither
/// `.` nor `..`).
pub fn valid_job_name(name: &str) -> bool {
    udf::valid_name(name) && !name.starts_with('.')
}

fn shown(name: &str) -> String {
    guest_text::sanitize(name, udf::MAX_NAME_LEN + 16)
}

fn key(tenant: &str, job: &str) -> Vec<u8> {
    // Both are valid names: no NUL in either.
    let mut k = Vec::with_capacity(tenant.len() + job.len() + 1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(job.as_bytes());
    k
}

impl JobManager {
    /// Open (or create) the job table in `<data-dir>/jobs/`. Nothing starts: call
    /// [`resume_all`](Self::resume_all) once the registry holds the tenants' UDFs.
    pub fn open(config: JobManagerConfig) -> Result<Self, StoreError> {
        let db_path = config.data_dir.join("jobs");
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, &db_path).map_err(|source| StoreError::Open {
            path: db_path.clone(),
            source,
        })?;
        let manager = Self {
            inner: Arc::new(Inner {
                config,
                db,
                db_path,
                jobs: Mutex::new(BTreeMap::new()),
                submitting: Mutex::new(()),
                shutting_down: AtomicBool::new(false),
            }),
        };
        for record in manager.inner.records()? {
            let state = match record.state {
                // Not started yet: `resume_all` starts it.
                JobState::Running | JobState::Stopping => JobState::Stopped,
                other => other,
            };
            let entry = Entry {
                state,
                error: record.error.clone(),
                ingest: Vec::new(),
                live: None,
                record,
            };
            lock(&manager.inner.jobs).insert(
                (entry.record.tenant.clone(), entry.record.name.clone()),
                entry,
            );
        }
        Ok(manager)
    }

    /// The folder of `tenant`'s `job`.
    pub fn job_dir(&self, tenant: &str, job: &str) -> PathBuf {
        self.inner.job_dir(tenant, job)
    }

    /// Start every job the table records as running, each from its checkpoint. A job that
    /// cannot start is recorded failed with its error (and logged); the others start anyway.
    /// Returns the jobs started and those that failed, as (tenant, job) pairs.
    pub fn resume_all(&self) -> (Vec<JobKey>, Vec<ResumeFailure>) {
        let mut started = Vec::new();
        let mut failed = Vec::new();
        let recorded: Vec<JobRecord> = lock(&self.inner.jobs)
            .values()
            .filter(|e| e.live.is_none() && matches!(e.record.state, JobState::Running))
            .map(|e| e.record.clone())
            .collect();
        for record in recorded {
            let (tenant, name) = (record.tenant.clone(), record.name.clone());
            let _one = lock(&self.inner.submitting);
            match self
                .inner
                .start(&tenant, &record.manifest, record.submitted_at_ms)
            {
                Ok(_) => {
                    tracing::info!(tenant = %tenant, job = %name, "job resumed");
                    started.push((tenant, name));
                }
                Err(error) => {
                    let message = error.to_string();
                    tracing::error!(tenant = %tenant, job = %name, "job could not resume: {message}");
                    let mut record = record;
                    record.state = JobState::Failed;
                    record.error = Some(message.clone());
                    if let Err(e) = self.inner.put(&record) {
                        tracing::error!(tenant = %tenant, job = %name, "{e}");
                    }
                    lock(&self.inner.jobs).insert(
                        (tenant.clone(), name.clone()),
                        Entry {
                            state: JobState::Failed,
                            error: Some(message.clone()),
                            ingest: Vec::new(),
                            live: None,
                            record,
                        },
                    );
                    failed.push((tenant, name, message));
                }
            }
        }
        (started, failed)
    }

    /// Check, plan and start `tenant`'s job from its manifest text, and record it running.
    /// A job of the same name that stopped or failed is replaced, and resumes from its
    /// checkpoint (the engine refuses a manifest whose stateful streams changed).
    pub fn submit(&self, tenant: &str, manifest_text: &str) -> Result<JobInfo, SubmitError> {
        let _one = lock(&self.inner.submitting);
        self.inner.start(tenant, manifest_text, now_ms())
    }

    /// `tenant`'s jobs, by name (without batch reports).
    pub fn list(&self, tenant: &str) -> Vec<JobInfo> {
        lock(&self.inner.jobs)
            .range((tenant.to_string(), String::new())..)
            .take_while(|((t, _), _)| t == tenant)
            .map(|(_, e)| e.info(0))
            .collect()
    }

    /// Hot reload: every running job of `tenant` that calls component `name` (and did not pin
    /// a version, `name@N`) is bound to `version` from its next batch on; a batch runs wholly
    /// with one version and state carries on. A version that lacks a function a job calls (or
    /// has it in another world) leaves that job on its version. One line per job touched.
    pub fn rebind_deployed(
        &self,
        tenant: &str,
        name: &str,
        component: &Arc<udf::UdfComponent>,
        version: u64,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        for (job, live) in self.running(tenant) {
            match live
                .udfs
                .rebind_component(name, component.clone(), Some(version))
            {
                Ok(outcomes) if outcomes.is_empty() => {}
                Ok(outcomes) => {
                    let specs: Vec<&str> = outcomes.iter().map(|o| o.spec.as_str()).collect();
                    tracing::info!(%tenant, %job, udf = %name, version, "hot reload: {} run version {version} from the next batch", specs.join(", "));
                    lines.push(format!(
                        "job '{job}': {} run version {version} from its next batch",
                        specs.join(", ")
                    ));
                }
                Err(e) => {
                    tracing::warn!(%tenant, %job, udf = %name, version, "hot reload refused: {e}");
                    lines.push(format!("job '{job}' keeps its version: {e}"));
                }
            }
        }
        lines
    }

    /// `tenant`'s running jobs.
    fn running(&self, tenant: &str) -> Vec<(String, Arc<Live>)> {
        lock(&self.inner.jobs)
            .range((tenant.to_string(), String::new())..)
            .take_while(|((t, _), _)| t == tenant)
            .filter_map(|((_, job), e)| e.live.clone().map(|l| (job.clone(), l)))
            .collect()
    }

    /// Start a canary of `component` (candidate code for `tenant`'s `name`) for `batches`
    /// batches in every running job that calls `name`: one line per job, and the jobs it runs
    /// in.
    pub fn start_canary(
        &self,
        tenant: &str,
        name: &str,
        component: &Arc<udf::UdfComponent>,
        batches: u32,
    ) -> (Vec<String>, Vec<String>) {
        let (mut lines, mut jobs) = (Vec::new(), Vec::new());
        for (job, live) in self.running(tenant) {
            match live
                .handle
                .start_canary(name, component.clone(), None, batches)
            {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(%tenant, %job, udf = %name, "canary: the candidate runs beside the bound version on the next {batches} batches");
                    lines.push(format!(
                        "job '{job}': the candidate runs beside the bound version on the next {batches} batches"
                    ));
                    jobs.push(job);
                }
                Err(e) => lines.push(format!("job '{job}' cannot run the candidate: {e}")),
            }
        }
        (lines, jobs)
    }

    /// What the canaries of `tenant`'s `name` found, per job.
    pub fn canaries(&self, tenant: &str, name: &str) -> Vec<(String, CanaryReport)> {
        self.running(tenant)
            .into_iter()
            .filter_map(|(job, live)| live.handle.canary(name).map(|r| (job, r)))
            .collect()
    }

    /// End the canaries of `tenant`'s `name`; what they found, per job.
    pub fn end_canaries(&self, tenant: &str, name: &str) -> Vec<(String, CanaryReport)> {
        self.running(tenant)
            .into_iter()
            .filter_map(|(job, live)| live.handle.end_canary(name).map(|r| (job, r)))
            .collect()
    }

    /// How the code `hash` of `tenant`'s `name` fares in each running job that ran it: the
    /// batches it passed, and whether the job rolled it back.
    pub fn trial(&self, tenant: &str, name: &str, hash: &str) -> Vec<TrialInfo> {
        let mut found = Vec::new();
        for (job, live) in self.running(tenant) {
            let reports = live.handle.reports();
            let ran: Vec<&BatchReport> = reports
                .iter()
                .filter(|r| r.udfs.iter().any(|u| u.component == name && u.hash == hash))
                .collect();
            let rollback = live
                .handle
                .rollbacks()
                .into_iter()
                .find(|(_, r)| r.component == name && r.from_hash == hash);
            let binds = live
                .udfs
                .snapshot()
                .iter()
                .any(|(_, b)| b.component().name() == name && b.hash() == hash);
            if ran.is_empty() && rollback.is_none() && !binds {
                continue;
            }
            let passed = ran.iter().filter(|r| r.error.is_none()).count() as u32;
            found.push(TrialInfo {
                job,
                batches_passed: passed,
                probation_batches: live.probation,
                rolled_back: rollback.map(|(batch, r)| RolledBack {
                    batch,
                    error: r.error,
                    to_version: r.to_version,
                }),
            });
        }
        found
    }

    /// Every rollback of a version on trial in the running jobs of every tenant:
    /// `(tenant, job, batch, rollback)`.
    pub fn rollbacks(&self) -> Vec<(String, String, u64, Rollback)> {
        let live: Vec<((String, String), Arc<Live>)> = lock(&self.inner.jobs)
            .iter()
            .filter_map(|(k, e)| e.live.clone().map(|l| (k.clone(), l)))
            .collect();
        live.into_iter()
            .flat_map(|((tenant, job), l)| {
                l.handle
                    .rollbacks()
                    .into_iter()
                    .map(move |(batch, r)| (tenant.clone(), job.clone(), batch, r))
            })
            .collect()
    }

    /// `tenant`'s `job`: its state, the UDF versions it uses and its last batches.
    pub fn status(&self, tenant: &str, job: &str) -> Result<JobInfo, LookupError> {
        lock(&self.inner.jobs)
            .get(&(tenant.to_string(), job.to_string()))
            .map(|e| e.info(STATUS_BATCHES))
            .ok_or_else(|| LookupError::NotFound { job: shown(job) })
    }

    /// Stop `tenant`'s `job`: gracefully (the received records are sealed and every batch in
    /// flight finishes) or not (the batches not yet running are abandoned; they run again
    /// from the checkpoint if the job is submitted again). The table records it stopped
    /// first, so a restart of the host does not start it again. Waits up to [`STOP_WAIT`]
    /// for the job to end; stopping a job that is not running changes nothing.
    pub fn stop(&self, tenant: &str, job: &str, graceful: bool) -> Result<JobInfo, StopError> {
        let k = (tenant.to_string(), job.to_string());
        let live = {
            let mut jobs = lock(&self.inner.jobs);
            let entry = jobs
                .get_mut(&k)
                .ok_or_else(|| LookupError::NotFound { job: shown(job) })?;
            match (&entry.live, entry.state) {
                (Some(live), JobState::Running | JobState::Stopping) => {
                    let mut record = entry.record.clone();
                    record.state = JobState::Stopped;
                    record.error = None;
                    self.inner.put(&record)?;
                    entry.record = record;
                    entry.state = JobState::Stopping;
                    live.stop_requested.store(true, Ordering::Release);
                    live.clone()
                }
                _ => return Ok(entry.info(STATUS_BATCHES)),
            }
        };
        if graceful {
            live.handle.stop();
        } else {
            live.handle.abort();
        }
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            let info = self.status(tenant, job)?;
            if info.state != JobState::Stopping || Instant::now() >= deadline {
                return Ok(info);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The router serving `POST /ingest/<source>` for `tenant`'s `job`'s http `source`: the
    /// job's own endpoint (answers and ack-after-write-ahead-log as a standalone source; `503`
    /// once the job has ended).
    pub fn ingest_router(
        &self,
        tenant: &str,
        job: &str,
        source: &str,
    ) -> Result<axum::Router, LookupError> {
        let jobs = lock(&self.inner.jobs);
        let entry = jobs
            .get(&(tenant.to_string(), job.to_string()))
            .ok_or_else(|| LookupError::NotFound { job: shown(job) })?;
        let no_ingest = || LookupError::NoIngest {
            job: shown(job),
            source_name: shown(source),
            available: entry.ingest.clone(),
        };
        if !entry.ingest.iter().any(|s| s == source) {
            return Err(no_ingest());
        }
        entry
            .live
            .as_ref()
            .and_then(|l| l.router.clone())
            .ok_or_else(no_ingest)
    }

    /// Stop every running job gracefully without recording them stopped (they resume when
    /// the host starts again), and wait up to `wait` for them to end. For the host's own
    /// shutdown.
    pub fn shutdown(&self, wait: Duration) {
        self.inner.shutting_down.store(true, Ordering::Release);
        let live: Vec<Arc<Live>> = lock(&self.inner.jobs)
            .values()
            .filter_map(|e| e.live.clone())
            .collect();
        for l in &live {
            l.handle.stop();
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline
            && lock(&self.inner.jobs)
                .values()
                .any(|e| matches!(e.state, JobState::Running | JobState::Stopping))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Entry {
    fn info(&self, batches: usize) -> JobInfo {
        let lag = self
            .live
            .as_ref()
            .map(|live| live.handle.lag())
            .unwrap_or_default();
        let (udfs, reports) = match &self.live {
            Some(live) => (
                live.udfs
                    .snapshot()
                    .iter()
                    .map(|(_, b)| UdfInUse {
                        spec: b.function.spec(),
                        version: b.version,
                        hash: b.hash().to_string(),
                    })
                    .collect(),
                live.handle.reports(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let mut udfs: Vec<UdfInUse> = udfs;
        udfs.sort_by(|a, b| a.spec.cmp(&b.spec));
        udfs.dedup();
        JobInfo {
            name: self.record.name.clone(),
            state: self.state,
            error: self.error.clone(),
            submitted_at_ms: self.record.submitted_at_ms,
            ingest: self.ingest.clone(),
            udfs,
            batches_done: reports.len() as u64,
            batches: reports[reports.len().saturating_sub(batches)..]
                .iter()
                .map(BatchInfo::from)
                .collect(),
            lag,
        }
    }
}

impl Inner {
    fn job_dir(&self, tenant: &str, job: &str) -> PathBuf {
        self.config
            .data_dir
            .join("tenants")
            .join(tenant)
            .join("jobs")
            .join(job)
    }

    fn records(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut records = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|source| StoreError::Io {
                path: self.db_path.clone(),
                what: "read",
                source,
            })?;
            let bad = |problem: String| StoreError::Record {
                path: self.db_path.clone(),
                key: guest_text::sanitize(&String::from_utf8_lossy(&k), 200),
                problem,
            };
            let record = parse_record(&v).map_err(bad)?;
            if key(&record.tenant, &record.name) != *k {
                return Err(bad("its key does not match its tenant and job".into()));
            }
            records.push(record);
        }
        Ok(records)
    }

    fn put(&self, record: &JobRecord) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.db_path.clone(),
            what: "written",
            source,
        };
        // A JobRecord is strings and numbers: serialising it cannot fail.
        let value = serde_json::to_vec(record).unwrap_or_default();
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_opt(key(&record.tenant, &record.name), value, &options)
            .map_err(io)
    }

    /// Check and start one job; the caller holds `submitting`.
    fn start(
        self: &Arc<Self>,
        tenant: &str,
        text: &str,
        submitted_at_ms: u64,
    ) -> Result<JobInfo, SubmitError> {
        if !udf::valid_name(tenant) {
            return Err(udf::NameError {
                what: "tenant",
                name: shown(tenant),
                bytes: tenant.len(),
            }
            .into());
        }
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(SubmitError::TooLarge { size: text.len() });
        }
        let name = match toml::from_str::<PeekName>(text) {
            Ok(peek) => peek.job.name,
            // The strict parse says what is wrong, with its line.
            Err(_) => {
                return Err(
                    manifest::parse(text, Path::new(MANIFEST_FILE), Path::new(""))
                        .map(|_| ManifestError::Invalid {
                            path: PathBuf::from(MANIFEST_FILE),
                            line: 1,
                            message: "[job]: `name` is missing".into(),
                        })
                        .unwrap_or_else(|e| e)
                        .into(),
                );
            }
        };
        if !valid_job_name(&name) {
            return Err(SubmitError::BadName { name: shown(&name) });
        }
        let k = (tenant.to_string(), name.clone());
        let limits = (self.config.limits)(tenant);
        {
            let jobs = lock(&self.jobs);
            if jobs
                .get(&k)
                .is_some_and(|e| matches!(e.state, JobState::Running | JobState::Stopping))
            {
                return Err(SubmitError::AlreadyRunning { job: name });
            }
            if let Some(max_jobs) = limits.max_jobs {
                let running = jobs
                    .iter()
                    .filter(|((t, _), e)| {
                        t == tenant && matches!(e.state, JobState::Running | JobState::Stopping)
                    })
                    .count();
                if running >= max_jobs {
                    return Err(SubmitError::Quota {
                        tenant: tenant.to_string(),
                        running,
                        max_jobs,
                    });
                }
            }
        }
        let dir = self.job_dir(tenant, &name);
        // A refused first submit leaves no folder behind.
        let fresh = !lock(&self.jobs).contains_key(&k);
        let Launched {
            job,
            udfs,
            probation,
            ingest,
        } = match self.launch(tenant, text, &dir, limits) {
            Ok(started) => started,
            Err(e) => {
                if fresh {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
        };
        let record = JobRecord {
            format: RECORD_FORMAT,
            tenant: tenant.to_string(),
            name: name.clone(),
            manifest: text.to_string(),
            state: JobState::Running,
            error: None,
            submitted_at_ms,
        };
        if let Err(e) = self.put(&record) {
            job.abort();
            let _ = job.wait();
            return Err(e.into());
        }
        let live = Arc::new(Live {
            handle: job.handle(),
            router: job.ingest_router(),
            udfs,
            probation,
            stop_requested: AtomicBool::new(false),
        });
        let entry = Entry {
            record,
            state: JobState::Running,
            error: None,
            ingest,
            live: Some(live.clone()),
        };
        let info = entry.info(STATUS_BATCHES);
        lock(&self.jobs).insert(k.clone(), entry);
        let inner = self.clone();
        let waited = live.clone();
        let waiter = std::thread::Builder::new()
            .name(format!("sluice-wait-{name}"))
            .spawn(move || {
                let result = job.wait();
                inner.ended(&k, &waited, result);
            });
        if let Err(e) = waiter {
            // Without a thread to wait for it the job would never be seen to end.
            live.handle.abort();
            tracing::error!(tenant = %tenant, job = %name, "cannot start a thread to wait for the job: {e}");
        }
        tracing::info!(tenant = %tenant, job = %name, "job started");
        Ok(info)
    }

    /// Write the manifest into the job's folder, parse it there (checkpoint and state forced
    /// inside the folder), check it stays there, plan it with the tenant's UDFs and start it.
    fn launch(
        &self,
        tenant: &str,
        text: &str,
        dir: &Path,
        limits: JobLimits,
    ) -> Result<Launched, SubmitError> {
        std::fs::create_dir_all(dir).map_err(|source| SubmitError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(MANIFEST_FILE);
        write_atomic(dir, &path, text.as_bytes()).map_err(|source| SubmitError::Io {
            path: path.clone(),
            source,
        })?;
        let checkpoint = dir.join(CHECKPOINT_DIR);
        let mut spec = manifest::load_with(&path, Some(&checkpoint))?;
        spec.state_dir = Some(checkpoint.join("state"));
        spec.tenant = tenant.to_string();
        if let Some(max) = limits.max_state_bytes {
            spec.max_state_bytes = spec.max_state_bytes.min(max);
        }
        check_confined(&spec, dir)?;
        let ingest: Vec<String> = spec
            .sources
            .iter()
            .filter(|s| matches!(s.kind, SourceKind::Http { .. }))
            .map(|s| s.name.clone())
            .collect();
        let registry = self.config.registry.clone();
        let plan =
            plan::plan(spec, &registry.resolver(tenant), Some(&path)).map_err(SubmitError::Plan)?;
        let (udfs, probation) = (plan.udfs.clone(), plan.probation_batches);
        let job = Job::start(
            plan,
            JobOptions {
                core: Some(self.config.core.clone()),
                mount_http: true,
                versions: Some(Versions(Arc::new(TenantVersions {
                    registry: registry.clone(),
                    tenant: tenant.to_string(),
                }))),
                ..JobOptions::default()
            },
            self.config.metrics.clone(),
        )
        .map_err(|e| SubmitError::Start(Box::new(e)))?;
        Ok(Launched {
            job,
            udfs,
            probation,
            ingest,
        })
    }

    /// Record how a job ended.
    fn ended(
        &self,
        k: &(String, String),
        live: &Arc<Live>,
        result: Result<crate::engine::JobSummary, JobError>,
    ) {
        let requested = live.stop_requested.load(Ordering::Acquire);
        let shutting_down = self.shutting_down.load(Ordering::Acquire);
        let (state, error) = match result {
            Ok(_) => (JobState::Stopped, None),
            Err(JobError::Aborted { .. }) if requested || shutting_down => {
                (JobState::Stopped, None)
            }
            Err(e) => (JobState::Failed, Some(e.to_string())),
        };
        let mut jobs = lock(&self.jobs);
        let Some(entry) = jobs.get_mut(k) else { return };
        if !entry.live.as_ref().is_some_and(|l| Arc::ptr_eq(l, live)) {
            return;
        }
        entry.state = state;
        entry.error = error.clone();
        tracing::info!(tenant = %k.0, job = %k.1, "job {state}{}", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default());
        // A shutdown leaves the record running (the job resumes when the host starts); a
        // requested stop was recorded before it was asked for.
        if state == JobState::Failed || (!requested && !shutting_down) {
            let mut record = entry.record.clone();
            record.state = state;
            record.error = error;
            match self.put(&record) {
                Ok(()) => entry.record = record,
                Err(e) => tracing::error!(tenant = %k.0, job = %k.1, "{e}"),
            }
        }
    }
}

/// A stored record: its format first (so a newer format is named as such), then its fields.
fn parse_record(bytes: &[u8]) -> Result<JobRecord, String> {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    // Only the format, read before the record's own strict (`deny_unknown_fields`) parse.
    let format: Format =
        serde_json::from_slice(bytes).map_err(|e| format!("not a job record: {e}"))?;
    if format.format != RECORD_FORMAT {
        return Err(format!(
            "format {} (this host reads {RECORD_FORMAT})",
            format.format
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("not a job record: {e}"))
}

/// Write `path` (in `dir`) through a temporary file, fsynced and renamed into place.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Refuse what a job on a shared host may not do: paths outside its folder, socket sources and
/// Kafka sinks (a shared host opens no connection to an address a tenant chooses).
fn check_confined(spec: &JobSpec, dir: &Path) -> Result<(), SubmitError> {
    let inside = |what: String, path: &Path| {
        if path.starts_with(dir) && !path.components().any(|c| matches!(c, Component::ParentDir)) {
            Ok(())
        } else {
            Err(SubmitError::OutsideJobFolder {
                what,
                path: path.to_path_buf(),
                folder: dir.to_path_buf(),
            })
        }
    };
    for source in &spec.sources {
        match &source.kind {
            SourceKind::Directory { path, .. } => {
                inside(format!("source \"{}\" path", source.name), path)?;
            }
            SourceKind::Socket { .. } => {
                return Err(SubmitError::NotAllowed {
                    what: format!("socket source \"{}\"", source.name),
                    instead: "send records through an `http` source instead (POST /api/v1/jobs/<job>/ingest/<source>)",
                });
            }
            // A shared host opens no connection a tenant chooses (as for kafka sinks): an
            // allowlist of brokers set by the host's operator is not built yet.
            SourceKind::Kafka(_) => {
                return Err(SubmitError::NotAllowed {
                    what: format!("kafka source \"{}\"", source.name),
                    instead: "run the job with `host run`, or send its records through an `http` source (POST /api/v1/jobs/<job>/ingest/<source>)",
                });
            }
            SourceKind::Http { .. } | SourceKind::Queue => {}
        }
    }
    for stream in &spec.streams {
        if let Some(path) = &stream.path {
            inside(format!("stream \"{}\" path", stream.name), path)?;
        }
        if let Some(path) = &stream.initial_state {
            inside(format!("stream \"{}\" initial_state", stream.name), path)?;
        }
    }
    for sink in &spec.sinks {
        match &sink.kind {
            SinkKind::TextFiles { prefix, .. } => {
                inside(
                    format!("text_files sink of \"{}\" prefix", sink.input),
                    prefix,
                )?;
            }
            SinkKind::Kafka(_) => {
                return Err(SubmitError::NotAllowed {
                    what: format!("kafka sink of \"{}\"", sink.input),
                    instead: "run the job with `host run`, or write its output with a `text_files` or `udf` sink",
                });
            }
            SinkKind::Print { .. } | SinkKind::Udf { .. } | SinkKind::Native { .. } => {}
        }
    }
    Ok(())
}

/// A tenant's view of the registry that a job keeps (to find the version a batch was sealed
/// with when it runs again after a restart).
struct TenantVersions {
    registry: Arc<udf::Registry>,
    tenant: String,
}

impl udf::UdfResolver for TenantVersions {
    fn component(&self, name: &str) -> Result<Arc<udf::UdfComponent>, udf::ComponentError> {
        self.registry.resolver(&self.tenant).component(name)
    }

    fn resolve(&self, name: &str) -> Result<udf::Resolved, udf::ComponentError> {
        self.registry.resolver(&self.tenant).resolve(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_cannot_leave_the_jobs_folder() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!valid_job_name(bad), "{bad:?}");
        }
        for good in ["upper", "a.b-c_d", "x1", &"x".repeat(64)] {
            assert!(valid_job_name(good), "{good:?}");
        }
    }

    #[test]
    fn records_are_versioned() {
        let record = JobRecord {
            format: RECORD_FORMAT,
            tenant: "t".into(),
            name: "j".into(),
            manifest: "[job]\nname = \"j\"\n".into(),
            state: JobState::Stopped,
            error: None,
            submitted_at_ms: 7,
        };
        let bytes = serde_json::to_vec(&record).expect("to JSON");
        assert_eq!(parse_record(&bytes), Ok(record.clone()));
        let mut newer = serde_json::to_value(&record).expect("to JSON");
        newer["format"] = 2.into();
        newer["more"] = true.into();
        let newer = serde_json::to_vec(&newer).expect("to JSON");
        let error = parse_record(&newer).expect_err("a newer format");
        assert!(error.contains("format 2"), "{error}");
        let mut unknown = serde_json::to_value(&record).expect("to JSON");
        unknown["more"] = true.into();
        let unknown = serde_json::to_vec(&unknown).expect("to JSON");
        assert!(parse_record(&unknown).is_err());
        assert!(parse_record(b"{\"format\": 1").is_err());
    }

    #[test]
    fn manifests_stay_in_the_job_folder() {
        let dir = Path::new("/data/tenants/t/jobs/j");
        let spec = |prefix: &str| {
            let text = format!(
                "[job]\nname = \"j\"\n[[sources]]\nname = \"d\"\nkind = \"directory\"\npath = \"in\"\n[[sinks]]\nkind = \"text_files\"\ninput = \"d\"\nprefix = \"{prefix}\"\n"
            );
            manifest::parse(&text, Path::new("job.toml"), dir).expect("a manifest")
        };
        assert!(check_confined(&spec("out/x"), dir).is_ok());
        for outside in [
            "../x",
            "out/../../x",
            "/tmp/x",
            "/data/tenants/t/jobs/j/../k/x",
        ] {
            assert!(
                matches!(
                    check_confined(&spec(outside), dir),
                    Err(SubmitError::OutsideJobFolder { .. })
                ),
                "{outside}"
            );
        }
        let socket = manifest::parse(
            "[job]\nname = \"j\"\n[[sources]]\nname = \"s\"\nkind = \"socket\"\nhost = \"example.com\"\nport = 1\n[[sinks]]\nkind = \"print\"\ninput = \"s\"\n",
            Path::new("job.toml"),
            dir,
        )
        .expect("a manifest");
        assert!(matches!(
            check_confined(&socket, dir),
            Err(SubmitError::NotAllowed { .. })
        ));
        let kafka = manifest::parse(
            "[job]\nname = \"j\"\n[[sources]]\nname = \"s\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n[[sinks]]\nkind = \"kafka\"\ninput = \"s\"\nbootstrap = \"example.com:9092\"\ntopic = \"t\"\n",
            Path::new("job.toml"),
            dir,
        )
        .expect("a manifest");
        let refused = check_confined(&kafka, dir).expect_err("a kafka sink is refused");
        assert_eq!(
            refused.to_string(),
            "kafka sink of \"s\" is not available on a shared host"
        );
        assert!(refused.hint().contains("host run"), "{}", refused.hint());
        let source = manifest::parse(
            "[job]\nname = \"j\"\n[[sources]]\nname = \"k\"\nkind = \"kafka\"\nbootstrap = \"example.com:9092\"\ntopics = [\"t\"]\n[[sinks]]\nkind = \"print\"\ninput = \"k\"\n",
            Path::new("job.toml"),
            dir,
        )
        .expect("a manifest");
        let refused = check_confined(&source, dir).expect_err("a kafka source is refused");
        assert_eq!(
            refused.to_string(),
            "kafka source \"k\" is not available on a shared host"
        );
        assert!(refused.hint().contains("http"), "{}", refused.hint());
    }
}
