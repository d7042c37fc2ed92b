//! `update_state_by_key` and `map_with_state` (Spark's `StateSpec`): per key, the batch's new
//! values and the stored state go to the updater, which returns the new state (or its removal)
//! and, for `map_with_state`, records to emit.
//!
//! State lives in the operator's RocksDB table as `key -> [last active batch time (8 bytes,
//! big-endian)][state, in the stream's codec]`. The input is shuffled into the state's
//! partitions, the table is read once and split the same way, and the partitions run in
//! parallel, one updater call each.
//!
//! As in Spark, `update_state_by_key` calls the updater for every key with state, new values or
//! not, and its stream is the whole state after the batch; `map_with_state` calls it only for
//! keys with new values and for keys timing out (idle longer than `timeout`: one last call
//! marked as timing out, after which the key is removed whatever the function returns).

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use std::sync::Arc;

use super::join_static::{StaticTable, load_static, static_hint};
use super::keyed::{groups, require_keys, shuffle_to};
use super::reducer::Acc;
use super::repartition::MAX_PARTITIONS;
use super::window::ms;
use super::{
    BatchScope, Builtin, Field, Memory, OpError, OpenCx, Operator, OperatorKind, PlanCx, Planned,
    Reducer, RunCx, StateLayout, UdfRef, UdfUse,
};
use crate::batch::codec::Codec;
use crate::batch::key_hash;
use crate::batch::{Batch, Column};
use crate::state::{SIZE, StateError, StateStore, StateTable, StateWrites};
use crate::udf::{Role, UpdateInput};

/// What computes a key's new state.
#[derive(Debug, Clone)]
pub enum Updater {
    /// An updater UDF.
    Udf(UdfRef),
    /// A builtin reducer folded into the state: new state = old state + reduce(new values).
    Builtin(Builtin),
}

/// `update_state_by_key` or `map_with_state`, with Spark's `StateSpec`.
#[derive(Debug, Clone)]
pub struct StateOp {
    /// The update function.
    pub updater: Updater,
    /// `map_with_state` (the stream is what the function emits) rather than
    /// `update_state_by_key` (the stream is the whole state).
    pub map_with_state: bool,
    /// How many partitions the state is spread over (`num_partitions`; 0: the job's).
    pub partitions: usize,
    /// Idle keys time out after this many ms.
    pub timeout: Option<i64>,
    /// States loaded once, when the job's state is new.
    pub initial: Option<Arc<StaticTable>>,
}

/// The planning of `update_state_by_key` and `map_with_state`.
pub struct StateOpKind {
    name: &'static str,
    map_with_state: bool,
}

/// `update_state_by_key`: per key, new values and old state in, new state out; the stream is
/// the whole state after every batch.
pub static UPDATE_STATE_BY_KEY: StateOpKind = StateOpKind {
    name: "update_state_by_key",
    map_with_state: false,
};

/// `map_with_state`: per key with new values (or timing out), state in, records out.
pub static MAP_WITH_STATE: StateOpKind = StateOpKind {
    name: "map_with_state",
    map_with_state: true,
};

impl OperatorKind for StateOpKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn udf(&self) -> UdfUse {
        UdfUse::Needs {
            role: Role::Updater,
            builtin: !self.map_with_state,
        }
    }

    fn checks_kind(&self) -> bool {
        true
    }

    fn fields(&self) -> &'static [Field] {
        if self.map_with_state {
            &[
                Field::Partitions,
                Field::Format,
                Field::InitialState,
                Field::Timeout,
            ]
        } else {
            &[
                Field::Partitions,
                Field::Format,
                Field::InitialState,
                Field::Builtin,
            ]
        }
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let s = cx.spec;
        if self.map_with_state && s.builtin.is_some() {
            cx.error(
                "map_with_state needs an updater UDF of kind map_with_state; builtins serve update_state_by_key".into(),
                None,
            );
        }
        if let Some(n) = s.partitions
            && !(1..=MAX_PARTITIONS).contains(&n)
        {
            cx.error(
                format!("partitions = {n} is not between 1 and {MAX_PARTITIONS}"),
                None,
            );
        }
        let updater = match (cx.function, &cx.reducer) {
            (Some(f), _) => Updater::Udf(f),
            (None, Some(Reducer::Builtin(b))) if !self.map_with_state => Updater::Builtin(*b),
            _ => return None,
        };
        let initial = match &s.initial_state {
            Some(path) => match load_static(path, s.format.unwrap_or_default()) {
                Ok(table) => Some(Arc::new(table)),
                Err(e) => {
                    let hint = static_hint("initial_state", &e);
                    cx.error(format!("initial_state: {e}"), hint);
                    return None;
                }
            },
            None => None,
        };
        let (key, _) = cx.input_codecs();
        let (key, value) = if self.map_with_state {
            (Codec::Text, Codec::Text)
        } else {
            (key, s.builtin.map_or(Codec::Text, |b| b.codec()))
        };
        Some(Planned::new(
            State(StateOp {
                updater,
                map_with_state: self.map_with_state,
                partitions: s.partitions.unwrap_or(0),
                // At least 1ms: checked with the other durations.
                timeout: s.timeout.map(ms),
                initial,
            }),
            key,
            value,
        ))
    }
}

/// A planned `update_state_by_key` or `map_with_state`.
#[derive(Debug)]
pub struct State(pub StateOp);

impl Operator for State {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        let Memory::Table(table) = &*cx.memory else {
            return Err(OpError::Input("a state operator without its state".into()));
        };
        let out = run(
            cx.scope,
            &self.0,
            cx.snapshot_wanted,
            table,
            cx.input(0),
            cx.writes,
            cx.stream,
        )?;
        cx.snapshot = out.snapshot;
        Ok(Some(out.records))
    }

    fn keeps_state(&self, _checkpointed: bool) -> bool {
        true
    }

    fn layout(&self) -> Option<StateLayout> {
        Some(StateLayout::State {
            map_with_state: self.0.map_with_state,
            builtin: match self.0.updater {
                Updater::Builtin(b) => Some(b),
                Updater::Udf(_) => None,
            },
        })
    }

    fn udfs(&self) -> Vec<UdfRef> {
        match self.0.updater {
            Updater::Udf(f) => vec![f],
            Updater::Builtin(_) => Vec::new(),
        }
    }

    fn open(&self, cx: &OpenCx<'_>) -> Result<Memory, StateError> {
        let (Some(store), Some(table)) = (cx.store, cx.table()) else {
            return Ok(Memory::None);
        };
        if let Some(initial) = &self.0.initial {
            seed(store, &table, initial, cx.job)?;
        }
        Ok(Memory::Table(table))
    }

    fn has_snapshots(&self) -> bool {
        self.0.map_with_state
    }
}

/// `state_snapshots`' planning.
pub struct StateSnapshotsKind;

/// `state_snapshots`: the whole state of a `map_with_state` stream after every batch (Spark's
/// `stateSnapshots`).
pub static STATE_SNAPSHOTS: StateSnapshotsKind = StateSnapshotsKind;

impl OperatorKind for StateSnapshotsKind {
    fn name(&self) -> &'static str {
        "state_snapshots"
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        match cx.inputs.first().and_then(|i| i.op) {
            Some(op) if op.has_snapshots() => {
                let (key, _) = cx.input_codecs();
                Some(Planned::new(StateSnapshots, key, Codec::Text))
            }
            _ => {
                cx.error(
                    "state_snapshots reads the state of a map_with_state stream".into(),
                    Some(
                        "set input to a map_with_state stream; update_state_by_key already is the whole state"
                            .into(),
                    ),
                );
                None
            }
        }
    }
}

/// A planned `state_snapshots`.
#[derive(Debug)]
pub struct StateSnapshots;

impl Operator for StateSnapshots {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        Ok(Some(
            cx.inputs
                .first()
                .and_then(|i| i.snapshot)
                .map(<[Batch]>::to_vec)
                .unwrap_or_default(),
        ))
    }

    fn reads_snapshot(&self) -> bool {
        true
    }
}

/// Load a state operator's initial states, once: the first time the job's state has the stream.
fn seed(
    store: &StateStore,
    table: &StateTable,
    initial: &StaticTable,
    job: &str,
) -> Result<(), StateError> {
    const SEEDED: &str = "seeded";
    if table.number(SEEDED)?.is_some() {
        return Ok(());
    }
    let mut writes = StateWrites::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for (key, values) in &initial.rows {
        if let Some(value) = values.last() {
            writes.put(table, key, entry(now, value), None);
        }
    }
    let size: i64 = writes.size_delta.iter().map(|(_, d)| d).sum();
    writes.set_number(table, SEEDED, 1);
    writes.set_number(table, SIZE, size);
    tracing::info!(%job, stream = %table.stream(), "loaded {} initial states from {}", initial.rows.len(), initial.path.display());
    store.commit(writes, None)
}

/// What one batch of a state operator produced.
pub struct StateOutput {
    /// The stream's records.
    pub records: Vec<Batch>,
    /// The whole state after the batch, when a `state_snapshots` stream reads it.
    pub snapshot: Option<Vec<Batch>>,
}

/// A stored state entry: when the key last had new values, and its state.
fn split_entry<'a>(table: &StateTable, value: &'a [u8]) -> Result<(i64, &'a [u8]), OpError> {
    value
        .split_first_chunk::<8>()
        .map(|(time, state)| (i64::from_be_bytes(*time), state))
        .ok_or_else(|| {
            OpError::State(StateError::Corrupt {
                table: table.stream().to_string(),
                what: "a state entry shorter than its timestamp".into(),
            })
        })
}

/// An entry as stored.
pub fn entry(last_active: i64, state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + state.len());
    v.extend_from_slice(&last_active.to_be_bytes());
    v.extend_from_slice(state);
    v
}

/// One batch of a state operator; `snapshots`: whether to return the whole state too.
pub fn run(
    scope: &BatchScope<'_>,
    op: &StateOp,
    snapshots: bool,
    table: &StateTable,
    input: &[Batch],
    writes: &mut StateWrites,
    stream: &str,
) -> Result<StateOutput, OpError> {
    let what = if op.map_with_state {
        "map_with_state"
    } else {
        "update_state_by_key"
    };
    require_keys(input, what, stream)?;
    let n = if op.partitions == 0 {
        scope.partitions
    } else {
        op.partitions
    };
    // A builtin folds values into the state, so each partition's values are folded per key
    // before the shuffle (Spark's map-side combine): the shuffle moves one record per key.
    let combined;
    let input = match &op.updater {
        Updater::Builtin(b) => {
            combined = combine(scope, *b, input)?;
            &combined[..]
        }
        Updater::Udf(_) => input,
    };
    let shuffled = shuffle_to(scope, input, n)?;
    let mut stored: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..n).map(|_| Vec::new()).collect();
    for (key, value) in table.scan(b"")? {
        stored[(key_hash(&key) % n as u64) as usize].push((key, value));
    }
    let results: Vec<(StateWrites, Batch, Option<Batch>)> = scope.pool.install(|| {
        shuffled
            .par_iter()
            .zip(stored.par_iter())
            .enumerate()
            .map(|(i, (p, s))| partition(scope, op, snapshots, table, i, p, s))
            .collect::<Result<Vec<_>, OpError>>()
    })?;
    let mut records = Vec::with_capacity(n);
    let mut snapshot = snapshots.then(Vec::new);
    for (w, out, snap) in results {
        writes.append(w);
        records.push(out);
        if let (Some(all), Some(s)) = (&mut snapshot, snap) {
            all.push(s);
        }
    }
    Ok(StateOutput { records, snapshot })
}

/// A key's stored entry: last active time, state, and the entry's size.
type Stored<'a> = (i64, &'a [u8], usize);

/// Each partition's values folded per key by a builtin: one accumulator record per key.
fn combine(scope: &BatchScope<'_>, b: Builtin, parts: &[Batch]) -> Result<Vec<Batch>, OpError> {
    scope.pool.install(|| {
        parts
            .par_iter()
            .map(|p| {
                let mut accs: FxHashMap<&[u8], Acc> = FxHashMap::default();
                let mut order = Vec::new();
                let keys = p.keys.as_ref();
                for (i, value) in p.values.iter().enumerate() {
                    let key = keys.and_then(|k| k.get(i)).unwrap_or_default();
                    let v = b.lift(value)?;
                    match accs.get_mut(key) {
                        Some(acc) => acc.add(v),
                        None => {
                            order.push(key);
                            accs.insert(key, v);
                        }
                    }
                }
                let mut out = Batch::empty(true);
                let mut buf = Vec::new();
                for key in order {
                    buf.clear();
                    accs[key].encode(&mut buf);
                    out.push(Some(key), &buf, scope.time);
                }
                Ok(out)
            })
            .collect()
    })
}

/// One key's part in an update call.
struct Group<'a> {
    key: &'a [u8],
    values: Vec<usize>,
    old: Option<Stored<'a>>,
    timing_out: bool,
}

fn partition(
    scope: &BatchScope<'_>,
    op: &StateOp,
    snapshots: bool,
    table: &StateTable,
    index: usize,
    p: &Batch,
    stored: &[(Vec<u8>, Vec<u8>)],
) -> Result<(StateWrites, Batch, Option<Batch>), OpError> {
    let t = scope.time;
    let mut state: FxHashMap<&[u8], Stored<'_>> = FxHashMap::default();
    for (key, value) in stored {
        let (last, s) = split_entry(table, value)?;
        state.insert(key.as_slice(), (last, s, value.len()));
    }
    // Keys with new values, then (for update_state_by_key, or timing out) keys with state only.
    let mut called: Vec<Group<'_>> = Vec::new();
    for (key, values) in groups(p) {
        let old = state.remove(key);
        called.push(Group {
            key,
            values,
            old,
            timing_out: false,
        });
    }
    let mut untouched: Vec<(&[u8], Stored<'_>)> = Vec::new();
    for (key, (last, s, len)) in state {
        let timing_out = op.timeout.is_some_and(|timeout| t - last > timeout);
        if timing_out || !op.map_with_state {
            called.push(Group {
                key,
                values: Vec::new(),
                old: Some((last, s, len)),
                timing_out,
            });
        } else {
            untouched.push((key, (last, s, len)));
        }
    }
    let mut writes = StateWrites::default();
    let mut records = Batch::empty(true);
    let mut snapshot = snapshots.then(|| Batch::empty(true));
    if called.is_empty() && untouched.is_empty() {
        return Ok((writes, records, snapshot));
    }
    let (new_states, emitted) = match &op.updater {
        Updater::Udf(f) => {
            let mut input = UpdateInput {
                keys: Column::with_capacity(called.len(), called.len() * 8),
                values: Column::with_capacity(p.len(), p.values.data.len()),
                group_ends: Vec::with_capacity(called.len()),
                states: Column::with_capacity(called.len(), 0),
                has_state: Vec::with_capacity(called.len()),
                timing_out: Vec::with_capacity(called.len()),
                batch_time: t,
            };
            for g in &called {
                input.keys.push(g.key);
                for &i in &g.values {
                    input.values.push(p.values.get(i).unwrap_or_default());
                }
                input.group_ends.push(input.values.len() as u32);
                input.states.push(g.old.map_or(&[][..], |(_, s, _)| s));
                input.has_state.push(g.old.is_some());
                input.timing_out.push(g.timing_out);
            }
            if called.is_empty() {
                (Vec::new(), Batch::empty(true))
            } else {
                let out = scope.udf(*f).update(&scope.context(index), &input)?;
                let states = out
                    .has_state
                    .iter()
                    .zip(out.states.iter())
                    .map(|(&has, s)| has.then(|| s.to_vec()))
                    .collect();
                (states, out.emitted)
            }
        }
        Updater::Builtin(b) => {
            let mut states = Vec::with_capacity(called.len());
            let mut buf = Vec::new();
            for g in &called {
                let mut acc = match g.old {
                    Some((_, s, _)) => b.decode(s)?,
                    None => b.zero(),
                };
                for &i in &g.values {
                    acc.add(b.decode(p.values.get(i).unwrap_or_default())?);
                }
                buf.clear();
                acc.encode(&mut buf);
                states.push(Some(buf.clone()));
            }
            (states, Batch::empty(true))
        }
    };
    for (g, new) in called.iter().zip(new_states) {
        let new = if g.timing_out { None } else { new };
        match (new, g.old) {
            (Some(s), old) => {
                let last = if g.values.is_empty() {
                    old.map_or(t, |(last, _, _)| last)
                } else {
                    t
                };
                let unchanged = old.is_some_and(|(l, o, _)| l == last && o == s.as_slice());
                if !unchanged {
                    writes.put(table, g.key, entry(last, &s), old.map(|(_, _, len)| len));
                }
                if !op.map_with_state {
                    records.push(Some(g.key), &s, t);
                }
                if let Some(snap) = &mut snapshot {
                    snap.push(Some(g.key), &s, t);
                }
            }
            (None, Some((_, _, len))) => writes.delete(table, g.key, len),
            (None, None) => {}
        }
    }
    if let Some(snap) = &mut snapshot {
        for (key, (_, s, _)) in untouched {
            snap.push(Some(key), s, t);
        }
    }
    if op.map_with_state {
        records = emitted;
    }
    Ok((writes, records, snapshot))
}
