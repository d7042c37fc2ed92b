//! Project chores that cargo alone does not do: building UDF crates into components.
//!
//! `cargo xtask udfs [NAME…]` builds the crates under `udfs/` for `wasm32-unknown-unknown` and
//! wraps each core module into a component in `dist/udfs/NAME.wasm`; `--tests` builds the hostile
//! guests of `tests/guests/` into `dist/test-guests/` as well; `--python` also builds the Python
//! UDFs of `udfs/python/` (and, with `--tests`, `tests/guests-python/`) with componentize-py
//! (see `polyglot.rs`). `cargo xtask componentize IN OUT` wraps any core module built with
//! `sluice-guest`. `cargo xtask layers` checks that no module of `host/src` uses one of a higher
//! layer (`host/layers.toml`; see `layers.rs`).

mod layers;
mod polyglot;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "udf";

const USAGE: &str = "\
Usage:
  cargo xtask udfs [--tests] [--python] [--js] [--out DIR] [NAME…]
                build UDFs into components
      NAME      a folder under udfs/ (default: all of them); with --tests also tests/guests/;
                with --python also udfs/python/ (and tests/guests-python/), or the path of
                a Python UDF folder anywhere (a NAME with a slash, e.g. ./my_udf)
      --tests   also build the hostile guests of tests/guests/ into dist/test-guests/
      --python  also build the Python UDFs with componentize-py (scripts/setup-polyglot
                installs it; about 15 s and 18 MB a component, rebuilt only when changed)
      --js      also build the JavaScript UDFs of udfs/js/ (and tests/guests-js/) with
                componentize-js (scripts/setup-polyglot; about 10 s and 12 MB a component)
      --out DIR write every component into DIR instead of dist/udfs/ and dist/test-guests/
  cargo xtask componentize IN.wasm OUT.wasm
                wrap a core module built with sluice-guest into a component
  cargo xtask layers [--markdown]
                fail on a module of host/src using one of a higher layer (host/layers.toml);
                --markdown prints the layers as a table for docs/architecture.md

Examples:
  cargo xtask udfs                 # every bundled UDF -> dist/udfs/*.wasm
  cargo xtask udfs text template   # just udfs/text and udfs/template
  cargo xtask udfs --python text_py   # just the Python udfs/python/text_py
";

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("udfs") => build_udfs(&UdfArgs::parse(&args[1..])?),
        Some("componentize") => match &args[1..] {
            [input, output] => componentize(Path::new(input), Path::new(output)),
            _ => bail!("componentize takes IN.wasm OUT.wasm\n\n{USAGE}"),
        },
        Some("layers") => layers::run(&workspace_root()?, &args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// What `cargo xtask udfs` was asked to build.
struct UdfArgs {
    names: Vec<String>,
    tests: bool,
    python: bool,
    js: bool,
    out: Option<PathBuf>,
}

impl UdfArgs {
    fn parse(args: &[String]) -> Result<Self> {
        let mut parsed = UdfArgs {
            names: Vec::new(),
            tests: false,
            python: false,
            js: false,
            out: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--tests" => parsed.tests = true,
                "--python" => parsed.python = true,
                "--js" => parsed.js = true,
                "--out" => {
                    let dir = args.next().context("--out takes a folder")?;
                    parsed.out = Some(PathBuf::from(dir));
                }
                flag if flag.starts_with("--") => bail!("unknown flag `{flag}`\n\n{USAGE}"),
                name => parsed.names.push(name.to_string()),
            }
        }
        Ok(parsed)
    }

    /// Where components of `default` (dist/udfs or dist/test-guests) go.
    fn out_dir(&self, default: PathBuf) -> PathBuf {
        self.out.clone().unwrap_or(default)
    }
}

/// A guest crate to build: its package name and the component name it becomes.
struct Guest {
    package: String,
    component: String,
    out_dir: PathBuf,
}

fn workspace_root() -> Result<PathBuf> {
    // `cargo run` sets CARGO_MANIFEST_DIR for the process: prefer it to the compile-time value,
    // which is stale when one target directory is shared by clones at different paths.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    Ok(manifest_dir
        .parent()
        .context("xtask lives one folder below the workspace root")?
        .to_path_buf())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The package name declared in a crate folder's Cargo.toml.
fn package_name(crate_dir: &Path) -> Result<String> {
    let manifest = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("{} has no `name = \"…\"`", manifest.display()))
}

fn guests_in(dir: &Path, out_dir: &Path, names: &[&str]) -> Result<Vec<Guest>> {
    let mut guests = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if !path.join("Cargo.toml").is_file() {
            continue;
        }
        let folder = entry.file_name().to_string_lossy().into_owned();
        if !names.is_empty() && !names.contains(&folder.as_str()) {
            continue;
        }
        guests.push(Guest {
            package: package_name(&path)?,
            component: folder.replace('-', "_"),
            out_dir: out_dir.to_path_buf(),
        });
    }
    Ok(guests)
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running `rustup target list --installed` (is rustup on PATH?)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the Rust target {TARGET} (once)");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed; run it by hand and try again");
    }
    Ok(())
}

fn build_udfs(args: &UdfArgs) -> Result<()> {
    let root = workspace_root()?;
    // A name with a slash is a Python UDF's folder anywhere (e.g. one `host new` wrote).
    let (paths, names): (Vec<&str>, Vec<&str>) = args
        .names
        .iter()
        .map(String::as_str)
        .partition(|n| n.contains('/'));
    if !paths.is_empty() && !args.python {
        bail!(
            "{} is a folder: building a UDF from a folder path takes --python",
            paths[0]
        );
    }
    // Only folders named: build just those.
    let only_paths = names.is_empty() && !paths.is_empty();
    let names = names.as_slice();
    let mut guests = Vec::new();
    let mut python = Vec::new();
    for path in &paths {
        let dir = std::fs::canonicalize(path)
            .with_context(|| format!("{path} is not a folder with a Python UDF"))?;
        python.push(polyglot::python_udf_at(
            &dir,
            &args.out_dir(root.join("dist/udfs")),
        )?);
    }
    if only_paths {
        return polyglot::build_python(&root, &python);
    }
    guests.extend(guests_in(
        &root.join("udfs"),
        &args.out_dir(root.join("dist/udfs")),
        names,
    )?);
    if args.tests {
        guests.extend(guests_in(
            &root.join("tests/guests"),
            &args.out_dir(root.join("dist/test-guests")),
            names,
        )?);
    }
    if args.python {
        python.extend(polyglot::python_udfs(
            &root.join("udfs/python"),
            &args.out_dir(root.join("dist/udfs")),
            names,
        )?);
        if args.tests {
            python.extend(polyglot::python_udfs(
                &root.join("tests/guests-python"),
                &args.out_dir(root.join("dist/test-guests")),
                names,
            )?);
        }
    }
    let mut js = Vec::new();
    if args.js {
        js = polyglot::js_udfs(
            &root.join("udfs/js"),
            &args.out_dir(root.join("dist/udfs")),
            names,
        )?;
        if args.tests {
            js.extend(polyglot::js_udfs(
                &root.join("tests/guests-js"),
                &args.out_dir(root.join("dist/test-guests")),
                names,
            )?);
        }
    }
    if guests.is_empty() && python.is_empty() && js.is_empty() {
        let folders = if args.python {
            "udfs/ and udfs/python/"
        } else {
            "udfs/ (udfs/python/ with --python)"
        };
        bail!("no UDF matches {names:?}; the folders under {folders} are the names");
    }
    if !guests.is_empty() {
        build_rust(&root, &guests)?;
    }
    if !python.is_empty() {
        polyglot::build_python(&root, &python)?;
    }
    if !js.is_empty() {
        polyglot::build_js(&root, &js)?;
    }
    Ok(())
}

fn build_rust(root: &Path, guests: &[Guest]) -> Result<()> {
    ensure_wasm_target()?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(root)
        .args(["build", "--quiet", "--profile", PROFILE, "--target", TARGET]);
    for guest in guests {
        cargo.args(["--package", &guest.package]);
    }
    eprintln!("xtask: building {} UDF crate(s) for {TARGET}", guests.len());
    let status = cargo.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build of the UDF crates failed (see above)");
    }
    let built = target_dir(root).join(TARGET).join(PROFILE);
    for guest in guests {
        let module = built.join(format!("{}.wasm", guest.package.replace('-', "_")));
        std::fs::create_dir_all(&guest.out_dir)?;
        let out = guest.out_dir.join(format!("{}.wasm", guest.component));
        componentize(&module, &out)?;
    }
    Ok(())
}

fn componentize(input: &Path, output: &Path) -> Result<()> {
    let module = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| {
            format!(
                "{} is not a core module built with sluice-guest",
                input.display()
            )
        })?
        .validate(true)
        .encode()
        .with_context(|| format!("wrapping {} into a component", input.display()))?;
    // The guest profile strips rustc's own producers section; say the language at the top,
    // where `host check` reads it.
    let mut producers = wasm_metadata::Producers::empty();
    producers.add("language", "Rust", "");
    let component = producers
        .add_to_wasm(&component)
        .with_context(|| format!("adding a producers section to {}", output.display()))?;
    // Write beside, then rename: a reader never sees half a component.
    let tmp = output.with_extension("wasm.tmp");
    std::fs::write(&tmp, &component).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output)?;
    eprintln!(
        "xtask: {} ({} KiB)",
        output.display(),
        component.len() / 1024
    );
    Ok(())
}
