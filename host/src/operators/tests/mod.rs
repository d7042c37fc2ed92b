//! Unit tests of the operators that run without Wasm: the shuffle and grouping, the builtin
//! reducers through `reduce`/`reduce_by_key`, counts, joins, batch-time windows (in memory and
//! incremental in RocksDB), `update_state_by_key` with a builtin, and event-time windows.
//!
//! Operators run the way the executor's `compute` runs them: a [`BatchScope`] per batch, a
//! [`RunCx`] with the stream's inputs, its [`Memory`] and the batch's [`StateWrites`], which
//! are committed to a real [`StateStore`] (in a temporary folder) before the next batch.

mod count;
mod event_time;
mod join;
mod keyed;
mod reduce;
mod state;
mod window;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    BatchScope, Builtin, Input, Memory, OpError, OpenCx, Operator, PlanCx, PlanServices, Planned,
    PlannedInput, Reducer, RunCx, StreamSpec, UdfRef,
};
use crate::batch::codec::Codec;
use crate::batch::{Batch, key_hash};
use crate::metrics::{Registry, SeriesKey};
use crate::state::{Committed, StateStore, StateTable, StateWrites};
use crate::udf::{Role, UdfFunction};

/// The tenant every test batch runs for.
pub const TENANT: &str = "tests";
/// The job every test batch runs for.
pub const JOB: &str = "optests";

/// What a batch needs besides its records: a worker pool of 2 threads, an empty UDF table, a
/// fresh metrics registry, and the job's partition count.
pub struct Env {
    pool: rayon::ThreadPool,
    /// Where operators count what they drop.
    pub registry: Registry,
    tenant: Arc<str>,
    job: Arc<str>,
    udfs: Vec<Arc<UdfFunction>>,
    /// The job's partition count.
    pub partitions: usize,
}

impl Env {
    /// An environment for a job of `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        Self {
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .expect("a pool of 2 threads"),
            registry: Registry::default(),
            tenant: Arc::from(TENANT),
            job: Arc::from(JOB),
            udfs: Vec::new(),
            partitions,
        }
    }

    /// The scope of batch `id` at `time`.
    pub fn scope(&self, id: u64, time: i64) -> BatchScope<'_> {
        BatchScope {
            pool: &self.pool,
            partitions: self.partitions,
            time,
            id,
            tenant: &self.tenant,
            job: &self.job,
            udfs: &self.udfs,
            registry: &self.registry,
        }
    }

    /// A counter of this job's `stream`, as operators label it.
    pub fn counter(&self, name: &str, stream: &str) -> u64 {
        self.registry.counter(&SeriesKey::new(
            name,
            &[("tenant", TENANT), ("job", JOB), ("stream", stream)],
        ))
    }
}

/// The planner as an operator's planning sees it, without UDFs: it collects the problems
/// reported and resolves no function.
pub struct FakePlanner {
    /// The problems reported, in order.
    pub errors: Vec<String>,
    /// The job's batch interval, ms.
    pub interval: i64,
}

impl PlanServices for FakePlanner {
    fn error(&mut self, message: String, _hint: Option<String>) {
        self.errors.push(message);
    }

    fn function(&mut self, udf: &str, _role: Role, user: &str) -> Option<UdfRef> {
        self.errors.push(format!("{user}: no UDFs here ({udf})"));
        None
    }

    fn udf(&self, _r: UdfRef) -> &UdfFunction {
        unreachable!("these tests resolve no UDF")
    }

    fn batch_interval(&self) -> i64 {
        self.interval
    }
}

/// Plan `spec` through its operator's [`OperatorKind`](super::OperatorKind), with one input
/// (`upstream`, a source with a batch every `interval` ms and the given codecs) per name in
/// `spec.inputs` and the spec's `builtin` as its reducer, as the planner resolves it. The
/// problems reported when planning fails.
pub fn plan(
    spec: &StreamSpec,
    codecs: (Codec, Codec),
    interval: i64,
) -> Result<Planned, Vec<String>> {
    let kind = super::kind(&spec.op).expect("an operator name");
    let inputs: Vec<PlannedInput<'_>> = spec
        .inputs
        .iter()
        .map(|name| PlannedInput {
            name,
            key_codec: codecs.0,
            value_codec: codecs.1,
            slide: interval,
            op: None,
        })
        .collect();
    let mut planner = FakePlanner {
        errors: Vec::new(),
        interval,
    };
    let planned = kind.plan(&mut PlanCx {
        spec,
        inputs: &inputs,
        function: None,
        reducer: spec.builtin.map(Reducer::Builtin),
        services: &mut planner,
    });
    match planned {
        Some(p) if planner.errors.is_empty() => Ok(p),
        _ => Err(planner.errors),
    }
}

/// A stream spec of `op` over the input `upstream` with `builtin` as its reducer.
pub fn spec(op: &str, builtin: Option<super::Builtin>) -> StreamSpec {
    let mut s = StreamSpec::new("out", op, vec!["upstream".into()]);
    s.builtin = builtin;
    s
}

/// What `b` makes of `values`, folded one by one and written as the builtin writes it.
pub fn fold(b: Builtin, values: &[&str]) -> String {
    match b {
        Builtin::Count => values.len().to_string(),
        Builtin::SumI64 => values
            .iter()
            .map(|v| v.parse::<i64>().expect("an integer"))
            .sum::<i64>()
            .to_string(),
        Builtin::SumF64 => format!(
            "{}",
            values
                .iter()
                .map(|v| v.parse::<f64>().expect("a number"))
                .fold(0.0, |a, x| a + x)
        ),
        Builtin::CountAndSum => format!(
            "[{},{}]",
            values.len(),
            values
                .iter()
                .map(|v| v.parse::<i64>().expect("an integer"))
                .sum::<i64>()
        ),
    }
}

/// A keyed batch of `(key, value)` records, every event time 0.
pub fn keyed(records: &[(&str, &str)]) -> Batch {
    let mut b = Batch::empty(true);
    for (k, v) in records {
        b.push(Some(k.as_bytes()), v.as_bytes(), 0);
    }
    b
}

/// A keyed batch of `(key, value, event time)` records.
pub fn timed(records: &[(&str, &str, i64)]) -> Batch {
    let mut b = Batch::empty(true);
    for (k, v, t) in records {
        b.push(Some(k.as_bytes()), v.as_bytes(), *t);
    }
    b
}

/// An unkeyed batch of values, every event time 0.
pub fn unkeyed(values: &[&str]) -> Batch {
    let mut b = Batch::empty(false);
    for v in values {
        b.push(None, v.as_bytes(), 0);
    }
    b
}

/// `records` dealt round-robin into `n` keyed partitions (as a source gives them: equal keys
/// spread over partitions).
pub fn dealt(records: &[(String, String)], n: usize) -> Vec<Batch> {
    let mut parts: Vec<Batch> = (0..n).map(|_| Batch::empty(true)).collect();
    for (i, (k, v)) in records.iter().enumerate() {
        parts[i % n].push(Some(k.as_bytes()), v.as_bytes(), 0);
    }
    parts
}

/// Owned `(key, value)` pairs from borrowed ones.
pub fn owned(records: &[(&str, &str)]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Text of bytes.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every record of `parts` as `(key, value, event time)` text, sorted.
pub fn all_records(parts: &[Batch]) -> Vec<(Option<String>, String, i64)> {
    let mut out: Vec<_> = parts
        .iter()
        .flat_map(|p| p.records())
        .map(|r| (r.key.map(text), text(r.value), r.event_time))
        .collect();
    out.sort();
    out
}

/// The records of keyed `parts` as a map from key to value, asserting each key appears once
/// and in the partition its hash names (what the shuffle promises for keyed outputs).
pub fn by_key(parts: &[Batch]) -> BTreeMap<String, String> {
    let n = parts.len() as u64;
    let mut out = BTreeMap::new();
    for (j, p) in parts.iter().enumerate() {
        for r in p.records() {
            let key = r.key.expect("keyed output");
            assert_eq!(
                (key_hash(key) % n) as usize,
                j,
                "key {:?} is in partition {j} of {n}",
                text(key)
            );
            let previous = out.insert(text(key), text(r.value));
            assert!(previous.is_none(), "key {:?} appears twice", text(key));
        }
    }
    out
}

/// An active input with the given partitions and codecs.
pub fn input_with(parts: &[Batch], key_codec: Codec, value_codec: Codec) -> Input<'_> {
    Input {
        parts,
        active: true,
        key_codec,
        value_codec,
        snapshot: None,
    }
}

/// An active input of text keys and values.
pub fn input(parts: &[Batch]) -> Input<'_> {
    input_with(parts, Codec::Text, Codec::Text)
}

/// What one run of an operator gave, besides its output.
pub struct Ran {
    /// Its output: `None` when the stream has no batch at this time.
    pub output: Option<Vec<Batch>>,
    /// Records it dropped as late.
    pub late_records: u64,
    /// Its snapshot, when one was wanted.
    pub snapshot: Option<Vec<Batch>>,
}

/// Run `op` for one batch as the executor's `compute` does: skipped (no batch) when an input
/// has none and the operator does not run without input; otherwise one [`RunCx`] with the
/// inputs, the memory and the batch's writes.
pub fn run_op(
    scope: &BatchScope<'_>,
    op: &dyn Operator,
    stream: &str,
    inputs: Vec<Input<'_>>,
    memory: &mut Memory,
    writes: &mut StateWrites,
    snapshot_wanted: bool,
) -> Result<Ran, OpError> {
    if !inputs.iter().all(|i| i.active) && !op.runs_without_input() {
        return Ok(Ran {
            output: None,
            late_records: 0,
            snapshot: None,
        });
    }
    let mut cx = RunCx {
        scope,
        stream,
        inputs,
        memory,
        writes,
        snapshot_wanted,
        snapshot: None,
        late_records: 0,
        dead_letters: Vec::new(),
    };
    let output = op.run(&mut cx)?;
    Ok(Ran {
        output,
        late_records: cx.late_records,
        snapshot: cx.snapshot.take(),
    })
}

/// Run a stateless operator over inputs for one batch; its output, which must exist.
pub fn run_stateless(
    env: &Env,
    op: &dyn Operator,
    stream: &str,
    inputs: Vec<Input<'_>>,
) -> Result<Vec<Batch>, OpError> {
    let scope = env.scope(1, 1000);
    let mut memory = Memory::None;
    let mut writes = StateWrites::default();
    let ran = run_op(&scope, op, stream, inputs, &mut memory, &mut writes, false)?;
    assert!(
        writes.is_empty(),
        "a stateless operator staged state writes"
    );
    Ok(ran.output.expect("a stateless operator has a batch"))
}

/// A job's state store in a temporary folder, opened with the real [`StateStore::open`].
pub struct Store {
    /// The store.
    pub store: StateStore,
    _dir: tempfile::TempDir,
}

impl Store {
    /// A new store with a table for each of `streams`.
    pub fn new(streams: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store =
            StateStore::open(dir.path(), TENANT, JOB, streams).expect("open the state store");
        Self { store, _dir: dir }
    }

    /// The store closed and opened again on the same folder (a restart of the job). Every
    /// table of the old store must be dropped first: they keep the database open.
    pub fn reopen(self, streams: &[&str]) -> Self {
        let Store { store, _dir } = self;
        drop(store);
        let store =
            StateStore::open(_dir.path(), TENANT, JOB, streams).expect("reopen the state store");
        Self { store, _dir }
    }

    /// `stream`'s table.
    pub fn table(&self, stream: &str) -> StateTable {
        self.store.table(stream)
    }

    /// What `op` remembers when the job (re)starts, opened as the executor opens it.
    pub fn open(&self, op: &dyn Operator, stream: &str, checkpointed: bool) -> Memory {
        op.open(&OpenCx {
            store: Some(&self.store),
            stream,
            job: JOB,
            checkpointed,
        })
        .expect("open the operator's memory")
    }
}

/// Runs one operator over a sequence of batches as the executor does: batch ids count up,
/// each batch's state writes are committed (with its batch marker) before the next.
pub struct Driver<'a> {
    /// The environment.
    pub env: &'a Env,
    /// The operator.
    pub op: &'a dyn Operator,
    /// Its stream's name.
    pub stream: &'a str,
    /// What it remembers.
    pub memory: Memory,
    /// Where its writes are committed (none: they must stay empty).
    pub store: Option<&'a StateStore>,
    /// How its input's values read.
    pub value_codec: Codec,
    /// Whether a later stream reads its snapshot.
    pub snapshot_wanted: bool,
    /// Whether the last batch staged no state writes.
    pub last_writes_empty: bool,
    next_id: u64,
}

impl<'a> Driver<'a> {
    /// A driver of `op` with `memory`, committing into `store` if given.
    pub fn new(
        env: &'a Env,
        op: &'a dyn Operator,
        stream: &'a str,
        memory: Memory,
        store: Option<&'a StateStore>,
    ) -> Self {
        Self {
            env,
            op,
            stream,
            memory,
            store,
            value_codec: Codec::Text,
            snapshot_wanted: false,
            last_writes_empty: true,
            next_id: 0,
        }
    }

    /// Run the batch at `time` with `input` (`None`: the input has no batch now) and commit.
    pub fn step(&mut self, time: i64, input: Option<&[Batch]>) -> Result<Ran, OpError> {
        let id = self.next_id;
        self.next_id += 1;
        let scope = self.env.scope(id, time);
        let inputs = vec![match input {
            Some(parts) => input_with(parts, Codec::Text, self.value_codec),
            None => Input {
                active: false,
                ..input_with(&[], Codec::Text, self.value_codec)
            },
        }];
        let mut writes = StateWrites::default();
        let ran = run_op(
            &scope,
            self.op,
            self.stream,
            inputs,
            &mut self.memory,
            &mut writes,
            self.snapshot_wanted,
        )?;
        self.last_writes_empty = writes.is_empty();
        match self.store {
            Some(store) => store
                .commit(writes, Some(Committed { batch: id, time }))
                .expect("commit the batch's state"),
            None => assert!(writes.is_empty(), "writes without a store"),
        }
        Ok(ran)
    }
}

/// A small deterministic generator (xorshift), for repeatable pseudo-random inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
