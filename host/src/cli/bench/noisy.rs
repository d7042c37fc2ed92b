//! `host bench noisy`: does one tenant's misbehaviour slow another's batches?
//!
//! Starts a real `host serve` (this binary) on a free port of 127.0.0.1 with a temporary data
//! directory and two tenants. Tenant `b` runs a steady job (`text#uppercase` over HTTP ingest,
//! text files out) fed at a constant rate; its batches' processing times are read from the
//! job's status for a baseline period. Then tenant `a` (quotas `udf_timeout = "2s"`,
//! `udf_memory = "64MiB"`) runs, for the same period and over and over: a job calling an
//! infinite loop (`hostile#spin`), a job calling a memory bomb (`hostile#bomb`), each
//! resubmitted when it fails, and uploads of a component crafted to compile slowly (nested
//! loops over many locals, as in tests/tests/udf_compile.rs), refused at the host's
//! `--compile-timeout`. The report: b's batch p50/p99 in both periods, the p99 ratio (target
//! ≤ 1.5×), and b's records acknowledged vs written (must be equal).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::BenchArgs;
use crate::cli::client::{Client, ClientArgs};

const TOKEN_A: &str = "noisy-tenant-a-token-0123456789";
const TOKEN_B: &str = "steady-tenant-b-token-0123456789";
/// Lines per ingest request of tenant b.
const LINES_PER_POST: usize = 200;
/// Requests per second of tenant b.
const POSTS_PER_SEC: u64 = 10;

/// Run the benchmark.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let period = Duration::from_secs(args.seconds.unwrap_or(30).max(1));
    let text = std::fs::read(args.udfs.dir.join("text.wasm"))
        .with_context(|| format!("reading text.wasm from {}", args.udfs.dir.display()))?;
    let hostile = std::fs::read(args.guests.join("hostile.wasm")).with_context(|| {
        format!(
            "reading hostile.wasm from {} (`cargo xtask udfs --tests` builds it)",
            args.guests.display()
        )
    })?;
    let slow = slow_component()?;
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let mut host = Host::start(dir.path())?;
    let a = host.client(TOKEN_A)?;
    let b = host.client(TOKEN_B)?;

    b.call("POST", "/api/v1/udfs/text", &text)?;
    b.call(
        "POST",
        "/api/v1/jobs",
        manifest("steady", "text#uppercase").as_bytes(),
    )?;
    a.call("POST", "/api/v1/udfs/hostile", &hostile)?;

    // Tenant b's feeder runs through both periods.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (b, stop, acked) = (b.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || feed(&b, &stop, &acked))
    };
    let mut seen = BTreeMap::new();
    eprintln!("noisy: baseline, {}s of tenant b alone", period.as_secs());
    collect(&b, period, &mut seen)?;
    let baseline: Vec<u64> = seen.values().copied().collect();

    eprintln!(
        "noisy: noise, {}s of tenant a's loop, memory bomb and slow compiles",
        period.as_secs()
    );
    let noise_stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(NoiseCounts::default());
    let wants = |what: &str| args.noise.iter().any(|n| n == what);
    let jobs: Vec<(&'static str, &'static str)> =
        [("spin", "hostile#spin"), ("bomb", "hostile#bomb")]
            .into_iter()
            .filter(|(job, _)| wants(job))
            .collect();
    let noise = {
        let (a, stop, counts) = (a.clone(), noise_stop.clone(), counts.clone());
        std::thread::spawn(move || run_jobs(&a, &jobs, &stop, &counts))
    };
    let compiling = wants("compile");
    let compiles = {
        let (a, stop, counts) = (a.clone(), noise_stop.clone(), counts.clone());
        std::thread::spawn(move || {
            if compiling {
                upload_slow(&a, &slow, &stop, &counts);
            }
        })
    };
    let mut noisy = BTreeMap::new();
    collect(&b, period, &mut noisy)?;
    noisy.retain(|id, _| !seen.contains_key(id));
    let under_noise: Vec<u64> = noisy.values().copied().collect();
    stop.store(true, Ordering::Release);
    noise_stop.store(true, Ordering::Release);
    let feeder = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feeder thread panicked"))?;
    let _ = noise.join();
    let _ = compiles.join();
    feeder?;

    // Every acknowledged record of b must come out, once.
    let sent = acked.load(Ordering::Acquire);
    let out_dir = dir.path().join("data/tenants/b/jobs/steady/out");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = count_lines(&out_dir);
    while written < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        written = count_lines(&out_dir);
    }
    let status = b.call("GET", "/api/v1/jobs/steady", b"")?.1;
    host.stop();

    let (p50_base, p99_base) = (percentile(&baseline, 50), percentile(&baseline, 99));
    let (p50_noise, p99_noise) = (percentile(&under_noise, 50), percentile(&under_noise, 99));
    let ratio = p99_noise as f64 / p99_base.max(1) as f64;
    println!(
        "noisy-neighbour benchmark ({}s per period, noise: {})",
        period.as_secs(),
        args.noise.join(",")
    );
    println!(
        "tenant b: {} lines/s over HTTP ingest, text#uppercase, text files out",
        LINES_PER_POST as u64 * POSTS_PER_SEC
    );
    println!(
        "tenant a (udf_timeout 2s, udf_memory 64MiB): {} loop runs, {} memory bombs, {} slow compiles refused",
        counts.spins.load(Ordering::Acquire),
        counts.bombs.load(Ordering::Acquire),
        counts.compiles.load(Ordering::Acquire)
    );
    println!(
        "b batch processing, baseline:    p50 {p50_base} ms, p99 {p99_base} ms ({} batches)",
        baseline.len()
    );
    println!(
        "b batch processing, under noise: p50 {p50_noise} ms, p99 {p99_noise} ms ({} batches)",
        under_noise.len()
    );
    println!("p99 ratio: {ratio:.2}x (target <= 1.5x)");
    println!(
        "b records: {sent} in, {written} out ({}); job {}",
        if sent == written { "none lost" } else { "LOST" },
        status["state"].as_str().unwrap_or("?")
    );
    if sent != written {
        bail!("tenant b lost records: {sent} acknowledged, {written} written");
    }
    Ok(())
}

/// What tenant a managed to do.
#[derive(Debug, Default)]
struct NoiseCounts {
    spins: AtomicU64,
    bombs: AtomicU64,
    compiles: AtomicU64,
}

/// A `host serve` child on a free port.
struct Host {
    child: Child,
    url: String,
}

impl Host {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let hash = sluice_host::server::tenants::hash_token;
        let config = dir.join("host.toml");
        std::fs::write(
            &config,
            format!(
                "[[tenants]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n[tenants.quotas]\nudf_timeout = \"2s\"\nudf_memory = \"64MiB\"\n\n[[tenants]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
                hash(TOKEN_A),
                hash(TOKEN_B)
            ),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let exe = std::env::current_exe().context("finding this program")?;
        let child = Command::new(exe)
            .args(["--compile-timeout", "5s", "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .env("SLUICE_COMPONENT_CACHE", dir.join("cache"))
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting host serve")?;
        let mut host = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = host.client(TOKEN_B)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.request("GET", "/api/v1/jobs", b"").is_err() {
            if let Some(status) = host.child.try_wait()? {
                bail!("host serve exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("host serve did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(host)
    }

    fn client(&self, token: &str) -> anyhow::Result<Client> {
        Ok(Client::new(&ClientArgs {
            server: self.url.clone(),
            token: Some(token.to_string()),
            data_dir: None,
        })?)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

fn manifest(name: &str, udf: &str) -> String {
    format!(
        "[job]\nname = \"{name}\"\nbatch_interval = \"200ms\"\n\n[[sources]]\nname = \"lines\"\nkind = \"http\"\naddress = \"127.0.0.1:9\"\n\n[[streams]]\nname = \"m\"\nop = \"map\"\ninput = \"lines\"\nudf = \"{udf}\"\n\n[[sinks]]\nkind = \"text_files\"\ninput = \"m\"\nprefix = \"out/out\"\n"
    )
}

/// Post b's lines at a steady rate until `stop`; counts the acknowledged lines.
fn feed(b: &Client, stop: &AtomicBool, acked: &AtomicU64) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let mut body = String::new();
        for i in 0..LINES_PER_POST {
            body.push_str(&format!(
                "record {n:08} line {i:03} of the steady tenant's stream\n"
            ));
        }
        let answer = b.request("POST", "/api/v1/jobs/steady/ingest/lines", body.as_bytes())?;
        if answer.status != 200 {
            bail!(
                "tenant b's ingest was refused ({}): {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        acked.fetch_add(LINES_PER_POST as u64, Ordering::AcqRel);
        n += 1;
        let next = start + Duration::from_millis(n * 1000 / POSTS_PER_SEC);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}

/// Read b's finished batches (id → processing ms, batches with records only) for `period`.
fn collect(b: &Client, period: Duration, seen: &mut BTreeMap<u64, u64>) -> anyhow::Result<()> {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let (_, status) = b.call("GET", "/api/v1/jobs/steady", b"")?;
        if status["state"] != "running" {
            bail!("tenant b's job is not running: {status}");
        }
        for batch in status["batches"].as_array().into_iter().flatten() {
            let (Some(id), Some(ms), Some(records)) = (
                batch["id"].as_u64(),
                batch["processing_ms"].as_u64(),
                batch["records_in"].as_u64(),
            ) else {
                continue;
            };
            if records > 0 {
                seen.insert(id, ms);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Tenant a's runaway jobs: submitted, fed one record, resubmitted once failed, until `stop`.
fn run_jobs(a: &Client, jobs: &[(&str, &str)], stop: &AtomicBool, counts: &NoiseCounts) {
    while !stop.load(Ordering::Acquire) {
        for &(job, udf) in jobs {
            let count = if job == "spin" {
                &counts.spins
            } else {
                &counts.bombs
            };
            let state = a
                .call("GET", &format!("/api/v1/jobs/{job}"), b"")
                .map(|(_, s)| s["state"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            if state == "running" {
                continue;
            }
            if a.call("POST", "/api/v1/jobs", manifest(job, udf).as_bytes())
                .is_ok()
                && a.call("POST", &format!("/api/v1/jobs/{job}/ingest/lines"), b"go\n")
                    .is_ok()
            {
                count.fetch_add(1, Ordering::AcqRel);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (job, _) in jobs {
        let _ = a.call("POST", &format!("/api/v1/jobs/{job}/stop"), b"");
    }
}

/// Tenant a's slow uploads, one after the other until `stop` (each refused at the host's
/// compile timeout, or by tenant a's deploy rate).
fn upload_slow(a: &Client, slow: &[u8], stop: &AtomicBool, counts: &NoiseCounts) {
    while !stop.load(Ordering::Acquire) {
        match a.request("POST", "/api/v1/udfs/slow", slow) {
            Ok(answer) if answer.status == 400 => {
                counts.compiles.fetch_add(1, Ordering::AcqRel);
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A component that takes about half a minute to compile (tests/tests/udf_compile.rs measures
/// it): 500 locals × 2000 nested loops.
fn slow_component() -> anyhow::Result<Vec<u8>> {
    sluice_host::workloads::slow_compile::nested_loops(500, 2000)
        .context("generating the slow component")
}

/// Lines in the whole batches (`_SUCCESS`) under `out`.
fn count_lines(out: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(out) else {
        return 0;
    };
    let mut n = 0;
    for batch in entries.filter_map(Result::ok).map(|e| e.path()) {
        if !batch.join("_SUCCESS").exists() {
            continue;
        }
        for part in std::fs::read_dir(&batch)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p: &PathBuf| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
            })
        {
            n += std::fs::read(&part)
                .map(|bytes| bytes.iter().filter(|&&c| c == b'\n').count() as u64)
                .unwrap_or(0);
        }
    }
    n
}

/// The `p`th percentile of `values` (nearest rank), 0 for none.
fn percentile(values: &[u64], p: usize) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}
