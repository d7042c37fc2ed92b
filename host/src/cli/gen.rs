//! `host gen clickstream`: the benchmark data of WORKLOADS.md.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use sluice_host::workloads;

/// Arguments of `host gen clickstream`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// The folder to write `part-00000.csv …` into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of events N.
    #[arg(long, default_value_t = 2_000_000, value_name = "N")]
    pub events: u64,
    /// Number of files K (each one micro-batch in the benchmarks).
    #[arg(long, default_value_t = 20, value_name = "K")]
    pub files: u64,
    /// Seed of the splitmix64 stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Milliseconds of event time per event.
    #[arg(long, default_value_t = 1, value_name = "MS")]
    pub ms_per_event: i64,
}

pub fn run(args: &GenArgs) -> anyhow::Result<()> {
    if args.files == 0 || args.files > args.events.max(1) {
        bail!("--files must be between 1 and --events ({})", args.events);
    }
    let started = Instant::now();
    eprintln!(
        "gen: {} events (seed {}) into {} files in {}",
        args.events,
        args.seed,
        args.files,
        args.out.display()
    );
    let paths = workloads::write_files(
        &args.out,
        args.events,
        args.files,
        args.seed,
        args.ms_per_event,
    )
    .with_context(|| format!("writing into {}", args.out.display()))?;
    eprintln!(
        "gen: wrote {} files in {:.1?}",
        paths.len(),
        started.elapsed()
    );
    Ok(())
}
