//! What every job of a process shares: one rayon worker pool for the batches' partitions and one
//! multi-thread tokio runtime for the schedulers, receivers, HTTP endpoints and timers (its
//! blocking pool takes write-ahead log appends and fsyncs). N jobs do not multiply threads: a job
//! adds only its executor thread.
//!
//! A [`Core`] is made once ([`Core::new`], or the lazily made [`Core::global`] that
//! [`Job::start`](super::Job::start) uses when [`JobOptions::core`](super::JobOptions::core) is
//! not set) and handed to every job that should share it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The default number of the runtime's worker threads: scheduling, receiving and answering
/// HTTP is light; the heavy work runs on the worker pool and the blocking pool.
pub const DEFAULT_IO_THREADS: usize = 2;

/// How long dropping a [`Core`] waits for blocking work (a log append) still running.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// How big a [`Core`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// Threads of the worker pool that runs batches' partitions; default one per core.
    pub workers: Option<usize>,
    /// Worker threads of the async runtime (at least 1); default [`DEFAULT_IO_THREADS`].
    pub io_threads: usize,
    /// Give each tenant a worker pool of its own, of `workers` threads, made when its first
    /// job starts (`host serve`): the OS then shares the cores fairly between the busy threads
    /// of all tenants, instead of one tenant's partitions waiting behind another's in one
    /// queue. Off: every job runs on the one pool.
    pub pool_per_tenant: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            workers: None,
            io_threads: DEFAULT_IO_THREADS,
            pool_per_tenant: false,
        }
    }
}

/// Why a [`Core`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The worker pool's threads could not be started.
    #[error(
        "cannot start the worker pool of {workers} threads: {error}; is the process out of threads (ulimit -u) or memory?"
    )]
    Pool {
        /// The threads asked for.
        workers: usize,
        /// rayon's reason.
        error: String,
    },
    /// The async runtime could not be started.
    #[error(
        "cannot start the async runtime of {threads} threads: {error}; is the process out of threads (ulimit -u), memory or file descriptors?"
    )]
    Runtime {
        /// The worker threads asked for.
        threads: usize,
        /// tokio's reason.
        error: std::io::Error,
    },
}

/// One worker pool and one async runtime, shared by every job started on it.
///
/// Dropping the last handle shuts the runtime down (tasks still on it are cancelled); a job
/// keeps its core alive until [`Job::wait`](super::Job::wait) returns.
pub struct Core {
    pool: Arc<rayon::ThreadPool>,
    /// With [`CoreConfig::pool_per_tenant`]: each tenant's pool, by tenant.
    tenant_pools: Option<Mutex<std::collections::HashMap<String, Arc<rayon::ThreadPool>>>>,
    workers: usize,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// The process's default core, made on first use.
static GLOBAL: Mutex<Option<Arc<Core>>> = Mutex::new(None);

impl Core {
    /// Start a worker pool (threads `sluice-worker-N`) and a runtime (threads `sluice-io-N`,
    /// its blocking pool included).
    pub fn new(config: CoreConfig) -> Result<Arc<Core>, CoreError> {
        let workers = config
            .workers
            .unwrap_or_else(crate::plan::spec::default_partitions)
            .max(1);
        let pool = worker_pool(workers, "sluice-worker")?;
        let threads = config.io_threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name_fn(|| {
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("sluice-io-{n}")
            })
            .enable_all()
            .build()
            .map_err(|error| CoreError::Runtime { threads, error })?;
        Ok(Arc::new(Core {
            pool: Arc::new(pool),
            tenant_pools: config.pool_per_tenant.then(Mutex::default),
            workers,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        }))
    }

    /// The process's default core (made with [`CoreConfig::default`] on first use, then the
    /// same one every time).
    pub fn global() -> Result<Arc<Core>, CoreError> {
        let mut global = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(core) = &*global {
            return Ok(core.clone());
        }
        let core = Core::new(CoreConfig::default())?;
        *global = Some(core.clone());
        Ok(core)
    }

    /// The worker pool batches run their partitions on.
    pub fn pool(&self) -> &Arc<rayon::ThreadPool> {
        &self.pool
    }

    /// The pool `tenant`'s jobs run on: its own with [`CoreConfig::pool_per_tenant`] (made
    /// now if it is the tenant's first job), else the one pool.
    pub fn pool_for(&self, tenant: &str) -> Result<Arc<rayon::ThreadPool>, CoreError> {
        let Some(pools) = &self.tenant_pools else {
            return Ok(self.pool.clone());
        };
        let mut pools = pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(tenant) {
            return Ok(pool.clone());
        }
        // Thread names are cut to 15 bytes: the tenant's number, not its name.
        let pool = Arc::new(worker_pool(
            self.workers,
            &format!("sluice-t{}", pools.len() + 1),
        )?);
        pools.insert(tenant.to_string(), pool.clone());
        Ok(pool)
    }

    /// Threads in the worker pool (and in each tenant's).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The runtime schedulers and receivers run on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// A rayon pool of `workers` threads named `<name>-<i>`.
fn worker_pool(workers: usize, name: &str) -> Result<rayon::ThreadPool, CoreError> {
    let name = name.to_string();
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| CoreError::Pool {
            workers,
            error: e.to_string(),
        })
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Dropped inside a runtime (a task held the last handle): waiting would block
                // it, so the threads are let go and end on their own.
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_runs_tasks_and_pool_work_and_the_global_one_is_shared() {
        let core = Core::new(CoreConfig {
            workers: Some(2),
            io_threads: 1,
            pool_per_tenant: false,
        })
        .expect("a core");
        assert_eq!(core.workers(), 2);
        let name = core
            .pool()
            .install(|| std::thread::current().name().map(str::to_string));
        assert_eq!(
            name.as_deref().map(|n| n.starts_with("sluice-worker-")),
            Some(true)
        );
        let (tx, rx) = std::sync::mpsc::channel();
        core.handle().spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_string));
        });
        let io = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the task ran");
        assert_eq!(
            io.as_deref().map(|n| n.starts_with("sluice-io-")),
            Some(true)
        );
        let a = Core::global().expect("the global core");
        let b = Core::global().expect("the global core");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn tenants_get_pools_of_their_own_only_when_asked() {
        let shared = Core::new(CoreConfig {
            workers: Some(1),
            ..CoreConfig::default()
        })
        .expect("a core");
        let (a, b) = (shared.pool_for("a").unwrap(), shared.pool_for("b").unwrap());
        assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, shared.pool()));

        let apart = Core::new(CoreConfig {
            workers: Some(1),
            pool_per_tenant: true,
            ..CoreConfig::default()
        })
        .expect("a core");
        let (a, b) = (apart.pool_for("a").unwrap(), apart.pool_for("b").unwrap());
        assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, apart.pool()));
        assert!(
            Arc::ptr_eq(&a, &apart.pool_for("a").unwrap()),
            "one pool per tenant"
        );
        let name = b.install(|| std::thread::current().name().map(str::to_string));
        assert_eq!(name.as_deref(), Some("sluice-t2-0"));
    }
}
