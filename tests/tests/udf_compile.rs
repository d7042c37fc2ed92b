//! Untrusted components compile in a child process (`host compile-worker`) capped in memory and
//! time, killed when refused: a compile bomb costs the host neither its memory nor a core.
//!
//! The bombs are generated here: nested loops over many locals. Each loop header joins two
//! edges, so Cranelift's SSA construction gives it a block parameter for every local used inside,
//! and register allocation then works over depth × locals live values. Measured with the release
//! build on a 2-core machine: 1 000 locals × 1 000 loops (16 KB) takes ~20 s and 1.1 GB
//! uncapped and is refused within ~1 s under a 300 MiB cap; 500 locals × 2 000 loops (31 KB)
//! takes ~31 s and 1.5 GB, but under 150 MB for its first seconds: a slow one, not a big one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_host::batch::Batch;
use sluice_host::config::ByteSize;
use sluice_host::udf::{CallContext, LoadError, RuntimeConfig};
use sluice_tests::{host_bin, load, runtime_with, udf};

/// These tests count compile-worker processes and measure this process's memory: one at a time
/// (a failing test's backtrace alone adds ~60 MiB of resident debug info).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A component whose one function nests `depth` loops over `locals` locals.
fn nested_loops(locals: usize, depth: usize) -> Vec<u8> {
    sluice_host::workloads::slow_compile::nested_loops(locals, depth)
        .expect("the generated component parses")
}

/// Needs over a gigabyte to compile, and passes 300 MiB within about a second.
fn memory_bomb() -> Vec<u8> {
    nested_loops(1000, 1000)
}

/// Takes half a minute to compile, while using little memory for its first seconds.
fn slow_bomb() -> Vec<u8> {
    nested_loops(500, 2000)
}

/// A live compile-worker process.
#[derive(Debug)]
struct WorkerProcess {
    parent: u32,
    environment: Vec<u8>,
}

/// Every live process whose command line has the `compile-worker` argument.
fn compile_workers() -> Vec<WorkerProcess> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        if !cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == b"compile-worker")
        {
            continue;
        }
        // Field 4 of stat, counted after the command name's closing parenthesis.
        let parent = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 1..];
                rest.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0);
        let environment = std::fs::read(dir.join("environ")).unwrap_or_default();
        found.push(WorkerProcess {
            parent,
            environment,
        });
    }
    found
}

/// The compile workers whose environment carries `mark` (inherited from the host we started).
fn workers_marked(mark: &str) -> Vec<WorkerProcess> {
    let needle = format!("SLUICE_TEST_MARK={mark}");
    compile_workers()
        .into_iter()
        .filter(|w| {
            w.environment
                .split(|&b| b == 0)
                .any(|var| var == needle.as_bytes())
        })
        .collect()
}

/// The compile workers this test process started.
fn my_workers() -> Vec<WorkerProcess> {
    let me = std::process::id();
    compile_workers()
        .into_iter()
        .filter(|w| w.parent == me)
        .collect()
}

/// This process's resident memory.
fn rss() -> ByteSize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS in /proc/self/status");
    ByteSize::kib(kib)
}

fn mib(size: ByteSize) -> f64 {
    size.0 as f64 / (1 << 20) as f64
}

/// A runtime that compiles in `host compile-worker` with these caps.
fn worker_config(memory: ByteSize, timeout: Duration) -> RuntimeConfig {
    RuntimeConfig {
        compile_worker: Some(host_bin()),
        compile_memory: memory,
        compile_timeout: timeout,
        ..RuntimeConfig::default()
    }
}

/// `host ARGS check FILE` with its own component cache and a `mark` in its environment, started.
fn host_check(dir: &Path, args: &[&str], file: &Path, mark: &str) -> std::process::Child {
    Command::new(host_bin())
        .args(args)
        .arg("check")
        .arg(file)
        .env("SLUICE_COMPONENT_CACHE", dir.join("cache"))
        .env("SLUICE_TEST_MARK", mark)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host check")
}

#[test]
fn the_host_refuses_a_compile_bomb_at_its_memory_cap() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, memory_bomb()).unwrap();
    let mark = format!("memory-{}", std::process::id());

    let started = Instant::now();
    let out = host_check(dir.path(), &["--compile-memory", "300MiB"], &bomb, &mark)
        .wait_with_output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`bomb`")
            && stderr.contains("300MiB")
            && stderr.contains("compile_memory")
            && stderr.contains("--compile-memory")
            && stderr.contains("needed more than 300MiB of memory"),
        "{stderr}"
    );
    // Uncapped, this component takes ~20 s: it was stopped by the cap, not by finishing.
    assert!(
        elapsed < Duration::from_secs(15),
        "refused after {elapsed:?}"
    );
    assert!(workers_marked(&mark).is_empty());
    // Nothing half-compiled was cached.
    let cached = std::fs::read_dir(dir.path().join("cache"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(cached, 0);
}

#[test]
fn the_host_refuses_a_slow_compile_at_its_timeout_and_stops_the_compiler() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow.wasm");
    std::fs::write(&slow, slow_bomb()).unwrap();
    let mark = format!("timeout-{}", std::process::id());

    let started = Instant::now();
    let host = host_check(dir.path(), &["--compile-timeout", "2s"], &slow, &mark);
    // The worker is visible while it compiles: the scan below can see one.
    let mut seen = None;
    while seen.is_none() && started.elapsed() < Duration::from_secs(10) {
        seen = workers_marked(&mark).into_iter().next();
        if seen.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let worker = seen.expect("a compile worker ran while the host compiled");
    assert_eq!(worker.parent, host.id(), "{worker:?}");

    let out = host.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`slow`")
            && stderr.contains("took longer than 2s")
            && stderr.contains("--compile-timeout")
            && stderr.contains("compiler process was stopped"),
        "{stderr}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "refused after {elapsed:?}"
    );
    let left = workers_marked(&mark);
    assert!(left.is_empty(), "compile workers left: {left:?}");
}

#[test]
fn refusing_a_bomb_in_process_costs_the_host_neither_memory_nor_a_worker() {
    let _serial = serial();
    let runtime = runtime_with(worker_config(ByteSize::mib(300), Duration::from_secs(60)));
    // Warm up: the first load through the worker sets up what any load needs.
    load(&runtime, &udf("text"));
    let bomb = memory_bomb();
    let before = rss();

    let err = runtime.load("bomb", &bomb).unwrap_err();
    let after = rss();
    match &err {
        LoadError::CompileMemory { name, limit, .. } => {
            assert_eq!((name.as_str(), *limit), ("bomb", ByteSize::mib(300)))
        }
        other => panic!("expected the memory cap, got {other}"),
    }
    // The compilation needed over a gigabyte; the host grew by at most this.
    let envelope = ByteSize::mib(64);
    assert!(
        after.0 <= before.0 + envelope.0,
        "the host grew from {:.0} MiB to {:.0} MiB refusing the bomb",
        mib(before),
        mib(after)
    );
    assert!(my_workers().is_empty(), "{:?}", my_workers());

    // Refused components are not remembered: asking again compiles again, and is refused again.
    let again = runtime.load("bomb", &bomb).unwrap_err();
    assert!(matches!(again, LoadError::CompileMemory { .. }), "{again}");
}

#[test]
fn a_timed_out_compile_leaves_no_worker_behind() {
    let _serial = serial();
    let runtime = runtime_with(worker_config(ByteSize::gib(4), Duration::from_secs(2)));
    let started = Instant::now();
    let err = runtime.load("slow", &slow_bomb()).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(
            err,
            LoadError::CompileTimeout {
                process_stopped: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "refused after {elapsed:?}"
    );
    // Killed and reaped before `load` returned, while this process (its parent) lives on.
    assert!(my_workers().is_empty(), "{:?}", my_workers());
}

#[test]
fn a_bundled_component_compiles_in_the_worker_and_runs() {
    let _serial = serial();
    let cache = tempfile::tempdir().unwrap();
    let mut config = worker_config(ByteSize::gib(4), Duration::from_secs(120));
    config.cache_dir = Some(cache.path().to_path_buf());
    let runtime = runtime_with(config.clone());
    let text = load(&runtime, &udf("text"));
    let mut input = Batch::empty(false);
    input.push(None, b"to be", 0);
    let out = text
        .function("uppercase")
        .unwrap()
        .transform(&CallContext::adhoc(), &input)
        .unwrap();
    assert_eq!(out.values.get(0), Some(&b"TO BE"[..]));

    // The worker's artifact went to the disk cache; a fresh runtime loads it from there
    // without compiling: a worker that cannot even start is never needed.
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let no_worker = RuntimeConfig {
        compile_worker: Some("/nonexistent/host".into()),
        ..config
    };
    let runtime = runtime_with(no_worker.clone());
    let text = load(&runtime, &udf("text"));
    assert_eq!(text.functions().len(), 6);
    // And that worker, needed for a component not in the cache, is named when it cannot start.
    let other = runtime.load_file(&udf("aggregates")).unwrap_err();
    match &other {
        LoadError::CompileWorkerStart { program, .. } => assert_eq!(program, "/nonexistent/host"),
        other => panic!("expected a worker that cannot start, got {other}"),
    }
    assert!(other.to_string().contains("/nonexistent/host"), "{other}");
}

#[test]
fn an_invalid_component_gets_the_validators_reason_escaped() {
    let _serial = serial();
    let runtime = runtime_with(worker_config(ByteSize::gib(4), Duration::from_secs(60)));
    // Two exports of one name, a name full of control characters and 10 000 bytes long: the
    // validator's reason quotes it, and it is guest-controlled text.
    let export = format!("evil\\1b[31m\\0a{}", "x".repeat(10_000));
    let bad = wat::parse_str(format!(
        r#"(component (core module (func $f) (export "{export}" (func $f)) (export "{export}" (func $f))))"#
    ))
    .unwrap();
    let err = runtime.load("bad", &bad).unwrap_err();
    let LoadError::Invalid { name, reason } = &err else {
        panic!("expected an invalid component, got {err}");
    };
    assert_eq!(name, "bad");
    assert!(
        reason.contains("duplicate export") && reason.contains("evil\\u{1b}[31m\\n"),
        "{reason}"
    );
    assert!(
        !reason.chars().any(|c| c.is_control()),
        "unescaped control characters in {reason:?}"
    );
    assert!(reason.len() < 4096, "{} bytes", reason.len());

    // A truncated bundled component: invalid too, not a worker failure.
    let bytes = std::fs::read(udf("text")).unwrap();
    let err = runtime
        .load("truncated", &bytes[..bytes.len() / 2])
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    assert!(my_workers().is_empty());
}

#[test]
fn the_compile_flags_are_documented_and_checked() {
    let _serial = serial();
    let help = Command::new(host_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--compile-timeout <DURATION>")
            && help.contains("--compile-memory <SIZE>")
            && help.contains("[default: 120s]")
            && help.contains("[default: 4GiB]"),
        "{help}"
    );
    // The worker is an internal subcommand: not listed.
    assert!(!help.contains("compile-worker"), "{help}");
    let bad = Command::new(host_bin())
        .args(["--compile-memory", "lots", "check", "x.wasm"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("512KiB"));
}
