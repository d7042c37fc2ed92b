//! Following a deploy's trial, canaries (`host deploy --canary K`), `host promote` and
//! `host abort`.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use super::client::{Client, ClientArgs};

/// How often a trial or canary is polled.
const POLL: Duration = Duration::from_millis(250);

/// `host promote`'s and `host abort`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    /// The UDF whose canary is running.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// After a deploy that rebound running jobs: follow version `version`'s trial until every job
/// passed its probation batches or one rolled it back, for at most `wait`. An error when it
/// was rolled back.
pub fn follow_trial(
    client: &Client,
    name: &str,
    version: u64,
    wait: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let path = format!("/api/v1/udfs/{name}/trial?version={version}");
    let mut last = String::new();
    loop {
        let (_, answer) = client.call("GET", &path, b"")?;
        let jobs = answer
            .get("jobs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(rollback) = answer.get("registry_rollback").filter(|v| !v.is_null()) {
            anyhow::bail!(
                "{}\nthe failing version is no longer the newest; fix it and deploy again (see `host logs JOB` for the failing batch)",
                text(rollback, "message")
            );
        }
        if let Some(job) = jobs.iter().find(|j| !j["rolled_back"].is_null()) {
            let r = &job["rolled_back"];
            // The job went back already; the host rolls the registry back within a moment.
            if started.elapsed() > wait {
                anyhow::bail!(
                    "{name} version {version} failed batch {} of job '{}' within its trial ({}); the job went back to version {}",
                    number(r, "batch"),
                    text(job, "job"),
                    text(r, "error"),
                    text(r, "to_version"),
                );
            }
        } else {
            let passed = jobs
                .iter()
                .all(|j| number(j, "batches_passed") >= number(j, "probation_batches"));
            let status: Vec<String> = jobs
                .iter()
                .map(|j| {
                    format!(
                        "job '{}': {} of {} batches",
                        text(j, "job"),
                        number(j, "batches_passed").min(number(j, "probation_batches")),
                        number(j, "probation_batches")
                    )
                })
                .collect();
            if passed {
                if !jobs.is_empty() {
                    println!("  trial passed: {}", status.join("; "));
                }
                return Ok(());
            }
            let line = status.join("; ");
            if line != last {
                eprintln!("  on trial: {line}");
                last = line;
            }
            if started.elapsed() > wait {
                println!(
                    "  still on trial after {:.0} s ({last}); follow it with `host status JOB`",
                    wait.as_secs_f64()
                );
                return Ok(());
            }
        }
        std::thread::sleep(POLL);
    }
}

/// `host deploy --canary K`: start the canary, wait until every job compared its batches (or
/// `wait` passed), and print what differs.
pub fn deploy_canary(
    client: &Client,
    name: &str,
    bytes: &[u8],
    batches: u32,
    wait: Duration,
) -> anyhow::Result<()> {
    let (_, answer) = client
        .call(
            "POST",
            &format!("/api/v1/udfs/{name}/canary?batches={batches}"),
            bytes,
        )
        .with_context(|| format!("starting a canary of {name:?}"))?;
    println!("{}", text(&answer, "message"));
    let started = Instant::now();
    let report = loop {
        std::thread::sleep(POLL);
        let (_, answer) = client.call("GET", &format!("/api/v1/udfs/{name}/canary"), b"")?;
        let jobs = answer
            .get("jobs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let done = jobs.iter().all(|j| {
            number(&j["report"], "batches_compared") >= number(&j["report"], "batches_wanted")
        });
        if done || started.elapsed() > wait {
            break answer;
        }
    };
    print_canary(&report);
    println!(
        "promote it with `host promote {name}` (it becomes the next version, hot reloaded), or drop it with `host abort {name}`"
    );
    Ok(())
}

/// Print each job's canary findings.
fn print_canary(answer: &Value) {
    for job in answer
        .get("jobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = &job["report"];
        println!(
            "job '{}': {} of {} batches compared, {} identical; records live {}, candidate {}",
            text(job, "job"),
            number(r, "batches_compared"),
            number(r, "batches_wanted"),
            number(r, "batches_identical"),
            number(r, "records_live"),
            number(r, "records_canary"),
        );
        for d in r
            .get("differences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            println!(
                "  batch {} stream '{}': live {} records, candidate {}",
                number(d, "batch"),
                text(d, "stream"),
                number(d, "live"),
                number(d, "canary")
            );
            for (side, key) in [("-", "only_live"), ("+", "only_canary")] {
                for line in d
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    println!("    {side} {line}");
                }
            }
        }
        for e in r
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            println!("  candidate failed: {e}");
        }
    }
}

/// `host promote NAME`.
pub fn promote(args: &CanaryArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let (_, answer) = client.call("POST", &format!("/api/v1/udfs/{}/promote", args.name), b"")?;
    print_canary(&answer);
    println!("{}", text(&answer, "message"));
    Ok(())
}

/// `host abort NAME`.
pub fn abort(args: &CanaryArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let (_, answer) = client.call("POST", &format!("/api/v1/udfs/{}/abort", args.name), b"")?;
    print_canary(&answer);
    println!("{}", text(&answer, "message"));
    Ok(())
}
