//! Partitions larger than one guest call may be given (`--udf-max-call-records`,
//! `--udf-max-call-bytes`) are cut into pieces and the guest called piece by piece, through the
//! real `host` binary: a 16 MB HTTP post of 16 M empty lines (which used to exhaust the guest's
//! 256 MiB in one call and fail its batch on every restart) is processed and survives a
//! restart; every UDF operator gives the same output under a limit of 1 000 records per call
//! as under the defaults; a stateful key that cannot be split fails its batch with a typed
//! error naming the limit, not a panic.

use std::path::Path;

use sluice_tests::{JobDir, describe, free_port, post, wait_for};

/// The empty lines of the post: 16 MB, under the default 16 MiB `max_request_bytes`.
const EMPTY_LINES: usize = 16_000_000;

/// How many lines the `text_files` batch folders under `prefix` (finished ones) hold.
fn line_count(dir: &JobDir, prefix: &str) -> usize {
    dir.batch_dirs(prefix)
        .iter()
        .filter(|d| d.join("_SUCCESS").exists())
        .flat_map(|d| std::fs::read_dir(d).expect("list a batch folder"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .map(|p: std::path::PathBuf| bytecount(&p))
        .sum()
}

fn bytecount(path: &Path) -> usize {
    std::fs::read(path)
        .expect("read a part file")
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

#[test]
fn sixteen_million_empty_lines_in_one_post_are_processed_and_a_restart_does_not_fail() {
    let port = free_port();
    let dir = JobDir::new();
    // One partition: the whole post is one partition, 16 M records (384 MiB of guest memory
    // in one call before calls were bounded).
    dir.manifest(&format!(
        r#"[job]
name = "big"
batch_interval = "300ms"
partitions = 1
checkpoint = "ckpt"

[[sources]]
name = "lines"
kind = "http"
address = "127.0.0.1:{port}"

[[streams]]
name = "upper"
op = "map"
input = "lines"
udf = "text#uppercase"

[[sinks]]
kind = "text_files"
input = "upper"
prefix = "out/upper"
"#
    ));
    let (mut child, log) = dir.spawn_logged(&[]);
    wait_for("the ingest endpoint", || {
        log.lock().expect("log").contains("listening on http://")
    });
    let body = vec![b'\n'; EMPTY_LINES];
    let (status, answer) = post(port, "/ingest/lines", &body).expect("post");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(&EMPTY_LINES.to_string()), "{answer}");
    wait_for("the batch of the post", || {
        let log = log.lock().expect("log");
        assert!(!log.contains("batch failed"), "{log}");
        log.contains(&format!("records={EMPTY_LINES}"))
    });
    // A crash right after: the restart may run the batch again from the log (its finish may
    // not be in the checkpoint yet) and must not fail.
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let log = log.lock().expect("log").clone();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(line_count(&dir, "out/upper"), EMPTY_LINES, "{log}");

    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(line_count(&dir, "out/upper"), EMPTY_LINES);
}

/// Every UDF operator over a partition of many records: map, filter, flat_map, reduce_by_key
/// (whose hot keys have groups over the limit: reduced in pieces, then the pieces),
/// update_state_by_key (cut at key boundaries) and a UDF sink.
const OPERATORS: &str = r#"[job]
name = "ops"
batch_interval = "100ms"
partitions = 2

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "upper"
op = "map"
input = "lines"
udf = "text#uppercase"

[[streams]]
name = "nonempty"
op = "filter"
input = "lines"
udf = "text#non_empty"

[[streams]]
name = "words"
op = "flat_map"
input = "nonempty"
udf = "text#split_words"

[[streams]]
name = "ones"
op = "map"
input = "words"
udf = "text#pair_one"

[[streams]]
name = "counts"
op = "reduce_by_key"
input = "ones"
udf = "aggregates#sum_i64"
value_codec = "number"

[[streams]]
name = "pairs"
op = "map"
input = "nonempty"
udf = "text#key_number"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "pairs"
udf = "state#running_total"

[[sinks]]
kind = "text_files"
input = "upper"
prefix = "out/upper"

[[sinks]]
kind = "text_files"
input = "nonempty"
prefix = "out/nonempty"

[[sinks]]
kind = "text_files"
input = "words"
prefix = "out/words"

[[sinks]]
kind = "text_files"
input = "counts"
prefix = "out/counts"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"

[[sinks]]
kind = "udf"
input = "words"
udf = "sinks#log_batch"
"#;

/// 20 000 lines `k<i % 3000> <i % 7>`, every tenth one empty: per partition ~1 400 values of
/// each digit word (over 1 000: one group alone over the limit) and ~3 values per key.
fn operator_input() -> String {
    (0..20_000)
        .map(|i| {
            if i % 10 == 0 {
                "\n".to_string()
            } else {
                format!("k{} {}\n", i % 3000, i % 7)
            }
        })
        .collect()
}

/// Run the operators job over the input with `args`: each sink's sorted lines, the records
/// the UDF sink saw, and how many calls it took.
fn run_operators(args: &[&str]) -> (Vec<Vec<String>>, u64, usize) {
    let dir = JobDir::new();
    dir.file("in/a.txt", operator_input());
    dir.manifest(OPERATORS);
    let mut cmd = dir.command(&["--until-idle"]);
    cmd.args(args);
    let out = cmd.output().expect("run the host binary");
    assert!(out.status.success(), "{}", describe(&out));
    let outputs = ["upper", "nonempty", "words", "counts", "totals"]
        .iter()
        .map(|s| dir.output_lines(&format!("out/{s}")))
        .collect();
    // sinks#log_batch logs "batch B (time T) partition P: N records" per call.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let calls: Vec<u64> = stderr
        .lines()
        .filter(|l| l.contains("sluice::guest") && l.contains(") partition "))
        .filter_map(|l| {
            let (_, rest) = l.split_once(") partition ")?;
            let (_, rest) = rest.split_once(": ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect();
    (outputs, calls.iter().sum(), calls.len())
}

#[test]
fn every_udf_operator_gives_the_same_output_cut_into_calls_of_a_thousand_records() {
    let (default, seen_default, calls_default) = run_operators(&[]);
    let (bounded, seen_bounded, calls_bounded) = run_operators(&["--udf-max-call-records", "1000"]);
    let names = ["upper", "nonempty", "words", "counts", "totals"];
    for ((name, a), b) in names.iter().zip(&default).zip(&bounded) {
        assert!(!a.is_empty(), "stream {name} wrote nothing");
        assert_eq!(a, b, "stream {name}");
    }
    assert_eq!(default[0].len(), 20_000);
    assert_eq!(default[1].len(), 18_000);
    assert_eq!(default[2].len(), 36_000);
    // The digit words: every one of the 18 000 lines has one, by i % 7.
    let digits: u64 = default[3]
        .iter()
        .filter(|l| l.as_bytes().get(1).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            l.trim_matches(['(', ')'])
                .split_once(',')
                .and_then(|(_, n)| n.parse::<u64>().ok())
                .expect("(word,count)")
        })
        .sum();
    assert_eq!(digits, 18_000, "{:?}", &default[3][..10]);
    // The sink saw every record, in more calls when they are bounded.
    assert_eq!((seen_default, seen_bounded), (36_000, 36_000));
    assert!(
        calls_bounded >= 36 && calls_bounded > calls_default,
        "{calls_default} calls by default, {calls_bounded} bounded"
    );
}

#[test]
fn a_stateful_key_with_more_values_than_a_call_may_take_fails_its_batch_saying_what_to_do() {
    let dir = JobDir::new();
    let lines: String = (0..3000).map(|i| format!("hot {i}\ncold{i} 1\n")).collect();
    dir.file("in/a.txt", lines);
    dir.manifest(
        r#"[job]
name = "hot"
batch_interval = "100ms"
partitions = 1

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "pairs"
op = "map"
input = "lines"
udf = "text#key_number"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "pairs"
udf = "state#running_total"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"
"#,
    );
    let out = dir
        .command(&["--until-idle", "--udf-max-call-records", "1000"])
        .output()
        .expect("run the host binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("key \"hot\" has 3000 new values")
            && stderr.contains("1000 records")
            && stderr.contains("--udf-max-call-records"),
        "{stderr}"
    );
    assert!(
        dir.batch_dirs("out/totals").is_empty(),
        "a failed batch writes nothing"
    );
    // Raised, the same job runs.
    let out = dir
        .command(&["--until-idle", "--udf-max-call-records", "5000"])
        .output()
        .expect("run the host binary");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        dir.output_lines("out/totals")
            .contains(&format!("(hot,{})", 2999 * 3000 / 2))
    );
}
