//! A soak of the sandbox's budgets through the real `host run`: 1 000 batches of a guest that
//! goes past every allowance on every call (200 log lines of 8 KiB with 40 fields of 2 KiB,
//! 2 000 metric names, and on every tenth batch an error of 1 MiB). The host's memory stays flat
//! after warm-up, its stderr stays within the per-call budget, and the last batches still run.

use std::time::{Duration, Instant};

use sluice_tests::{JobDir, rss_of};

const BATCHES: usize = 1000;

#[test]
fn a_thousand_batches_at_every_limit_keep_the_host_flat() {
    let job = JobDir::new();
    job.manifest(
        r#"
[job]
name = "soak"
batch_interval = "10ms"
partitions = 1
on_udf_error = "skip_batch"

[[sources]]
name = "in"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "abused"
op = "map_partitions"
input = "in"
udf = "abuser#soak"

[[sinks]]
kind = "print"
input = "abused"
num = 1
"#,
    );
    for i in 0..BATCHES {
        let line = if i % 10 == 5 {
            format!("fail {i:04}")
        } else {
            format!("ok {i:04}")
        };
        job.file(&format!("in/f{i:04}.txt"), line);
    }
    let stderr_path = job.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("a stderr file");
    // A file, not a pipe: nobody reads a pipe while the job runs, and a full one would block it.
    let stdout_path = job.path().join("stdout.log");
    let stdout = std::fs::File::create(&stdout_path).expect("a stdout file");
    let mut child = job
        .command(&["--until-idle"])
        .env("SLUICE_LOG", "warn")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start host run");
    let pid = child.id();
    let started = Instant::now();
    let mut samples: Vec<u64> = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the host") {
            break status;
        }
        if let Some(rss) = rss_of(pid) {
            samples.push(rss);
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the soak did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).expect("read stdout");
    let log = std::fs::read(&stderr_path).expect("read stderr");
    let log_text = String::from_utf8_lossy(&log);
    let tail: String = log_text
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(status.success(), "host run failed: {status}\n{tail}");

    // Every batch ran: the ok ones printed their record, the failing ones were skipped.
    let printed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(printed.len(), BATCHES - BATCHES / 10, "{tail}");
    assert!(
        stdout.contains(&format!("ok {:04}", BATCHES - 1)),
        "the last batch ran"
    );
    let skipped = log_text
        .matches("on_udf_error = \"skip_batch\": the batch's")
        .count();
    assert_eq!(skipped, BATCHES / 10, "{tail}");

    // stderr: at most the guest budget (64 KiB of lines per call) plus a few host lines.
    let bound = BATCHES as u64 * ((64 << 10) + (16 << 10));
    assert!(
        (log.len() as u64) < bound,
        "stderr holds {} bytes, over {bound}",
        log.len()
    );
    assert!(!log.contains(&0x1b) && !log.contains(&b'\r'));
    // Each failing batch's kept error is cut to its bound (4 KiB) before it is logged.
    for line in log_text.lines().filter(|l| l.contains("batch failed")) {
        assert!(
            line.len() < 8 << 10,
            "a failed batch logged {} bytes",
            line.len()
        );
    }

    // Memory: flat after warm-up. Warm-up is the first fifth of the run; after it, no sample
    // may exceed the warm-up's end level by more than 10 %.
    assert!(samples.len() >= 20, "only {} samples", samples.len());
    let warm = samples.len() / 5;
    let mut level: Vec<u64> = samples[warm..warm + samples.len() / 10].to_vec();
    level.sort_unstable();
    let reference = level[level.len() / 2];
    let peak = samples[warm..].iter().copied().max().unwrap_or(0);
    assert!(
        peak as f64 <= reference as f64 * 1.10,
        "RSS grew from {} MiB after warm-up to {} MiB ({} samples: {:?})",
        reference >> 20,
        peak >> 20,
        samples.len(),
        samples.iter().map(|s| s >> 20).collect::<Vec<_>>()
    );
    eprintln!(
        "soak: {BATCHES} batches in {:.1}s, RSS after warm-up {} MiB, peak {} MiB, stderr {} KiB",
        started.elapsed().as_secs_f64(),
        reference >> 20,
        peak >> 20,
        log.len() >> 10
    );
}
