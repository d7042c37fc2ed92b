//! Spark's `socketTextStream`: a receiver task connects to `host:port` and reads lines until
//! the peer goes away, then reconnects after `reconnect_delay` (with `--until-idle`, the end of
//! the first connection ends the source). When the job checkpoints, every block of lines read
//! goes to the source's write-ahead log before it is buffered, so what was read survives a
//! crash. Still unreliable in Spark's sense: the peer is never told what is safe, so lines it
//! sent that were not yet read (in socket buffers, in flight) are lost when the host dies. Use
//! the `http` source when the sender must know.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::received::Received;
use super::{Source, SourceContext, SourceInput, SourceStatus, now_ms};

/// A socket receiver and what it has buffered.
pub struct SocketSource {
    name: String,
    buffer: Received,
    finished: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SocketSource {
    /// Start receiving from `host:port` into `buffer`.
    pub fn start(
        name: &str,
        host: &str,
        port: u16,
        reconnect_delay: Duration,
        buffer: Received,
        ctx: &SourceContext,
    ) -> Self {
        let finished = Arc::new(AtomicBool::new(false));
        let receiver = Receiver {
            source: name.to_string(),
            address: format!("{host}:{port}"),
            reconnect_delay,
            buffer: buffer.clone(),
            finished: finished.clone(),
            ctx: ctx.clone(),
        };
        let task = ctx.runtime.spawn(receiver.run());
        Self {
            name: name.to_string(),
            buffer,
            finished,
            task,
        }
    }
}

struct Receiver {
    source: String,
    address: String,
    reconnect_delay: Duration,
    buffer: Received,
    finished: Arc<AtomicBool>,
    ctx: SourceContext,
}

impl Receiver {
    async fn run(self) {
        let (job, source, address) = (&self.ctx.job, &self.source, &self.address);
        let mut attempts = 0u64;
        loop {
            match TcpStream::connect(address.as_str()).await {
                Ok(stream) => {
                    attempts = 0;
                    tracing::info!(%job, %source, "connected to {address}");
                    match self.read(stream).await {
                        Ok(lines) => {
                            tracing::info!(%job, %source, "{address} closed the connection after {lines} lines")
                        }
                        Err(e) => {
                            tracing::warn!(%job, %source, "reading from {address} failed: {e}")
                        }
                    }
                    if self.ctx.until_idle {
                        self.finished.store(true, Ordering::Release);
                        return;
                    }
                    tracing::info!(%job, %source, "reconnecting to {address} in {}", humantime::format_duration(self.reconnect_delay));
                }
                Err(e) => {
                    attempts += 1;
                    // Say it the first time and then now and again, not on every attempt.
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(%job, %source, "cannot connect to {address}: {e}; retrying every {} (attempt {attempts})", humantime::format_duration(self.reconnect_delay));
                    }
                }
            }
            tokio::time::sleep(self.reconnect_delay).await;
        }
    }

    /// Read lines until the peer closes; returns how many were read.
    async fn read(&self, mut stream: TcpStream) -> std::io::Result<u64> {
        let mut pending: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut lines = 0u64;
        loop {
            let n = stream.read(&mut chunk).await?;
            let last = n == 0;
            pending.extend_from_slice(&chunk[..n]);
            let first = lines;
            let pushed = self
                .buffer
                .push(&pending, last, now_ms())
                .map_err(std::io::Error::other)?;
            pending.drain(..pushed.used);
            let invalid = pushed.invalid;
            lines += (pushed.added + invalid.len()) as u64;
            let full = self
                .ctx
                .max_batch_records
                .is_some_and(|max| pushed.buffered >= max);
            for i in &invalid {
                tracing::warn!(job = %self.ctx.job, source = %self.source, "line {} from {} is not UTF-8: skipped and counted", first + i + 1, self.address);
            }
            if full {
                self.ctx.early_seal.notify_one();
            }
            if last {
                return Ok(lines);
            }
        }
    }
}

impl Source for SocketSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn take(&mut self, max_records: Option<usize>) -> SourceInput {
        self.buffer.take(max_records)
    }

    fn status(&mut self) -> SourceStatus {
        self.buffer.status(self.finished.load(Ordering::Acquire))
    }

    fn replay(&mut self, from: u64, to: u64) -> Result<SourceInput, crate::wal::WalError> {
        self.buffer.replay(from, to)
    }

    fn stop(&mut self) {
        self.task.abort();
    }
}
