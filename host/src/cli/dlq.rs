//! `host dlq`: the dead letters of a job (records a stream with `on_error = "dead_letter"`
//! isolated), from a running `host serve` or, with `--dir`, from a job run by `host run`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sluice_host::server::dlq::{LetterView, ReplayAnswer, replay};
use sluice_host::state::dead_letters::{DIR_NAME, DeadLetterStore};
use sluice_host::udf::{Role, UdfDirectory, UdfResolver, UdfRuntime};

use super::client::{Client, ClientArgs};

/// `host dlq`'s arguments.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: Option<DlqAction>,
    #[command(flatten)]
    pub list: ListArgs,
}

/// What `host dlq` does besides listing.
#[derive(Debug, clap::Subcommand)]
pub enum DlqAction {
    /// Run the letters not yet replayed through a version of their UDF and show, per letter,
    /// the output or the error again; letters that pass are marked replayed.
    Replay(ReplayArgs),
}

/// Where the letters are: a served job, or a local one (`--dir`).
#[derive(Debug, clap::Args)]
pub struct Place {
    /// A job run by `host run`: the folder holding its `dead-letters/` (the manifest's folder,
    /// or its checkpoint folder when it has one); its tenant is `local`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `host dlq JOB`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The job.
    pub job: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// List at most this many letters.
    #[arg(long, default_value_t = sluice_host::server::dlq::DEFAULT_LIMIT)]
    pub limit: usize,
    #[command(flatten)]
    pub place: Place,
}

/// `host dlq replay JOB`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The job.
    pub job: String,
    /// The version of the letters' UDF to run them through (default: the newest).
    #[arg(long, value_name = "V")]
    pub udf_version: Option<u64>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// With --dir: where the components are (`component#function` loads DIR/component.wasm);
    /// a folder of components has no versions.
    #[arg(long = "udfs", value_name = "DIR", default_value = "dist/udfs")]
    pub udfs: PathBuf,
    #[command(flatten)]
    pub place: Place,
}

/// The tenant of jobs run by `host run`.
const LOCAL_TENANT: &str = "local";

fn local_store(dir: &std::path::Path) -> anyhow::Result<Option<Arc<DeadLetterStore>>> {
    Ok(DeadLetterStore::open_existing(&dir.join(DIR_NAME))?)
}

/// `host dlq`.
pub fn run(
    args: &DlqArgs,
    runtime: impl FnOnce() -> anyhow::Result<UdfRuntime>,
) -> anyhow::Result<()> {
    match &args.action {
        Some(DlqAction::Replay(r)) => replay_letters(r, runtime),
        None => list(&args.list),
    }
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let Some(job) = &args.job else {
        anyhow::bail!("which job? `host dlq JOB` (or `host dlq replay JOB`)");
    };
    let letters: Vec<LetterView> = match &args.place.dir {
        Some(dir) => match local_store(dir)? {
            Some(store) => store
                .list(LOCAL_TENANT, job, args.limit)?
                .iter()
                .map(LetterView::from)
                .collect(),
            None => Vec::new(),
        },
        None => {
            let client = Client::new(&args.place.client)?;
            let (_, answer) = client
                .call(
                    "GET",
                    &format!("/api/v1/jobs/{job}/dead-letters?limit={}", args.limit),
                    b"",
                )
                .with_context(|| format!("listing the dead letters of job '{job}'"))?;
            serde_json::from_value(answer).context(
                "the host's answer is not a list of dead letters; is the client as new as the host?",
            )?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters for job '{job}'");
        return Ok(());
    }
    println!(
        "{:<15} {:<14} {:>4} {:>7}  {:<22} {:<40} record",
        "batch time", "stream", "part", "pos", "udf@version", "error"
    );
    for l in &letters {
        let udf = match l.version {
            Some(v) => format!("{}@{v}", l.udf),
            None => l.udf.clone(),
        };
        let error = format!("{}: {}", l.kind, l.error);
        println!(
            "{:<15} {:<14} {:>4} {:>7}  {:<22} {:<40} {}{}",
            l.batch_time,
            l.stream,
            l.partition,
            l.position,
            udf,
            cut(&error, 40),
            cut(&format!("{:?}", l.value), 40),
            if l.replayed { "  (replayed)" } else { "" }
        );
    }
    Ok(())
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn replay_letters(
    args: &ReplayArgs,
    runtime: impl FnOnce() -> anyhow::Result<UdfRuntime>,
) -> anyhow::Result<()> {
    let job = &args.job;
    let answer: ReplayAnswer = match &args.place.dir {
        Some(dir) => {
            anyhow::ensure!(
                args.udf_version.is_none(),
                "--udf-version needs a served job (a folder of components has no versions); drop it, or point --udfs at the folder with the version to use"
            );
            let Some(store) = local_store(dir)? else {
                println!("no dead letters for job '{job}'");
                return Ok(());
            };
            let runtime = runtime()?;
            let udfs = UdfDirectory::new(&args.udfs, &runtime);
            let find = |component: &str, function: &str| {
                let c = udfs.component(component).map_err(|e| e.to_string())?;
                let f = c
                    .function_for(function, Role::Transform)
                    .map_err(|e| e.to_string())?;
                Ok((f, None))
            };
            replay(&store, LOCAL_TENANT, job, &find)?
        }
        None => {
            let client = Client::new(&args.place.client)?;
            let query = args
                .udf_version
                .map(|v| format!("?version={v}"))
                .unwrap_or_default();
            let (_, answer) = client
                .call(
                    "POST",
                    &format!("/api/v1/jobs/{job}/dead-letters/replay{query}"),
                    b"",
                )
                .with_context(|| format!("replaying the dead letters of job '{job}'"))?;
            serde_json::from_value(answer)
                .context("the host's answer is not a replay; is the client as new as the host?")?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    for r in &answer.letters {
        let l = &r.letter;
        let version = r.version.map(|v| format!("@{v}")).unwrap_or_default();
        match &r.error {
            None => println!(
                "passed  {}{version}  {} p{} #{}  {:?} -> {:?}",
                l.udf, l.stream, l.partition, l.position, l.value, r.output
            ),
            Some(e) => println!(
                "failed  {}{version}  {} p{} #{}  {:?}: {e}",
                l.udf, l.stream, l.partition, l.position, l.value
            ),
        }
    }
    println!(
        "{} passed (marked replayed), {} failed again",
        answer.passed, answer.failed
    );
    Ok(())
}
