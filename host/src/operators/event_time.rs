//! Event-time windows (Structured Streaming's `groupBy(window(eventTime, length, slide), key)`
//! with `withWatermark`): each record counts in every window `[s, s + length)` that holds its
//! event time, where `s` is a multiple of the slide (epoch-aligned, UTC).
//!
//! The watermark of a batch is the largest event time seen in *earlier* batches minus the
//! delay. Records older than it are late: dropped and counted (append and update modes;
//! complete mode keeps everything). Window values live in RocksDB as `time_key(start) ++ key ->
//! accumulator`, so the windows of the past are sorted by start and the ones the watermark has
//! passed are one range scan away. Output keys are `{"start": ms, "end": ms, "key": …}`.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use std::time::Duration;

use super::window::{ms, show, windows_per_record_fit};
use super::{
    BatchScope, Drain, Field, Memory, OpError, OpenCx, Operator, OperatorKind, OutputMode, PlanCx,
    Planned, Reducer, RunCx, StateLayout, UdfRef, UdfUse,
};
use crate::batch::codec::Codec;
use crate::batch::key_hash;
use crate::batch::{Batch, Column};
use crate::metrics::SeriesKey;
use crate::state::{StateError, StateTable, StateWrites, time_from_key, time_key};
use crate::udf::Role;

/// How far ahead of the event time seen so far a record may be: one day.
pub const DEFAULT_MAX_EVENT_TIME_AHEAD: i64 = 24 * 60 * 60 * 1000;

/// An event-time window aggregation with a watermark.
#[derive(Debug, Clone)]
pub struct EventWindow {
    /// Window length, ms.
    pub length: i64,
    /// Slide, ms; windows start at multiples of it (epoch-aligned).
    pub slide: i64,
    /// The watermark trails the largest event time seen in earlier batches by this many ms.
    pub delay: i64,
    /// When windows are written.
    pub mode: OutputMode,
    /// Records more than this many ms ahead of the largest event time seen (or of the batch
    /// time, before any) are dropped and counted; they never move the watermark.
    pub max_ahead: i64,
    /// The aggregation.
    pub reducer: Reducer,
}

/// `event_time_window`'s planning.
pub struct EventTimeWindowKind;

/// `event_time_window`: Structured Streaming's `groupBy(window(eventTime, …), key).agg(…)`
/// with a watermark.
pub static EVENT_TIME_WINDOW: EventTimeWindowKind = EventTimeWindowKind;

impl OperatorKind for EventTimeWindowKind {
    fn name(&self) -> &'static str {
        "event_time_window"
    }

    fn udf(&self) -> UdfUse {
        UdfUse::Needs {
            role: Role::Reducer,
            builtin: true,
        }
    }

    fn fields(&self) -> &'static [Field] {
        &[
            Field::Builtin,
            Field::Window,
            Field::Slide,
            Field::Watermark,
            Field::OutputMode,
            Field::MaxEventTimeAhead,
        ]
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let s = cx.spec;
        let Some(length) = s.window.map(ms) else {
            cx.error(
                "event_time_window needs `window`, e.g. window = \"30s\"".into(),
                None,
            );
            return None;
        };
        let slide = s.slide.map_or(length, ms);
        if length <= 0 || slide <= 0 || slide > length {
            cx.error(
                format!(
                    "window = {} and slide = {} do not make a window: both must be at least 1ms and the slide no longer than the window",
                    show(length),
                    show(slide)
                ),
                None,
            );
            return None;
        }
        if !windows_per_record_fit(cx, length, slide) {
            return None;
        }
        let reducer = cx.reducer.clone()?;
        let (_, value) = cx.input_codecs();
        let value = cx.reduced_codec(value);
        Some(Planned::new(
            EventTimeWindow(EventWindow {
                length,
                slide,
                delay: s.watermark.map_or(0, ms),
                mode: s.output_mode.unwrap_or_default(),
                max_ahead: s
                    .max_event_time_ahead
                    .map_or(DEFAULT_MAX_EVENT_TIME_AHEAD, ms),
                reducer,
            }),
            Codec::Json,
            value,
        ))
    }
}

/// A planned event-time window.
#[derive(Debug)]
pub struct EventTimeWindow(pub EventWindow);

impl Operator for EventTimeWindow {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        let Memory::Table(table) = &*cx.memory else {
            return Err(OpError::Input(
                "an event-time window without its state".into(),
            ));
        };
        let o = run(
            cx.scope,
            &self.0,
            table,
            cx.input(0),
            cx.key_codec(0),
            cx.writes,
        )?;
        let scope = cx.scope;
        let (job, tenant, stream) = (&**scope.job, &**scope.tenant, cx.stream);
        let labels = [("tenant", tenant), ("job", job), ("stream", stream)];
        if o.late > 0 {
            scope.registry.add(
                &SeriesKey::new("sluice_late_records_total", &labels),
                o.late,
            );
            tracing::warn!(%tenant, %job, batch = scope.id, %stream, watermark = o.watermark.unwrap_or(i64::MIN), "{} records were older than the watermark and were dropped", o.late);
            cx.late_records += o.late;
        }
        if o.too_far_ahead > 0 {
            scope.registry.add(
                &SeriesKey::new("sluice_event_time_too_far_ahead_total", &labels),
                o.too_far_ahead,
            );
            tracing::warn!(%tenant, %job, batch = scope.id, %stream,
                "{} records had an event time more than {} ahead of the largest seen (or of the batch time) and were dropped; they do not move the watermark (raise max_event_time_ahead if such times are real)",
                o.too_far_ahead,
                humantime::format_duration(Duration::from_millis(self.0.max_ahead.max(0) as u64)));
        }
        Ok(Some(o.records))
    }

    fn keeps_state(&self, _checkpointed: bool) -> bool {
        true
    }

    fn layout(&self) -> Option<StateLayout> {
        Some(StateLayout::EventTimeWindow {
            length: self.0.length,
            slide: self.0.slide,
            builtin: self.0.reducer.builtin(),
        })
    }

    fn udfs(&self) -> Vec<UdfRef> {
        self.0.reducer.udf().into_iter().collect()
    }

    fn open(&self, cx: &OpenCx<'_>) -> Result<Memory, StateError> {
        Ok(cx.table().map_or(Memory::None, Memory::Table))
    }

    fn watermark(&self, memory: &Memory) -> Result<Option<i64>, StateError> {
        match memory {
            Memory::Table(table) => table.number(MAX_EVENT_TIME),
            Memory::None | Memory::Buffer(_) => Ok(None),
        }
    }

    fn drain(&self) -> Drain {
        Drain::OneBatch
    }
}

/// Kept beside the windows: the largest event time seen so far.
pub const MAX_EVENT_TIME: &str = "max_event_time";

/// What one batch of an event-time window produced.
pub struct EventOutput {
    /// The windows written this batch.
    pub records: Vec<Batch>,
    /// Records dropped as late.
    pub late: u64,
    /// Records dropped because their event time was implausibly far ahead
    /// (`max_event_time_ahead`).
    pub too_far_ahead: u64,
    /// The watermark the batch ran with (`None` before any event time was seen).
    pub watermark: Option<i64>,
}

/// Records one partition dropped: older than the watermark, or too far ahead of it.
#[derive(Debug, Default, Clone, Copy)]
struct Dropped {
    late: u64,
    ahead: u64,
}

/// One partition's windows: group key (`time_key(start) ++ key`) to accumulator.
type Partial = Vec<(Vec<u8>, Vec<u8>)>;

/// One batch of an event-time window; `input` is `None` when the input has no batch now.
pub fn run(
    scope: &BatchScope<'_>,
    w: &EventWindow,
    table: &StateTable,
    input: &[Batch],
    key_codec: Codec,
    writes: &mut StateWrites,
) -> Result<EventOutput, OpError> {
    let n = scope.partitions;
    let seen = table.number(MAX_EVENT_TIME)?;
    let watermark = seen.map(|m| m.saturating_sub(w.delay));
    let drop_before = match w.mode {
        OutputMode::Complete => i64::MIN,
        OutputMode::Append | OutputMode::Update => watermark.unwrap_or(i64::MIN),
    };
    // One record stamped with the end of time must not move the watermark there and make
    // every later record late: event times past this bound are refused.
    let drop_after = seen.unwrap_or(scope.time).saturating_add(w.max_ahead);
    let bounds = (drop_before, drop_after);
    // Aggregate each input partition into its windows.
    let partials: Vec<(Partial, i64, Dropped)> = scope.pool.install(|| {
        input
            .par_iter()
            .enumerate()
            .map(|(i, p)| aggregate(scope, w, i, p, bounds))
            .collect::<Result<Vec<_>, OpError>>()
    })?;
    let late: u64 = partials.iter().map(|(_, _, d)| d.late).sum();
    let too_far_ahead: u64 = partials.iter().map(|(_, _, d)| d.ahead).sum();
    let batch_max = partials
        .iter()
        .map(|(_, m, _)| *m)
        .max()
        .unwrap_or(i64::MIN);
    if batch_max > seen.unwrap_or(i64::MIN) {
        writes.set_number(table, MAX_EVENT_TIME, batch_max);
    }
    // Gather each window's partials in one partition and merge them with what is stored.
    let mut gathered: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..n).map(|_| Vec::new()).collect();
    for (partial, _, _) in partials {
        for (gk, acc) in partial {
            gathered[(key_hash(&gk) % n as u64) as usize].push((gk, acc));
        }
    }
    let merged: Vec<(StateWrites, Partial)> = scope.pool.install(|| {
        gathered
            .into_par_iter()
            .enumerate()
            .map(|(i, g)| merge(scope, &w.reducer, table, i, g))
            .collect::<Result<Vec<_>, OpError>>()
    })?;
    let mut changed: FxHashMap<Vec<u8>, Vec<u8>> = FxHashMap::default();
    for (wr, c) in merged {
        writes.append(wr);
        changed.extend(c);
    }
    // What is written, and what is forgotten.
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let closed = |gk: &[u8]| {
        let start = time_from_key(gk).unwrap_or(i64::MAX);
        watermark.is_some_and(|wm| start.saturating_add(w.length) <= wm)
    };
    match w.mode {
        OutputMode::Append | OutputMode::Update => {
            if w.mode == OutputMode::Update {
                out.extend(changed.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            for (gk, acc) in table.scan_while(b"", closed)? {
                writes.delete(table, &gk, acc.len());
                if w.mode == OutputMode::Append {
                    out.push((gk, acc));
                }
            }
        }
        OutputMode::Complete => {
            for (gk, acc) in table.scan(b"")? {
                let value = changed.remove(&gk).unwrap_or(acc);
                out.push((gk, value));
            }
            out.extend(changed);
        }
    }
    out.sort_unstable();
    let mut records: Vec<Batch> = (0..n).map(|_| Batch::empty(true)).collect();
    let mut json = Vec::new();
    for (gk, acc) in out {
        let Some(start) = time_from_key(&gk) else {
            continue;
        };
        json.clear();
        json.extend_from_slice(
            format!("{{\"start\":{start},\"end\":{},\"key\":", start + w.length).as_bytes(),
        );
        key_codec.write_json(gk.get(8..).unwrap_or_default(), &mut json);
        json.push(b'}');
        records[(key_hash(&gk) % n as u64) as usize].push(Some(&json), &acc, start);
    }
    Ok(EventOutput {
        records,
        late,
        too_far_ahead,
        watermark,
    })
}

/// Every window start `s` (a multiple of `slide`) with `s <= t < s + length`.
fn window_starts(t: i64, length: i64, slide: i64) -> impl Iterator<Item = i64> {
    let last = t.div_euclid(slide) * slide;
    (0..)
        .map(move |k: i64| last - k * slide)
        .take_while(move |s| s.saturating_add(length) > t)
}

/// The width of the panes a window is made of: window starts (multiples of `slide`) and ends
/// (`start + length`) all fall on multiples of `gcd(length, slide)`, so every record of one
/// pane belongs to exactly the same windows.
fn pane_width(length: i64, slide: i64) -> i64 {
    let (mut a, mut b) = (length.abs(), slide.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Groups named `time_key(start) ++ key` (a pane's or a window's), numbered in order of first
/// appearance, each with the items (records or panes) that fell into it.
#[derive(Default)]
struct Groups {
    index: FxHashMap<Vec<u8>, usize>,
    /// Per group: its name and its items.
    groups: Vec<(Vec<u8>, Vec<u32>)>,
    name: Vec<u8>,
}

impl Groups {
    /// Put `item` into the group of (`start`, `key`).
    fn add(&mut self, start: i64, key: &[u8], item: u32) {
        self.name.clear();
        self.name.extend_from_slice(&time_key(start));
        self.name.extend_from_slice(key);
        let g = match self.index.get(self.name.as_slice()) {
            Some(&g) => g,
            None => {
                self.index.insert(self.name.clone(), self.groups.len());
                self.groups.push((self.name.clone(), Vec::new()));
                self.groups.len() - 1
            }
        };
        self.groups[g].1.push(item);
    }
}

/// One input partition: records into windows, reduced per (window, key). Returns the windows,
/// the largest event time kept and how many records were late.
///
/// Records are reduced per (pane, key) first and the pane partials then per (window, key)
/// (pane-based slicing): with a 30 s window sliding by 10 s, each record is reduced once
/// instead of three times. Reducers are associative and commutative (as Spark requires of a
/// window's reduce function), so the result is the same.
fn aggregate(
    scope: &BatchScope<'_>,
    w: &EventWindow,
    partition: usize,
    p: &Batch,
    (drop_before, drop_after): (i64, i64),
) -> Result<(Partial, i64, Dropped), OpError> {
    let mut dropped = Dropped::default();
    let mut max = i64::MIN;
    let pane = pane_width(w.length, w.slide);
    let key_of = |i: usize| p.keys.as_ref().and_then(|k| k.get(i)).unwrap_or_default();
    let mut panes = Groups::default();
    for (i, &t) in p.event_times.iter().enumerate() {
        if t < drop_before {
            dropped.late += 1;
            continue;
        }
        if t > drop_after {
            dropped.ahead += 1;
            continue;
        }
        max = max.max(t);
        panes.add(t.div_euclid(pane) * pane, key_of(i), i as u32);
    }
    if panes.groups.is_empty() {
        return Ok((Vec::new(), max, dropped));
    }
    let pane_accs: Vec<Vec<u8>> = match &w.reducer {
        Reducer::Builtin(b) => {
            let mut out = Vec::with_capacity(panes.groups.len());
            for (_, records) in &panes.groups {
                let mut acc = b.zero();
                for &i in records {
                    acc.add(b.lift(p.values.get(i as usize).unwrap_or_default())?);
                }
                let mut v = Vec::new();
                acc.encode(&mut v);
                out.push(v);
            }
            out
        }
        Reducer::Udf(_) => {
            let mut values = Column::with_capacity(p.len(), p.values.data.len());
            let mut ends = Vec::with_capacity(panes.groups.len());
            for (_, records) in &panes.groups {
                for &i in records {
                    values.push(p.values.get(i as usize).unwrap_or_default());
                }
                ends.push(values.len() as u32);
            }
            let reduced = w.reducer.reduce(scope, partition, &values, &ends, true)?;
            reduced.iter().map(<[u8]>::to_vec).collect()
        }
    };
    // Every pane's partial into each window that holds the pane.
    let mut windows = Groups::default();
    for (g, (name, _)) in panes.groups.iter().enumerate() {
        let start = time_from_key(name).unwrap_or_default();
        let key = name.get(8..).unwrap_or_default();
        for s in window_starts(start, w.length, w.slide) {
            windows.add(s, key, g as u32);
        }
    }
    let members = windows.groups.iter().flat_map(|(_, m)| m);
    let mut values = Column::with_capacity(
        members.clone().count(),
        members.map(|&g| pane_accs[g as usize].len()).sum(),
    );
    let mut ends = Vec::with_capacity(windows.groups.len());
    for (_, panes_in) in &windows.groups {
        for &g in panes_in {
            values.push(&pane_accs[g as usize]);
        }
        ends.push(values.len() as u32);
    }
    let reduced = w.reducer.reduce(scope, partition, &values, &ends, false)?;
    Ok((
        windows
            .groups
            .into_iter()
            .map(|(name, _)| name)
            .zip(reduced.iter().map(<[u8]>::to_vec))
            .collect(),
        max,
        dropped,
    ))
}

/// Merge the partials of one partition's windows with their stored values; stage the result.
fn merge(
    scope: &BatchScope<'_>,
    r: &Reducer,
    table: &StateTable,
    partition: usize,
    partials: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(StateWrites, Partial), OpError> {
    let mut writes = StateWrites::default();
    if partials.is_empty() {
        return Ok((writes, Vec::new()));
    }
    let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
    let mut groups: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    for (gk, acc) in &partials {
        let g = *index.entry(gk.as_slice()).or_insert_with(|| {
            groups.push((gk.as_slice(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(acc);
    }
    let keys: Vec<&[u8]> = groups.iter().map(|(k, _)| *k).collect();
    let stored = table.get_many(&keys)?;
    let mut values = Column::new();
    let mut ends = Vec::with_capacity(groups.len());
    for ((_, accs), old) in groups.iter().zip(&stored) {
        if let Some(old) = old {
            values.push(old);
        }
        for acc in accs {
            values.push(acc);
        }
        ends.push(values.len() as u32);
    }
    let reduced = r.reduce(scope, partition, &values, &ends, false)?;
    let mut changed = Vec::with_capacity(groups.len());
    for (((gk, _), old), value) in groups.iter().zip(&stored).zip(reduced.iter()) {
        writes.put(table, gk, value.to_vec(), old.as_ref().map(Vec::len));
        changed.push((gk.to_vec(), value.to_vec()));
    }
    Ok((writes, changed))
}

#[cfg(test)]
mod tests {
    use super::{pane_width, window_starts};

    #[test]
    fn panes_divide_every_window() {
        assert_eq!(pane_width(30_000, 10_000), 10_000);
        assert_eq!(pane_width(10_000, 10_000), 10_000);
        assert_eq!(pane_width(25_000, 10_000), 5_000);
        assert_eq!(pane_width(10_000, 30_000), 10_000);
        // Every time of a pane lies in the same windows as the pane's start.
        let (length, slide) = (25_000, 10_000);
        let pane = pane_width(length, slide);
        for t in (-60_000i64..60_000).step_by(1_250) {
            let start = t.div_euclid(pane) * pane;
            let of_t: Vec<i64> = window_starts(t, length, slide).collect();
            let of_pane: Vec<i64> = window_starts(start, length, slide).collect();
            assert_eq!(of_t, of_pane, "t = {t}");
        }
    }

    #[test]
    fn a_time_falls_in_every_window_that_holds_it() {
        let starts: Vec<i64> = window_starts(25_000, 30_000, 10_000).collect();
        assert_eq!(starts, [20_000, 10_000, 0]);
        let starts: Vec<i64> = window_starts(30_000, 30_000, 10_000).collect();
        assert_eq!(starts, [30_000, 20_000, 10_000]);
        let starts: Vec<i64> = window_starts(-1, 10, 10).collect();
        assert_eq!(starts, [-10]);
        let starts: Vec<i64> = window_starts(7, 10, 10).collect();
        assert_eq!(starts, [0]);
    }
}
