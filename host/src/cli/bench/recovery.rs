//! `host bench recovery`: how long a job with a large state takes to pick up from its
//! checkpoint, from the start of `host run`'s work (planning, opening the checkpoint and the
//! state) to the first new batch through its sinks.
//!
//! A job (`text#key_number`, then `update_state_by_key` with `builtin = "sum_i64"`) first
//! builds a state of `--keys` keys and stops with a checkpoint. Then it is started again twice
//! with one new file waiting: on its live state (a restart after a stop or a crash), and with
//! the live state deleted, so it is restored from the newest data checkpoint (a lost disk).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_host::engine::{JobOptions, StateSpec, StreamingContext};
use sluice_host::plan::{Builtin, CheckpointSpec, Start};
use sluice_host::udf::UdfRuntime;

use super::BenchArgs;

pub fn run(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let keys = args.keys;
    let root = tempfile::tempdir().context("a temporary folder")?;
    let input = root.path().join("in");
    std::fs::create_dir_all(&input)?;
    eprintln!("bench: writing {keys} keys");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(input.join("0-keys.txt"))?);
        for i in 0..keys {
            writeln!(out, "k{i} 1")?;
        }
        out.flush()?;
    }
    age(&input.join("0-keys.txt"))?;
    let runtime = Arc::new(runtime);
    let checkpoint = root.path().join("ckpt");

    let started = Instant::now();
    let (summary, _) = start(args, &runtime, &input, &checkpoint, true)?;
    eprintln!(
        "bench: state of {keys} keys built in {:.2} s ({} batches)",
        started.elapsed().as_secs_f64(),
        summary
    );
    let mut figures = Vec::new();
    for (n, label) in [(1, "live state"), (2, "restored from the data checkpoint")] {
        let file = input.join(format!("{n}-new.txt"));
        std::fs::write(&file, "k1 1\nnew-key 1\n")?;
        age(&file)?;
        if n == 2 {
            std::fs::remove_dir_all(checkpoint.join("state")).context("deleting the live state")?;
        }
        let (_, first) = start(args, &runtime, &input, &checkpoint, false)?;
        figures.push((label, first));
    }
    println!("recovery with {keys} keys of state (update_state_by_key, sum_i64):");
    for (label, first) in &figures {
        println!(
            "  {:<36} {:>6.0} ms from start to the first new batch through its sinks",
            label,
            first.as_secs_f64() * 1000.0
        );
    }
    println!("  target: ≤ 2000 ms");
    Ok(())
}

/// Start the job; with `build`, run until the input is done, else until its first batch
/// (which holds the new file) is through the sinks. Returns the batches run and the time from
/// the start to that first batch.
fn start(
    args: &BenchArgs,
    runtime: &Arc<UdfRuntime>,
    input: &Path,
    checkpoint: &Path,
    build: bool,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let first: Arc<Mutex<Option<Duration>>> = Arc::default();
    let ctx = StreamingContext::with_runtime(
        "bench-recovery",
        Duration::from_millis(200),
        &args.udfs.dir,
        runtime.clone(),
    )
    .checkpoint(CheckpointSpec::new(checkpoint));
    let ctx = match args.partitions {
        Some(n) => ctx.partitions(n),
        None => ctx,
    };
    let seen = first.clone();
    ctx.directory_stream("lines", input, Start::Earliest, Some(1))
        .map("text#key_number")
        .named("pairs")
        .update_state_by_key(Builtin::SumI64, StateSpec::default())
        .named("totals")
        .foreach_batch(move |_| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(started.elapsed());
            Ok(())
        });
    let job = ctx.start(JobOptions {
        until_idle: build,
        ..JobOptions::default()
    })?;
    if !build {
        while first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        job.stop();
    }
    let summary = job.wait()?;
    let first = first
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unwrap_or_default();
    Ok((summary.batches, first))
}

fn age(path: &Path) -> anyhow::Result<()> {
    let old = std::time::SystemTime::now() - Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(old)?;
    Ok(())
}
