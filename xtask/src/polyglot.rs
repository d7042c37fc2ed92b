//! UDFs in other languages than Rust, built by their own toolchains against `wit/udf.wit`.
//!
//! **Python**: a folder with `pyproject.toml` (`[tool.sluice] world = "transform"`, and
//! `module`, default `app`) and the module, built with componentize-py from the venv that
//! `scripts/setup-polyglot` installs under the project's cache folder. The SDK in
//! `guest-sdk/python/` is put on the module path. `--stub-wasi` replaces every WASI import with a
//! trapping stub, so the component imports nothing but `sluice:udf/logging` and
//! `sluice:udf/metrics`, which is all the host links. A build takes ~15 s of CPU and writes
//! ~18 MB, so a component is rebuilt only when its inputs changed: a fingerprint of its folder,
//! the SDK, the WIT and the toolchain's version is kept beside it as `.NAME.wasm.inputs`.
//!
//! **JavaScript**: a folder with `package.json` (`"sluice": {"world": "transform", "main":
//! "app.js"}`) and its modules, built with componentize-js from the `npm ci` that
//! `scripts/setup-polyglot` makes under the cache folder, its WASI features disabled (`-d http
//! fetch-event stdio random clocks`), so that it too imports only the host's two interfaces. The
//! folder is staged beside the output with `guest-sdk/js/sluice.js`, which the modules import
//! as `./sluice.js`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The componentize-py release `scripts/setup-polyglot` installs; a different one is refused.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The worlds of `wit/udf.wit`.
const WORLDS: [&str; 4] = ["transform", "reducer", "updater", "sink"];

/// A Python UDF folder to build.
pub struct PythonUdf {
    /// The component's name: the folder's name.
    name: String,
    /// The folder holding `pyproject.toml` and the module.
    dir: PathBuf,
    /// The module componentize-py imports (`[tool.sluice] module`, default `app`).
    module: String,
    /// The world it is built against.
    world: String,
    /// Where the component goes.
    out: PathBuf,
}

/// `[tool.sluice]` of a UDF's `pyproject.toml`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SluiceTable {
    world: String,
    #[serde(default = "default_module")]
    module: String,
}

fn default_module() -> String {
    "app".to_string()
}

/// Every Python UDF folder directly under `dir` (none if `dir` does not exist), those in `names`
/// only when names are given.
pub fn python_udfs(dir: &Path, out_dir: &Path, names: &[&str]) -> Result<Vec<PythonUdf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut udfs = Vec::new();
    for entry in entries {
        let path = entry.path();
        let manifest = path.join("pyproject.toml");
        if !manifest.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !names.is_empty() && !names.contains(&name.as_str()) {
            continue;
        }
        udfs.push(python_udf_at(&path, out_dir)?);
    }
    Ok(udfs)
}

/// The Python UDF in the folder `path` (one with `pyproject.toml`), named after the folder.
pub fn python_udf_at(path: &Path, out_dir: &Path) -> Result<PythonUdf> {
    let manifest = path.join("pyproject.toml");
    let name = path
        .file_name()
        .with_context(|| format!("{} has no folder name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "reading {} (a Python UDF folder has one)",
            manifest.display()
        )
    })?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let sluice = table
        .get("tool")
        .and_then(|t| t.get("sluice"))
        .cloned()
        .with_context(|| {
            format!(
                "{} has no [tool.sluice] table; add `world = \"transform\"` (or reducer, updater, sink)",
                manifest.display()
            )
        })?;
    let sluice: SluiceTable = sluice
        .try_into()
        .with_context(|| format!("[tool.sluice] of {}", manifest.display()))?;
    if !WORLDS.contains(&sluice.world.as_str()) {
        bail!(
            "{}: world = {:?} is not one of {}",
            manifest.display(),
            sluice.world,
            WORLDS.join(", ")
        );
    }
    Ok(PythonUdf {
        out: out_dir.join(format!("{name}.wasm")),
        name,
        dir: path.to_path_buf(),
        module: sluice.module,
        world: sluice.world,
    })
}

/// The project's cache folder (`$SLUICE_CACHE`, else `~/.cache/sluice`), as the scripts use it.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set (nor SLUICE_CACHE)")?;
    Ok(PathBuf::from(home).join(".cache/sluice"))
}

/// componentize-py from the venv `scripts/setup-polyglot` makes, checked to be the pinned
/// release; a clear error saying how to install it otherwise.
fn componentize_py() -> Result<(PathBuf, String)> {
    let tool = cache_dir()?.join("venv-python-udf/bin/componentize-py");
    let fix = format!(
        "run scripts/setup-polyglot (it installs componentize-py {COMPONENTIZE_PY} into {})",
        tool.parent()
            .and_then(Path::parent)
            .unwrap_or(&tool)
            .display()
    );
    if !tool.is_file() {
        bail!(
            "the Python UDF toolchain is missing: {} does not exist; {fix}",
            tool.display()
        );
    }
    let out = Command::new(&tool)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version; {fix}", tool.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if version != format!("componentize-py {COMPONENTIZE_PY}") {
        bail!(
            "{} is {version:?}, not componentize-py {COMPONENTIZE_PY}; {fix}",
            tool.display()
        );
    }
    Ok((tool, version))
}

/// FNV-1a, 64 bits: a fingerprint of a component's inputs that stays the same across builds
/// of xtask (unlike std's `DefaultHasher`).
struct Fingerprint(u64);

impl Fingerprint {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    /// Every file under `dir`, in name order, but caches and hidden files.
    fn add_tree(&mut self, root: &Path, dir: &Path) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" || name == "node_modules" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                self.add_tree(root, &path)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                self.add(rel.to_string_lossy().as_bytes());
                self.add(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                );
            }
        }
        Ok(())
    }
}

/// The fingerprint file kept beside a component.
fn stamp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.inputs"))
}

/// Say in the component's own `producers` section that it is Python, built by `tool` with this
/// SDK, so that `host check` names the source language rather than the interpreter's C.
fn record_producers(path: &Path, tool: &str) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut producers = wasm_metadata::Producers::empty();
    producers.add("language", "Python", "");
    let (name, version) = tool.split_once(' ').unwrap_or((tool, ""));
    producers.add("processed-by", name, version);
    producers.add("sdk", "sluice-python", env!("CARGO_PKG_VERSION"));
    let bytes = producers
        .add_to_wasm(&bytes)
        .with_context(|| format!("adding a producers section to {}", path.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Build each Python UDF with componentize-py, skipping those whose inputs did not change.
pub fn build_python(root: &Path, udfs: &[PythonUdf]) -> Result<()> {
    let (tool, version) = componentize_py()?;
    let sdk = root.join("guest-sdk/python");
    let wit = root.join("wit");
    for udf in udfs {
        let mut fingerprint = Fingerprint::new();
        // What this xtask does to a build (bump when it changes, e.g. the producers section).
        fingerprint.add(b"xtask-python-1");
        fingerprint.add(version.as_bytes());
        fingerprint.add(udf.world.as_bytes());
        fingerprint.add(udf.module.as_bytes());
        fingerprint.add_tree(root, &udf.dir)?;
        fingerprint.add_tree(root, &sdk.join("sluice"))?;
        fingerprint.add_tree(root, &wit)?;
        let stamp = format!("{:016x}\n", fingerprint.0);
        let stamp_file = stamp_path(&udf.out);
        if udf.out.is_file() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
            eprintln!("xtask: {} is up to date", udf.out.display());
            continue;
        }
        if let Some(parent) = udf.out.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        eprintln!(
            "xtask: building the Python UDF {} ({} world) with {version}",
            udf.name, udf.world
        );
        let tmp = udf.out.with_extension("wasm.tmp");
        let status = Command::new(&tool)
            .current_dir(root)
            // Only the UDF's folder and the SDK are the module path: no site-packages of
            // whatever venv the caller has active.
            .env_remove("VIRTUAL_ENV")
            .env_remove("PYTHONPATH")
            .arg("--quiet")
            .arg("--wit-path")
            .arg(&wit)
            .args(["--world", &udf.world, "componentize", &udf.module])
            .arg("--python-path")
            .arg(&udf.dir)
            .arg("--python-path")
            .arg(&sdk)
            .arg("--stub-wasi")
            .arg("--output")
            .arg(&tmp)
            .status()
            .with_context(|| format!("running {}", tool.display()))?;
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "componentize-py failed to build {} (see above: an exception raised while \
                 importing {}.py, e.g. an annotation no codec reads, fails the build)",
                udf.dir.display(),
                udf.module
            );
        }
        record_producers(&tmp, &version)?;
        std::fs::rename(&tmp, &udf.out)?;
        std::fs::write(&stamp_file, &stamp)
            .with_context(|| format!("writing {}", stamp_file.display()))?;
        let size = std::fs::metadata(&udf.out)?.len();
        eprintln!("xtask: {} ({} KiB)", udf.out.display(), size.div_ceil(1024));
    }
    Ok(())
}

/// The componentize-js release `guest-sdk/js/package-lock.json` pins.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// A JavaScript UDF folder to build.
pub struct JsUdf {
    name: String,
    dir: PathBuf,
    main: String,
    world: String,
    out: PathBuf,
}

/// `"sluice"` of a JavaScript UDF's `package.json`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SluiceJs {
    world: String,
    #[serde(default = "default_main")]
    main: String,
}

fn default_main() -> String {
    "app.js".to_string()
}

/// Every JavaScript UDF folder directly under `dir`, those in `names` only when names are given.
pub fn js_udfs(dir: &Path, out_dir: &Path, names: &[&str]) -> Result<Vec<JsUdf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut udfs = Vec::new();
    for entry in entries {
        let path = entry.path();
        let manifest = path.join("package.json");
        if !manifest.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !names.is_empty() && !names.contains(&name.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let package: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", manifest.display()))?;
        let sluice = package.get("sluice").cloned().with_context(|| {
            format!(
                "{} has no \"sluice\" object; add \"sluice\": {{\"world\": \"transform\"}}",
                manifest.display()
            )
        })?;
        let sluice: SluiceJs = serde_json::from_value(sluice)
            .with_context(|| format!("\"sluice\" of {}", manifest.display()))?;
        if !WORLDS.contains(&sluice.world.as_str()) {
            bail!(
                "{}: world {:?} is not one of {}",
                manifest.display(),
                sluice.world,
                WORLDS.join(", ")
            );
        }
        udfs.push(JsUdf {
            out: out_dir.join(format!("{name}.wasm")),
            name,
            dir: path,
            main: sluice.main,
            world: sluice.world,
        });
    }
    Ok(udfs)
}

/// componentize-js's command line from the `npm ci` of `scripts/setup-polyglot`.
fn componentize_js() -> Result<PathBuf> {
    let js = cache_dir()?.join("js-udf");
    let cli = js.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    let fix = format!(
        "run scripts/setup-polyglot (it installs componentize-js {COMPONENTIZE_JS} into {} with npm ci)",
        js.display()
    );
    if !cli.is_file() {
        bail!(
            "the JavaScript UDF toolchain is missing: {} does not exist; {fix}",
            cli.display()
        );
    }
    let package = cli.with_file_name("../package.json");
    let text = std::fs::read_to_string(&package)
        .with_context(|| format!("reading {}; {fix}", package.display()))?;
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(String::from))
        .unwrap_or_default();
    if version != COMPONENTIZE_JS {
        bail!(
            "componentize-js in {} is {version:?}, not {COMPONENTIZE_JS}; {fix}",
            js.display()
        );
    }
    Ok(cli)
}

/// Build each JavaScript UDF with componentize-js, skipping those whose inputs did not change.
pub fn build_js(root: &Path, udfs: &[JsUdf]) -> Result<()> {
    let cli = componentize_js()?;
    let version = format!("componentize-js {COMPONENTIZE_JS}");
    let sdk = root.join("guest-sdk/js/sluice.js");
    let wit = root.join("wit");
    for udf in udfs {
        let mut fingerprint = Fingerprint::new();
        fingerprint.add(b"xtask-js-1");
        fingerprint.add(version.as_bytes());
        fingerprint.add(udf.world.as_bytes());
        fingerprint.add(udf.main.as_bytes());
        fingerprint.add_tree(root, &udf.dir)?;
        fingerprint
            .add(&std::fs::read(&sdk).with_context(|| format!("reading {}", sdk.display()))?);
        fingerprint.add_tree(root, &wit)?;
        let stamp = format!("{:016x}\n", fingerprint.0);
        let stamp_file = stamp_path(&udf.out);
        if udf.out.is_file() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
            eprintln!("xtask: {} is up to date", udf.out.display());
            continue;
        }
        let parent = udf.out.parent().context("an output folder")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        // The UDF's files and the SDK side by side, so `./sluice.js` resolves.
        let staging = parent.join(format!(".{}.staging", udf.name));
        let _ = std::fs::remove_dir_all(&staging);
        copy_dir(&udf.dir, &staging)?;
        std::fs::copy(&sdk, staging.join("sluice.js"))
            .with_context(|| format!("copying {}", sdk.display()))?;
        eprintln!(
            "xtask: building the JavaScript UDF {} ({} world) with {version}",
            udf.name, udf.world
        );
        let tmp = udf.out.with_extension("wasm.tmp");
        let status = Command::new("node")
            .current_dir(root)
            .arg(&cli)
            .arg(staging.join(&udf.main))
            .arg("--wit")
            .arg(&wit)
            .args(["--world-name", &udf.world])
            .args([
                "--disable",
                "http",
                "fetch-event",
                "stdio",
                "random",
                "clocks",
            ])
            .arg("--out")
            .arg(&tmp)
            .status()
            .context("running node (is it installed? scripts/setup-polyglot checks)")?;
        let _ = std::fs::remove_dir_all(&staging);
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "componentize-js failed to build {} (see above: an exception thrown while the \
                 module is evaluated fails the build)",
                udf.dir.display()
            );
        }
        record_js_producers(&tmp)?;
        std::fs::rename(&tmp, &udf.out)?;
        std::fs::write(&stamp_file, &stamp)
            .with_context(|| format!("writing {}", stamp_file.display()))?;
        let size = std::fs::metadata(&udf.out)?.len();
        eprintln!("xtask: {} ({} KiB)", udf.out.display(), size.div_ceil(1024));
    }
    Ok(())
}

/// componentize-js names the language itself; add the SDK.
fn record_js_producers(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut producers = wasm_metadata::Producers::empty();
    producers.add("sdk", "sluice-js", env!("CARGO_PKG_VERSION"));
    let bytes = producers
        .add_to_wasm(&bytes)
        .with_context(|| format!("adding a producers section to {}", path.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Copy the files of `from` (not hidden ones, not node_modules) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.starts_with('.') || text == "node_modules" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name))?;
        } else {
            std::fs::copy(&path, to.join(&name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}
