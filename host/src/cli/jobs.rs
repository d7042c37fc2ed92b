//! `host submit`, `host jobs`, `host status`, `host stop`: the jobs of a running `host serve`.

use std::path::PathBuf;

use anyhow::Context;
use sluice_host::plan::limits::MAX_MANIFEST_BYTES;
use sluice_host::server::jobs::{JobInfo, valid_job_name};

use super::client::{Client, ClientArgs};

/// `host submit`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The job's manifest (its `[job] name` names the job).
    pub manifest: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `host jobs`'s arguments.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `host status`'s arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The job.
    pub job: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `host stop`'s arguments.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The job.
    pub job: String,
    /// Seal what its sources received and finish every batch before it ends (otherwise the
    /// batches not yet running are left to run again when the job is next submitted).
    #[arg(long)]
    pub graceful: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn check_job(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_job_name(name),
        "job name {name:?} is not valid: 1 to 64 letters, digits, `_`, `-` or `.`, not starting with `.`; `host jobs` lists yours"
    );
    Ok(())
}

fn job_info(value: serde_json::Value) -> anyhow::Result<JobInfo> {
    serde_json::from_value(value)
        .context("the host's answer is not a job; is the client as new as the host?")
}

/// Submit a manifest.
pub fn submit(args: &SubmitArgs) -> anyhow::Result<()> {
    let bytes = sluice_host::files::read_regular_file(&args.manifest, MAX_MANIFEST_BYTES)
        .with_context(|| format!("reading the manifest {}", args.manifest.display()))?;
    let client = Client::new(&args.client)?;
    let (_, answer) = client
        .call("POST", "/api/v1/jobs", &bytes)
        .with_context(|| format!("submitting {}", args.manifest.display()))?;
    let info = job_info(answer)?;
    println!("submitted job '{}': {}", info.name, info.state);
    for source in &info.ingest {
        println!(
            "  ingest: POST {}/api/v1/jobs/{}/ingest/{source} (newline-separated records, your token)",
            args.client.server.trim_end_matches('/'),
            info.name
        );
    }
    Ok(())
}

/// List the tenant's jobs.
pub fn jobs(args: &JobsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let (_, answer) = client
        .call("GET", "/api/v1/jobs", b"")
        .context("listing the jobs")?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let jobs: Vec<JobInfo> = serde_json::from_value(answer)
        .context("the host's answer is not a list of jobs; is the client as new as the host?")?;
    if jobs.is_empty() {
        println!("no jobs; submit one with `host submit JOB.toml`");
        return Ok(());
    }
    println!("{:<24} {:<9} {:>8}  error", "job", "state", "batches");
    for job in jobs {
        println!(
            "{:<24} {:<9} {:>8}  {}",
            job.name,
            job.state.as_str(),
            job.batches_done,
            job.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Show one job.
/// `host logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job.
    pub job: String,
    /// Keep printing new lines until interrupted.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Print a job's recent lines; with `--follow`, poll for new ones.
pub fn logs(args: &LogsArgs) -> anyhow::Result<()> {
    check_job(&args.job)?;
    let client = Client::new(&args.client)?;
    let mut after = 0u64;
    loop {
        let (_, answer) = client
            .call(
                "GET",
                &format!("/api/v1/jobs/{}/logs?after={after}", args.job),
                b"",
            )
            .with_context(|| format!("asking for the logs of job {:?}", args.job))?;
        let lines = answer
            .get("lines")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        for line in &lines {
            if let Some(text) = line.get(1).and_then(serde_json::Value::as_str) {
                println!("{text}");
            }
        }
        after = answer
            .get("next")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(after);
        if !args.follow {
            return Ok(());
        }
        if lines.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    check_job(&args.job)?;
    let client = Client::new(&args.client)?;
    let (_, answer) = client
        .call("GET", &format!("/api/v1/jobs/{}", args.job), b"")
        .with_context(|| format!("asking for job {:?}", args.job))?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let info = job_info(answer)?;
    println!("job:     {}", info.name);
    println!("state:   {}", info.state);
    if let Some(error) = &info.error {
        println!("error:   {error}");
    }
    for source in &info.ingest {
        println!("ingest:  /api/v1/jobs/{}/ingest/{source}", info.name);
    }
    for udf in &info.udfs {
        let version = udf.version.map_or("-".to_string(), |v| v.to_string());
        let hash = udf.hash.get(..12).unwrap_or(&udf.hash);
        println!("udf:     {} version {version} ({hash})", udf.spec);
    }
    for l in &info.lag {
        println!(
            "lag:     {} {}/{}: {} records (next offset {}, end {})",
            l.source, l.lag.topic, l.lag.partition, l.lag.lag, l.lag.next, l.lag.end
        );
    }
    println!("batches: {} finished", info.batches_done);
    for b in &info.batches {
        println!(
            "  batch {} time {} records {} scheduling {}ms processing {}ms total {}ms{}",
            b.id,
            b.time_ms,
            b.records_in,
            b.scheduling_delay_ms,
            b.processing_ms,
            b.total_delay_ms,
            b.error
                .as_deref()
                .map(|e| format!(" FAILED: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Stop a job.
pub fn stop(args: &StopArgs) -> anyhow::Result<()> {
    check_job(&args.job)?;
    let client = Client::new(&args.client)?;
    let query = if args.graceful { "?graceful=true" } else { "" };
    let (_, answer) = client
        .call(
            "POST",
            &format!("/api/v1/jobs/{}/stop{query}", args.job),
            b"",
        )
        .with_context(|| format!("stopping job {:?}", args.job))?;
    let info = job_info(answer)?;
    println!("job '{}': {}", info.name, info.state);
    Ok(())
}
