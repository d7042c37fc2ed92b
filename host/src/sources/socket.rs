//! Spark's `socketTextStream`: a receiver task connects to `host:port` and reads lines until
//! the peer goes away, then reconnects after `reconnect_delay` (with `--until-idle`, the end of
//! the first connection ends the source). Unreliable in Spark's sense: lines received but not
//! yet in a finished batch are lost if the host dies (the write-ahead log of a later issue
//! closes that gap).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Source, SourceContext, SourceInput, SourceStatus, now_ms, push_lines};
use crate::batch::Batch;

#[derive(Default)]
struct Buffer {
    records: Option<Batch>,
    invalid_lines: u64,
}

/// A socket receiver and what it has buffered.
pub struct SocketSource {
    name: String,
    buffer: Arc<Mutex<Buffer>>,
    finished: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SocketSource {
    /// Start receiving from `host:port`.
    pub fn start(
        name: &str,
        host: &str,
        port: u16,
        reconnect_delay: Duration,
        ctx: &SourceContext,
    ) -> Self {
        let buffer = Arc::new(Mutex::new(Buffer::default()));
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
    buffer: Arc<Mutex<Buffer>>,
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
            let mut invalid = Vec::new();
            let first = lines;
            let full = {
                let mut guard = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
                let buffer = &mut *guard;
                let records = buffer.records.get_or_insert_with(|| Batch::empty(false));
                let before = records.len() as u64;
                let used = push_lines(&pending, last, records, now_ms(), &mut invalid);
                pending.drain(..used);
                lines += records.len() as u64 - before + invalid.len() as u64;
                buffer.invalid_lines += invalid.len() as u64;
                self.ctx
                    .max_batch_records
                    .is_some_and(|max| records.len() >= max)
            };
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
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let records = match (&mut buffer.records, max_records) {
            (Some(all), Some(max)) => all.take_front(max),
            (Some(_), None) => buffer.records.take().unwrap_or_else(|| Batch::empty(false)),
            (None, _) => Batch::empty(false),
        };
        SourceInput::Records {
            records,
            invalid_lines: std::mem::take(&mut buffer.invalid_lines),
        }
    }

    fn status(&mut self) -> SourceStatus {
        let buffered = self
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .as_ref()
            .map_or(0, Batch::len);
        SourceStatus {
            buffered,
            backlog: false,
            exhausted: self.finished.load(Ordering::Acquire) && buffered == 0,
        }
    }

    fn stop(&mut self) {
        self.task.abort();
    }
}
