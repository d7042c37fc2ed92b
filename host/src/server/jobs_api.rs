//! The jobs part of the API, on a [`JobManager`]:
//!
//! | route | what |
//! | --- | --- |
//! | `POST /api/v1/jobs` | submit a job: the manifest's TOML is the body; `201` with the job |
//! | `GET /api/v1/jobs` | the tenant's jobs |
//! | `GET /api/v1/jobs/{job}` | one job: state, UDF versions in use, last batches |
//! | `POST /api/v1/jobs/{job}/stop` | stop it (`?graceful=true`: finish what was received) |
//! | `POST /api/v1/jobs/{job}/ingest/{source}` | records for the job's http source |
//! | `GET /api/v1/jobs/{job}/logs?after=N` | the job's recent log lines after sequence number `N` (host and guest lines naming its tenant and job) |
//! | `POST /api/v1/jobs/{job}/replay?batch=T` | run a recorded batch of the (stopped) job again as a dry run: every stream's output (see [`super::replay`]) |
//! | `GET /api/v1/jobs/{job}/dead-letters`, `POST …/dead-letters/replay` | its dead letters ([`super::dlq`]) |
//!
//! Every route needs the tenant's bearer token ([`Tenant`]); another tenant's job is `404`.
//! Ingest is the job's own endpoint (`Job::ingest_router`), so its answers are those of an
//! http source: `200 {"accepted": n}` only once the records are in the job's write-ahead log.
//! Errors are `{"error", "hint"}`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, Request};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::auth::Tenant;
use super::jobs::{
    JobLimits, JobManager, JobManagerConfig, LookupError, StopError, StoreError, SubmitError,
};
use super::{ApiError, ServerState, json};

/// The job manager of `state`'s host: its data directory, core and registry, each tenant's
/// `max_jobs` and `max_state_bytes` (a cap per job) from its quotas. Call
/// [`JobManager::resume_all`] on it once the registry is restored, and hand it to [`routes`].
pub fn manager(
    state: &Arc<ServerState>,
    metrics: Arc<crate::metrics::Registry>,
) -> Result<JobManager, StoreError> {
    let quotas = state.clone();
    let manager = JobManager::open(JobManagerConfig {
        data_dir: state.data_dir.clone(),
        core: state.core.clone(),
        metrics,
        registry: state.registry.clone(),
        limits: Arc::new(move |tenant: &str| {
            let q = quotas.quotas(tenant);
            JobLimits {
                max_jobs: Some(usize::try_from(q.max_jobs).unwrap_or(usize::MAX)),
                max_state_bytes: Some(q.max_state_bytes.0),
            }
        }),
    })?;
    // Hot reload: a deploy rebinds the running jobs that use the component.
    let hot = manager.clone();
    state.on_deploy(Arc::new(move |tenant, name, component, version| {
        hot.rebind_deployed(tenant, name, component, version)
    }));
    Ok(manager)
}

/// The routes, to merge with [`super::with_routes`]; `manager` is reached through an
/// [`Extension`].
pub fn routes(manager: JobManager) -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/v1/jobs", post(submit).get(list))
        .route("/api/v1/jobs/{job}", get(status))
        .route("/api/v1/jobs/{job}/stop", post(stop))
        .route("/api/v1/jobs/{job}/logs", get(logs))
        .route("/api/v1/jobs/{job}/dead-letters", get(super::dlq::list))
        .route(
            "/api/v1/jobs/{job}/dead-letters/replay",
            post(super::dlq::replay_route),
        )
        .route("/api/v1/jobs/{job}/ingest/{source}", post(ingest))
        .merge(super::replay::routes())
        .layer(Extension(manager))
}

fn submit_error(e: &SubmitError) -> ApiError {
    let status = match e {
        SubmitError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        SubmitError::BadTenant(_)
        | SubmitError::Manifest(_)
        | SubmitError::BadName { .. }
        | SubmitError::OutsideJobFolder { .. }
        | SubmitError::NotAllowed { .. }
        | SubmitError::Plan(_) => StatusCode::BAD_REQUEST,
        SubmitError::AlreadyRunning { .. } => StatusCode::CONFLICT,
        SubmitError::Quota { .. } => StatusCode::FORBIDDEN,
        SubmitError::Start(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SubmitError::Io { .. } | SubmitError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string(), e.hint())
}

fn lookup_error(e: &LookupError) -> ApiError {
    ApiError::not_found(e.to_string(), e.hint())
}

fn joined(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("the request's worker thread ended: {e}"))
}

async fn submit(
    Tenant(tenant): Tenant,
    Extension(manager): Extension<JobManager>,
    body: Bytes,
) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "the manifest is not UTF-8",
            "send the job's TOML manifest as the request body",
        )
        .into_response();
    };
    // Starting a job opens its checkpoint and state: blocking work.
    match tokio::task::spawn_blocking(move || manager.submit(&tenant, &text)).await {
        Ok(Ok(info)) => json(StatusCode::CREATED, &info),
        Ok(Err(e)) => submit_error(&e).into_response(),
        Err(e) => joined(e).into_response(),
    }
}

async fn list(Tenant(tenant): Tenant, Extension(manager): Extension<JobManager>) -> Response {
    json(StatusCode::OK, &manager.list(&tenant))
}

async fn status(
    Tenant(tenant): Tenant,
    Extension(manager): Extension<JobManager>,
    Path(job): Path<String>,
) -> Response {
    match manager.status(&tenant, &job) {
        Ok(info) => json(StatusCode::OK, &info),
        Err(e) => lookup_error(&e).into_response(),
    }
}

async fn logs(
    Tenant(tenant): Tenant,
    Extension(manager): Extension<JobManager>,
    Path(job): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = manager.status(&tenant, &job) {
        return lookup_error(&e).into_response();
    }
    let mut after = 0u64;
    for pair in query.as_deref().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("after", n)) => match n.parse() {
                Ok(n) => after = n,
                Err(_) => {
                    return ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("after = {n:?} is not a sequence number"),
                        "pass the `next` of the previous answer",
                    )
                    .into_response();
                }
            },
            None if pair.is_empty() => {}
            _ => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query {pair:?}"),
                    "the only query is after=N",
                )
                .into_response();
            }
        }
    }
    let page = super::logs::JobLogs::global().read(&tenant, &job, after, 1000);
    json(StatusCode::OK, &page)
}

/// `?graceful=true` (or `false`, the default); anything else is refused.
fn graceful(query: Option<&str>) -> Result<bool, ApiError> {
    let mut graceful = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        graceful = match pair {
            "graceful" | "graceful=true" | "graceful=1" => true,
            "graceful=false" | "graceful=0" => false,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter {:?}",
                        crate::udf::guest_text::sanitize(pair, 64)
                    ),
                    "the only parameter is `graceful=true` or `graceful=false`",
                ));
            }
        };
    }
    Ok(graceful)
}

async fn stop(
    Tenant(tenant): Tenant,
    Extension(manager): Extension<JobManager>,
    Path(job): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let graceful = match graceful(query.as_deref()) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    // Waits for the job to end (bounded by `jobs::STOP_WAIT`).
    match tokio::task::spawn_blocking(move || manager.stop(&tenant, &job, graceful)).await {
        Ok(Ok(info)) => json(StatusCode::OK, &info),
        Ok(Err(StopError::Lookup(e))) => lookup_error(&e).into_response(),
        Ok(Err(StopError::Store(e))) => ApiError::internal(e).into_response(),
        Err(e) => joined(e).into_response(),
    }
}

async fn ingest(
    Tenant(tenant): Tenant,
    Extension(manager): Extension<JobManager>,
    Path((job, source)): Path<(String, String)>,
    request: Request,
) -> Response {
    let router = match manager.ingest_router(&tenant, &job, &source) {
        Ok(router) => router,
        Err(e) => return lookup_error(&e).into_response(),
    };
    // The job's router serves `/ingest/{source}`; the source name was matched as one path
    // segment, so it is a valid segment.
    let Ok(uri) = format!("/ingest/{source}").parse::<Uri>() else {
        let job = crate::udf::guest_text::sanitize(&job, crate::udf::MAX_NAME_LEN + 16);
        return lookup_error(&LookupError::NotFound { job }).into_response();
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = uri;
    // The outer route's path parameters would be read by the job's router as its own.
    parts.extensions = axum::http::Extensions::new();
    let request = Request::from_parts(parts, Body::new(body));
    let service = hyper_util::service::TowerToHyperService::new(router);
    match hyper::service::Service::call(&service, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
