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

use super::executor::BatchScope;
use super::operators::{OpError, groups, require_keys, shuffle_to};
use super::reducer::Acc;
use crate::batch::key_hash;
use crate::batch::{Batch, Column};
use crate::plan::{Builtin, StateOp, Updater};
use crate::state::{StateError, StateTable, StateWrites};
use crate::udf::UpdateInput;

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

/// One batch of a state operator. `input` is `None` when the input has no batch now.
pub fn run(
    scope: &BatchScope<'_>,
    op: &StateOp,
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
    let shuffled = shuffle_to(scope, input, n);
    let mut stored: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..n).map(|_| Vec::new()).collect();
    for (key, value) in table.scan(b"")? {
        stored[(key_hash(&key) % n as u64) as usize].push((key, value));
    }
    let results: Vec<(StateWrites, Batch, Option<Batch>)> = scope.pool.install(|| {
        shuffled
            .par_iter()
            .zip(stored.par_iter())
            .enumerate()
            .map(|(i, (p, s))| partition(scope, op, table, i, p, s))
            .collect::<Result<Vec<_>, OpError>>()
    })?;
    let mut records = Vec::with_capacity(n);
    let mut snapshot = op.snapshots.then(Vec::new);
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
    let mut snapshot = op.snapshots.then(|| Batch::empty(true));
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
                let out = f.update(&scope.context(index), &input)?;
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
