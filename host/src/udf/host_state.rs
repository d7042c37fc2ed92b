//! What each guest instance's store holds: its memory limiter, the labels of the call in
//! progress, and the host's side of the `logging` and `metrics` imports.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;

use super::bindings::transform::sluice::udf::{logging, metrics, types};
use super::config::UdfLimits;
use super::guest_text;
use crate::metrics::{Registry, SeriesKey};

/// Who is calling: carried into guest logs and errors so every line names its tenant, job,
/// batch and UDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The tenant owning the job.
    pub tenant: Arc<str>,
    /// The job.
    pub job: Arc<str>,
    /// The batch being processed.
    pub batch_id: u64,
    /// Its batch time, ms since the Unix epoch.
    pub batch_time: i64,
    /// The partition of the batch.
    pub partition: u32,
}

impl CallContext {
    /// A context for one-off calls outside a job (`host call`, tests, benchmarks).
    pub fn adhoc() -> Self {
        Self {
            tenant: Arc::from("local"),
            job: Arc::from("adhoc"),
            batch_id: 0,
            batch_time: 0,
            partition: 0,
        }
    }
}

/// The limiter error: a guest asked for more memory than its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: asked for {requested} bytes, limit {limit}")]
pub(crate) struct MemoryLimitExceeded {
    pub requested: u64,
    pub limit: u64,
}

/// The limiter error: a guest asked for a larger table than its limit.
#[derive(Debug, thiserror::Error)]
#[error("table limit exceeded: asked for {requested} elements, limit {limit}")]
pub(crate) struct TableLimitExceeded {
    pub requested: u64,
    pub limit: u64,
}

/// Caps memory and tables of one instance, failing the call with a typed error (not a quiet
/// allocation failure the guest might mishandle).
#[derive(Debug)]
pub(crate) struct Limiter {
    pub memory: usize,
    pub table_elements: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                requested: desired as u64,
                limit: self.memory as u64,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(TableLimitExceeded {
                requested: desired as u64,
                limit: self.table_elements as u64,
            }));
        }
        Ok(true)
    }
}

/// What one call may write through the host's imports; copied from [`UdfLimits`] once per
/// instance.
#[derive(Debug, Clone)]
pub(crate) struct ImportBudget {
    pub log_lines: u32,
    pub log_bytes: usize,
    pub log_message: usize,
    pub log_field: usize,
    pub log_fields: usize,
    pub metric_series: usize,
    pub metric_name: usize,
    pub error_message: usize,
}

impl ImportBudget {
    pub fn new(limits: &UdfLimits) -> Self {
        Self {
            log_lines: limits.max_log_lines_per_call,
            log_bytes: limits.max_log_bytes_per_call.as_usize(),
            log_message: limits.max_log_message.as_usize(),
            log_field: limits.max_log_field.as_usize(),
            log_fields: limits.max_log_fields as usize,
            metric_series: limits.max_metric_series as usize,
            metric_name: limits.max_metric_name as usize,
            error_message: limits.max_error_message.as_usize(),
        }
    }
}

/// Log field names are cut to this many bytes.
const MAX_LOG_FIELD_NAME: usize = 64;

/// What one call did past its budget: summed up once per call, in one warning and in the
/// tenant's counters, never once per offending line or name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Overflow {
    /// Log lines dropped (over the line or byte budget).
    pub log_lines: u64,
    /// Messages or field values cut to their bound.
    pub log_cuts: u64,
    /// Fields dropped past the per-line cap.
    pub log_fields: u64,
    /// Metric updates refused because the name is too long or not a metric name.
    pub bad_metric_names: u64,
    /// Metric updates dropped because the component has all the series it may create.
    pub series_over_cap: u64,
}

impl Overflow {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `(what, count)` of every non-zero item, for counters and the warning.
    pub fn items(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("log_lines_dropped", self.log_lines),
            ("log_values_cut", self.log_cuts),
            ("log_fields_dropped", self.log_fields),
            ("metric_names_refused", self.bad_metric_names),
            ("metric_series_over_cap", self.series_over_cap),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
    }
}

/// The data of one guest instance's store.
pub(crate) struct HostState {
    pub limiter: Limiter,
    pub component: Arc<str>,
    pub function: Arc<str>,
    pub context: CallContext,
    pub registry: Arc<Registry>,
    pub budget: ImportBudget,
    /// Per call: log lines and bytes written, what went over budget, and the guest's panic
    /// report (its own words, kept cut and escaped: a guest can write anything there).
    log_lines: u32,
    log_bytes: usize,
    pub overflow: Overflow,
    pub panic_report: Option<String>,
    /// Series keys by the name the guest used, for the current tenant, job and function: a
    /// guest that counts per record must not build a labelled key per record. Only names that
    /// passed the checks are kept, so the cache is bounded by the series cap.
    series_cache: HashMap<String, SeriesKey>,
    /// Whether the component was found at its series cap during this call: later new names
    /// are dropped without looking again.
    series_full: bool,
}

impl HostState {
    pub fn new(
        limiter: Limiter,
        component: Arc<str>,
        registry: Arc<Registry>,
        budget: ImportBudget,
    ) -> Self {
        Self {
            limiter,
            component,
            function: Arc::from(""),
            context: CallContext::adhoc(),
            registry,
            budget,
            log_lines: 0,
            log_bytes: 0,
            overflow: Overflow::default(),
            panic_report: None,
            series_cache: HashMap::new(),
            series_full: false,
        }
    }

    /// Get ready for a new call.
    pub fn begin_call(&mut self, function: &Arc<str>, context: &CallContext) {
        if self.function != *function
            || self.context.tenant != context.tenant
            || self.context.job != context.job
        {
            self.series_cache.clear();
        }
        self.function = function.clone();
        self.context = context.clone();
        self.log_lines = 0;
        self.log_bytes = 0;
        self.overflow = Overflow::default();
        self.panic_report = None;
        self.series_full = false;
    }

    /// The labelled series for the guest's metric `name`, or none when the name is refused or
    /// the component has all the series it may create.
    fn series(&mut self, name: &str) -> Option<&SeriesKey> {
        if !self.series_cache.contains_key(name) {
            if !is_metric_name(name, self.budget.metric_name) {
                self.overflow.bad_metric_names += 1;
                return None;
            }
            let key = SeriesKey::new(
                name,
                &[
                    ("tenant", &self.context.tenant),
                    ("job", &self.context.job),
                    ("component", &self.component),
                    ("function", &self.function),
                ],
            );
            if !self.registry.contains(&key)
                && (self.series_full
                    || self
                        .registry
                        .series_with_label("component", &self.component)
                        >= self.budget.metric_series)
            {
                self.series_full = true;
                self.overflow.series_over_cap += 1;
                return None;
            }
            if self.series_cache.len() >= self.budget.metric_series {
                // Names of earlier jobs or functions of this instance: start over.
                self.series_cache.clear();
            }
            self.series_cache.insert(name.to_string(), key);
        }
        self.series_cache.get(name)
    }
}

/// Whether `name` is a metric name the host accepts: Prometheus' `[A-Za-z_:][A-Za-z0-9_:]*`,
/// at most `max` bytes.
pub(crate) fn is_metric_name(name: &str, max: usize) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':');
    first_ok
        && name.len() <= max
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String, fields: Vec<(String, String)>) {
        let is_panic = fields.iter().any(|(k, v)| k == "panic" && v == "true");
        if is_panic {
            // The guest's own account of a panic: kept for the error, labelled as the guest's.
            self.panic_report = Some(guest_text::sanitize(&message, self.budget.error_message));
        }
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > self.budget.log_lines || self.log_bytes >= self.budget.log_bytes {
            self.overflow.log_lines += 1;
            return;
        }
        let mut cuts = 0;
        let mut clean = |text: &str, max: usize| {
            cuts += u64::from(text.len() > max);
            guest_text::sanitize(text, max)
        };
        let message = clean(&message, self.budget.log_message);
        let mut text = String::new();
        for (k, v) in fields.iter().take(self.budget.log_fields) {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&clean(k, MAX_LOG_FIELD_NAME));
            text.push('=');
            text.push_str(&clean(v, self.budget.log_field));
        }
        // The whole line must fit in what is left of the call's byte budget.
        let bytes = message.len() + text.len();
        if self.log_bytes + bytes > self.budget.log_bytes {
            self.log_bytes = self.budget.log_bytes;
            self.overflow.log_lines += 1;
            return;
        }
        self.log_bytes += bytes;
        self.overflow.log_cuts += cuts;
        self.overflow.log_fields += fields.len().saturating_sub(self.budget.log_fields) as u64;
        let fields = text;
        let c = &self.context;
        let udf = format!("{}#{}", self.component, self.function);
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(
                    target: "sluice::guest",
                    tenant = %c.tenant, job = %c.job, batch = c.batch_id, partition = c.partition, udf = %udf,
                    fields = %fields,
                    "{message}"
                )
            };
        }
        match level {
            logging::Level::Trace => emit!(trace),
            logging::Level::Debug => emit!(debug),
            logging::Level::Info => emit!(info),
            logging::Level::Warn => emit!(warn),
            logging::Level::Error => emit!(error),
        }
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, delta: u64) {
        let registry = self.registry.clone();
        if let Some(key) = self.series(&name) {
            registry.add(key, delta);
        }
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        let registry = self.registry.clone();
        if let Some(key) = self.series(&name) {
            registry.set(key, value);
        }
    }
}

impl types::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_prometheus_and_the_length_cap() {
        assert!(is_metric_name("records_seen", 128));
        assert!(is_metric_name("_x:y9", 128));
        assert!(!is_metric_name("", 128));
        assert!(!is_metric_name("9lives", 128));
        assert!(!is_metric_name("with space", 128));
        assert!(!is_metric_name("line\nbreak", 128));
        assert!(!is_metric_name(&"a".repeat(129), 128));
        assert!(is_metric_name(&"a".repeat(128), 128));
    }
}
