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

use super::count::{count, count_by_value};
use super::group_by_key::group_by_key;
use super::keyed::{grouped_values, require_keys, shuffle};
use super::reduce::{reduce, reduce_by_key, reduce_partitions};
use super::transform::per_partition;
use super::{
    BatchScope, Builtin, Drain, Field, Memory, OpError, OpenCx, Operator, OperatorKind, PlanCx,
    Planned, Reducer, RunCx, StateLayout, StreamSpec, UdfRef, UdfUse,
};
use crate::batch::codec::Codec;
use crate::batch::key_hash;
use crate::batch::{Batch, Column};
use crate::state::{StateError, StateTable, StateWrites, time_from_key, time_key};
use crate::udf::Role;

/// The most windows one record may fall into (`window / slide`): each is computed from it.
pub const MAX_WINDOWS_PER_RECORD: i64 = 1000;

/// The most input batches one batch-time window may span: each is kept until it leaves.
pub const MAX_BATCHES_PER_WINDOW: i64 = 100_000;

/// A batch-time window: every `slide` ms, the batches of the last `length` ms.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// Window length, ms.
    pub length: i64,
    /// Slide, ms: the window's output exists at batch times that are multiples of it.
    pub slide: i64,
    /// What is computed over the window.
    pub kind: WindowKind,
}

/// What a batch-time window computes.
#[derive(Debug, Clone)]
pub enum WindowKind {
    /// The records themselves (`window`).
    Records,
    /// Their number (`count_by_window`).
    Count,
    /// Their values reduced (`reduce_by_window`).
    Reduce(Reducer),
    /// Values reduced per key, recomputed from per-batch partials (`reduce_by_key_and_window`).
    ReduceByKey(Reducer),
    /// Values reduced per key, updated incrementally with the inverse; state in RocksDB.
    ReduceByKeyInverse {
        /// The reducer, which has an inverse.
        reducer: Reducer,
        /// Spark's `filterFunc`: keys it drops are left out of the output.
        filter: Option<UdfRef>,
    },
    /// Counts per distinct value (`count_by_value_and_window`).
    CountByValue,
    /// Values gathered per key (`group_by_key_and_window`).
    GroupByKey,
}

/// What a window operator computes, before its reducer is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Computes {
    Records,
    Count,
    Reduce,
    ReduceByKey,
    CountByValue,
    GroupByKey,
}

/// The planning of a batch-time window operator.
pub struct WindowOpKind {
    name: &'static str,
    computes: Computes,
}

/// `window`: the records of the last `window` of batches, every `slide`.
pub static WINDOW: WindowOpKind = WindowOpKind {
    name: "window",
    computes: Computes::Records,
};

/// `count_by_window`: one record per slide, how many records the window holds.
pub static COUNT_BY_WINDOW: WindowOpKind = WindowOpKind {
    name: "count_by_window",
    computes: Computes::Count,
};

/// `reduce_by_window`: one record per slide, the window's values reduced.
pub static REDUCE_BY_WINDOW: WindowOpKind = WindowOpKind {
    name: "reduce_by_window",
    computes: Computes::Reduce,
};

/// `reduce_by_key_and_window`: per key, the window's values reduced; with `inverse = true`,
/// updated incrementally.
pub static REDUCE_BY_KEY_AND_WINDOW: WindowOpKind = WindowOpKind {
    name: "reduce_by_key_and_window",
    computes: Computes::ReduceByKey,
};

/// `count_by_value_and_window`: per distinct value, how many records of the window have it.
pub static COUNT_BY_VALUE_AND_WINDOW: WindowOpKind = WindowOpKind {
    name: "count_by_value_and_window",
    computes: Computes::CountByValue,
};

/// `group_by_key_and_window`: per key, a JSON array of the window's values.
pub static GROUP_BY_KEY_AND_WINDOW: WindowOpKind = WindowOpKind {
    name: "group_by_key_and_window",
    computes: Computes::GroupByKey,
};

impl OperatorKind for WindowOpKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn udf(&self) -> UdfUse {
        match self.computes {
            Computes::Reduce | Computes::ReduceByKey => UdfUse::Needs {
                role: Role::Reducer,
                builtin: true,
            },
            Computes::Records | Computes::Count | Computes::CountByValue | Computes::GroupByKey => {
                UdfUse::None
            }
        }
    }

    fn fields(&self) -> &'static [Field] {
        match self.computes {
            Computes::Reduce => &[Field::Window, Field::Slide, Field::Builtin],
            Computes::ReduceByKey => &[
                Field::Window,
                Field::Slide,
                Field::Builtin,
                Field::Inverse,
                Field::Filter,
            ],
            Computes::Records | Computes::Count | Computes::CountByValue | Computes::GroupByKey => {
                &[Field::Window, Field::Slide]
            }
        }
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let s = cx.spec;
        let (length, slide) = window_sizes(cx, s)?;
        let reducer = cx.reducer.clone();
        let (in_key, in_value) = cx.input_codecs();
        let (kind, key, value) = match self.computes {
            Computes::Records => (WindowKind::Records, in_key, in_value),
            Computes::Count => (WindowKind::Count, Codec::Text, Codec::Number),
            Computes::Reduce => (
                WindowKind::Reduce(reducer?),
                in_key,
                cx.reduced_codec(in_value),
            ),
            Computes::CountByValue => (WindowKind::CountByValue, in_value, Codec::Number),
            Computes::GroupByKey => (WindowKind::GroupByKey, in_key, Codec::Json),
            Computes::ReduceByKey if s.inverse == Some(true) => {
                let reducer = reducer?;
                let (has_inverse, described) = match &reducer {
                    Reducer::Udf(f) => {
                        let f = cx.services.udf(*f);
                        (f.info().has_inverse, f.spec())
                    }
                    Reducer::Builtin(b) => (true, format!("builtin {}", b.as_str())),
                };
                if !has_inverse {
                    cx.error(
                        format!("inverse = true, but {described} has no inverse"),
                        Some("export the reducer as `name(inverse = inverse_name)`, use a builtin, or leave inverse out to recompute each window".into()),
                    );
                    return None;
                }
                let filter = match &s.filter {
                    Some(udf) => Some(cx.services.function(
                        udf,
                        Role::Transform,
                        "a window filter",
                    )?),
                    None => None,
                };
                let value = cx.reduced_codec(in_value);
                (
                    WindowKind::ReduceByKeyInverse { reducer, filter },
                    in_key,
                    value,
                )
            }
            Computes::ReduceByKey => {
                if s.filter.is_some() {
                    cx.error("`filter` applies only with inverse = true".into(), None);
                }
                let value = cx.reduced_codec(in_value);
                (WindowKind::ReduceByKey(reducer?), in_key, value)
            }
        };
        Some(Planned {
            op: std::sync::Arc::new(Window(WindowSpec {
                length,
                slide,
                kind,
            })),
            key_codec: key,
            value_codec: value,
            slide: Some(slide),
        })
    }
}

/// A planned batch-time window.
#[derive(Debug)]
pub struct Window(pub WindowSpec);

impl Window {
    fn incremental(&self) -> bool {
        matches!(self.0.kind, WindowKind::ReduceByKeyInverse { .. })
    }
}

impl Operator for Window {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        let input = cx.inputs_active().then(|| cx.input(0));
        let codec = cx.value_codec(0);
        match &mut *cx.memory {
            Memory::Buffer(buffer) => buffered(
                cx.scope, &self.0, buffer, input, codec, cx.writes, cx.stream,
            ),
            Memory::Table(table) => {
                incremental(cx.scope, &self.0, table, input, cx.writes, cx.stream)
            }
            Memory::None => Err(OpError::Input("a window without its memory".into())),
        }
    }

    fn runs_without_input(&self) -> bool {
        true
    }

    fn keeps_state(&self, checkpointed: bool) -> bool {
        self.incremental() || checkpointed
    }

    fn layout(&self) -> Option<StateLayout> {
        let builtin = match &self.0.kind {
            WindowKind::Reduce(r)
            | WindowKind::ReduceByKey(r)
            | WindowKind::ReduceByKeyInverse { reducer: r, .. } => r.builtin(),
            WindowKind::Records
            | WindowKind::Count
            | WindowKind::CountByValue
            | WindowKind::GroupByKey => None,
        };
        Some(StateLayout::Window {
            length: self.0.length,
            slide: self.0.slide,
            incremental: self.incremental(),
            builtin,
        })
    }

    fn udfs(&self) -> Vec<UdfRef> {
        match &self.0.kind {
            WindowKind::Reduce(r) | WindowKind::ReduceByKey(r) => r.udf().into_iter().collect(),
            WindowKind::ReduceByKeyInverse { reducer, filter } => {
                reducer.udf().into_iter().chain(*filter).collect()
            }
            WindowKind::Records
            | WindowKind::Count
            | WindowKind::CountByValue
            | WindowKind::GroupByKey => Vec::new(),
        }
    }

    fn open(&self, cx: &OpenCx<'_>) -> Result<Memory, StateError> {
        Ok(match cx.table() {
            Some(table) if self.incremental() => Memory::Table(table),
            // With a checkpoint, the partials are mirrored in the store.
            Some(table) if cx.checkpointed => Memory::Buffer(WindowBuffer::load(table)?),
            Some(_) | None if self.incremental() => Memory::None,
            Some(_) | None => Memory::Buffer(WindowBuffer::default()),
        })
    }

    fn drain(&self) -> Drain {
        Drain::For(self.0.length)
    }

    fn needs_every_batch(&self) -> bool {
        true
    }
}

/// How many windows of `length` sliding by `slide` hold one record: `length / slide`, rounded
/// up.
pub(super) fn windows_per_record(length: i64, slide: i64) -> i64 {
    let slide = slide.max(1);
    length / slide + i64::from(length % slide != 0)
}

/// A duration in ms, saturating.
pub(super) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// ms as a humane duration.
pub(super) fn show(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// A batch-time window's length and slide in ms, checked against the input's batches.
fn window_sizes(cx: &mut PlanCx<'_>, s: &StreamSpec) -> Option<(i64, i64)> {
    let input_slide = cx.input_slide();
    let Some(length) = s.window.map(ms) else {
        cx.error(
            format!(
                "{} needs `window`, a multiple of the batch interval, e.g. window = \"{}\"",
                s.op,
                show(input_slide.saturating_mul(3))
            ),
            None,
        );
        return None;
    };
    let slide = s.slide.map_or(input_slide, ms);
    let what = if input_slide == cx.services.batch_interval() {
        "the batch interval".to_string()
    } else {
        "the slide of its input".to_string()
    };
    let mut ok = true;
    for (field, value) in [("window", length), ("slide", slide)] {
        if value <= 0 || value % input_slide != 0 {
            cx.error(
                format!(
                    "{field} = {} is not a multiple of {what} ({})",
                    show(value),
                    show(input_slide)
                ),
                Some(format!(
                    "use {} or {} (whole numbers of {})",
                    show(input_slide.saturating_mul((value / input_slide).max(1))),
                    show(input_slide.saturating_mul((value / input_slide).saturating_add(1))),
                    show(input_slide)
                )),
            );
            ok = false;
        }
    }
    if ok && slide > length {
        cx.error(
            format!(
                "slide = {} is longer than window = {}: records between windows would be lost",
                show(slide),
                show(length)
            ),
            None,
        );
        ok = false;
    }
    // An incremental window (`inverse = true`) adds each record once and takes it out once,
    // however many windows hold it; every other window recomputes each one.
    let incremental = s.op == REDUCE_BY_KEY_AND_WINDOW.name && s.inverse == Some(true);
    ok = ok && (incremental || windows_per_record_fit(cx, length, slide));
    let batches = length / input_slide.max(1);
    if ok && batches > MAX_BATCHES_PER_WINDOW {
        cx.error(
            format!(
                "window = {} spans {batches} batches of its input (one every {}); at most {MAX_BATCHES_PER_WINDOW} are allowed, as each is kept until it leaves the window",
                show(length),
                show(input_slide)
            ),
            Some(format!(
                "make the window at most {}, or the batch interval (or the input's slide) longer",
                show(input_slide.saturating_mul(MAX_BATCHES_PER_WINDOW))
            )),
        );
        ok = false;
    }
    ok.then_some((length, slide))
}

/// Whether a window of `length` sliding by `slide` puts a record into at most
/// [`MAX_WINDOWS_PER_RECORD`] windows; an error naming `window` and `slide` if not.
pub(super) fn windows_per_record_fit(cx: &mut PlanCx<'_>, length: i64, slide: i64) -> bool {
    let per_record = windows_per_record(length, slide);
    if per_record <= MAX_WINDOWS_PER_RECORD {
        return true;
    }
    let min_slide = windows_per_record(length, MAX_WINDOWS_PER_RECORD);
    cx.error(
        format!(
            "window = {} sliding by slide = {} puts every record into {per_record} windows; at most {MAX_WINDOWS_PER_RECORD} are allowed",
            show(length),
            show(slide)
        ),
        Some(format!(
            "make the slide at least {} (window / {MAX_WINDOWS_PER_RECORD}), or the window at most {}",
            show(min_slide),
            show(slide.saturating_mul(MAX_WINDOWS_PER_RECORD))
        )),
    );
    false
}

/// The per-batch partials of a window without inverse, oldest first; mirrored in a state table
/// when the job checkpoints.
#[derive(Debug, Default, Clone)]
pub struct WindowBuffer {
    batches: VecDeque<(i64, Vec<Batch>)>,
    table: Option<StateTable>,
}

impl WindowBuffer {
    /// A buffer mirrored in `table`, holding the partials the table has.
    pub fn load(table: StateTable) -> Result<Self, StateError> {
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
                shuffle(scope, parts)?
            }
            WindowKind::Count => count(scope, parts),
            WindowKind::Reduce(r) => reduce(scope, r, parts, true)?,
            WindowKind::ReduceByKey(r) => reduce_by_key(scope, r, parts, stream)?,
            WindowKind::CountByValue => count_by_value(scope, parts)?,
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
        .map(|j| Batch::try_concat(buffer.batches.iter().filter_map(|(_, p)| p.get(j))))
        .collect::<Result<_, _>>()?;
    let count = Reducer::Builtin(Builtin::Count);
    let out = match &spec.kind {
        WindowKind::Records => window,
        WindowKind::GroupByKey => group_by_key(scope, &window, in_codec, stream)?,
        WindowKind::Count => {
            let total = reduce(scope, &count, &window, false)?;
            match total.first().filter(|b| !b.is_empty()) {
                Some(_) => total,
                None => self::count(scope, &[]),
            }
        }
        WindowKind::Reduce(r) => reduce(scope, r, &window, false)?,
        // Per-batch partials were shuffled by key, so equal keys share a partition index.
        WindowKind::ReduceByKey(r) => reduce_partitions(scope, r, &window, false)?,
        WindowKind::CountByValue => reduce_partitions(scope, &count, &window, false)?,
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
            let shuffled = shuffle(scope, parts)?;
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
        Some(f) => per_partition(scope, scope.udf(*f), &out),
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
    let reduced = r.reduce(scope, partition, &values, &ends, true)?;
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
    let merged = reduce_sparse(r, scope, partition, &merge_in, &merge_ends)?;
    let gone = reduce_sparse(r, scope, partition, &gone_in, &gone_ends)?;
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
        r.invert(scope, partition, &lefts, &rights)?
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
    scope: &BatchScope<'_>,
    partition: usize,
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
    let reduced = r.reduce(scope, partition, values, &dense, false)?;
    for (j, g) in which.into_iter().enumerate() {
        out[g] = reduced.get(j).map(<[u8]>::to_vec);
    }
    Ok(out)
}
