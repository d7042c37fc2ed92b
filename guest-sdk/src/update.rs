//! Runners for stateful updaters: per key, the batch's values and the old state in; the new
//! state and emitted records out.

use crate::bindings::UdfError;
use crate::bindings::updater::exports::sluice::udf::updaters::{UpdateInput, UpdateOutput};
use crate::codec::{Decode, Encode};
use crate::records::{ColumnBuilder, ColumnRef, Emit, Output, error};

/// The state of one key during a `map_with_state` call (Spark's `State[S]`).
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    timing_out: bool,
    batch_time: i64,
}

impl<S> State<S> {
    /// A state cell holding `value`, for a call in the batch of time `batch_time`.
    pub fn new(value: Option<S>, timing_out: bool, batch_time: i64) -> Self {
        Self {
            value,
            timing_out,
            batch_time,
        }
    }

    /// The time of the batch being processed, in milliseconds since the Unix epoch.
    pub fn batch_time(&self) -> i64 {
        self.batch_time
    }

    /// The current state, if the key has one.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Whether the key has state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// Replace the state. Ignored when the key is timing out: its state is removed regardless.
    pub fn update(&mut self, value: S) {
        self.value = Some(value);
    }

    /// Remove the key's state.
    pub fn remove(&mut self) {
        self.value = None;
    }

    /// Take the state out, leaving none.
    pub fn take(&mut self) -> Option<S> {
        self.value.take()
    }

    /// Whether this is the key's last call because it was idle longer than the timeout.
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }

    fn into_inner(self) -> Option<S> {
        if self.timing_out { None } else { self.value }
    }
}

/// One group of an update call, checked.
struct Group<'a> {
    key: &'a [u8],
    values: Vec<&'a [u8]>,
    state: Option<&'a [u8]>,
    timing_out: bool,
}

fn groups<'a>(input: &'a UpdateInput) -> Result<Vec<Group<'a>>, UdfError> {
    let keys = ColumnRef::new(&input.keys, "key")?;
    let values = ColumnRef::new(&input.values, "value")?;
    let states = ColumnRef::new(&input.states, "state")?;
    let n = keys.len();
    if input.group_ends.len() != n
        || states.len() != n
        || input.has_state.len() != n
        || input.timing_out.len() != n
    {
        return Err(error(
            format!(
                "malformed update call from the host: {n} keys, {} groups, {} states, {} has-state flags, {} timing-out flags",
                input.group_ends.len(),
                states.len(),
                input.has_state.len(),
                input.timing_out.len()
            ),
            None,
        ));
    }
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    for g in 0..n {
        let end = input.group_ends[g] as usize;
        if end < start || end > values.len() {
            return Err(error(
                format!(
                    "malformed groups from the host: group {g} spans items {start}..{end} of {}",
                    values.len()
                ),
                None,
            ));
        }
        out.push(Group {
            key: keys.get(g),
            values: (start..end).map(|i| values.get(i)).collect(),
            state: input.has_state[g].then(|| states.get(g)),
            timing_out: input.timing_out[g],
        });
        start = end;
    }
    Ok(out)
}

fn decode<'a, T: Decode<'a>>(bytes: &'a [u8], what: &str, group: usize) -> Result<T, UdfError> {
    T::decode(bytes).map_err(|e| error(format!("group {group}: {what} {e}"), None))
}

fn decode_values<'a, V: Decode<'a>>(group: &Group<'a>, g: usize) -> Result<Vec<V>, UdfError> {
    group.values.iter().map(|v| decode(v, "value", g)).collect()
}

fn push_state<S: Encode>(
    states: &mut ColumnBuilder,
    has_state: &mut Vec<bool>,
    state: Option<S>,
) -> Result<(), UdfError> {
    has_state.push(state.is_some());
    match state {
        Some(s) => states.push(&s),
        None => states.push_empty(),
    }
}

fn run<'a, S: Decode<'a> + Encode>(
    input: &'a UpdateInput,
    mut f: impl FnMut(&Group<'a>, usize, Option<S>, &mut Output) -> Result<Option<S>, UdfError>,
) -> Result<UpdateOutput, UdfError> {
    let groups = groups(input)?;
    let mut states = ColumnBuilder::with_capacity(groups.len());
    let mut has_state = Vec::with_capacity(groups.len());
    let mut emitted = Output::default();
    for (g, group) in groups.iter().enumerate() {
        let old: Option<S> = group.state.map(|s| decode(s, "state", g)).transpose()?;
        let new = f(group, g, old, &mut emitted)?;
        push_state(
            &mut states,
            &mut has_state,
            if group.timing_out { None } else { new },
        )?;
    }
    Ok(UpdateOutput {
        states: states.finish(),
        has_state,
        emitted: emitted.finish(),
    })
}

/// Spark's `updateStateByKey`: `fn(&[V], Option<S>) -> Option<S>`; `None` removes the key.
pub fn update<'a, V: Decode<'a>, S: Decode<'a> + Encode>(
    input: &'a UpdateInput,
    mut f: impl FnMut(&[V], Option<S>) -> Option<S>,
) -> Result<UpdateOutput, UdfError> {
    run(input, |group, g, old, _| {
        Ok(f(&decode_values::<V>(group, g)?, old))
    })
}

/// Like [`update`], with the key: `fn(K, &[V], Option<S>) -> Option<S>`.
pub fn update_with_key<'a, K: Decode<'a>, V: Decode<'a>, S: Decode<'a> + Encode>(
    input: &'a UpdateInput,
    mut f: impl FnMut(K, &[V], Option<S>) -> Option<S>,
) -> Result<UpdateOutput, UdfError> {
    run(input, |group, g, old, _| {
        let key = decode(group.key, "key", g)?;
        Ok(f(key, &decode_values::<V>(group, g)?, old))
    })
}

/// Spark's `mapWithState`: `fn(K, &[V], &mut State<S>) -> I`, where `I` iterates over records to
/// emit (an `Option`, a `Vec`). Emitted records carry the batch time as event time. A key that
/// times out gets one last call with no values and `state.is_timing_out()` true.
pub fn map_with_state<'a, K: Decode<'a>, V: Decode<'a>, S: Decode<'a> + Encode, I>(
    input: &'a UpdateInput,
    mut f: impl FnMut(K, &[V], &mut State<S>) -> I,
) -> Result<UpdateOutput, UdfError>
where
    I: IntoIterator,
    I::Item: Emit,
{
    let batch_time = input.batch_time;
    run(input, |group, g, old, emitted| {
        let key = decode(group.key, "key", g)?;
        let mut state = State::new(old, group.timing_out, batch_time);
        for item in f(key, &decode_values::<V>(group, g)?, &mut state) {
            item.emit(emitted, batch_time)?;
        }
        Ok(state.into_inner())
    })
}
