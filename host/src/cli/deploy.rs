//! `host deploy`, `host udfs`, `host rollback`: the UDF registry of a running `host serve`.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;
use sluice_host::server::udfs::valid_udf_name;

use super::client::{Client, ClientArgs};

/// The largest component file read for a deploy (the host applies the tenant's own limit).
const MAX_UPLOAD: u64 = 1 << 30;

/// `host deploy`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The component file.
    pub file: PathBuf,
    /// The name to deploy it under. [default: the file's stem, `text` for `text.wasm`]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Do not deploy yet: run the component beside the bound version in your running jobs on
    /// their next K batches (outputs compared and discarded, state not committed), print what
    /// differs, then `host promote NAME` or `host abort NAME`.
    #[arg(long, value_name = "K")]
    pub canary: Option<u32>,
    /// How long to follow the new version's trial in running jobs (or a canary's batches)
    /// before returning.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: std::time::Duration,
    /// Return once deployed, without following the trial.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `host udfs`'s arguments.
#[derive(Debug, clap::Args)]
pub struct UdfsArgs {
    /// One UDF's versions; all names without it.
    pub name: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `host rollback`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The UDF.
    pub name: String,
    /// The version whose bytes become the newest again. [default: the one before the newest]
    #[arg(long, value_name = "VERSION")]
    pub to: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_udf_name(name),
        "UDF name {name:?} is not valid: names are 1 to 64 letters, digits, `_`, `-` or `.`, without `..`; give another with --name"
    );
    Ok(())
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Upload a component.
pub fn deploy(args: &DeployArgs) -> anyhow::Result<()> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    check_name(&name)?;
    let bytes = sluice_host::files::read_regular_file(&args.file, MAX_UPLOAD)
        .with_context(|| format!("reading the component {}", args.file.display()))?;
    let client = Client::new(&args.client)?;
    if let Some(batches) = args.canary {
        return super::rollout::deploy_canary(&client, &name, &bytes, batches, args.wait);
    }
    let (_, answer) = client
        .call("POST", &format!("/api/v1/udfs/{name}"), &bytes)
        .with_context(|| format!("deploying {} as {name:?}", args.file.display()))?;
    let sha = text(&answer, "sha256");
    println!(
        "{name}: {} (sha256 {}, {} bytes)",
        text(&answer, "message"),
        sha.get(..16).unwrap_or(&sha),
        text(&answer, "size"),
    );
    print_jobs(&answer);
    let rebound = answer
        .get("jobs")
        .and_then(Value::as_array)
        .is_some_and(|jobs| !jobs.is_empty());
    if rebound && !args.no_wait {
        let version = answer.get("version").and_then(Value::as_u64).unwrap_or(0);
        super::rollout::follow_trial(&client, &name, version, args.wait)?;
    }
    Ok(())
}

/// What a deploy did to running jobs (hot reload), one line each.
fn print_jobs(answer: &Value) {
    for line in answer
        .get("jobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        println!("  {line}");
    }
}

/// List names, or one name's versions.
pub fn udfs(args: &UdfsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    match &args.name {
        None => {
            let (_, answer) = client.call("GET", "/api/v1/udfs", b"")?;
            let udfs = answer
                .get("udfs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if udfs.is_empty() {
                println!("no UDFs yet; deploy one with `host deploy UDF.wasm`");
                return Ok(());
            }
            println!("{:<32} {:>7}  VERSIONS", "NAME", "NEWEST");
            for u in udfs {
                let versions: Vec<String> = u
                    .get("versions")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().map(Value::to_string).collect())
                    .unwrap_or_default();
                println!(
                    "{:<32} {:>7}  {}",
                    text(&u, "name"),
                    text(&u, "newest"),
                    versions.join(", ")
                );
            }
        }
        Some(name) => {
            check_name(name)?;
            let (_, answer) = client.call("GET", &format!("/api/v1/udfs/{name}"), b"")?;
            println!(
                "{:>7}  {:<16}  {:>10}  {:<24}  {:<16} PINS",
                "VERSION", "SHA256", "BYTES", "DEPLOYED", "BY"
            );
            for v in answer
                .get("versions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let sha = text(&v, "sha256");
                println!(
                    "{:>7}  {:<16}  {:>10}  {:<24}  {:<16} {}",
                    text(&v, "version"),
                    sha.get(..16).unwrap_or(&sha),
                    text(&v, "size"),
                    text(&v, "deployed_at"),
                    text(&v, "deployed_by"),
                    text(&v, "pins"),
                );
            }
        }
    }
    Ok(())
}

/// Make an older version the newest again.
pub fn rollback(args: &RollbackArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let client = Client::new(&args.client)?;
    let body = match args.to {
        Some(v) => serde_json::json!({ "to": v }).to_string(),
        None => String::new(),
    };
    let (_, answer) = client
        .call(
            "POST",
            &format!("/api/v1/udfs/{}/rollback", args.name),
            body.as_bytes(),
        )
        .with_context(|| format!("rolling back {:?}", args.name))?;
    let sha = text(&answer, "sha256");
    println!(
        "{}: {} (sha256 {})",
        args.name,
        text(&answer, "message"),
        sha.get(..16).unwrap_or(&sha),
    );
    print_jobs(&answer);
    Ok(())
}
