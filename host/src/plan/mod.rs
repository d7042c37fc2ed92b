//! Planning: a [`JobSpec`] (from a manifest or the Rust API) becomes a validated [`Plan`], or a
//! list of every problem found, each with its manifest line and a hint. Nothing runs until the
//! whole job checks out: names resolve, the graph has no cycle, every UDF exists and has the
//! world its operator needs, static data loads, output directories can be written.

pub mod limits;
pub mod manifest;
#[cfg(test)]
mod proptests;
pub mod spec;
mod stateful;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use spec::{
    Builtin, CheckpointSpec, Codec, DEFAULT_CHECKPOINT_BATCHES, DEFAULT_KEEP_CHECKPOINTS,
    ErrorPolicy, JobSpec, Op, OutputFormat, OutputMode, SinkKind, SinkSpec, SourceKind, SourceSpec,
    Start, StaticFormat, StreamSpec,
};
pub use stateful::{EventWindow, Reducer, StateOp, Updater, WindowKind, WindowSpec};

use crate::sinks::NativeSink;
use crate::udf::{FunctionKind, Role, UdfComponent, UdfFunction, UdfRuntime, parse_spec};
use limits::{FileError, MAX_REPORTED_ERRORS, MAX_STATIC_BYTES, MAX_WARNINGS, read_regular_file};

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

/// Whether joins keep records without a match on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Only keys on both sides.
    Inner,
    /// Every left record.
    LeftOuter,
    /// Every right record.
    RightOuter,
    /// Every record of both.
    FullOuter,
}

/// A static data set for `join_static`: values by key, loaded once at job start.
#[derive(Debug, Default)]
pub struct StaticTable {
    /// Values of each key, in file order.
    pub rows: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// The file it came from.
    pub path: PathBuf,
}

/// What a planned stream does.
#[derive(Debug, Clone)]
pub enum NodeOp {
    /// The records of source `i` of [`Plan::sources`].
    Source(usize),
    /// map / flat_map / filter / map_partitions: a transform UDF per partition.
    PerPartition(UdfFunction),
    /// transform: a transform UDF over the whole batch.
    WholeBatch(UdfFunction),
    /// union of the inputs.
    Union,
    /// Spread over this many partitions.
    Repartition(usize),
    /// The record count.
    Count,
    /// Counts per distinct value.
    CountByValue,
    /// All values reduced to one.
    Reduce(Reducer),
    /// Values reduced per key.
    ReduceByKey(Reducer),
    /// Values gathered per key.
    GroupByKey,
    /// A join of the two inputs.
    Join(JoinKind),
    /// A cogroup of the two inputs.
    Cogroup,
    /// A join with a static table whose values read with the codec.
    JoinStatic(Arc<StaticTable>, JoinKind, Codec),
    /// A batch-time window.
    Window(WindowSpec),
    /// update_state_by_key / map_with_state.
    UpdateState(StateOp),
    /// The state of the input (a map_with_state stream) after each batch.
    StateSnapshots,
    /// An event-time window aggregation.
    EventTimeWindow(EventWindow),
}

/// One stream of the plan.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name.
    pub name: Arc<str>,
    /// The operator's manifest name (`flat_map`, `source`, …), for logs and stats.
    pub op_name: &'static str,
    /// What it does.
    pub op: NodeOp,
    /// Upstream nodes: always earlier in [`Plan::nodes`].
    pub inputs: Vec<usize>,
    /// How its keys read.
    pub key_codec: Codec,
    /// How its values read.
    pub value_codec: Codec,
    /// It has a batch at batch times that are multiples of this (ms): the batch interval, or a
    /// window's slide.
    pub slide: i64,
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
    Udf(UdfFunction),
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
    /// What a failed UDF call does.
    pub on_udf_error: ErrorPolicy,
    /// The sources, by index.
    pub sources: Vec<SourceSpec>,
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
    /// Whether `--until-idle` ends with one more, empty batch that moves event-time
    /// watermarks past the last data (Structured Streaming's available-now trigger).
    pub final_batch: bool,
    /// How the job checkpoints, when it does.
    pub checkpoint: Option<PlannedCheckpoint>,
}

/// Whether a stream's operator keeps entries in the state store: always for state operators,
/// incremental and event-time windows; with a checkpoint, in-memory windows too (their
/// per-batch partials, so a restart has them).
pub fn keeps_state(op: &NodeOp, checkpointed: bool) -> bool {
    op.uses_state_store() || (checkpointed && matches!(op, NodeOp::Window(_)))
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
            .filter(move |(_, n)| keeps_state(&n.op, checkpointed))
    }
}

/// Where the components a job names are found: `DIR/<component>.wasm`.
pub struct UdfDirectory<'a> {
    /// The directory.
    pub dir: PathBuf,
    /// The runtime that loads them.
    pub runtime: &'a UdfRuntime,
}

const MAX_PARTITIONS: usize = 4096;

/// Check a job and resolve everything it names.
pub fn plan(
    spec: JobSpec,
    udfs: &UdfDirectory<'_>,
    manifest: Option<&Path>,
) -> Result<Plan, PlanErrors> {
    let mut p = Planner {
        errors: Vec::new(),
        components: HashMap::new(),
        component_files: None,
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

struct Planner<'a, 'b> {
    errors: Vec<PlanError>,
    components: HashMap<String, Result<Arc<UdfComponent>, (String, String)>>,
    /// The component names in the UDF directory, listed once for "not found" hints.
    component_files: Option<Vec<String>>,
    udfs: &'b UdfDirectory<'a>,
    /// ms.
    batch_interval: i64,
}

impl Planner<'_, '_> {
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
                    "names may use letters, digits, `_`, `-` and `.` only".into(),
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
                    op: NodeOp::Source(i),
                    inputs,
                    key_codec: Codec::Text,
                    value_codec: Codec::Text,
                    slide: self.batch_interval,
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
                SinkKind::Native(f) => Some(PlannedSink::Native(f.clone())),
            };
            if let (Some(planned), Some(node)) = (planned, input.and_then(|n| node_of.get(&n))) {
                sinks.push((*node, planned));
            }
        }

        // Streams read by state_snapshots compute their snapshot; state needs a directory.
        let snapshot_inputs: Vec<usize> = nodes
            .iter()
            .filter(|n| matches!(n.op, NodeOp::StateSnapshots))
            .filter_map(|n| n.inputs.first().copied())
            .collect();
        for i in snapshot_inputs {
            if let NodeOp::UpdateState(state) = &mut nodes[i].op {
                state.snapshots = true;
            }
        }
        let stateful: Vec<String> = nodes
            .iter()
            .filter(|n| keeps_state(&n.op, spec.checkpoint.is_some()))
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
        if spec.max_state_bytes == 0 {
            self.error(
                spec.line,
                "job",
                "max_state_bytes = 0 leaves no room for any state".into(),
                Some("leave it out for the default, 1GiB".into()),
            );
        }
        let final_batch = nodes
            .iter()
            .any(|n| matches!(n.op, NodeOp::EventTimeWindow(_)));

        Plan {
            name: Arc::from(spec.name.as_str()),
            tenant: Arc::from(spec.tenant.as_str()),
            batch_interval: spec.batch_interval,
            partitions: spec.partitions.max(1),
            max_batch_records: spec.max_batch_records,
            on_udf_error: spec.on_udf_error,
            sources: spec.sources,
            nodes,
            sinks,
            warnings,
            state_dir: (!stateful.is_empty()).then_some(state_dir).flatten(),
            max_state_bytes: spec.max_state_bytes,
            final_batch,
            checkpoint,
        }
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
        let op = s.op;
        let opname = op.as_str();
        let wanted = match op {
            Op::Union => 2..=usize::MAX,
            Op::Join | Op::LeftOuterJoin | Op::RightOuterJoin | Op::FullOuterJoin | Op::Cogroup => {
                2..=2
            }
            _ => 1..=1,
        };
        if !wanted.contains(&s.inputs.len()) {
            let want = match op {
                Op::Union => "two or more inputs: inputs = [\"a\", \"b\"]".to_string(),
                Op::Join
                | Op::LeftOuterJoin
                | Op::RightOuterJoin
                | Op::FullOuterJoin
                | Op::Cogroup => "exactly two inputs: inputs = [\"left\", \"right\"]".to_string(),
                _ => "exactly one input: input = \"upstream\"".to_string(),
            };
            self.error(
                line,
                &subject,
                format!("{opname} takes {want}, not {}", s.inputs.len()),
                None,
            );
        }
        let reducing = matches!(
            op,
            Op::Reduce
                | Op::ReduceByKey
                | Op::ReduceByWindow
                | Op::ReduceByKeyAndWindow
                | Op::EventTimeWindow
        );
        let udf_role = match op {
            Op::Map | Op::FlatMap | Op::Filter | Op::MapPartitions | Op::Transform => {
                Some(Role::Transform)
            }
            _ if reducing => Some(Role::Reducer),
            Op::UpdateStateByKey | Op::MapWithState => Some(Role::Updater),
            _ => None,
        };
        let builtin_allowed = reducing || op == Op::UpdateStateByKey;
        let function = match (udf_role, &s.udf, s.builtin) {
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
                        _ => "e.g. udf = \"text#split_words\"".into(),
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
        if let Some(f) = &function
            && let Some(ok) = kind_fits(op, f.info().kind)
            && !ok
        {
            self.error(
                line,
                &subject,
                format!(
                    "{} is a `{}` function, which does not fit op = \"{opname}\"",
                    f.spec(),
                    f.info().kind.wit_name()
                ),
                Some(format!(
                    "use op = \"{}\"{}",
                    suggested_op(f.info().kind),
                    if udf_role == Some(Role::Transform) {
                        ", or map_partitions for any transform function"
                    } else {
                        ""
                    }
                )),
            );
        }
        let stateful_op = matches!(op, Op::UpdateStateByKey | Op::MapWithState);
        for (field, present, applies) in [
            (
                "partitions",
                s.partitions.is_some(),
                op == Op::Repartition || stateful_op,
            ),
            ("path", s.path.is_some(), op == Op::JoinStatic),
            (
                "format",
                s.format.is_some(),
                op == Op::JoinStatic || stateful_op,
            ),
            ("how", s.how.is_some(), op == Op::JoinStatic),
            (
                "static_codec",
                s.static_codec.is_some(),
                op == Op::JoinStatic,
            ),
            ("builtin", s.builtin.is_some(), builtin_allowed),
            (
                "window",
                s.window.is_some(),
                op.is_window() || op == Op::EventTimeWindow,
            ),
            (
                "slide",
                s.slide.is_some(),
                op.is_window() || op == Op::EventTimeWindow,
            ),
            (
                "inverse",
                s.inverse.is_some(),
                op == Op::ReduceByKeyAndWindow,
            ),
            ("filter", s.filter.is_some(), op == Op::ReduceByKeyAndWindow),
            ("timeout", s.timeout.is_some(), op == Op::MapWithState),
            ("initial_state", s.initial_state.is_some(), stateful_op),
            (
                "watermark",
                s.watermark.is_some(),
                op == Op::EventTimeWindow,
            ),
            (
                "output_mode",
                s.output_mode.is_some(),
                op == Op::EventTimeWindow,
            ),
            (
                "max_event_time_ahead",
                s.max_event_time_ahead.is_some(),
                op == Op::EventTimeWindow,
            ),
        ] {
            if present && !applies {
                self.error(
                    line,
                    &subject,
                    format!("`{field}` does not apply to {opname}"),
                    None,
                );
            }
        }
        if op == Op::MapWithState && s.builtin.is_some() {
            self.error(
                line,
                &subject,
                "map_with_state needs an updater UDF of kind map_with_state; builtins serve update_state_by_key".into(),
                None,
            );
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
        let (in_key, in_value) = input_nodes
            .first()
            .map(|n| (n.key_codec, n.value_codec))
            .unwrap_or_default();
        let reducer = match (&function, s.builtin) {
            (Some(f), _) if udf_role == Some(Role::Reducer) => Some(Reducer::Udf(f.clone())),
            (None, Some(b)) => Some(Reducer::Builtin(b)),
            _ => None,
        };
        let planned = match op {
            Op::Map | Op::FlatMap | Op::Filter | Op::MapPartitions => {
                function.map(NodeOp::PerPartition)
            }
            Op::Transform => function.map(NodeOp::WholeBatch),
            Op::Union => Some(NodeOp::Union),
            Op::Repartition => match s.partitions {
                Some(n) if (1..=MAX_PARTITIONS).contains(&n) => Some(NodeOp::Repartition(n)),
                other => {
                    self.error(
                        line,
                        &subject,
                        match other {
                            Some(n) => {
                                format!("partitions = {n} is not between 1 and {MAX_PARTITIONS}")
                            }
                            None => "repartition needs `partitions = N`".into(),
                        },
                        None,
                    );
                    None
                }
            },
            Op::Count => Some(NodeOp::Count),
            Op::CountByValue => Some(NodeOp::CountByValue),
            Op::Reduce => reducer.clone().map(NodeOp::Reduce),
            Op::ReduceByKey => reducer.clone().map(NodeOp::ReduceByKey),
            Op::GroupByKey => Some(NodeOp::GroupByKey),
            Op::Join => Some(NodeOp::Join(JoinKind::Inner)),
            Op::LeftOuterJoin => Some(NodeOp::Join(JoinKind::LeftOuter)),
            Op::RightOuterJoin => Some(NodeOp::Join(JoinKind::RightOuter)),
            Op::FullOuterJoin => Some(NodeOp::Join(JoinKind::FullOuter)),
            Op::Cogroup => Some(NodeOp::Cogroup),
            Op::JoinStatic => self.static_join(s, &subject),
            _ => self.stateful_op(
                s,
                reducer.clone(),
                function.clone(),
                input_nodes.first().copied(),
                &subject,
            ),
        };
        if let Some(n) = s.partitions
            && stateful_op
            && !(1..=MAX_PARTITIONS).contains(&n)
        {
            self.error(
                line,
                &subject,
                format!("partitions = {n} is not between 1 and {MAX_PARTITIONS}"),
                None,
            );
        }
        // Codecs: what the operator produces unless the stream says otherwise.
        let reduced = reducer.as_ref().map_or(in_value, |r| r.codec(in_value));
        let (key, value) = match op {
            Op::Filter | Op::Repartition | Op::Union | Op::Window => (in_key, in_value),
            Op::Reduce | Op::ReduceByKey | Op::ReduceByKeyAndWindow | Op::ReduceByWindow => {
                (in_key, reduced)
            }
            Op::Map | Op::FlatMap | Op::MapPartitions | Op::Transform | Op::MapWithState => {
                (Codec::Text, Codec::Text)
            }
            Op::Count | Op::CountByWindow => (Codec::Text, Codec::Number),
            Op::CountByValue | Op::CountByValueAndWindow => (in_value, Codec::Number),
            Op::UpdateStateByKey => (in_key, s.builtin.map_or(Codec::Text, |b| b.codec())),
            Op::StateSnapshots => (in_key, Codec::Text),
            Op::EventTimeWindow => (Codec::Json, reduced),
            Op::GroupByKey
            | Op::GroupByKeyAndWindow
            | Op::Join
            | Op::LeftOuterJoin
            | Op::RightOuterJoin
            | Op::FullOuterJoin
            | Op::Cogroup
            | Op::JoinStatic => (in_key, Codec::Json),
        };
        let planned = planned?;
        let slide = match &planned {
            NodeOp::Window(w) => w.slide,
            _ => input_nodes.first().map_or(self.batch_interval, |n| n.slide),
        };
        Some(Node {
            name: Arc::from(s.name.as_str()),
            op_name: opname,
            op: planned,
            inputs,
            key_codec: s.key_codec.unwrap_or(key),
            value_codec: s.value_codec.unwrap_or(value),
            slide,
        })
    }

    fn static_join(&mut self, s: &StreamSpec, subject: &str) -> Option<NodeOp> {
        let kind = match s.how.as_deref() {
            None | Some("inner") => JoinKind::Inner,
            Some("left_outer") => JoinKind::LeftOuter,
            Some(other) => {
                self.error(
                    s.line,
                    subject,
                    format!("how = {other:?} is not a static join"),
                    Some("use \"inner\" or \"left_outer\"".into()),
                );
                return None;
            }
        };
        let Some(path) = &s.path else {
            self.error(
                s.line,
                subject,
                "join_static needs `path`, the file of the static data set".into(),
                Some("KEY<TAB>VALUE lines, or format = \"jsonl\"".into()),
            );
            return None;
        };
        match load_static(path, s.format.unwrap_or_default()) {
            Ok(table) => Some(NodeOp::JoinStatic(
                Arc::new(table),
                kind,
                s.static_codec.unwrap_or_default(),
            )),
            Err(e) => {
                self.error(
                    s.line,
                    subject,
                    format!("path: {e}"),
                    static_hint("path", &e),
                );
                None
            }
        }
    }

    /// Resolve `component#function` to a function of `role`.
    fn function(
        &mut self,
        udf: &str,
        role: Role,
        user: &str,
        line: Option<usize>,
        subject: &str,
    ) -> Option<UdfFunction> {
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
                let loaded = load_component(self.udfs, component, &mut self.component_files);
                self.components
                    .insert(component.to_string(), loaded.clone());
                loaded
            }
        };
        let component = match loaded {
            Ok(c) => c,
            Err((message, hint)) => {
                self.error(line, subject, message, Some(hint));
                return None;
            }
        };
        match component.function_for(function, role) {
            Ok(f) => Some(f),
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

/// Load `name` from the UDF directory; when it is not there, the hint lists what is (listed
/// once per job into `listing`, however many components are missing).
fn load_component(
    udfs: &UdfDirectory<'_>,
    name: &str,
    listing: &mut Option<Vec<String>>,
) -> Result<Arc<UdfComponent>, (String, String)> {
    let path = udfs.dir.join(format!("{name}.wasm"));
    if !path.is_file() {
        let there = listing.get_or_insert_with(|| {
            let mut there: Vec<String> = std::fs::read_dir(&udfs.dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()?
                                .strip_suffix(".wasm")
                                .map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            there.sort();
            there
        });
        let hint = if there.is_empty() {
            format!(
                "{} holds no components; build them with `cargo xtask udfs`, or point --udfs at the right directory",
                udfs.dir.display()
            )
        } else if there.len() > MAX_LISTED_COMPONENTS {
            format!(
                "components there: {}, … and {} more",
                there[..MAX_LISTED_COMPONENTS].join(", "),
                there.len() - MAX_LISTED_COMPONENTS
            )
        } else {
            format!("components there: {}", there.join(", "))
        };
        return Err((
            format!("component '{name}' not found: no file {}", path.display()),
            hint,
        ));
    }
    udfs.runtime.load_file(&path).map_err(|e| {
        (
            format!("component '{name}' cannot be used: {e}"),
            e.hint().into(),
        )
    })
}

/// Whether a function's SDK kind fits the operator (`None`: no opinion, e.g. a raw function or
/// a component not built with the SDK).
fn kind_fits(op: Op, kind: FunctionKind) -> Option<bool> {
    let family = match kind {
        FunctionKind::Map | FunctionKind::TryMap => Op::Map,
        FunctionKind::FlatMap | FunctionKind::TryFlatMap => Op::FlatMap,
        FunctionKind::Filter | FunctionKind::TryFilter => Op::Filter,
        FunctionKind::Update | FunctionKind::UpdateWithKey => Op::UpdateStateByKey,
        FunctionKind::MapWithState => Op::MapWithState,
        FunctionKind::MapPartitions
        | FunctionKind::Raw
        | FunctionKind::Reduce
        | FunctionKind::Foreach
        | FunctionKind::TryForeach
        | FunctionKind::ForeachBatch => return None,
    };
    match op {
        Op::Map | Op::FlatMap | Op::Filter | Op::UpdateStateByKey | Op::MapWithState => {
            Some(op == family)
        }
        _ => None,
    }
}

fn suggested_op(kind: FunctionKind) -> &'static str {
    match kind {
        FunctionKind::Map | FunctionKind::TryMap => "map",
        FunctionKind::FlatMap | FunctionKind::TryFlatMap => "flat_map",
        FunctionKind::Filter | FunctionKind::TryFilter => "filter",
        FunctionKind::Update | FunctionKind::UpdateWithKey => "update_state_by_key",
        FunctionKind::MapWithState => "map_with_state",
        FunctionKind::MapPartitions
        | FunctionKind::Raw
        | FunctionKind::Reduce
        | FunctionKind::Foreach
        | FunctionKind::TryForeach
        | FunctionKind::ForeachBatch => "map_partitions",
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
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

/// Components listed in a "components there: …" hint.
const MAX_LISTED_COMPONENTS: usize = 50;

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

/// A static data set or initial state file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StaticDataError {
    /// Not a regular file, larger than [`MAX_STATIC_BYTES`], or unreadable.
    #[error(transparent)]
    File(#[from] FileError),
    /// A line that is not of the file's format.
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// Load a static data set (a regular file of at most [`MAX_STATIC_BYTES`]), saying which line
/// is bad.
pub fn load_static(path: &Path, format: StaticFormat) -> Result<StaticTable, StaticDataError> {
    let text = read_regular_file(path, MAX_STATIC_BYTES)?;
    let mut table = StaticTable {
        rows: HashMap::new(),
        path: path.to_path_buf(),
    };
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let bad = |problem: String| StaticDataError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            problem,
        };
        let (key, value) = match format {
            StaticFormat::Kv => {
                let Some(tab) = line.iter().position(|&b| b == b'\t') else {
                    return Err(bad("expected KEY<TAB>VALUE, found no tab".into()));
                };
                (line[..tab].to_vec(), line[tab + 1..].to_vec())
            }
            StaticFormat::Jsonl => {
                let row: serde_json::Value =
                    serde_json::from_slice(line).map_err(|e| bad(format!("not JSON: {e}")))?;
                let (Some(key), Some(value)) = (row.get("key"), row.get("value")) else {
                    return Err(bad("expected {\"key\": …, \"value\": …}".into()));
                };
                (json_bytes(key), json_bytes(value))
            }
        };
        table.rows.entry(key).or_default().push(value);
    }
    Ok(table)
}

/// The hint for a static file that cannot be used.
fn static_hint(field: &str, e: &StaticDataError) -> Option<String> {
    match e {
        StaticDataError::File(FileError::NotRegular { .. }) => Some(format!(
            "point `{field}` at a regular file; devices, FIFOs and directories are not read"
        )),
        StaticDataError::File(FileError::TooLarge { .. }) => Some(format!(
            "a static file may hold at most {MAX_STATIC_BYTES} bytes (64 MiB); keep larger data in the state store (update_state_by_key) instead"
        )),
        StaticDataError::File(FileError::Io { .. }) => None,
        StaticDataError::Line { .. } => Some(
            "KEY<TAB>VALUE lines, or format = \"jsonl\" for {\"key\": …, \"value\": …} lines"
                .into(),
        ),
    }
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
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
        assert_eq!(kind_fits(Op::Filter, FunctionKind::TryFilter), Some(true));
        assert_eq!(kind_fits(Op::Map, FunctionKind::Filter), Some(false));
        assert_eq!(kind_fits(Op::MapPartitions, FunctionKind::Filter), None);
        assert_eq!(kind_fits(Op::Map, FunctionKind::Raw), None);
        assert_eq!(kind_fits(Op::Map, FunctionKind::TryMap), Some(true));
        assert_eq!(kind_fits(Op::Map, FunctionKind::FlatMap), Some(false));
        assert_eq!(
            kind_fits(Op::UpdateStateByKey, FunctionKind::Update),
            Some(true)
        );
        assert_eq!(
            kind_fits(Op::UpdateStateByKey, FunctionKind::MapWithState),
            Some(false)
        );
        assert_eq!(
            kind_fits(Op::MapWithState, FunctionKind::MapWithState),
            Some(true)
        );
    }

    #[test]
    fn static_data_loads_or_names_the_line() {
        let dir = std::env::temp_dir().join(format!("sluice-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kv = dir.join("users.tsv");
        std::fs::write(&kv, "1\talice\n2\tbob\n1\tal\n").unwrap();
        let t = load_static(&kv, StaticFormat::Kv).unwrap();
        assert_eq!(
            t.rows[&b"1".to_vec()],
            vec![b"alice".to_vec(), b"al".to_vec()]
        );
        std::fs::write(&kv, "1\talice\nbroken\n").unwrap();
        assert!(
            load_static(&kv, StaticFormat::Kv)
                .unwrap_err()
                .to_string()
                .ends_with("users.tsv:2: expected KEY<TAB>VALUE, found no tab")
        );
        assert!(matches!(
            load_static(Path::new("/dev/zero"), StaticFormat::Kv),
            Err(StaticDataError::File(FileError::NotRegular { .. }))
        ));
        let jl = dir.join("users.jsonl");
        std::fs::write(&jl, "{\"key\": 1, \"value\": {\"name\": \"a\"}}\n").unwrap();
        let t = load_static(&jl, StaticFormat::Jsonl).unwrap();
        assert_eq!(t.rows[&b"1".to_vec()], vec![br#"{"name":"a"}"#.to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
