//! Planning: a [`JobSpec`] (from a manifest or the Rust API) becomes a validated [`Plan`], or a
//! list of every problem found, each with its manifest line and a hint. Nothing runs until the
//! whole job checks out: names resolve, the graph has no cycle, every UDF exists and has the
//! world its operator needs, static data loads, output directories can be written.

pub mod limits;
pub mod manifest;
#[cfg(test)]
mod proptests;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use spec::{
    Builtin, CheckpointSpec, Codec, DEFAULT_CHECKPOINT_BATCHES, DEFAULT_KEEP_CHECKPOINTS,
    ErrorPolicy, JobSpec, OnError, OutputFormat, OutputMode, SinkKind, SinkSpec, SourceKind,
    SourceSpec, Start, StaticFormat, StreamSpec,
};

use crate::operators::repartition::MAX_PARTITIONS;
use crate::operators::{
    self, Drain, Field, Operator, PlanCx, PlanServices, PlannedInput, Reducer, UdfRef, UdfUse,
};
use crate::sinks::NativeSink;
use crate::sinks::kafka::{KafkaSinkConfig, SinkIds};
use crate::sources::QueueReceiver;
use crate::udf::{Resolved, Role, SlotSet, UdfFunction, UdfResolver, parse_spec};
use limits::{MAX_REPORTED_ERRORS, MAX_WARNINGS};

/// One problem with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The manifest line, when the job came from one.
    pub line: Option<usize>,
    /// What the problem is about: `stream 'counts'`, `sink 2`, `job`.
    pub subject: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// Every problem of a job that failed planning.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PlanErrors {
    /// The manifest, for `path:line:` prefixes.
    pub manifest: Option<PathBuf>,
    /// The problems, in manifest order.
    pub errors: Vec<PlanError>,
}

impl std::fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "the job has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in self.errors.iter().take(MAX_REPORTED_ERRORS) {
            let at = match (&self.manifest, e.line) {
                (Some(path), Some(line)) => format!("{}:{line}: ", path.display()),
                (None, Some(line)) => format!("line {line}: "),
                _ => String::new(),
            };
            writeln!(f, "  {at}{}: {}", clip(&e.subject), clip(&e.message))?;
            if let Some(hint) = &e.hint {
                writeln!(f, "    hint: {}", clip(hint))?;
            }
        }
        if n > MAX_REPORTED_ERRORS {
            writeln!(
                f,
                "  … and {} more (only the first {MAX_REPORTED_ERRORS} are shown: fix these and check again)",
                n - MAX_REPORTED_ERRORS
            )?;
        }
        Ok(())
    }
}

/// The most characters of one part of a printed problem (a name can be as long as the manifest).
const MAX_SHOWN_CHARS: usize = 1000;

/// `text`, cut to [`MAX_SHOWN_CHARS`] characters with a note of how much was left out.
pub(crate) fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        None => text.into(),
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut).into(),
    }
}

/// What a planned stream is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// The records of source `i` of [`Plan::sources`].
    Source(usize),
    /// A derived stream and its operator.
    Stream(Arc<dyn Operator>),
}

/// One stream of the plan.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name.
    pub name: Arc<str>,
    /// The operator's manifest name (`flat_map`, `source`, …), for logs and stats.
    pub op_name: &'static str,
    /// What it is.
    pub kind: NodeKind,
    /// Upstream nodes: always earlier in [`Plan::nodes`].
    pub inputs: Vec<usize>,
    /// How its keys read.
    pub key_codec: Codec,
    /// How its values read.
    pub value_codec: Codec,
    /// It has a batch at batch times that are multiples of this (ms): the batch interval, or a
    /// window's slide.
    pub slide: i64,
    /// Its own `on_error`; `None`: the job's `on_udf_error` ([`Plan::on_error`]).
    pub on_error: Option<OnError>,
}

/// A planned output.
#[derive(Debug, Clone)]
pub enum PlannedSink {
    /// `print`.
    Print {
        /// Records shown per batch.
        num: usize,
    },
    /// `text_files`.
    TextFiles {
        /// Path prefix of batch directories.
        prefix: PathBuf,
        /// Suffix, without the dot.
        suffix: Option<String>,
        /// Line format.
        format: OutputFormat,
    },
    /// A sink UDF.
    Udf(UdfRef),
    /// `kafka`: checked settings; the executor makes the producer at the first batch.
    Kafka(Arc<KafkaSinkConfig>),
    /// A Rust closure.
    Native(Arc<NativeSink>),
}

/// A job that checked out: streams in an order where every input comes first, with resolved
/// UDFs and loaded static data. Only the streams some sink needs are kept.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job's name.
    pub name: Arc<str>,
    /// Its tenant.
    pub tenant: Arc<str>,
    /// The batch interval.
    pub batch_interval: Duration,
    /// Partitions per batch.
    pub partitions: usize,
    /// Early seal threshold.
    pub max_batch_records: Option<usize>,
    /// Sources' rates follow what the job processes ([`JobSpec::backpressure`]).
    pub backpressure: bool,
    /// What a failed UDF call does.
    pub on_udf_error: ErrorPolicy,
    /// Batches a newly bound UDF version is on trial for.
    pub probation_batches: u32,
    /// The sources, by index.
    pub sources: Vec<SourceSpec>,
    /// The receiving ends of the queue sources, by source name.
    pub queues: BTreeMap<String, QueueReceiver>,
    /// The streams, inputs first.
    pub nodes: Vec<Node>,
    /// Outputs: the node written and how.
    pub sinks: Vec<(usize, PlannedSink)>,
    /// Things worth knowing that do not stop the job (a stream no sink uses).
    pub warnings: Vec<String>,
    /// Where stateful streams keep their state; set whenever one exists.
    pub state_dir: Option<PathBuf>,
    /// The most state the job may hold, in bytes.
    pub max_state_bytes: u64,
    /// How many empty batches `--until-idle` runs after the input ends, so that streams that
    /// hold data past their input show it: windows their trailing slides, event-time windows
    /// a watermark past the last data (Structured Streaming's available-now trigger).
    pub drain_batches: u64,
    /// Whether every batch time must have a batch (windows): the scheduler fills times the
    /// clock skipped with empty batches.
    pub every_batch: bool,
    /// The UDFs the plan calls, by [`UdfRef`] (a `UdfRef`'s index is its slot's): the
    /// executor takes one snapshot of them per batch, and [`SlotSet::rebind_component`] binds a
    /// later version of a component between batches.
    pub udfs: Arc<SlotSet>,
    /// How the job checkpoints, when it does.
    pub checkpoint: Option<PlannedCheckpoint>,
    /// Where records isolated under `on_error = "dead_letter"` are kept (beside the state
    /// folder); set whenever a stream says so.
    pub dead_letter_dir: Option<PathBuf>,
}

/// A checked checkpoint setting.
#[derive(Debug, Clone)]
pub struct PlannedCheckpoint {
    /// The folder.
    pub dir: PathBuf,
    /// A data checkpoint every this many batches.
    pub interval_batches: u64,
    /// Data checkpoints kept.
    pub keep: usize,
    /// When write-ahead logs are forced to disk.
    pub wal_sync: crate::wal::WalSync,
    /// Go on past damage in a write-ahead log, keeping what is before it.
    pub accept_wal_loss: bool,
}

impl Plan {
    /// The streams that keep state in the state store, by node index.
    pub fn stateful_nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        let checkpointed = self.checkpoint.is_some();
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.operator().is_some_and(|op| op.keeps_state(checkpointed)))
    }

    /// What a failed UDF call of `node` does: its own `on_error`, else the job's.
    pub fn on_error(&self, node: &Node) -> OnError {
        node.on_error.unwrap_or(match self.on_udf_error {
            ErrorPolicy::Fail => OnError::Fail,
            ErrorPolicy::SkipBatch => OnError::SkipBatch,
        })
    }

    /// `component#function` of a UDF of the plan.
    pub fn udf_spec(&self, r: UdfRef) -> String {
        self.udfs
            .snapshot()
            .iter()
            .nth(r.0)
            .map_or_else(String::new, |(_, b)| b.function.spec())
    }
}

impl Node {
    /// Its operator (`None` for a source).
    pub fn operator(&self) -> Option<&dyn Operator> {
        match &self.kind {
            NodeKind::Source(_) => None,
            NodeKind::Stream(op) => Some(&**op),
        }
    }
}

/// What a job's description refers to by name but cannot hold, because it is not data: the
/// receiving ends of queue sources and the closures of native sinks (the Rust API fills it).
#[derive(Debug, Clone, Default)]
pub struct Handles {
    /// By queue source name.
    pub queues: BTreeMap<String, QueueReceiver>,
    /// By native sink name.
    pub sinks: BTreeMap<String, Arc<NativeSink>>,
}

/// Check a job and resolve everything it names (a job with no queue sources or native sinks).
pub fn plan(
    spec: JobSpec,
    udfs: &dyn UdfResolver,
    manifest: Option<&Path>,
) -> Result<Plan, PlanErrors> {
    plan_with(spec, Handles::default(), udfs, manifest)
}

/// Check a job, resolve everything it names and attach the runtime `handles` it refers to.
pub fn plan_with(
    spec: JobSpec,
    handles: Handles,
    udfs: &dyn UdfResolver,
    manifest: Option<&Path>,
) -> Result<Plan, PlanErrors> {
    let mut p = Planner {
        handles,
        errors: Vec::new(),
        functions: Vec::new(),
        slots: SlotSet::new(),
        components: HashMap::new(),
        udfs,
        batch_interval: i64::try_from(spec.batch_interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1),
    };
    let failed = |errors| PlanErrors {
        manifest: manifest.map(Path::to_path_buf),
        errors,
    };
    // Durations first: past this point every one is within its range, so no arithmetic on
    // them (here, in the scheduler, in the operators) can overflow or divide by zero.
    p.check_durations(&spec);
    if !p.errors.is_empty() {
        return Err(failed(p.errors));
    }
    let plan = p.plan(spec);
    if p.errors.is_empty() {
        Ok(plan)
    } else {
        Err(failed(p.errors))
    }
}

struct Planner<'b> {
    errors: Vec<PlanError>,
    /// The runtime handles the job refers to.
    handles: Handles,
    /// The UDFs resolved so far, by [`UdfRef`]: what planning reads of them.
    functions: Vec<UdfFunction>,
    /// The same UDFs as the job's slots (`SlotId` index = `UdfRef` index), which a later
    /// version can be bound to between batches.
    slots: SlotSet,
    /// Components resolved so far, or why not (message, hint).
    components: HashMap<String, Result<Resolved, (String, String)>>,
    udfs: &'b dyn UdfResolver,
    /// ms.
    batch_interval: i64,
}

impl Planner<'_> {
    fn error(&mut self, line: Option<usize>, subject: &str, message: String, hint: Option<String>) {
        self.errors.push(PlanError {
            line,
            subject: subject.to_string(),
            message,
            hint,
        });
    }

    /// Whether errors are still printed, so a costly hint (a close name) is worth computing.
    fn reporting(&self) -> bool {
        self.errors.len() < MAX_REPORTED_ERRORS
    }

    fn plan(&mut self, spec: JobSpec) -> Plan {
        self.check_job(&spec);

        // Names: sources and streams share one namespace.
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut all: Vec<(String, Option<usize>)> = Vec::new();
        for (name, line, what) in spec
            .sources
            .iter()
            .map(|s| (&s.name, s.line, "source"))
            .chain(spec.streams.iter().map(|s| (&s.name, s.line, "stream")))
        {
            let subject = format!("{what} '{name}'");
            if !valid_name(name) {
                self.error(
                    line,
                    &subject,
                    "names are 1 to 64 letters, digits, `_`, `-` and `.`, not starting with `.`"
                        .into(),
                    None,
                );
            }
            if let Some(&first) = names.get(name) {
                let earlier = all[first]
                    .1
                    .map_or(String::new(), |l| format!(" (line {l})"));
                self.error(
                    line,
                    &subject,
                    format!("the name is already used{earlier}"),
                    Some("give every source and stream its own name".into()),
                );
                continue;
            }
            names.insert(name.clone(), all.len());
            all.push((name.clone(), line));
        }
        let known: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let n_sources = spec.sources.len();

        // Edges, by index into `all` (sources first, then streams in spec order).
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
        for stream in &spec.streams {
            let Some(&me) = names.get(&stream.name) else {
                continue;
            };
            if me < n_sources {
                continue; // a duplicate of a source name, already reported
            }
            for input in &stream.inputs {
                match names.get(input) {
                    Some(&i) => edges[me].push(i),
                    None => {
                        let hint = self.reporting().then(|| suggest(input, &known));
                        self.error(
                            stream.line,
                            &format!("stream '{}'", stream.name),
                            format!("input '{input}' is not a source or a stream"),
                            hint,
                        );
                    }
                }
            }
        }
        let order = self.topological(&all, &edges);

        // Which nodes the sinks need.
        let mut needed = vec![false; all.len()];
        let mut sink_inputs = Vec::new();
        for (i, sink) in spec.sinks.iter().enumerate() {
            match names.get(&sink.input) {
                Some(&n) => {
                    sink_inputs.push(Some(n));
                    mark(n, &edges, &mut needed);
                }
                None => {
                    sink_inputs.push(None);
                    let hint = self.reporting().then(|| suggest(&sink.input, &known));
                    self.error(
                        sink.line,
                        &format!("sink {}", i + 1),
                        format!("input '{}' is not a source or a stream", sink.input),
                        hint,
                    );
                }
            }
        }
        if spec.sinks.is_empty() {
            self.error(
                spec.line,
                "job",
                "the job has no sinks, so nothing would ever run".into(),
                Some(
                    "add a [[sinks]] table, e.g. kind = \"print\" with input = \"<stream>\"".into(),
                ),
            );
        }

        // Nodes in order, with their operators resolved.
        let mut warnings = Vec::new();
        let mut unused = 0usize;
        let mut nodes: Vec<Node> = Vec::new();
        let mut node_of: HashMap<usize, usize> = HashMap::new();
        for &i in &order {
            if !needed[i] {
                unused += 1;
                if unused <= MAX_WARNINGS {
                    warnings.push(format!(
                        "{} '{}' feeds no sink, so it will not run",
                        if i < n_sources { "source" } else { "stream" },
                        all[i].0
                    ));
                }
                continue;
            }
            let inputs: Vec<usize> = edges[i]
                .iter()
                .filter_map(|e| node_of.get(e).copied())
                .collect();
            let node = if i < n_sources {
                Some(Node {
                    name: Arc::from(all[i].0.as_str()),
                    op_name: "source",
                    kind: NodeKind::Source(i),
                    inputs,
                    key_codec: Codec::Text,
                    value_codec: Codec::Text,
                    slide: self.batch_interval,
                    on_error: None,
                })
            } else {
                let stream = &spec.streams[i - n_sources];
                self.stream_node(stream, inputs, &nodes)
            };
            if let Some(node) = node {
                node_of.insert(i, nodes.len());
                nodes.push(node);
            }
        }

        if unused > MAX_WARNINGS {
            warnings.push(format!(
                "… and {} more sources and streams feed no sink",
                unused - MAX_WARNINGS
            ));
        }

        // Sinks.
        let mut sinks = Vec::new();
        for (i, (sink, input)) in spec.sinks.iter().zip(sink_inputs).enumerate() {
            let subject = format!("sink {} ({})", i + 1, sink.input);
            let planned = match &sink.kind {
                SinkKind::Print { num } => Some(PlannedSink::Print { num: *num }),
                SinkKind::TextFiles {
                    prefix,
                    suffix,
                    format,
                } => {
                    if let Err(e) = check_writable(prefix) {
                        self.error(
                            sink.line,
                            &subject,
                            e,
                            Some(
                                "point `prefix` into a directory the host can create and write"
                                    .into(),
                            ),
                        );
                    }
                    Some(PlannedSink::TextFiles {
                        prefix: prefix.clone(),
                        suffix: suffix.clone(),
                        format: *format,
                    })
                }
                SinkKind::Udf { udf } => self
                    .function(udf, Role::Sink, "a udf sink", sink.line, &subject)
                    .map(PlannedSink::Udf),
                SinkKind::Kafka(config) => {
                    // The stream's value codec, when it planned (else its own error stands).
                    let codec = input
                        .and_then(|n| node_of.get(&n))
                        .map_or(Codec::Json, |&n| nodes[n].value_codec);
                    let ids = SinkIds::new(&spec.tenant, &spec.name, i + 1);
                    for problem in config.check(codec, &ids) {
                        self.error(sink.line, &subject, problem.message, problem.hint);
                    }
                    if config.exactly_once && spec.checkpoint.is_none() {
                        warnings.push(format!(
                            "{subject}: exactly_once without a checkpoint: each batch's output is committed whole, but after a crash the input is not run again, so it is not exactly-once end to end (set checkpoint in [job])"
                        ));
                    }
                    Some(PlannedSink::Kafka(Arc::new((**config).clone())))
                }
                SinkKind::Native { name } => match self.handles.sinks.get(name) {
                    Some(f) => Some(PlannedSink::Native(f.clone())),
                    None => {
                        self.error(
                            sink.line,
                            &subject,
                            format!("native sink '{name}' has no closure"),
                            Some("pass it in plan::Handles::sinks under that name (DStream::foreach_batch does)".into()),
                        );
                        None
                    }
                },
            };
            if let (Some(planned), Some(node)) = (planned, input.and_then(|n| node_of.get(&n))) {
                sinks.push((*node, planned));
            }
        }

        // State needs a directory.
        let checkpointed = spec.checkpoint.is_some();
        let stateful: Vec<String> = nodes
            .iter()
            .filter(|n| n.operator().is_some_and(|op| op.keeps_state(checkpointed)))
            .map(|n| n.name.to_string())
            .collect();
        let state_dir = spec
            .state_dir
            .clone()
            .or_else(|| spec.checkpoint.as_ref().map(|c| c.dir.join("state")));
        let checkpoint = self.checkpoint(&spec);
        if !stateful.is_empty() && state_dir.is_none() {
            self.error(
                spec.line,
                "job",
                format!(
                    "stream '{}' keeps state, so the job needs a state directory",
                    stateful[0]
                ),
                Some("set state_dir in [job] (a manifest defaults it to state/ beside the manifest) or call StreamingContext::state_dir".into()),
            );
        }
        let dead_letters = nodes
            .iter()
            .any(|n| n.on_error == Some(OnError::DeadLetter))
            || spec.sources.iter().any(|s| {
                matches!(&s.kind, SourceKind::Kafka(c)
                    if c.on_decode_error == crate::sources::kafka::DecodePolicy::DeadLetter)
            });
        if dead_letters && state_dir.is_none() {
            self.error(
                spec.line,
                "job",
                "a stream with on_error = \"dead_letter\" (or a kafka source with on_decode_error = \"dead_letter\") needs a state directory: its dead-letter store is kept beside it".into(),
                Some("set state_dir in [job] (a manifest defaults it to state/ beside the manifest) or call StreamingContext::state_dir".into()),
            );
        }
        if spec.max_state_bytes == 0 {
            self.error(
                spec.line,
                "job",
                "max_state_bytes = 0 leaves no room for any state".into(),
                Some("leave it out for the default, 1GiB".into()),
            );
        }
        let drain_batches = drain_batches(&nodes, self.batch_interval);
        let every_batch = nodes
            .iter()
            .any(|n| n.operator().is_some_and(|op| op.needs_every_batch()));

        Plan {
            name: Arc::from(spec.name.as_str()),
            tenant: Arc::from(spec.tenant.as_str()),
            batch_interval: spec.batch_interval,
            partitions: spec.partitions.max(1),
            max_batch_records: spec.max_batch_records,
            backpressure: spec.backpressure,
            on_udf_error: spec.on_udf_error,
            probation_batches: spec.probation_batches,
            queues: self.queues(&spec),
            sources: spec.sources,
            nodes,
            sinks,
            warnings,
            dead_letter_dir: state_dir
                .as_deref()
                .filter(|_| dead_letters)
                .map(crate::state::dead_letters::dir_for),
            state_dir: (!stateful.is_empty()).then_some(state_dir).flatten(),
            max_state_bytes: spec.max_state_bytes,
            drain_batches,
            every_batch,
            udfs: Arc::new(std::mem::take(&mut self.slots)),
            checkpoint,
        }
    }

    /// The receiving end of every queue source, taken from the handles; a problem for each one
    /// missing.
    fn queues(&mut self, spec: &JobSpec) -> BTreeMap<String, QueueReceiver> {
        let mut queues = BTreeMap::new();
        for source in &spec.sources {
            if let SourceKind::Kafka(config) = &source.kind
                && let Err(problem) = config.check()
            {
                self.error(
                    source.line,
                    &format!("source '{}'", source.name),
                    problem,
                    None,
                );
            }
            if source.kind != SourceKind::Queue {
                continue;
            }
            match self.handles.queues.get(&source.name) {
                Some(q) => {
                    queues.insert(source.name.clone(), q.clone());
                }
                None => self.error(
                    source.line,
                    &format!("source '{}'", source.name),
                    "a queue source needs its receiving end".into(),
                    Some("pass it in plan::Handles::queues under the source's name (StreamingContext::queue_stream does)".into()),
                ),
            }
        }
        queues
    }

    /// The checkpoint setting, checked: an interval that is a multiple of the batch interval,
    /// and a checkpoint wherever a source needs a write-ahead log.
    fn checkpoint(&mut self, spec: &JobSpec) -> Option<PlannedCheckpoint> {
        let interval = u64::try_from(spec.batch_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        if spec.checkpoint.is_none() {
            for source in &spec.sources {
                if matches!(source.kind, SourceKind::Http { .. }) {
                    self.error(
                        source.line,
                        &format!("source '{}'", source.name),
                        "an http source answers only once records are in its write-ahead log, which lives in the job's checkpoint folder".into(),
                        Some("set checkpoint = \"checkpoint\" in [job] (or pass --checkpoint DIR)".into()),
                    );
                }
            }
        }
        let c = spec.checkpoint.as_ref()?;
        let every = c
            .interval
            .map_or(interval.saturating_mul(DEFAULT_CHECKPOINT_BATCHES), |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            });
        if every == 0 || !every.is_multiple_of(interval) {
            let below = (every / interval).max(1) * interval;
            self.error(
                spec.line,
                "job",
                format!(
                    "checkpoint_interval = {} is not a multiple of the batch interval ({})",
                    humantime::format_duration(std::time::Duration::from_millis(every)),
                    humantime::format_duration(spec.batch_interval)
                ),
                Some(format!(
                    "use {} or {}",
                    humantime::format_duration(std::time::Duration::from_millis(below)),
                    humantime::format_duration(std::time::Duration::from_millis(
                        below.saturating_add(interval)
                    ))
                )),
            );
        }
        if c.keep == 0 {
            self.error(
                spec.line,
                "job",
                "keep_checkpoints = 0 would delete every data checkpoint".into(),
                Some(format!(
                    "leave it out for the default, {DEFAULT_KEEP_CHECKPOINTS}"
                )),
            );
        }
        Some(PlannedCheckpoint {
            dir: c.dir.clone(),
            interval_batches: (every / interval).max(1),
            keep: c.keep.max(1),
            wal_sync: c.wal_sync,
            accept_wal_loss: c.accept_wal_loss,
        })
    }

    fn check_job(&mut self, spec: &JobSpec) {
        let line = spec.line;
        if !valid_name(&spec.name) {
            self.error(
                line,
                "job",
                format!(
                    "the name {:?} may use letters, digits, `_`, `-` and `.` only",
                    spec.name
                ),
                None,
            );
        }
        if !(1..=MAX_PARTITIONS).contains(&spec.partitions) {
            self.error(
                line,
                "job",
                format!(
                    "partitions = {} is not between 1 and {MAX_PARTITIONS}",
                    spec.partitions
                ),
                Some("leave it out to use one partition per core".into()),
            );
        }
        if spec.max_batch_records == Some(0) {
            self.error(
                line,
                "job",
                "max_batch_records = 0 would seal empty batches forever".into(),
                Some("leave it out, or set it to the most records one batch may hold".into()),
            );
        }
        for source in &spec.sources {
            for (field, value) in [
                ("max_rate", source.max_rate),
                ("initial_rate", source.initial_rate),
            ] {
                if value == Some(0) {
                    self.error(
                        source.line,
                        &format!("source '{}'", source.name),
                        format!("{field} = 0 would never take a record"),
                        Some("leave it out for no limit, or give records per second".into()),
                    );
                }
            }
            if source.initial_rate.is_some() && !spec.backpressure {
                self.error(
                    source.line,
                    &format!("source '{}'", source.name),
                    "initial_rate is the rate before backpressure's first estimate, and backpressure is off".into(),
                    Some("set backpressure = true in [job], or use max_rate for a fixed rate".into()),
                );
            }
            if let SourceKind::Directory {
                path,
                max_files_per_batch,
                ..
            } = &source.kind
            {
                let subject = format!("source '{}'", source.name);
                if !path.is_dir() {
                    self.error(
                        source.line,
                        &subject,
                        format!("{} is not a directory", path.display()),
                        Some("create it first; the source watches it for new files".into()),
                    );
                }
                if *max_files_per_batch == Some(0) {
                    self.error(
                        source.line,
                        &subject,
                        "max_files_per_batch = 0 would never read a file".into(),
                        None,
                    );
                }
            }
        }
    }

    /// Kahn's algorithm over the name graph; a cycle is reported with its path.
    fn topological(&mut self, all: &[(String, Option<usize>)], edges: &[Vec<usize>]) -> Vec<usize> {
        let n = all.len();
        let mut indegree = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (me, inputs) in edges.iter().enumerate() {
            for &i in inputs {
                indegree[me] += 1;
                users[i].push(me);
            }
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).rev().collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop() {
            order.push(i);
            for &u in users[i].iter().rev() {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.push(u);
                }
            }
        }
        if order.len() < n {
            // Walk inputs from a node left over until one repeats: that is the cycle.
            // `on_path[i]`: where node i is on the path, so the walk stays linear.
            let Some(first) = (0..n).find(|&i| indegree[i] > 0) else {
                return order;
            };
            let mut path = vec![first];
            let mut on_path: Vec<Option<usize>> = vec![None; n];
            on_path[first] = Some(0);
            let mut last = first;
            while let Some(&next) = edges[last].iter().find(|&&e| indegree[e] > 0) {
                if let Some(pos) = on_path[next] {
                    let cycle: Vec<&str> = path[pos..]
                        .iter()
                        .rev()
                        .map(|&i| all[i].0.as_str())
                        .collect();
                    self.error(
                        all[next].1,
                        &format!("stream '{}'", all[next].0),
                        format!("the streams form a cycle: {}", show_cycle(&cycle)),
                        Some("a stream cannot depend on itself, directly or through others".into()),
                    );
                    break;
                }
                on_path[next] = Some(path.len());
                path.push(next);
                last = next;
            }
        }
        order
    }

    fn stream_node(&mut self, s: &StreamSpec, inputs: Vec<usize>, nodes: &[Node]) -> Option<Node> {
        let subject = format!("stream '{}'", s.name);
        let line = s.line;
        let Some(kind) = operators::kind(&s.op) else {
            let hint = if self.reporting() {
                let names: Vec<&str> = operators::KINDS.iter().map(|k| k.name()).collect();
                Some(suggest(&s.op, &names))
            } else {
                None
            };
            self.error(
                line,
                &subject,
                format!("op = {:?} is not an operator", clip(&s.op)),
                hint,
            );
            return None;
        };
        let opname = kind.name();
        if !kind.arity().fits(s.inputs.len()) {
            self.error(
                line,
                &subject,
                format!(
                    "{opname} takes {}, not {}",
                    kind.arity().wanted(),
                    s.inputs.len()
                ),
                None,
            );
        }
        let (role, builtin_allowed) = match kind.udf() {
            UdfUse::None => (None, false),
            UdfUse::Needs { role, builtin } => (Some(role), builtin),
        };
        match s.on_error {
            Some(policy @ (OnError::DeadLetter | OnError::Retry(_))) if s.udf.is_none() => {
                self.error(
                    line,
                    &subject,
                    format!(
                        "on_error = \"{}\" applies to a stream whose `udf` fails; {opname} calls none",
                        policy.as_text()
                    ),
                    Some("leave on_error out, or use \"fail\" or \"skip_batch\"".into()),
                );
            }
            Some(OnError::DeadLetter) if !kind.isolates() => {
                let accept: Vec<&str> = operators::KINDS
                    .iter()
                    .filter(|k| k.isolates())
                    .map(|k| k.name())
                    .collect();
                self.error(
                    line,
                    &subject,
                    format!(
                        "on_error = \"dead_letter\" does not apply to {opname}: its UDF call cannot be split record by record; only {} isolate failing records",
                        accept.join(", ")
                    ),
                    Some(format!(
                        "use on_error = \"retry(N)\", \"skip_batch\" or \"fail\" on this stream, or move the code that fails into a {} before it",
                        accept.join(" / ")
                    )),
                );
            }
            _ => {}
        }
        let function = match (role, &s.udf, s.builtin) {
            (Some(_), Some(_), Some(_)) if builtin_allowed => {
                self.error(
                    line,
                    &subject,
                    "give either `udf` or `builtin`, not both".into(),
                    None,
                );
                None
            }
            (Some(role), Some(udf), _) => self.function(udf, role, opname, line, &subject),
            (Some(_), None, Some(_)) if builtin_allowed => None,
            (Some(role), None, _) => {
                let builtins = if builtin_allowed {
                    ", or `builtin = \"count\" | \"sum_i64\" | \"sum_f64\" | \"count_and_sum\"`"
                } else {
                    ""
                };
                self.error(
                    line,
                    &subject,
                    format!("{opname} needs `udf = \"component#function\"`, a function of the {role} world{builtins}"),
                    Some(match role {
                        Role::Reducer => "e.g. udf = \"aggregates#sum_i64\"".into(),
                        Role::Updater => "e.g. udf = \"state#running_total\"".into(),
                        Role::Transform | Role::Sink => "e.g. udf = \"text#split_words\"".into(),
                    }),
                );
                None
            }
            (None, Some(_), _) => {
                self.error(
                    line,
                    &subject,
                    format!("`udf` does not apply to {opname}, which runs in the host"),
                    None,
                );
                None
            }
            (None, None, _) => None,
        };
        if let Some(f) = function
            && kind.checks_kind()
        {
            let f = &self.functions[f.0];
            let fnkind = f.info().kind;
            if let Some(fits) = operators::fitting_op(fnkind)
                && fits != opname
            {
                let spec = f.spec();
                self.error(
                    line,
                    &subject,
                    format!(
                        "{spec} is a `{}` function, which does not fit op = \"{opname}\"",
                        fnkind.wit_name()
                    ),
                    Some(format!(
                        "use op = \"{}\"{}",
                        operators::suggested_op(fnkind),
                        if role == Some(Role::Transform) {
                            ", or map_partitions for any transform function"
                        } else {
                            ""
                        }
                    )),
                );
            }
        }
        let applies = kind.fields();
        for field in Field::ALL {
            let allowed = applies.contains(&field) && (field != Field::Builtin || builtin_allowed);
            if field.present(s) && !allowed {
                self.error(
                    line,
                    &subject,
                    format!("`{}` does not apply to {opname}", field.name()),
                    None,
                );
            }
        }
        let input_nodes: Vec<&Node> = inputs.iter().filter_map(|&n| nodes.get(n)).collect();
        if let Some(first) = input_nodes.first()
            && let Some(other) = input_nodes.iter().find(|n| n.slide != first.slide)
        {
            self.error(
                line,
                &subject,
                format!(
                    "its inputs '{}' (a batch every {}ms) and '{}' (every {}ms) do not have batches at the same times",
                    first.name, first.slide, other.name, other.slide
                ),
                Some("window both inputs with the same slide".into()),
            );
        }
        let reducer = match (function, s.builtin) {
            (Some(f), _) if role == Some(Role::Reducer) => Some(Reducer::Udf(f)),
            (None, Some(b)) if builtin_allowed => Some(Reducer::Builtin(b)),
            _ => None,
        };
        let planned_inputs: Vec<PlannedInput<'_>> = input_nodes
            .iter()
            .map(|n| PlannedInput {
                name: &n.name,
                key_codec: n.key_codec,
                value_codec: n.value_codec,
                slide: n.slide,
                op: n.operator(),
            })
            .collect();
        let planned = {
            let mut services = StreamServices {
                planner: self,
                line,
                subject: &subject,
            };
            let mut cx = PlanCx {
                spec: s,
                inputs: &planned_inputs,
                function,
                reducer,
                services: &mut services,
            };
            kind.plan(&mut cx)
        }?;
        if matches!(s.on_error, Some(OnError::Retry(_))) && planned.op.layout().is_some() {
            self.error(
                line,
                &subject,
                format!("on_error = \"retry(N)\" does not apply to {opname}: it keeps state, which a retried batch would change twice"),
                Some("use on_error = \"fail\" (a checkpointed job runs the batch again on restart) or \"skip_batch\"".into()),
            );
        }
        let slide = planned
            .slide
            .unwrap_or_else(|| input_nodes.first().map_or(self.batch_interval, |n| n.slide));
        Some(Node {
            name: Arc::from(s.name.as_str()),
            op_name: opname,
            kind: NodeKind::Stream(planned.op),
            inputs,
            key_codec: s.key_codec.unwrap_or(planned.key_codec),
            value_codec: s.value_codec.unwrap_or(planned.value_codec),
            slide,
            on_error: s.on_error,
        })
    }

    /// Resolve `component#function` to a function of `role`.
    fn function(
        &mut self,
        udf: &str,
        role: Role,
        user: &str,
        line: Option<usize>,
        subject: &str,
    ) -> Option<UdfRef> {
        let (component, function) = match parse_spec(udf) {
            Ok(parts) => parts,
            Err(e) => {
                self.error(
                    line,
                    subject,
                    e.to_string(),
                    Some("write udf = \"component#function\", e.g. \"text#split_words\"".into()),
                );
                return None;
            }
        };
        let loaded = match self.components.get(component) {
            Some(loaded) => loaded.clone(),
            None => {
                let loaded = self
                    .udfs
                    .resolve(component)
                    .map_err(|e| (e.to_string(), e.hint()));
                self.components
                    .insert(component.to_string(), loaded.clone());
                loaded
            }
        };
        let resolved = match loaded {
            Ok(r) => r,
            Err((message, hint)) => {
                self.error(line, subject, message, Some(hint));
                return None;
            }
        };
        let component = &resolved.component;
        match component.function_for(function, role) {
            Ok(f) => {
                let spec = f.spec();
                if let Some(i) = self.functions.iter().position(|g| g.spec() == spec) {
                    return Some(UdfRef(i));
                }
                let slot = self.slots.add(&resolved, f.clone());
                self.functions.push(f);
                debug_assert_eq!(slot.index(), self.functions.len() - 1);
                Some(UdfRef(self.functions.len() - 1))
            }
            Err(e) => {
                let hint = if component.role() != role {
                    format!(
                        "{user} needs a function of the {role} world; {} is a {} component",
                        component.name(),
                        component.role()
                    )
                } else {
                    let names: Vec<&str> = component
                        .functions()
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect();
                    suggest(function, &names)
                };
                self.error(line, subject, e.to_string(), Some(hint));
                None
            }
        }
    }
}

/// How many empty batches after the input ends let every stream show what it holds: along
/// each path of the graph, the batches each operator needs after its input ends, added up.
fn drain_batches(nodes: &[Node], batch_interval: i64) -> u64 {
    let mut after: Vec<u64> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let upstream = n.inputs.iter().filter_map(|&i| after.get(i)).max().copied();
        let own = match n.operator().map_or(Drain::None, |op| op.drain()) {
            Drain::None => 0,
            Drain::OneBatch => 1,
            // The window ending at the last input's batch is emitted with it; the ones after
            // it, up to `length` later, need batches of their own.
            Drain::For(ms) => {
                u64::try_from(ms / batch_interval.max(1)).map_or(0, |b| b.saturating_sub(1))
            }
        };
        after.push(upstream.unwrap_or(0).saturating_add(own));
    }
    after.into_iter().max().unwrap_or(0)
}

/// The planner as one stream's planning sees it.
struct StreamServices<'p, 'b, 's> {
    planner: &'p mut Planner<'b>,
    line: Option<usize>,
    subject: &'s str,
}

impl PlanServices for StreamServices<'_, '_, '_> {
    fn error(&mut self, message: String, hint: Option<String>) {
        self.planner.error(self.line, self.subject, message, hint);
    }

    fn function(&mut self, udf: &str, role: Role, user: &str) -> Option<UdfRef> {
        self.planner
            .function(udf, role, user, self.line, self.subject)
    }

    fn udf(&self, r: UdfRef) -> &UdfFunction {
        &self.planner.functions[r.0]
    }

    fn batch_interval(&self) -> i64 {
        self.planner.batch_interval
    }
}

fn mark(n: usize, edges: &[Vec<usize>], needed: &mut [bool]) {
    let mut stack = vec![n];
    while let Some(i) = stack.pop() {
        if !needed[i] {
            needed[i] = true;
            stack.extend(&edges[i]);
        }
    }
}

/// 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`: a source's name names its write-ahead
/// log's folder, so `.`, `..` and hidden names are refused.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A cycle `a → b → … → a`; a long one shows its first and last names and how many between.
fn show_cycle(cycle: &[&str]) -> String {
    const SHOWN: usize = 5;
    let first = cycle.first().copied().unwrap_or_default();
    if cycle.len() <= 2 * SHOWN {
        let mut names = cycle.to_vec();
        names.push(first);
        return names.join(" → ");
    }
    format!(
        "{} → … ({} more) … → {} → {first}",
        cycle[..SHOWN].join(" → "),
        cycle.len() - 2 * SHOWN,
        cycle[cycle.len() - SHOWN..].join(" → ")
    )
}

/// Names longer than this get no close-name suggestion (the edit distance is quadratic).
const MAX_SUGGESTED_NAME: usize = 64;

/// Names listed in a "known: …" hint.
const MAX_LISTED_NAMES: usize = 10;

/// "did you mean …" from the closest known name, or the first few names. Linear in the number
/// of names: only names whose length is close enough to be within reach are compared, and
/// long names are not compared at all.
fn suggest(name: &str, known: &[&str]) -> String {
    let reach = 2.max(name.len() / 3);
    let best = if name.len() > MAX_SUGGESTED_NAME {
        None
    } else {
        known
            .iter()
            .filter(|k| k.len().abs_diff(name.len()) <= reach && k.len() <= MAX_SUGGESTED_NAME)
            .map(|k| (edit_distance(name, k), *k))
            .min()
    };
    match best {
        Some((d, k)) if d <= reach => format!("did you mean '{k}'?"),
        _ if known.is_empty() => "nothing is declared yet".into(),
        _ if known.len() > MAX_LISTED_NAMES => format!(
            "known: {}, … and {} more",
            known[..MAX_LISTED_NAMES].join(", "),
            known.len() - MAX_LISTED_NAMES
        ),
        _ => format!("known: {}", known.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Create the directory a prefix writes into and prove a file can be made there.
fn check_writable(prefix: &Path) -> Result<(), String> {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the output directory {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".sluice-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        format!(
            "cannot write in the output directory {}: {e}",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_close_names() {
        assert_eq!(
            suggest("pairz", &["lines", "pairs"]),
            "did you mean 'pairs'?"
        );
        assert_eq!(
            suggest("zzzzzz", &["lines", "pairs"]),
            "known: lines, pairs"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions_stay_short_and_linear() {
        let names: Vec<String> = (0..20_000).map(|i| format!("s{i}")).collect();
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(suggest("s1999x", &known), "did you mean 's1999'?");
        let far = suggest("zzzzzzzzzzzzzzzzzzzz", &known);
        assert!(far.ends_with(", … and 19990 more"), "{far}");
        assert!(far.len() < 200, "{far}");
        let long = "x".repeat(100_000);
        assert!(suggest(&long, &known).starts_with("known: s0, s1"));
        let cycle: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        let cycle: Vec<&str> = cycle.iter().map(String::as_str).collect();
        assert_eq!(
            show_cycle(&cycle),
            "c0 → c1 → c2 → c3 → c4 → … (90 more) … → c95 → c96 → c97 → c98 → c99 → c0"
        );
        assert_eq!(show_cycle(&["a", "b"]), "a → b → a");
    }

    #[test]
    fn printed_errors_are_capped() {
        let errors = PlanErrors {
            manifest: Some("job.toml".into()),
            errors: (0..1000)
                .map(|i| PlanError {
                    line: Some(i),
                    subject: format!("stream 's{i}'"),
                    message: "bad".into(),
                    hint: None,
                })
                .collect(),
        };
        let shown = errors.to_string();
        assert!(shown.starts_with("the job has 1000 problems:"), "{shown}");
        assert_eq!(
            shown.lines().count(),
            1 + MAX_REPORTED_ERRORS + 1,
            "{shown}"
        );
        assert!(shown.contains("… and 950 more"), "{shown}");
        let long = "n".repeat(5000);
        assert_eq!(
            clip(&long).len(),
            MAX_SHOWN_CHARS + "… (4000 more bytes)".len()
        );
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn function_kinds_fit_their_operators() {
        use crate::operators::{fitting_op, suggested_op};
        use crate::udf::FunctionKind;
        assert_eq!(fitting_op(FunctionKind::TryFilter), Some("filter"));
        assert_eq!(fitting_op(FunctionKind::Raw), None);
        assert_eq!(fitting_op(FunctionKind::TryMap), Some("map"));
        assert_eq!(fitting_op(FunctionKind::FlatMap), Some("flat_map"));
        assert_eq!(
            fitting_op(FunctionKind::Update),
            Some("update_state_by_key")
        );
        assert_eq!(
            fitting_op(FunctionKind::MapWithState),
            Some("map_with_state")
        );
        assert_eq!(suggested_op(FunctionKind::Raw), "map_partitions");
    }
}
