//! `host bench backpressure`: a job with `backpressure = true` under input at `--overload`
//! (default 3) times the rate it can sustain, for `--seconds` (default 60); issue 17's
//! "the rate converges, scheduling delay stays bounded, memory stays bounded, nothing is lost".
//!
//! The job, run in this process on the shared core: an `http` source (`POST /ingest/events` on
//! a free port of 127.0.0.1, a reliable receiver: answered `200` once the records are in the
//! write-ahead log of the job's checkpoint in a temporary folder) → `map` through the test
//! guest `slow#work` (`--guests DIR/slow.wasm`: about a millisecond of work per `slow:` record,
//! on `--partitions` partitions, default 1) → a native sink that counts every record by its
//! sequence number.
//!
//! 1. **Calibration.** The same plan runs batches of records through its executor as a dry run
//!    (no sink, nothing committed) for about two seconds after a warm-up batch: the sustainable
//!    rate is the records divided by their processing time.
//! 2. **Load.** The job starts with `initial_rate` = the offered rate (`--overload` × the
//!    sustainable rate). A client thread offers that rate as a producer would: every 25 ms
//!    the next 25 ms of records become due; it sends what is due in bodies of 25 ms of records,
//!    one request at a time, and on `429` it waits the answer's `Retry-After` and sends the
//!    same body again (a refused body was not taken: `429` comes before the body is read).
//!    Records due but not yet sent wait at the client; only records answered `200` count as
//!    sent. After `--seconds` the client stops and the job runs until it has processed every
//!    acknowledged record, then stops gracefully.
//! 3. **Per batch**, from the job's batch reports (polled every 20 ms): time since the load
//!    started (the batch time, and when the batch finished), the source's rate as set when the
//!    batch finished (its `RateLimiter`, fed with
//!    the same reports as the scheduler's, and checked at the end against the gauge
//!    `sluice_source_rate` the scheduler sets), the offered rate, records, processing time,
//!    scheduling delay, total delay, the records acknowledged to the client and not yet
//!    processed (held by the receiver or in a batch sealed and not finished: an upper bound of
//!    the receiver's buffer), and this process's resident memory. Written to
//!    `--out DIR/backpressure.csv` and drawn with `plotters` into `DIR/backpressure.svg`.
//! 4. **Summary**: offered and sustainable rate; over the last third of the load, the rate
//!    (mean, min, max), the records taken in per second and the scheduling delay (p50, p99,
//!    max); peak memory; and that every acknowledged record was processed exactly once (the
//!    bench fails otherwise).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use plotters::prelude::*;
use sluice_host::batch::Batch;
use sluice_host::engine::executor::{Executor, SealedBatch};
use sluice_host::engine::{BatchReport, Core, Job, JobOptions, percentile};
use sluice_host::metrics::{Registry, SeriesKey};
use sluice_host::plan::spec::{CheckpointSpec, JobSpec, SinkKind, SinkSpec, SourceSpec};
use sluice_host::plan::{self, Handles, SourceKind, StreamSpec};
use sluice_host::sinks::{NativeSink, SinkBatch};
use sluice_host::sources::SourceInput;
use sluice_host::sources::rate::RateLimiter;
use sluice_host::udf::{UdfDirectory, UdfRuntime};

use super::BenchArgs;

/// The job's name, in its log lines and metrics.
const JOB: &str = "backpressure";
/// The source's name: the client posts to `/ingest/events`.
const SOURCE: &str = "events";
/// The native sink's name.
const SINK: &str = "tally";
/// The UDF: about a millisecond of work per `slow:` record.
const UDF: &str = "slow#work";
/// The client's tick: records become due, and a body holds, this much of the offered rate.
const TICK: Duration = Duration::from_millis(25);
/// How long the job may take, after the load, to process what was acknowledged.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// Calibration: processing time to measure after the warm-up batch.
const CALIBRATION: Duration = Duration::from_secs(2);

/// One finished batch, as written to the CSV.
#[derive(Debug, Clone)]
struct Row {
    /// Batch time (when it was sealed), seconds since the load started.
    t: f64,
    /// When it finished (batch time + total delay), seconds since the load started.
    done: f64,
    batch: u64,
    /// The source's rate from when this batch finished, records/s.
    rate: f64,
    records: u64,
    processing_ms: f64,
    scheduling_delay_ms: f64,
    total_delay_ms: f64,
    /// Acknowledged to the client and not yet processed, when the report was read.
    buffered: u64,
    /// This process's resident memory when the report was read, MiB.
    rss_mib: f64,
}

const CSV_HEADER: &str = "t_s,done_s,batch,rate,offered,records,processing_ms,scheduling_delay_ms,total_delay_ms,buffered,rss_mib";

/// What the client did.
#[derive(Debug, Default)]
struct ClientStats {
    /// Requests answered `200`.
    accepted: u64,
    /// Requests answered `429`.
    refused: u64,
    /// Requests cut off with no answer (a refusal that closed the connection before the
    /// answer could be read): sent again like a `429`.
    reset: u64,
    /// Records due by the end of the load that were never sent.
    unsent: u64,
}

pub fn run(args: &BenchArgs, runtime: UdfRuntime) -> anyhow::Result<()> {
    let seconds = args.seconds.unwrap_or(60);
    ensure!(
        seconds >= 3,
        "--seconds must be at least 3: the summary looks at the last third of the load"
    );
    ensure!(
        args.overload > 1.0 && args.overload.is_finite(),
        "--overload must be above 1 (it is {}): the input must be more than the job sustains",
        args.overload
    );
    ensure!(
        args.interval >= Duration::from_millis(50) && args.interval <= Duration::from_secs(10),
        "--interval must be between 50ms and 10s (it is {:?})",
        args.interval
    );
    let partitions = args.partitions.unwrap_or(1).max(1);
    let guest = args.guests.join("slow.wasm");
    ensure!(
        guest.is_file(),
        "no {}: build the test guests with `cargo xtask udfs --tests`, or point --guests at the folder that holds slow.wasm",
        guest.display()
    );
    let out = args.out.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        home.join(".cache/sluice/bench/backpressure")
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let runtime = Arc::new(runtime);
    let root = tempfile::tempdir().context("a temporary folder")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("a free port on 127.0.0.1")?
        .port();
    let spec = |initial_rate| job_spec(args.interval, partitions, port, root.path(), initial_rate);
    let udfs = UdfDirectory::new(args.guests.clone(), &runtime);

    // 1. The sustainable rate.
    let calibration = plan::plan_with(spec(None), sink_handles(|_| Ok(())), &udfs, None)?;
    let measured = calibrate(calibration, args.interval)?;
    let sustainable = measured.best;
    let offered = (sustainable * args.overload).round().max(1.0) as u64;
    let body = usize::try_from((offered as f64 * TICK.as_secs_f64()).ceil() as u64)?.max(1);
    println!(
        "backpressure: {seconds} s of HTTP input at {:.1}× the sustainable rate; batch interval {}, {partitions} partition{}, {UDF} ({})",
        args.overload,
        crate::cli::millis(args.interval),
        if partitions == 1 { "" } else { "s" },
        guest.display()
    );
    println!(
        "  sustainable rate: {sustainable:.0} records/s (the fastest of {} calibration batches through the job's executor; all together {} records in {:.2} s: {:.0} records/s)",
        measured.batches,
        measured.records,
        measured.time.as_secs_f64(),
        measured.mean
    );
    println!(
        "  offered rate:     {offered} records/s, in bodies of {body} records (25 ms), one request at a time; initial_rate = {offered}"
    );

    // 2. The job, and the client.
    let tally = Arc::new(Tally::default());
    let handles = {
        let tally = tally.clone();
        sink_handles(move |b| tally.add(b))
    };
    let planned = plan::plan_with(spec(Some(offered)), handles, &udfs, None)?;
    let registry = runtime.registry().clone();
    let job =
        Job::start(planned, JobOptions::default(), registry.clone()).context("starting the job")?;
    let handle = job.handle();
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let load = Duration::from_secs(seconds);
    let started = Instant::now();
    let start_ms = sluice_host::sources::now_ms();
    let client = {
        let (acked, done) = (acked.clone(), done.clone());
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || {
                let result = offer(port, offered, body, load, &acked);
                done.store(true, Ordering::Release);
                result
            })
            .context("starting the client thread")?
    };

    // 3. Per batch.
    let mut limiter = RateLimiter::new(None, true, Some(offered), args.interval);
    let mut rows: Vec<Row> = Vec::new();
    let mut last_id = 0u64;
    let mut drain_deadline = None;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        for report in reports_after(&handle, last_id) {
            last_id = report.id;
            if let Some(error) = &report.error {
                handle.abort();
                bail!("batch {} failed: {error}", report.id);
            }
            rows.push(row(
                &report,
                &mut limiter,
                start_ms,
                acked.load(Ordering::Acquire),
                tally.processed(),
            ));
        }
        if !done.load(Ordering::Acquire) {
            continue;
        }
        let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_LIMIT);
        if tally.processed() >= acked.load(Ordering::Acquire) {
            break;
        }
        if Instant::now() > deadline {
            handle.abort();
            bail!(
                "the job did not process the {} acknowledged records within {} s of the end of the load ({} processed)",
                acked.load(Ordering::Acquire),
                DRAIN_LIMIT.as_secs(),
                tally.processed()
            );
        }
    }
    let stats = client
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))??;
    let elapsed = started.elapsed();
    job.stop();
    let summary = job.wait().context("the job")?;
    for report in reports_after(&handle, last_id) {
        let processed = tally.processed();
        rows.push(row(&report, &mut limiter, start_ms, processed, processed));
    }
    let gauge = registry.gauge(&SeriesKey::new(
        "sluice_source_rate",
        &[("tenant", "local"), ("job", JOB), ("source", SOURCE)],
    ));
    ensure!(
        gauge == limiter.rate(),
        "the rate followed here ({:?}) is not the scheduler's (sluice_source_rate = {gauge:?}): the bench no longer feeds its limiter as the scheduler does",
        limiter.rate()
    );

    // Nothing lost, nothing twice.
    let acked = acked.load(Ordering::Acquire);
    let (processed, lost, twice, unknown) = tally.check(acked);
    ensure!(
        lost == 0 && twice == 0 && unknown == 0,
        "{acked} records acknowledged, {processed} processed: {lost} lost, {twice} more than once, {unknown} never acknowledged"
    );

    // 4. Files and summary.
    let csv = out.join("backpressure.csv");
    let svg = out.join("backpressure.svg");
    write_csv(&csv, &rows, offered)?;
    draw(&svg, &rows, offered, sustainable, seconds, args.interval)?;
    summarize(
        &rows,
        seconds,
        offered,
        sustainable,
        args.interval,
        &stats,
        acked,
        processed,
    );
    println!(
        "  ran {:.1} s ({} batches, {} records through the job); wrote {} and {}",
        elapsed.as_secs_f64(),
        summary.batches,
        summary.records_in,
        csv.display(),
        svg.display()
    );
    Ok(())
}

/// The job: `events` (http, backpressure) → `worked` (map `slow#work`) → the native sink.
fn job_spec(
    interval: Duration,
    partitions: usize,
    port: u16,
    root: &Path,
    initial_rate: Option<u64>,
) -> JobSpec {
    let mut spec = JobSpec::new(JOB, interval);
    spec.partitions = partitions;
    spec.backpressure = true;
    spec.checkpoint = Some(CheckpointSpec::new(root.join("checkpoint")));
    spec.sources.push(SourceSpec {
        name: SOURCE.into(),
        kind: SourceKind::Http {
            address: format!("127.0.0.1:{port}"),
            max_request_bytes: plan::spec::DEFAULT_MAX_REQUEST_BYTES,
            header_timeout: None,
            body_timeout: None,
            max_connections: None,
            max_inflight_bytes: None,
        },
        line: None,
        max_rate: None,
        initial_rate,
    });
    let mut worked = StreamSpec::new("worked", "map", vec![SOURCE.into()]);
    worked.udf = Some(UDF.into());
    spec.streams.push(worked);
    spec.sinks.push(SinkSpec {
        input: "worked".into(),
        kind: SinkKind::Native { name: SINK.into() },
        line: None,
    });
    spec
}

fn sink_handles(
    f: impl Fn(&SinkBatch<'_>) -> Result<(), String> + Send + Sync + 'static,
) -> Handles {
    let mut handles = Handles::default();
    handles
        .sinks
        .insert(SINK.into(), Arc::new(NativeSink(Box::new(f))));
    handles
}

/// Records `slow:<seq>` of `from..to`, one per line.
fn lines_of(from: u64, to: u64) -> String {
    let mut text = String::with_capacity(((to - from) * 15) as usize);
    for seq in from..to {
        let _ = writeln!(text, "slow:{seq:09}");
    }
    text
}

/// What calibration measured.
struct Calibration {
    /// The fastest batch's records per second of processing: the sustainable rate.
    best: f64,
    /// All batches' records per second of processing.
    mean: f64,
    /// Batches measured (the warm-up batch left out).
    batches: u64,
    /// Records in them.
    records: u64,
    /// Their processing time.
    time: Duration,
}

/// Run the plan's executor as a dry run over batches of `slow:` records, each about one
/// interval's worth, for [`CALIBRATION`] of processing after a warm-up batch. The sustainable
/// rate is the fastest batch's: on a machine shared with other work the mean depends on what
/// else runs during those two seconds, and an estimate that is too low would offer less than
/// the intended overload should the machine become quieter during the load.
fn calibrate(plan: plan::Plan, interval: Duration) -> anyhow::Result<Calibration> {
    let core = Core::global()?;
    let plan = Arc::new(plan);
    let mut executor = Executor::new(
        plan.clone(),
        core.pool().clone(),
        Arc::new(Registry::default()),
        None,
    )?
    .dry_run();
    let mut run = |id: u64, n: u64| -> anyhow::Result<Duration> {
        let mut batch = Batch::empty(false);
        for line in lines_of(id * 1_000_000, id * 1_000_000 + n).lines() {
            batch.push(None, line.as_bytes(), 0);
        }
        let report = executor.run(
            SealedBatch {
                id,
                time: i64::try_from(id)?.saturating_mul(1000),
                sealed_at: Instant::now(),
                inputs: vec![SourceInput::Records {
                    records: batch,
                    invalid_lines: 0,
                    wal: None,
                }],
                udfs: plan.udfs.snapshot(),
            },
            None,
        );
        if let Some(error) = report.error {
            bail!("calibration batch {id} failed: {error}");
        }
        executor.take_outputs();
        Ok(report.processing_time.max(Duration::from_micros(1)))
    };
    // Warm-up: instances, caches.
    run(1, 20)?;
    let mut c = Calibration {
        best: 0.0,
        mean: 0.0,
        batches: 0,
        records: 0,
        time: Duration::ZERO,
    };
    let mut n = 50u64;
    while c.time < CALIBRATION || c.batches < 4 {
        let took = run(c.batches + 2, n)?;
        c.best = c.best.max(n as f64 / took.as_secs_f64());
        c.records += n;
        c.time += took;
        c.batches += 1;
        c.mean = c.records as f64 / c.time.as_secs_f64();
        // The next batch: about one interval's worth at the rate so far.
        n = ((c.mean * interval.as_secs_f64()) as u64).clamp(10, 100_000);
    }
    Ok(c)
}

/// Offer `offered` records/s for `load`: every [`TICK`] the next tick's records become due,
/// and what is due goes out in bodies of `body` records, one request at a time; a `429` is
/// waited out (`Retry-After`) and the same body sent again. `acked` counts the records
/// answered `200`, which are always the sequence numbers `0..acked`.
fn offer(
    port: u16,
    offered: u64,
    body: usize,
    load: Duration,
    acked: &AtomicU64,
) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats::default();
    let start = Instant::now();
    let mut next = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= load {
            break;
        }
        // Records due so far, whole ticks only.
        let ticks = (elapsed.as_secs_f64() / TICK.as_secs_f64()).floor() + 1.0;
        let due = (ticks * offered as f64 * TICK.as_secs_f64()) as u64;
        if next >= due {
            let next_tick = TICK.mul_f64(ticks);
            std::thread::sleep(next_tick.saturating_sub(start.elapsed()));
            continue;
        }
        let to = (next + body as u64).min(due);
        let text = lines_of(next, to);
        match post(port, text.as_bytes())? {
            Answer::Accepted(n) => {
                ensure!(
                    n == to - next,
                    "the source accepted {n} of a body of {} records",
                    to - next
                );
                stats.accepted += 1;
                next = to;
                acked.store(next, Ordering::Release);
            }
            Answer::Refused(wait) => {
                stats.refused += 1;
                std::thread::sleep(wait.min(load.saturating_sub(start.elapsed())));
            }
            Answer::Reset => {
                stats.reset += 1;
                std::thread::sleep(
                    Duration::from_secs(1).min(load.saturating_sub(start.elapsed())),
                );
            }
        }
    }
    let due = (load.as_secs_f64() * offered as f64) as u64;
    stats.unsent = due.saturating_sub(next);
    Ok(stats)
}

/// What one request came to.
enum Answer {
    /// `200 {"accepted": n}`.
    Accepted(u64),
    /// `429` (or `503`): send again after this long.
    Refused(Duration),
    /// The connection was closed with no answer read (a refusal before the body was read,
    /// whose answer a reset overtook): nothing was taken; send again.
    Reset,
}

/// `POST /ingest/events` with `body` to 127.0.0.1:`port`, one connection per request.
fn post(port: u16, body: &[u8]) -> anyhow::Result<Answer> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to the job's source on 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "POST /ingest/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A refusal (429, 503) is answered before the body is read, and the connection closed: a
    // write can then fail with a broken pipe or a reset, and the answer still be there.
    let cut = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    };
    match stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
    {
        Err(e) if !cut(&e) => return Err(e).context("sending a request"),
        _ => {}
    }
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Err(e) if cut(&e) && answer.is_empty() => return Ok(Answer::Reset),
        Err(e) if !cut(&e) => return Err(e).context("reading an answer"),
        _ => {}
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    match status {
        200 => {
            let n = rest
                .split("\"accepted\":")
                .nth(1)
                .map(|s| {
                    s.trim_start()
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("a 200 without the records accepted: {rest:?}"))?;
            Ok(Answer::Accepted(n))
        }
        429 | 503 => {
            let seconds = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("retry-after")
                        .then(|| value.trim().parse::<u64>().ok())?
                })
                .unwrap_or(1);
            Ok(Answer::Refused(Duration::from_secs(seconds)))
        }
        other => bail!("the source answered {other}: {rest}"),
    }
}

/// Every record the sink saw, by sequence number.
#[derive(Default)]
struct Tally {
    processed: AtomicU64,
    /// Times each sequence number was seen.
    seen: Mutex<Vec<u8>>,
    /// Records that were not `slow:<seq>`.
    unknown: AtomicU64,
}

impl Tally {
    fn add(&self, batch: &SinkBatch<'_>) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0u64;
        for record in batch.partitions.iter().flat_map(|p| p.records()) {
            n += 1;
            let seq = std::str::from_utf8(record.value)
                .ok()
                .and_then(|l| l.strip_prefix("slow:"))
                .and_then(|s| s.parse::<usize>().ok());
            match seq {
                Some(seq) => {
                    if seq >= seen.len() {
                        seen.resize(seq + 1, 0);
                    }
                    seen[seq] = seen[seq].saturating_add(1);
                }
                None => {
                    self.unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.processed.fetch_add(n, Ordering::Release);
        Ok(())
    }

    fn processed(&self) -> u64 {
        self.processed.load(Ordering::Acquire)
    }

    /// `(processed, lost, seen more than once, not acknowledged)` against records
    /// `0..acked` acknowledged.
    fn check(&self, acked: u64) -> (u64, u64, u64, u64) {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let acked = usize::try_from(acked).unwrap_or(usize::MAX);
        let (mut lost, mut twice, mut unknown) = (0u64, 0u64, self.unknown.load(Ordering::Relaxed));
        for (seq, &count) in seen.iter().enumerate() {
            if seq >= acked {
                unknown += u64::from(count);
            } else if count == 0 {
                lost += 1;
            } else if count > 1 {
                twice += 1;
            }
        }
        lost += acked.saturating_sub(seen.len()) as u64;
        (self.processed(), lost, twice, unknown)
    }
}

/// A report as a row: the limiter fed with it as the scheduler feeds its own.
fn row(
    report: &BatchReport,
    limiter: &mut RateLimiter,
    start_ms: i64,
    acked: u64,
    processed: u64,
) -> Row {
    let records = report
        .operators
        .iter()
        .find(|op| op.stream.as_ref() == SOURCE && op.op == "source")
        .map_or(0, |op| op.records_in);
    if report.error.is_none() {
        limiter.update(
            report.time,
            records,
            report.processing_time,
            report.scheduling_delay,
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let t = (report.time - start_ms) as f64 / 1000.0;
    Row {
        t,
        done: t + report.total_delay.as_secs_f64(),
        batch: report.id,
        rate: limiter.rate().unwrap_or(f64::NAN),
        records,
        processing_ms: ms(report.processing_time),
        scheduling_delay_ms: ms(report.scheduling_delay),
        total_delay_ms: ms(report.total_delay),
        buffered: acked.saturating_sub(processed),
        rss_mib: memory("VmRSS:").unwrap_or(0) as f64 / (1 << 20) as f64,
    }
}

/// The reports after batch `last` that the job keeps.
fn reports_after(handle: &sluice_host::engine::JobHandle, last: u64) -> Vec<BatchReport> {
    handle
        .reports()
        .into_iter()
        .filter(|r| r.id > last)
        .collect()
}

/// A field of `/proc/self/status` in bytes (`VmRSS:`, `VmHWM:`), on Linux.
fn memory(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn write_csv(path: &Path, rows: &[Row], offered: u64) -> anyhow::Result<()> {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for r in rows {
        let _ = writeln!(
            text,
            "{:.3},{:.3},{},{:.1},{offered},{},{:.1},{:.1},{:.1},{},{:.1}",
            r.t,
            r.done,
            r.batch,
            r.rate,
            r.records,
            r.processing_ms,
            r.scheduling_delay_ms,
            r.total_delay_ms,
            r.buffered,
            r.rss_mib
        );
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Four panels over time: rates, delays, records held, memory.
fn draw(
    path: &Path,
    rows: &[Row],
    offered: u64,
    sustainable: f64,
    seconds: u64,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 1200)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, panels) = root.split_vertically(40);
        title.titled(
            &format!(
                "Backpressure: {:.1}× overload for {seconds} s (batch interval {} ms)",
                offered as f64 / sustainable,
                interval.as_millis()
            ),
            ("sans-serif", 22),
        )?;
        let areas = panels.split_evenly((4, 1));
        let t_max = rows
            .iter()
            .map(|r| r.done)
            .fold(seconds as f64, f64::max)
            .ceil();
        let t_min = rows.iter().map(|r| r.t).fold(0.0, f64::min).floor();
        let interval_s = interval.as_secs_f64();
        let max_of = |f: &dyn Fn(&Row) -> f64, floor: f64| {
            // Head room above the lines for the legend.
            rows.iter()
                .map(f)
                .filter(|v| v.is_finite())
                .fold(floor, f64::max)
                * 1.5
        };
        let orange = RGBColor(230, 120, 0);
        let grey = RGBColor(120, 120, 120);
        let green = RGBColor(0, 150, 70);
        let purple = RGBColor(130, 60, 170);

        // Rates.
        let y = max_of(
            &|r| r.rate.max(r.records as f64 / interval_s),
            offered as f64,
        );
        let mut chart = panel(&areas[0], "Source rate", "records/s", t_min..t_max, y)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(t_min, offered as f64), (t_max, offered as f64)],
                8,
                5,
                RED.stroke_width(2),
            ))?
            .label(format!("offered ({offered}/s)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                [(t_min, sustainable), (t_max, sustainable)],
                3,
                4,
                grey.stroke_width(2),
            ))?
            .label(format!("sustainable, calibrated ({sustainable:.0}/s)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.t, r.records as f64 / interval_s)),
                green.stroke_width(1),
            ))?
            .label("taken per batch ÷ interval, at batch time")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.stroke_width(1)));
        // A step each time a batch finished and the estimator set the rate.
        let mut steps = vec![(t_min, offered as f64)];
        for r in rows.iter().filter(|r| r.rate.is_finite()) {
            let before = steps.last().map_or(offered as f64, |p| p.1);
            steps.push((r.done, before));
            steps.push((r.done, r.rate));
        }
        chart
            .draw_series(LineSeries::new(steps, BLUE.stroke_width(2)))?
            .label("rate (PID estimator), set as each batch finished")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        legend(&mut chart)?;

        // Delays.
        let y = max_of(
            &|r| r.scheduling_delay_ms.max(r.processing_ms),
            interval_s * 1000.0,
        );
        let mut chart = panel(&areas[1], "Batch delays", "ms", t_min..t_max, y)?;
        let interval_ms = interval_s * 1000.0;
        chart
            .draw_series(DashedLineSeries::new(
                [(t_min, interval_ms), (t_max, interval_ms)],
                3,
                4,
                grey.stroke_width(2),
            ))?
            .label("batch interval")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.t, r.processing_ms)),
                purple.stroke_width(1),
            ))?
            .label("processing time")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], purple.stroke_width(1)));
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.t, r.scheduling_delay_ms)),
                orange.stroke_width(2),
            ))?
            .label("scheduling delay")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(2)));
        legend(&mut chart)?;

        // Records held.
        let y = max_of(&|r| r.buffered as f64, 1.0);
        let mut chart = panel(
            &areas[2],
            "Acknowledged, not yet processed",
            "records",
            t_min..t_max,
            y,
        )?;
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.done, r.buffered as f64)),
                BLUE.stroke_width(2),
            ))?
            .label("at the receiver or in a sealed batch")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        legend(&mut chart)?;

        // Memory.
        let y = max_of(&|r| r.rss_mib, 1.0);
        let mut chart = panel(
            &areas[3],
            "Resident memory of the process",
            "MiB",
            t_min..t_max,
            y,
        )?;
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.done, r.rss_mib)),
                green.stroke_width(2),
            ))?
            .label("RSS")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.stroke_width(2)));
        legend(&mut chart)?;
        root.present()?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    t: std::ops::Range<f64>,
    y_max: f64,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .build_cartesian_2d(t, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since the load started (s)")
        .y_desc(unit)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Mean, min and max.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len().max(1) as f64;
    (
        values.iter().sum::<f64>() / n,
        values.iter().copied().fold(f64::INFINITY, f64::min),
        values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    rows: &[Row],
    seconds: u64,
    offered: u64,
    sustainable: f64,
    interval: Duration,
    stats: &ClientStats,
    acked: u64,
    processed: u64,
) {
    let from = seconds as f64 * 2.0 / 3.0;
    let last: Vec<&Row> = rows
        .iter()
        .filter(|r| r.t >= from && r.t < seconds as f64)
        .collect();
    let rates: Vec<f64> = last
        .iter()
        .map(|r| r.rate)
        .filter(|r| r.is_finite())
        .collect();
    let (mean, min, max) = spread(&rates);
    let taken: u64 = last.iter().map(|r| r.records).sum();
    let window = last.len() as f64 * interval.as_secs_f64();
    let delays: Vec<Duration> = last
        .iter()
        .map(|r| Duration::from_secs_f64(r.scheduling_delay_ms / 1000.0))
        .collect();
    let ms = |q| crate::cli::millis(percentile(&delays, q));
    println!(
        "  rate, last third ({from:.0}–{seconds} s, {} batches): mean {mean:.0}  min {min:.0}  max {max:.0} records/s ({:.2}× sustainable, {:.2}× offered)",
        last.len(),
        mean / sustainable,
        mean / offered as f64
    );
    let busy: f64 = last.iter().map(|r| r.processing_ms / 1000.0).sum();
    println!(
        "  taken in, last third: {:.0} records/s; processed {:.0} records per second of processing (what the job could sustain then)",
        taken as f64 / window.max(1e-9),
        taken as f64 / busy.max(1e-9)
    );
    let peak = rows
        .iter()
        .max_by(|a, b| a.scheduling_delay_ms.total_cmp(&b.scheduling_delay_ms));
    println!(
        "  scheduling delay, last third: p50 {}  p99 {}  max {} (interval {}); peak {:.1}ms at {:.1} s",
        ms(50.0),
        ms(99.0),
        ms(100.0),
        crate::cli::millis(interval),
        peak.map_or(0.0, |r| r.scheduling_delay_ms),
        peak.map_or(0.0, |r| r.t)
    );
    let held_max = rows.iter().map(|r| r.buffered).max().unwrap_or(0);
    let held_last = last.iter().map(|r| r.buffered).max().unwrap_or(0);
    println!(
        "  acknowledged, not yet processed: max {held_max} records, last third max {held_last} (high-water mark: 4 batches' budget)"
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let (rss_mean, rss_min, rss_max) = spread(&last.iter().map(|r| r.rss_mib).collect::<Vec<_>>());
    println!(
        "  memory: peak RSS {:.1} MiB (VmHWM, calibration included); last third {rss_min:.1}–{rss_max:.1} MiB (mean {rss_mean:.1})",
        memory("VmHWM:").map_or(f64::NAN, mib)
    );
    println!(
        "  client: {} requests answered 200, {} answered 429 (waited Retry-After, sent again), {} cut off unanswered; {} records due were never sent (they wait at the client)",
        stats.accepted, stats.refused, stats.reset, stats.unsent
    );
    println!(
        "  nothing lost: {acked} records acknowledged = {processed} processed, each exactly once"
    );
}
