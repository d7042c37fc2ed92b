//! Sinks: where a batch's results go once every operator is done.
//!
//! - `print`: Spark's `print(n)`, the batch-time header and the first `n` records on stdout;
//! - [`text_files`]: Spark's `saveAsTextFiles`, one directory per batch, renamed into place
//!   whole, so no reader ever sees half a batch;
//! - a foreach-batch UDF (the `sink` world), called once per partition;
//! - [`kafka`]: every record to a Kafka topic, idempotent by default, one transaction per
//!   batch with `exactly_once = true`;
//! - [`NativeSink`]: a Rust closure, Spark's `foreachRDD`, for programs embedding Sluice.

pub mod kafka;
pub mod text_files;

pub use text_files::OutputFormat;

use std::io::Write;
use std::path::PathBuf;

use crate::batch::Batch;
use crate::batch::codec::Codec;
use crate::udf::CallError;

/// One batch of one stream, as a sink sees it.
#[derive(Debug, Clone, Copy)]
pub struct SinkBatch<'a> {
    /// The batch's id: 1, 2, 3 … in the order batches were sealed.
    pub id: u64,
    /// The batch time, ms since the Unix epoch.
    pub time: i64,
    /// The stream's records, by partition.
    pub partitions: &'a [Batch],
    /// How keys read.
    pub key_codec: Codec,
    /// How values read.
    pub value_codec: Codec,
}

impl SinkBatch<'_> {
    /// Every record, partition after partition, as a `print` line: `(key,value)` or `value`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.partitions.iter().flat_map(|p| p.records()).map(|r| {
            let mut line = String::new();
            match r.key {
                Some(key) => {
                    line.push('(');
                    self.key_codec.show(key, &mut line);
                    line.push(',');
                    self.value_codec.show(r.value, &mut line);
                    line.push(')');
                }
                None => self.value_codec.show(r.value, &mut line),
            }
            line
        })
    }
}

/// A Rust closure receiving every batch of a stream (Spark's `foreachRDD`). An `Err` fails the
/// batch like a failed UDF call.
pub struct NativeSink(pub Box<SinkFn>);

/// The closure of a [`NativeSink`].
pub type SinkFn = dyn Fn(&SinkBatch<'_>) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for NativeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeSink(..)")
    }
}

/// A sink that could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Files could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// What was being written.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The sink UDF failed.
    #[error(transparent)]
    Udf(#[from] CallError),
    /// A native sink returned an error.
    #[error("the foreach-batch function failed: {0}")]
    Native(String),
    /// The Kafka sink could not produce or commit the batch.
    #[error("kafka sink (bootstrap {bootstrap}): {error}")]
    Kafka {
        /// The sink's `bootstrap` brokers.
        bootstrap: String,
        /// What happened, with the broker's message.
        error: kafka::KafkaSinkError,
    },
}

/// Spark's `print(num)`:
///
/// ```text
/// -------------------------------------------
/// Time: 1700000000000 ms
/// -------------------------------------------
/// (to,2)
/// (be,2)
/// ...
/// ```
pub fn print(batch: &SinkBatch<'_>, num: usize, out: &mut impl Write) -> std::io::Result<()> {
    let rule = "-------------------------------------------";
    writeln!(out, "{rule}\nTime: {} ms\n{rule}", batch.time)?;
    let total: usize = batch.partitions.iter().map(Batch::len).sum();
    for line in batch.lines().take(num) {
        writeln!(out, "{line}")?;
    }
    if total > num {
        writeln!(out, "...")?;
    }
    writeln!(out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_looks_like_spark() {
        let mut b = Batch::empty(true);
        b.push(Some(b"to"), b"2", 0);
        b.push(Some(b"be"), b"2", 0);
        b.push(Some(b"or"), b"1", 0);
        let parts = [b];
        let batch = SinkBatch {
            id: 1,
            time: 1000,
            partitions: &parts,
            key_codec: Codec::Text,
            value_codec: Codec::Number,
        };
        let mut out = Vec::new();
        print(&batch, 2, &mut out).unwrap();
        let rule = "-".repeat(43);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{rule}\nTime: 1000 ms\n{rule}\n(to,2)\n(be,2)\n...\n\n")
        );
    }
}
