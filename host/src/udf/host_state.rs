//! What each guest instance's store holds: its memory limiter, the labels of the call in
//! progress, and the host's side of the `logging` and `metrics` imports.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;

use super::bindings::transform::sluice::udf::{logging, metrics, types};
use crate::metrics::{MAX_GUEST_METRIC_NAME, MAX_GUEST_SERIES_PER_COMPONENT, Registry, SeriesKey};

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

/// The data of one guest instance's store.
pub(crate) struct HostState {
    pub limiter: Limiter,
    pub component: Arc<str>,
    pub function: Arc<str>,
    pub context: CallContext,
    pub registry: Arc<Registry>,
    pub max_log_lines: u32,
    /// Per call: log lines written and dropped, and the panic message if the guest panicked.
    pub log_lines: u32,
    pub dropped_log_lines: u32,
    pub panic_message: Option<String>,
    /// Series keys by the name the guest used, for the current tenant, job and function: a
    /// guest that counts per record must not build a labelled key per record.
    series_cache: HashMap<String, SeriesKey>,
}

impl HostState {
    pub fn new(
        limiter: Limiter,
        component: Arc<str>,
        registry: Arc<Registry>,
        max_log_lines: u32,
    ) -> Self {
        Self {
            limiter,
            component,
            function: Arc::from(""),
            context: CallContext::adhoc(),
            registry,
            max_log_lines,
            log_lines: 0,
            dropped_log_lines: 0,
            panic_message: None,
            series_cache: HashMap::new(),
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
        self.dropped_log_lines = 0;
        self.panic_message = None;
    }

    /// The labelled series for the guest's metric `name`, or none past the per-component cap.
    fn series(&mut self, name: &str) -> Option<&SeriesKey> {
        if !self.series_cache.contains_key(name) {
            let key = SeriesKey::new(
                name.chars().take(MAX_GUEST_METRIC_NAME).collect::<String>(),
                &[
                    ("tenant", &self.context.tenant),
                    ("job", &self.context.job),
                    ("component", &self.component),
                    ("function", &self.function),
                ],
            );
            if !self.registry.contains(&key)
                && self
                    .registry
                    .series_with_label("component", &self.component)
                    >= MAX_GUEST_SERIES_PER_COMPONENT
            {
                tracing::warn!(
                    component = %self.component,
                    metric = %key.name,
                    "UDF created more than {MAX_GUEST_SERIES_PER_COMPONENT} metric series; new ones are ignored"
                );
                return None;
            }
            self.series_cache.insert(name.to_string(), key);
        }
        self.series_cache.get(name)
    }
}

/// Guest messages longer than this are cut, so one log call cannot flood the host's logs.
const MAX_LOG_MESSAGE: usize = 4096;

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String, fields: Vec<(String, String)>) {
        let is_panic = fields.iter().any(|(k, v)| k == "panic" && v == "true");
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if is_panic {
            self.panic_message = Some(message.clone());
        }
        self.log_lines += 1;
        if self.log_lines > self.max_log_lines && !is_panic {
            self.dropped_log_lines += 1;
            return;
        }
        let fields = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
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
