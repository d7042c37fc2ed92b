//! A reliable receiver: `POST /ingest/<source>` with newline-separated records in the body.
//!
//! The answer tells the client what is safe: `200` with `{"accepted": n}` only after the
//! records are in the source's write-ahead log (fsynced, with the default
//! `wal_fsync = "block"`), so a client that got a 200 knows the job will count them even if it
//! is killed the next instant; anything else means nothing of the request was taken and it can
//! be sent again. A body with a line that is not UTF-8 is refused whole (`400`, naming the
//! line); a body over `max_request_bytes` gets `413`; a job that is stopping answers `503`.
//!
//! No client can hang, exhaust or kill the endpoint ([`HttpLimits`], defaults in brackets):
//!
//! - a request's head (request line and headers, at most 64 KiB) must arrive within
//!   `header_timeout` [10 s] of the connection opening or of the previous answer, and its body
//!   within `body_timeout` [30 s] of the head: a slow or idle client is cut off (`408` for a
//!   slow body, the connection closed for a slow head);
//! - at most `max_connections` [512] connections are served at once per source, and never more
//!   than half of the process's open-file limit over all http sources, so idle clients cannot
//!   take the file descriptors the job needs for its log and checkpoints; a connection beyond
//!   that is answered `503` with `Retry-After` and closed;
//! - the bodies being read hold at most `max_inflight_bytes` [4 × `max_request_bytes`] of memory
//!   together; a body that does not fit is answered `429` with `Retry-After`;
//! - with a rate (`max_rate`, backpressure), a request that comes while the buffer holds its
//!   high-water mark (4 batches' budgets, [`HIGH_WATER_BATCHES`](super::received::HIGH_WATER_BATCHES))
//!   is answered `429` with `Retry-After` before its body is read: a burst past the rate waits
//!   at the client;
//! - when `accept` fails because the process is out of file descriptors, the endpoint sheds the
//!   waiting connection (a spare descriptor kept for that), backs off (10 ms doubling to 1 s),
//!   logs it once per 10 s with the count, and goes on serving: it is never fatal to the job.
//!
//! What was refused is counted in [`IngestCounters`] and logged (once per 10 s per kind).
//!
//! # Mounted on a caller's router
//!
//! A program that owns its HTTP server (a `host serve`, a service embedding Sluice) starts the
//! job with the engine's `JobOptions::mount_http`: the source binds
//! nothing, and the engine's `Job::ingest_router` (built by
//! [`ingest_router`] from each source's [`IngestEndpoint`]) is an axum `Router` serving
//! `POST /ingest/<source>` that the caller nests under a prefix of its own. The answers are the
//! same, records are acknowledged only once in the write-ahead log, and the limits that concern
//! a request hold as they are: `max_request_bytes` (`413`), `max_inflight_bytes` (`429`),
//! `body_timeout` (`408`), and `503` once the job stops. The limits that concern connections
//! belong to whoever owns the listener and are the caller's to set on its server:
//! `header_timeout` and the 64 KiB head cap, `max_connections` and the open-file budget, and
//! the back-off when `accept` fails. Once the job has stopped, a mounted endpoint answers `503`
//! and holds nothing of the job (its write-ahead log is closed with the job). The caller's
//! server is not stopped with the job, so a request already being logged when the job stops
//! may still be answered `200`: its records are in the log, after the last batch sealed, and
//! the job's next start runs them (as it does for records logged just before a crash). The log
//! append runs on the blocking pool of the runtime serving the request.

use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONNECTION, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper::body::Body as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::received::{PushError, Received};
use super::{Source, SourceContext, SourceInput, SourceStatus, now_ms};

/// The default of an http source's `header_timeout`: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of an http source's `body_timeout`: 30 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of an http source's `max_connections`: 512.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The default `max_inflight_bytes` is this many times `max_request_bytes`.
pub const DEFAULT_INFLIGHT_BODIES: u64 = 4;
/// The largest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The `Retry-After` of `503` and `429` answers, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";
/// At most this many refused connections are given time to read their `503`; beyond, the
/// answer is written without waiting and the connection closed at once.
const MAX_REFUSING: usize = 32;
/// How long a refused connection is given to read its `503`.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// Refusals, timeouts and accept errors of one kind are logged at most once per this.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The first and the longest pause after `accept` failed.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connections open over every http source of the process, held under [`fd_budget`].
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Why an http source could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "source '{source_name}': cannot listen on {address}: {error}; is another program (or another job) using it?"
)]
pub struct ListenError {
    /// The source.
    pub source_name: String,
    /// The address.
    pub address: String,
    /// Why.
    pub error: std::io::Error,
}

/// What an http source lets clients hold: time, connections, memory.
///
/// `max_request_bytes`, `body_timeout` and `max_inflight_bytes` hold per request, wherever the
/// endpoint is served; `header_timeout` and `max_connections` hold only when the source owns
/// its listener (not when it is mounted on a caller's router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The largest request body accepted (`413` beyond). Per request.
    pub max_request_bytes: u64,
    /// How long a request's head may take to arrive (from the connection's start or the
    /// previous answer); past it the connection is closed. Per connection: the listener's.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive once its head is in; past it `408`. Per
    /// request.
    pub body_timeout: Duration,
    /// Connections served at once (`503` beyond); also never more than half the process's
    /// open-file limit over all http sources. Per listener.
    pub max_connections: usize,
    /// The bytes of all bodies being read at once (`429` beyond). Per source, wherever it is
    /// served.
    pub max_inflight_bytes: u64,
}

impl HttpLimits {
    /// The defaults for bodies of at most `max_request_bytes`.
    pub fn new(max_request_bytes: u64) -> Self {
        Self {
            max_request_bytes,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight_bytes: max_request_bytes.saturating_mul(DEFAULT_INFLIGHT_BODIES),
        }
    }
}

/// What an http source refused or cut off since it started.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Connections answered `503` (or closed) because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// `accept` failures, mostly the process being out of file descriptors.
    pub accept_errors: AtomicU64,
    /// Connections closed because a request's head did not arrive within `header_timeout`.
    pub header_timeouts: AtomicU64,
    /// Requests answered `408` because the body did not arrive within `body_timeout`.
    pub body_timeouts: AtomicU64,
    /// Requests answered `429` because `max_inflight_bytes` were being read.
    pub bodies_throttled: AtomicU64,
    /// Requests answered `429` because the buffer held its high-water mark of records (the
    /// source's rate budget times [`HIGH_WATER_BATCHES`](super::received::HIGH_WATER_BATCHES)).
    pub over_rate: AtomicU64,
}

/// A running http ingest endpoint: on a listener of its own ([`start_with`](Self::start_with))
/// or mounted on a caller's router ([`mounted`](Self::mounted)). Stopping or dropping it ends
/// its listener and every connection on it.
pub struct HttpSource {
    name: String,
    buffer: Received,
    endpoint: Arc<Endpoint>,
    counters: Arc<IngestCounters>,
    /// The accept loop, when the source owns its listener.
    task: Option<tokio::task::JoinHandle<()>>,
}

/// One source's ingest endpoint, to serve on a router the caller owns (see [`ingest_router`]).
/// It holds nothing of the job once the job has stopped: it then answers `503`.
#[derive(Clone)]
pub struct IngestEndpoint {
    endpoint: Arc<Endpoint>,
}

impl IngestEndpoint {
    /// The source's name: the endpoint takes `POST /ingest/<name>`.
    pub fn name(&self) -> &str {
        &self.endpoint.name
    }
}

impl std::fmt::Debug for IngestEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestEndpoint")
            .field("name", &self.endpoint.name)
            .finish_non_exhaustive()
    }
}

/// An axum router serving `POST /ingest/<source>` for each of `endpoints` (other names get
/// `404`), with each source's per-request limits; nest it under any prefix. The caller's
/// server owns the connections: it sets their header timeout and count.
pub fn ingest_router(endpoints: impl IntoIterator<Item = IngestEndpoint>) -> Router {
    let endpoints: Vec<Arc<Endpoint>> = endpoints.into_iter().map(|e| e.endpoint).collect();
    Router::new()
        .route("/ingest/{source}", post(ingest))
        .with_state(Arc::new(endpoints))
}

struct Endpoint {
    name: String,
    /// The job's buffer while the job runs; taken away when it stops, so that a router the
    /// caller keeps does not hold the job's write-ahead log open.
    buffer: Mutex<Option<Received>>,
    stopping: AtomicBool,
    ctx: SourceContext,
    limits: HttpLimits,
    inflight: Arc<Budget>,
    counters: Arc<IngestCounters>,
    throttled_log: Mutex<Throttle>,
    timed_out_log: Mutex<Throttle>,
    over_rate_log: Mutex<Throttle>,
}

impl HttpSource {
    /// Listen on `address` and take records into `buffer`, with the default limits for bodies
    /// of at most `max_request_bytes`.
    pub fn start(
        name: &str,
        address: &str,
        max_request_bytes: u64,
        buffer: Received,
        ctx: &SourceContext,
    ) -> Result<Self, ListenError> {
        Self::start_with(
            name,
            address,
            HttpLimits::new(max_request_bytes),
            buffer,
            ctx,
        )
    }

    /// Listen on `address` and take records into `buffer`, within `limits`.
    pub fn start_with(
        name: &str,
        address: &str,
        limits: HttpLimits,
        buffer: Received,
        ctx: &SourceContext,
    ) -> Result<Self, ListenError> {
        let listen_error = |error| ListenError {
            source_name: name.to_string(),
            address: address.to_string(),
            error,
        };
        let listener = std::net::TcpListener::bind(address).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        let listener = {
            let _entered = ctx.runtime.enter();
            TcpListener::from_std(listener).map_err(listen_error)?
        };
        let mut source = Self::mounted(name, limits, buffer, ctx);
        let fds = fd_budget();
        let max_connections = limits.max_connections.max(1);
        if fds < max_connections {
            tracing::info!(job = %ctx.job, source = %name, "serving at most {fds} connections at once (half the open-file limit), not {max_connections}");
        }
        tracing::info!(job = %ctx.job, source = %name, "listening on http://{local}/ingest/{name}");
        source.task = Some(
            ctx.runtime
                .spawn(accept_loop(listener, source.endpoint.clone())),
        );
        Ok(source)
    }

    /// Take records into `buffer` through an endpoint served by a router the caller owns
    /// ([`endpoint`](Self::endpoint), [`ingest_router`]): nothing is bound. Of `limits`, only
    /// the per-request ones apply (`max_request_bytes`, `body_timeout`,
    /// `max_inflight_bytes`); the connection limits are the caller server's.
    pub fn mounted(name: &str, limits: HttpLimits, buffer: Received, ctx: &SourceContext) -> Self {
        let counters = Arc::new(IngestCounters::default());
        let endpoint = Arc::new(Endpoint {
            name: name.to_string(),
            buffer: Mutex::new(Some(buffer.clone())),
            stopping: AtomicBool::new(false),
            ctx: ctx.clone(),
            limits,
            inflight: Arc::new(Budget::new(limits.max_inflight_bytes)),
            counters: counters.clone(),
            throttled_log: Mutex::new(Throttle::default()),
            timed_out_log: Mutex::new(Throttle::default()),
            over_rate_log: Mutex::new(Throttle::default()),
        });
        Self {
            name: name.to_string(),
            buffer,
            endpoint,
            counters,
            task: None,
        }
    }

    /// The endpoint, to serve on a router (see [`ingest_router`]).
    pub fn endpoint(&self) -> IngestEndpoint {
        IngestEndpoint {
            endpoint: self.endpoint.clone(),
        }
    }

    /// What the endpoint refused or cut off so far.
    pub fn counters(&self) -> Arc<IngestCounters> {
        self.counters.clone()
    }
}

/// Half the process's open-file limit: the most connections all http sources may hold, so
/// the job keeps descriptors for its log, checkpoints and state.
fn fd_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` only writes the struct it is given, which lives for the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(limit.rlim_cur / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// A connection being served: it counts against its source's `max_connections` and the
/// process's descriptor budget until dropped.
struct Slot {
    source: Arc<AtomicUsize>,
}

impl Slot {
    fn take(source: &Arc<AtomicUsize>, max: usize, fds: usize) -> Option<Self> {
        let claim = |counter: &AtomicUsize, max: usize| {
            counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok()
        };
        if !claim(source, max) {
            return None;
        }
        if !claim(&OPEN_CONNECTIONS, fds) {
            source.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self {
            source: source.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.source.fetch_sub(1, Ordering::AcqRel);
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Says an event of one kind at most once per [`LOG_EVERY`], with how many happened since.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    since: u64,
}

impl Throttle {
    /// Note one event: `Some(n)` when it is time to log the `n` events since the last log.
    fn hit(&mut self) -> Option<u64> {
        self.since += 1;
        match self.last {
            Some(last) if last.elapsed() < LOG_EVERY => None,
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.since))
            }
        }
    }
}

/// Whether `accept` failed because the process or the system is out of descriptors (or
/// buffers): the connection waits in the backlog until one is freed.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The next pause after `accept` failed again.
fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

/// A descriptor kept in reserve: given up to accept (and shed) a connection when the process
/// is out of descriptors, so the waiting client is answered instead of left hanging.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

const REFUSED_BODY: &str =
    "too many connections to this ingest endpoint; nothing was taken: send it again later\n";

fn refused_answer() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{REFUSED_BODY}",
        REFUSED_BODY.len()
    )
}

/// Answer a connection over the cap `503` and close it, reading what it sends meanwhile (at
/// most 64 KiB, for at most [`REFUSE_LINGER`]) so that closing does not reset the connection
/// before the client has read the answer.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        stream.write_all(refused_answer().as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Answer a connection `503` without waiting (what fits in the socket's buffer) and drop it,
/// having read what it already sent so that closing does not reset it: for when refusing with
/// [`refuse`] would hold too many descriptors.
fn shed(stream: &TcpStream) {
    let _ = stream.try_write(refused_answer().as_bytes());
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Accept connections until the task is aborted; never ends on an error.
async fn accept_loop(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let app = ingest_router([IngestEndpoint {
        endpoint: endpoint.clone(),
    }]);
    let (job, source) = (endpoint.ctx.job.clone(), endpoint.name.clone());
    let open = Arc::new(AtomicUsize::new(0));
    let max_connections = endpoint.limits.max_connections.max(1);
    let fds = fd_budget();
    // Dropped with the task (when the source stops): every connection ends with it.
    let mut connections = JoinSet::new();
    let mut refusing = JoinSet::new();
    let mut spare = spare_descriptor();
    let mut backoff = Duration::ZERO;
    let (mut refused_log, mut accept_log) = (Throttle::default(), Throttle::default());
    loop {
        let accepted = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            Some(_) = refusing.join_next(), if !refusing.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                if spare.is_none() {
                    spare = spare_descriptor();
                }
                match Slot::take(&open, max_connections, fds) {
                    Some(slot) => {
                        connections.spawn(serve_connection(
                            stream,
                            app.clone(),
                            slot,
                            endpoint.clone(),
                        ));
                    }
                    None => {
                        endpoint
                            .counters
                            .connections_refused
                            .fetch_add(1, Ordering::Relaxed);
                        if let Some(n) = refused_log.hit() {
                            tracing::warn!(%job, %source, "{n} connection(s) refused with 503 (the last from {peer}): {} are open, the most this endpoint serves at once (max_connections {max_connections}, half the open-file limit {fds})", open.load(Ordering::Relaxed));
                        }
                        if refusing.len() < MAX_REFUSING {
                            refusing.spawn(refuse(stream));
                        } else {
                            shed(&stream);
                        }
                    }
                }
            }
            Err(e) if !out_of_descriptors(&e) && is_connection_error(&e) => {}
            Err(e) => {
                endpoint
                    .counters
                    .accept_errors
                    .fetch_add(1, Ordering::Relaxed);
                backoff = next_backoff(backoff);
                let exhausted = out_of_descriptors(&e);
                if let Some(n) = accept_log.hit() {
                    let total = endpoint.counters.accept_errors.load(Ordering::Relaxed);
                    tracing::warn!(%job, %source, "cannot accept connections: {e}{}; {n} time(s) since the last report, {total} in all; shedding waiting connections and retrying in {}", if exhausted { " (out of file descriptors)" } else { "" }, humantime::format_duration(backoff));
                }
                if exhausted && spare.take().is_some() {
                    // The spare descriptor is free now: take one waiting connection and tell
                    // it to come back.
                    if let Ok(Ok((stream, _))) =
                        tokio::time::timeout(BACKOFF_MIN, listener.accept()).await
                    {
                        endpoint
                            .counters
                            .connections_refused
                            .fetch_add(1, Ordering::Relaxed);
                        shed(&stream);
                    }
                    spare = spare_descriptor();
                }
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Serve one connection (HTTP/1.1, keep-alive) under the header timeout.
async fn serve_connection(stream: TcpStream, app: Router, slot: Slot, endpoint: Arc<Endpoint>) {
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(endpoint.limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await;
    if let Err(e) = served
        && e.is_timeout()
    {
        endpoint
            .counters
            .header_timeouts
            .fetch_add(1, Ordering::Relaxed);
        if let Some(n) = lock(&endpoint.timed_out_log).hit() {
            tracing::warn!(job = %endpoint.ctx.job, source = %endpoint.name, "{n} connection(s) closed for sending no whole request head within {} (header_timeout)", humantime::format_duration(endpoint.limits.header_timeout));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The memory all bodies being read may hold together.
#[derive(Debug)]
struct Budget {
    used: AtomicU64,
    max: u64,
}

impl Budget {
    fn new(max: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            max,
        }
    }

    fn try_take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .is_ok()
    }
}

/// Bytes of the in-flight budget held by one body, given back when dropped.
struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reservation {
    fn new(budget: &Arc<Budget>) -> Self {
        Self {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Hold `bytes` in all, if the budget has room.
    fn grow_to(&mut self, bytes: u64) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.try_take(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a body was not read whole.
enum Unread {
    /// Over `max_request_bytes`.
    TooLarge,
    /// The in-flight budget has no room for it.
    Busy,
    /// The client broke off or sent a malformed body.
    Broken(axum::Error),
}

/// Read `body` whole, holding its bytes in `reservation`.
async fn read_body(
    body: Body,
    reservation: &mut Reservation,
    max: u64,
    expected: Option<u64>,
) -> Result<Vec<u8>, Unread> {
    let mut data = Vec::new();
    if let Some(len) = expected {
        let len = usize::try_from(len).map_err(|_| Unread::TooLarge)?;
        data.reserve_exact(len);
    }
    let mut body = pin!(body);
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(chunk) = frame.map_err(Unread::Broken)?.into_data() else {
            continue; // trailers
        };
        let total = data.len() as u64 + chunk.len() as u64;
        if total > max {
            return Err(Unread::TooLarge);
        }
        if total > data.capacity() as u64 {
            // Grow in steps (no more than doubling), each step paid for first.
            let capacity = total.max(data.capacity() as u64 * 2).min(max);
            if !reservation.grow_to(capacity) {
                return Err(Unread::Busy);
            }
            let capacity = usize::try_from(capacity).map_err(|_| Unread::TooLarge)?;
            data.reserve_exact(capacity - data.len());
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

fn answer(status: StatusCode, text: String) -> Response {
    (status, text).into_response()
}

/// An answer after which the connection is closed (the body may be unread), with
/// `Retry-After` when the client may simply try again.
fn closing(status: StatusCode, text: String, retry: bool) -> Response {
    let mut response = (status, text).into_response();
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if retry {
        headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

async fn ingest(
    State(endpoints): State<Arc<Vec<Arc<Endpoint>>>>,
    Path(source): Path<String>,
    body: Body,
) -> Response {
    let Some(endpoint) = endpoints.iter().find(|e| e.name == source) else {
        let names: Vec<String> = endpoints
            .iter()
            .map(|e| format!("POST /ingest/{}", e.name))
            .collect();
        return answer(
            StatusCode::NOT_FOUND,
            format!(
                "no source '{source}' here; this endpoint takes {}\n",
                names.join(", ")
            ),
        );
    };
    let stopping = || {
        closing(
            StatusCode::SERVICE_UNAVAILABLE,
            "the job is stopping: nothing was taken; send it again once the job is back\n".into(),
            false,
        )
    };
    if endpoint.stopping.load(Ordering::Acquire) {
        return stopping();
    }
    // Over the rate's high-water mark: the client waits, not the buffer (checked before the
    // body is read, so a burst costs no memory).
    let over = lock(&endpoint.buffer)
        .as_ref()
        .and_then(Received::over_high_water);
    if let Some((held, mark)) = over {
        endpoint.counters.over_rate.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = lock(&endpoint.over_rate_log).hit() {
            tracing::warn!(job = %endpoint.ctx.job, source = %endpoint.name, "{n} request(s) answered 429: {held} records wait for the next batches, the high-water mark of the source's rate is {mark}");
        }
        return closing(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{held} records wait for the next batches, over this source's high-water mark ({mark}, {} batches at its rate); nothing was taken: send it again after Retry-After seconds\n",
                super::received::HIGH_WATER_BATCHES
            ),
            true,
        );
    }
    let limits = endpoint.limits;
    let too_large = || {
        closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is over max_request_bytes ({} bytes); nothing was taken: send it in smaller requests\n",
                limits.max_request_bytes
            ),
            false,
        )
    };
    let busy = || {
        endpoint
            .counters
            .bodies_throttled
            .fetch_add(1, Ordering::Relaxed);
        if let Some(n) = lock(&endpoint.throttled_log).hit() {
            tracing::warn!(job = %endpoint.ctx.job, source = %endpoint.name, "{n} request(s) answered 429: the bodies being read hold max_inflight_bytes ({} bytes)", limits.max_inflight_bytes);
        }
        closing(
            StatusCode::TOO_MANY_REQUESTS,
            "too many bodies are being received at once; nothing was taken: send it again after Retry-After seconds\n".into(),
            true,
        )
    };
    // A declared length is checked and paid for before a byte of the body is read.
    let expected = body.size_hint().exact();
    let mut reservation = Reservation::new(&endpoint.inflight);
    if let Some(len) = expected {
        if len > limits.max_request_bytes {
            return too_large();
        }
        if !reservation.grow_to(len) {
            return busy();
        }
    }
    let read = tokio::time::timeout(
        limits.body_timeout,
        read_body(body, &mut reservation, limits.max_request_bytes, expected),
    )
    .await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(Unread::TooLarge)) => return too_large(),
        Ok(Err(Unread::Busy)) => return busy(),
        Ok(Err(Unread::Broken(e))) => {
            return closing(
                StatusCode::BAD_REQUEST,
                format!("the body could not be read ({e}); nothing was taken\n"),
                false,
            );
        }
        Err(_) => {
            endpoint
                .counters
                .body_timeouts
                .fetch_add(1, Ordering::Relaxed);
            if let Some(n) = lock(&endpoint.timed_out_log).hit() {
                tracing::warn!(job = %endpoint.ctx.job, source = %endpoint.name, "{n} request(s) answered 408 for sending no whole body within {} (body_timeout)", humantime::format_duration(limits.body_timeout));
            }
            return closing(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}; nothing was taken: send it again\n",
                    humantime::format_duration(limits.body_timeout)
                ),
                false,
            );
        }
    };
    // Refuse the whole body if any line is not UTF-8, so the client can fix and resend it.
    if let Err(e) = std::str::from_utf8(&body) {
        let line = memchr::memchr_iter(b'\n', &body[..e.valid_up_to()]).count() + 1;
        return answer(
            StatusCode::BAD_REQUEST,
            format!(
                "line {line} of the body is not UTF-8; nothing of this request was taken. Send newline-separated UTF-8 records\n"
            ),
        );
    }
    if body.is_empty() {
        return answer(StatusCode::OK, "{\"accepted\":0}\n".into());
    }
    // The log append (and its fsync) runs on the runtime's blocking pool; the body's bytes
    // stay counted in flight until it is done.
    let Some(buffer) = lock(&endpoint.buffer).clone() else {
        return stopping();
    };
    let pushed = tokio::task::spawn_blocking(move || {
        let _held = reservation;
        buffer.push(&body, true, now_ms())
    })
    .await;
    match pushed {
        Ok(Ok(pushed)) => {
            if Received::wants_seal(&pushed, endpoint.ctx.max_batch_records) {
                endpoint.ctx.early_seal.notify_one();
            }
            answer(
                StatusCode::OK,
                format!("{{\"accepted\":{}}}\n", pushed.added),
            )
        }
        Ok(Err(e @ PushError::Full { .. })) => {
            endpoint.ctx.early_seal.notify_one();
            tracing::warn!(job = %endpoint.ctx.job, source = %endpoint.name, "{e}");
            let mut refused = answer(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
            refused
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            refused
        }
        Ok(Err(PushError::Wal(e))) => {
            tracing::error!(job = %endpoint.ctx.job, source = %endpoint.name, "{e}");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the records could not be written to the write-ahead log ({e}); nothing was taken: send them again\n"
                ),
            )
        }
        Err(e) => {
            tracing::error!(job = %endpoint.ctx.job, source = %endpoint.name, "writing to the write-ahead log did not finish: {e}");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the records could not be written to the write-ahead log; send them again\n".into(),
            )
        }
    }
}

impl Source for HttpSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn take(&mut self, max_records: Option<usize>) -> SourceInput {
        self.buffer.take(max_records)
    }

    fn set_budget(&mut self, records: Option<usize>) {
        self.buffer.set_budget(records);
    }

    fn status(&mut self) -> SourceStatus {
        // An endpoint never runs out: `--until-idle` ends a job with one once every other
        // source is done and nothing is buffered.
        self.buffer.status(true)
    }

    fn stop(&mut self) {
        self.endpoint.stopping.store(true, Ordering::Release);
        lock(&self.endpoint.buffer).take();
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    fn refusals(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        [
            ("connections_refused", &c.connections_refused),
            ("accept_errors", &c.accept_errors),
            ("header_timeouts", &c.header_timeouts),
            ("body_timeouts", &c.body_timeouts),
            ("bodies_throttled", &c.bodies_throttled),
            ("over_rate", &c.over_rate),
        ]
        .into_iter()
        .map(|(reason, n)| (reason, n.load(Ordering::Relaxed)))
        .collect()
    }

    fn replay(&mut self, from: u64, to: u64) -> Result<SourceInput, crate::wal::WalError> {
        self.buffer.replay(from, to)
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Arc::new(Budget::new(100));
        let mut a = Reservation::new(&budget);
        let mut b = Reservation::new(&budget);
        assert!(a.grow_to(60));
        assert!(!b.grow_to(50), "60 + 50 is over 100");
        assert!(b.grow_to(40));
        assert!(!a.grow_to(61));
        drop(a);
        assert!(b.grow_to(100));
        drop(b);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }

    #[test]
    fn slots_are_capped_per_source_and_over_the_process() {
        let open = Arc::new(AtomicUsize::new(0));
        let first = Slot::take(&open, 2, usize::MAX).unwrap();
        let _second = Slot::take(&open, 2, usize::MAX).unwrap();
        assert!(Slot::take(&open, 2, usize::MAX).is_none());
        drop(first);
        let _third = Slot::take(&open, 2, usize::MAX).unwrap();
        // The process-wide budget binds too (other tests may hold slots: ask for none).
        let other = Arc::new(AtomicUsize::new(0));
        assert!(Slot::take(&other, 10, 0).is_none());
        assert_eq!(
            other.load(Ordering::Acquire),
            0,
            "a refused claim is undone"
        );
    }

    #[test]
    fn accept_errors_back_off_and_are_logged_once_per_interval() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(out_of_descriptors(&emfile));
        assert!(!out_of_descriptors(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        let mut backoff = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            backoff = next_backoff(backoff);
            seen.push(backoff);
        }
        assert_eq!(seen[0], BACKOFF_MIN);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*seen.last().unwrap(), BACKOFF_MAX);
        let mut throttle = Throttle::default();
        assert_eq!(throttle.hit(), Some(1));
        assert_eq!(throttle.hit(), None);
        assert_eq!(throttle.hit(), None);
        throttle.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(
            throttle.hit(),
            Some(3),
            "the report counts what was not logged"
        );
    }
}
