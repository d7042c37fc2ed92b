//! `host bench w3` and `host bench w4`: the stateful workloads, state in RocksDB (a fresh
//! temporary state folder per run), each run twice — reducers built into the host, then Wasm
//! UDFs — and checked against a one-thread native loop over the same files.
//!
//! - W3: `clickstream#type_amount` (map to `(event_type, cents)` with the line's event time),
//!   then `event_time_window` 30 s / 10 s, watermark 10 s, append mode, `builtin =
//!   "count_and_sum"`; the Wasm run maps with `clickstream#type_count_amount` and reduces with
//!   `aggregates#count_and_sum`. The result is every window emitted during the run.
//! - W4: `clickstream#user_amount` (map to `(user_id, cents)`), then `update_state_by_key` with
//!   `builtin = "count_and_sum"` or `state#running_count_and_sum`. The result is the state
//!   after the last batch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_host::batch::Batch;
use sluice_host::engine::{EventTimeSpec, JobSummary, StateSpec, StreamingContext, percentile};
use sluice_host::plan::{Builtin, OutputMode, Start};
use sluice_host::sinks::SinkBatch;
use sluice_host::udf::UdfRuntime;

use super::{BenchArgs, data_dir, files};

const WINDOW: i64 = 30_000;
const SLIDE: i64 = 10_000;
const DELAY: i64 = 10_000;

/// `(key, [count, sum])` results.
type Results = BTreeMap<String, (i64, i64)>;

/// One run of the job: its summary and results.
struct Run {
    label: &'static str,
    summary: JobSummary,
    results: Results,
}

pub fn run_w3(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let data = data_dir(args)?;
    let started = Instant::now();
    let native = native_w3(&data)?;
    let native_time = started.elapsed();
    let runtime = Arc::new(runtime);
    let mut runs = Vec::new();
    for wasm in [false, true] {
        let results: Arc<Mutex<Results>> = Arc::default();
        let summary = job(args, &runtime, "w3", wasm, |ctx| {
            let events = ctx.directory_stream("events", &data, Start::Earliest, Some(1));
            let spec = EventTimeSpec {
                window: Duration::from_millis(WINDOW as u64),
                slide: Some(Duration::from_millis(SLIDE as u64)),
                watermark: Duration::from_millis(DELAY as u64),
                mode: OutputMode::Append,
            };
            let windows = if wasm {
                events
                    .map("clickstream#type_count_amount")
                    .named("typed")
                    .event_time_window("aggregates#count_and_sum", spec)
            } else {
                events
                    .map("clickstream#type_amount")
                    .named("typed")
                    .event_time_window(Builtin::CountAndSum, spec)
            };
            windows.named("windows").foreach_batch(keep_all(&results));
        })?;
        runs.push(Run {
            label: if wasm {
                "Wasm reducer aggregates#count_and_sum"
            } else {
                "builtin count_and_sum"
            },
            summary,
            results: take(&results),
        });
    }
    report(
        "W3",
        &format!("{} windows emitted", native.len()),
        args,
        &data,
        &native,
        native_time,
        &runs,
    )
}

pub fn run_w4(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let data = data_dir(args)?;
    let started = Instant::now();
    let native = native_w4(&data)?;
    let native_time = started.elapsed();
    let runtime = Arc::new(runtime);
    let mut runs = Vec::new();
    for wasm in [false, true] {
        let last: Arc<Mutex<Vec<Batch>>> = Arc::default();
        let summary = job(args, &runtime, "w4", wasm, |ctx| {
            let events = ctx.directory_stream("events", &data, Start::Earliest, Some(1));
            let amounts = events.map("clickstream#user_amount").named("amounts");
            let totals = if wasm {
                amounts.update_state_by_key("state#running_count_and_sum", StateSpec::default())
            } else {
                amounts.update_state_by_key(Builtin::CountAndSum, StateSpec::default())
            };
            totals.named("totals").foreach_batch(keep_last(&last));
        })?;
        runs.push(Run {
            label: if wasm {
                "Wasm updater state#running_count_and_sum"
            } else {
                "builtin count_and_sum"
            },
            summary,
            results: decode_last(&last)?,
        });
    }
    report(
        "W4",
        &format!("{} users' totals", native.len()),
        args,
        &data,
        &native,
        native_time,
        &runs,
    )
}

/// Build a job with `build` over a fresh state folder and run it until the input is done.
fn job(
    args: &BenchArgs,
    runtime: &Arc<UdfRuntime>,
    workload: &str,
    wasm: bool,
    build: impl FnOnce(&StreamingContext),
) -> anyhow::Result<JobSummary> {
    let state = tempfile::tempdir().context("a temporary state folder")?;
    let name = format!("bench-{workload}-{}", if wasm { "wasm" } else { "builtin" });
    let ctx = StreamingContext::with_runtime(
        &name,
        Duration::from_millis(100),
        &args.udfs.dir,
        runtime.clone(),
    )
    .state_dir(state.path());
    let ctx = match args.partitions {
        Some(n) => ctx.partitions(n),
        None => ctx,
    };
    build(&ctx);
    Ok(ctx.run_until_idle()?)
}

/// A sink gathering every `(key, [count, sum])` record of the run (W3: each window is emitted
/// once).
fn keep_all(
    store: &Arc<Mutex<Results>>,
) -> impl Fn(&SinkBatch<'_>) -> Result<(), String> + Send + Sync + 'static {
    let store = store.clone();
    move |b| {
        let batch = decode(b.partitions)?;
        store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        Ok(())
    }
}

/// A sink keeping the records of the newest batch that has any (W4: the stream is the whole
/// state every batch and the result is the last one). It keeps them as they come and
/// [`decode_last`] reads them once the job is done: decoding 10 k JSON pairs every batch cost
/// the bench ~3.5 ms a batch of work no job needs.
fn keep_last(
    store: &Arc<Mutex<Vec<Batch>>>,
) -> impl Fn(&SinkBatch<'_>) -> Result<(), String> + Send + Sync + 'static {
    let store = store.clone();
    move |b| {
        if b.partitions.iter().any(|p| !p.is_empty()) {
            *store.lock().unwrap_or_else(PoisonError::into_inner) = b.partitions.to_vec();
        }
        Ok(())
    }
}

fn decode_last(store: &Arc<Mutex<Vec<Batch>>>) -> anyhow::Result<Results> {
    let parts = std::mem::take(&mut *store.lock().unwrap_or_else(PoisonError::into_inner));
    decode(&parts).map_err(anyhow::Error::msg)
}

/// `(key, [count, sum])` records.
fn decode(parts: &[Batch]) -> Result<Results, String> {
    let mut batch = Results::new();
    for p in parts {
        for r in p.records() {
            let key = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
            let pair: (i64, i64) = serde_json::from_slice(r.value).map_err(|e| {
                format!(
                    "not a [count, sum] pair: {:?}: {e}",
                    String::from_utf8_lossy(r.value)
                )
            })?;
            batch.insert(key, pair);
        }
    }
    Ok(batch)
}

fn take(store: &Arc<Mutex<Results>>) -> Results {
    std::mem::take(&mut *store.lock().unwrap_or_else(PoisonError::into_inner))
}

fn report(
    workload: &str,
    what: &str,
    args: &BenchArgs,
    data: &Path,
    native: &Results,
    native_time: Duration,
    runs: &[Run],
) -> anyhow::Result<()> {
    for run in runs {
        if run.results != *native {
            let differ: Vec<_> = native
                .iter()
                .filter(|(k, v)| run.results.get(*k) != Some(v))
                .take(5)
                .collect();
            bail!(
                "{workload} with the {}: {} results where the native loop has {}; first differences (native): {differ:?}",
                run.label,
                run.results.len(),
                native.len()
            );
        }
    }
    let native_rate = args.events as f64 / native_time.as_secs_f64();
    println!(
        "{workload} over {} events in {} files ({})",
        args.events,
        args.files,
        data.display()
    );
    println!("  result:     {what}; both runs agree with the native loop exactly");
    for run in runs {
        let s = &run.summary;
        let p = |q| crate::cli::millis(percentile(&s.processing_times, q));
        println!(
            "  sluice:     {:>6.2} M events/s  ({}; {} batches in {:.3} s; batch p50 {} p99 {} max {}; state in RocksDB)",
            s.records_per_second() / 1e6,
            run.label,
            s.batches,
            s.elapsed.as_secs_f64(),
            p(50.0),
            p(99.0),
            p(100.0)
        );
    }
    println!(
        "  native:     {:>6.2} M events/s  (one thread, read + parse + aggregate in a hash map, no engine)",
        native_rate / 1e6
    );
    if let [builtin, wasm] = runs {
        let b = builtin.summary.records_per_second();
        let w = wasm.summary.records_per_second();
        println!(
            "  ratios:     builtin {:.2}× native, Wasm {:.2}× native, Wasm {:.2}× builtin",
            b / native_rate,
            w / native_rate,
            w / b
        );
    }
    Ok(())
}

/// A CSV line's event time, user, event type and cents.
fn parse_line(line: &str) -> anyhow::Result<(i64, &str, &str, i64)> {
    let mut f = line.split(',');
    let (Some(t), Some(user), Some(kind), Some(amount)) = (f.next(), f.next(), f.next(), f.next())
    else {
        bail!("not an event line: {line:?}");
    };
    let cents = match amount.split_once('.') {
        Some((whole, frac)) => whole.parse::<i64>()? * 100 + frac.parse::<i64>()?,
        None => amount.parse::<i64>()? * 100,
    };
    Ok((t.parse()?, user, kind, cents))
}

fn for_each_line(
    path: &Path,
    mut f: impl FnMut(i64, &str, &str, i64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let text = std::fs::read(path)?;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = std::str::from_utf8(line).context("not UTF-8")?;
        let (t, user, kind, cents) = parse_line(line)?;
        f(t, user, kind, cents)?;
    }
    Ok(())
}

/// W3 without the engine: per file (batch) the watermark of the earlier files, late records
/// dropped, windows summed; the windows whose end the final watermark passed.
fn native_w3(data: &Path) -> anyhow::Result<Results> {
    let mut windows: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    let mut max = i64::MIN;
    for file in files(data)? {
        let watermark = max.saturating_sub(DELAY);
        let mut batch_max = max;
        for_each_line(&file, |t, _, kind, cents| {
            if t < watermark {
                return Ok(());
            }
            batch_max = batch_max.max(t);
            let mut s = t.div_euclid(SLIDE) * SLIDE;
            while s + WINDOW > t {
                let w = windows.entry((s, kind.to_string())).or_default();
                w.0 += 1;
                w.1 += cents;
                s -= SLIDE;
            }
            Ok(())
        })?;
        max = batch_max;
    }
    let watermark = max.saturating_sub(DELAY);
    Ok(windows
        .into_iter()
        .filter(|((s, _), _)| s + WINDOW <= watermark)
        .map(|((s, kind), v)| {
            (
                format!(
                    "{{\"start\":{s},\"end\":{},\"key\":\"{kind}\"}}",
                    s + WINDOW
                ),
                v,
            )
        })
        .collect())
}

/// W4 without the engine: count and sum of cents per user over every event.
fn native_w4(data: &Path) -> anyhow::Result<Results> {
    let mut totals: std::collections::HashMap<String, (i64, i64)> = Default::default();
    for file in files(data)? {
        for_each_line(&file, |_, user, _, cents| {
            let user: u32 = user.parse().context("a user id")?;
            let t = totals.entry(user.to_string()).or_default();
            t.0 += 1;
            t.1 += cents;
            Ok(())
        })?;
    }
    Ok(totals.into_iter().collect())
}
