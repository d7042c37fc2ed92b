//! `host new NAME --lang rust|python --role ROLE`: a UDF project that builds as it is, the
//! first step of the author's loop (`rpk transform init`, `smdk generate`).
//!
//! Rust: a crate in `udfs/NAME/` (a workspace member there, like the bundled UDFs); Python: a
//! folder in `udfs/python/NAME/` with `pyproject.toml` and `app.py`; JavaScript: a folder in
//! `udfs/js/NAME/` with `package.json` and `app.js`. Each holds one function of the role, and
//! the next commands are printed: `cargo xtask udfs [--python|--js] NAME`, `host check`,
//! `host call`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The language of a new UDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate with the `sluice-guest` SDK.
    Rust,
    /// A Python module with the `guest-sdk/python` SDK, built with componentize-py.
    Python,
    /// A JavaScript module with the `guest-sdk/js` SDK, built with componentize-js.
    Js,
}

/// The world a new UDF serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NewRole {
    /// map, flat_map, filter, map_partitions, transform.
    Transform,
    /// reduce (with an inverse for sliding windows).
    Reducer,
    /// update_state_by_key, map_with_state.
    Updater,
    /// foreach-batch sinks.
    Sink,
}

/// Arguments of `host new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The component's name: jobs call its functions as `NAME#function`. 1–64 of
    /// `[a-z0-9_]`, starting with a letter.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// The role (WIT world) of its functions.
    #[arg(long, value_enum, default_value = "transform")]
    pub role: NewRole,
    /// The folder to write; default `udfs/NAME` (Rust), `udfs/python/NAME` (Python) or
    /// `udfs/js/NAME` (JavaScript) under the current folder, where `cargo xtask udfs` finds it.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    let name = &args.name;
    if name.is_empty()
        || name.len() > 64
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!(
            "`{name}` is not a UDF name: use 1 to 64 of a-z, 0-9 and _, starting with a letter \
             (it names the component file and the `NAME#function` a job writes)"
        );
    }
    let dir = match (&args.dir, args.lang) {
        (Some(dir), _) => dir.clone(),
        (None, Lang::Rust) => PathBuf::from("udfs").join(name),
        (None, Lang::Python) => PathBuf::from("udfs/python").join(name),
        (None, Lang::Js) => PathBuf::from("udfs/js").join(name),
    };
    if dir.exists() {
        bail!(
            "{} already exists; choose another name or --dir",
            dir.display()
        );
    }
    let files = match args.lang {
        Lang::Rust => rust_files(name, args.role),
        Lang::Python => python_files(name, args.role),
        Lang::Js => js_files(name, args.role),
    };
    for (rel, contents) in &files {
        write(&dir.join(rel), contents)?;
    }
    println!("created {} ({} files)", dir.display(), files.len());
    println!();
    println!("next:");
    match args.lang {
        Lang::Python => println!(
            "  scripts/setup-polyglot                    # once: the Python toolchain\n  cargo xtask udfs --python {name}"
        ),
        Lang::Js => println!(
            "  scripts/setup-polyglot                    # once: the JavaScript toolchain\n  cargo xtask udfs --js {name}"
        ),
        _ => println!("  cargo xtask udfs {name}"),
    }
    println!("  host check dist/udfs/{name}.wasm");
    let call = match args.role {
        NewRole::Transform => {
            format!("echo 'sluice gates' | host call dist/udfs/{name}.wasm#shout")
        }
        NewRole::Reducer => {
            format!("printf 'a\\t1\\na\\t2\\n' | host call --format kv dist/udfs/{name}.wasm#add")
        }
        NewRole::Updater => format!(
            "printf 'a\\t1\\na\\t2\\n' | host call --format kv dist/udfs/{name}.wasm#running_total"
        ),
        NewRole::Sink => format!("echo 'one record' | host call dist/udfs/{name}.wasm#count_batch"),
    };
    println!("  {call}");
    Ok(())
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn rust_files(name: &str, role: NewRole) -> Vec<(&'static str, String)> {
    let cargo = format!(
        r#"[package]
name = "udf-{package}"
description = "The Sluice UDF `{name}` ({role} world)"
version.workspace = true
edition.workspace = true
rust-version.workspace = true
license.workspace = true
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
sluice-guest.workspace = true
"#,
        package = name.replace('_', "-"),
        role = role_name(role),
    );
    let body = match role {
        NewRole::Transform => {
            r#"use sluice_guest::export_transforms;

/// A line in upper case.
pub fn shout(line: &str) -> String {
    line.to_uppercase()
}

export_transforms! {
    map shout,
}
"#
        }
        NewRole::Reducer => {
            r#"use sluice_guest::export_reducers;

/// `a + b`.
pub fn add(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

/// `a - b`: takes `b` back out of a sum, so a sliding window updates incrementally.
pub fn subtract(a: i64, b: i64) -> i64 {
    a.wrapping_sub(b)
}

export_reducers! {
    add(inverse = subtract),
}
"#
        }
        NewRole::Updater => {
            r#"use sluice_guest::export_updaters;

/// A key's total: the old one (0 if none) plus this batch's values.
pub fn running_total(new: &[i64], old: Option<i64>) -> Option<i64> {
    Some(old.unwrap_or(0).wrapping_add(new.iter().sum::<i64>()))
}

export_updaters! {
    update running_total,
}
"#
        }
        NewRole::Sink => {
            r#"use sluice_guest::{BatchInfo, Input, export_sinks, log};

/// Log how many records each partition of a batch holds.
pub fn count_batch(info: BatchInfo, input: Input<'_>) -> Result<(), String> {
    sluice_guest::log::counter("records_seen", input.len() as u64);
    log!(info, "batch {} partition {}: {} records", info.batch_id, info.partition, input.len());
    Ok(())
}

export_sinks! {
    foreach_batch count_batch,
}
"#
        }
    };
    let lib = format!(
        "//! The Sluice UDF `{name}`: build it with `cargo xtask udfs {name}` into\n//! `dist/udfs/{name}.wasm`; jobs call its functions as `{name}#function`.\n\n{body}"
    );
    vec![("Cargo.toml", cargo), ("src/lib.rs", lib)]
}

fn python_files(name: &str, role: NewRole) -> Vec<(&'static str, String)> {
    let pyproject = format!(
        r#"# The Sluice UDF `{name}` in Python: `cargo xtask udfs --python {name}` builds it into
# dist/udfs/{name}.wasm with componentize-py (scripts/setup-polyglot installs it).
[project]
name = "sluice-udf-{package}"
version = "0.1.0"
requires-python = ">=3.11"

[tool.sluice]
# The world of wit/udf.wit: transform, reducer, updater or sink (app.py's export must match).
world = "{role}"
module = "app"
"#,
        package = name.replace('_', "-"),
        role = role_name(role),
    );
    let body = match role {
        NewRole::Transform => {
            r#"@sluice.map
def shout(line: str) -> str:
    """A line in upper case."""
    return line.upper()


WitWorld, Transforms = sluice.export_transforms(shout)
"#
        }
        NewRole::Reducer => {
            r#"def subtract(a: int, b: int) -> int:
    """`a - b`: takes `b` back out of a sum, so a sliding window updates incrementally."""
    return a - b


@sluice.reduce(inverse=subtract)
def add(a: int, b: int) -> int:
    """`a + b`."""
    return a + b


WitWorld, Reducers = sluice.export_reducers(add)
"#
        }
        NewRole::Updater => {
            r#"@sluice.update
def running_total(new: list[int], old: int | None) -> int | None:
    """A key's total: the old one (0 if none) plus this batch's values."""
    return (old or 0) + sum(new)


WitWorld, Updaters = sluice.export_updaters(running_total)
"#
        }
        NewRole::Sink => {
            r#"@sluice.foreach_batch
def count_batch(info: sluice.BatchInfo, records: list[bytes]) -> None:
    """Log how many records each partition of a batch holds."""
    sluice.counter("records_seen", len(records))
    sluice.log.info(f"batch {info.batch_id} partition {info.partition}: {len(records)} records")


WitWorld, Sinks = sluice.export_sinks(count_batch)
"#
        }
    };
    let app = format!(
        "\"\"\"The Sluice UDF `{name}`: build it with `cargo xtask udfs --python {name}` into\n`dist/udfs/{name}.wasm`; jobs call its functions as `{name}#function`.\n\nImport every module here at the top: a component has no files at run time.\n\"\"\"\n\nimport sluice\n\n\n{body}"
    );
    vec![("pyproject.toml", pyproject), ("app.py", app)]
}

fn js_files(name: &str, role: NewRole) -> Vec<(&'static str, String)> {
    let package = format!(
        r#"{{
  "name": "sluice-udf-{package}",
  "version": "0.1.0",
  "private": true,
  "description": "The Sluice UDF `{name}` in JavaScript: `cargo xtask udfs --js {name}` builds it into dist/udfs/{name}.wasm",
  "type": "module",
  "sluice": {{ "world": "{role}", "main": "app.js" }}
}}
"#,
        package = name.replace('_', "-"),
        role = role_name(role),
    );
    let body = match role {
        NewRole::Transform => {
            r#"// A line in upper case.
const shout = sluice.map((line) => line.toUpperCase(), { name: "shout" });

export const { abiVersion, functions, transforms } = sluice.exportTransforms(shout);
"#
        }
        NewRole::Reducer => {
            r#"// `a + b`, with `a - b` as its inverse so a sliding window updates incrementally.
const add = sluice.reduce((a, b) => a + b, { name: "add", in: "int", inverse: (a, b) => a - b });

export const { abiVersion, functions, reducers } = sluice.exportReducers(add);
"#
        }
        NewRole::Updater => {
            r#"// A key's total: the old one (0 if none) plus this batch's values.
const runningTotal = sluice.update(
  (values, old) => values.reduce((a, b) => a + b, old ?? 0),
  { name: "running_total", in: "int", state: "int" },
);

export const { abiVersion, functions, updaters } = sluice.exportUpdaters(runningTotal);
"#
        }
        NewRole::Sink => {
            r#"// Log how many records each partition of a batch holds.
const countBatch = sluice.foreachBatch((info, records) => {
  sluice.counter("records_seen", records.length);
  sluice.log("info", `batch ${info.batchId} partition ${info.partition}: ${records.length} records`);
}, { name: "count_batch", in: "bytes" });

export const { abiVersion, functions, sinks } = sluice.exportSinks(countBatch);
"#
        }
    };
    let app = format!(
        "// The Sluice UDF `{name}`: build it with `cargo xtask udfs --js {name}` into\n// dist/udfs/{name}.wasm; jobs call its functions as `{name}#function`. The build puts the\n// SDK beside this file as ./sluice.js.\nimport * as sluice from \"./sluice.js\";\n\n{body}"
    );
    vec![("package.json", package), ("app.js", app)]
}

fn role_name(role: NewRole) -> &'static str {
    match role {
        NewRole::Transform => "transform",
        NewRole::Reducer => "reducer",
        NewRole::Updater => "updater",
        NewRole::Sink => "sink",
    }
}
