//! Hostile guests and broken components: each gets its typed error within its limit, the host
//! keeps running, and the next call on a fresh instance works.

use std::time::{Duration, Instant};

use sluice_host::batch::Batch;
use sluice_host::config::ByteSize;
use sluice_host::udf::{
    CallContext, CallErrorKind, LoadError, RuntimeConfig, UdfComponent, UdfRuntime,
};
use sluice_tests::{load, runtime_with, test_guest, udf};

/// Tight limits so each misbehaviour is caught fast.
fn tight() -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.limits.call_timeout = Duration::from_millis(300);
    config.limits.memory = ByteSize::mib(32);
    config.limits.stack = ByteSize::kib(256);
    config
}

fn values(items: &[&str]) -> Batch {
    let mut batch = Batch::empty(false);
    for v in items {
        batch.push(None, v.as_bytes(), 0);
    }
    batch
}

fn call(
    component: &std::sync::Arc<UdfComponent>,
    function: &str,
    input: &Batch,
) -> Result<Batch, sluice_host::udf::CallError> {
    let context = CallContext {
        batch_id: 42,
        partition: 3,
        ..CallContext::adhoc()
    };
    component
        .function(function)
        .unwrap()
        .transform(&context, input)
}

/// After any failure, a well-behaved call on the same component still works.
fn still_works(component: &std::sync::Arc<UdfComponent>) {
    let out = call(component, "identity", &values(&["ok"]))
        .expect("a fresh instance works after the failure");
    assert_eq!(out.values.get(0), Some(&b"ok"[..]));
}

#[test]
fn an_infinite_loop_hits_the_cpu_deadline() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    let started = Instant::now();
    let err = call(&hostile, "spin", &values(&["x"])).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err.kind, CallErrorKind::Timeout(d) if d == Duration::from_millis(300)),
        "{err}"
    );
    // Bounded by the deadline plus epoch granularity, far below any test timeout.
    assert!(
        elapsed < Duration::from_secs(5),
        "the loop ran for {elapsed:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("hostile#spin")
            && text.contains("batch 42 partition 3")
            && text.contains("CPU deadline"),
        "{text}"
    );
    still_works(&hostile);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    let err = call(&hostile, "bomb", &values(&["x"])).unwrap_err();
    match err.kind {
        CallErrorKind::MemoryLimit { requested, limit } => {
            assert_eq!(limit, ByteSize::mib(32));
            assert!(requested > ByteSize::mib(32).0);
        }
        ref other => panic!("expected a memory limit error, got {other:?}"),
    }
    still_works(&hostile);
}

/// `interruptible = false` (`host --udf-timeout off`) drops only the CPU deadline: the
/// other limits still hold, and a fresh instance still works after a failure.
#[test]
fn without_a_cpu_deadline_every_other_limit_still_holds() {
    let rt = runtime_with(RuntimeConfig {
        interruptible: false,
        ..tight()
    });
    let hostile = load(&rt, &test_guest("hostile"));
    let err = call(&hostile, "bomb", &values(&["x"])).unwrap_err();
    assert!(
        matches!(err.kind, CallErrorKind::MemoryLimit { limit, .. } if limit == ByteSize::mib(32)),
        "{err}"
    );
    let err = call(&hostile, "recurse", &values(&["x"])).unwrap_err();
    assert!(matches!(err.kind, CallErrorKind::StackOverflow(_)), "{err}");
    let err = call(&hostile, "panic", &values(&["x"])).unwrap_err();
    assert!(matches!(err.kind, CallErrorKind::Panic { .. }), "{err}");
    still_works(&hostile);
}

#[test]
fn deep_recursion_overflows_the_stack_cleanly() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    let err = call(&hostile, "recurse", &values(&["x"])).unwrap_err();
    assert!(
        matches!(err.kind, CallErrorKind::StackOverflow(s) if s == ByteSize::kib(256)),
        "{err}"
    );
    still_works(&hostile);
}

#[test]
fn a_panic_reports_its_message() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    let err = call(&hostile, "panic", &values(&["x"])).unwrap_err();
    match &err.kind {
        CallErrorKind::Panic { trap, report } => {
            // The reason is the runtime's trap; the guest's report is beside it.
            assert!(trap.contains("unreachable"), "{trap}");
            assert!(
                report.contains("the hostile guest panicked on purpose"),
                "{report}"
            )
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    still_works(&hostile);
}

#[test]
fn an_exploding_flat_map_hits_the_output_limit() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    // 2 records × 100 000 copies = 200 000 > max(100 000, 100 × 2).
    let err = call(&hostile, "explode", &values(&["a", "b"])).unwrap_err();
    match err.kind {
        CallErrorKind::OutputTooLarge {
            records,
            max_records,
            ..
        } => {
            assert_eq!(records, 200_000);
            assert_eq!(max_records, 100_000);
        }
        ref other => panic!("expected an output limit error, got {other:?}"),
    }
    // One record stays under the limit.
    assert_eq!(
        call(&hostile, "explode", &values(&["a"])).unwrap().len(),
        100_000
    );
}

#[test]
fn malformed_output_is_rejected() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    let err = call(&hostile, "garbage", &values(&["x"])).unwrap_err();
    match &err.kind {
        CallErrorKind::Malformed(why) => assert!(why.contains("value column"), "{why}"),
        other => panic!("expected malformed output, got {other:?}"),
    }
    still_works(&hostile);
}

#[test]
fn a_guest_error_names_the_record_and_keeps_the_instance() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    let err = call(&hostile, "reject_bad", &values(&["fine", "bad"])).unwrap_err();
    assert!(
        matches!(
            &err.kind,
            CallErrorKind::Guest {
                record_index: Some(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("input record 1"), "{err}");
    // A guest error is not a trap: the instance goes back to the pool.
    assert_eq!(hostile.idle_instances(), 1);
    still_works(&hostile);
    let stats = hostile.function("reject_bad").unwrap().stats();
    assert_eq!((stats.calls, stats.errors, stats.records_in), (1, 1, 2));
}

#[test]
fn a_trapped_instance_is_discarded_and_replaced() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    still_works(&hostile);
    assert_eq!(hostile.idle_instances(), 1);
    call(&hostile, "panic", &values(&["x"])).unwrap_err();
    assert_eq!(
        hostile.idle_instances(),
        0,
        "the trapped instance went back to the pool"
    );
    still_works(&hostile);
    assert_eq!(hostile.idle_instances(), 1);
}

#[test]
fn log_floods_and_metric_floods_are_capped() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    // 1000 lines in one call: the first 100 are logged, the rest counted and dropped.
    call(&hostile, "chatty", &values(&["x"])).unwrap();
    call(&hostile, "many_metrics", &values(&["x"])).unwrap();
    let guest_series = rt.registry().series_with_label("component", "hostile");
    // 1000 guest series at most, plus the host's own per-function series.
    assert!(
        guest_series <= sluice_host::udf::UdfLimits::default().max_metric_series as usize + 10,
        "{guest_series} series"
    );
    still_works(&hostile);
}

fn load_err(rt: &UdfRuntime, name: &str, bytes: &[u8]) -> LoadError {
    rt.load(name, bytes)
        .expect_err("the component should be refused")
}

#[test]
fn broken_components_are_refused_with_clear_errors() {
    let rt = runtime_with(tight());

    // A core module, not a component.
    let core = wat::parse_str("(module (func (export \"f\")))").unwrap();
    let err = load_err(&rt, "core", &core);
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err}");
    assert!(
        err.to_string().contains("cargo xtask componentize"),
        "{err}"
    );

    // Not WebAssembly at all.
    let err = load_err(&rt, "text-file", b"hello, I am not wasm");
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err}");

    // A truncated component.
    let bytes = std::fs::read(udf("text")).unwrap();
    let err = load_err(&rt, "truncated", &bytes[..bytes.len() / 2]);
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");

    // A component of another world: exports nothing Sluice knows.
    let other = wat::parse_str(
        "(component (core module $m (func (export \"run\"))) (core instance $i (instantiate $m)))",
    )
    .unwrap();
    let err = load_err(&rt, "other-world", &other);
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("exports none of sluice:udf/transforms"),
        "{err}"
    );

    // A component that wants WASI: refused before anything runs.
    let wasi = wat::parse_str(
        r#"(component (import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string)))))))"#,
    )
    .unwrap();
    let err = load_err(&rt, "wasi", &wasi);
    match &err {
        LoadError::ForbiddenImport { import, .. } => {
            assert_eq!(import, "wasi:cli/environment@0.2.0")
        }
        other => panic!("expected a forbidden import, got {other}"),
    }
    assert!(err.to_string().contains("wasm32-unknown-unknown"), "{err}");

    // An ABI version the host does not speak.
    let err = rt.load_file(&test_guest("abi_mismatch")).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::AbiMismatch {
                found: 999,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );

    // Over the size cap.
    let mut small = tight();
    small.max_component_size = ByteSize::kib(16);
    let err = runtime_with(small).load_file(&udf("text")).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("16KiB"), "{err}");

    // A missing file.
    let err = rt
        .load_file(std::path::Path::new("/nonexistent/udf.wasm"))
        .unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err}");

    // The runtime still serves good components after all of that.
    let text = load(&rt, &udf("text"));
    assert_eq!(text.functions().len(), 6);
}

#[test]
fn compilation_past_its_time_cap_is_refused() {
    let mut config = tight();
    config.compile_timeout = Duration::from_nanos(1);
    let err = runtime_with(config)
        .load_file(&udf("clickstream"))
        .unwrap_err();
    assert!(matches!(err, LoadError::CompileTimeout { .. }), "{err}");
}

#[test]
fn compiled_components_are_cached_on_disk_by_content_hash() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..tight()
    };
    let first = load(&runtime_with(config.clone()), &udf("text"));
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        cached[0].starts_with(first.hash()) && cached[0].ends_with(".cwasm"),
        "{cached:?}"
    );
    // A new runtime (a restarted host) loads the precompiled file and it works.
    let second = load(&runtime_with(config.clone()), &udf("text"));
    assert_eq!(second.hash(), first.hash());
    assert_eq!(
        call(&second, "uppercase", &values(&["abc"]))
            .unwrap()
            .values
            .get(0),
        Some(&b"ABC"[..])
    );
    // A corrupt cache file is ignored and the component compiled again.
    std::fs::write(dir.path().join(&cached[0]), b"garbage").unwrap();
    let third = load(&runtime_with(config), &udf("text"));
    assert_eq!(
        call(&third, "uppercase", &values(&["x"]))
            .unwrap()
            .values
            .get(0),
        Some(&b"X"[..])
    );
}

#[test]
fn tenants_share_a_runtime_without_hurting_each_other() {
    let rt = runtime_with(tight());
    let hostile = load(&rt, &test_guest("hostile"));
    let text = load(&rt, &udf("text"));
    let upper = text.function("uppercase").unwrap();
    std::thread::scope(|s| {
        let bad = s.spawn(|| {
            for f in ["spin", "bomb", "panic", "recurse"] {
                assert!(call(&hostile, f, &values(&["x"])).is_err());
            }
        });
        let good = s.spawn(|| {
            for i in 0..200 {
                let v = format!("row {i}");
                let out = upper
                    .transform(&CallContext::adhoc(), &values(&[&v]))
                    .unwrap();
                assert_eq!(out.values.get(0), Some(v.to_uppercase().as_bytes()));
            }
        });
        bad.join().unwrap();
        good.join().unwrap();
    });
}

#[test]
fn an_exhausted_instance_pool_is_a_typed_error() {
    // Room for one instance in the whole engine: the pool's idle instance holds it, so a second
    // component cannot get one until the first component is dropped.
    let config = RuntimeConfig {
        max_instances: 1,
        ..tight()
    };
    let rt = runtime_with(config);
    let text = load(&rt, &udf("text"));
    assert_eq!(text.idle_instances(), 1);
    let err = rt.load_file(&udf("template")).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::DescribeFailed {
                export: "instance",
                kind: CallErrorKind::Instantiate(_),
                ..
            }
        ),
        "{err}"
    );
    let err = text.instantiate_probe().unwrap_err();
    assert!(matches!(err, CallErrorKind::Instantiate(_)), "{err}");
    // The pooled instance still serves calls.
    assert_eq!(
        call(&text, "uppercase", &values(&["ok"]))
            .unwrap()
            .values
            .get(0),
        Some(&b"OK"[..])
    );
}
