//! The clickstream events of `../shared/WORKLOADS.md`: CSV lines
//! `event_time_ms,user_id,event_type,amount`, amounts as exact decimals `D.CC` (or `0`).
//!
//! `clickstream#parse_event` (try_map) turns a line into the keyed record
//! `(user_id, {"user_id":…,"event_type":…,"amount_cents":…})` with the line's event time, and
//! fails the batch on a malformed line, naming it; `clickstream#parse_event_lenient` (flat_map)
//! skips malformed lines instead, logging each and counting them in the `malformed_lines`
//! counter. Filters `is_view`, `is_click`, `is_purchase` keep one event type; `amount_cents`
//! projects `(user_id, cents)`; `by_event_type` re-keys events by their type. For workload W1,
//! `is_purchase_line` filters raw lines and `user_amount` projects a line to `(user_id, cents)`
//! (also W4's input); for W3, `type_amount` projects `(event_type, cents)` and
//! `type_count_amount` `(event_type, [1, cents])`.

use serde::{Deserialize, Serialize};
use sluice_guest::{Json, Timed, export_transforms, log};

/// One parsed clickstream event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Who did it.
    pub user_id: u32,
    /// `view`, `click` or `purchase`.
    pub event_type: String,
    /// The amount in cents: 0 unless a purchase.
    pub amount_cents: i64,
}

/// Parse `D.CC` or `D` (whole units) into integer cents, exactly.
pub fn parse_cents(text: &str) -> Result<i64, String> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let bad = || format!("amount {text:?} is not a decimal with at most two places");
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac_cents = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().map_err(|_| bad())? * 10,
        _ => frac.parse::<i64>().map_err(|_| bad())?,
    };
    whole
        .checked_mul(100)
        .and_then(|c| c.checked_add(frac_cents))
        .ok_or_else(bad)
}

/// One CSV line's fields, borrowed from the line: what every projection starts from, so that a
/// projection that drops the event type does not allocate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// Event time in epoch milliseconds.
    pub event_time: i64,
    /// Who did it.
    pub user_id: u32,
    /// `view`, `click` or `purchase`.
    pub event_type: &'a str,
    /// The amount in cents.
    pub amount_cents: i64,
}

/// Split a line into exactly four comma-separated fields. Commas are ASCII, so cutting the
/// bytes at them keeps every piece valid UTF-8. A byte loop replaces `str::split(',')`, whose
/// searcher was the top guest function of W4 under `perf`.
fn four_fields(line: &str) -> Option<[&str; 4]> {
    let bytes = line.as_bytes();
    let mut cuts = [0usize; 3];
    let mut found = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b',' {
            if found == 3 {
                return None;
            }
            cuts[found] = i;
            found += 1;
        }
    }
    if found != 3 {
        return None;
    }
    Some([
        line.get(..cuts[0])?,
        line.get(cuts[0] + 1..cuts[1])?,
        line.get(cuts[1] + 1..cuts[2])?,
        line.get(cuts[2] + 1..)?,
    ])
}

/// Parse one CSV line into its fields, or say what is wrong with it.
pub fn parse_fields(line: &str) -> Result<Fields<'_>, String> {
    let Some([time, user, kind, amount]) = four_fields(line.trim_end_matches(['\r', '\n'])) else {
        return Err(format!(
            "expected 4 comma-separated fields `event_time_ms,user_id,event_type,amount`, got {line:?}"
        ));
    };
    let event_time: i64 = time
        .parse()
        .map_err(|_| format!("event_time_ms {time:?} is not an integer"))?;
    let user_id: u32 = user
        .parse()
        .map_err(|_| format!("user_id {user:?} is not an unsigned integer"))?;
    if !matches!(kind, "view" | "click" | "purchase") {
        return Err(format!(
            "event_type {kind:?} is not view, click or purchase"
        ));
    }
    let amount_cents = parse_cents(amount)?;
    Ok(Fields {
        event_time,
        user_id,
        event_type: kind,
        amount_cents,
    })
}

/// Parse one CSV line into `(event time, event)`.
pub fn parse_line(line: &str) -> Result<(i64, Event), String> {
    let f = parse_fields(line)?;
    Ok((
        f.event_time,
        Event {
            user_id: f.user_id,
            event_type: f.event_type.to_string(),
            amount_cents: f.amount_cents,
        },
    ))
}

/// Strict parse: a malformed line fails the batch and names the record.
pub fn parse_event(line: &str) -> Result<Timed<(u32, Json<Event>)>, String> {
    let (event_time, event) = parse_line(line)?;
    Ok(Timed {
        event_time,
        record: (event.user_id, Json(event)),
    })
}

/// Lenient parse: a malformed line is logged, counted in `malformed_lines` and skipped.
pub fn parse_event_lenient(line: &str) -> Option<Timed<(u32, Json<Event>)>> {
    match parse_event(line) {
        Ok(record) => Some(record),
        Err(reason) => {
            sluice_guest::log::counter("malformed_lines", 1);
            log!(warn, "skipped a malformed line: {reason}");
            None
        }
    }
}

/// Keep views.
pub fn is_view((_, event): (u32, Json<Event>)) -> bool {
    event.0.event_type == "view"
}

/// Keep clicks.
pub fn is_click((_, event): (u32, Json<Event>)) -> bool {
    event.0.event_type == "click"
}

/// Keep purchases.
pub fn is_purchase((_, event): (u32, Json<Event>)) -> bool {
    event.0.event_type == "purchase"
}

/// `(user_id, event) -> (user_id, amount in cents)`.
pub fn amount_cents((user, event): (u32, Json<Event>)) -> (u32, i64) {
    (user, event.0.amount_cents)
}

/// `(user_id, event) -> (event_type, event)`.
pub fn by_event_type((_, event): (u32, Json<Event>)) -> (String, Json<Event>) {
    (event.0.event_type.clone(), event)
}

/// Keep the CSV lines of purchases, looking only at the third field: workload W1's filter,
/// cheap enough to run on every line before anything is parsed.
pub fn is_purchase_line(line: &str) -> bool {
    line.split(',').nth(2) == Some("purchase")
}

/// A CSV line → `(user_id, amount in cents)` with the line's event time: W1's projection.
/// A malformed line fails the batch, naming it.
pub fn user_amount(line: &str) -> Result<Timed<(u32, i64)>, String> {
    let f = parse_fields(line)?;
    Ok(Timed {
        event_time: f.event_time,
        record: (f.user_id, f.amount_cents),
    })
}

/// A CSV line → `(event_type, amount in cents)` with the line's event time: workload W3's
/// projection for the host's builtin `count_and_sum`.
pub fn type_amount(line: &str) -> Result<Timed<(&str, i64)>, String> {
    let f = parse_fields(line)?;
    Ok(Timed {
        event_time: f.event_time,
        record: (f.event_type, f.amount_cents),
    })
}

/// `(event_type, [count, amount in cents])`, the type borrowed from the line.
pub type TypeCountAmount<'a> = (&'a str, Json<(i64, i64)>);

/// A CSV line → `(event_type, [1, amount in cents])`: W3's projection for the reducer UDF
/// `aggregates#count_and_sum`, which adds such pairs.
pub fn type_count_amount(line: &str) -> Result<Timed<TypeCountAmount<'_>>, String> {
    let f = parse_fields(line)?;
    Ok(Timed {
        event_time: f.event_time,
        record: (f.event_type, Json((1, f.amount_cents))),
    })
}

export_transforms! {
    try_map parse_event,
    filter is_purchase_line,
    try_map user_amount,
    try_map type_amount,
    try_map type_count_amount,
    flat_map parse_event_lenient,
    filter is_view,
    filter is_click,
    filter is_purchase,
    map amount_cents,
    map by_event_type,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_are_exact() {
        assert_eq!(parse_cents("0"), Ok(0));
        assert_eq!(parse_cents("1.00"), Ok(100));
        assert_eq!(parse_cents("500.00"), Ok(50000));
        assert_eq!(parse_cents("12.3"), Ok(1230));
        assert_eq!(parse_cents("0.07"), Ok(7));
        assert!(parse_cents("1.234").is_err());
        assert!(parse_cents("-1").is_err());
        assert!(parse_cents("").is_err());
    }

    #[test]
    fn w1_filter_and_projection() {
        assert!(is_purchase_line("1,2,purchase,1.00"));
        assert!(!is_purchase_line("1,2,view,0"));
        assert!(!is_purchase_line("purchase"));
        let r = user_amount("1700000000005,77,purchase,3.07").unwrap();
        assert_eq!((r.event_time, r.record), (1_700_000_000_005, (77, 307)));
        assert!(user_amount("1,2").is_err());
    }

    #[test]
    fn lines_parse_or_say_why() {
        let (t, e) = parse_line("1700000000123,42,purchase,12.34").unwrap();
        assert_eq!(t, 1_700_000_000_123);
        assert_eq!(
            e,
            Event {
                user_id: 42,
                event_type: "purchase".into(),
                amount_cents: 1234
            }
        );
        assert!(
            parse_line("1,2,teleport,0")
                .unwrap_err()
                .contains("teleport")
        );
        assert!(
            parse_line("1,2,view")
                .unwrap_err()
                .contains("4 comma-separated")
        );
        assert!(
            parse_line("1,2,view,0,9")
                .unwrap_err()
                .contains("4 comma-separated")
        );
        assert_eq!(parse_line("1,2,view,0\r\n").map(|(t, _)| t), Ok(1));
        assert!(
            parse_line("x,2,view,0")
                .unwrap_err()
                .contains("event_time_ms")
        );
    }
}
