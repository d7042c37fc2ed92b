//! `host check UDF.wasm`: validate a component and say what it offers.

use std::path::PathBuf;

use anyhow::Context;
use sluice_host::udf::{ABI_VERSION, LoadError, MAX_FUNCTION_NAME, UdfRuntime};

/// Arguments of `host check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The component file.
    pub component: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &CheckArgs, runtime: &UdfRuntime) -> anyhow::Result<()> {
    let size = std::fs::metadata(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))?
        .len();
    let component = runtime.load_file(&args.component).map_err(with_hint)?;
    // Loaded and checked: read its producers sections (the bytes are bounded by the loader's
    // size cap, which the file just passed).
    let producers = std::fs::read(&args.component)
        .map(|bytes| super::producers::of(&bytes))
        .unwrap_or_default();
    if args.json {
        let functions: Vec<_> = component
            .functions()
            .iter()
            .map(|f| serde_json::json!({ "name": f.name, "kind": f.kind.wit_name(), "has_inverse": f.has_inverse }))
            .collect();
        let out = serde_json::json!({
            "component": component.name(),
            "path": args.component.display().to_string(),
            "world": component.role().as_str(),
            "abi_version": component.abi_version(),
            "sha256": component.hash(),
            "size": size,
            "language": producers.language,
            "processed_by": producers.processed_by,
            "sdk": producers.sdk,
            "functions": functions,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "component  {}  ({})",
        component.name(),
        args.component.display()
    );
    println!(
        "world      {} (exports {})",
        component.role(),
        component.role().export_name()
    );
    println!(
        "abi        {} (this host speaks {ABI_VERSION})",
        component.abi_version()
    );
    if !producers.language.is_empty() {
        let mut made = Vec::new();
        if !producers.sdk.is_empty() {
            made.push(format!("sdk {}", producers.sdk.join(", ")));
        }
        if !producers.processed_by.is_empty() {
            made.push(format!("built by {}", producers.processed_by.join(", ")));
        }
        let made = if made.is_empty() {
            String::new()
        } else {
            format!(" ({})", made.join("; "))
        };
        println!("language   {}{made}", producers.language.join(", "));
    }
    println!("sha256     {}", component.hash());
    println!("size       {} KiB", size.div_ceil(1024));
    println!("functions  {}", component.functions().len());
    let width = component
        .functions()
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(0)
        // Names are checked at load (at most MAX_FUNCTION_NAME bytes); the cap keeps the
        // formatter's width in range whatever a future check allows.
        .min(MAX_FUNCTION_NAME);
    for f in component.functions() {
        let inverse = if f.has_inverse { ", with inverse" } else { "" };
        println!(
            "  {}#{:<width$}  {}{inverse}",
            component.name(),
            f.name,
            f.kind.wit_name()
        );
    }
    Ok(())
}

/// A load error with what to do about it on a line of its own, as the planner shows it.
pub fn with_hint(e: LoadError) -> anyhow::Error {
    anyhow::anyhow!("{e}\n    hint: {}", e.hint())
}
