//! `host bench dead-letters`: what isolating poison records costs. A batch of 100,000 records
//! through `poison#check` (`tests/guests/poison`) under `on_error = "dead_letter"`, once clean
//! and once with 3 poison records (one trap, two guest errors naming their record), in
//! alternating runs; prints each kind's batch processing time (median of the runs) and the
//! difference: the price of the extra calls that narrow the failures down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_host::engine::{Core, CoreConfig, Job, JobOptions, percentile};
use sluice_host::plan::{self, manifest};
use sluice_host::udf::{UdfDirectory, UdfRuntime};

use super::BenchArgs;

/// Records per batch.
const RECORDS: usize = 100_000;
/// Runs of each kind.
const ROUNDS: usize = 10;
/// Record index and its poison.
const POISON: [(usize, &str); 3] = [(12_345, "TRAP"), (50_000, "BAD"), (70_001, "BAD")];

pub fn run(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let udfs = [args.udfs.dir.clone(), PathBuf::from("dist/test-guests")]
        .into_iter()
        .find(|d| d.join("poison.wasm").is_file())
        .context("poison.wasm (tests/guests/poison) is neither in --udfs nor in dist/test-guests: build it with `cargo xtask udfs --tests`")?;
    let root = tempfile::tempdir().context("a temporary folder")?;
    let runtime = Arc::new(runtime);
    let core = Core::new(CoreConfig::default())?;
    let partitions = args
        .partitions
        .unwrap_or_else(sluice_host::plan::spec::default_partitions);
    let (mut clean, mut poisoned) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS * 2 {
        let poison = round % 2 == 1;
        let dir = root.path().join(format!("run-{round}"));
        let (time, letters) = one_run(&dir, poison, partitions, &udfs, &runtime, &core)?;
        if letters != if poison { 3 } else { 0 } {
            bail!(
                "run {round}: {letters} dead letters, expected {}",
                if poison { 3 } else { 0 }
            );
        }
        if poison { &mut poisoned } else { &mut clean }.push(time);
    }
    let median = |v: &[Duration]| percentile(v, 50.0);
    let (c, p) = (median(&clean), median(&poisoned));
    println!(
        "dead letters: one batch of {RECORDS} records through poison#check, {partitions} partitions, {ROUNDS} runs each, alternating"
    );
    println!(
        "  0 poison records: {}  (median; runs {})",
        crate::cli::millis(c),
        list(&clean)
    );
    println!(
        "  3 poison records: {}  (median; runs {}), 3 dead letters each",
        crate::cli::millis(p),
        list(&poisoned)
    );
    println!(
        "  isolation cost:   {} ({:+.0}%)",
        crate::cli::millis(p.saturating_sub(c)),
        (p.as_secs_f64() / c.as_secs_f64().max(1e-9) - 1.0) * 100.0
    );
    Ok(())
}

fn list(v: &[Duration]) -> String {
    v.iter()
        .map(|d| crate::cli::millis(*d))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One job over one file: the processing time of its batch with records, and its letters.
fn one_run(
    dir: &Path,
    poison: bool,
    partitions: usize,
    udfs: &Path,
    runtime: &Arc<UdfRuntime>,
    core: &Arc<Core>,
) -> anyhow::Result<(Duration, u64)> {
    std::fs::create_dir_all(dir.join("in"))?;
    let mut text = String::with_capacity(RECORDS * 12);
    for i in 0..RECORDS {
        text.push_str(&format!("rec-{i}"));
        if poison && let Some((_, word)) = POISON.iter().find(|(p, _)| *p == i) {
            text.push(' ');
            text.push_str(word);
        }
        text.push('\n');
    }
    let file = dir.join("in/records.txt");
    std::fs::write(&file, text)?;
    let old = std::time::SystemTime::now() - Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&file)?
        .set_modified(old)?;
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            "[job]\nname = \"bench-dlq\"\nbatch_interval = \"100ms\"\npartitions = {partitions}\n\n[[sources]]\nname = \"lines\"\nkind = \"directory\"\npath = \"in\"\n\n[[streams]]\nname = \"checked\"\nop = \"map\"\ninput = \"lines\"\nudf = \"poison#check\"\non_error = \"dead_letter\"\n\n[[sinks]]\nkind = \"text_files\"\ninput = \"checked\"\nprefix = \"out/ok\"\n"
        ),
    )?;
    let spec = manifest::load(&path)?;
    let resolver = UdfDirectory::new(udfs.to_path_buf(), runtime);
    let plan = plan::plan(spec, &resolver, Some(&path))?;
    let job = Job::start(
        plan,
        JobOptions {
            until_idle: true,
            core: Some(core.clone()),
            ..JobOptions::default()
        },
        runtime.registry().clone(),
    )?;
    let summary = job.wait()?;
    if summary.records_in != RECORDS as u64 || summary.failed_batches > 0 {
        bail!(
            "the job read {} records ({} failed batches)",
            summary.records_in,
            summary.failed_batches
        );
    }
    let letters = sluice_host::state::dead_letters::DeadLetterStore::open_existing(
        &dir.join("dead-letters"),
    )?
    .map_or(Ok(0), |s| {
        s.list("local", "bench-dlq", 100).map(|l| l.len() as u64)
    })?;
    let time = summary
        .processing_times
        .iter()
        .max()
        .copied()
        .unwrap_or_default();
    Ok((time, letters))
}
