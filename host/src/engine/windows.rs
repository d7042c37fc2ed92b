//! Batch-time windows (Spark Streaming's `window`, `countByWindow`, `reduceByWindow`,
//! `reduceByKeyAndWindow`, `countByValueAndWindow`, `groupByKeyAndWindow`).
//!
//! A window's output exists at batch times that are multiples of its slide and covers the
//! batches with times in `(t - length, t]`. Every batch, the input is reduced as far as the
//! operator allows (counted, reduced per key) and that partial is kept; at a slide time the
//! partials of the window are merged. With `inverse = true`, `reduce_by_key_and_window` keeps
//! the window's value per key in RocksDB instead and updates it each batch: the new batch's
//! partial reduced in, the partial of the batch that left the window inverse-reduced out. Each
//! key's record count is kept beside its value, so a key whose records have all left the window
//! is removed exactly, whatever its value. When the job checkpoints, the in-memory partials
//! are also written to the state store with the batch (`time ++ partition → batch`), so a
//! restart reads them back.

use std::collections::VecDeque;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::executor::BatchScope;
use super::operators::{self, OpError, grouped_values, require_keys, shuffle};
use crate::batch::key_hash;
use crate::batch::{Batch, Column};
use crate::plan::{Builtin, Codec, Reducer, WindowKind, WindowSpec};
use crate::state::{StateTable, StateWrites, time_from_key, time_key};

/// The per-batch partials of a window without inverse, oldest first; mirrored in a state table
/// when the job checkpoints.
#[derive(Debug, Default)]
pub struct WindowBuffer {
    batches: VecDeque<(i64, Vec<Batch>)>,
    table: Option<StateTable>,
}

impl WindowBuffer {
    /// A buffer mirrored in `table`, holding the partials the table has.
    pub fn load(table: StateTable) -> Result<Self, crate::state::StateError> {
        let mut batches: VecDeque<(i64, Vec<Batch>)> = VecDeque::new();
        for (key, value) in table.scan(&[])? {
            let corrupt = |what: &str| crate::state::StateError::Corrupt {
                table: table.stream().to_string(),
                what: what.to_string(),
            };
            let time = time_from_key(&key).ok_or_else(|| corrupt("a partial's key"))?;
            let batch = Batch::from_bytes(&value).ok_or_else(|| corrupt("a partial"))?;
            match batches.back_mut() {
                Some((t, parts)) if *t == time => parts.push(batch),
                _ => batches.push_back((time, vec![batch])),
            }
        }
        Ok(Self {
            batches,
            table: Some(table),
        })
    }

    fn key(time: i64, partition: usize) -> Vec<u8> {
        let mut key = time_key(time).to_vec();
        key.extend_from_slice(&(partition as u32).to_be_bytes());
        key
    }

    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.batches
            .iter()
            .flat_map(|(_, parts)| parts.iter())
            .map(|b| b.byte_len() as u64 + b.len() as u64 * 12)
            .sum()
    }
}

/// One batch of a window kept in memory. `input` is `None` when the input has no batch now.
/// Returns the window's output when `t` is a slide time.
pub fn buffered(
    scope: &BatchScope<'_>,
    spec: &WindowSpec,
    buffer: &mut WindowBuffer,
    input: Option<&[Batch]>,
    in_codec: Codec,
    writes: &mut StateWrites,
    stream: &str,
) -> Result<Option<Vec<Batch>>, OpError> {
    let t = scope.time;
    if let Some(parts) = input {
        let partial = match &spec.kind {
            WindowKind::Records => parts.to_vec(),
            WindowKind::GroupByKey => {
                require_keys(parts, "group_by_key_and_window", stream)?;
                shuffle(scope, parts)
            }
            WindowKind::Count => operators::count(scope, parts),
            WindowKind::Reduce(r) => operators::reduce(scope, r, parts, true)?,
            WindowKind::ReduceByKey(r) => operators::reduce_by_key(scope, r, parts, stream)?,
            WindowKind::CountByValue => operators::count_by_value(scope, parts)?,
            WindowKind::ReduceByKeyInverse { .. } => {
                return Err(OpError::Input(
                    "an incremental window has no in-memory buffer".into(),
                ));
            }
        };
        if let Some(table) = &buffer.table {
            for (j, part) in partial.iter().enumerate() {
                writes.put(table, &WindowBuffer::key(t, j), part.to_bytes(), None);
            }
        }
        buffer.batches.push_back((t, partial));
    }
    while buffer
        .batches
        .front()
        .is_some_and(|(time, _)| *time <= t - spec.length)
    {
        if let Some((time, parts)) = buffer.batches.pop_front()
            && let Some(table) = &buffer.table
        {
            for (j, part) in parts.iter().enumerate() {
                writes.delete(table, &WindowBuffer::key(time, j), part.byte_len());
            }
        }
    }
    if t % spec.slide != 0 {
        return Ok(None);
    }
    // Partition j of the window: partition j of every buffered batch.
    let width = buffer
        .batches
        .iter()
        .map(|(_, p)| p.len())
        .max()
        .unwrap_or(0);
    let window: Vec<Batch> = (0..width)
        .map(|j| Batch::concat(buffer.batches.iter().filter_map(|(_, p)| p.get(j))))
        .collect();
    let count = Reducer::Builtin(Builtin::Count);
    let out = match &spec.kind {
        WindowKind::Records => window,
        WindowKind::GroupByKey => operators::group_by_key(scope, &window, in_codec, stream)?,
        WindowKind::Count => {
            let total = operators::reduce(scope, &count, &window, false)?;
            match total.first().filter(|b| !b.is_empty()) {
                Some(_) => total,
                None => operators::count(scope, &[]),
            }
        }
        WindowKind::Reduce(r) => operators::reduce(scope, r, &window, false)?,
        // Per-batch partials were shuffled by key, so equal keys share a partition index.
        WindowKind::ReduceByKey(r) => operators::reduce_partitions(scope, r, &window, false)?,
        WindowKind::CountByValue => operators::reduce_partitions(scope, &count, &window, false)?,
        WindowKind::ReduceByKeyInverse { .. } => Vec::new(),
    };
    Ok(Some(out))
}

/// A window's value of one key: its accumulator and how many records made it.
struct Tally {
    count: u64,
    acc: Vec<u8>,
}

fn encode_tally(count: u64, acc: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + acc.len());
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(acc);
    v
}

fn decode_tally(bytes: &[u8], table: &StateTable) -> Result<Tally, OpError> {
    match bytes.split_first_chunk::<8>() {
        Some((count, acc)) => Ok(Tally {
            count: u64::from_be_bytes(*count),
            acc: acc.to_vec(),
        }),
        None => Err(OpError::State(crate::state::StateError::Corrupt {
            table: table.stream().to_string(),
            what: "a window value shorter than its count".into(),
        })),
    }
}

const CURRENT: u8 = b's';
const PARTIAL: u8 = b'p';

/// One batch of `reduce_by_key_and_window` with the inverse, state in `table`. Returns the
/// whole window at slide times.
pub fn incremental(
    scope: &BatchScope<'_>,
    spec: &WindowSpec,
    table: &StateTable,
    input: Option<&[Batch]>,
    writes: &mut StateWrites,
    stream: &str,
) -> Result<Option<Vec<Batch>>, OpError> {
    let WindowKind::ReduceByKeyInverse { reducer, filter } = &spec.kind else {
        return Ok(None);
    };
    let t = scope.time;
    let n = scope.partitions;
    // This batch's partial per key, with record counts.
    let fresh: Vec<Vec<(Vec<u8>, Tally)>> = match input {
        Some(parts) => {
            require_keys(parts, "reduce_by_key_and_window", stream)?;
            let shuffled = shuffle(scope, parts);
            scope.pool.install(|| {
                shuffled
                    .par_iter()
                    .enumerate()
                    .map(|(i, p)| partial_tallies(scope, reducer, i, p))
                    .collect::<Result<Vec<_>, OpError>>()
            })?
        }
        None => (0..n).map(|_| Vec::new()).collect(),
    };
    // Partials of batches that left the window: every stored partial up to t - length.
    let horizon = t - spec.length;
    let expired_entries = table.scan_while(&[PARTIAL], |key| {
        key.get(1..9)
            .and_then(time_from_key)
            .is_some_and(|time| time <= horizon)
    })?;
    let mut expired: Vec<Vec<(Vec<u8>, Tally)>> = (0..n).map(|_| Vec::new()).collect();
    for (key, value) in expired_entries {
        writes.delete(table, &key, value.len());
        let user_key = key[9..].to_vec();
        let tally = decode_tally(&value, table)?;
        expired[(key_hash(&user_key) % n as u64) as usize].push((user_key, tally));
    }
    for (key, tally) in fresh.iter().flatten() {
        let mut k = vec![PARTIAL];
        k.extend_from_slice(&time_key(t));
        k.extend_from_slice(key);
        writes.put(table, &k, encode_tally(tally.count, &tally.acc), None);
    }
    // Update the current window value of every key touched, partition by partition.
    let updated: Vec<Updated> = scope.pool.install(|| {
        fresh
            .into_par_iter()
            .zip(expired.into_par_iter())
            .enumerate()
            .map(|(i, (fresh, expired))| update_current(scope, reducer, table, i, fresh, expired))
            .collect::<Result<Vec<_>, OpError>>()
    })?;
    let mut changed: FxHashMap<Vec<u8>, Option<Vec<u8>>> = FxHashMap::default();
    for (w, c) in updated {
        writes.append(w);
        changed.extend(c);
    }
    if t % spec.slide != 0 {
        return Ok(None);
    }
    // The whole window: stored values with this batch's changes laid over them.
    let mut out: Vec<Batch> = (0..n).map(|_| Batch::empty(true)).collect();
    let mut push = |key: &[u8], value: &[u8]| {
        let tally = &value[8.min(value.len())..];
        out[(key_hash(key) % n as u64) as usize].push(Some(key), tally, t);
    };
    for (key, value) in table.scan(&[CURRENT])? {
        let key = &key[1..];
        match changed.remove(key) {
            Some(Some(v)) => push(key, &v),
            Some(None) => {}
            None => push(key, &value),
        }
    }
    for (key, value) in changed {
        if let Some(v) = value {
            push(&key, &v);
        }
    }
    match filter {
        Some(f) => operators::per_partition(scope, f, &out),
        None => Ok(out),
    }
    .map(Some)
}

/// One partition's records reduced per key, with counts.
fn partial_tallies(
    scope: &BatchScope<'_>,
    r: &Reducer,
    partition: usize,
    p: &Batch,
) -> Result<Vec<(Vec<u8>, Tally)>, OpError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let (grouped, values, ends) = grouped_values(p);
    let reduced = r.reduce(&scope.context(partition), &values, &ends, true)?;
    Ok(grouped
        .iter()
        .zip(reduced.iter())
        .map(|((key, members), acc)| {
            (
                key.to_vec(),
                Tally {
                    count: members.len() as u64,
                    acc: acc.to_vec(),
                },
            )
        })
        .collect())
}

/// The staged writes and the new current values (`None`: removed) of one partition's keys.
type Updated = (StateWrites, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn update_current(
    scope: &BatchScope<'_>,
    r: &Reducer,
    table: &StateTable,
    partition: usize,
    fresh: Vec<(Vec<u8>, Tally)>,
    expired: Vec<(Vec<u8>, Tally)>,
) -> Result<Updated, OpError> {
    let mut writes = StateWrites::default();
    // Per key: what came in, what went out (several expired batches are merged first).
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut index: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
    let mut ins: Vec<Option<Tally>> = Vec::new();
    let mut outs: Vec<Vec<Tally>> = Vec::new();
    let mut slot = |key: Vec<u8>| -> usize {
        *index.entry(key.clone()).or_insert_with(|| {
            keys.push(key);
            ins.push(None);
            outs.push(Vec::new());
            keys.len() - 1
        })
    };
    let fresh_slots: Vec<(usize, Tally)> = fresh.into_iter().map(|(k, t)| (slot(k), t)).collect();
    let expired_slots: Vec<(usize, Tally)> =
        expired.into_iter().map(|(k, t)| (slot(k), t)).collect();
    for (i, t) in fresh_slots {
        ins[i] = Some(t);
    }
    for (i, t) in expired_slots {
        outs[i].push(t);
    }
    if keys.is_empty() {
        return Ok((writes, Vec::new()));
    }
    let stored_keys: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            let mut s = vec![CURRENT];
            s.extend_from_slice(k);
            s
        })
        .collect();
    let refs: Vec<&[u8]> = stored_keys.iter().map(Vec::as_slice).collect();
    let stored = table.get_many(&refs)?;
    let old: Vec<Option<Tally>> = stored
        .iter()
        .map(|v| v.as_deref().map(|v| decode_tally(v, table)).transpose())
        .collect::<Result<_, _>>()?;
    // One reduce call: per key, [old?, new?, expired…] merged into (old + new) and (expired).
    let context = scope.context(partition);
    let mut merge_in = Column::new();
    let mut merge_ends = Vec::new();
    let mut gone_in = Column::new();
    let mut gone_ends = Vec::new();
    let mut counts = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let mut count = 0u64;
        for t in old[i].iter().chain(ins[i].iter()) {
            merge_in.push(&t.acc);
            count += t.count;
        }
        merge_ends.push(merge_in.len() as u32);
        let mut gone = 0u64;
        for t in &outs[i] {
            gone_in.push(&t.acc);
            gone += t.count;
        }
        gone_ends.push(gone_in.len() as u32);
        counts.push(count.saturating_sub(gone));
    }
    // Groups may be empty (a key with only expired values); reduce the non-empty ones.
    let merged = reduce_sparse(r, &context, &merge_in, &merge_ends)?;
    let gone = reduce_sparse(r, &context, &gone_in, &gone_ends)?;
    let (mut lefts, mut rights, mut which) = (Column::new(), Column::new(), Vec::new());
    for i in 0..keys.len() {
        if let (Some(m), Some(g)) = (&merged[i], &gone[i])
            && counts[i] > 0
        {
            lefts.push(m);
            rights.push(g);
            which.push(i);
        }
    }
    let inverted = if which.is_empty() {
        Column::new()
    } else {
        r.invert(&context, &lefts, &rights)?
    };
    let mut after: Vec<Option<Vec<u8>>> = merged;
    for (j, &i) in which.iter().enumerate() {
        after[i] = inverted.get(j).map(<[u8]>::to_vec);
    }
    let mut changed = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let old_len = stored[i].as_ref().map(Vec::len);
        match (&after[i], counts[i]) {
            (Some(acc), c) if c > 0 => {
                let value = encode_tally(c, acc);
                writes.put(table, &stored_keys[i], value.clone(), old_len);
                changed.push((keys[i].clone(), Some(value)));
            }
            _ => {
                if let Some(len) = old_len {
                    writes.delete(table, &stored_keys[i], len);
                }
                changed.push((keys[i].clone(), None));
            }
        }
    }
    Ok((writes, changed))
}

/// Reduce groups, some of which may be empty (`None` out for those), in one call.
fn reduce_sparse(
    r: &Reducer,
    context: &crate::udf::CallContext,
    values: &Column,
    ends: &[u32],
) -> Result<Vec<Option<Vec<u8>>>, OpError> {
    let mut dense = Vec::with_capacity(ends.len());
    let mut which = Vec::with_capacity(ends.len());
    let mut start = 0u32;
    for (g, &end) in ends.iter().enumerate() {
        if end > start {
            dense.push(end);
            which.push(g);
        }
        start = end;
    }
    let mut out = vec![None; ends.len()];
    if dense.is_empty() {
        return Ok(out);
    }
    let reduced = r.reduce(context, values, &dense, false)?;
    for (j, g) in which.into_iter().enumerate() {
        out[g] = reduced.get(j).map(<[u8]>::to_vec);
    }
    Ok(out)
}
