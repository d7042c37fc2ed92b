//! The Rust API: a [`StreamingContext`] builds the same [`JobSpec`] a manifest does, through
//! Spark-shaped [`DStream`] methods, and runs it through the same planner and engine.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_host::engine::StreamingContext;
//!
//! let ctx = StreamingContext::new("wordcount", Duration::from_millis(500), "dist/udfs")?;
//! let lines = ctx.text_file_stream("lines", "in");
//! let counts = lines
//!     .flat_map("text#split_words")
//!     .map("text#pair_one")
//!     .reduce_by_key("aggregates#sum_i64");
//! counts.print(20);
//! let summary = ctx.run_until_idle()?;
//! println!("{} records", summary.records_in);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::job::{Job, JobError, JobOptions};
use super::stats::JobSummary;
use crate::metrics::Registry;
use crate::plan::{
    self, Builtin, CheckpointSpec, Codec, ErrorPolicy, Handles, JobSpec, OutputFormat, OutputMode,
    PlanErrors, SinkKind, SinkSpec, SourceKind, SourceSpec, Start, StaticFormat, StreamSpec,
};
use crate::sinks::{NativeSink, SinkBatch};
use crate::sources::{QueueSender, queue};
use crate::udf::{RuntimeConfig, RuntimeError, UdfDirectory, UdfRuntime};

/// Why a context could not start or run its job.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The UDF runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The job did not check out.
    #[error(transparent)]
    Plan(#[from] PlanErrors),
    /// The job failed while running.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Builds a job in Rust: sources, streams, sinks, then [`start`](Self::start) or
/// [`run_until_idle`](Self::run_until_idle).
pub struct StreamingContext {
    spec: Arc<Mutex<JobSpec>>,
    /// Queue receivers and native sinks: runtime handles the spec names but cannot hold.
    handles: Arc<Mutex<Handles>>,
    udfs: PathBuf,
    runtime: Arc<UdfRuntime>,
    registry: Arc<Registry>,
}

/// What reduces: a reducer UDF (`"component#function"`) or a [`Builtin`].
#[derive(Debug, Clone)]
pub enum By {
    /// `component#function`.
    Udf(String),
    /// A reducer the host runs.
    Builtin(Builtin),
}

impl From<&str> for By {
    fn from(udf: &str) -> Self {
        By::Udf(udf.to_string())
    }
}

impl From<Builtin> for By {
    fn from(b: Builtin) -> Self {
        By::Builtin(b)
    }
}

impl By {
    fn apply(self, s: &mut StreamSpec) {
        match self {
            By::Udf(u) => s.udf = Some(u),
            By::Builtin(b) => s.builtin = Some(b),
        }
    }
}

/// Spark's `StateSpec`: the options of `update_state_by_key` and `map_with_state`.
#[derive(Debug, Clone, Default)]
pub struct StateSpec {
    /// Keys idle this long get one last call marked as timing out (map_with_state only).
    pub timeout: Option<Duration>,
    /// Initial states: a file of `KEY<TAB>STATE` lines, or JSON lines.
    pub initial_state: Option<(PathBuf, StaticFormat)>,
    /// Partitions the state is spread over (default: the job's).
    pub partitions: Option<usize>,
}

/// The options of an event-time window.
#[derive(Debug, Clone)]
pub struct EventTimeSpec {
    /// Window length.
    pub window: Duration,
    /// Slide (default: the window length).
    pub slide: Option<Duration>,
    /// How far the watermark trails the largest event time seen.
    pub watermark: Duration,
    /// When windows are written.
    pub mode: OutputMode,
}

/// A stream of the job being built; its methods add operators and sinks.
#[derive(Clone)]
pub struct DStream {
    name: String,
    spec: Arc<Mutex<JobSpec>>,
    handles: Arc<Mutex<Handles>>,
}

impl StreamingContext {
    /// A context for a job named `name` with UDF components in `udfs` (`<component>.wasm`),
    /// and a UDF runtime with default limits.
    pub fn new(
        name: &str,
        batch_interval: Duration,
        udfs: impl AsRef<Path>,
    ) -> Result<Self, ContextError> {
        let registry = Arc::new(Registry::default());
        let runtime = UdfRuntime::new(RuntimeConfig::default(), registry.clone())?;
        Ok(Self::with_runtime(
            name,
            batch_interval,
            udfs,
            Arc::new(runtime),
        ))
    }

    /// A context sharing an existing runtime (and its compiled components and metrics).
    pub fn with_runtime(
        name: &str,
        batch_interval: Duration,
        udfs: impl AsRef<Path>,
        runtime: Arc<UdfRuntime>,
    ) -> Self {
        Self {
            spec: Arc::new(Mutex::new(JobSpec::new(name, batch_interval))),
            handles: Arc::default(),
            udfs: udfs.as_ref().to_path_buf(),
            registry: runtime.registry().clone(),
            runtime,
        }
    }

    fn edit<R>(&self, f: impl FnOnce(&mut JobSpec) -> R) -> R {
        f(&mut self.spec.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Partitions per batch (default: one per core).
    pub fn partitions(self, n: usize) -> Self {
        self.edit(|s| s.partitions = n);
        self
    }

    /// Seal a batch early when a source holds `n` records.
    pub fn max_batch_records(self, n: usize) -> Self {
        self.edit(|s| s.max_batch_records = Some(n));
        self
    }

    /// What a failed UDF call does (default: fail the job).
    pub fn on_udf_error(self, policy: ErrorPolicy) -> Self {
        self.edit(|s| s.on_udf_error = policy);
        self
    }

    /// Where stateful streams keep their state (RocksDB). Needed by windows with an inverse,
    /// state operators and event-time windows.
    pub fn state_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_path_buf();
        self.edit(|s| s.state_dir = Some(dir));
        self
    }

    /// Checkpoint the job (Spark's `ssc.checkpoint(dir)`): metadata every batch, the state every
    /// `checkpoint.interval`, receivers' write-ahead logs; a job started on a folder that holds
    /// a checkpoint resumes from it. The state lives in `dir/state` unless
    /// [`state_dir`](Self::state_dir) says otherwise.
    pub fn checkpoint(self, checkpoint: CheckpointSpec) -> Self {
        self.edit(|s| s.checkpoint = Some(checkpoint));
        self
    }

    /// A reliable receiver (`POST /ingest/<name>` on `address`), answered once the records are
    /// in the write-ahead log; needs a [`checkpoint`](Self::checkpoint).
    pub fn http_ingest_stream(&self, name: &str, address: &str) -> DStream {
        self.source(
            name,
            SourceKind::Http {
                address: address.to_string(),
                max_request_bytes: crate::plan::spec::DEFAULT_MAX_REQUEST_BYTES,
                header_timeout: None,
                body_timeout: None,
                max_connections: None,
                max_inflight_bytes: None,
            },
        )
    }

    /// The most state the job may hold (default 1 GiB); past it the job fails.
    pub fn max_state_bytes(self, bytes: u64) -> Self {
        self.edit(|s| s.max_state_bytes = bytes);
        self
    }

    fn source(&self, name: &str, kind: SourceKind) -> DStream {
        self.edit(|s| {
            s.sources.push(SourceSpec {
                name: name.to_string(),
                kind,
                line: None,
                max_rate: None,
                initial_rate: None,
            })
        });
        DStream {
            name: name.to_string(),
            spec: self.spec.clone(),
            handles: self.handles.clone(),
        }
    }

    /// Spark's `socketTextStream`.
    pub fn socket_text_stream(&self, name: &str, host: &str, port: u16) -> DStream {
        self.source(
            name,
            SourceKind::Socket {
                host: host.to_string(),
                port,
                reconnect_delay: Duration::from_secs(1),
                max_line_bytes: None,
            },
        )
    }

    /// Spark's `textFileStream`, reading files already there too.
    pub fn text_file_stream(&self, name: &str, dir: impl AsRef<Path>) -> DStream {
        self.directory_stream(name, dir, Start::Earliest, None)
    }

    /// A directory source with every option.
    pub fn directory_stream(
        &self,
        name: &str,
        dir: impl AsRef<Path>,
        start: Start,
        max_files_per_batch: Option<usize>,
    ) -> DStream {
        self.source(
            name,
            SourceKind::Directory {
                path: dir.as_ref().to_path_buf(),
                start,
                max_files_per_batch,
            },
        )
    }

    /// Spark's `queueStream`: push batches through the returned sender; dropping it ends the
    /// source once the queue is empty.
    pub fn queue_stream(&self, name: &str) -> (DStream, QueueSender) {
        let (sender, receiver) = queue();
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queues
            .insert(name.to_string(), receiver);
        (self.source(name, SourceKind::Queue), sender)
    }

    /// The job as built so far.
    pub fn spec(&self) -> JobSpec {
        self.edit(|s| s.clone())
    }

    /// Plan the job and start it; it runs until stopped or failed.
    pub fn start(&self, options: JobOptions) -> Result<Job, ContextError> {
        let udfs = UdfDirectory::new(self.udfs.clone(), &self.runtime);
        let handles = self
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let plan = plan::plan_with(self.spec(), handles, &udfs, None)?;
        Ok(Job::start(plan, options, self.registry.clone())?)
    }

    /// Run until every source is exhausted and every batch is done.
    pub fn run_until_idle(&self) -> Result<JobSummary, ContextError> {
        let job = self.start(JobOptions {
            until_idle: true,
            ..JobOptions::default()
        })?;
        Ok(job.wait()?)
    }

    /// The metrics of this context's jobs and UDFs.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The UDF runtime this context's jobs call through: a component to bind into a running
    /// job ([`Job::rebind_udf`]) must be loaded by it.
    pub fn runtime(&self) -> &Arc<UdfRuntime> {
        &self.runtime
    }
}

impl DStream {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn derive(&self, op: &str, inputs: Vec<String>, edit: impl FnOnce(&mut StreamSpec)) -> DStream {
        let mut spec = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        let n = spec.streams.len() + spec.sources.len() + 1;
        let mut stream = StreamSpec::new(format!("{}-{n}", op), op, inputs);
        edit(&mut stream);
        let name = stream.name.clone();
        spec.streams.push(stream);
        DStream {
            name,
            spec: self.spec.clone(),
            handles: self.handles.clone(),
        }
    }

    fn with_udf(&self, op: &str, udf: &str) -> DStream {
        self.derive(op, vec![self.name.clone()], |s| {
            s.udf = Some(udf.to_string())
        })
    }

    fn host_op(&self, op: &str) -> DStream {
        self.derive(op, vec![self.name.clone()], |_| {})
    }

    fn two(&self, op: &str, other: &DStream) -> DStream {
        self.derive(op, vec![self.name.clone(), other.name.clone()], |_| {})
    }

    /// Rename this stream (names show in logs, stats and errors).
    pub fn named(self, name: &str) -> DStream {
        let mut spec = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        for s in &mut spec.streams {
            if s.name == self.name {
                s.name = name.to_string();
            }
            for input in &mut s.inputs {
                if *input == self.name {
                    *input = name.to_string();
                }
            }
        }
        for sink in &mut spec.sinks {
            if sink.input == self.name {
                sink.input = name.to_string();
            }
        }
        DStream {
            name: name.to_string(),
            spec: self.spec.clone(),
            handles: self.handles.clone(),
        }
    }

    /// Set the codecs of this stream's keys and values (how sinks show and decode them).
    pub fn codecs(self, key: Codec, value: Codec) -> DStream {
        let mut spec = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = spec.streams.iter_mut().find(|s| s.name == self.name) {
            s.key_codec = Some(key);
            s.value_codec = Some(value);
        }
        drop(spec);
        self
    }

    /// One record out per record in.
    pub fn map(&self, udf: &str) -> DStream {
        self.with_udf("map", udf)
    }
    /// Any number of records out per record in.
    pub fn flat_map(&self, udf: &str) -> DStream {
        self.with_udf("flat_map", udf)
    }
    /// The records the UDF keeps.
    pub fn filter(&self, udf: &str) -> DStream {
        self.with_udf("filter", udf)
    }
    /// A transform UDF per partition.
    pub fn map_partitions(&self, udf: &str) -> DStream {
        self.with_udf("map_partitions", udf)
    }
    /// A transform UDF over the whole batch.
    pub fn transform(&self, udf: &str) -> DStream {
        self.with_udf("transform", udf)
    }
    /// This stream's records and `others'`.
    pub fn union(&self, others: &[&DStream]) -> DStream {
        let inputs = std::iter::once(self.name.clone())
            .chain(others.iter().map(|o| o.name.clone()))
            .collect();
        self.derive("union", inputs, |_| {})
    }
    /// The same records over `n` partitions.
    pub fn repartition(&self, n: usize) -> DStream {
        self.derive("repartition", vec![self.name.clone()], |s| {
            s.partitions = Some(n)
        })
    }
    /// One record per batch: the record count.
    pub fn count(&self) -> DStream {
        self.host_op("count")
    }
    /// Per distinct value, its count.
    pub fn count_by_value(&self) -> DStream {
        self.host_op("count_by_value")
    }
    /// The values reduced to one per batch.
    pub fn reduce(&self, by: impl Into<By>) -> DStream {
        self.reducing("reduce", by.into(), |_| {})
    }
    /// Per key, the values reduced.
    pub fn reduce_by_key(&self, by: impl Into<By>) -> DStream {
        self.reducing("reduce_by_key", by.into(), |_| {})
    }

    fn reducing(&self, op: &str, by: By, edit: impl FnOnce(&mut StreamSpec)) -> DStream {
        self.derive(op, vec![self.name.clone()], |s| {
            by.apply(s);
            edit(s);
        })
    }

    fn windowed(&self, op: &str, window: Duration, slide: Duration) -> DStream {
        self.derive(op, vec![self.name.clone()], |s| {
            s.window = Some(window);
            s.slide = Some(slide);
        })
    }

    /// The records of the last `window` of batches, every `slide`.
    pub fn window(&self, window: Duration, slide: Duration) -> DStream {
        self.windowed("window", window, slide)
    }
    /// The number of records in each window.
    pub fn count_by_window(&self, window: Duration, slide: Duration) -> DStream {
        self.windowed("count_by_window", window, slide)
    }
    /// Each window's values reduced to one.
    pub fn reduce_by_window(
        &self,
        by: impl Into<By>,
        window: Duration,
        slide: Duration,
    ) -> DStream {
        self.reducing("reduce_by_window", by.into(), |s| {
            s.window = Some(window);
            s.slide = Some(slide);
        })
    }
    /// Per key, each window's values reduced, recomputed from per-batch partials.
    pub fn reduce_by_key_and_window(
        &self,
        by: impl Into<By>,
        window: Duration,
        slide: Duration,
    ) -> DStream {
        self.reducing("reduce_by_key_and_window", by.into(), |s| {
            s.window = Some(window);
            s.slide = Some(slide);
        })
    }
    /// Per key, each window's values, updated incrementally with the reducer's inverse (state
    /// in RocksDB); `filter` is Spark's `filterFunc` over the output.
    pub fn reduce_by_key_and_window_inv(
        &self,
        by: impl Into<By>,
        window: Duration,
        slide: Duration,
        filter: Option<&str>,
    ) -> DStream {
        self.reducing("reduce_by_key_and_window", by.into(), |s| {
            s.window = Some(window);
            s.slide = Some(slide);
            s.inverse = Some(true);
            s.filter = filter.map(String::from);
        })
    }
    /// Per distinct value, its count in each window.
    pub fn count_by_value_and_window(&self, window: Duration, slide: Duration) -> DStream {
        self.windowed("count_by_value_and_window", window, slide)
    }
    /// Per key, a JSON array of each window's values.
    pub fn group_by_key_and_window(&self, window: Duration, slide: Duration) -> DStream {
        self.windowed("group_by_key_and_window", window, slide)
    }

    fn with_state(&self, op: &str, by: By, spec: StateSpec) -> DStream {
        self.reducing(op, by, |s| {
            s.timeout = spec.timeout;
            s.partitions = spec.partitions;
            if let Some((path, format)) = spec.initial_state {
                s.initial_state = Some(path);
                s.format = Some(format);
            }
        })
    }
    /// Spark's `updateStateByKey`: the stream is the whole state after every batch.
    pub fn update_state_by_key(&self, by: impl Into<By>, spec: StateSpec) -> DStream {
        self.with_state("update_state_by_key", by.into(), spec)
    }
    /// Spark's `mapWithState`: the stream is what the updater emits.
    pub fn map_with_state(&self, udf: &str, spec: StateSpec) -> DStream {
        self.with_state("map_with_state", By::Udf(udf.to_string()), spec)
    }
    /// The whole state of this `map_with_state` stream after every batch.
    pub fn state_snapshots(&self) -> DStream {
        self.host_op("state_snapshots")
    }
    /// An event-time window aggregation with a watermark.
    pub fn event_time_window(&self, by: impl Into<By>, spec: EventTimeSpec) -> DStream {
        self.reducing("event_time_window", by.into(), |s| {
            s.window = Some(spec.window);
            s.slide = spec.slide;
            s.watermark = Some(spec.watermark);
            s.output_mode = Some(spec.mode);
        })
    }
    /// Per key, a JSON array of the values.
    pub fn group_by_key(&self) -> DStream {
        self.host_op("group_by_key")
    }
    /// Inner join with `other` by key.
    pub fn join(&self, other: &DStream) -> DStream {
        self.two("join", other)
    }
    /// Left outer join.
    pub fn left_outer_join(&self, other: &DStream) -> DStream {
        self.two("left_outer_join", other)
    }
    /// Right outer join.
    pub fn right_outer_join(&self, other: &DStream) -> DStream {
        self.two("right_outer_join", other)
    }
    /// Full outer join.
    pub fn full_outer_join(&self, other: &DStream) -> DStream {
        self.two("full_outer_join", other)
    }
    /// Cogroup with `other`.
    pub fn cogroup(&self, other: &DStream) -> DStream {
        self.two("cogroup", other)
    }
    /// Join with a static data set from `path` (`inner` or `left_outer`).
    pub fn join_static(
        &self,
        path: impl AsRef<Path>,
        format: StaticFormat,
        left_outer: bool,
    ) -> DStream {
        let path = path.as_ref().to_path_buf();
        self.derive("join_static", vec![self.name.clone()], |s| {
            s.path = Some(path);
            s.format = Some(format);
            s.how = Some(if left_outer { "left_outer" } else { "inner" }.into());
        })
    }

    fn sink(&self, kind: SinkKind) {
        self.spec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sinks
            .push(SinkSpec {
                input: self.name.clone(),
                kind,
                line: None,
            });
    }

    /// Spark's `print(num)` to stdout.
    pub fn print(&self, num: usize) {
        self.sink(SinkKind::Print { num });
    }
    /// Spark's `saveAsTextFiles(prefix, suffix)`.
    pub fn save_as_text_files(
        &self,
        prefix: impl AsRef<Path>,
        suffix: Option<&str>,
        format: OutputFormat,
    ) {
        self.sink(SinkKind::TextFiles {
            prefix: prefix.as_ref().to_path_buf(),
            suffix: suffix.map(String::from),
            format,
        });
    }
    /// A foreach-batch sink UDF.
    pub fn foreach_udf(&self, udf: &str) {
        self.sink(SinkKind::Udf {
            udf: udf.to_string(),
        });
    }
    /// Spark's `foreachRDD`: a Rust closure gets every batch.
    pub fn foreach_batch(
        &self,
        f: impl Fn(&SinkBatch<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) {
        let name = {
            let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
            let name = format!("{}-native-{}", self.name, handles.sinks.len() + 1);
            handles
                .sinks
                .insert(name.clone(), Arc::new(NativeSink(Box::new(f))));
            name
        };
        self.sink(SinkKind::Native { name });
    }
}
