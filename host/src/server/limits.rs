//! Per-tenant rate limits and the compile queue of a shared host.
//!
//! Three token buckets per tenant, from its [`Quotas`](super::Quotas):
//!
//! - `api_rate` / `api_burst`: every authenticated API call but ingest (checked by [`limit`],
//!   a middleware in front of every route);
//! - `deploy_rate` / `deploy_burst`: uploads and rollbacks (`POST /api/v1/udfs/{name}…`),
//!   checked by the deploy handlers on top of `api_rate`;
//! - `max_ingest_rate`: bytes per second of records posted to the tenant's jobs'
//!   `…/ingest/{source}` routes, with a burst of one second's worth. A request is let in while
//!   the bucket is not in debt, and its body is charged as it streams in (it may run the bucket
//!   into debt, which the next requests wait out).
//!
//! Past a limit the answer is `429 Too Many Requests` with `Retry-After` (whole seconds) and a
//! JSON error naming the quota. A request without a valid token passes through to its handler,
//! which answers 401.
//!
//! Compiles are queued ([`CompileQueue`]): at most `max_compiles` at once per tenant (a quota,
//! default 1) and `[host] compile_slots` at once on the whole host (default: cores − 1, at least
//! 1), so one tenant's uploads wait their turn instead of taking every core from the batches of
//! the others.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ApiError, ServerState};
use crate::config::ByteSize;

/// The route whose bodies `max_ingest_rate` counts.
pub const INGEST_ROUTE: &str = "/api/v1/jobs/{job}/ingest/{source}";

/// An amount per period, written `"50/s"`, `"10/min"`, `"100/h"`; the amount may carry a byte
/// unit (`"64MiB/s"`) where bytes are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many in one `per`.
    pub amount: u64,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// `amount` per second.
    pub const fn per_second(amount: u64) -> Self {
        Self {
            amount,
            per: Duration::from_secs(1),
        }
    }

    /// `amount` per minute.
    pub const fn per_minute(amount: u64) -> Self {
        Self {
            amount,
            per: Duration::from_secs(60),
        }
    }

    /// The rate in units per second.
    pub fn per_sec(self) -> f64 {
        self.amount as f64 / self.per.as_secs_f64()
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{text:?} is not a rate; write e.g. \"50/s\", \"10/min\", \"100/h\" or \"64MiB/s\""
            )
        };
        let (amount, period) = text.trim().split_once('/').ok_or_else(bad)?;
        let amount: ByteSize = amount.parse().map_err(|_| bad())?;
        let per = match period.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if amount.0 == 0 {
            return Err(format!(
                "{text:?}: a rate of 0 would refuse everything; give at least 1"
            ));
        }
        Ok(Self {
            amount: amount.0,
            per,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per.as_secs() {
            60 => "min",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{per}", self.amount)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: Rate, burst: u64) -> Self {
        let capacity = (burst.max(1)) as f64;
        Self {
            tokens: capacity,
            capacity,
            rate: rate.per_sec(),
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.capacity);
        self.last = now;
    }

    /// Take `n` tokens, or say how long until there are `n`.
    fn take(&mut self, n: f64) -> Result<(), Duration> {
        self.refill();
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.tokens) / self.rate))
        }
    }

    /// Whether the bucket is out of debt; how long until it is otherwise.
    fn admit(&mut self) -> Result<(), Duration> {
        self.refill();
        if self.tokens > 0.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(-self.tokens / self.rate + 1e-3))
        }
    }

    /// Take `n` tokens whether there are or not (a body already received).
    fn charge(&mut self, n: f64) {
        self.refill();
        self.tokens -= n;
    }
}

/// Which of a tenant's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Api,
    Deploy,
    Ingest,
}

/// Every tenant's buckets.
#[derive(Debug, Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<(String, Kind), Bucket>>,
}

impl RateLimits {
    fn with_bucket<R>(
        &self,
        state: &ServerState,
        tenant: &str,
        kind: Kind,
        f: impl FnOnce(&mut Bucket) -> R,
    ) -> R {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets
            .entry((tenant.to_string(), kind))
            .or_insert_with(|| {
                let q = state.quotas(tenant);
                match kind {
                    Kind::Api => Bucket::new(q.api_rate, q.api_burst),
                    Kind::Deploy => Bucket::new(q.deploy_rate, q.deploy_burst),
                    Kind::Ingest => {
                        Bucket::new(q.max_ingest_rate, q.max_ingest_rate.per_sec().ceil() as u64)
                    }
                }
            });
        f(bucket)
    }

    /// Count one deploy (or rollback) of `tenant`: 429 past its `deploy_rate`.
    pub fn deploy(&self, state: &ServerState, tenant: &str) -> Result<(), ApiError> {
        self.with_bucket(state, tenant, Kind::Deploy, |b| b.take(1.0))
            .map_err(|wait| {
                let q = state.quotas(tenant);
                too_many(
                    wait,
                    format!(
                        "too many uploads: your deploy_rate quota is {} (burst {})",
                        q.deploy_rate, q.deploy_burst
                    ),
                )
            })
    }

    fn api(&self, state: &ServerState, tenant: &str) -> Result<(), ApiError> {
        self.with_bucket(state, tenant, Kind::Api, |b| b.take(1.0))
            .map_err(|wait| {
                let q = state.quotas(tenant);
                too_many(
                    wait,
                    format!(
                        "too many API calls: your api_rate quota is {} (burst {})",
                        q.api_rate, q.api_burst
                    ),
                )
            })
    }

    fn ingest(&self, state: &ServerState, tenant: &str) -> Result<(), ApiError> {
        self.with_bucket(state, tenant, Kind::Ingest, Bucket::admit)
            .map_err(|wait| {
                let q = state.quotas(tenant);
                too_many(
                    wait,
                    format!(
                        "too many bytes ingested: your max_ingest_rate quota is {}/s of records",
                        ByteSize(q.max_ingest_rate.per_sec() as u64)
                    ),
                )
            })
    }
}

/// 429 with `Retry-After: wait` (whole seconds, at least 1).
fn too_many(wait: Duration, error: String) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        error,
        "wait for Retry-After seconds and try again, or ask the host's operator to raise the quota in the host's config file ([tenants.quotas])",
    );
    e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}

/// The middleware in front of every route: `api_rate` for every call of an authenticated
/// tenant but ingest, `max_ingest_rate` for ingest.
pub async fn limit(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let tenant = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| state.tenants.authenticate(token.trim()))
        .map(|t| t.name.clone());
    let Some(tenant) = tenant else {
        return next.run(request).await;
    };
    let ingest = is_ingest(request.uri().path());
    if !ingest {
        if let Err(e) = state.limits.api(&state, &tenant) {
            return e.into_response();
        }
        return next.run(request).await;
    }
    if let Err(e) = state.limits.ingest(&state, &tenant) {
        return e.into_response();
    }
    let (parts, body) = request.into_parts();
    let counted = Counted {
        body,
        state: state.clone(),
        tenant,
    };
    next.run(Request::from_parts(parts, Body::new(counted)))
        .await
}

/// Whether `path` is one of [`INGEST_ROUTE`] (`/api/v1/jobs/{job}/ingest/{source}`).
fn is_ingest(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "api", "v1", "jobs", job, "ingest", source] if !job.is_empty() && !source.is_empty()
    )
}

/// A request body whose bytes are charged to the tenant's ingest bucket as they arrive.
struct Counted {
    body: Body,
    state: Arc<ServerState>,
    tenant: String,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as f64;
            let this = &*self;
            this.state
                .limits
                .with_bucket(&this.state, &this.tenant, Kind::Ingest, |b| b.charge(n));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The default of `[host] compile_slots`: cores − 1, at least 1.
pub fn default_compile_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .saturating_sub(1)
        .max(1)
}

/// Compiles waiting for their turn: `max_compiles` per tenant, `compile_slots` on the host.
#[derive(Debug)]
pub struct CompileQueue {
    global: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A compile's turn; dropping it frees the slots.
#[derive(Debug)]
pub struct CompileTurn {
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
    /// How long it waited for its turn.
    pub waited: Duration,
}

impl CompileQueue {
    /// A queue with `slots` compiles at once on the host (at least 1).
    pub fn new(slots: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(slots.max(1))),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Wait for a turn of `tenant` (at most `per_tenant` of its compiles at once), logging
    /// when it has to wait.
    pub async fn turn(&self, tenant: &str, per_tenant: u32, what: &str) -> CompileTurn {
        let start = Instant::now();
        let mine = self
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(per_tenant.max(1) as usize)))
            .clone();
        let tenant_permit = match mine.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::info!(
                    tenant,
                    udf = what,
                    max_compiles = per_tenant,
                    "deploy waits for the tenant's compile slot (quota max_compiles)"
                );
                acquire(mine).await
            }
        };
        let global_permit = match self.global.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::info!(
                    tenant,
                    udf = what,
                    "deploy waits for one of the host's compile slots ([host] compile_slots)"
                );
                acquire(self.global.clone()).await
            }
        };
        CompileTurn {
            _tenant: tenant_permit,
            _global: global_permit,
            waited: start.elapsed(),
        }
    }
}

async fn acquire(semaphore: Arc<Semaphore>) -> OwnedSemaphorePermit {
    loop {
        // The semaphores are never closed; a closed one would be a bug: try again.
        if let Ok(p) = semaphore.clone().acquire_owned().await {
            return p;
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_paths_are_told_apart() {
        assert!(is_ingest("/api/v1/jobs/j/ingest/lines"));
        for other in [
            "/api/v1/jobs/j",
            "/api/v1/jobs/j/logs",
            "/api/v1/jobs//ingest/x",
            "/api/v1/jobs/j/ingest/x/y",
            "/api/v1/udfs/ingest",
        ] {
            assert!(!is_ingest(other), "{other}");
        }
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!("50/s".parse::<Rate>(), Ok(Rate::per_second(50)));
        assert_eq!("10/min".parse::<Rate>(), Ok(Rate::per_minute(10)));
        assert_eq!("64MiB/s".parse::<Rate>(), Ok(Rate::per_second(64 << 20)));
        assert_eq!(Rate::per_minute(10).to_string(), "10/min");
        for bad in ["50", "0/s", "x/s", "5/day", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_gives_its_burst_then_says_how_long_to_wait() {
        let mut b = Bucket::new(Rate::per_second(10), 3);
        for _ in 0..3 {
            assert!(b.take(1.0).is_ok());
        }
        let wait = b.take(1.0).unwrap_err();
        assert!(wait <= Duration::from_millis(110), "{wait:?}");
        b.charge(100.0);
        let wait = b.admit().unwrap_err();
        assert!(wait >= Duration::from_secs(9), "{wait:?}");
    }
}
