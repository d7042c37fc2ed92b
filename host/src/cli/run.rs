//! `host run JOB.toml`: plan a job from its manifest and run it in the foreground.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sluice_host::engine::{Core, CoreConfig, Job, JobHandle, JobOptions, JobSummary, percentile};
use sluice_host::plan::{self, manifest};
use sluice_host::udf::UdfDirectory;
use sluice_host::udf::UdfRuntime;

/// Arguments of `host run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job manifest (TOML). Relative paths in it are relative to its folder.
    #[arg(value_name = "JOB.toml")]
    pub manifest: PathBuf,

    #[command(flatten)]
    pub udfs: super::UdfsArg,

    /// End once every source is exhausted and every batch is done, and exit 0 (Structured
    /// Streaming's available-now trigger): batches run back to back while input is ready.
    #[arg(long)]
    pub until_idle: bool,

    /// Check the manifest and every UDF it names, print the plan, and exit without running.
    #[arg(long)]
    pub check: bool,

    /// Checkpoint to (and resume from) DIR, in place of the manifest's `checkpoint`. A folder
    /// that holds a checkpoint of the job picks it up where it stopped: state restored,
    /// unfinished batches run again with the same input, sources continued.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,

    /// When a receiver's write-ahead log is damaged, keep the records before the damage and go
    /// on (the rest is moved to `wal/<source>/lost/`), instead of refusing to start. Records
    /// after the damage are lost: use it only once the log cannot be restored.
    #[arg(long)]
    pub accept_wal_loss: bool,

    /// Go past sealed batch ID without running it: for a batch that fails the same way on every
    /// restart (a record the job's UDF rejects, with on_udf_error = "fail"). It must be the next
    /// batch to run again (the error names it). Its records produce no output and no state
    /// change; the skip is recorded in the checkpoint metadata, logged and counted
    /// (`sluice_batches_skipped_total`).
    #[arg(long, value_name = "ID")]
    pub skip_batch: Option<u64>,

    /// Move the live state aside and put the newest data checkpoint (verified against its
    /// checksums) in its place before starting; the batches after it run again. For state
    /// found damaged while a batch ran.
    #[arg(long)]
    pub restore_state: bool,
}

pub fn run(args: &RunArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let checkpoint = match &args.checkpoint {
        Some(dir) if dir.is_relative() => Some(std::env::current_dir()?.join(dir)),
        other => other.clone(),
    };
    let mut spec = manifest::load_with(&args.manifest, checkpoint.as_deref())?;
    if args.accept_wal_loss {
        match &mut spec.checkpoint {
            Some(c) => c.accept_wal_loss = true,
            None => anyhow::bail!(
                "--accept-wal-loss: the job has no checkpoint, so no write-ahead log; set `checkpoint` in [job] or pass --checkpoint DIR"
            ),
        }
    }
    let runtime = Arc::new(runtime);
    let udfs = UdfDirectory::new(args.udfs.dir.clone(), &runtime);
    let plan = plan::plan(spec, &udfs, Some(&args.manifest))?;
    if args.check {
        println!(
            "job '{}': {} partitions, batch interval {}",
            plan.name,
            plan.partitions,
            humantime::format_duration(plan.batch_interval)
        );
        for node in &plan.nodes {
            let inputs: Vec<&str> = node.inputs.iter().map(|&i| &*plan.nodes[i].name).collect();
            if inputs.is_empty() {
                println!("  {:<20} {}", node.name, node.op_name);
            } else {
                println!(
                    "  {:<20} {:<16} <- {}",
                    node.name,
                    node.op_name,
                    inputs.join(", ")
                );
            }
        }
        for warning in &plan.warnings {
            println!("  warning: {warning}");
        }
        return Ok(());
    }
    let name = plan.name.clone();
    let core = Core::new(CoreConfig::default())?;
    // Listening before the job starts: a signal that comes while it starts is not lost.
    let signals = Signals::listen(&core);
    let job = Job::start(
        plan,
        JobOptions {
            until_idle: args.until_idle,
            core: Some(core.clone()),
            skip_batch: args.skip_batch,
            restore_state: args.restore_state,
            ..JobOptions::default()
        },
        runtime.registry().clone(),
    )?;
    signals.stop(&core, &name, job.handle());
    let summary = job
        .wait()
        .with_context(|| format!("running {}", args.manifest.display()))?;
    eprintln!("{}", describe(&name, &summary));
    if summary.failed_batches > 0 {
        eprintln!(
            "{} batches failed and were skipped (on_udf_error = \"skip_batch\"); see the log above",
            summary.failed_batches
        );
    }
    Ok(())
}

/// Ctrl-C and SIGTERM for `host run`: the first stops the job gracefully, the second exits at
/// once with status 130. The library never exits; this is the CLI's decision.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Take over Ctrl-C and SIGTERM now (until then they end the process).
    fn listen(core: &Core) -> Self {
        let _entered = core.handle().enter();
        let listen = |kind, what: &str| match tokio::signal::unix::signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for {what}: {e}; it ends the job at once");
                None
            }
        };
        Self {
            interrupt: listen(tokio::signal::unix::SignalKind::interrupt(), "Ctrl-C"),
            terminate: listen(tokio::signal::unix::SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Stop `job` on the first signal; exit 130 on the second.
    fn stop(mut self, core: &Core, job: &str, handle: JobHandle) {
        let job = job.to_string();
        core.handle().spawn(async move {
            let how = self.next().await;
            tracing::info!(%job, "{how}: stopping gracefully after the batches in flight (send it again to exit at once)");
            handle.stop();
            let how = self.next().await;
            tracing::warn!(%job, "{how} again: exiting now without finishing batches in flight");
            std::process::exit(130);
        });
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        async fn on(signal: &mut Option<tokio::signal::unix::Signal>) {
            // `None` from `recv`: the runtime is shutting down; no signal comes any more.
            let got = match signal {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            if !got {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            _ = on(&mut self.interrupt) => "interrupted (Ctrl-C)",
            _ = on(&mut self.terminate) => "terminated (SIGTERM)",
        }
    }
}

/// One line about a finished run.
pub fn describe(job: &str, s: &JobSummary) -> String {
    let p = |q| super::millis(percentile(&s.processing_times, q));
    format!(
        "job '{job}' {}: {} batches, {} records in {:.2} s ({:.0} records/s); batch processing p50 {} p90 {} p99 {} max {}{}{}",
        if s.stopped { "stopped" } else { "finished" },
        s.batches,
        s.records_in,
        s.elapsed.as_secs_f64(),
        s.records_per_second(),
        p(50.0),
        p(90.0),
        p(99.0),
        p(100.0),
        if s.invalid_lines > 0 {
            format!(
                "; {} input lines were not UTF-8 and were skipped",
                s.invalid_lines
            )
        } else {
            String::new()
        },
        if s.late_records > 0 {
            format!(
                "; {} records were later than the watermark and were dropped",
                s.late_records
            )
        } else {
            String::new()
        }
    )
}
