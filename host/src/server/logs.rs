//! Each job's recent log lines, for `host logs JOB`: a `tracing` layer keeps the events that
//! name both a tenant and a job (`tenant = …, job = …`: batch reports, guest logs, operator
//! warnings) in a bounded buffer per (tenant, job). An event that names a job but no tenant is
//! not kept: two tenants may have jobs of the same name, and a line must never reach another
//! tenant.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept per job; older ones are dropped first.
pub const MAX_LINES_PER_JOB: usize = 10_000;

/// The most bytes of one kept line.
const MAX_LINE_BYTES: usize = 4096;

/// Every job's recent lines.
#[derive(Debug, Default)]
pub struct JobLogs {
    enabled: AtomicBool,
    next: AtomicU64,
    lines: Mutex<HashMap<(String, String), Lines>>,
}

/// One job's kept lines with their sequence numbers, oldest first.
type Lines = VecDeque<(u64, String)>;

/// A job's lines after a point, and where the next read starts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogPage {
    /// `(sequence number, line)`, oldest first.
    pub lines: Vec<(u64, String)>,
    /// Pass as `after` to read on.
    pub next: u64,
}

impl JobLogs {
    /// The process's job logs (kept only once [`enable`](Self::enable)d: `host serve`).
    pub fn global() -> &'static JobLogs {
        static LOGS: OnceLock<JobLogs> = OnceLock::new();
        LOGS.get_or_init(JobLogs::default)
    }

    /// Start keeping lines.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// `tenant`'s `job`'s lines with sequence numbers above `after`, at most `limit`.
    pub fn read(&self, tenant: &str, job: &str, after: u64, limit: usize) -> LogPage {
        let all = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let lines: Vec<(u64, String)> = all
            .get(&(tenant.to_string(), job.to_string()))
            .map(|q| {
                q.iter()
                    .filter(|(seq, _)| *seq > after)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let next = lines.last().map_or(after, |(seq, _)| *seq);
        LogPage { lines, next }
    }

    fn keep(&self, tenant: String, job: String, line: String) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut all = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let q = all.entry((tenant, job)).or_default();
        if q.len() >= MAX_LINES_PER_JOB {
            q.pop_front();
        }
        q.push_back((seq, line));
    }
}

/// The layer to add to the process's subscriber.
pub fn layer() -> JobLogsLayer {
    JobLogsLayer
}

/// A `tracing_subscriber` layer feeding [`JobLogs::global`].
#[derive(Debug, Clone, Copy)]
pub struct JobLogsLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JobLogsLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let logs = JobLogs::global();
        if !logs.enabled.load(Ordering::Acquire) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (Some(tenant), Some(job)) = (fields.tenant.take(), fields.job.take()) else {
            return;
        };
        let meta = event.metadata();
        let mut line = format!(
            "{} {} {}: {}{}",
            humantime::format_rfc3339_millis(std::time::SystemTime::now()),
            meta.level(),
            meta.target(),
            fields.message,
            fields.rest
        );
        if line.len() > MAX_LINE_BYTES {
            let cut = (0..=MAX_LINE_BYTES)
                .rev()
                .find(|&i| line.is_char_boundary(i))
                .unwrap_or(0);
            line.truncate(cut);
            line.push('…');
        }
        logs.keep(tenant, job, line);
    }
}

/// An event's message, tenant, job and other fields.
#[derive(Default)]
struct Fields {
    message: String,
    tenant: Option<String>,
    job: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "tenant" => self.tenant = Some(value.to_string()),
            "job" => self.job = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let shown = format!("{value:?}");
        match field.name() {
            // `%x` fields arrive here, displayed.
            "tenant" => self.tenant = Some(shown),
            "job" => self.job = Some(shown),
            "message" => self.message = shown,
            name => {
                let _ = write!(self.rest, " {name}={shown}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_are_kept_per_tenant_and_job_only_when_both_are_named() {
        let logs = JobLogs::global();
        logs.enable();
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(tenant = "t1", job = "j", batch = 3, "batch done");
            tracing::warn!(tenant = %"t2", job = %"j", "other tenant");
            tracing::info!(job = "j", "no tenant: not kept");
        });
        let page = logs.read("t1", "j", 0, 100);
        assert_eq!(page.lines.len(), 1, "{page:?}");
        assert!(page.lines[0].1.contains("INFO"), "{page:?}");
        assert!(page.lines[0].1.contains("batch done batch=3"), "{page:?}");
        let other = logs.read("t2", "j", 0, 100);
        assert_eq!(other.lines.len(), 1, "{other:?}");
        assert!(other.lines[0].1.contains("other tenant"));
        assert!(logs.read("t1", "j", page.next, 100).lines.is_empty());
        assert!(logs.read("t3", "j", 0, 100).lines.is_empty());
    }
}
