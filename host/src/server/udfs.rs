//! The UDF registry's API, for the tenant of the request's token:
//!
//! - `GET /api/v1/udfs`: `{"udfs": [{"name", "newest", "versions": [1, 2, …]}]}`;
//! - `GET /api/v1/udfs/{name}`: `{"name", "versions": [{"version", "sha256", "size",
//!   "deployed_at", "deployed_by", "pins"}]}`, oldest first;
//! - `POST /api/v1/udfs/{name}` with the component's bytes as the body: checks (world, ABI
//!   version, functions, limits), compiles (in the tenant's turn: `max_compiles` per tenant,
//!   `[host] compile_slots` per host, see [`super::limits`]; bounded in time by the host's
//!   `--compile-timeout`) and stores it (one deploy at a time per tenant) as the next version: 201 `{"name",
//!   "version", "sha256", "size", "unchanged": false, "dropped": […]}`; bytes identical to the
//!   newest version are 200 `{"version": k, "unchanged": true, …}`. A body over the tenant's
//!   `max_component_bytes` is 413 naming the limit; bytes that are not a Sluice component are
//!   400 with the reason and a hint, and nothing is stored;
//! - `POST /api/v1/udfs/{name}/rollback` with an optional body `{"to": V}`: deploys the bytes
//!   of version V (default: the one before the newest) again, as a new newest version.
//!
//! Names are 1 to 64 of `[A-Za-z0-9_.-]`, never `.` or `..` (400 otherwise). A name the tenant
//! has no versions of is 404, whether or not another tenant has it.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::store::{RECORD_FORMAT, RegistryStore, StoreError, VersionRecord, epoch_ms};
use super::{ApiError, ServerState, json};
use crate::udf::{DeployError, Registry, valid_name};

/// The registry's routes.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/v1/udfs", get(list))
        .route("/api/v1/udfs/{name}", get(show).post(deploy))
        .route("/api/v1/udfs/{name}/rollback", post(rollback))
}

/// Whether `name` may name a UDF: [`valid_name`], and not `.` or `..` (nor anything with `..`).
pub fn valid_udf_name(name: &str) -> bool {
    valid_name(name) && !name.contains("..") && name != "."
}

pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_udf_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "UDF name {:?} is not valid",
                crate::udf::guest_text::sanitize(name, 80)
            ),
            "names are 1 to 64 letters, digits, `_`, `-` or `.`, without `..`",
        ))
    }
}

/// One name in a listing.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    newest: u64,
    versions: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct ListAnswer {
    udfs: Vec<Listed>,
}

async fn list(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    let records = state
        .store
        .tenant_versions(&tenant)
        .map_err(ApiError::internal)?;
    let mut by_name: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in records {
        by_name.entry(r.name).or_default().push(r.version);
    }
    let udfs = by_name
        .into_iter()
        .filter_map(|(name, versions)| {
            let newest = *versions.last()?;
            Some(Listed {
                name,
                newest,
                versions,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &ListAnswer { udfs }))
}

/// One version in a listing.
#[derive(Debug, Serialize)]
struct ShownVersion {
    version: u64,
    sha256: String,
    size: u64,
    deployed_at: String,
    deployed_by: String,
    pins: u32,
}

#[derive(Debug, Serialize)]
struct ShowAnswer {
    name: String,
    versions: Vec<ShownVersion>,
}

fn versions_of(
    state: &ServerState,
    tenant: &str,
    name: &str,
) -> Result<Vec<VersionRecord>, ApiError> {
    check_name(name)?;
    let records = state
        .store
        .versions(tenant, name)
        .map_err(ApiError::internal)?;
    if records.is_empty() {
        let names: std::collections::BTreeSet<String> = state
            .store
            .tenant_versions(tenant)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|r| r.name)
            .collect();
        let hint = if names.is_empty() {
            "you have no UDFs yet; deploy one with `host deploy UDF.wasm`".to_string()
        } else {
            let names: Vec<String> = names.into_iter().take(20).collect();
            format!("your UDFs: {}", names.join(", "))
        };
        return Err(ApiError::not_found(format!("no UDF named {name:?}"), hint));
    }
    Ok(records)
}

async fn show(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let records = versions_of(&state, &tenant, &name)?;
    let pins: BTreeMap<u64, u32> = state
        .registry
        .versions(&tenant, &name)
        .into_iter()
        .map(|v| (v.version, v.pins))
        .collect();
    let versions = records
        .into_iter()
        .map(|r| ShownVersion {
            version: r.version,
            deployed_at: humantime::format_rfc3339_millis(r.deployed_at()).to_string(),
            pins: pins.get(&r.version).copied().unwrap_or(0),
            sha256: r.sha256,
            size: r.size,
            deployed_by: r.deployed_by,
        })
        .collect();
    Ok(json(StatusCode::OK, &ShowAnswer { name, versions }))
}

/// What a deploy (or rollback) answers.
#[derive(Debug, Serialize)]
pub(super) struct DeployAnswer {
    pub(super) name: String,
    pub(super) version: u64,
    pub(super) sha256: String,
    pub(super) size: u64,
    pub(super) unchanged: bool,
    pub(super) dropped: Vec<u64>,
    pub(super) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rolled_back_to: Option<u64>,
    /// What the new version did to running jobs that use the component (hot reload).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) jobs: Vec<String>,
}

/// Read an uploaded component: at most the tenant's `max_component_bytes` (413 naming the
/// limit past it, refused before reading when the declared length is past it already).
pub(super) async fn read_component(
    state: &ServerState,
    tenant: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, ApiError> {
    let limit = state.quotas(tenant).max_component_bytes.0;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    read_limited(body, limit).await
}

/// Read at most `limit` bytes of `body`: 413 naming the limit past it.
async fn read_limited(mut body: Body, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the upload broke off: {e}"),
                "upload the whole file again",
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the component is larger than your max_component_bytes quota of {} ({limit} bytes)",
            crate::config::ByteSize(limit)
        ),
        "make the component smaller (build in release mode, strip debug info), or ask the host's operator for a larger quota",
    )
}

async fn deploy(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    state.limits.deploy(&state, &tenant)?;
    let bytes = read_component(&state, &tenant, &headers, body).await?;
    // Compile in the tenant's turn (`max_compiles`, `[host] compile_slots`), outside the
    // deploy lock; the deploy below finds the compiled code in the runtime's cache.
    let turn = (state.compiles)
        .turn(&tenant, state.quotas(&tenant).max_compiles, &name)
        .await;
    let (compiling, t, n, b) = (state.clone(), tenant.clone(), name.clone(), bytes.clone());
    tokio::task::spawn_blocking(move || compile(&compiling, &t, &n, &b).map(drop))
        .await
        .map_err(ApiError::internal)??;
    let waited = turn.waited;
    drop(turn);
    let lock = state.deploy_lock(&tenant);
    let _one_at_a_time = lock.lock().await;
    let (status, mut answer) =
        tokio::task::spawn_blocking(move || deploy_blocking(&state, &tenant, &name, &bytes, None))
            .await
            .map_err(ApiError::internal)??;
    if waited >= QUEUED_NOTE {
        answer.message.push_str(&format!(
            " (waited {} ms for a compile slot)",
            waited.as_millis()
        ));
    }
    Ok(json(status, &answer))
}

/// A wait for a compile slot at least this long is told in the deploy's answer.
const QUEUED_NOTE: std::time::Duration = std::time::Duration::from_millis(50);

/// Check and compile `bytes` with `tenant`'s limits, without deploying them (what the queue
/// bounds); the runtime caches the compiled code by hash.
pub(super) fn compile(
    state: &ServerState,
    tenant: &str,
    name: &str,
    bytes: &[u8],
) -> Result<Arc<crate::udf::UdfComponent>, ApiError> {
    state
        .runtime
        .load_with_limits(name, bytes, state.registry.limits_of(tenant))
        .map_err(|source| {
            deploy_error(DeployError::Load {
                tenant: tenant.to_string(),
                name: name.to_string(),
                source: Box::new(source),
            })
        })
}

fn deploy_error(e: DeployError) -> ApiError {
    let hint = e.hint().to_string();
    ApiError::new(StatusCode::BAD_REQUEST, e.to_string(), hint)
}

/// Deploy `bytes` as `tenant`'s next version of `name`: into the in-memory registry, then the
/// store (one synced write, with the versions the tenant's `versions_kept` drops).
pub(super) fn deploy_blocking(
    state: &ServerState,
    tenant: &str,
    name: &str,
    bytes: &[u8],
    rolled_back_to: Option<u64>,
) -> Result<(StatusCode, DeployAnswer), ApiError> {
    let deployed = state
        .registry
        .deploy(tenant, name, bytes, tenant)
        .map_err(deploy_error)?;
    let size = bytes.len() as u64;
    if deployed.unchanged {
        let message = match rolled_back_to {
            Some(v) => format!("version {v} is the newest already: nothing deployed"),
            None => format!(
                "identical to version {} (the newest): nothing deployed",
                deployed.version
            ),
        };
        return Ok((
            StatusCode::OK,
            DeployAnswer {
                name: name.to_string(),
                version: deployed.version,
                sha256: deployed.hash,
                size,
                unchanged: true,
                dropped: Vec::new(),
                message,
                rolled_back_to,
                jobs: Vec::new(),
            },
        ));
    }
    // A version that cannot even start is not kept: the newest stays what it was.
    if let Ok(found) = state.registry.get(tenant, name, Some(deployed.version))
        && let Err(e) = found.component.instantiate_probe()
    {
        let _ = state
            .registry
            .remove_version(tenant, name, deployed.version);
        tracing::warn!(
            tenant,
            udf = name,
            "the new version fails to instantiate, not kept: {e}"
        );
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{name}: the uploaded component fails to instantiate ({e}); it was rolled back, not kept, and running jobs keep their version"
            ),
            "run `host check` on it: a component whose start-up traps or needs more memory than your udf_memory quota cannot run",
        ));
    }
    let keep = state.quotas(tenant).versions_kept.max(1) as usize;
    let infos = state.registry.versions(tenant, name);
    let mut count = infos.len();
    let mut dropped = Vec::new();
    for v in &infos {
        if count <= keep {
            break;
        }
        if v.version == deployed.version || v.pins > 0 {
            continue;
        }
        if state
            .registry
            .remove_version(tenant, name, v.version)
            .is_ok()
        {
            dropped.push(v.version);
            count -= 1;
        }
    }
    let deployed_at = infos
        .iter()
        .find(|v| v.version == deployed.version)
        .map_or_else(std::time::SystemTime::now, |v| v.deployed_at);
    let record = VersionRecord {
        format: RECORD_FORMAT,
        tenant: tenant.to_string(),
        name: name.to_string(),
        version: deployed.version,
        sha256: deployed.hash.clone(),
        size,
        deployed_at_ms: epoch_ms(deployed_at),
        deployed_by: tenant.to_string(),
    };
    if let Err(e) = state.store.commit_deploy(&record, bytes, &dropped) {
        // Not stored: not deployed. (Versions dropped from memory above come back on restart.)
        let _ = state
            .registry
            .remove_version(tenant, name, deployed.version);
        return Err(ApiError::internal(e));
    }
    tracing::info!(
        tenant,
        udf = name,
        version = deployed.version,
        sha256 = %deployed.hash,
        size,
        ?dropped,
        "deployed"
    );
    let message = match rolled_back_to {
        Some(v) => format!(
            "rolled back: version {v}'s bytes deployed again as version {}",
            deployed.version
        ),
        None => format!("deployed as version {}", deployed.version),
    };
    let jobs = state.deployed(tenant, name, deployed.version);
    Ok((
        StatusCode::CREATED,
        DeployAnswer {
            name: name.to_string(),
            version: deployed.version,
            sha256: deployed.hash,
            size,
            unchanged: false,
            dropped,
            message,
            rolled_back_to,
            jobs,
        },
    ))
}

/// The body of a rollback.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    /// The version whose bytes become the newest again; default the one before the newest.
    to: Option<u64>,
}

async fn rollback(
    State(state): State<Arc<ServerState>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the rollback request is not valid JSON: {e}"),
                "send `{\"to\": VERSION}`, or nothing for the version before the newest",
            )
        })?
    };
    state.limits.deploy(&state, &tenant)?;
    let lock = state.deploy_lock(&tenant);
    let _one_at_a_time = lock.lock().await;
    let (status, answer) =
        tokio::task::spawn_blocking(move || rollback_to(&state, &tenant, &name, request.to))
            .await
            .map_err(ApiError::internal)??;
    Ok(json(status, &answer))
}

/// Deploy the bytes of `tenant`'s `name` version `to` (default: the one before the newest)
/// again, as the newest version (the caller holds the tenant's deploy lock).
pub(super) fn rollback_to(
    state: &ServerState,
    tenant: &str,
    name: &str,
    to: Option<u64>,
) -> Result<(StatusCode, DeployAnswer), ApiError> {
    {
        let records = versions_of(state, tenant, name)?;
        let listed: Vec<String> = records.iter().map(|r| r.version.to_string()).collect();
        let target = match to {
            Some(v) => v,
            None if records.len() >= 2 => records[records.len() - 2].version,
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{name:?} has only version {}: nothing to roll back to",
                        listed.join(", ")
                    ),
                    "deploy another version first, or name one with --to",
                ));
            }
        };
        let Some(record) = records.iter().find(|r| r.version == target) else {
            return Err(ApiError::not_found(
                format!("{name:?} has no version {target}"),
                format!("versions there: {}", listed.join(", ")),
            ));
        };
        let bytes = state
            .store
            .component(&record.sha256)
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "the bytes of {name}@{target} (sha256 {}) are missing from the store",
                    record.sha256
                ))
            })?;
        deploy_blocking(state, tenant, name, &bytes, Some(target))
    }
}

/// Rebuild `registry` from `store`: every stored version deployed again in order, under its
/// own number (numbers of dropped versions are skipped by deploying and removing a placeholder
/// version, so `name@N` means the same code as before the restart).
pub(super) fn restore(store: &RegistryStore, registry: &Registry) -> Result<usize, StoreError> {
    let mut restored = 0;
    for rec in store.all_versions()? {
        let Some(bytes) = store.component(&rec.sha256)? else {
            tracing::error!(
                tenant = rec.tenant,
                udf = rec.name,
                version = rec.version,
                "the stored bytes of this version are missing; it is left out"
            );
            continue;
        };
        loop {
            match registry.deploy(&rec.tenant, &rec.name, &bytes, &rec.deployed_by) {
                Err(e) => {
                    tracing::error!(tenant = rec.tenant, udf = rec.name, version = rec.version,
                        error = %e, "a stored version no longer loads; it is left out");
                    break;
                }
                Ok(d) if d.unchanged => {
                    tracing::warn!(
                        tenant = rec.tenant,
                        udf = rec.name,
                        version = rec.version,
                        "the same bytes as version {}; `@{}` resolves to that one",
                        d.version,
                        rec.version
                    );
                    break;
                }
                Ok(d) if d.version >= rec.version => {
                    restored += 1;
                    break;
                }
                Ok(d) => {
                    // A dropped version's number: skip it.
                    if registry
                        .remove_version(&rec.tenant, &rec.name, d.version)
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    }
    tracing::info!(versions = restored, "UDF registry restored");
    Ok(restored)
}
