//! The examples of `examples/` run as the README says, and give the answers it shows.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use sluice_tests::{describe, host_bin, printed_records, root, udf};

fn host(args: &[&str]) -> Command {
    udf("text"); // the components, built once
    let mut cmd = Command::new(host_bin());
    cmd.current_dir(root()).args(args).env("SLUICE_LOG", "warn");
    cmd
}

#[test]
fn wordcount_over_a_directory_prints_the_counts() {
    let out = host(&["run", "examples/wordcount/directory.toml", "--until-idle"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let records = printed_records(&out.stdout);
    for expected in [
        "(the,9)",
        "(batch,4)",
        "(gate,4)",
        "(through,3)",
        "(sluice,1)",
    ] {
        assert!(
            records.contains(&expected.to_string()),
            "{expected} in {}",
            describe(&out)
        );
    }
    assert_eq!(
        records.len(),
        36,
        "one line per distinct word: {}",
        describe(&out)
    );
}

#[test]
fn wordcount_over_a_socket_counts_what_the_server_sends() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let manifest = std::fs::read_to_string(root().join("examples/wordcount/socket.toml")).unwrap();
    assert!(manifest.contains("port = 9999"));
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("socket.toml");
    std::fs::write(
        &job,
        manifest.replace("port = 9999", &format!("port = {port}")),
    )
    .unwrap();
    let udfs = root().join("dist/udfs");
    let child = host(&[
        "run",
        job.to_str().unwrap(),
        "--until-idle",
        "--udfs",
        udfs.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(b"the gate opens\nthe gate closes\n")
        .unwrap();
    drop(peer);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut totals = std::collections::BTreeMap::new();
    for r in printed_records(&out.stdout) {
        let (word, n) = r.trim_matches(['(', ')']).split_once(',').unwrap();
        *totals.entry(word.to_string()).or_insert(0) += n.parse::<i64>().unwrap();
    }
    assert_eq!(
        format!("{totals:?}"),
        r#"{"closes": 1, "gate": 2, "opens": 1, "the": 2}"#
    );
}

/// Purchases and their cents in the sample, computed here from the CSV.
fn sample_purchases(data: &Path) -> (i64, i64) {
    let (mut n, mut cents) = (0, 0);
    for entry in std::fs::read_dir(data).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .lines()
        {
            let fields: Vec<&str> = line.split(',').collect();
            if fields[2] == "purchase" {
                let (whole, frac) = fields[3].split_once('.').unwrap();
                n += 1;
                cents += whole.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
            }
        }
    }
    (n, cents)
}

#[test]
fn the_clickstream_example_counts_and_sums_purchases_per_batch() {
    // Run a copy, so the example's out/ folder lands in a temporary place.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("examples/clickstream/job.toml"),
        dir.path().join("job.toml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    for entry in std::fs::read_dir(root().join("examples/clickstream/data")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("data").join(entry.file_name()),
        )
        .unwrap();
    }
    let udfs = root().join("dist/udfs");
    let out = host(&[
        "run",
        dir.path().join("job.toml").to_str().unwrap(),
        "--until-idle",
        "--udfs",
        udfs.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    // Two print blocks per batch: the purchase count, then the revenue in cents (no record
    // when the batch had no purchases).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let blocks: Vec<i64> = stdout
        .split("Time: ")
        .skip(1)
        .map(|block| block.lines().filter_map(|l| l.parse::<i64>().ok()).sum())
        .collect();
    assert_eq!(blocks.len() % 2, 0, "{}", describe(&out));
    let counts: i64 = blocks.iter().step_by(2).sum();
    let cents: i64 = blocks.iter().skip(1).step_by(2).sum();
    assert_eq!(
        (counts, cents),
        sample_purchases(&root().join("examples/clickstream/data")),
        "{}",
        describe(&out)
    );
    // The spend per user, summed over batches, is the revenue too.
    let mut spend = 0;
    for batch in std::fs::read_dir(dir.path().join("out")).unwrap() {
        for part in std::fs::read_dir(batch.unwrap().path()).unwrap() {
            let part = part.unwrap().path();
            for line in std::fs::read_to_string(&part).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(v["key"].is_u64(), "user ids decode as numbers: {line}");
                spend += v["value"].as_i64().unwrap();
            }
        }
    }
    assert_eq!(spend, cents);
}

#[test]
fn the_w1_bench_agrees_with_the_native_loop() {
    let data = tempfile::tempdir().unwrap();
    let out = host(&[
        "bench",
        "w1",
        "--events",
        "20000",
        "--files",
        "4",
        "--data",
        data.path().join("w1").to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("every batch agrees with the native loop")
            && stdout.contains("M events/s")
            && stdout.contains("p99"),
        "{}",
        describe(&out)
    );
}

#[test]
fn run_check_prints_the_plan_without_running() {
    let out = host(&["run", "--check", "examples/clickstream/job.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("job 'clickstream': 2 partitions, batch interval 1s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("amounts") && stdout.contains("map") && stdout.contains("<- purchases"),
        "{stdout}"
    );
    assert!(!stdout.contains("Time:"), "nothing ran: {stdout}");
    let help = host(&["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--until-idle") && help.contains("Examples:") && help.contains("Exit status"),
        "{help}"
    );
}

#[test]
fn every_example_manifest_checks_out() {
    for manifest in [
        "examples/wordcount/directory.toml",
        "examples/wordcount/socket.toml",
        "examples/clickstream/job.toml",
        "examples/clickstream/windows.toml",
        "examples/clickstream/state.toml",
        "examples/clickstream/ingest.toml",
    ] {
        let out = host(&["run", "--check", manifest]).output().unwrap();
        assert!(out.status.success(), "{manifest}: {}", describe(&out));
    }
}
