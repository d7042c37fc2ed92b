//! Every operator of a derived stream, one file per operator or family, each owning both its
//! planning (how many inputs, which UDF role, which manifest fields apply, its codecs, its
//! checks) and its run per batch (inputs, what it remembers, outputs).
//!
//! - [`OperatorKind`] is the planning half: one value per manifest name (`map`, `join`, …),
//!   listed once in [`KINDS`]. The planner (the `plan` module) does what is common to all —
//!   arity, resolving `udf`/`builtin`, fields that do not apply, inputs' slides — and asks the
//!   kind for the rest.
//! - [`Operator`] is the running half: one value per planned stream, kept in the plan. The
//!   executor gives it the batch's inputs, its [`Memory`] and the batch's state writes.
//!
//! How to add an operator: write `operators/<name>.rs` with a `pub static` value implementing
//! [`OperatorKind`] and a type implementing [`Operator`], and add it to [`KINDS`]. Nothing else
//! names operators: the planner, the executor, checkpoints and the Rust API work through these
//! two traits. An operator that keeps state returns its layout from [`Operator::layout`]; a new
//! layout is a new [`StateLayout`] variant, which the compiler then asks checkpoints to
//! describe.

pub mod count;
pub mod event_time;
pub mod group_by_key;
pub mod isolate;
pub mod join;
pub mod join_static;
pub mod keyed;
pub mod reduce;
pub mod reducer;
pub mod repartition;
pub mod spec;
pub mod state;
#[cfg(test)]
mod tests;
pub mod transform;
pub mod union;
pub mod window;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::batch::codec::Codec;
use crate::metrics::Registry;
use crate::state::{StateError, StateStore, StateTable, StateWrites};
use crate::udf::{CallContext, CallError, FunctionKind, Role, UdfFunction};
pub use reducer::Reducer;
pub use spec::{Builtin, OnError, OutputMode, StaticFormat, StreamSpec};

/// Every operator a manifest or the Rust API can name. The one place an operator is registered.
pub static KINDS: &[&dyn OperatorKind] = &[
    &transform::MAP,
    &transform::FLAT_MAP,
    &transform::FILTER,
    &transform::MAP_PARTITIONS,
    &transform::TRANSFORM,
    &union::UNION,
    &repartition::REPARTITION,
    &count::COUNT,
    &count::COUNT_BY_VALUE,
    &reduce::REDUCE,
    &reduce::REDUCE_BY_KEY,
    &group_by_key::GROUP_BY_KEY,
    &join::JOIN,
    &join::LEFT_OUTER_JOIN,
    &join::RIGHT_OUTER_JOIN,
    &join::FULL_OUTER_JOIN,
    &join::COGROUP,
    &join_static::JOIN_STATIC,
    &window::WINDOW,
    &window::COUNT_BY_WINDOW,
    &window::REDUCE_BY_WINDOW,
    &window::REDUCE_BY_KEY_AND_WINDOW,
    &window::COUNT_BY_VALUE_AND_WINDOW,
    &window::GROUP_BY_KEY_AND_WINDOW,
    &state::UPDATE_STATE_BY_KEY,
    &state::MAP_WITH_STATE,
    &state::STATE_SNAPSHOTS,
    &event_time::EVENT_TIME_WINDOW,
];

/// The operator a manifest name stands for.
pub fn kind(name: &str) -> Option<&'static dyn OperatorKind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// Why an operator could not produce its output.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A UDF call failed.
    #[error(transparent)]
    Udf(#[from] CallError),
    /// The records do not fit the operator (an unkeyed stream into a keyed operator).
    #[error("{0}")]
    Input(String),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A partition would pass what one batch column can hold (4 GiB).
    #[error(transparent)]
    Batch(#[from] crate::batch::BatchError),
}

/// A UDF of the plan, by its place in the plan's UDF table ([`BatchScope::udf`] gives the
/// version bound for the batch being run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdfRef(pub usize);

/// What an operator sees of the batch it works on.
pub struct BatchScope<'a> {
    /// The worker pool.
    pub pool: &'a rayon::ThreadPool,
    /// The job's partition count.
    pub partitions: usize,
    /// The batch time.
    pub time: i64,
    /// The batch id.
    pub id: u64,
    /// The job's tenant.
    pub tenant: &'a Arc<str>,
    /// The job.
    pub job: &'a Arc<str>,
    /// The UDFs of the plan as bound for this batch, by [`UdfRef`]: read once per batch, so a
    /// batch never mixes versions of a UDF.
    pub udfs: &'a [Arc<UdfFunction>],
    /// Where operators count what they drop.
    pub registry: &'a Registry,
}

impl BatchScope<'_> {
    /// The labels of a UDF call on `partition`.
    pub fn context(&self, partition: usize) -> CallContext {
        CallContext {
            tenant: self.tenant.clone(),
            job: self.job.clone(),
            batch_id: self.id,
            batch_time: self.time,
            partition: partition as u32,
        }
    }

    /// The function bound to `r` for this batch.
    ///
    /// # Panics
    /// Never for a [`UdfRef`] the planner made: the table and the refs come from one plan.
    pub fn udf(&self, r: UdfRef) -> &UdfFunction {
        &self.udfs[r.0]
    }
}

/// What a stream remembers between batches. A clone is what a batch run again, or a shadow
/// run of a canary, starts from (a state table is a handle to the store, its entries are not
/// copied; a window buffer's partials are).
#[derive(Clone)]
pub enum Memory {
    /// Nothing.
    None,
    /// A batch-time window's partials, in memory (mirrored in the store with a checkpoint).
    Buffer(window::WindowBuffer),
    /// Entries in the state store.
    Table(StateTable),
}

impl Memory {
    /// Bytes held in memory that count against the job's state limit.
    pub fn buffered_bytes(&self) -> Option<u64> {
        match self {
            Memory::Buffer(b) => Some(b.size()),
            Memory::None | Memory::Table(_) => None,
        }
    }
}

/// An input of a stream during a batch.
pub struct Input<'a> {
    /// Its partitions (none when it has no batch at this time).
    pub parts: &'a [Batch],
    /// Whether it has a batch at this time (a window's input between slides has not).
    pub active: bool,
    /// How its keys read.
    pub key_codec: Codec,
    /// How its values read.
    pub value_codec: Codec,
    /// Its snapshot, when it is a state stream asked for one.
    pub snapshot: Option<&'a [Batch]>,
}

/// What an operator gets to run one batch.
pub struct RunCx<'a, 'b> {
    /// The batch.
    pub scope: &'a BatchScope<'b>,
    /// The stream's name.
    pub stream: &'a str,
    /// Its inputs, in order.
    pub inputs: Vec<Input<'a>>,
    /// What it remembers.
    pub memory: &'a mut Memory,
    /// The batch's state changes, committed with the batch.
    pub writes: &'a mut StateWrites,
    /// Whether a later stream reads this one's snapshot ([`Operator::snapshot_for`]).
    pub snapshot_wanted: bool,
    /// Out: the stream's snapshot, when wanted.
    pub snapshot: Option<Vec<Batch>>,
    /// Out: records dropped as late (the batch report counts them).
    pub late_records: u64,
    /// Out: records isolated under `on_error = "dead_letter"`, for the dead-letter store.
    pub dead_letters: Vec<crate::state::dead_letters::DeadLetter>,
}

impl<'a> RunCx<'a, '_> {
    /// Input `k`'s partitions (empty when there is no such input or it has no batch).
    pub fn input(&self, k: usize) -> &'a [Batch] {
        self.inputs.get(k).map_or(&[][..], |i| i.parts)
    }

    /// How input `k`'s values read.
    pub fn value_codec(&self, k: usize) -> Codec {
        self.inputs
            .get(k)
            .map_or(Codec::default(), |i| i.value_codec)
    }

    /// How input `k`'s keys read.
    pub fn key_codec(&self, k: usize) -> Codec {
        self.inputs.get(k).map_or(Codec::default(), |i| i.key_codec)
    }

    /// Whether every input has a batch at this time.
    pub fn inputs_active(&self) -> bool {
        self.inputs.iter().all(|i| i.active)
    }
}

/// What an operator gets when its job starts, to set up what it remembers.
pub struct OpenCx<'a> {
    /// The job's state store, when it has one.
    pub store: Option<&'a StateStore>,
    /// The stream's name (its table's name in the store).
    pub stream: &'a str,
    /// The job's name.
    pub job: &'a str,
    /// Whether the job checkpoints.
    pub checkpointed: bool,
}

impl OpenCx<'_> {
    /// The stream's table in the store (none without a store).
    pub fn table(&self) -> Option<StateTable> {
        self.store.map(|store| store.table(self.stream))
    }
}

/// What the job does after its input ends with `--until-idle`, so that a stream that holds
/// data past its input shows it (Structured Streaming's available-now trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Nothing: its output follows its input.
    None,
    /// One more, empty batch (event-time windows: the watermark moves past the last data).
    OneBatch,
    /// Batches until this many ms after the last input (a batch-time window's length).
    For(i64),
}

/// A planned stream's operator: runs every batch.
pub trait Operator: Send + Sync + std::fmt::Debug {
    /// Run one batch; `Ok(None)` when the stream has no batch at this time (a window between
    /// slides).
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError>;

    /// Whether it runs at batch times where its inputs have no batch (windows do, to slide).
    fn runs_without_input(&self) -> bool {
        false
    }

    /// Whether it keeps entries in the state store (given whether the job checkpoints).
    fn keeps_state(&self, checkpointed: bool) -> bool {
        let _ = checkpointed;
        false
    }

    /// The layout of what it remembers, for checkpoints to tell whether a changed plan can read
    /// it; `None` for operators that remember nothing.
    fn layout(&self) -> Option<StateLayout> {
        None
    }

    /// The UDFs it calls.
    fn udfs(&self) -> Vec<UdfRef> {
        Vec::new()
    }

    /// Set up what it remembers when the job starts.
    fn open(&self, cx: &OpenCx<'_>) -> Result<Memory, StateError> {
        let _ = cx;
        Ok(Memory::None)
    }

    /// The largest event time it has seen, for the checkpoint (event-time windows).
    fn watermark(&self, memory: &Memory) -> Result<Option<i64>, StateError> {
        let _ = memory;
        Ok(None)
    }

    /// What `--until-idle` does after the input ends.
    fn drain(&self) -> Drain {
        Drain::None
    }

    /// Whether it needs a batch at every slide time (windows: the scheduler fills times the
    /// clock skipped with empty batches).
    fn needs_every_batch(&self) -> bool {
        false
    }

    /// Whether a `state_snapshots` stream may read this one's snapshot.
    fn has_snapshots(&self) -> bool {
        false
    }

    /// Whether it reads its input's snapshot (so the input computes one).
    fn reads_snapshot(&self) -> bool {
        false
    }
}

/// How many inputs an operator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one.
    One,
    /// Exactly two: left and right.
    Two,
    /// Two or more.
    Many,
}

impl Arity {
    /// Whether `n` inputs fit.
    pub fn fits(self, n: usize) -> bool {
        match self {
            Arity::One => n == 1,
            Arity::Two => n == 2,
            Arity::Many => n >= 2,
        }
    }

    /// What a manifest should say.
    pub fn wanted(self) -> &'static str {
        match self {
            Arity::One => "exactly one input: input = \"upstream\"",
            Arity::Two => "exactly two inputs: inputs = [\"left\", \"right\"]",
            Arity::Many => "two or more inputs: inputs = [\"a\", \"b\"]",
        }
    }
}

/// Which UDF an operator calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdfUse {
    /// None: it runs in the host.
    None,
    /// A function of `role`, required unless `builtin` may stand in for it.
    Needs {
        /// The world the function must be of.
        role: Role,
        /// Whether a `builtin` may be given instead.
        builtin: bool,
    },
}

/// The optional fields of a stream in a manifest, for "does not apply" checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `partitions`
    Partitions,
    /// `path`
    Path,
    /// `format`
    Format,
    /// `how`
    How,
    /// `static_codec`
    StaticCodec,
    /// `builtin`
    Builtin,
    /// `window`
    Window,
    /// `slide`
    Slide,
    /// `inverse`
    Inverse,
    /// `filter`
    Filter,
    /// `timeout`
    Timeout,
    /// `initial_state`
    InitialState,
    /// `watermark`
    Watermark,
    /// `output_mode`
    OutputMode,
    /// `max_event_time_ahead`
    MaxEventTimeAhead,
}

impl Field {
    /// Every field, in manifest documentation order.
    pub const ALL: [Field; 15] = [
        Field::Partitions,
        Field::Path,
        Field::Format,
        Field::How,
        Field::StaticCodec,
        Field::Builtin,
        Field::Window,
        Field::Slide,
        Field::Inverse,
        Field::Filter,
        Field::Timeout,
        Field::InitialState,
        Field::Watermark,
        Field::OutputMode,
        Field::MaxEventTimeAhead,
    ];

    /// Its name in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Field::Partitions => "partitions",
            Field::Path => "path",
            Field::Format => "format",
            Field::How => "how",
            Field::StaticCodec => "static_codec",
            Field::Builtin => "builtin",
            Field::Window => "window",
            Field::Slide => "slide",
            Field::Inverse => "inverse",
            Field::Filter => "filter",
            Field::Timeout => "timeout",
            Field::InitialState => "initial_state",
            Field::Watermark => "watermark",
            Field::OutputMode => "output_mode",
            Field::MaxEventTimeAhead => "max_event_time_ahead",
        }
    }

    /// Whether the stream sets it.
    pub fn present(self, s: &StreamSpec) -> bool {
        match self {
            Field::Partitions => s.partitions.is_some(),
            Field::Path => s.path.is_some(),
            Field::Format => s.format.is_some(),
            Field::How => s.how.is_some(),
            Field::StaticCodec => s.static_codec.is_some(),
            Field::Builtin => s.builtin.is_some(),
            Field::Window => s.window.is_some(),
            Field::Slide => s.slide.is_some(),
            Field::Inverse => s.inverse.is_some(),
            Field::Filter => s.filter.is_some(),
            Field::Timeout => s.timeout.is_some(),
            Field::InitialState => s.initial_state.is_some(),
            Field::Watermark => s.watermark.is_some(),
            Field::OutputMode => s.output_mode.is_some(),
            Field::MaxEventTimeAhead => s.max_event_time_ahead.is_some(),
        }
    }
}

/// A planned input, as an operator's planning sees it.
pub struct PlannedInput<'a> {
    /// Its name.
    pub name: &'a str,
    /// How its keys read.
    pub key_codec: Codec,
    /// How its values read.
    pub value_codec: Codec,
    /// It has a batch every this many ms.
    pub slide: i64,
    /// Its operator (`None`: a source).
    pub op: Option<&'a dyn Operator>,
}

/// What the planner does for an operator's planning: report problems, resolve extra UDFs.
pub trait PlanServices {
    /// Report a problem with the stream being planned.
    fn error(&mut self, message: String, hint: Option<String>);
    /// Resolve `component#function` to a function of `role`, reporting a problem if it cannot
    /// be; `user` names what needs it in messages (`a window filter`).
    fn function(&mut self, udf: &str, role: Role, user: &str) -> Option<UdfRef>;
    /// A function resolved earlier.
    fn udf(&self, r: UdfRef) -> &UdfFunction;
    /// The job's batch interval, ms.
    fn batch_interval(&self) -> i64;
}

/// What an operator's planning gets.
pub struct PlanCx<'a> {
    /// The stream as declared.
    pub spec: &'a StreamSpec,
    /// Its inputs, planned.
    pub inputs: &'a [PlannedInput<'a>],
    /// The stream's `udf`, resolved, when the operator takes one.
    pub function: Option<UdfRef>,
    /// The stream's reducer: its `udf` (a reducer) or `builtin`.
    pub reducer: Option<Reducer>,
    /// The planner.
    pub services: &'a mut dyn PlanServices,
}

impl PlanCx<'_> {
    /// Report a problem.
    pub fn error(&mut self, message: String, hint: Option<String>) {
        self.services.error(message, hint);
    }

    /// The first input's codecs (text, text without one).
    pub fn input_codecs(&self) -> (Codec, Codec) {
        self.inputs
            .first()
            .map_or((Codec::Text, Codec::Text), |i| (i.key_codec, i.value_codec))
    }

    /// How often the first input has a batch, ms.
    pub fn input_slide(&self) -> i64 {
        self.inputs
            .first()
            .map_or(self.services.batch_interval(), |i| i.slide)
            .max(1)
    }

    /// The codec of what the stream's reducer produces from values read as `input`.
    pub fn reduced_codec(&self, input: Codec) -> Codec {
        self.reducer.as_ref().map_or(input, |r| r.codec(input))
    }
}

/// A stream's operator, planned.
pub struct Planned {
    /// What runs.
    pub op: Arc<dyn Operator>,
    /// How its output keys read, unless the stream says otherwise.
    pub key_codec: Codec,
    /// How its output values read, unless the stream says otherwise.
    pub value_codec: Codec,
    /// How often it has a batch, ms; `None`: as often as its input.
    pub slide: Option<i64>,
}

impl Planned {
    /// An operator whose output has the given codecs, at its input's times.
    pub fn new(op: impl Operator + 'static, key_codec: Codec, value_codec: Codec) -> Self {
        Self {
            op: Arc::new(op),
            key_codec,
            value_codec,
            slide: None,
        }
    }
}

/// The planning half of an operator: one per manifest name.
pub trait OperatorKind: Sync {
    /// Its name in manifests (`flat_map`).
    fn name(&self) -> &'static str;

    /// How many inputs it takes.
    fn arity(&self) -> Arity {
        Arity::One
    }

    /// The UDF it calls.
    fn udf(&self) -> UdfUse {
        UdfUse::None
    }

    /// Whether only functions the SDK marked with its own kind fit it (a `filter` function
    /// used as `map` is an error); else any function of its UDF's world does.
    fn checks_kind(&self) -> bool {
        false
    }

    /// The optional fields that apply to it (`builtin` needs listing too).
    fn fields(&self) -> &'static [Field] {
        &[]
    }

    /// Check the rest of the stream and build its operator; `None` after reporting problems.
    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned>;

    /// Whether a failing UDF call can be narrowed to the records that caused it, the others'
    /// output unchanged (`on_error = "dead_letter"`): true only for per-record operators.
    fn isolates(&self) -> bool {
        false
    }
}

/// The operator a function the SDK marked as `kind` is made for, when it is made for one.
pub fn fitting_op(kind: FunctionKind) -> Option<&'static str> {
    match kind {
        FunctionKind::Map | FunctionKind::TryMap => Some("map"),
        FunctionKind::FlatMap | FunctionKind::TryFlatMap => Some("flat_map"),
        FunctionKind::Filter | FunctionKind::TryFilter => Some("filter"),
        FunctionKind::Update | FunctionKind::UpdateWithKey => Some("update_state_by_key"),
        FunctionKind::MapWithState => Some("map_with_state"),
        FunctionKind::MapPartitions
        | FunctionKind::Raw
        | FunctionKind::Reduce
        | FunctionKind::Foreach
        | FunctionKind::TryForeach
        | FunctionKind::ForeachBatch => None,
    }
}

/// The operator to suggest for a function the SDK marked as `kind`.
pub fn suggested_op(kind: FunctionKind) -> &'static str {
    fitting_op(kind).unwrap_or("map_partitions")
}

/// The layout of what a stateful operator remembers: a checkpoint keeps it, and a changed plan
/// whose layout differs cannot read the old state. Serialized with serde's names, so renaming a
/// Rust variant does not change a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StateLayout {
    /// A batch-time window.
    Window {
        /// Length, ms.
        length: i64,
        /// Slide, ms.
        slide: i64,
        /// Updated incrementally with an inverse (state in RocksDB), else partials per batch.
        incremental: bool,
        /// The builtin reducer, when one reduces it.
        builtin: Option<Builtin>,
    },
    /// `update_state_by_key` or `map_with_state`.
    State {
        /// `map_with_state` (else `update_state_by_key`).
        map_with_state: bool,
        /// The builtin updater, when one computes it.
        builtin: Option<Builtin>,
    },
    /// An event-time window.
    EventTimeWindow {
        /// Length, ms.
        length: i64,
        /// Slide, ms.
        slide: i64,
        /// The builtin reducer, when one reduces it.
        builtin: Option<Builtin>,
    },
}
