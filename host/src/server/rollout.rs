//! Rolling a new version out: its trial after a deploy, automatic rollback, and canaries.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /api/v1/udfs/{name}/trial?version=V` | how version `V` fares in each running job that runs it: batches passed of the job's `probation_batches`, or the rollback |
//! | `POST /api/v1/udfs/{name}/canary?batches=K` | the body is a candidate component: it runs beside the bound version in every running job that calls `name`, on the next `K` batches (default 10); outputs compared and discarded, state not committed |
//! | `GET /api/v1/udfs/{name}/canary` | what the canary found so far, per job |
//! | `POST /api/v1/udfs/{name}/promote` | deploy the candidate as the next version (hot reload), ending the canary |
//! | `POST /api/v1/udfs/{name}/abort` | drop the candidate, ending the canary |
//!
//! **Trial.** After a deploy rebinds a running job, the new version is on trial for the job's
//! `probation_batches` (default 3): a batch it fails runs again with the version before, and
//! the job never binds the failing code again (see `engine::trial`). A watcher here then rolls
//! the registry back too (the version before's bytes are deployed again as the newest, so
//! new jobs and other jobs do not pick the failing one), once per failing version. `host
//! deploy` follows the trial through the `trial` route and reports it.
//!
//! **Canary.** The candidate is compiled but not a version yet: it gets a number only when
//! promoted. A canary lives in memory: a restart of the host ends it without promoting.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::jobs::{JobManager, TrialInfo};
use super::udfs::{check_name, compile, deploy_blocking, read_component, rollback_to};
use super::{ApiError, ServerState, json};
use crate::engine::CanaryReport;

/// Batches a canary compares when the request does not say.
pub const DEFAULT_CANARY_BATCHES: u32 = 10;

/// The most batches a canary may compare.
pub const MAX_CANARY_BATCHES: u32 = 10_000;

/// How often the watcher looks for rollbacks.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Candidates and automatic rollbacks, shared by the routes and the watcher.
#[derive(Default)]
pub struct Rollouts {
    /// Per (tenant, name): the candidate a canary runs.
    candidates: Mutex<HashMap<(String, String), Candidate>>,
    /// Per (tenant, name, failing hash): what the registry was rolled back to.
    rolled_back: Mutex<HashMap<(String, String, String), RegistryRollback>>,
}

struct Candidate {
    bytes: Vec<u8>,
    hash: String,
    jobs: Vec<String>,
    batches: u32,
}

/// The registry's rollback after a version failed its trial.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryRollback {
    /// The job whose batch it failed.
    pub job: String,
    /// The batch.
    pub batch: u64,
    /// The version that failed.
    pub failed_version: Option<u64>,
    /// The version whose code is the newest again.
    pub restored_version: Option<u64>,
    /// The new version number that code got (the registry's newest now); none when the
    /// registry had moved on already.
    pub new_version: Option<u64>,
    /// What happened.
    pub message: String,
}

/// What the routes reach through their extension.
#[derive(Clone)]
struct Rollout {
    manager: JobManager,
    rollouts: Arc<Rollouts>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The routes, to merge with [`super::with_routes`]; starts the watcher on the host's runtime.
pub fn routes(state: &Arc<ServerState>, manager: JobManager) -> Router<Arc<ServerState>> {
    let rollouts = Arc::new(Rollouts::default());
    state
        .core
        .handle()
        .spawn(watch(state.clone(), manager.clone(), rollouts.clone()));
    Router::new()
        .route("/api/v1/udfs/{name}/trial", get(trial))
        .route(
            "/api/v1/udfs/{name}/canary",
            post(canary).get(canary_status),
        )
        .route("/api/v1/udfs/{name}/promote", post(promote))
        .route("/api/v1/udfs/{name}/abort", post(abort))
        .layer(Extension(Rollout { manager, rollouts }))
}

/// Roll the registry back after each version that failed its trial in a job, once per
/// failing code, when that code is still the newest.
async fn watch(state: Arc<ServerState>, manager: JobManager, rollouts: Arc<Rollouts>) {
    let mut seen: BTreeSet<(String, String, u64)> = BTreeSet::new();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        for (tenant, job, batch, rollback) in manager.rollbacks() {
            if !seen.insert((tenant.clone(), job.clone(), batch)) {
                continue;
            }
            let key = (
                tenant.clone(),
                rollback.component.clone(),
                rollback.from_hash.clone(),
            );
            if lock(&rollouts.rolled_back).contains_key(&key) {
                continue;
            }
            let state = state.clone();
            let lock_ = state.deploy_lock(&tenant);
            let _one_at_a_time = lock_.lock().await;
            let outcome = tokio::task::spawn_blocking(move || {
                let newest = state.registry.get(&tenant, &rollback.component, None).ok();
                let still_newest = newest.is_some_and(|n| n.info.hash == rollback.from_hash);
                let (new_version, message) = if still_newest {
                    match rollback_to(&state, &tenant, &rollback.component, rollback.to_version)
                    {
                        Ok((_, answer)) => (
                            Some(answer.version),
                            format!(
                                "{} version {} failed batch {batch} of job '{job}' within its trial ({}); rolled back: version {} now runs the code of version {}",
                                rollback.component,
                                shown(rollback.from_version),
                                rollback.error,
                                answer.version,
                                shown(rollback.to_version)
                            ),
                        ),
                        Err(e) => (
                            None,
                            format!(
                                "{} version {} failed batch {batch} of job '{job}' ({}); the job went back to version {}, but the registry could not be rolled back: {}",
                                rollback.component,
                                shown(rollback.from_version),
                                rollback.error,
                                shown(rollback.to_version),
                                e.error
                            ),
                        ),
                    }
                } else {
                    (
                        None,
                        format!(
                            "{} version {} failed batch {batch} of job '{job}' ({}); the job went back to version {} (the registry's newest is another version already)",
                            rollback.component,
                            shown(rollback.from_version),
                            rollback.error,
                            shown(rollback.to_version)
                        ),
                    )
                };
                tracing::warn!(tenant = %tenant, job = %job, batch, udf = %rollback.component, "{message}");
                RegistryRollback {
                    job,
                    batch,
                    failed_version: rollback.from_version,
                    restored_version: rollback.to_version,
                    new_version,
                    message,
                }
            })
            .await;
            if let Ok(outcome) = outcome {
                lock(&rollouts.rolled_back).insert(key, outcome);
            }
        }
    }
}

fn shown(version: Option<u64>) -> String {
    version.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The number `key=N` of a query string: none when absent, an error naming the key when it
/// is not a number or the query holds another key.
fn query_number(query: Option<&str>, key: &str) -> Result<Option<u64>, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != key {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown query parameter {k:?}"),
                format!("this route takes only `{key}=N`"),
            ));
        }
        found = Some(v.parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`{key}` must be a whole number, not {v:?}"),
                format!("pass `{key}=N`"),
            )
        })?);
    }
    Ok(found)
}

/// What the trial route answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialAnswer {
    /// The UDF.
    pub name: String,
    /// The version on trial.
    pub version: u64,
    /// Per running job that runs or ran it.
    pub jobs: Vec<TrialInfo>,
    /// Set once the registry was rolled back after it failed.
    pub registry_rollback: Option<RegistryRollback>,
}

async fn trial(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    Extension(Rollout { manager, rollouts }): Extension<Rollout>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let version = query_number(query.as_deref(), "version")?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "which version? the trial route needs `version=V`",
            "GET /api/v1/udfs/NAME/trial?version=V",
        )
    })?;
    let hash = match state.store.versions(&tenant, &name) {
        Ok(records) => records
            .into_iter()
            .find(|r| r.version == version)
            .map(|r| r.sha256),
        Err(e) => return Err(ApiError::internal(e)),
    }
    .ok_or_else(|| {
        ApiError::not_found(
            format!("no version {} of a UDF named {name:?}", version),
            "list your UDFs' versions with `host udfs NAME`",
        )
    })?;
    let jobs = manager.trial(&tenant, &name, &hash);
    let registry_rollback = lock(&rollouts.rolled_back)
        .get(&(tenant.clone(), name.clone(), hash))
        .cloned();
    Ok(json(
        StatusCode::OK,
        &TrialAnswer {
            name,
            version,
            jobs,
            registry_rollback,
        },
    ))
}

/// What the canary routes answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryAnswer {
    /// The UDF.
    pub name: String,
    /// The candidate's SHA-256.
    pub sha256: String,
    /// Batches each job compares.
    pub batches: u32,
    /// What happened, in words.
    pub message: String,
    /// What each job's canary found so far.
    pub jobs: Vec<JobCanary>,
    /// The version the candidate became (promote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// One job's canary.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobCanary {
    /// The job.
    pub job: String,
    /// What it found.
    pub report: CanaryReport,
}

fn job_canaries(found: Vec<(String, CanaryReport)>) -> Vec<JobCanary> {
    found
        .into_iter()
        .map(|(job, report)| JobCanary { job, report })
        .collect()
}

async fn canary(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    Extension(Rollout { manager, rollouts }): Extension<Rollout>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let batches =
        query_number(query.as_deref(), "batches")?.unwrap_or(u64::from(DEFAULT_CANARY_BATCHES));
    let Some(batches) = u32::try_from(batches)
        .ok()
        .filter(|b| (1..=MAX_CANARY_BATCHES).contains(b))
    else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a canary compares 1 to {MAX_CANARY_BATCHES} batches, not {batches}"),
            "pass --canary K with K in that range",
        ));
    };
    state.limits.deploy(&state, &tenant)?;
    let bytes = read_component(&state, &tenant, &headers, body).await?;
    if state.registry.get(&tenant, &name, None).is_err() {
        return Err(ApiError::not_found(
            format!("no UDF named {name:?} to run a canary against"),
            "deploy a first version without --canary",
        ));
    }
    // Compiled in the tenant's turn, like a deploy, with the tenant's limits.
    let turn = (state.compiles)
        .turn(&tenant, state.quotas(&tenant).max_compiles, &name)
        .await;
    let component = {
        let (state, tenant, name, bytes) =
            (state.clone(), tenant.clone(), name.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || compile(&state, &tenant, &name, &bytes))
            .await
            .map_err(ApiError::internal)??
    };
    drop(turn);
    let lock_ = state.deploy_lock(&tenant);
    let _one_at_a_time = lock_.lock().await;
    let answer = tokio::task::spawn_blocking(move || {
        component.instantiate_probe().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the candidate fails to instantiate: {e}"),
                "run `host check` on it",
            )
        })?;
        let (lines, jobs) = manager.start_canary(&tenant, &name, &component, batches);
        if jobs.is_empty() {
            let why = if lines.is_empty() {
                format!("none of your running jobs calls {name:?}")
            } else {
                lines.join("; ")
            };
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("no canary started: {why}"),
                "a canary compares the candidate with the bound version in running jobs; deploy without --canary, or start a job that calls it",
            ));
        }
        let hash = component.hash().to_string();
        lock(&rollouts.candidates).insert(
            (tenant.clone(), name.clone()),
            Candidate {
                bytes,
                hash: hash.clone(),
                jobs,
                batches,
            },
        );
        Ok(CanaryAnswer {
            name: name.clone(),
            sha256: hash,
            batches,
            message: format!(
                "canary of {name} started: {}; then `host promote {name}` or `host abort {name}`",
                lines.join("; ")
            ),
            jobs: job_canaries(manager.canaries(&tenant, &name)),
            version: None,
        })
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(json(StatusCode::ACCEPTED, &answer))
}

fn no_canary(name: &str) -> ApiError {
    ApiError::not_found(
        format!("no canary of {name:?} is running"),
        "start one with `host deploy UDF.wasm --name NAME --canary K`",
    )
}

async fn canary_status(
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    Extension(Rollout { manager, rollouts }): Extension<Rollout>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let (hash, batches, jobs) = lock(&rollouts.candidates)
        .get(&(tenant.clone(), name.clone()))
        .map(|c| (c.hash.clone(), c.batches, c.jobs.clone()))
        .ok_or_else(|| no_canary(&name))?;
    let found = manager.canaries(&tenant, &name);
    let done = found.iter().filter(|(_, r)| r.done()).count();
    Ok(json(
        StatusCode::OK,
        &CanaryAnswer {
            name: name.clone(),
            sha256: hash,
            batches,
            message: format!("{done} of {} jobs compared {batches} batches", jobs.len()),
            jobs: job_canaries(found),
            version: None,
        },
    ))
}

async fn promote(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    Extension(Rollout { manager, rollouts }): Extension<Rollout>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let lock_ = state.deploy_lock(&tenant);
    let _one_at_a_time = lock_.lock().await;
    let candidate = lock(&rollouts.candidates)
        .remove(&(tenant.clone(), name.clone()))
        .ok_or_else(|| no_canary(&name))?;
    let (hash, batches) = (candidate.hash.clone(), candidate.batches);
    let answer = tokio::task::spawn_blocking(move || {
        let found = manager.end_canaries(&tenant, &name);
        let (_, deployed) = deploy_blocking(&state, &tenant, &name, &candidate.bytes, None)?;
        Ok::<_, ApiError>(CanaryAnswer {
            name: name.clone(),
            sha256: hash,
            batches,
            message: format!(
                "promoted: the candidate is {name} version {}; {}",
                deployed.version,
                deployed.jobs.join("; ")
            ),
            jobs: job_canaries(found),
            version: Some(deployed.version),
        })
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(json(StatusCode::OK, &answer))
}

async fn abort(
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    Extension(Rollout { manager, rollouts }): Extension<Rollout>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let candidate = lock(&rollouts.candidates)
        .remove(&(tenant.clone(), name.clone()))
        .ok_or_else(|| no_canary(&name))?;
    let found = manager.end_canaries(&tenant, &name);
    tracing::info!(%tenant, udf = %name, "canary aborted: the candidate is dropped");
    Ok(json(
        StatusCode::OK,
        &CanaryAnswer {
            name: name.clone(),
            sha256: candidate.hash,
            batches: candidate.batches,
            message: format!(
                "aborted: the candidate of {name} is dropped; jobs keep their version"
            ),
            jobs: job_canaries(found),
            version: None,
        },
    ))
}
