//! Command-line parsing and the subcommands of `host`.

mod bench;
mod call;
mod check;
mod client;
mod deploy;
mod dlq;
mod r#gen;
mod jobs;
mod new;
mod producers;
mod records;
mod replay;
mod rollout;
mod run;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_host::config::ByteSize;
use sluice_host::metrics::Registry;
use sluice_host::udf::{RuntimeConfig, UdfRuntime};

const ABOUT: &str =
    "Sluice: micro-batch stream processing where every UDF is a sandboxed WebAssembly component";

const LONG_ABOUT: &str = "\
Sluice: micro-batch stream processing where every UDF is a sandboxed WebAssembly component.

A job owner describes sources, a graph of DStream operators and sinks in a TOML manifest and runs
it with `host run JOB.toml`. A UDF author writes plain Rust functions with the sluice-guest SDK,
builds them into a component (`cargo xtask udfs`), checks it with `host check` and tries it with
`host call`.";

/// The `host` command line.
#[derive(Debug, Parser)]
#[command(name = "host", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Log filter: a level (`info`, `debug`) or per-target directives such as
    /// `info,sluice::guest=debug`. Guest logs use the target `sluice::guest`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    pub log: String,

    /// Where compiled components are cached by content hash.
    /// [default: ~/.cache/sluice/components]
    #[arg(
        long,
        global = true,
        env = "SLUICE_COMPONENT_CACHE",
        value_name = "DIR"
    )]
    pub component_cache: Option<PathBuf>,

    /// Memory one guest instance may grow to, e.g. `64MiB`.
    #[arg(long, global = true, value_name = "SIZE", default_value = "256MiB")]
    pub udf_memory: ByteSize,

    /// Records one guest call is given at most: a larger partition is cut into pieces, the
    /// guest called once per piece and the results joined (a reducer's group over it is
    /// reduced in pieces, then their results; a key of a stateful updater is never cut, so one
    /// with more new values fails its batch). Keeps every call within --udf-memory.
    #[arg(long, global = true, value_name = "N", default_value = "1000000", value_parser = clap::value_parser!(u64).range(1..))]
    pub udf_max_call_records: u64,

    /// Bytes of keys and values one guest call is given at most, e.g. `32MiB` (with
    /// --udf-max-call-records). A single larger record still gets a call of its own.
    #[arg(long, global = true, value_name = "SIZE", default_value = "32MiB")]
    pub udf_max_call_bytes: ByteSize,

    /// CPU time one guest call may take, e.g. `500ms`, `10s`; or `off`: no deadline, and guest
    /// code compiled without the checks that enforce one (tight loops run up to ~1.5× faster),
    /// for hosts whose UDFs are all trusted: a UDF that never returns then hangs its job.
    #[arg(long, global = true, value_name = "DURATION|off", default_value = "10s", value_parser = parse_timeout)]
    pub udf_timeout: Timeout,

    /// Wall-clock time compiling one component may take, e.g. `30s`, `2m`. Each component is
    /// compiled once (then cached, see --component-cache), in a separate compiler process; one
    /// that takes longer is refused and that process killed, so a component crafted to keep the
    /// compiler busy for minutes costs no more than this. The bundled UDFs take well under a
    /// second; a Python UDF (an 18 MB component with its interpreter) about 15 s on 2 cores.
    #[arg(long, global = true, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub compile_timeout: Duration,

    /// Address space the compiler process may use, e.g. `1GiB`, `512MiB`: the `host` program
    /// itself (~40 MiB), the component, the compiler's working memory and the machine code. The
    /// bundled Rust UDFs need under 70 MiB, a Python UDF (18 MB component) about 500 MiB. A
    /// component that needs more is refused and the host is unharmed: lower this to bound what
    /// a hostile component can cost, raise it for a very large one.
    #[arg(long, global = true, value_name = "SIZE", default_value = "4GiB")]
    pub compile_memory: ByteSize,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job from its manifest in the foreground: seal a batch every interval, run it
    /// through the UDFs, write the sinks. Ctrl-C or SIGTERM stops after the batches in flight.
    #[command(after_help = "\
Examples:
  host run examples/wordcount/directory.toml --until-idle      # read the files there, then exit
  host run examples/wordcount/socket.toml                      # word count over a socket, until Ctrl-C
  host run --check examples/clickstream/job.toml               # validate the job and its UDFs only
  SLUICE_LOG=debug host run job.toml                           # per-operator timings of every batch
  host run examples/clickstream/ingest.toml                    # HTTP ingest with a checkpoint:
                                                               # kill it, run it again, it resumes

Exit status: 0 when the job ends (--until-idle) or is stopped; 1 with every problem listed when
the manifest or a UDF does not check out, or when a batch fails under on_udf_error = \"fail\".")]
    Run(run::RunArgs),

    /// Validate a UDF component and print its world, ABI version and functions.
    #[command(after_help = "\
Examples:
  host check dist/udfs/text.wasm
  host check --json dist/udfs/aggregates.wasm

Exits non-zero, saying why, when the file is not a Sluice component: a core module, a truncated
file, a component of another world or ABI version, or one importing what the host does not give.")]
    Check(check::CheckArgs),

    /// Write a new UDF project that builds as it is: a Rust crate in `udfs/NAME/`, a Python
    /// module in `udfs/python/NAME/` or a JavaScript one in `udfs/js/NAME/`, with one function
    /// of the role.
    #[command(after_help = "\
Examples:
  host new shout                                   # udfs/shout: a Rust map function
  host new totals --lang python --role updater     # udfs/python/totals: a Python updater
  host new sum --lang js --role reducer            # udfs/js/sum: a JavaScript reducer
  cargo xtask udfs --python totals && host check dist/udfs/totals.wasm")]
    New(new::NewArgs),

    /// Call one function of a component on records read from stdin or a file, and print what it
    /// returns: the UDF author's quick loop.
    #[command(after_help = "\
Input formats (--format):
  lines   one value per line (an unkeyed stream); keyed output prints as KEY<TAB>VALUE
  kv      KEY<TAB>VALUE per line (a keyed stream)
  jsonl   {\"key\": \"…\" or null, \"value\": \"…\", \"event_time\": MS} per line

By role:
  transform  prints the output records
  reducer    groups the input by key and prints KEY<TAB>REDUCED per key
  updater    groups the input by key (old state from --state FILE, kv lines) and prints
             `state<TAB>KEY<TAB>STATE`, `removed<TAB>KEY` and `emit<TAB>…` lines
  sink       runs the sink and reports how many records it consumed

Examples:
  echo 'to be or not to be' | host call dist/udfs/text.wasm#split_words
  printf 'a\\t1\\nb\\t2\\na\\t3\\n' | host call --format kv dist/udfs/aggregates.wasm#sum_i64
  host call --input examples/data/events.csv dist/udfs/clickstream.wasm#parse_event --format lines")]
    Call(call::CallArgs),

    /// Generate benchmark data: the clickstream events of WORKLOADS.md, exactly as specified
    /// (splitmix64, Zipf users, 20 % late events), as CSV files `part-00000.csv …`.
    #[command(
        name = "gen-clickstream",
        after_help = "\
Examples:
  host gen-clickstream --out /tmp/clicks                       # 2 M events in 20 files
  host gen-clickstream --out examples/clickstream/data --events 2000 --files 4"
    )]
    GenClickstream(r#gen::GenArgs),

    /// Run a benchmark workload of WORKLOADS.md through the engine and, in the same run, a
    /// native loop over the same data; print events/s, per-batch latency percentiles and the
    /// ratio. The answers must agree exactly. W3 and W4 keep state in RocksDB and run twice:
    /// with the host's builtin reducers and with Wasm UDFs.
    #[command(after_help = "\
Examples:
  host bench w1                          # 2 M events, 20 files (generated once into ~/.cache/sluice/bench)
  host bench w3                          # sliding event-time windows, 30 s / 10 s, watermark 10 s
  host bench w4                          # running count and sum per user (10 k users)
  host bench w1 --events 200000 --files 4 --partitions 4
  host bench backpressure --out docs     # 60 s of HTTP input at 3× what the job sustains: CSV + SVG plot")]
    Bench(bench::BenchArgs),

    /// Run a shared, multi-tenant host: a daemon with a JSON API under /api/v1/ that keeps a
    /// registry of UDFs (and jobs) in its data directory, across restarts and `kill -9`.
    #[command(after_help = "\
Examples:
  host serve                                      # 127.0.0.1:8470, data in ~/.local/share/sluice,
                                                  # one tenant `default` (token in default.token)
  host serve --listen 127.0.0.1:9000 --data-dir /var/lib/sluice --config host.toml

Then, from another shell: host deploy dist/udfs/text.wasm; host udfs; host rollback text")]
    Serve(serve::ServeArgs),

    /// Upload a UDF component to a running host (`host serve`) as the next version of its name.
    #[command(after_help = "\
Examples:
  host deploy dist/udfs/text.wasm                 # as `text`: version 1, 2, … (identical bytes: no-op)
  host deploy build/my_udf.wasm --name words
  host deploy text.wasm --server http://127.0.0.1:9000 --token \"$(cat acme.token)\"
  host deploy text_v3.wasm --name text --canary 5 # compare with the bound version first

A deploy hot reloads your running jobs that call the UDF; the new version is then on trial for
each job's probation_batches (default 3): if it fails one, the job runs that batch again with
the version before, the registry is rolled back, and this command says so and fails.")]
    Deploy(deploy::DeployArgs),

    /// Promote the candidate of a running canary (`host deploy --canary K`): it becomes the
    /// next version and running jobs are hot reloaded to it.
    Promote(rollout::CanaryArgs),

    /// Drop the candidate of a running canary; jobs keep their version.
    Abort(rollout::CanaryArgs),

    /// List the UDFs of a running host, or one UDF's versions.
    Udfs(deploy::UdfsArgs),

    /// Make an older version of a UDF the newest again (deployed anew as the next version).
    Rollback(deploy::RollbackArgs),

    /// Submit a job manifest to a running host (`host serve`): checked, planned against your
    /// UDFs in its registry (`name` or `name@VERSION`), started, and resumed after restarts.
    #[command(after_help = "\
Examples:
  host submit job.toml                            # the job's name is its [job] name
  curl -H \"Authorization: Bearer $SLUICE_TOKEN\" --data-binary @lines.txt \\
       http://127.0.0.1:8470/api/v1/jobs/NAME/ingest/SOURCE   # records for an http source

Paths in the manifest are taken inside the job's folder on the host, and its checkpoint is kept
there whatever the manifest says.")]
    Submit(jobs::SubmitArgs),

    /// List your jobs on a running host.
    Jobs(jobs::JobsArgs),

    /// Show one job: its state, the UDF versions it runs and its last batches.
    Status(jobs::StatusArgs),

    /// Stop a job on a running host; it stays stopped across restarts of the host.
    Stop(jobs::StopArgs),

    /// Print a job's recent log lines on a running host (batches, warnings, its UDFs' logs),
    /// labelled with tenant, job, batch and UDF; `--follow` keeps printing new ones.
    Logs(jobs::LogsArgs),

    /// Run one recorded batch of a stopped job again as a dry run with the current UDF
    /// versions and print each stream's output: no sink runs, nothing is committed.
    #[command(after_help = "\
Examples:
  host replay words --batch 3                     # a served job (stopped or failed), on its host
  host replay --manifest job.toml --batch 3       # a `host run` job with a checkpoint, here")]
    Replay(replay::ReplayArgs),
    /// List a job's dead letters (records a stream with on_error = "dead_letter" isolated), or
    /// replay them through a version of their UDF.
    #[command(after_help = "\
Examples:
  host dlq clicks                                 # time, stream, partition, udf@version, error, record
  host dlq clicks --json
  host dlq replay clicks --udf-version 3          # per letter: the output, or the error again
  host dlq clicks --dir examples/poison           # a job run by `host run` (tenant `local`)")]
    Dlq(dlq::DlqArgs),

    /// Print the SHA-256 of the token read from stdin: what a tenant's `token_sha256` in
    /// `host serve --config` holds.
    #[command(name = "hash-token")]
    HashToken,

    /// Internal: compile one component read from stdin, under the limits the host set, and
    /// write the machine code to stdout. The host runs this; it is not for use by hand.
    #[command(name = "compile-worker", hide = true)]
    CompileWorker,
}

/// Send logs to stderr, filtered by `filter`.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: ignoring the log filter {filter:?} ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        // Each job's lines for `host logs` (kept only under `host serve`).
        .with(sluice_host::server::logs::layer())
        .init();
}

/// Run the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = || make_runtime(&cli);
    match &cli.command {
        // Its exit code is the protocol with the host (see `sluice_host::udf::compiler`).
        Command::CompileWorker => std::process::exit(sluice_host::udf::run_compile_worker()),
        Command::Run(args) => run::run(args, runtime()?),
        Command::Check(args) => check::run(args, &runtime()?),
        Command::New(args) => new::run(args),
        Command::Call(args) => call::run(args, &runtime()?),
        Command::GenClickstream(args) => r#gen::run(args),
        Command::Bench(args) => bench::run(args, runtime()?),
        Command::Serve(args) => serve::run(args, runtime()?),
        Command::Deploy(args) => deploy::deploy(args),
        Command::Udfs(args) => deploy::udfs(args),
        Command::Rollback(args) => deploy::rollback(args),
        Command::Promote(args) => rollout::promote(args),
        Command::Abort(args) => rollout::abort(args),
        Command::Submit(args) => jobs::submit(args),
        Command::Jobs(args) => jobs::jobs(args),
        Command::Status(args) => jobs::status(args),
        Command::Stop(args) => jobs::stop(args),
        Command::Logs(args) => jobs::logs(args),
        Command::Replay(args) => replay::run(args, runtime),
        Command::Dlq(args) => dlq::run(args, runtime),
        Command::HashToken => serve::hash_token(),
    }
}

fn make_runtime(cli: &Cli) -> anyhow::Result<UdfRuntime> {
    let cache_dir = cli.component_cache.clone().or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/sluice/components"))
    });
    // Every component is compiled in a capped child process of this same program.
    let compile_worker = std::env::current_exe().context(
        "finding the path of the `host` program, which compiles components as `host compile-worker`",
    )?;
    let mut config = RuntimeConfig {
        cache_dir,
        compile_worker: Some(compile_worker),
        compile_timeout: cli.compile_timeout,
        compile_memory: cli.compile_memory,
        ..RuntimeConfig::default()
    };
    config.limits.memory = cli.udf_memory;
    config.limits.max_call_records = cli.udf_max_call_records;
    config.limits.max_call_bytes = cli.udf_max_call_bytes;
    match cli.udf_timeout {
        Timeout::After(d) => config.limits.call_timeout = d,
        Timeout::Off => config.interruptible = false,
    }
    UdfRuntime::new(config, Arc::new(Registry::default())).context("starting the UDF runtime")
}

/// `--udf-timeout`: a CPU deadline per guest call, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Interrupt a call after this much time.
    After(Duration),
    /// Never interrupt (guest code compiled without epoch checks).
    Off,
}

fn parse_timeout(text: &str) -> Result<Timeout, String> {
    if text == "off" {
        return Ok(Timeout::Off);
    }
    humantime::parse_duration(text)
        .map(Timeout::After)
        .map_err(|e| format!("{e}; write a duration such as `500ms` or `10s`, or `off`"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as `30s` or `2m`"))
}

/// A duration as milliseconds with one decimal, for humans.
pub fn millis(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

/// `--udfs DIR`, shared by the subcommands that run jobs.
#[derive(Debug, clap::Args)]
pub struct UdfsArg {
    /// Where UDF components are: `component#function` loads `DIR/component.wasm`.
    #[arg(
        long = "udfs",
        value_name = "DIR",
        env = "SLUICE_UDFS",
        default_value = "dist/udfs"
    )]
    pub dir: PathBuf,
}
