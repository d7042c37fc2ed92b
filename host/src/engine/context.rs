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
    self, Codec, ErrorPolicy, JobSpec, Op, OutputFormat, PlanErrors, SinkKind, SinkSpec,
    SourceKind, SourceSpec, Start, StaticFormat, StreamSpec, UdfDirectory,
};
use crate::sinks::{NativeSink, SinkBatch};
use crate::sources::{QueueSender, queue};
use crate::udf::{RuntimeConfig, RuntimeError, UdfRuntime};

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
    udfs: PathBuf,
    runtime: Arc<UdfRuntime>,
    registry: Arc<Registry>,
}

/// A stream of the job being built; its methods add operators and sinks.
#[derive(Clone)]
pub struct DStream {
    name: String,
    spec: Arc<Mutex<JobSpec>>,
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

    fn source(&self, name: &str, kind: SourceKind) -> DStream {
        self.edit(|s| {
            s.sources.push(SourceSpec {
                name: name.to_string(),
                kind,
                line: None,
            })
        });
        DStream {
            name: name.to_string(),
            spec: self.spec.clone(),
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
        (self.source(name, SourceKind::Queue(receiver)), sender)
    }

    /// The job as built so far.
    pub fn spec(&self) -> JobSpec {
        self.edit(|s| s.clone())
    }

    /// Plan the job and start it; it runs until stopped or failed.
    pub fn start(&self, options: JobOptions) -> Result<Job, ContextError> {
        let udfs = UdfDirectory {
            dir: self.udfs.clone(),
            runtime: &self.runtime,
        };
        let plan = plan::plan(self.spec(), &udfs, None)?;
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
}

impl DStream {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn derive(&self, op: Op, inputs: Vec<String>, edit: impl FnOnce(&mut StreamSpec)) -> DStream {
        let mut spec = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        let n = spec.streams.len() + spec.sources.len() + 1;
        let mut stream = StreamSpec::new(format!("{}-{n}", op.as_str()), op, inputs);
        edit(&mut stream);
        let name = stream.name.clone();
        spec.streams.push(stream);
        DStream {
            name,
            spec: self.spec.clone(),
        }
    }

    fn with_udf(&self, op: Op, udf: &str) -> DStream {
        self.derive(op, vec![self.name.clone()], |s| {
            s.udf = Some(udf.to_string())
        })
    }

    fn host_op(&self, op: Op) -> DStream {
        self.derive(op, vec![self.name.clone()], |_| {})
    }

    fn two(&self, op: Op, other: &DStream) -> DStream {
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
        self.with_udf(Op::Map, udf)
    }
    /// Any number of records out per record in.
    pub fn flat_map(&self, udf: &str) -> DStream {
        self.with_udf(Op::FlatMap, udf)
    }
    /// The records the UDF keeps.
    pub fn filter(&self, udf: &str) -> DStream {
        self.with_udf(Op::Filter, udf)
    }
    /// A transform UDF per partition.
    pub fn map_partitions(&self, udf: &str) -> DStream {
        self.with_udf(Op::MapPartitions, udf)
    }
    /// A transform UDF over the whole batch.
    pub fn transform(&self, udf: &str) -> DStream {
        self.with_udf(Op::Transform, udf)
    }
    /// This stream's records and `others'`.
    pub fn union(&self, others: &[&DStream]) -> DStream {
        let inputs = std::iter::once(self.name.clone())
            .chain(others.iter().map(|o| o.name.clone()))
            .collect();
        self.derive(Op::Union, inputs, |_| {})
    }
    /// The same records over `n` partitions.
    pub fn repartition(&self, n: usize) -> DStream {
        self.derive(Op::Repartition, vec![self.name.clone()], |s| {
            s.partitions = Some(n)
        })
    }
    /// One record per batch: the record count.
    pub fn count(&self) -> DStream {
        self.host_op(Op::Count)
    }
    /// Per distinct value, its count.
    pub fn count_by_value(&self) -> DStream {
        self.host_op(Op::CountByValue)
    }
    /// The values reduced to one per batch.
    pub fn reduce(&self, udf: &str) -> DStream {
        self.with_udf(Op::Reduce, udf)
    }
    /// Per key, the values reduced.
    pub fn reduce_by_key(&self, udf: &str) -> DStream {
        self.with_udf(Op::ReduceByKey, udf)
    }
    /// Per key, a JSON array of the values.
    pub fn group_by_key(&self) -> DStream {
        self.host_op(Op::GroupByKey)
    }
    /// Inner join with `other` by key.
    pub fn join(&self, other: &DStream) -> DStream {
        self.two(Op::Join, other)
    }
    /// Left outer join.
    pub fn left_outer_join(&self, other: &DStream) -> DStream {
        self.two(Op::LeftOuterJoin, other)
    }
    /// Right outer join.
    pub fn right_outer_join(&self, other: &DStream) -> DStream {
        self.two(Op::RightOuterJoin, other)
    }
    /// Full outer join.
    pub fn full_outer_join(&self, other: &DStream) -> DStream {
        self.two(Op::FullOuterJoin, other)
    }
    /// Cogroup with `other`.
    pub fn cogroup(&self, other: &DStream) -> DStream {
        self.two(Op::Cogroup, other)
    }
    /// Join with a static data set from `path` (`inner` or `left_outer`).
    pub fn join_static(
        &self,
        path: impl AsRef<Path>,
        format: StaticFormat,
        left_outer: bool,
    ) -> DStream {
        let path = path.as_ref().to_path_buf();
        self.derive(Op::JoinStatic, vec![self.name.clone()], |s| {
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
        self.sink(SinkKind::Native(Arc::new(NativeSink(Box::new(f)))));
    }
}
