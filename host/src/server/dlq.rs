//! Dead letters over the API (issue 16, point 5), on the job's dead-letter store
//! ([`crate::state::dead_letters`]):
//!
//! | route | what |
//! | --- | --- |
//! | `GET /api/v1/jobs/{job}/dead-letters?limit=N` | the job's letters, oldest batch first (at most `N`, default 1,000) |
//! | `POST /api/v1/jobs/{job}/dead-letters/replay?version=V` | run the letters not yet replayed through version `V` of their UDF (default: the newest) from the tenant's registry; per letter the output or the error; letters that pass are marked replayed |
//!
//! Both are tenant-scoped like every job route: another tenant's job is `404`. A replay
//! changes nothing in the job's outputs: it shows what the chosen version makes of each letter
//! (see the README's "Dead letters").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Extension, Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::jobs::{CHECKPOINT_DIR, JobManager};
use super::{ApiError, ServerState, json};
use crate::batch::Batch;
use crate::state::dead_letters::{DeadLetter, DeadLetterError, DeadLetterStore, Replayed, dir_for};
use crate::udf::{CallContext, Role, UdfFunction, parse_spec};

/// Letters listed by default.
pub const DEFAULT_LIMIT: usize = 1000;

/// The most letters one answer lists or one replay runs.
pub const MAX_LIMIT: usize = 10_000;

/// One letter as the API shows it: key and value as text (invalid UTF-8 replaced).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LetterView {
    /// The stream whose UDF failed on it.
    pub stream: String,
    /// The batch id.
    pub batch_id: u64,
    /// The batch time, ms since the Unix epoch.
    pub batch_time: i64,
    /// The partition.
    pub partition: u32,
    /// The record's position in it.
    pub position: u64,
    /// The record's key.
    pub key: Option<String>,
    /// The record's value.
    pub value: String,
    /// The call's error.
    pub error: String,
    /// Its kind (`guest`, `trap`, `timeout`, …).
    pub kind: String,
    /// `component#function`.
    pub udf: String,
    /// Its registry version.
    pub version: Option<u64>,
    /// The component's SHA-256.
    pub hash: String,
    /// The version a replay passed it through, if one did.
    pub replayed_with: Option<u64>,
    /// Whether a replay passed it.
    pub replayed: bool,
}

impl From<&DeadLetter> for LetterView {
    fn from(l: &DeadLetter) -> Self {
        Self {
            stream: l.stream.clone(),
            batch_id: l.batch_id,
            batch_time: l.batch_time,
            partition: l.partition,
            position: l.position,
            key: l
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: String::from_utf8_lossy(&l.value).into_owned(),
            error: l.error.clone(),
            kind: l.kind.clone(),
            udf: l.udf.clone(),
            version: l.version,
            hash: l.hash.clone(),
            replayed_with: l.replayed.as_ref().and_then(|r| r.version),
            replayed: l.replayed.is_some(),
        }
    }
}

/// What a replay made of one letter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayedLetter {
    /// The letter.
    pub letter: LetterView,
    /// The version it ran through.
    pub version: Option<u64>,
    /// Whether it passed.
    pub passed: bool,
    /// Its output records' values (as text), when it passed.
    pub output: Vec<String>,
    /// The error again, when it did not.
    pub error: Option<String>,
}

/// A replay's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayAnswer {
    /// Letters run.
    pub letters: Vec<ReplayedLetter>,
    /// Of which passed (and are now marked replayed).
    pub passed: usize,
    /// Of which failed again.
    pub failed: usize,
}

/// The dead-letter folder of a served job in `job_dir`.
pub fn served_dir(job_dir: &Path) -> PathBuf {
    dir_for(&job_dir.join(CHECKPOINT_DIR).join("state"))
}

/// Finds `component#function` for a replay: the function and its registry version.
pub type FindUdf<'a> = dyn Fn(&str, &str) -> Result<(UdfFunction, Option<u64>), String> + 'a;

/// Run every letter of `tenant`'s `job` in `store` not yet replayed through the function
/// `find(component, function)` gives (with its version), one call per letter; mark those that
/// pass.
pub fn replay(
    store: &DeadLetterStore,
    tenant: &str,
    job: &str,
    find: &FindUdf<'_>,
) -> Result<ReplayAnswer, DeadLetterError> {
    let mut answer = ReplayAnswer {
        letters: Vec::new(),
        passed: 0,
        failed: 0,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for letter in store.list(tenant, job, MAX_LIMIT)? {
        if letter.replayed.is_some() {
            continue;
        }
        let ran = parse_spec(&letter.udf)
            .map_err(|e| e.to_string())
            .and_then(|(component, function)| find(component, function))
            .map(|(f, version)| {
                let mut input = Batch::empty(letter.key.is_some());
                input.push(letter.key.as_deref(), &letter.value, letter.event_time);
                let context = CallContext {
                    tenant: Arc::from(tenant),
                    job: Arc::from(job),
                    batch_id: letter.batch_id,
                    batch_time: letter.batch_time,
                    partition: letter.partition,
                };
                (f.transform(&context, &input), version)
            });
        let view = LetterView::from(&letter);
        let replayed = match ran {
            Ok((Ok(out), version)) => {
                store.mark_replayed(tenant, job, &letter, Replayed { version, at: now })?;
                ReplayedLetter {
                    letter: view,
                    version,
                    passed: true,
                    output: out
                        .values
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect(),
                    error: None,
                }
            }
            Ok((Err(e), version)) => ReplayedLetter {
                letter: view,
                version,
                passed: false,
                output: Vec::new(),
                error: Some(e.kind.to_string()),
            },
            Err(e) => ReplayedLetter {
                letter: view,
                version: None,
                passed: false,
                output: Vec::new(),
                error: Some(e),
            },
        };
        if replayed.passed {
            answer.passed += 1;
        } else {
            answer.failed += 1;
        }
        answer.letters.push(replayed);
    }
    Ok(answer)
}

/// `name=N` of a query, the only parameter accepted.
fn number(query: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    let mut found = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some((k, v)) if k == name => match v.parse() {
                Ok(n) => found = Some(n),
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "{name} = {:?} is not a number",
                            crate::udf::guest_text::sanitize(v, 32)
                        ),
                        format!("write ?{name}=N"),
                    ));
                }
            },
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter {:?}",
                        crate::udf::guest_text::sanitize(pair, 64)
                    ),
                    format!("the only parameter is `{name}=N`"),
                ));
            }
        }
    }
    Ok(found)
}

fn store_error(e: &DeadLetterError) -> ApiError {
    ApiError::internal(e)
}

/// `GET /api/v1/jobs/{job}/dead-letters`.
pub async fn list(
    Tenant(tenant): Tenant,
    Extension(manager): Extension<JobManager>,
    UrlPath(job): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = manager.status(&tenant, &job) {
        return ApiError::not_found(e.to_string(), e.hint()).into_response();
    }
    let limit = match number(query.as_deref(), "limit") {
        Ok(n) => n.map_or(DEFAULT_LIMIT, |n| {
            usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)
        }),
        Err(e) => return e.into_response(),
    };
    let dir = served_dir(&manager.job_dir(&tenant, &job));
    let read = tokio::task::spawn_blocking(move || {
        Ok::<_, DeadLetterError>(match DeadLetterStore::open_existing(&dir)? {
            Some(store) => store.list(&tenant, &job, limit)?,
            None => Vec::new(),
        })
    })
    .await;
    match read {
        Ok(Ok(letters)) => json(
            StatusCode::OK,
            &letters.iter().map(LetterView::from).collect::<Vec<_>>(),
        ),
        Ok(Err(e)) => store_error(&e).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// `POST /api/v1/jobs/{job}/dead-letters/replay`.
pub async fn replay_route(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
    Extension(manager): Extension<JobManager>,
    UrlPath(job): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = manager.status(&tenant, &job) {
        return ApiError::not_found(e.to_string(), e.hint()).into_response();
    }
    let version = match number(query.as_deref(), "version") {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let dir = served_dir(&manager.job_dir(&tenant, &job));
    let ran = tokio::task::spawn_blocking(move || {
        let Some(store) = DeadLetterStore::open_existing(&dir)? else {
            return Ok(ReplayAnswer {
                letters: Vec::new(),
                passed: 0,
                failed: 0,
            });
        };
        let find = |component: &str, function: &str| {
            let found = state
                .registry
                .get(&tenant, component, version)
                .map_err(|e| e.to_string())?;
            let f = found
                .component
                .function_for(function, Role::Transform)
                .map_err(|e| e.to_string())?;
            Ok((f, Some(found.info.version)))
        };
        replay(&store, &tenant, &job, &find)
    })
    .await;
    match ran {
        Ok(Ok(answer)) => json(StatusCode::OK, &answer),
        Ok(Err(e)) => store_error(&e).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
