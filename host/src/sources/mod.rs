//! Sources: where a job's records come from. Each source yields unkeyed text lines (one record
//! per line), sealed into batches by the scheduler:
//!
//! - [`socket`]: Spark's `socketTextStream`, a receiver task that reconnects when the peer goes
//!   away;
//! - [`directory`]: Spark's `textFileStream`, each new file read once, never half-written;
//! - [`http`]: a reliable receiver, `POST /ingest/<source>`, answered once the records are in
//!   the write-ahead log;
//! - [`queue`]: batches pushed by a program (Spark's `queueStream`), for the Rust API and tests.
//!
//! Receivers (socket, http) buffer what they take in [`received::Received`], which writes each
//! block to the source's write-ahead log first when the job checkpoints.
//!
//! A line that is not UTF-8 is not a record: it is counted (`invalid_lines` in the batch's stats
//! and `sluice_source_invalid_lines_total`) and logged with where it came from, and the job goes
//! on. So is a socket line over `max_line_bytes`, dropped as it arrives. No client can hang or
//! exhaust a receiver: see the limits of [`socket`] and [`http`].

pub mod directory;
pub mod http;
pub mod queue;
pub mod received;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;

pub use directory::Start;
pub use queue::{QueueReceiver, QueueSender, queue};

use crate::batch::Batch;

/// What a source hands the next batch.
#[derive(Debug)]
pub enum SourceInput {
    /// Records already received, with the number of lines refused as not UTF-8.
    Records {
        /// The records.
        records: Batch,
        /// Lines refused since the last batch.
        invalid_lines: u64,
        /// The write-ahead log range the records came from, when the source logs.
        wal: Option<(u64, u64)>,
    },
    /// Files to read as part of the batch (the batch reads them, in parallel).
    Files(Vec<PathBuf>),
}

/// Where a source stands, for the scheduler.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceStatus {
    /// Records waiting for the next batch.
    pub buffered: usize,
    /// More input is ready now than one batch may take (files over `max_files_per_batch`,
    /// queued batches): with `--until-idle` the next batch starts at once.
    pub backlog: bool,
    /// Nothing more will come (`--until-idle`: the connection ended, the files are read, the
    /// queue is closed and empty).
    pub exhausted: bool,
}

/// A running source.
pub trait Source: Send {
    /// Its stream name.
    fn name(&self) -> &str;
    /// Take the input of the next batch: at most `max_records` records when set.
    fn take(&mut self, max_records: Option<usize>) -> SourceInput;
    /// Where it stands.
    fn status(&mut self) -> SourceStatus;
    /// Stop receiving (a graceful stop): what was received stays to be taken.
    fn stop(&mut self);
    /// What the source refused, cut off or dropped since it started, by reason (e.g.
    /// `("connections_refused", 3)`), for metrics. Most sources refuse nothing.
    fn refusals(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The records of write-ahead log range `from..to` again, for a batch being re-run after a
    /// crash. Only receivers with a log have any.
    fn replay(&mut self, from: u64, to: u64) -> Result<SourceInput, crate::wal::WalError> {
        Err(crate::wal::WalError::Missing {
            dir: PathBuf::from(self.name()),
            from,
            to,
            what: "the source keeps no write-ahead log".into(),
        })
    }
}

/// What a source needs from the job that runs it.
#[derive(Clone)]
pub struct SourceContext {
    /// The runtime the job's scheduler runs on (the [`Core`](crate::engine::Core)'s, shared by
    /// every job of the process), for receiver tasks; a source ends its tasks when it stops or
    /// is dropped.
    pub runtime: tokio::runtime::Handle,
    /// Woken when a receiver holds `max_batch_records` records.
    pub early_seal: Arc<tokio::sync::Notify>,
    /// The job's early-seal threshold.
    pub max_batch_records: Option<usize>,
    /// End sources when their input ends instead of waiting for more (`--until-idle`).
    pub until_idle: bool,
    /// For logs.
    pub job: Arc<str>,
}

/// Append the complete lines of `data` to `batch` (without `\n` or `\r\n`), each with
/// `event_time`; lines that are not UTF-8 are skipped and their 0-based indexes returned.
/// The bytes after the last newline, if any, are a last line only when `last` is set.
pub fn push_lines(
    data: &[u8],
    last: bool,
    batch: &mut Batch,
    event_time: i64,
    invalid: &mut Vec<u64>,
) -> usize {
    let mut consumed = 0;
    let mut index = 0u64;
    let mut rest = data;
    loop {
        let (line, advance) = match memchr_newline(rest) {
            Some(i) => (&rest[..i], i + 1),
            None if last && !rest.is_empty() => (rest, rest.len()),
            None => break,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if std::str::from_utf8(line).is_ok() {
            batch.push(None, line, event_time);
        } else {
            invalid.push(index);
        }
        index += 1;
        consumed += advance;
        rest = &rest[advance..];
    }
    consumed
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', data)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_bad_utf8_is_counted() {
        let mut b = Batch::empty(false);
        let mut invalid = Vec::new();
        let used = push_lines(b"a\r\nbb\n\xff\xfe\nc", false, &mut b, 7, &mut invalid);
        assert_eq!(used, 9);
        assert_eq!(b.values.iter().collect::<Vec<_>>(), [&b"a"[..], b"bb"]);
        assert_eq!(invalid, [2]);
        let used = push_lines(b"c", true, &mut b, 7, &mut invalid);
        assert_eq!(used, 1);
        assert_eq!(b.len(), 3);
    }
}
