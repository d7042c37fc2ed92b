//! The bounds a job must keep, so that no manifest (or job built in Rust) can crash, hang or
//! exhaust the host: every duration in a documented range, a bounded number of windows per
//! record, files read only when they are regular files of a bounded size, and diagnostics whose
//! size grows at most linearly with the manifest.
//!
//! The planner checks durations first and stops there when one is out of range, so nothing
//! after it (the planner's own arithmetic, the scheduler, the operators) ever sees a duration
//! whose milliseconds could overflow or be zero where it divides.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Planner;
use super::spec::JobSpec;
use crate::wal::WalSync;

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

/// A duration as a manifest writes it (`1day`, `500ms`).
pub(super) fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A file that could not be read within the bounds.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A directory, device, FIFO or socket: only regular files are read (a FIFO would block
    /// forever, a device may never end).
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is, e.g. "a character device".
        kind: &'static str,
    },
    /// Larger than the cap.
    #[error("{} holds {size} bytes, more than the {max} bytes allowed", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or how much was read before stopping).
        size: u64,
        /// The cap.
        max: u64,
    },
    /// It could not be opened or read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (not a `source`: the message already says it).
        error: std::io::Error,
    },
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Read a whole file of at most `max` bytes. Its type is checked before it is opened (a FIFO or
/// a device is never opened), and again on the opened file, which is opened non-blocking so
/// that a file swapped for a FIFO in between cannot block; at most `max + 1` bytes are read, so
/// a file that grows meanwhile is still refused.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind: kind_of(meta.file_type()),
            });
        }
        if meta.len() > max {
            return Err(FileError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                max,
            });
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(io)?)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    check(&file.metadata().map_err(io)?)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

impl Planner<'_, '_> {
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
                super::SourceKind::Directory { .. } | super::SourceKind::Queue(_) => {}
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
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.tsv");
        std::fs::write(&file, b"a\tb\n").unwrap();
        assert_eq!(read_regular_file(&file, 4).unwrap(), b"a\tb\n");
        assert!(matches!(
            read_regular_file(&file, 3),
            Err(FileError::TooLarge {
                size: 4,
                max: 3,
                ..
            })
        ));
        assert!(matches!(
            read_regular_file(dir.path(), 100),
            Err(FileError::NotRegular {
                kind: "a directory",
                ..
            })
        ));
        assert!(matches!(
            read_regular_file(Path::new("/dev/zero"), 100),
            Err(FileError::NotRegular {
                kind: "a character device",
                ..
            })
        ));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_regular_file(&fifo, 100).unwrap_err();
        assert!(
            matches!(err, FileError::NotRegular { kind, .. } if kind.contains("FIFO")),
            "{err}"
        );
        assert!(matches!(
            read_regular_file(&dir.path().join("missing"), 100),
            Err(FileError::Io { .. })
        ));
    }

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
