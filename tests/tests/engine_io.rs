//! Sources, sinks and the job's life through the real `host` binary: a socket peer that goes
//! away and comes back, a directory with half-written and hidden files, `print`'s format,
//! `text_files`' layout, a sink UDF, graceful stop on SIGTERM, early seals.

use std::io::Write;
use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

use sluice_tests::{JobDir, describe, printed_records, wait_for};

const WORDCOUNT: &str = r#"
[[streams]]
name = "words"
op = "flat_map"
input = "lines"
udf = "text#split_words"

[[streams]]
name = "pairs"
op = "map"
input = "words"
udf = "text#pair_one"
value_codec = "number"

[[streams]]
name = "counts"
op = "reduce_by_key"
input = "pairs"
udf = "aggregates#sum_i64"

[[sinks]]
kind = "text_files"
input = "counts"
prefix = "out/counts"
format = "jsonl"
"#;

/// Sum the `{"key": word, "value": n}` lines of every batch into word → count.
fn totals(lines: &[String]) -> std::collections::BTreeMap<String, i64> {
    let mut totals = std::collections::BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *totals
            .entry(v["key"].as_str().unwrap().to_string())
            .or_insert(0) += v["value"].as_i64().unwrap();
    }
    totals
}

fn expect(pairs: &[(&str, i64)]) -> std::collections::BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn socket_source_reconnects_counts_bad_utf8_and_stops_gracefully() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = JobDir::new();
    dir.manifest(&format!(
        "[job]\nname = \"socket-wc\"\nbatch_interval = \"100ms\"\n\n[[sources]]\nname = \"lines\"\nkind = \"socket\"\nhost = \"127.0.0.1\"\nport = {port}\nreconnect_delay = \"100ms\"\n{WORDCOUNT}"
    ));
    let child = dir.spawn(&[]);
    // First connection: two lines, then the peer goes away.
    let (mut first, _) = listener.accept().unwrap();
    first.write_all(b"to be or\nnot to be\n").unwrap();
    drop(first);
    // The receiver comes back; this time a line that is not UTF-8 and one without a newline.
    let (mut second, _) = listener.accept().unwrap();
    second
        .write_all(b"to do\n\xff\xfe oops\nlast words")
        .unwrap();
    drop(second);
    wait_for("every word counted", || {
        totals(&dir.output_lines("out/counts")).get("words") == Some(&1)
    });
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopping gracefully"), "{}", describe(&out));
    assert!(
        stderr.contains("is not UTF-8: skipped and counted"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("1 input lines were not UTF-8"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        totals(&dir.output_lines("out/counts")),
        expect(&[
            ("be", 2),
            ("do", 1),
            ("last", 1),
            ("not", 1),
            ("or", 1),
            ("to", 3),
            ("words", 1)
        ])
    );
}

#[test]
fn socket_source_ends_with_its_connection_under_until_idle_and_seals_early() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = JobDir::new();
    dir.manifest(&format!(
        r#"[job]
name = "early"
batch_interval = "10s"
max_batch_records = 2

[[sources]]
name = "lines"
kind = "socket"
host = "127.0.0.1"
port = {port}

[[streams]]
name = "n"
op = "count"
input = "lines"

[[sinks]]
kind = "text_files"
input = "n"
prefix = "out/n"
"#
    ));
    let child = dir.spawn(&["--until-idle"]);
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(b"1\n2\n3\n4\n5\n").unwrap();
    drop(peer);
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    // With a 10 s interval the job could only end this soon by sealing early.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{}",
        describe(&out)
    );
    let counts: Vec<i64> = dir
        .output_lines("out/n")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 5, "{counts:?}");
    assert!(
        counts.iter().all(|&c| c <= 2),
        "no batch over max_batch_records: {counts:?}"
    );
}

#[test]
fn directory_source_reads_each_file_once_and_never_half() {
    let dir = JobDir::new();
    dir.file("in/old.txt", "old news\n");
    dir.manifest(&format!(
        "[job]\nname = \"dir-wc\"\nbatch_interval = \"100ms\"\n\n[[sources]]\nname = \"lines\"\nkind = \"directory\"\npath = \"in\"\nstart = \"latest\"\n{WORDCOUNT}"
    ));
    let child = dir.spawn(&[]);
    // Planning creates out/ once the components are compiled; the source starts right after.
    wait_for("the job to be planned", || dir.path().join("out").is_dir());
    std::thread::sleep(Duration::from_millis(400));
    // A file written in two steps: must be read whole, after its last write.
    let mut half = std::fs::File::create(dir.path().join("in/slow.txt")).unwrap();
    half.write_all(b"alpha beta").unwrap();
    half.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    half.write_all(b" gamma\n").unwrap();
    drop(half);
    // Hidden and temporary names are never read; a rename into place is.
    dir.write_fresh("in/.hidden", "hidden\n");
    dir.write_fresh("in/next.txt.tmp", "delta\n");
    std::fs::rename(
        dir.path().join("in/next.txt.tmp"),
        dir.path().join("in/next.txt"),
    )
    .unwrap();
    dir.write_fresh("in/ignored.tmp", "ignored\n");
    wait_for("both files counted", || {
        let t = totals(&dir.output_lines("out/counts"));
        t.contains_key("gamma") && t.contains_key("delta")
    });
    // More batches go by: nothing is read twice.
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        totals(&dir.output_lines("out/counts")),
        expect(&[("alpha", 1), ("beta", 1), ("delta", 1), ("gamma", 1)])
    );
}

#[test]
fn directory_source_counts_lines_that_are_not_utf8() {
    let dir = JobDir::new();
    dir.file("in/mixed.txt", b"good line\n\xc3\x28 broken\nfine\n");
    dir.manifest(&format!(
        "[job]\nname = \"utf8\"\nbatch_interval = \"100ms\"\n\n[[sources]]\nname = \"lines\"\nkind = \"directory\"\npath = \"in\"\n{WORDCOUNT}"
    ));
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mixed.txt:2 is not UTF-8"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("1 input lines were not UTF-8"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        totals(&dir.output_lines("out/counts")),
        expect(&[("fine", 1), ("good", 1), ("line", 1)])
    );
}

#[test]
fn print_shows_the_batch_time_and_the_first_records() {
    let dir = JobDir::new();
    dir.file("in/a.txt", "b\na\nc\nd\n");
    dir.manifest(
        r#"[job]
name = "print"
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
udf = "text#pair_one"

[[sinks]]
kind = "print"
input = "pairs"
num = 3
"#,
    );
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rule = "-".repeat(43);
    let block = stdout
        .split(&format!("{rule}\nTime: "))
        .find(|b| b.contains("(b,1)"))
        .unwrap_or_else(|| panic!("{}", describe(&out)));
    let (time, rest) = block.split_once(" ms\n").unwrap();
    assert!(
        time.parse::<i64>().unwrap() % 100 == 0,
        "batch times are multiples of the interval: {time}"
    );
    assert_eq!(rest, format!("{rule}\n(b,1)\n(a,1)\n(c,1)\n...\n\n"));
    assert_eq!(printed_records(&out.stdout), ["(a,1)", "(b,1)", "(c,1)"]);
}

#[test]
fn text_files_land_whole_per_batch_and_a_sink_udf_sees_every_partition() {
    let dir = JobDir::new();
    dir.file("in/a.txt", "x y\nz\n");
    dir.manifest(
        r#"[job]
name = "files"
batch_interval = "100ms"
partitions = 2

[[sources]]
name = "lines"
kind = "directory"
path = "in"

[[streams]]
name = "pairs"
op = "map"
input = "lines"
udf = "text#pair_one"

[[sinks]]
kind = "text_files"
input = "pairs"
prefix = "out/pairs"
suffix = "txt"

[[sinks]]
kind = "udf"
input = "lines"
udf = "sinks#log_batch"
"#,
    );
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let dirs = dir.batch_dirs("out/pairs");
    assert!(!dirs.is_empty());
    for d in &dirs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let time = name
            .strip_prefix("pairs-")
            .and_then(|n| n.strip_suffix(".txt"))
            .unwrap_or_else(|| panic!("{name}"));
        assert!(time.parse::<i64>().is_ok(), "{name}");
        assert!(d.join("_SUCCESS").is_file());
        assert!(d.join("part-00000").is_file() && d.join("part-00001").is_file());
    }
    assert_eq!(dir.output_lines("out/pairs"), ["(x y,1)", "(z,1)"]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary folders left: {leftovers:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("partition 0: 1 records") && stderr.contains("partition 1: 1 records"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("job=files") && stderr.contains("udf=sinks#log_batch"),
        "guest logs carry job and UDF: {}",
        describe(&out)
    );
}
