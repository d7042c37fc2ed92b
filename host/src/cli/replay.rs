//! `host replay`: run one recorded batch of a job again as a dry run and print what every
//! stream made of it — a served job's on its host (`host replay JOB --batch T`), or a
//! `host run` job's here (`host replay --manifest job.toml --batch T`). No sink runs, no
//! state is committed, no checkpoint is written; the current UDF versions run.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sluice_host::engine::Core;
use sluice_host::engine::replay::{self, Replayed};
use sluice_host::plan::{self, manifest};
use sluice_host::udf::{UdfDirectory, UdfRuntime};

use super::client::{Client, ClientArgs};

/// `host replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The served job (on the host `--server` names).
    #[arg(required_unless_present = "manifest", conflicts_with = "manifest")]
    pub job: Option<String>,
    /// A `host run` job instead: its manifest (the job must not be running).
    #[arg(long, value_name = "JOB.toml")]
    pub manifest: Option<PathBuf>,
    /// The batch to run again (its id, as in `host status` and the logs).
    #[arg(long, value_name = "ID")]
    pub batch: u64,
    /// Lines shown per stream.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub udfs: super::UdfsArg,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `args`; `runtime` is made only for the local form.
pub fn run(
    args: &ReplayArgs,
    runtime: impl FnOnce() -> anyhow::Result<UdfRuntime>,
) -> anyhow::Result<()> {
    let replayed = match (&args.manifest, &args.job) {
        (Some(path), _) => local(path, args, runtime()?)?,
        (None, Some(job)) => {
            let client = Client::new(&args.client)?;
            let (_, answer) = client
                .call(
                    "POST",
                    &format!(
                        "/api/v1/jobs/{job}/replay?batch={}&limit={}",
                        args.batch, args.limit
                    ),
                    b"",
                )
                .with_context(|| format!("replaying batch {} of job '{job}'", args.batch))?;
            let replayed: Replayed = serde_json::from_value(answer).context(
                "the host's answer is not a replayed batch; is the client as new as the host?",
            )?;
            anyhow::ensure!(
                replayed.format == replay::FORMAT,
                "the host answers in replay format {}, this client reads {}",
                replayed.format,
                replay::FORMAT
            );
            replayed
        }
        (None, None) => anyhow::bail!("name a served job, or a manifest with --manifest"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&replayed)?);
    } else {
        print(&replayed);
    }
    Ok(())
}

/// The local form: plan the manifest against `--udfs` and replay here.
fn local(
    path: &std::path::Path,
    args: &ReplayArgs,
    runtime: UdfRuntime,
) -> anyhow::Result<Replayed> {
    let spec = manifest::load_with(path, None)?;
    let runtime = Arc::new(runtime);
    let udfs = UdfDirectory::new(args.udfs.dir.clone(), &runtime);
    let plan = plan::plan(spec, &udfs, Some(path))?;
    let core = Core::global()?;
    replay::replay(Arc::new(plan), args.batch, core.pool().clone(), args.limit)
        .map_err(|e| anyhow::anyhow!("{e}\n  hint: {}", e.hint()))
}

fn print(r: &Replayed) {
    println!(
        "job '{}', batch {} (time {} ms): {} records in, replayed in {:.1} ms (dry run: no sink ran, nothing committed)",
        r.job, r.batch, r.time, r.records_in, r.ms
    );
    for (spec, hash) in &r.udfs {
        println!("  udf {spec}: component {}", &hash[..hash.len().min(12)]);
    }
    for s in &r.streams {
        let mark = if s.sink { ", written by a sink" } else { "" };
        if !s.active {
            println!(
                "stream '{}' ({}): no batch at this time{mark}",
                s.stream, s.op
            );
            continue;
        }
        println!(
            "stream '{}' ({}): {} records{mark}",
            s.stream, s.op, s.records
        );
        for line in &s.lines {
            println!("  {line}");
        }
        if s.records > s.lines.len() as u64 {
            println!("  … {} more", s.records - s.lines.len() as u64);
        }
    }
}
