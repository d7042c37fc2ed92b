//! `host bench swap`: what a hot swap of a UDF adds to the batch in which it happens.
//!
//! A job maps every line through `text#uppercase` (`--udfs DIR/text.wasm`, version 1); the
//! second version (`--v2`, by default `dist/test-guests/text_v2.wasm`, which marks its output
//! `v2:`) is compiled ahead, as a deploy compiles before it rebinds. Batches of
//! `--batch-records` lines run one after another through the job's executor; before every
//! `--swap-every`-th batch the job's UDF slots are rebound to the other version, alternating,
//! through `SlotSet::rebind_component` — the call hot reload makes on a deploy. The executor
//! runs as `host replay` does (no sinks, nothing committed), so what is timed is reading the
//! input and computing the streams: exactly where a swap could cost (the snapshot of the
//! slots, the new version's first calls, its instance pool).
//!
//! Reported: each swap batch's processing time minus the mean of its two neighbours (not
//! swap batches), median and p99, and the rebind call's own time. Every record's output is
//! checked: each input line comes out once, upper-cased by the version bound for its batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_host::batch::Batch;
use sluice_host::engine::Core;
use sluice_host::engine::executor::{Executor, SealedBatch};
use sluice_host::metrics::Registry;
use sluice_host::plan::{self, manifest};
use sluice_host::sources::SourceInput;
use sluice_host::udf::{UdfDirectory, UdfRuntime};

use super::BenchArgs;

/// The target of issue 16: a swap adds at most this to its batch.
const TARGET: Duration = Duration::from_millis(1);

/// Differences in µs, signed: a swap batch can be faster than its neighbours.
fn percentile_us(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.swap_every >= 2,
        "--swap-every must be at least 2, so every swap batch has neighbours that are not"
    );
    anyhow::ensure!(
        args.batches > args.swap_every,
        "--batches must be more than --swap-every, so at least one swap happens"
    );
    let root = tempfile::tempdir().context("a temporary folder")?;
    let input = root.path().join("in");
    std::fs::create_dir_all(&input)?;
    let partitions = args.partitions.unwrap_or(0);
    let manifest_path = root.path().join("swap.toml");
    std::fs::write(
        &manifest_path,
        format!(
            "[job]\nname = \"swap\"\nbatch_interval = \"1s\"\n{}\n[[sources]]\nname = \"lines\"\nkind = \"directory\"\npath = \"in\"\n\n[[streams]]\nname = \"up\"\nop = \"map\"\ninput = \"lines\"\nudf = \"text#uppercase\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"up\"\n",
            if partitions > 0 {
                format!("partitions = {partitions}\n")
            } else {
                String::new()
            }
        ),
    )?;
    let runtime = Arc::new(runtime);
    let spec = manifest::load_with(&manifest_path, None)?;
    let udfs = UdfDirectory::new(args.udfs.dir.clone(), &runtime);
    let plan = Arc::new(plan::plan(spec, &udfs, Some(&manifest_path))?);
    let v1 = plan
        .udfs
        .snapshot()
        .iter()
        .next()
        .map(|(_, b)| b.component().clone())
        .context("the plan calls no UDF")?;
    let v2 = runtime
        .load_file(&args.v2)
        .with_context(|| format!("loading version 2 from {}", args.v2.display()))?;
    let sink_node = plan
        .sinks
        .first()
        .map(|(n, _)| *n)
        .context("the plan has no sink")?;
    let core = Core::global()?;
    let mut executor = Executor::new(
        plan.clone(),
        core.pool().clone(),
        Arc::new(Registry::default()),
        None,
    )?
    .dry_run();

    let mut on_v2 = false;
    let mut rebinds = Vec::new();
    // Per batch: whether a swap happened just before it, and its processing time.
    let mut batches: Vec<(bool, Duration)> = Vec::new();
    let mut records_out = 0u64;
    for id in 1..=args.batches {
        let swap = id % args.swap_every == 0;
        if swap {
            on_v2 = !on_v2;
            let next = if on_v2 { v2.clone() } else { v1.clone() };
            let started = Instant::now();
            plan.udfs
                .rebind_component("text", next, None)
                .context("rebinding the job's UDF")?;
            rebinds.push(started.elapsed());
        }
        let mut records = Batch::empty(false);
        for i in 0..args.batch_records {
            records.push(None, format!("b{id}-r{i}").as_bytes(), 0);
        }
        // Sealed now: bound to the versions the slots hold now, as the scheduler does.
        let report = executor.run(
            SealedBatch {
                id,
                time: i64::try_from(id)?.saturating_mul(1000),
                sealed_at: Instant::now(),
                inputs: vec![SourceInput::Records {
                    records,
                    invalid_lines: 0,
                    wal: None,
                }],
                udfs: plan.udfs.snapshot(),
            },
            None,
        );
        if let Some(error) = report.error {
            anyhow::bail!("batch {id} failed: {error}");
        }
        let outputs = executor.take_outputs();
        let out = outputs
            .get(sink_node)
            .and_then(Option::as_deref)
            .with_context(|| format!("batch {id}: no output"))?;
        // Every line once, by the version bound for this batch (a batch never mixes them).
        let mut seen = vec![false; usize::try_from(args.batch_records)?];
        for part in out {
            for r in part.records() {
                let line = std::str::from_utf8(r.value).context("output is not UTF-8")?;
                let rest = if on_v2 {
                    line.strip_prefix("v2:")
                } else {
                    (!line.starts_with("v2:")).then_some(line)
                };
                let index = rest
                    .and_then(|l| l.strip_prefix(&format!("B{id}-R")))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n < seen.len() && !seen[n])
                    .with_context(|| {
                        format!(
                            "batch {id} (version {}): unexpected or repeated output {line:?}",
                            if on_v2 { 2 } else { 1 }
                        )
                    })?;
                seen[index] = true;
                records_out += 1;
            }
        }
        anyhow::ensure!(
            seen.iter().all(|s| *s),
            "batch {id}: {} of {} records missing from the output",
            seen.iter().filter(|s| !**s).count(),
            seen.len()
        );
        batches.push((swap, report.processing_time));
    }

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut added = Vec::new();
    for (i, (swap, time)) in batches.iter().enumerate() {
        let neighbours: Vec<f64> = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| batches.get(j))
            .filter(|(s, _)| !s)
            .map(|(_, t)| us(*t))
            .collect();
        if *swap && !neighbours.is_empty() {
            added.push(us(*time) - neighbours.iter().sum::<f64>() / neighbours.len() as f64);
        }
    }
    let plain: Vec<Duration> = batches
        .iter()
        .filter(|(s, _)| !s)
        .map(|(_, t)| *t)
        .collect();
    let rebind_us: Vec<f64> = rebinds.iter().map(|d| us(*d)).collect();
    println!(
        "hot swap: {} batches of {} records, text#uppercase v1 ⇄ v2 rebound before every {}th ({} swaps, {} partitions)",
        args.batches,
        args.batch_records,
        args.swap_every,
        rebinds.len(),
        plan.partitions
    );
    println!(
        "  batch processing, no swap:        p50 {:>8.1} µs  p99 {:>8.1} µs",
        us(sluice_host::engine::percentile(&plain, 50.0)),
        us(sluice_host::engine::percentile(&plain, 99.0))
    );
    println!(
        "  added by a swap (vs neighbours):  p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
        percentile_us(&added, 50.0),
        percentile_us(&added, 99.0),
        percentile_us(&added, 100.0)
    );
    println!(
        "  rebind call itself:               p50 {:>8.1} µs  p99 {:>8.1} µs",
        percentile_us(&rebind_us, 50.0),
        percentile_us(&rebind_us, 99.0)
    );
    let verdict = |v: f64| if v <= us(TARGET) { "met" } else { "NOT met" };
    println!(
        "  target ≤ {:.0} µs added: {} at p50, {} at p99 (no-swap batches alone spread {:.1} µs from p50 to p99)",
        us(TARGET),
        verdict(percentile_us(&added, 50.0)),
        verdict(percentile_us(&added, 99.0)),
        us(sluice_host::engine::percentile(&plain, 99.0))
            - us(sluice_host::engine::percentile(&plain, 50.0))
    );
    println!(
        "every record came out once: {records_out} records in {} batches",
        args.batches
    );
    Ok(())
}
