//! Components built against an older WIT package (`sluice:udf@0.1.0`, whose function kinds were
//! strings) are refused at load with a message naming both versions and a hint that says how to
//! rebuild: in the library, in `host check`, and when a job names one.
//!
//! The fixture `tests/fixtures/components/text-wit-0.1.0.wasm` is the bundled `text` component
//! as `cargo xtask udfs` built it before the package moved to 0.2.0.

use std::path::PathBuf;
use std::process::Command;

use sluice_host::udf::{ABI_VERSION, FunctionKind, LoadError, RuntimeConfig, WIT_VERSION};
use sluice_tests::{JobDir, describe, host_bin, load, root, runtime_with, udf};

fn old_component() -> PathBuf {
    root().join("tests/fixtures/components/text-wit-0.1.0.wasm")
}

#[test]
fn the_library_refuses_a_0_1_0_component_with_a_typed_error() {
    let runtime = runtime_with(RuntimeConfig::default());
    let err = match runtime.load_file(&old_component()) {
        Err(e) => e,
        Ok(c) => panic!("a sluice:udf 0.1.0 component loaded: {:?}", c.functions()),
    };
    match &err {
        LoadError::WitVersion {
            name,
            found,
            expected,
        } => {
            assert_eq!(name, "text-wit-0.1.0");
            assert_eq!(found, "0.1.0");
            assert_eq!(*expected, WIT_VERSION);
        }
        other => panic!("expected LoadError::WitVersion, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("built against sluice:udf 0.1.0")
            && message.contains(&format!("this host speaks sluice:udf {WIT_VERSION}")),
        "{message}"
    );
    assert!(err.hint().contains("cargo xtask udfs"), "{}", err.hint());
    assert!(err.hint().contains("sluice-guest"), "{}", err.hint());

    // The same component rebuilt today loads, with typed kinds.
    let text = load(&runtime, &udf("text"));
    assert_eq!(text.abi_version(), ABI_VERSION);
    let split = text.function("split_words").expect("split_words");
    assert_eq!(split.info().kind, FunctionKind::FlatMap);
}

#[test]
fn host_check_refuses_it_with_the_versions_and_the_hint() {
    let cache = tempfile::tempdir().expect("a temporary folder");
    let out = Command::new(host_bin())
        .arg("check")
        .arg(old_component())
        .env("SLUICE_COMPONENT_CACHE", cache.path())
        .output()
        .expect("run host check");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "`text-wit-0.1.0` was built against sluice:udf 0.1.0, but this host speaks sluice:udf {WIT_VERSION}"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: rebuild it with the sluice-guest of this host: `cargo xtask udfs`"),
        "{err}"
    );
}

#[test]
fn a_job_naming_it_fails_planning_with_the_versions_and_the_hint() {
    let dir = JobDir::new();
    std::fs::copy(old_component(), dir.path().join("udfs/oldtext.wasm")).expect("copy");
    dir.file("in/a.txt", "to be\n");
    dir.manifest(
        "[job]\nname = \"old\"\nbatch_interval = \"100ms\"\n\n\
         [[sources]]\nname = \"lines\"\nkind = \"directory\"\npath = \"in\"\n\n\
         [[streams]]\nname = \"words\"\nop = \"flat_map\"\ninput = \"lines\"\nudf = \"oldtext#split_words\"\n\n\
         [[sinks]]\nkind = \"print\"\ninput = \"words\"\n",
    );
    let out = dir.run_until_idle();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "nothing runs: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job.toml:10: stream 'words'"), "{err}");
    assert!(
        err.contains(&format!(
            "`oldtext` was built against sluice:udf 0.1.0, but this host speaks sluice:udf {WIT_VERSION}"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: rebuild it with the sluice-guest"),
        "{err}"
    );
}
