//! The bounds a job must keep, so that no manifest (or job built in Rust) can crash, hang or
//! exhaust the host: every duration in a documented range, a bounded number of windows per
//! record, files read only when they are regular files of a bounded size, and diagnostics whose
//! size grows at most linearly with the manifest.
//!
//! The planner checks durations first and stops there when one is out of range, so nothing
//! after it (the planner's own arithmetic, the scheduler, the operators) ever sees a duration
//! whose milliseconds could overflow or be zero where it divides.

use std::time::Duration;

use super::Planner;
use super::spec::JobSpec;
use crate::wal::WalSync;

pub use crate::files::{FileError, read_regular_file};

/// The largest manifest read: 1 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The largest static data set (`join_static`'s `path`) or initial state file read: 64 MiB.
pub const MAX_STATIC_BYTES: u64 = 64 << 20;

/// The most windows one record may fall into (`window / slide`, rounded up), for batch-time and
/// event-time windows alike; each is computed over again. An incremental window
/// (`reduce_by_key_and_window` with `inverse = true`) is exempt: it adds and removes each record
/// once, however many windows hold it.
pub const MAX_WINDOWS_PER_RECORD: i64 = 1000;

/// The most input batches a batch-time window may span (`window / ` the input's slide): each is
/// kept until it leaves the window.
pub const MAX_BATCHES_PER_WINDOW: i64 = 100_000;

/// The most problems printed for one job; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 50;

/// The most "feeds no sink" warnings listed for one job; the rest are counted.
pub const MAX_WARNINGS: usize = 50;

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// A year as humantime writes it (`1year`): 365.25 days.
const YEAR: Duration = Duration::from_secs(31_557_600);

/// The values a duration setting may take, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The shortest.
    pub min: Duration,
    /// The longest.
    pub max: Duration,
}

impl DurationRange {
    const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// Whether `d` is in the range.
    pub fn contains(&self, d: Duration) -> bool {
        self.min <= d && d <= self.max
    }
}

/// `batch_interval`: 1 ms … 1 day.
pub const BATCH_INTERVAL: DurationRange = DurationRange::new(MS, DAY);
/// `window` and `slide` of batch-time and event-time windows: 1 ms … 1 year.
pub const WINDOW: DurationRange = DurationRange::new(MS, YEAR);
/// `watermark` (the delay of an event-time window): 0 … 1 year.
pub const WATERMARK: DurationRange = DurationRange::new(Duration::ZERO, YEAR);
/// `max_event_time_ahead`: 1 ms … 1 year.
pub const MAX_EVENT_TIME_AHEAD: DurationRange = DurationRange::new(MS, YEAR);
/// `timeout` of `map_with_state`: 1 ms … 1 year.
pub const TIMEOUT: DurationRange = DurationRange::new(MS, YEAR);
/// `checkpoint_interval`: 1 ms … 1 year (and a multiple of the batch interval).
pub const CHECKPOINT_INTERVAL: DurationRange = DurationRange::new(MS, YEAR);
/// A socket source's `reconnect_delay`: 1 ms … 1 hour.
pub const RECONNECT_DELAY: DurationRange = DurationRange::new(MS, HOUR);
/// `wal_fsync` as an interval: 1 ms … 1 hour.
pub const WAL_FSYNC: DurationRange = DurationRange::new(MS, HOUR);
/// An http source's `header_timeout` and `body_timeout`: 1 ms … 1 hour.
pub const INGEST_TIMEOUT: DurationRange = DurationRange::new(MS, HOUR);

/// A Kafka source's `broker_timeout`: 100 ms … 1 hour.
pub const BROKER_TIMEOUT: DurationRange = DurationRange::new(Duration::from_millis(100), HOUR);

/// A duration as a manifest writes it (`1day`, `500ms`).
pub(super) fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Planner<'_> {
    /// Check every duration of the job against its range; each one outside is an error naming
    /// the field, the value and the range.
    pub(super) fn check_durations(&mut self, spec: &JobSpec) {
        let mut found: Vec<(Option<usize>, String, &'static str, Duration, DurationRange)> =
            Vec::new();
        let mut check = |line: Option<usize>,
                         subject: &dyn Fn() -> String,
                         field: &'static str,
                         value: Option<Duration>,
                         range: DurationRange| {
            if let Some(value) = value
                && !range.contains(value)
            {
                found.push((line, subject(), field, value, range));
            }
        };
        let job = || "job".to_string();
        check(
            spec.line,
            &job,
            "batch_interval",
            Some(spec.batch_interval),
            BATCH_INTERVAL,
        );
        if let Some(c) = &spec.checkpoint {
            check(
                spec.line,
                &job,
                "checkpoint_interval",
                c.interval,
                CHECKPOINT_INTERVAL,
            );
            if let WalSync::Interval(every) = c.wal_sync {
                check(spec.line, &job, "wal_fsync", Some(every), WAL_FSYNC);
            }
        }
        for source in &spec.sources {
            let subject = || format!("source '{}'", source.name);
            match &source.kind {
                super::SourceKind::Socket {
                    reconnect_delay, ..
                } => check(
                    source.line,
                    &subject,
                    "reconnect_delay",
                    Some(*reconnect_delay),
                    RECONNECT_DELAY,
                ),
                super::SourceKind::Http {
                    header_timeout,
                    body_timeout,
                    ..
                } => {
                    check(
                        source.line,
                        &subject,
                        "header_timeout",
                        *header_timeout,
                        INGEST_TIMEOUT,
                    );
                    check(
                        source.line,
                        &subject,
                        "body_timeout",
                        *body_timeout,
                        INGEST_TIMEOUT,
                    );
                }
                super::SourceKind::Kafka(config) => check(
                    source.line,
                    &subject,
                    "broker_timeout",
                    Some(config.broker_timeout),
                    BROKER_TIMEOUT,
                ),
                super::SourceKind::Directory { .. } | super::SourceKind::Queue => {}
            }
        }
        for s in &spec.streams {
            let subject = || format!("stream '{}'", s.name);
            for (field, value, range) in [
                ("window", s.window, WINDOW),
                ("slide", s.slide, WINDOW),
                ("watermark", s.watermark, WATERMARK),
                (
                    "max_event_time_ahead",
                    s.max_event_time_ahead,
                    MAX_EVENT_TIME_AHEAD,
                ),
                ("timeout", s.timeout, TIMEOUT),
            ] {
                check(s.line, &subject, field, value, range);
            }
        }
        for (line, subject, field, value, range) in found {
            let hint = (self.errors.len() < MAX_REPORTED_ERRORS).then(|| {
                format!(
                    "write a duration from {} to {}, e.g. {field} = \"{}\"",
                    show_duration(range.min),
                    show_duration(range.max),
                    show_duration(value.clamp(range.min, range.max))
                )
            });
            self.error(
                line,
                &subject,
                format!(
                    "{field} = {} is outside the allowed range {} … {}",
                    show_duration(value),
                    show_duration(range.min),
                    show_duration(range.max)
                ),
                hint,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_their_ends() {
        assert!(BATCH_INTERVAL.contains(Duration::from_millis(1)));
        assert!(BATCH_INTERVAL.contains(DAY));
        assert!(!BATCH_INTERVAL.contains(DAY + MS));
        assert!(!BATCH_INTERVAL.contains(Duration::from_micros(999)));
        assert!(WATERMARK.contains(Duration::ZERO));
        assert_eq!(show_duration(YEAR), "1year");
    }
}
