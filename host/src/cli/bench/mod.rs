//! `host bench`: the workloads of WORKLOADS.md through the engine, each against a native loop
//! over the same files in the same run (figures are ratios measured together; the machine is
//! noisy). W1 is stateless; W3 (event-time windows) and W4 (running totals) keep state in
//! RocksDB, and run twice: with the host's builtin reducers and with Wasm UDFs.

mod backpressure;
mod dead_letters;
mod kafka;
mod noisy;
mod recovery;
mod stateful;
mod swap;
mod w1;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use sluice_host::sinks::SinkBatch;
use sluice_host::udf::UdfRuntime;
use sluice_host::workloads;

/// Arguments of `host bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The workload: `w1` (filter purchases, project, per-batch count and sum), `w3` (sliding
    /// event-time windows, count and sum per event type), `w4` (running count and sum per user),
    /// `recovery` (restart time of a job with `--keys` keys of state), `noisy` (a tenant's
    /// batch times on a shared host while another tenant misbehaves), `swap` (what a hot swap
    /// of a UDF adds to its batch), `dead-letters` (the cost of isolating 3 poison records in
    /// a batch of 100,000), `backpressure` (a job with `backpressure = true` under 3× the
    /// input it sustains: its rate, delays and memory per batch, as CSV and an SVG plot),
    /// `kafka` (W1 and W4 read from a Kafka topic beside the same jobs reading the files,
    /// `--runs` times each, alternating; needs `--bootstrap`).
    #[arg(value_parser = ["w1", "w3", "w4", "recovery", "noisy", "swap", "dead-letters", "backpressure", "kafka"])]
    pub workload: String,
    /// Keys of state for `recovery`.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Number of events N.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Number of files K, one batch each.
    #[arg(long, default_value_t = 20)]
    pub files: u64,
    /// Where the generated data is kept (generated when missing).
    /// [default: ~/.cache/sluice/bench/events-N-K]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub udfs: super::UdfsArg,
    /// Partitions per batch (default: one per core; `backpressure`: 1).
    #[arg(long)]
    pub partitions: Option<usize>,
    /// `noisy`: seconds of each period (baseline, then under noise) [default: 30];
    /// `backpressure`: seconds of overload [default: 60].
    #[arg(long)]
    pub seconds: Option<u64>,
    /// `noisy`: what tenant a does, any of `spin` (an infinite loop), `bomb` (a memory bomb),
    /// `compile` (slow uploads), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "spin,bomb,compile")]
    pub noise: Vec<String>,
    /// `noisy`, `backpressure`: where the test guests are (`hostile.wasm`, `slow.wasm`).
    #[arg(long, value_name = "DIR", default_value = "dist/test-guests")]
    pub guests: PathBuf,
    /// `swap`: batches run.
    #[arg(long, default_value_t = 1000)]
    pub batches: u64,
    /// `swap`: the UDF is rebound before every this many batches.
    #[arg(long, default_value_t = 4)]
    pub swap_every: u64,
    /// `swap`: records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_records: u64,
    /// `swap`: the second version of `text` (its `uppercase` marks lines `v2:`).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "dist/test-guests/text_v2.wasm"
    )]
    pub v2: PathBuf,
    /// `backpressure`: where `backpressure.csv` and `backpressure.svg` are written.
    /// [default: ~/.cache/sluice/bench/backpressure]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `backpressure`: the job's batch interval.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// `backpressure`: the input offered, as a multiple of the rate the job sustains
    /// (measured first).
    #[arg(long, default_value_t = 3.0)]
    pub overload: f64,
    /// `kafka`: the broker (`HOST:PORT`) the events are produced to and read from.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// `kafka`: runs of each workload, each a directory leg then a Kafka leg.
    #[arg(long, default_value_t = 2)]
    pub runs: u64,
}

/// Run the workload `args` names.
pub fn run(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    match args.workload.as_str() {
        "w3" => stateful::run_w3(args, runtime),
        "w4" => stateful::run_w4(args, runtime),
        "recovery" => recovery::run(args, runtime),
        "noisy" => noisy::run(args),
        "swap" => swap::run(args, runtime),
        "dead-letters" => dead_letters::run(args, runtime),
        "backpressure" => backpressure::run(args, runtime),
        "kafka" => kafka::run(args, runtime),
        _ => w1::run(args, runtime),
    }
}

/// The data folder of `args`, generated when missing.
fn data_dir(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let data = args.data.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        home.join(format!(
            ".cache/sluice/bench/events-{}-{}",
            args.events, args.files
        ))
    });
    ensure_data(&data, args.events, args.files)?;
    Ok(data)
}

fn ensure_data(dir: &Path, events: u64, files: u64) -> anyhow::Result<()> {
    let last = dir.join(format!("part-{:05}.csv", files - 1));
    let count = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    if last.is_file() && count as u64 == files {
        return Ok(());
    }
    eprintln!(
        "bench: generating {events} events into {files} files in {} (once)",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(dir);
    workloads::write_files(dir, events, files, 42, 1)
        .with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

/// A sink keeping, per batch, the number in its one record (0 when the batch has none).
fn keep_number(
    store: &Arc<Mutex<Vec<i64>>>,
) -> impl Fn(&SinkBatch<'_>) -> Result<(), String> + Send + Sync + 'static {
    let store = store.clone();
    move |b| {
        let n = b
            .partitions
            .iter()
            .flat_map(|p| p.values.iter())
            .next()
            .map_or(Ok(0), parse::<i64>)?;
        store.lock().unwrap_or_else(PoisonError::into_inner).push(n);
        Ok(())
    }
}

fn parse<T: std::str::FromStr>(bytes: &[u8]) -> Result<T, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a number: {:?}", String::from_utf8_lossy(bytes)))
}

/// The data files, in order.
fn files(data: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}
