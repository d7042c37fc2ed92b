//! Event-time windows end to end through the `host` binary: CSV events in five files (one per
//! batch), 10 s windows every 5 s, a 5 s watermark, a count per (window, event type). The
//! outputs of the three output modes are compared with the files in `tests/expected/
//! event_time/`; out-of-order input within the watermark gives the windows sorted input gives;
//! a late record is dropped and counted; a Wasm reducer over windows that are not a multiple of
//! their slide agrees with a reference model.

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
    let window = format!(
        r#"builtin = "count"
window = "10s"
slide = "5s"
watermark = "5s"
output_mode = "{mode}""#
    );
    run_job(batches, "clickstream#type_amount", &window)
}

/// The files of `batches` (one per batch) through a map by `project`, then an event-time window
/// named `counts` with `window`'s settings, written by a `text_files` sink to `out/counts`.
fn run_job<S: AsRef<str>>(
    batches: &[S],
    project: &str,
    window: &str,
) -> (JobDir, std::process::Output) {
    let dir = JobDir::new();
    for (i, text) in batches.iter().enumerate() {
        dir.file(&format!("in/b{}.csv", i + 1), text.as_ref());
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
udf = "{project}"

[[streams]]
name = "counts"
op = "event_time_window"
input = "typed"
{window}

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

/// One record stamped at the end of time (`i64::MAX`, or a year ahead) is dropped and counted;
/// it never moves the watermark, so every later record still counts and the windows are exactly
/// those of the clean input.
#[test]
fn an_event_time_far_ahead_never_moves_the_watermark() {
    let mut batches: Vec<String> = SORTED.iter().map(|b| b.to_string()).collect();
    batches[1].push_str("9223372036854775807,1,view,0\n");
    batches[2].push_str(&format!("{},1,click,0\n", 14_000 + 366 * 86_400_000_i64));
    let window = r#"builtin = "count"
window = "10s"
slide = "5s"
watermark = "5s"
output_mode = "append""#;
    let (dir, out) = run_job(&batches, "clickstream#type_amount", window);
    assert_eq!(blocks(&dir), expected("append"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("records had an event time more than 1day ahead of the largest seen")
            .count(),
        2,
        "{stderr}"
    );
}

#[test]
fn out_of_order_input_within_the_watermark_gives_the_same_windows() {
    let (sorted, _) = run(&SORTED, "append");
    let (shuffled, _) = run(&SHUFFLED, "append");
    assert_eq!(blocks(&shuffled), blocks(&sorted));
    assert_eq!(blocks(&shuffled), expected("append"));
}

/// A window that is not a multiple of its slide (10 s every 4 s: records fall in two or three
/// windows, panes are 2 s wide), reduced by a Wasm reducer over records in no particular order:
/// complete mode's last batch holds every window, equal to counting each record into every
/// window that holds it.
#[test]
fn a_wasm_reducer_over_uneven_windows_matches_a_reference_model() {
    use std::collections::BTreeMap;
    const WINDOW: i64 = 10_000;
    const SLIDE: i64 = 4_000;
    let kinds = ["view", "click", "purchase"];
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut files = vec![String::new(); 5];
    let mut expected: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for file in files.iter_mut() {
        for _ in 0..60 {
            let t = (next() % 60_000) as i64;
            let kind = kinds[(next() % 3) as usize];
            let cents = (next() % 10_000) as i64;
            file.push_str(&format!(
                "{t},1,{kind},{}.{:02}\n",
                cents / 100,
                cents % 100
            ));
            let mut s = t.div_euclid(SLIDE) * SLIDE;
            while s + WINDOW > t {
                let e = expected.entry((s, kind.to_string())).or_default();
                e.0 += 1;
                e.1 += cents;
                s -= SLIDE;
            }
        }
    }
    let (dir, _) = run_job(
        &files,
        "clickstream#type_count_amount",
        r#"udf = "aggregates#count_and_sum"
window = "10s"
slide = "4s"
watermark = "1h"
output_mode = "complete""#,
    );
    // Complete mode writes every window every batch: the last batch holds them all.
    let mut got: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for line in dir.last_batch_lines("out/counts") {
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        let start = v["key"]["start"].as_i64().expect("start");
        assert_eq!(v["key"]["end"].as_i64(), Some(start + WINDOW), "{line}");
        let key = v["key"]["key"].as_str().expect("key").to_string();
        // The stream's values are text, so the sink writes the pair as a JSON string.
        let value = v["value"].as_str().expect("a text value");
        let pair: (i64, i64) = serde_json::from_str(value).expect("[count, sum]");
        got.insert((start, key), pair);
    }
    assert_eq!(got, expected);
}
