//! `host serve`: a shared, multi-tenant host with a JSON API under `/api/v1/`.
//!
//! [`ServerState`] is what every handler shares: the [`Tenants`] and their tokens, the
//! persistent [`RegistryStore`], the in-memory [`udf::Registry`](crate::udf::Registry) rebuilt
//! from it on start, the [`UdfRuntime`], the process's [`Core`] and the data directory.
//! [`router`] serves the UDF registry (`/api/v1/udfs…`, see [`udfs`]); more routes (jobs) are
//! merged in with [`with_routes`]. Every handler takes the [`auth::Tenant`] extractor: no or an
//! unknown bearer token is 401, and a tenant only ever sees its own names (anything else is
//! 404, never data). Errors are JSON: `{"error": "…", "hint": "…"}`.

pub mod auth;
pub mod dlq;
pub mod jobs;
pub mod jobs_api;
pub mod limits;
pub mod logs;
pub mod replay;
pub mod rollout;
pub mod store;
pub mod tenants;
pub mod udfs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::Core;
use crate::udf::{Registry, UdfRuntime};
pub use store::{RegistryStore, StoreError, VersionRecord};
pub use tenants::{Quotas, TenantInfo, Tenants, TenantsError};

/// The address `host serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// What every handler of the API shares.
pub struct ServerState {
    /// Who may call, with which token, under which quotas.
    pub tenants: Tenants,
    /// The persistent UDF registry (`<data-dir>/registry/`).
    pub store: RegistryStore,
    /// Every tenant's UDFs, compiled: what jobs resolve `name` / `name@N` against. Kept in step
    /// with [`store`](Self::store) by the deploy handlers; its own `keep` limit is off (each
    /// tenant's `versions_kept` is applied by the server).
    pub registry: Arc<Registry>,
    /// The UDF runtime (compile cache, compile worker).
    pub runtime: Arc<UdfRuntime>,
    /// The process's worker pool and async runtime, shared by every job.
    pub core: Arc<Core>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// One deploy at a time per tenant (compiling is bounded in concurrency per tenant).
    deploy_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Called after every deploy that stored a new version (hot reload of running jobs).
    deploy_hooks: Mutex<Vec<DeployHook>>,
    /// Each tenant's rate limits (`api_rate`, `deploy_rate`, `max_ingest_rate`).
    pub limits: limits::RateLimits,
    /// Compiles waiting for their turn (`max_compiles` per tenant, `compile_slots` per host).
    pub compiles: limits::CompileQueue,
}

/// What runs after a deploy stored a new version: `(tenant, name, component, version)` →
/// one line per job it touched, for the deploy's answer.
pub type DeployHook =
    Arc<dyn Fn(&str, &str, &Arc<crate::udf::UdfComponent>, u64) -> Vec<String> + Send + Sync>;

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be made.
    #[error("cannot create the data directory {path}: {source}; choose another with --data-dir")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tenants could not be set up.
    #[error(transparent)]
    Tenants(#[from] TenantsError),
    /// The registry store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServerState {
    /// Open the data directory's registry and rebuild the in-memory registry from it (every
    /// stored version compiled through `runtime`, whose disk cache makes this fast). A stored
    /// version that no longer loads is logged and left out of memory (it stays stored).
    pub fn open(
        data_dir: &Path,
        tenants: Tenants,
        runtime: Arc<UdfRuntime>,
        core: Arc<Core>,
    ) -> Result<Arc<Self>, StartError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let store = RegistryStore::open(&data_dir.join("registry"))?;
        let mut registry = Registry::new(runtime.clone()).with_keep(usize::MAX);
        for tenant in tenants.all() {
            registry = registry.with_tenant_limits(
                &tenant.name,
                tenant.quotas.udf_limits(&runtime.config().limits),
            );
        }
        let registry = Arc::new(registry);
        udfs::restore(&store, &registry)?;
        Ok(Arc::new(Self {
            store,
            registry,
            runtime,
            core,
            data_dir: data_dir.to_path_buf(),
            deploy_locks: Mutex::new(HashMap::new()),
            deploy_hooks: Mutex::new(Vec::new()),
            limits: limits::RateLimits::default(),
            compiles: limits::CompileQueue::new(tenants.compile_slots),
            tenants,
        }))
    }

    /// The lock that keeps `tenant`'s deploys one at a time.
    pub(crate) fn deploy_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.deploy_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// Run `hook` after every deploy that stores a new version (the job manager rebinds the
    /// running jobs that use the component).
    pub fn on_deploy(&self, hook: DeployHook) {
        self.deploy_hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hook);
    }

    /// Tell the deploy hooks that `tenant`'s `name` has a new `version`; their lines.
    fn deployed(&self, tenant: &str, name: &str, version: u64) -> Vec<String> {
        let Ok(found) = self.registry.get(tenant, name, Some(version)) else {
            return Vec::new();
        };
        let hooks: Vec<DeployHook> = self
            .deploy_hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        hooks
            .iter()
            .flat_map(|hook| hook(tenant, name, &found.component, version))
            .collect()
    }

    /// The quotas of `tenant` (the defaults for a tenant the host does not know).
    pub fn quotas(&self, tenant: &str) -> Quotas {
        self.tenants
            .get(tenant)
            .map(|t| t.quotas.clone())
            .unwrap_or_default()
    }
}

/// An API error: a status and the JSON `{"error": …, "hint": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong.
    pub error: String,
    /// What to do about it.
    pub hint: String,
    /// Seconds to wait before trying again (`Retry-After`, with 429).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            hint: hint.into(),
            retry_after: None,
        }
    }

    /// 404: nothing of that name for this tenant.
    pub fn not_found(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error, hint)
    }

    /// 500, for a failure of the host itself.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string(),
            "see the host's log; this is a problem of the host, not of the request",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json(self.status, &self);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON response (axum's `json` feature is not built in).
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
            .into_response(),
    }
}

/// The API of a [`ServerState`]: `/api/v1/udfs…` (see [`udfs::routes`]), and a JSON 404 for
/// anything else.
pub fn router(state: Arc<ServerState>) -> Router {
    with_routes(state, Router::new())
}

/// [`router`] with `extra` merged in: how further parts of the API (`/api/v1/jobs…`) hang off
/// the same state, tenants and listener. `extra`'s handlers take [`auth::Tenant`] like the
/// registry's.
pub fn with_routes(state: Arc<ServerState>, extra: Router<Arc<ServerState>>) -> Router {
    udfs::routes()
        .merge(extra)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such API route",
        "the API is under /api/v1/: udfs, udfs/{name}, udfs/{name}/rollback",
    )
}
