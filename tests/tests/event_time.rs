//! Event-time windows end to end through the `host` binary: CSV events in five files (one per
//! batch), 10 s windows every 5 s, a 5 s watermark, a count per (window, event type). The
//! outputs of the three output modes are compared with the files in `tests/expected/
//! event_time/`; out-of-order input within the watermark gives the windows sorted input gives;
//! a late record is dropped and counted.

use sluice_tests::{JobDir, describe, root};

/// Five batches, in order of event time but for the last record, which is 14 s older than the
/// largest event time of the earlier batches (late once the watermark trails by 5 s).
const SORTED: [&str; 5] = [
    "1000,1,view,0\n2000,1,click,0\n4000,1,view,0\n",
    "6000,1,view,0\n8000,1,view,0\n9000,1,click,0\n",
    "12000,1,click,0\n14000,1,view,0\n",
    "21000,1,view,0\n22000,1,click,0\n",
    "30000,1,view,0\n3000,1,view,0\n",
];

/// The same records, out of order within and across batches, but never by more than the
/// watermark's delay (the record at 1 s comes after one at 4 s, when the watermark is -1 s).
const SHUFFLED: [&str; 5] = [
    "4000,1,view,0\n2000,1,click,0\n",
    "8000,1,view,0\n1000,1,view,0\n9000,1,click,0\n6000,1,view,0\n",
    "14000,1,view,0\n12000,1,click,0\n",
    "22000,1,click,0\n21000,1,view,0\n",
    "3000,1,view,0\n30000,1,view,0\n",
];

fn run(batches: &[&str], mode: &str) -> (JobDir, std::process::Output) {
    let dir = JobDir::new();
    for (i, text) in batches.iter().enumerate() {
        dir.file(&format!("in/b{}.csv", i + 1), text);
    }
    dir.manifest(&format!(
        r#"
[job]
name = "event-time"
batch_interval = "100ms"
partitions = 2

[[sources]]
name = "events"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "typed"
op = "map"
input = "events"
udf = "clickstream#type_amount"

[[streams]]
name = "counts"
op = "event_time_window"
input = "typed"
builtin = "count"
window = "10s"
slide = "5s"
watermark = "5s"
output_mode = "{mode}"

[[sinks]]
kind = "text_files"
input = "counts"
prefix = "out/counts"
format = "jsonl"
"#
    ));
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    (dir, out)
}

/// Each batch's windows as `start end key value` lines sorted by start and key; batches with
/// no output are left out; blocks separated by a blank line.
fn blocks(dir: &JobDir) -> String {
    let mut text = Vec::new();
    for batch in dir.batch_dirs("out/counts") {
        let mut rows: Vec<(i64, String, String)> = Vec::new();
        for part in std::fs::read_dir(&batch).expect("a batch folder") {
            let part = part.expect("an entry").path();
            if !part
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
            {
                continue;
            }
            for line in std::fs::read_to_string(&part).expect("a part file").lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                let start = v["key"]["start"].as_i64().expect("start");
                let key = v["key"]["key"].as_str().expect("key").to_string();
                rows.push((
                    start,
                    key.clone(),
                    format!("{start} {} {key} {}", v["key"]["end"], v["value"]),
                ));
            }
        }
        if rows.is_empty() {
            continue;
        }
        rows.sort();
        text.push(
            rows.into_iter()
                .map(|(_, _, l)| l)
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    text.join("\n\n") + "\n"
}

fn expected(mode: &str) -> String {
    std::fs::read_to_string(root().join(format!("tests/expected/event_time/{mode}.txt")))
        .expect("an expected file")
}

#[test]
fn each_output_mode_writes_what_its_expected_file_says() {
    for mode in ["append", "update", "complete"] {
        let (dir, out) = run(&SORTED, mode);
        assert_eq!(blocks(&dir), expected(mode), "output mode {mode}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if mode == "complete" {
            assert!(!stderr.contains("later than the watermark"), "{stderr}");
        } else {
            // The record at 3 s arrives when the watermark is 17 s: dropped and counted.
            assert!(
                stderr.contains("1 records were later than the watermark and were dropped"),
                "{stderr}"
            );
            assert!(
                stderr.contains("1 records were older than the watermark"),
                "{stderr}"
            );
        }
        assert!(stderr.contains("one last, empty batch"), "{stderr}");
    }
}

#[test]
fn out_of_order_input_within_the_watermark_gives_the_same_windows() {
    let (sorted, _) = run(&SORTED, "append");
    let (shuffled, _) = run(&SHUFFLED, "append");
    assert_eq!(blocks(&shuffled), blocks(&sorted));
    assert_eq!(blocks(&shuffled), expected("append"));
}
