//! Exactly-once under `kill -9`: a stateful job (directory → parse → running count and sum per
//! user → text files) run as a child process with a checkpoint, killed with SIGKILL at random
//! moments (while starting and recovering, while reading a batch's input, while its operators
//! and sinks run, while its state and checkpoint are written), restarted each time, and at the
//! end compared with a run that never failed: no record lost, none counted twice.
//!
//! `SLUICE_CRASH_KILLS` sets how many kills (default 20; the long run in the README uses 200);
//! `SLUICE_CRASH_SEED` replays a run (the seed is printed either way).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tests::{JobDir, Rng, describe, lines_of};

const LINES: usize = 400;
const USERS: u64 = 300;

fn manifest(until_idle_batches: &str) -> String {
    format!(
        r#"[job]
name = "crash-totals"
batch_interval = "100ms"
partitions = 2
checkpoint = "ckpt"
checkpoint_interval = "300ms"
keep_checkpoints = 2
{until_idle_batches}
[[sources]]
name = "events"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "amounts"
op = "map"
input = "events"
udf = "clickstream#user_amount"
key_codec = "number"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "amounts"
builtin = "count_and_sum"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"
"#
    )
}

/// Input files in WORKLOADS.md's clickstream layout, and the totals they must give.
fn write_input(dir: &JobDir, seed: u64, files: usize) -> BTreeMap<u64, (u64, u64)> {
    let mut rng = Rng(seed);
    let mut expected = BTreeMap::new();
    for f in 0..files {
        let mut text = String::new();
        for i in 0..LINES {
            let user = rng.below(USERS);
            let cents = rng.below(10_000);
            text.push_str(&format!(
                "{},{user},purchase,{}.{:02}\n",
                1_700_000_000_000u64 + (f * LINES + i) as u64,
                cents / 100,
                cents % 100
            ));
            let e = expected.entry(user).or_insert((0, 0));
            e.0 += 1;
            e.1 += cents;
        }
        dir.file(&format!("in/part-{f:05}.csv"), text);
    }
    expected
}

/// `(user, [count, sum])` lines of the newest batch folder: the whole state after the last
/// batch (`update_state_by_key` writes every key every batch).
fn final_totals(dir: &JobDir) -> BTreeMap<u64, (u64, u64)> {
    let lines = dir.last_batch_lines("out/totals");
    assert!(!lines.is_empty(), "a finished batch");
    let mut totals = BTreeMap::new();
    for line in lines {
        let line = line.trim_start_matches('(').trim_end_matches("])");
        let (user, rest) = line.split_once(",[").expect("(user,[count,sum])");
        let (count, sum) = rest.split_once(',').expect("count,sum");
        let previous = totals.insert(
            user.parse().expect("a user id"),
            (count.parse().expect("a count"), sum.parse().expect("a sum")),
        );
        assert!(previous.is_none(), "user {user} written twice");
    }
    totals
}

fn command(dir: &JobDir) -> Command {
    let mut cmd = dir.command(&["--until-idle"]);
    cmd.env("SLUICE_LOG", "info,sluice_host::engine=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Where in a run the kill lands: after a log line the run prints at that point, plus a
/// random few milliseconds.
const MOMENTS: [(&str, Option<&str>); 5] = [
    ("while starting, recovering or receiving", None),
    ("while operators and sinks run", Some("input read")),
    (
        "while state and checkpoints are written",
        Some("sinks and state commit"),
    ),
    ("between batches, while sealing", Some("batch done")),
    ("after a data checkpoint", Some("data checkpoint written")),
];

#[test]
fn kill_nine_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let kills: usize = std::env::var("SLUICE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("crash test: seed {seed} (SLUICE_CRASH_SEED={seed} replays it), {kills} kills");

    // The run that never fails.
    let calm = JobDir::new();
    // Enough input that the job is still busy at the last kill: about ten batches a run.
    let files = (kills * 10).max(100);
    let expected = write_input(&calm, seed, files);
    calm.manifest(&manifest(""));
    let out = command(&calm).output().expect("run the job");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(final_totals(&calm), expected, "the run without failures");

    // The same input, killed again and again.
    let dir = JobDir::new();
    write_input(&dir, seed, files);
    dir.manifest(&manifest(""));
    let mut rng = Rng(seed ^ 0xDEAD_BEEF);
    let mut killed = 0;
    let mut finished_early = 0;
    let mut by_moment = [0usize; MOMENTS.len()];
    while killed < kills {
        let moment = rng.below(MOMENTS.len() as u64) as usize;
        // Which occurrence of the line to wait for, and how long after it to kill.
        let occurrence = rng.below(3) + 1;
        let jitter = Duration::from_micros(rng.below(4000));
        let mut child = command(&dir).spawn().expect("start the job");
        let lines = lines_of(&mut child);
        let started = Instant::now();
        let mut seen = 0;
        let mut exited = None;
        let startup_delay = Duration::from_millis(rng.below(80));
        loop {
            if let Some(status) = child.try_wait().expect("poll the job") {
                exited = Some(status);
                break;
            }
            let due = match MOMENTS[moment].1 {
                None => started.elapsed() >= startup_delay,
                Some(marker) => {
                    while let Ok(line) = lines.try_recv() {
                        if line.contains(marker) {
                            seen += 1;
                        }
                    }
                    seen >= occurrence
                }
            };
            if due {
                std::thread::sleep(jitter);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the job neither finished nor reached '{}'",
                MOMENTS[moment].0
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        match exited {
            Some(status) => {
                // The job ran to the end before the moment came; it must have ended well.
                assert!(
                    status.success(),
                    "the job failed after {killed} kills (seed {seed})"
                );
                finished_early += 1;
                if finished_early > 3 {
                    break;
                }
            }
            None => {
                // SIGKILL: no handler runs, nothing is flushed.
                child.kill().expect("kill -9");
                child.wait().expect("reap the job");
                killed += 1;
                by_moment[moment] += 1;
            }
        }
    }
    println!(
        "crash test: {killed} kills ({}), then a run to the end",
        MOMENTS
            .iter()
            .zip(by_moment)
            .map(|((what, _), n)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = command(&dir).output().expect("run the job to the end");
    assert!(out.status.success(), "seed {seed}: {}", describe(&out));
    let totals = final_totals(&dir);
    let lost: Vec<_> = expected
        .keys()
        .filter(|u| !totals.contains_key(u))
        .collect();
    assert!(lost.is_empty(), "seed {seed}: users lost: {lost:?}");
    for (user, want) in &expected {
        assert_eq!(
            totals.get(user),
            Some(want),
            "seed {seed}: user {user}: (count, sum) after {killed} kills vs the calm run"
        );
    }
    assert_eq!(totals, final_totals(&calm), "seed {seed}");
    // keep_checkpoints = 2: older data checkpoints are pruned.
    let data = std::fs::read_dir(dir.path().join("ckpt/data"))
        .expect("list the data checkpoints")
        .count();
    assert!((1..=2).contains(&data), "{data} data checkpoints kept");
    let hidden: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .expect("list out/")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(
        hidden.is_empty(),
        "seed {seed}: half-written batch folders left: {hidden:?}"
    );
}
