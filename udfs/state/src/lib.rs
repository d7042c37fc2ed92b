//! State updaters for `update_state_by_key` and `map_with_state`.
//!
//! `running_total` keeps the sum of a key's integer values; `balance` does too but removes a key
//! whose sum returns to zero; `running_count_and_sum` keeps
//! `[count, sum]` (the W4 workload); `session` (map_with_state) counts a key's events while it is
//! active and, when the operator's timeout fires for the key, emits the finished session
//! `(key, {"events":…,"first_batch_ms":…,"last_batch_ms":…})`.

use serde::{Deserialize, Serialize};
use sluice_guest::{Json, State, export_updaters};

/// The new total: the old one (0 if none) plus this batch's values.
pub fn running_total(new: &[i64], old: Option<i64>) -> Option<i64> {
    Some(
        old.unwrap_or(0)
            .wrapping_add(new.iter().copied().fold(0i64, i64::wrapping_add)),
    )
}

/// A balance: the old one plus this batch's values; a key whose balance comes back to exactly
/// zero is removed (its account is closed).
pub fn balance(new: &[i64], old: Option<i64>) -> Option<i64> {
    let b = old
        .unwrap_or(0)
        .wrapping_add(new.iter().copied().fold(0i64, i64::wrapping_add));
    (b != 0).then_some(b)
}

/// `[count, sum]` of every value seen so far.
pub fn running_count_and_sum(
    new: &[i64],
    old: Option<Json<(i64, i64)>>,
) -> Option<Json<(i64, i64)>> {
    let (count, sum) = old.map_or((0, 0), |j| j.0);
    let added = new.iter().copied().fold(0i64, i64::wrapping_add);
    Some(Json((count + new.len() as i64, sum.wrapping_add(added))))
}

/// A session of one key: how many events, and the first and last batch that saw any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Events in the session.
    pub events: u64,
    /// Batch time of the first batch with events.
    pub first_batch_ms: i64,
    /// Batch time of the latest batch with events.
    pub last_batch_ms: i64,
}

/// Count events per key; when the key times out, emit its session and forget it.
pub fn session(
    key: &str,
    events: &[&[u8]],
    state: &mut State<Json<Session>>,
) -> Option<(String, Json<Session>)> {
    let now = state.batch_time();
    if state.is_timing_out() {
        return state.take().map(|s| (key.to_string(), s));
    }
    let mut current = state.get().map(|s| s.0).unwrap_or(Session {
        events: 0,
        first_batch_ms: now,
        last_batch_ms: now,
    });
    if !events.is_empty() {
        current.events += events.len() as u64;
        current.last_batch_ms = now;
    }
    state.update(Json(current));
    None
}

export_updaters! {
    update running_total,
    update balance,
    update running_count_and_sum,
    map_with_state session,
}
