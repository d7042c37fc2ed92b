//! The `host` binary, driven as a user drives it: `check`, `call`, `--help`, and failures that
//! exit non-zero with a message saying what is wrong.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{host_bin, test_guest, udf};

struct Host {
    cache: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        Self {
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(host_bin())
            .args(args)
            .env("SLUICE_COMPONENT_CACHE", self.cache.path())
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "host {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert_eq!(
            out.status.code(),
            Some(1),
            "host {args:?} should exit 1; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

fn target(component: &std::path::Path, function: &str) -> String {
    format!("{}#{function}", component.display())
}

#[test]
fn check_prints_the_world_abi_and_functions() {
    let host = Host::new();
    let text = udf("text");
    let out = host.ok(&["check", text.to_str().unwrap()], "");
    assert!(
        out.contains("world      transform (exports sluice:udf/transforms@0.2.0)"),
        "{out}"
    );
    assert!(out.contains("abi        1"), "{out}");
    assert!(out.contains("text#split_words  flat-map"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&host.ok(
        &["check", "--json", udf("aggregates").to_str().unwrap()],
        "",
    ))
    .unwrap();
    assert_eq!(json["world"], "reducer");
    assert_eq!(json["functions"][0]["name"], "sum_i64");
    assert_eq!(json["functions"][0]["has_inverse"], true);
}

#[test]
fn check_refuses_what_is_not_a_sluice_component() {
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let err = host.fails(&["check", core.to_str().unwrap()], "");
    assert!(
        err.contains("is a core WebAssembly module, not a component"),
        "{err}"
    );
    let truncated = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(udf("text")).unwrap();
    std::fs::write(&truncated, &bytes[..1000]).unwrap();
    let err = host.fails(&["check", truncated.to_str().unwrap()], "");
    assert!(
        err.contains("is not a valid WebAssembly component"),
        "{err}"
    );
    let err = host.fails(&["check", test_guest("abi_mismatch").to_str().unwrap()], "");
    assert!(
        err.contains("ABI version 999, but this host speaks version 1"),
        "{err}"
    );
}

#[test]
fn call_runs_a_word_count_through_three_components() {
    let host = Host::new();
    let text = udf("text");
    let words = host.ok(
        &["call", &target(&text, "split_words")],
        "to be or\nnot to be\n",
    );
    assert_eq!(words, "to\nbe\nor\nnot\nto\nbe\n");
    let pairs = host.ok(&["call", &target(&text, "pair_one")], &words);
    assert_eq!(pairs.lines().next(), Some("to\t1"));
    let counts = host.ok(
        &[
            "call",
            "--format",
            "kv",
            &target(&udf("aggregates"), "sum_i64"),
        ],
        &pairs,
    );
    assert_eq!(counts, "to\t2\nbe\t2\nor\t1\nnot\t1\n");
}

#[test]
fn call_serves_every_role() {
    let host = Host::new();
    let out = host.ok(
        &[
            "call",
            "--format",
            "jsonl",
            &target(&udf("text"), "uppercase"),
        ],
        "{\"key\":null,\"value\":\"héllo\",\"event_time\":5}\n",
    );
    assert_eq!(out.trim(), r#"{"event_time":5,"key":null,"value":"HÉLLO"}"#);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.kv");
    std::fs::write(&state, "a\t10\nz\t1\n").unwrap();
    let out = host.ok(
        &[
            "call",
            "--format",
            "kv",
            "--state",
            state.to_str().unwrap(),
            &target(&udf("state"), "running_total"),
        ],
        "a\t1\nb\t2\na\t3\n",
    );
    let mut lines: Vec<_> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["state\ta\t14", "state\tb\t2", "state\tz\t1"]);
    let out = host.run(&["call", &target(&udf("sinks"), "log_batch")], "x\ny\n");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("consumed 2 records in 1 partition(s)"),
        "{err}"
    );
    // Guest logs carry tenant, job, batch and UDF.
    assert!(
        err.contains("udf=sinks#log_batch")
            && err.contains("tenant=local")
            && err.contains("job=adhoc"),
        "{err}"
    );
    assert!(err.contains("2 records"), "{err}");
}

#[test]
fn a_hostile_call_fails_cleanly_within_its_deadline() {
    let host = Host::new();
    let hostile = test_guest("hostile");
    let started = Instant::now();
    let err = host.fails(
        &["call", "--udf-timeout", "200ms", &target(&hostile, "spin")],
        "x\n",
    );
    assert!(started.elapsed() < Duration::from_secs(90));
    assert!(
        err.contains(
            "UDF `hostile#spin` failed on batch 0 partition 0: ran past its CPU deadline of 200ms"
        ),
        "{err}"
    );
    let err = host.fails(&["call", &target(&hostile, "panic")], "x\n");
    assert!(
        err.contains("after the guest reported a panic: panicked at")
            && err.contains("the hostile guest panicked on purpose"),
        "{err}"
    );
    let err = host.fails(
        &["call", "--udf-memory", "16MiB", &target(&hostile, "bomb")],
        "x\n",
    );
    assert!(err.contains("past the limit of 16MiB"), "{err}");
    let out = host.run(&["call", &target(&hostile, "chatty")], "x\n");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("past its per-call budget") && err.contains("log_lines_dropped=900"),
        "{err}"
    );
}

/// `--udf-timeout off` runs guests compiled without epoch checks, says so on stderr, and
/// shares the component cache with the default engine (their compiled code is kept apart).
#[test]
fn udf_timeout_off_runs_without_a_deadline_and_says_so() {
    let host = Host::new();
    let upper = target(&udf("text"), "uppercase");
    for _ in 0..2 {
        let out = host.run(&["call", "--udf-timeout", "off", &upper], "shout\n");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("UDF calls have no CPU deadline"), "{err}");
        let out = host.run(&["call", &upper], "shout\n");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("no CPU deadline"), "{err}");
    }
    let out = host.run(&["call", "--udf-timeout", "soon", &upper], "");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("write a duration such as `500ms` or `10s`, or `off`"),
        "{err}"
    );
}

#[test]
fn bad_arguments_say_what_to_do() {
    let host = Host::new();
    let err = host.fails(&["call", udf("text").to_str().unwrap()], "");
    assert!(
        err.contains("names no function; write PATH/TO/COMPONENT.wasm#function"),
        "{err}"
    );
    let err = host.fails(&["call", &target(&udf("text"), "nope")], "");
    assert!(
        err.contains("component `text` has no function `nope`; it exports: split_words"),
        "{err}"
    );
    let err = host.fails(
        &[
            "call",
            "--format",
            "kv",
            &target(&udf("aggregates"), "sum_i64"),
        ],
        "no tab here\n",
    );
    assert!(
        err.contains("input line 1: expected KEY<TAB>VALUE"),
        "{err}"
    );
    let err = host.fails(&["call", &target(&udf("aggregates"), "sum_i64")], "1\n");
    assert!(err.contains("groups by key"), "{err}");
}

#[test]
fn help_teaches_with_examples() {
    let host = Host::new();
    let top = host.ok(&["--help"], "");
    assert!(top.contains("check") && top.contains("call"), "{top}");
    let call = host.ok(&["call", "--help"], "");
    assert!(
        call.contains("Examples:") && call.contains("split_words"),
        "{call}"
    );
    let check = host.ok(&["check", "--help"], "");
    assert!(check.contains("host check dist/udfs/text.wasm"), "{check}");
}

#[test]
fn generated_clickstream_parses_through_the_component() {
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let out = host.run(
        &[
            "gen-clickstream",
            "--out",
            dir.path().to_str().unwrap(),
            "--events",
            "5000",
            "--files",
            "3",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = dir.path().join("part-00002.csv");
    assert_eq!(
        std::fs::read_to_string(&last).unwrap().lines().count(),
        1668
    );
    // The sample shipped in examples/ is this generator's output for seed 42.
    let first = std::fs::read_to_string(dir.path().join("part-00000.csv")).unwrap();
    let shipped = std::fs::read_to_string(
        sluice_tests::root().join("examples/clickstream/data/part-00000.csv"),
    )
    .unwrap();
    assert_eq!(
        first.lines().take(100).collect::<Vec<_>>(),
        shipped.lines().take(100).collect::<Vec<_>>()
    );
    // Every generated line parses strictly.
    let parsed = host.ok(
        &[
            "call",
            "--input",
            last.to_str().unwrap(),
            &target(&udf("clickstream"), "parse_event"),
        ],
        "",
    );
    assert_eq!(parsed.lines().count(), 1668);
    let err = host.fails(
        &[
            "gen-clickstream",
            "--out",
            dir.path().to_str().unwrap(),
            "--events",
            "2",
            "--files",
            "3",
        ],
        "",
    );
    assert!(
        err.contains("--files must be between 1 and --events"),
        "{err}"
    );
}

/// `SLUICE_WASM_PERFMAP=1` (README: "Where does my UDF spend its time?") makes the engine write
/// `/tmp/perf-<pid>.map`, the file `perf report` reads to name JIT code, with the guest's
/// functions in it; without the variable no map is written.
#[test]
fn perfmap_names_guest_code_for_perf() {
    let host = Host::new();
    let call = |perfmap: bool| {
        let mut command = Command::new(host_bin());
        command
            .args(["call", &target(&udf("text"), "uppercase")])
            .env("SLUICE_COMPONENT_CACHE", host.cache.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if perfmap {
            command.env("SLUICE_WASM_PERFMAP", "1");
        } else {
            command.env_remove("SLUICE_WASM_PERFMAP");
        }
        let mut child = command.spawn().expect("start host");
        let pid = child.id();
        child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SHOUT");
        let map = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
        let text = std::fs::read_to_string(&map).ok();
        let _ = std::fs::remove_file(&map);
        text
    };
    let text = call(true).expect("a perf map when SLUICE_WASM_PERFMAP=1");
    assert!(text.lines().any(|l| l.contains("wasm[")), "{text}");
    assert_eq!(call(false), None, "no perf map without SLUICE_WASM_PERFMAP");
}
