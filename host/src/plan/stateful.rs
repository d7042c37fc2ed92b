//! Planning of the operators that remember across batches: batch-time windows, the state
//! operators (`update_state_by_key`, `map_with_state`, `state_snapshots`) and event-time
//! windows. Checks that windows fit the batch interval, that reducers can be inverted where an
//! inverse is asked for, and resolves initial state.

use std::sync::Arc;
use std::time::Duration;

use super::limits::{MAX_BATCHES_PER_WINDOW, MAX_WINDOWS_PER_RECORD};
use super::spec::{Builtin, Op, OutputMode, StreamSpec};
use super::{Node, NodeOp, Planner, StaticTable, load_static, static_hint};
use crate::udf::{Role, UdfFunction};

/// A reducer of a planned stream: a UDF or a builtin (`engine::reducer` runs both).
#[derive(Debug, Clone)]
pub enum Reducer {
    /// A reducer UDF.
    Udf(UdfFunction),
    /// A reducer the host runs natively.
    Builtin(Builtin),
}

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
        filter: Option<UdfFunction>,
    },
    /// Counts per distinct value (`count_by_value_and_window`).
    CountByValue,
    /// Values gathered per key (`group_by_key_and_window`).
    GroupByKey,
}

/// What computes a key's new state.
#[derive(Debug, Clone)]
pub enum Updater {
    /// An updater UDF.
    Udf(UdfFunction),
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
    /// How many partitions the state is spread over (`num_partitions`).
    pub partitions: usize,
    /// Idle keys time out after this many ms.
    pub timeout: Option<i64>,
    /// States loaded once, when the job's state is new.
    pub initial: Option<Arc<StaticTable>>,
    /// Whether a `state_snapshots` stream reads this one (filled in by the planner).
    pub snapshots: bool,
}

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

impl NodeOp {
    /// Whether the operator keeps state in RocksDB.
    pub fn uses_state_store(&self) -> bool {
        match self {
            NodeOp::Window(w) => matches!(w.kind, WindowKind::ReduceByKeyInverse { .. }),
            NodeOp::UpdateState(_) | NodeOp::EventTimeWindow(_) => true,
            _ => false,
        }
    }
}

/// How far ahead of the event time seen so far a record may be: one day.
pub const DEFAULT_MAX_EVENT_TIME_AHEAD: i64 = 24 * 60 * 60 * 1000;

/// How many windows of `length` sliding by `slide` hold one record: `length / slide`, rounded
/// up.
fn windows_per_record(length: i64, slide: i64) -> i64 {
    let slide = slide.max(1);
    length / slide + i64::from(length % slide != 0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn show(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(ms.max(0) as u64)).to_string()
}

impl Planner<'_, '_> {
    /// The operator of a stateful or windowed stream. `reducer` / `function` are what the
    /// stream's `builtin` or `udf` resolved to; `input_slide` is how often its input has a batch.
    pub(super) fn stateful_op(
        &mut self,
        s: &StreamSpec,
        reducer: Option<Reducer>,
        function: Option<UdfFunction>,
        input: Option<&Node>,
        subject: &str,
    ) -> Option<NodeOp> {
        let line = s.line;
        let input_slide = input.map_or(1, |n| n.slide).max(1);
        match s.op {
            op if op.is_window() => {
                let (length, slide) = self.window_sizes(s, input_slide, subject)?;
                let kind = match op {
                    Op::Window => WindowKind::Records,
                    Op::CountByWindow => WindowKind::Count,
                    Op::ReduceByWindow => WindowKind::Reduce(reducer?),
                    Op::CountByValueAndWindow => WindowKind::CountByValue,
                    Op::GroupByKeyAndWindow => WindowKind::GroupByKey,
                    _ if s.inverse == Some(true) => {
                        let reducer = reducer?;
                        if !reducer.has_inverse() {
                            self.error(
                                line,
                                subject,
                                format!("inverse = true, but {} has no inverse", reducer.describe()),
                                Some("export the reducer as `name(inverse = inverse_name)`, use a builtin, or leave inverse out to recompute each window".into()),
                            );
                            return None;
                        }
                        let filter = match &s.filter {
                            Some(udf) => Some(self.function(
                                udf,
                                Role::Transform,
                                "a window filter",
                                line,
                                subject,
                            )?),
                            None => None,
                        };
                        WindowKind::ReduceByKeyInverse { reducer, filter }
                    }
                    _ => {
                        if s.filter.is_some() {
                            self.error(
                                line,
                                subject,
                                "`filter` applies only with inverse = true".into(),
                                None,
                            );
                        }
                        WindowKind::ReduceByKey(reducer?)
                    }
                };
                Some(NodeOp::Window(WindowSpec {
                    length,
                    slide,
                    kind,
                }))
            }
            Op::UpdateStateByKey | Op::MapWithState => {
                let map_with_state = s.op == Op::MapWithState;
                let updater = match (function, reducer) {
                    (Some(f), _) => Updater::Udf(f),
                    (None, Some(Reducer::Builtin(b))) if !map_with_state => Updater::Builtin(b),
                    _ => return None,
                };
                let initial = match &s.initial_state {
                    Some(path) => match load_static(path, s.format.unwrap_or_default()) {
                        Ok(table) => Some(Arc::new(table)),
                        Err(e) => {
                            let hint = static_hint("initial_state", &e);
                            self.error(line, subject, format!("initial_state: {e}"), hint);
                            return None;
                        }
                    },
                    None => None,
                };
                // At least 1ms: checked with the other durations.
                let timeout = s.timeout.map(ms);
                Some(NodeOp::UpdateState(StateOp {
                    updater,
                    map_with_state,
                    partitions: s.partitions.unwrap_or(0),
                    timeout,
                    initial,
                    snapshots: false,
                }))
            }
            Op::StateSnapshots => match input.map(|n| &n.op) {
                Some(NodeOp::UpdateState(state)) if state.map_with_state => {
                    Some(NodeOp::StateSnapshots)
                }
                _ => {
                    self.error(
                        line,
                        subject,
                        "state_snapshots reads the state of a map_with_state stream".into(),
                        Some(
                            "set input to a map_with_state stream; update_state_by_key already is the whole state"
                                .into(),
                        ),
                    );
                    None
                }
            },
            Op::EventTimeWindow => {
                let Some(length) = s.window.map(ms) else {
                    self.error(
                        line,
                        subject,
                        "event_time_window needs `window`, e.g. window = \"30s\"".into(),
                        None,
                    );
                    return None;
                };
                let slide = s.slide.map_or(length, ms);
                if length <= 0 || slide <= 0 || slide > length {
                    self.error(
                        line,
                        subject,
                        format!(
                            "window = {} and slide = {} do not make a window: both must be at least 1ms and the slide no longer than the window",
                            show(length),
                            show(slide)
                        ),
                        None,
                    );
                    return None;
                }
                if !self.windows_per_record_fit(s, length, slide, subject) {
                    return None;
                }
                Some(NodeOp::EventTimeWindow(EventWindow {
                    length,
                    slide,
                    delay: s.watermark.map_or(0, ms),
                    mode: s.output_mode.unwrap_or_default(),
                    max_ahead: s
                        .max_event_time_ahead
                        .map_or(DEFAULT_MAX_EVENT_TIME_AHEAD, ms),
                    reducer: reducer?,
                }))
            }
            _ => None,
        }
    }

    /// A batch-time window's length and slide in ms, checked against the input's batches.
    fn window_sizes(
        &mut self,
        s: &StreamSpec,
        input_slide: i64,
        subject: &str,
    ) -> Option<(i64, i64)> {
        let Some(length) = s.window.map(ms) else {
            self.error(
                s.line,
                subject,
                format!(
                    "{} needs `window`, a multiple of the batch interval, e.g. window = \"{}\"",
                    s.op.as_str(),
                    show(input_slide.saturating_mul(3))
                ),
                None,
            );
            return None;
        };
        let slide = s.slide.map_or(input_slide, ms);
        let what = if input_slide == self.batch_interval {
            "the batch interval".to_string()
        } else {
            "the slide of its input".to_string()
        };
        let mut ok = true;
        for (field, value) in [("window", length), ("slide", slide)] {
            if value <= 0 || value % input_slide != 0 {
                self.error(
                    s.line,
                    subject,
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
            self.error(
                s.line,
                subject,
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
        let incremental = s.op == Op::ReduceByKeyAndWindow && s.inverse == Some(true);
        ok = ok && (incremental || self.windows_per_record_fit(s, length, slide, subject));
        let batches = length / input_slide.max(1);
        if ok && batches > MAX_BATCHES_PER_WINDOW {
            self.error(
                s.line,
                subject,
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
    fn windows_per_record_fit(
        &mut self,
        s: &StreamSpec,
        length: i64,
        slide: i64,
        subject: &str,
    ) -> bool {
        let per_record = windows_per_record(length, slide);
        if per_record <= MAX_WINDOWS_PER_RECORD {
            return true;
        }
        let min_slide = windows_per_record(length, MAX_WINDOWS_PER_RECORD);
        self.error(
            s.line,
            subject,
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
}
