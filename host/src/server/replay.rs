//! `POST /api/v1/jobs/{job}/replay?batch=T[&limit=N]`: run one recorded batch of a job again
//! as a dry run on the host (see [`crate::engine::replay`]) and answer what every stream made
//! of it, with the UDF versions the tenant's registry resolves now.
//!
//! The job's manifest (in its folder) is planned again against the registry, so a version
//! deployed since the batch ran is the one that runs (a job pinned with `name@N` keeps N). No
//! sink runs, no state is committed, no checkpoint written. The job must not be running
//! (`409`, its state and logs are its own); another tenant's job is `404`, like one that does
//! not exist. `limit` (default 100, at most 10,000) caps the lines shown per stream.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::auth::Tenant;
use super::jobs::{CHECKPOINT_DIR, JobManager, JobState, MANIFEST_FILE};
use super::{ApiError, ServerState, json};
use crate::engine::replay::{self, ReplayError};

/// Lines shown per stream unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// The most lines per stream `limit` may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// The route, to merge into the jobs routes (which give it the [`JobManager`]).
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new().route("/api/v1/jobs/{job}/replay", post(replay_batch))
}

fn bad_query(what: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        what,
        "ask for a batch: POST /api/v1/jobs/JOB/replay?batch=ID (optionally &limit=N lines per stream)",
    )
}

/// `batch` (required) and `limit` from the query.
fn query(query: Option<&str>) -> Result<(u64, usize), ApiError> {
    let mut batch = None;
    let mut limit = DEFAULT_LIMIT;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let shown = crate::udf::guest_text::sanitize(pair, 64);
        match pair.split_once('=') {
            Some(("batch", n)) => {
                batch = Some(
                    n.parse::<u64>()
                        .map_err(|_| bad_query(format!("batch = {shown:?} is not a batch id")))?,
                );
            }
            Some(("limit", n)) => {
                limit = n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= MAX_LIMIT)
                    .ok_or_else(|| {
                        bad_query(format!("{shown:?}: limit is a number up to {MAX_LIMIT}"))
                    })?;
            }
            _ => return Err(bad_query(format!("unknown query parameter {shown:?}"))),
        }
    }
    let batch = batch.ok_or_else(|| bad_query("no batch given".into()))?;
    Ok((batch, limit))
}

fn replay_error(e: &ReplayError) -> ApiError {
    let status = match e {
        ReplayError::NoCheckpoint { .. } => StatusCode::BAD_REQUEST,
        ReplayError::NotRecorded { .. } => StatusCode::NOT_FOUND,
        ReplayError::Start(_) => StatusCode::CONFLICT,
        ReplayError::Failed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ReplayError::Checkpoint(_) | ReplayError::Input { .. } | ReplayError::Wal { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string(), e.hint())
}

async fn replay_batch(
    Tenant(tenant): Tenant,
    State(state): State<Arc<ServerState>>,
    Extension(manager): Extension<JobManager>,
    Path(job): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let info = match manager.status(&tenant, &job) {
        Ok(info) => info,
        Err(e) => return ApiError::not_found(e.to_string(), e.hint()).into_response(),
    };
    let (batch, limit) = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if matches!(info.state, JobState::Running | JobState::Stopping) {
        return ApiError::new(
            StatusCode::CONFLICT,
            format!("job '{}' is {}: a batch is replayed only while the job is stopped or failed", info.name, info.state),
            format!("stop it first (`host stop {} --graceful`), replay, and submit it again; replaying a running job's batch is not supported yet", info.name),
        )
        .into_response();
    }
    let dir = manager.job_dir(&tenant, &job);
    let work = move || -> Result<replay::Replayed, ApiError> {
        let path = dir.join(MANIFEST_FILE);
        let checkpoint = dir.join(CHECKPOINT_DIR);
        let mut spec = crate::plan::manifest::load_with(&path, Some(&checkpoint)).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string(),
                "the job's stored manifest no longer reads: submit it again",
            )
        })?;
        spec.state_dir = Some(checkpoint.join("state"));
        spec.tenant = tenant.clone();
        let plan = crate::plan::plan(spec, &state.registry.resolver(&tenant), Some(&path))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    e.to_string(),
                    "the job no longer plans against your UDFs (a function missing from the newest version?)",
                )
            })?;
        let pool = state.core.pool_for(&tenant).map_err(ApiError::internal)?;
        replay::replay(Arc::new(plan), batch, pool, limit).map_err(|e| replay_error(&e))
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(replayed)) => json(StatusCode::OK, &replayed),
        Ok(Err(e)) => e.into_response(),
        Err(e) => {
            ApiError::internal(format!("the request's worker thread ended: {e}")).into_response()
        }
    }
}
