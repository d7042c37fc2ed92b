//! A reliable receiver: `POST /ingest/<source>` with newline-separated records in the body.
//!
//! The answer tells the client what is safe: `200` with `{"accepted": n, "offset": end}` only
//! after the records are in the source's write-ahead log (fsynced, with the default
//! `wal_fsync = "block"`), so a client that got a 200 knows the job will count them even if it
//! is killed the next instant; anything else means nothing of the request was taken and it can
//! be sent again. A body with a line that is not UTF-8 is refused whole (`400`, naming the
//! line); a body over `max_request_bytes` gets `413`; a job that is stopping answers `503`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::post;

use super::received::Received;
use super::{Source, SourceContext, SourceInput, SourceStatus, now_ms};

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

/// A running http ingest endpoint.
pub struct HttpSource {
    name: String,
    buffer: Received,
    stopping: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

struct Endpoint {
    name: String,
    buffer: Received,
    stopping: Arc<AtomicBool>,
    ctx: SourceContext,
}

impl HttpSource {
    /// Listen on `address` and take records into `buffer`.
    pub fn start(
        name: &str,
        address: &str,
        max_request_bytes: u64,
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
            tokio::net::TcpListener::from_std(listener).map_err(listen_error)?
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let endpoint = Arc::new(Endpoint {
            name: name.to_string(),
            buffer: buffer.clone(),
            stopping: stopping.clone(),
            ctx: ctx.clone(),
        });
        let app = Router::new()
            .route("/ingest/{source}", post(ingest))
            .with_state(endpoint)
            .layer(DefaultBodyLimit::max(
                usize::try_from(max_request_bytes).unwrap_or(usize::MAX),
            ));
        tracing::info!(job = %ctx.job, source = %name, "listening on http://{local}/ingest/{name}");
        let job = ctx.job.clone();
        let source = name.to_string();
        let task = ctx.runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(%job, %source, "the ingest endpoint stopped: {e}");
            }
        });
        Ok(Self {
            name: name.to_string(),
            buffer,
            stopping,
            task,
        })
    }
}

async fn ingest(
    State(endpoint): State<Arc<Endpoint>>,
    Path(source): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    if source != endpoint.name {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no source '{source}' here; this endpoint takes POST /ingest/{}\n",
                endpoint.name
            ),
        );
    }
    if endpoint.stopping.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the job is stopping: nothing was taken; send it again once the job is back\n".into(),
        );
    }
    // Refuse the whole body if any line is not UTF-8, so the client can fix and resend it.
    if let Err(e) = std::str::from_utf8(&body) {
        let line = body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "line {line} of the body is not UTF-8; nothing of this request was taken. Send newline-separated UTF-8 records\n"
            ),
        );
    }
    if body.is_empty() {
        return (StatusCode::OK, "{\"accepted\":0}\n".into());
    }
    match endpoint.buffer.push(&body, true, now_ms()) {
        Ok(pushed) => {
            if endpoint
                .ctx
                .max_batch_records
                .is_some_and(|max| pushed.buffered >= max)
            {
                endpoint.ctx.early_seal.notify_one();
            }
            (
                StatusCode::OK,
                format!("{{\"accepted\":{}}}\n", pushed.added),
            )
        }
        Err(e) => {
            tracing::error!(job = %endpoint.ctx.job, source = %endpoint.name, "{e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the records could not be written to the write-ahead log ({e}); nothing was taken: send them again\n"
                ),
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

    fn status(&mut self) -> SourceStatus {
        // An endpoint never runs out: `--until-idle` ends a job with one once every other
        // source is done and nothing is buffered.
        self.buffer.status(true)
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        self.task.abort();
    }

    fn replay(&mut self, from: u64, to: u64) -> Result<SourceInput, crate::wal::WalError> {
        self.buffer.replay(from, to)
    }
}
