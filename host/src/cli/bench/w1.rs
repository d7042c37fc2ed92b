//! `host bench w1`: workload W1 of WORKLOADS.md through the engine, against a native loop over
//! the same files in the same run.
//!
//! The job: a directory source (one file per batch), `clickstream#is_purchase_line` (filter),
//! `clickstream#user_amount` (map to `(user_id, cents)`), then per batch `count` and
//! `reduce(aggregates#sum_i64)` — the same graph as `examples/clickstream/job.toml`. The native
//! loop reads each file and does the same on one thread; both answers must agree batch by
//! batch, or the bench fails.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_host::engine::{JobSummary, StreamingContext, percentile};
use sluice_host::plan::Start;
use sluice_host::udf::UdfRuntime;

use super::{BenchArgs, data_dir, keep_number};

/// Per batch: (purchases, cents).
type Totals = Vec<(u64, i64)>;

pub fn run(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let data = data_dir(args)?;

    let native_started = Instant::now();
    let native = native_w1(&data)?;
    let native_time = native_started.elapsed();

    let (summary, sluice) = sluice_w1(&data, args, runtime)?;
    if sluice != native {
        bail!(
            "the job's per-batch (count, cents) differ from the native loop's:\n  job:    {sluice:?}\n  native: {native:?}"
        );
    }
    let events = args.events as f64;
    let job_rate = summary.records_per_second();
    let native_rate = events / native_time.as_secs_f64();
    let p = |q| crate::cli::millis(percentile(&summary.processing_times, q));
    let d = |q| crate::cli::millis(percentile(&summary.total_delays, q));
    let purchases: u64 = native.iter().map(|t| t.0).sum();
    let cents: i64 = native.iter().map(|t| t.1).sum();
    println!(
        "W1 over {} events in {} files ({})",
        args.events,
        args.files,
        data.display()
    );
    println!(
        "  result:     {purchases} purchases, {}.{:02} in all; every batch agrees with the native loop",
        cents / 100,
        cents % 100
    );
    println!(
        "  sluice:     {:>6.2} M events/s  ({} batches in {:.3} s, {} partitions, Wasm filter + project)",
        job_rate / 1e6,
        summary.batches,
        summary.elapsed.as_secs_f64(),
        args.partitions
            .unwrap_or_else(sluice_host::plan::spec::default_partitions)
    );
    println!(
        "  batch processing: p50 {} p90 {} p99 {} max {}",
        p(50.0),
        p(90.0),
        p(99.0),
        p(100.0)
    );
    println!(
        "  batch total delay: p50 {} p90 {} p99 {} max {}",
        d(50.0),
        d(90.0),
        d(99.0),
        d(100.0)
    );
    println!(
        "  native:     {:>6.2} M events/s  (one thread, read + split + filter + parse + sum, no engine)",
        native_rate / 1e6
    );
    println!(
        "  ratio:      {:.2}× the native loop",
        job_rate / native_rate
    );
    Ok(())
}

fn sluice_w1(
    data: &Path,
    args: &BenchArgs,
    runtime: UdfRuntime,
) -> anyhow::Result<(JobSummary, Totals)> {
    let ctx = StreamingContext::with_runtime(
        "bench-w1",
        Duration::from_millis(100),
        &args.udfs.dir,
        Arc::new(runtime),
    );
    let ctx = match args.partitions {
        Some(n) => ctx.partitions(n),
        None => ctx,
    };
    let events = ctx.directory_stream("events", data, Start::Earliest, Some(1));
    let amounts = events
        .filter("clickstream#is_purchase_line")
        .named("purchases")
        .map("clickstream#user_amount")
        .named("amounts");
    let counts: Arc<Mutex<Vec<i64>>> = Arc::default();
    let sums: Arc<Mutex<Vec<i64>>> = Arc::default();
    amounts
        .count()
        .named("purchase_count")
        .foreach_batch(keep_number(&counts));
    amounts
        .reduce("aggregates#sum_i64")
        .named("revenue")
        .foreach_batch(keep_number(&sums));
    let summary = ctx.run_until_idle()?;
    let counts = std::mem::take(&mut *counts.lock().unwrap_or_else(PoisonError::into_inner));
    let sums = std::mem::take(&mut *sums.lock().unwrap_or_else(PoisonError::into_inner));
    // Batches with no file (a tick before the first file settled) carry nothing: leave them out.
    let totals = counts
        .iter()
        .zip(&sums)
        .filter(|(n, _)| **n > 0)
        .map(|(n, cents)| (*n as u64, *cents))
        .collect();
    Ok((summary, totals))
}

/// The same computation without the engine: per file, purchases and their cents.
fn native_w1(data: &Path) -> anyhow::Result<Totals> {
    let files = super::files(data)?;
    let mut totals = Vec::new();
    for file in files {
        let text = std::fs::read(&file)?;
        let (mut n, mut cents) = (0u64, 0i64);
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = std::str::from_utf8(line).context("not UTF-8")?;
            let mut fields = line.split(',');
            let (_, user, kind, amount) =
                (fields.next(), fields.next(), fields.next(), fields.next());
            if kind != Some("purchase") {
                continue;
            }
            let _user: u32 = user.and_then(|u| u.parse().ok()).context("bad user")?;
            let (whole, frac) = amount
                .and_then(|a| a.split_once('.'))
                .context("bad amount")?;
            cents += whole.parse::<i64>()? * 100 + frac.parse::<i64>()?;
            n += 1;
        }
        if n > 0 {
            totals.push((n, cents));
        }
    }
    Ok(totals)
}
