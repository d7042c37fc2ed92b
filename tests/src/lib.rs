//! Helpers shared by the end-to-end tests and benchmarks: where the built components and the
//! `host` binary are, building them on first use so `cargo test` works from a fresh clone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use sluice_host::metrics::Registry;
use sluice_host::udf::{RuntimeConfig, UdfComponent, UdfRuntime};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Run `f` once per test process and, through a lock file, once at a time across processes.
fn once_locked(cell: &'static OnceLock<()>, name: &str, f: impl FnOnce()) {
    cell.get_or_init(|| {
        let dist = root().join("dist");
        std::fs::create_dir_all(&dist).expect("create dist/");
        let lock =
            File::create(dist.join(format!(".{name}.lock"))).expect("create a lock file in dist/");
        lock.lock().expect("lock dist/");
        f();
    });
}

/// Build every component (bundled UDFs and hostile test guests) once per test process; cargo
/// rebuilds only what changed, so a stale component is never tested.
fn ensure_components() {
    static BUILT: OnceLock<()> = OnceLock::new();
    once_locked(&BUILT, "components", || {
        let status = cargo()
            .args(["xtask", "udfs", "--tests"])
            .status()
            .expect("run cargo xtask");
        assert!(status.success(), "`cargo xtask udfs --tests` failed");
    });
}

/// The path of a bundled component, e.g. `udf("text")` for `dist/udfs/text.wasm`.
pub fn udf(name: &str) -> PathBuf {
    ensure_components();
    root().join("dist/udfs").join(format!("{name}.wasm"))
}

/// The path of a test guest, e.g. `test_guest("hostile")`.
pub fn test_guest(name: &str) -> PathBuf {
    ensure_components();
    root().join("dist/test-guests").join(format!("{name}.wasm"))
}

/// The `host` binary of the same profile as this test, built (or brought up to date) once per
/// test process.
pub fn host_bin() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf();
    once_locked(&BUILT, "host-bin", || {
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "-p", "sluice-host", "--bin", "host"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("run cargo build").success(),
            "building the host binary failed"
        );
    });
    profile_dir.join("host")
}

/// A runtime with `config` and a fresh metrics registry.
pub fn runtime_with(config: RuntimeConfig) -> UdfRuntime {
    UdfRuntime::new(config, Arc::new(Registry::default())).expect("start the UDF runtime")
}

/// Load a component file into `runtime`, panicking with the error if it fails.
pub fn load(runtime: &UdfRuntime, path: &Path) -> Arc<UdfComponent> {
    runtime
        .load_file(path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}
