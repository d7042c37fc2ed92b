//! Spark's `socketTextStream`: a receiver task connects to `host:port` and reads lines until
//! the peer goes away, then reconnects after `reconnect_delay` (with `--until-idle`, the end of
//! the first connection ends the source). When the job checkpoints, every block of lines read
//! goes to the source's write-ahead log before it is buffered, so what was read survives a
//! crash. Still unreliable in Spark's sense: the peer is never told what is safe, so lines it
//! sent that were not yet read (in socket buffers, in flight) are lost when the host dies. Use
//! the `http` source when the sender must know.
//!
//! With a rate (`max_rate`, backpressure) the receiver stops reading while its buffer holds
//! four batches' budgets ([`HIGH_WATER_BATCHES`](super::received::HIGH_WATER_BATCHES)): the
//! kernel's buffers fill and TCP's window pushes back on the peer.
//!
//! Each byte read is looked at once: the receiver keeps the start of the line it is in (at most
//! `max_line_bytes`, 1 MiB by default) and never scans it again. A line longer than that is
//! skipped up to its newline without being kept, counted with the lines that are not UTF-8
//! (`sluice_source_invalid_lines_total`) and logged with the source, the peer, its number and
//! its length, so a peer that never sends a newline cannot grow the host's memory or pin a core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::received::{MAX_BUFFERED_BYTES, Received};
use super::{Source, SourceContext, SourceInput, SourceStatus, now_ms};

/// The default of a socket source's `max_line_bytes`: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// How much is read from the socket at a time.
const CHUNK: usize = 64 * 1024;

/// A socket source's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Wait between reconnection attempts.
    pub reconnect_delay: Duration,
    /// The longest line kept, in bytes (without its newline); longer lines are skipped and
    /// counted.
    pub max_line_bytes: usize,
}

impl SocketOptions {
    /// `reconnect_delay` with the default line cap ([`DEFAULT_MAX_LINE_BYTES`]).
    pub fn new(reconnect_delay: Duration) -> Self {
        Self {
            reconnect_delay,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// A socket receiver and what it has buffered.
pub struct SocketSource {
    name: String,
    buffer: Received,
    finished: Arc<AtomicBool>,
    long_lines: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SocketSource {
    /// Start receiving from `host:port` into `buffer`, lines capped at
    /// [`DEFAULT_MAX_LINE_BYTES`].
    pub fn start(
        name: &str,
        host: &str,
        port: u16,
        reconnect_delay: Duration,
        buffer: Received,
        ctx: &SourceContext,
    ) -> Self {
        Self::start_with(
            name,
            host,
            port,
            SocketOptions::new(reconnect_delay),
            buffer,
            ctx,
        )
    }

    /// Start receiving from `host:port` into `buffer` with `options`.
    pub fn start_with(
        name: &str,
        host: &str,
        port: u16,
        options: SocketOptions,
        buffer: Received,
        ctx: &SourceContext,
    ) -> Self {
        let finished = Arc::new(AtomicBool::new(false));
        let long_lines = Arc::new(AtomicU64::new(0));
        let receiver = Receiver {
            source: name.to_string(),
            address: format!("{host}:{port}"),
            reconnect_delay: options.reconnect_delay,
            max_line_bytes: options.max_line_bytes.max(1),
            buffer: buffer.clone(),
            finished: finished.clone(),
            long_lines: long_lines.clone(),
            ctx: ctx.clone(),
        };
        let task = ctx.runtime.spawn(receiver.run());
        Self {
            name: name.to_string(),
            buffer,
            finished,
            long_lines,
            task,
        }
    }
}

struct Receiver {
    source: String,
    address: String,
    reconnect_delay: Duration,
    max_line_bytes: usize,
    buffer: Received,
    finished: Arc<AtomicBool>,
    /// Lines skipped for being over `max_line_bytes`, over every connection.
    long_lines: Arc<AtomicU64>,
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

    /// Read lines until the peer closes; returns how many were read (skipped ones included).
    async fn read(&self, mut stream: TcpStream) -> std::io::Result<u64> {
        let mut splitter = LineSplitter::new(self.max_line_bytes);
        let mut chunk = vec![0u8; CHUNK];
        let mut block = Vec::with_capacity(CHUNK);
        let mut oversized = Vec::new();
        let mut skipped_total = 0u64;
        loop {
            let n = stream.read(&mut chunk).await?;
            let last = n == 0;
            let first = splitter.lines();
            block.clear();
            oversized.clear();
            if last {
                splitter.finish(&mut block, &mut oversized);
            } else {
                splitter.feed(&chunk[..n], &mut block, &mut oversized);
            }
            for &(line, length) in &oversized {
                skipped_total += 1;
                // Each of the first ten, then now and again: a peer sending only long lines
                // must not flood the log.
                if skipped_total <= 10 || skipped_total.is_power_of_two() {
                    tracing::warn!(job = %self.ctx.job, source = %self.source, "line {} from {} is {length} bytes, over max_line_bytes ({}): skipped and counted ({skipped_total} so far on this connection)", line + 1, self.address, self.max_line_bytes);
                }
            }
            if !oversized.is_empty() {
                self.buffer.skipped(oversized.len() as u64);
                self.long_lines
                    .fetch_add(oversized.len() as u64, Ordering::Relaxed);
            }
            if !block.is_empty() {
                // A full buffer waits for the next batch to take it: the peer is not read
                // meanwhile, so TCP's window pushes back on it. So does a buffer at its rate's
                // high-water mark, without an early seal (the rate is per batch interval).
                loop {
                    if self
                        .buffer
                        .buffered_bytes()
                        .saturating_add(block.len() as u64)
                        > MAX_BUFFERED_BYTES
                    {
                        self.ctx.early_seal.notify_one();
                    } else if self.buffer.over_high_water().is_none() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let pushed = if self.buffer.is_logged() {
                    // The log append and its fsync run on the runtime's blocking pool, not on
                    // a worker every job's receivers share.
                    let buffer = self.buffer.clone();
                    let data = std::mem::take(&mut block);
                    let (pushed, data) = tokio::task::spawn_blocking(move || {
                        let pushed = buffer.push(&data, last, now_ms());
                        (pushed, data)
                    })
                    .await
                    .map_err(std::io::Error::other)?;
                    block = data;
                    pushed
                } else {
                    self.buffer.push(&block, last, now_ms())
                }
                .map_err(std::io::Error::other)?;
                for &i in &pushed.invalid {
                    // The block's lines are the connection's lines from `first` on, less the
                    // skipped ones.
                    let mut number = first + i;
                    for &(line, _) in &oversized {
                        if line <= number {
                            number += 1;
                        }
                    }
                    tracing::warn!(job = %self.ctx.job, source = %self.source, "line {} from {} is not UTF-8: skipped and counted", number + 1, self.address);
                }
                if Received::wants_seal(&pushed, self.ctx.max_batch_records) {
                    self.ctx.early_seal.notify_one();
                }
            }
            if last {
                return Ok(splitter.lines());
            }
        }
    }
}

/// Splits a byte stream into lines of at most `max` bytes (without the newline), looking at
/// each byte once; longer lines are dropped as they arrive, never held.
#[derive(Debug)]
struct LineSplitter {
    max: usize,
    /// The start of the current line, whose newline has not come yet: at most `max` bytes.
    partial: Vec<u8>,
    /// Bytes of the current line dropped so far, once it is known to be too long.
    skipping: Option<u64>,
    /// Lines ended so far (kept or skipped).
    lines: u64,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        Self {
            max,
            partial: Vec::new(),
            skipping: None,
            lines: 0,
        }
    }

    /// Lines ended so far, kept or skipped.
    fn lines(&self) -> u64 {
        self.lines
    }

    /// Take in `chunk`: the complete lines that fit go to `block` with their newlines; the
    /// 0-based number and length of each line that did not fit go to `oversized`.
    fn feed(&mut self, chunk: &[u8], block: &mut Vec<u8>, oversized: &mut Vec<(u64, u64)>) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if let Some(skipped) = self.skipping.take() {
                oversized.push((self.lines, skipped + i as u64));
            } else if self.partial.len() + i > self.max {
                oversized.push((self.lines, (self.partial.len() + i) as u64));
                self.partial.clear();
            } else {
                block.extend_from_slice(&self.partial);
                block.extend_from_slice(&rest[..=i]);
                self.partial.clear();
            }
            self.lines += 1;
            rest = &rest[i + 1..];
        }
        if rest.is_empty() {
            return;
        }
        match &mut self.skipping {
            Some(skipped) => *skipped += rest.len() as u64,
            None if self.partial.len() + rest.len() > self.max => {
                self.skipping = Some((self.partial.len() + rest.len()) as u64);
                // Give the memory back: a line this long is not kept.
                self.partial = Vec::new();
            }
            None => self.partial.extend_from_slice(rest),
        }
    }

    /// The input ended: a line without its newline is a last line (or skipped, if too long).
    fn finish(&mut self, block: &mut Vec<u8>, oversized: &mut Vec<(u64, u64)>) {
        if let Some(skipped) = self.skipping.take() {
            oversized.push((self.lines, skipped));
            self.lines += 1;
        } else if !self.partial.is_empty() {
            block.append(&mut self.partial);
            self.lines += 1;
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

    fn set_budget(&mut self, records: Option<usize>) {
        self.buffer.set_budget(records);
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

    fn refusals(&self) -> Vec<(&'static str, u64)> {
        vec![("long_lines", self.long_lines.load(Ordering::Relaxed))]
    }
}

impl Drop for SocketSource {
    /// The receiver task (and its connection) ends with the source, however the job ended.
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<u8>, Vec<(u64, u64)>, u64) {
        let mut splitter = LineSplitter::new(max);
        let (mut block, mut oversized) = (Vec::new(), Vec::new());
        for chunk in chunks {
            splitter.feed(chunk, &mut block, &mut oversized);
        }
        splitter.finish(&mut block, &mut oversized);
        (block, oversized, splitter.lines())
    }

    #[test]
    fn lines_across_chunks_are_joined_and_long_ones_skipped() {
        let (block, oversized, lines) = split(4, &[b"ab", b"c\nabcdef", b"gh\nxy\n", b"1234\nz"]);
        assert_eq!(block, b"abc\nxy\n1234\nz");
        assert_eq!(oversized, [(1, 8)]);
        assert_eq!(lines, 5);
    }

    #[test]
    fn a_long_line_is_never_held_and_the_next_lines_arrive() {
        let mut splitter = LineSplitter::new(1024);
        let (mut block, mut oversized) = (Vec::new(), Vec::new());
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            splitter.feed(&chunk, &mut block, &mut oversized);
            assert!(
                splitter.partial.capacity() <= 2048,
                "the long line is not kept"
            );
        }
        splitter.feed(b"\nnext\n", &mut block, &mut oversized);
        assert_eq!(block, b"next\n");
        assert_eq!(oversized, [(0, 64 * 64 * 1024)]);
    }

    #[test]
    fn a_long_last_line_without_newline_is_skipped_at_the_end() {
        let (block, oversized, lines) = split(3, &[b"ok\n", b"toolong"]);
        assert_eq!(block, b"ok\n");
        assert_eq!(oversized, [(1, 7)]);
        assert_eq!(lines, 2);
        // A line of exactly `max` bytes is kept, with `\r\n` too.
        let (block, oversized, _) = split(3, &[b"abc\r\n", b"abc\n"]);
        assert_eq!(block, b"abc\n");
        assert_eq!(oversized, [(0, 4)]);
    }
}
