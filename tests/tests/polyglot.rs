//! UDFs in Python and JavaScript against the same WIT as Rust ones (issue 18): the word count
//! and the clickstream W1/W4 jobs write the same output files whether their UDFs are the Rust
//! components or the twins of `udfs/python/` and `udfs/js/`, the sandbox holds for Python and
//! JavaScript guests (a CPU deadline stops a loop, the memory cap a JS bomb, an exception
//! reaches the batch error with its message and record), and the Python SDK's own unit tests
//! pass under the pinned toolchain.
//!
//! The toolchains (componentize-py and componentize-js, pinned) are installed by
//! `scripts/setup-polyglot`, which these tests run first: when they cannot be installed the
//! tests fail saying so, never skip. A Python component is ~18 MB and takes ~15 s to build and
//! 5–10 s to compile (a JS one ~12 MB, ~10 s and as much), so the tests use five of each, built
//! once into `dist/polyglot/` (rebuilt by `cargo xtask` only when their sources change) and
//! compiled once into a shared cache there.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sluice_tests::{JobDir, describe, host_bin, root, udf};

/// The Rust components the jobs are compared against.
const RUST: [&str; 4] = ["text", "aggregates", "clickstream", "state"];

/// The Python components the tests build: the twins of [`RUST`] and a hostile guest.
const PYTHON: [&str; 5] = [
    "text_py",
    "aggregates_py",
    "clickstream_py",
    "state_py",
    "py_hostile",
];

/// The JavaScript components the tests build: the twins of [`RUST`] and a hostile guest.
const JS: [&str; 5] = [
    "text_js",
    "aggregates_js",
    "clickstream_js",
    "state_js",
    "js_hostile",
];

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// The folder holding the Python components, copies of the Rust ones they are compared with,
/// and the compiled-component cache every test here shares.
fn components() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            udf("text"); // the Rust components, built and up to date
            let dir = root().join("dist/polyglot");
            std::fs::create_dir_all(&dir).unwrap();
            // One build at a time across test processes.
            let lock = File::create(dir.join(".build.lock")).unwrap();
            lock.lock().unwrap();
            let setup = Command::new(root().join("scripts/setup-polyglot"))
                .status()
                .expect("run scripts/setup-polyglot");
            assert!(
                setup.success(),
                "scripts/setup-polyglot failed (see its message above): the Python and \
                 JavaScript UDF toolchains (componentize-py, componentize-js) are needed by \
                 these tests"
            );
            let status = cargo()
                .args(["xtask", "udfs", "--python", "--js", "--tests", "--out"])
                .arg(&dir)
                .args(PYTHON)
                .args(JS)
                .status()
                .expect("run cargo xtask udfs --python --js");
            assert!(status.success(), "`cargo xtask udfs --python --js` failed");
            for name in RUST {
                let file = format!("{name}.wasm");
                std::fs::copy(root().join("dist/udfs").join(&file), dir.join(&file)).unwrap();
            }
            dir
        })
        .clone()
}

/// `host ARGS` with the shared component cache.
fn host(args: &[&str]) -> Command {
    let dir = components();
    let mut cmd = Command::new(host_bin());
    cmd.args(args)
        .env("SLUICE_COMPONENT_CACHE", dir.join("cache"))
        .env("SLUICE_LOG", "warn");
    cmd
}

/// Run `job` (its manifest written) to the end with `args`.
fn run(job: &JobDir, args: &[&str]) -> Output {
    let dir = components();
    let manifest = job.path().join("job.toml");
    let mut cmd = host(&["run"]);
    cmd.arg(&manifest)
        .arg("--udfs")
        .arg(&dir)
        .arg("--until-idle")
        .args(args);
    cmd.output().expect("run the host binary")
}

/// Write `files` into `job` under `folder`, dated a few seconds back in name order, so that a
/// directory source takes them at once, oldest first, one per batch.
fn inputs(job: &JobDir, folder: &str, files: &[(String, Vec<u8>)]) {
    let now = SystemTime::now();
    for (i, (name, contents)) in files.iter().enumerate() {
        let path = job.write_fresh(&format!("{folder}/{name}"), contents);
        let age = Duration::from_secs(30) - Duration::from_secs(i as u64);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(now - age))
            .unwrap();
    }
}

/// Every `text_files` output of `prefix`: per batch folder, oldest first, its part files'
/// names and bytes (folder names carry the batch time, which differs between runs).
fn outputs(job: &JobDir, prefix: &str) -> Vec<Vec<(String, Vec<u8>)>> {
    job.batch_dirs(prefix)
        .iter()
        .map(|dir| {
            let mut parts: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("part-")
                })
                .map(|p| {
                    let bytes = std::fs::read(&p).unwrap();
                    (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
                })
                .collect();
            parts.sort();
            parts
        })
        .collect()
}

/// Run `manifest` (with `{text}`-style placeholders) with the Rust components, their Python
/// twins and their JavaScript twins over the same input, and check that every sink of
/// `prefixes` wrote the same files in all three.
fn same_output_in_every_language(
    manifest: &str,
    folder: &str,
    files: &[(String, Vec<u8>)],
    prefixes: &[&str],
) {
    let mut runs = Vec::new();
    const LANGUAGES: [(&str, &str); 3] = [("", "Rust"), ("_py", "Python"), ("_js", "JavaScript")];
    for (suffix, language) in LANGUAGES {
        let job = JobDir::new();
        let mut text = manifest.to_string();
        for name in RUST {
            text = text.replace(&format!("{{{name}}}"), &format!("{name}{suffix}"));
        }
        job.manifest(&text);
        inputs(&job, folder, files);
        let out = run(&job, &[]);
        assert!(
            out.status.success(),
            "the job with {language} UDFs failed: {}",
            describe(&out)
        );
        runs.push(job);
    }
    for prefix in prefixes {
        let rust = outputs(&runs[0], prefix);
        let bytes: usize = rust.iter().flatten().map(|(_, b)| b.len()).sum();
        assert!(
            !rust.is_empty() && bytes > 0,
            "the Rust run wrote nothing to {prefix}"
        );
        for (run, (_, language)) in runs.iter().zip(LANGUAGES).skip(1) {
            let other = outputs(run, prefix);
            assert_eq!(
                rust.len(),
                other.len(),
                "{prefix}: {} batch folders from Rust, {} from {language}",
                rust.len(),
                other.len()
            );
            for (i, (r, o)) in rust.iter().zip(&other).enumerate() {
                if r != o {
                    let show = |parts: &[(String, Vec<u8>)]| {
                        parts
                            .iter()
                            .map(|(n, b)| format!("{n}:\n{}", String::from_utf8_lossy(b)))
                            .collect::<Vec<_>>()
                            .join("\n")
                    };
                    panic!(
                        "{prefix}: batch folder {i} differs\n--- Rust\n{}\n--- {language}\n{}",
                        show(r),
                        show(o)
                    );
                }
            }
        }
    }
}

#[test]
fn word_count_writes_the_same_files_with_rust_python_and_javascript_udfs() {
    let manifest = r#"
[job]
name = "wordcount"
batch_interval = "100ms"
partitions = 2

[[sources]]
name = "lines"
kind = "directory"
path = "in"
start = "earliest"
max_files_per_batch = 1

[[streams]]
name = "words"
op = "flat_map"
input = "lines"
udf = "{text}#split_words"

[[streams]]
name = "pairs"
op = "map"
input = "words"
udf = "{text}#pair_one"

[[streams]]
name = "counts"
op = "reduce_by_key"
input = "pairs"
udf = "{aggregates}#sum_i64"
value_codec = "number"

[[sinks]]
kind = "text_files"
input = "counts"
prefix = "out/counts"
"#;
    // Prose with non-ASCII words, so that both the one-decode ASCII path and the
    // record-by-record UTF-8 path of the Python SDK are taken.
    let files: Vec<(String, Vec<u8>)> = ["README.md", "docs/architecture.md"]
        .iter()
        .chain(["examples/wordcount/in/sluice.txt"].iter())
        .enumerate()
        .map(|(i, rel)| {
            (
                format!("part-{i}.txt"),
                std::fs::read(root().join(rel)).unwrap(),
            )
        })
        .collect();
    same_output_in_every_language(manifest, "in", &files, &["out/counts"]);
}

#[test]
fn clickstream_w1_and_w4_write_the_same_files_with_rust_python_and_javascript_udfs() {
    // W1: purchases, (user, cents), their count and sum per batch and the spend per user; W4:
    // a running [count, sum] per user in a state updater UDF.
    let manifest = r#"
[job]
name = "clickstream"
batch_interval = "100ms"
partitions = 2

[[sources]]
name = "events"
kind = "directory"
path = "events"
start = "earliest"
max_files_per_batch = 1

[[streams]]
name = "purchases"
op = "filter"
input = "events"
udf = "{clickstream}#is_purchase_line"

[[streams]]
name = "amounts"
op = "map"
input = "purchases"
udf = "{clickstream}#user_amount"
key_codec = "number"
value_codec = "number"

[[streams]]
name = "purchase_count"
op = "count"
input = "amounts"

[[streams]]
name = "revenue_cents"
op = "reduce"
input = "amounts"
udf = "{aggregates}#sum_i64"

[[streams]]
name = "spend"
op = "reduce_by_key"
input = "amounts"
udf = "{aggregates}#sum_i64"

[[streams]]
name = "all_amounts"
op = "map"
input = "events"
udf = "{clickstream}#user_amount"
key_codec = "number"
value_codec = "number"

[[streams]]
name = "totals"
op = "update_state_by_key"
input = "all_amounts"
udf = "{state}#running_count_and_sum"

[[sinks]]
kind = "text_files"
input = "purchase_count"
prefix = "out/count"

[[sinks]]
kind = "text_files"
input = "revenue_cents"
prefix = "out/revenue"

[[sinks]]
kind = "text_files"
input = "spend"
prefix = "out/spend"
format = "jsonl"

[[sinks]]
kind = "text_files"
input = "totals"
prefix = "out/totals"
"#;
    // The WORKLOADS.md generator: 40,000 events in 4 files.
    let data = tempfile::tempdir().unwrap();
    let out = host(&[
        "gen-clickstream",
        "--events",
        "40000",
        "--files",
        "4",
        "--out",
    ])
    .arg(data.path())
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 4);
    same_output_in_every_language(
        manifest,
        "events",
        &files,
        &["out/count", "out/revenue", "out/spend", "out/totals"],
    );
}

/// A one-stream job calling `py_hostile#FUNCTION` over `lines`.
fn hostile_job(function: &str, lines: &str) -> JobDir {
    let job = JobDir::new();
    job.manifest(&format!(
        r#"
[job]
name = "hostile"
batch_interval = "100ms"
partitions = 1

[[sources]]
name = "lines"
kind = "directory"
path = "in"
start = "earliest"

[[streams]]
name = "out"
op = "map"
input = "lines"
udf = "py_hostile#{function}"

[[sinks]]
kind = "text_files"
input = "out"
prefix = "out/lines"
"#
    ));
    inputs(
        &job,
        "in",
        &[("lines.txt".to_string(), lines.as_bytes().to_vec())],
    );
    job
}

#[test]
fn a_looping_python_udf_is_stopped_by_its_deadline() {
    let job = hostile_job("spin", "x\n");
    let out = run(&job, &["--udf-timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UDF `py_hostile#spin` failed on batch")
            && err.contains("ran past its CPU deadline of 1s"),
        "{}",
        describe(&out)
    );
    // The same component works once its function returns.
    let job = hostile_job("upper", "quiet\n");
    let out = run(&job, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let lines: Vec<u8> = outputs(&job, "out/lines")
        .into_iter()
        .flatten()
        .flat_map(|(_, b)| b)
        .collect();
    assert_eq!(String::from_utf8_lossy(&lines), "QUIET\n");
}

#[test]
fn a_python_exception_reaches_the_batch_error_with_its_message_and_record() {
    let job = hostile_job("fail_on_bad", "fine\nbad line\nok\n");
    let out = run(&job, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UDF `py_hostile#fail_on_bad` failed on batch")
            && err.contains("input record 1: record 1: ValueError: cannot read 'bad line'")
            && err.contains("app.py:"),
        "{}",
        describe(&out)
    );
}

#[test]
fn host_check_accepts_a_python_component_that_imports_only_the_host_and_names_its_language() {
    let dir = components();
    let out = host(&["check"])
        .arg(dir.join("text_py.wasm"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "world      transform",
        "language   Python (sdk sluice-python ",
        "componentize-py 0.25.1",
        "text_py#split_words",
        "flat-map",
        "text_py#non_empty",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    let out = host(&["check"])
        .arg(dir.join("text.wasm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("language   Rust"), "{text}");
}

#[test]
fn the_python_sdk_unit_tests_pass_with_the_pinned_toolchain() {
    components(); // the toolchain is set up
    let cache = std::env::var_os("SLUICE_CACHE").map_or_else(
        || Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/sluice"),
        PathBuf::from,
    );
    let out = Command::new(cache.join("venv-python-udf/bin/python"))
        .current_dir(root())
        .args(["-m", "unittest", "discover", "-s", "guest-sdk/python/tests"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OK"));
}

#[test]
fn building_python_udfs_without_the_toolchain_says_how_to_install_it() {
    components(); // xtask is built
    let empty = tempfile::tempdir().unwrap();
    let out = cargo()
        .args(["xtask", "udfs", "--python", "text_py", "--out"])
        .arg(empty.path().join("out"))
        .env("SLUICE_CACHE", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the Python UDF toolchain is missing")
            && err.contains("scripts/setup-polyglot"),
        "{err}"
    );
}

#[test]
fn host_new_writes_a_python_udf_that_builds_and_runs_as_it_is() {
    components(); // the toolchain is set up, xtask and the host built
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("totals");
    let out = host(&[
        "new", "totals", "--lang", "python", "--role", "updater", "--dir",
    ])
    .arg(&project)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cargo xtask udfs --python totals"),
        "{}",
        describe(&out)
    );
    let built = dir.path().join("out");
    let status = cargo()
        .args(["xtask", "udfs", "--python"])
        .arg(&project)
        .arg("--out")
        .arg(&built)
        .status()
        .unwrap();
    assert!(status.success(), "the scaffolded Python UDF does not build");
    let mut call = host(&["call", "--format", "kv"])
        .arg(format!(
            "{}#running_total",
            built.join("totals.wasm").display()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    call.stdin
        .take()
        .unwrap()
        .write_all(b"a\t1\nb\t5\na\t2\n")
        .unwrap();
    let out = call.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("state\ta\t3") && text.contains("state\tb\t5"),
        "{}",
        describe(&out)
    );
    // A JavaScript one (built by hand in every role when this was written: 4 × ~15 s) holds
    // the files `cargo xtask udfs --js` reads; an existing folder is never overwritten.
    let js = dir.path().join("sum");
    let out = host(&["new", "sum", "--lang", "js", "--role", "reducer", "--dir"])
        .arg(&js)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let package = std::fs::read_to_string(js.join("package.json")).unwrap();
    assert!(package.contains(r#""world": "reducer""#), "{package}");
    let app = std::fs::read_to_string(js.join("app.js")).unwrap();
    assert!(app.contains("sluice.exportReducers(add)"), "{app}");
    let out = host(&["new", "bad-name"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a UDF name"));
    let out = host(&["new", "totals", "--lang", "python", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

/// A one-stream job calling `js_hostile#FUNCTION` over one line.
fn js_job(function: &str) -> JobDir {
    let job = JobDir::new();
    job.manifest(&format!(
        r#"
[job]
name = "hostile-js"
batch_interval = "100ms"
partitions = 1

[[sources]]
name = "lines"
kind = "directory"
path = "in"
start = "earliest"

[[streams]]
name = "out"
op = "map"
input = "lines"
udf = "js_hostile#{function}"

[[sinks]]
kind = "text_files"
input = "out"
prefix = "out/lines"
"#
    ));
    inputs(
        &job,
        "in",
        &[("lines.txt".to_string(), b"quiet\n".to_vec())],
    );
    job
}

#[test]
fn a_javascript_memory_bomb_is_stopped_by_its_cap() {
    let out = run(&js_job("bomb"), &["--udf-memory", "128MiB"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UDF `js_hostile#bomb` failed on batch") && err.contains("128MiB"),
        "{}",
        describe(&out)
    );
    let out = run(&js_job("spin"), &["--udf-timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ran past its CPU deadline of 1s"),
        "{}",
        describe(&out)
    );
    // The same component works when its function returns.
    let job = js_job("upper");
    let out = run(&job, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let lines: Vec<u8> = outputs(&job, "out/lines")
        .into_iter()
        .flatten()
        .flat_map(|(_, b)| b)
        .collect();
    assert_eq!(String::from_utf8_lossy(&lines), "QUIET\n");
    let out = host(&["check"])
        .arg(components().join("text_js.wasm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("language   JavaScript (sdk sluice-js "),
        "{}",
        describe(&out)
    );
}
