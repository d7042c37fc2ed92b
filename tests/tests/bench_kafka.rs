//! `host bench kafka` through the real binary against the tests' Kafka-protocol broker, in a
//! small run (20,000 events in 4 files, one run). Behaviour is asserted, not speed: it
//! succeeds, prints a directory leg and a Kafka leg for W1 and W4, every leg read all the
//! events, and each Kafka leg (Kafka source, transactional Kafka sinks read back
//! `read_committed`) wrote what the directory leg of its workload wrote (nothing lost, nothing
//! twice). A missing `--bootstrap` and a topic holding other records are refused
//! with errors that say what to do.

use std::process::Command;

use sluice_tests::kafka::{Broker, Record};
use sluice_tests::{describe, host_bin, udf};

const EVENTS: u64 = 20_000;
const FILES: u64 = 4;

fn bench(bootstrap: Option<&str>, data: &std::path::Path) -> std::process::Output {
    let udfs = udf("clickstream");
    let udfs = udfs.parent().expect("dist/udfs");
    let mut cmd = Command::new(host_bin());
    cmd.args(["bench", "kafka", "--events"])
        .arg(EVENTS.to_string())
        .arg("--files")
        .arg(FILES.to_string())
        .args(["--runs", "1", "--data"])
        .arg(data)
        .arg("--udfs")
        .arg(udfs);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    cmd.output().expect("run host bench kafka")
}

/// The table's rows: (workload, source, events, written).
fn rows(stdout: &str) -> Vec<(String, String, u64, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with("| W"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 9, "a row of 9 cells: {l:?}");
            (
                cells[0].to_string(),
                cells[2].to_string(),
                cells[3]
                    .parse()
                    .unwrap_or_else(|_| panic!("events in {l:?}")),
                cells[8].to_string(),
            )
        })
        .collect()
}

#[test]
fn kafka_legs_read_every_event_and_write_what_the_directory_legs_write() {
    let broker = Broker::start();
    let data = tempfile::tempdir().unwrap();
    let output = bench(Some(&broker.bootstrap()), &data.path().join("events"));
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("produce:") && stdout.contains("M events/s"),
        "the produce rate is reported:\n{stdout}"
    );
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 4, "two legs of two workloads:\n{stdout}");
    for workload in ["W1", "W4"] {
        let leg = |source: &str| {
            rows.iter()
                .find(|r| r.0 == workload && r.1 == source)
                .unwrap_or_else(|| panic!("no {workload} {source} row in\n{stdout}"))
        };
        let (dir, kafka) = (leg("directory"), leg("kafka"));
        assert_eq!(
            dir.2, EVENTS,
            "{workload}: the directory leg read every event"
        );
        assert_eq!(
            kafka.2, EVENTS,
            "{workload}: the Kafka leg read every event"
        );
        assert_eq!(
            kafka.3, dir.3,
            "{workload}: the Kafka leg wrote what the directory leg wrote"
        );
        assert!(
            stdout.contains(&format!("  {workload}: directory "))
                && stdout.contains("kafka/directory"),
            "{workload}'s ratio is printed:\n{stdout}"
        );
    }
    assert!(
        rows[1].3.contains("purchases") && rows[3].3.contains(&format!("{EVENTS} events")),
        "W1 counts purchases and W4's state counts every event:\n{stdout}"
    );

    // A second run finds the topic full and reuses it.
    let again = bench(Some(&broker.bootstrap()), &data.path().join("events"));
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("not measured (the topic already held"),
        "{}",
        describe(&again)
    );
}

#[test]
fn without_a_broker_or_with_a_topic_of_other_records_it_says_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let output = bench(None, &data.path().join("events"));
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("needs --bootstrap HOST:PORT"),
        "{}",
        describe(&output)
    );

    let broker = Broker::start();
    let topic = format!("sluice-bench-clicks-{EVENTS}-{FILES}");
    broker.create_topic(&topic, 3);
    broker.produce(
        &topic,
        (0..3).map(|partition| Record {
            partition,
            key: None,
            value: b"not the bench's",
            timestamp: None,
        }),
    );
    let output = bench(Some(&broker.bootstrap()), &data.path().join("events"));
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "topic {topic} on {} holds 3 records",
            broker.bootstrap()
        )) && stderr.contains("delete it (or use a fresh broker)"),
        "{}",
        describe(&output)
    );
}
