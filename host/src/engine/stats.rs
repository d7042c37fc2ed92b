//! What every batch did, kept for logs, `host run`'s summary and the UI of a later issue.

use std::sync::Arc;
use std::time::Duration;

/// One operator's share of a batch.
#[derive(Debug, Clone)]
pub struct OperatorStats {
    /// The stream.
    pub stream: Arc<str>,
    /// Its operator (`flat_map`, `reduce_by_key`, `source`…).
    pub op: &'static str,
    /// Records in (for a source: records read).
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Wall time spent on it.
    pub time: Duration,
}

/// One finished batch.
#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    /// The batch id.
    pub id: u64,
    /// The batch time, ms since the Unix epoch.
    pub time: i64,
    /// Records from all sources.
    pub records_in: u64,
    /// Input lines refused as not UTF-8.
    pub invalid_lines: u64,
    /// From sealing to the start of processing (time spent queued behind earlier batches).
    pub scheduling_delay: Duration,
    /// From the start to the end of processing.
    pub processing_time: Duration,
    /// From sealing to the end of processing.
    pub total_delay: Duration,
    /// Per stream, in plan order (streams with no batch at this time are left out).
    pub operators: Vec<OperatorStats>,
    /// Records event-time windows dropped as later than their watermark.
    pub late_records: u64,
    /// Bytes of state the job holds after the batch.
    pub state_bytes: u64,
    /// Why the batch failed, if it did.
    pub error: Option<String>,
    /// Whether the failure ends the job whatever its error policy (state could not be
    /// written, or the state limit was reached).
    pub fatal: bool,
    /// The component versions the batch ran with.
    pub udfs: Vec<UsedUdf>,
    /// A new version that failed this batch on trial and was rolled back (the batch then ran
    /// with the old one).
    pub rollback: Option<super::trial::Rollback>,
    /// Whether the failed batch was skipped (`skip_batch`, the failing stream's or the job's)
    /// and the job goes on.
    pub skipped: bool,
    /// Records isolated as dead letters (`on_error = "dead_letter"`).
    pub dead_letters: u64,
}

/// A component version a batch ran with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsedUdf {
    /// The component.
    pub component: String,
    /// Its registry version (none for a folder's).
    pub version: Option<u64>,
    /// Its hash.
    pub hash: String,
}

/// What a whole run did.
#[derive(Debug, Clone, Default)]
pub struct JobSummary {
    /// Batches run.
    pub batches: u64,
    /// Of which failed (and skipped under `on_udf_error = "skip_batch"`).
    pub failed_batches: u64,
    /// Records read from all sources.
    pub records_in: u64,
    /// Lines refused as not UTF-8.
    pub invalid_lines: u64,
    /// Records dropped as late by event-time windows.
    pub late_records: u64,
    /// Wall time from the first batch's seal to the last batch's end.
    pub elapsed: Duration,
    /// Processing time of every batch, in order.
    pub processing_times: Vec<Duration>,
    /// Total delay of every batch, in order.
    pub total_delays: Vec<Duration>,
    /// Whether the job was stopped by a signal or [`Job::stop`](super::Job::stop).
    pub stopped: bool,
}

impl JobSummary {
    /// Count a finished batch in.
    pub fn add(&mut self, report: &BatchReport) {
        self.batches += 1;
        self.failed_batches += u64::from(report.error.is_some());
        self.records_in += report.records_in;
        self.invalid_lines += report.invalid_lines;
        self.late_records += report.late_records;
        self.processing_times.push(report.processing_time);
        self.total_delays.push(report.total_delay);
    }

    /// Records per second over the wall time of the run.
    pub fn records_per_second(&self) -> f64 {
        self.records_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The `p`-th percentile (0–100) of `samples`, nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 50.0), Duration::from_millis(5));
        assert_eq!(percentile(&ms, 99.0), Duration::from_millis(10));
        assert_eq!(percentile(&ms, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
