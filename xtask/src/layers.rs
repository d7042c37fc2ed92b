//! `cargo xtask layers`: the layering of `host/src`, held by a check.
//!
//! `host/layers.toml` lists the layers lowest first, each with its modules (the top-level
//! folders and files of `host/src`) and what each owns. A module may use modules of lower
//! layers and itself, nothing else. The check reads every `.rs` file under `host/src`,
//! attributes it to its top-level module, finds every reference to another top-level module
//! and reports each that does not point down:
//!
//! ```text
//! host/src/sources/directory.rs:13: sources (layer 4) uses plan (layer 8): a back-edge; move the type down or invert the dependency
//! ```
//!
//! A reference is a path in code (in `use` items, grouped or not, and in expressions, types,
//! attributes) that starts with `crate::` or `$crate::`, with `super::` climbing to the crate
//! root (resolved against the file's place and the inline `mod` blocks around it), or with
//! `sluice_host::` (the binary's files name the library so). Comments (line, block, doc) and
//! string, raw string and character literals are skipped, so `crate::` there is not an edge.
//! Code in `#[cfg(test)]` modules counts like any other (a test that needs a higher layer
//! builds the same cycle); its edges are marked as such in the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The layers file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayersFile {
    /// The format of this file (1).
    version: u32,
    /// Files of the crate root: they declare the modules and are not checked.
    #[serde(default)]
    root: Vec<String>,
    /// The layers, lowest first.
    layer: Vec<LayerToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerToml {
    name: String,
    module: Vec<ModuleToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleToml {
    name: String,
    owns: String,
    /// Files under `host/src` that belong to the module besides `<name>/` and `<name>.rs`.
    #[serde(default)]
    files: Vec<String>,
}

/// The layering: each module's layer, and which files belong to which module.
#[derive(Debug)]
pub struct Table {
    /// Layer names, lowest first.
    layers: Vec<String>,
    /// Each module's layer index and what it owns.
    modules: BTreeMap<String, (usize, String)>,
    /// Extra files (relative to `host/src`) and their module.
    files: BTreeMap<String, String>,
    /// Crate-root files, not checked.
    root: BTreeSet<String>,
}

impl Table {
    /// Parse and check a layers file.
    pub fn parse(text: &str) -> Result<Self> {
        let file: LayersFile = toml::from_str(text)?;
        if file.version != 1 {
            bail!(
                "version = {} is not a layers format this xtask reads (1)",
                file.version
            );
        }
        let mut table = Table {
            layers: Vec::new(),
            modules: BTreeMap::new(),
            files: BTreeMap::new(),
            root: file.root.into_iter().collect(),
        };
        for (index, layer) in file.layer.into_iter().enumerate() {
            for module in layer.module {
                if table
                    .modules
                    .insert(module.name.clone(), (index, module.owns))
                    .is_some()
                {
                    bail!("module `{}` is listed twice", module.name);
                }
                for f in module.files {
                    if let Some(other) = table.files.insert(f.clone(), module.name.clone()) {
                        bail!(
                            "file `{f}` is given to both `{other}` and `{}`",
                            module.name
                        );
                    }
                }
            }
            table.layers.push(layer.name);
        }
        Ok(table)
    }

    /// The module a file (relative to `host/src`, `/`-separated) belongs to; `Ok(None)` for a
    /// crate-root file; an error for a file no module claims.
    fn module_of(&self, relative: &str) -> Result<Option<&str>, String> {
        if self.root.contains(relative) {
            return Ok(None);
        }
        if let Some(module) = self.files.get(relative) {
            return Ok(Some(module));
        }
        let first = relative.split('/').next().unwrap_or(relative);
        let name = if relative.contains('/') {
            first
        } else {
            first.strip_suffix(".rs").unwrap_or(first)
        };
        match self.modules.get_key_value(name) {
            Some((name, _)) => Ok(Some(name)),
            None => Err(format!(
                "module `{name}` is not in host/layers.toml: add it to a layer (the lowest it can sit in), with a line saying what it owns"
            )),
        }
    }

    /// A markdown table of the layers: what each module owns and may use.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| layer | module | owns | may use |\n| --- | --- | --- | --- |\n");
        for (index, layer) in self.layers.iter().enumerate() {
            let below = match index {
                0 => "nothing else".to_string(),
                1 => "layer 0".to_string(),
                _ => format!("layers 0–{}", index - 1),
            };
            for (name, (_, owns)) in self.modules.iter().filter(|(_, (l, _))| *l == index) {
                out.push_str(&format!(
                    "| {index} {layer} | `{name}` | {owns} | {below} |\n"
                ));
            }
        }
        out
    }
}

/// A reference from a file to a top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// 1-based line.
    pub line: usize,
    /// The top-level module named.
    pub target: String,
    /// Whether it sits in a `#[cfg(test)]` module.
    pub in_test: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Hash,
    Bracket(bool),
    Paren(bool),
    Dollar,
    Other,
}

/// Tokens of Rust source with their lines, without comments and literals.
fn tokens(source: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    // Skips a quoted literal whose opening quote is at `i`; returns the index past its end.
    let skip_quoted = |mut i: usize, quote: char, line: &mut usize| -> usize {
        i += 1;
        while i < chars.len() {
            match chars[i] {
                '\\' => {
                    if chars.get(i + 1) == Some(&'\n') {
                        *line += 1;
                    }
                    i += 2;
                    continue;
                }
                '\n' => *line += 1,
                c if c == quote => return i + 1,
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => i = skip_quoted(i, '"', &mut line),
            '\'' => {
                if at(i + 1) == '\\' {
                    i = skip_quoted(i, '\'', &mut line);
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    // A lifetime or a label: its name follows as an identifier.
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
                if raw_prefix && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#')))
                {
                    // A raw string: r#"…"#, closed by a quote and as many hashes.
                    let mut hashes = 0;
                    while at(i) == '#' {
                        hashes += 1;
                        i += 1;
                    }
                    i += 1;
                    while i < chars.len() {
                        if chars[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#') {
                            i += 1 + hashes;
                            break;
                        }
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                    i = skip_quoted(i, '"', &mut line);
                } else if word == "b" && at(i) == '\'' {
                    i = skip_quoted(i, '\'', &mut line);
                } else if word == "r" && at(i) == '#' {
                    // A raw identifier, r#type: the name is the identifier.
                    i += 1;
                    let start = i;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    out.push((Tok::Ident(chars[start..i].iter().collect()), line));
                } else {
                    out.push((Tok::Ident(word), line));
                }
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push((Tok::Other, line));
            }
            ':' if at(i + 1) == ':' => {
                out.push((Tok::PathSep, line));
                i += 2;
            }
            _ => {
                let tok = match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    ';' => Tok::Semi,
                    '#' => Tok::Hash,
                    '[' => Tok::Bracket(true),
                    ']' => Tok::Bracket(false),
                    '(' => Tok::Paren(true),
                    ')' => Tok::Paren(false),
                    '$' => Tok::Dollar,
                    _ => Tok::Other,
                };
                out.push((tok, line));
                i += 1;
            }
        }
    }
    out
}

/// The module path of a file relative to `host/src` within its crate: `sources/directory.rs`
/// is `[sources, directory]`, `state/mod.rs` is `[state]`, `config.rs` is `[config]`.
pub fn module_path(relative: &str) -> Vec<String> {
    let mut parts: Vec<String> = relative.split('/').map(str::to_string).collect();
    if let Some(last) = parts.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last);
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// Every reference to a top-level module in `source`, a file at `module` (see [`module_path`]).
/// References a file makes to its own module are included; the caller drops them.
pub fn references(source: &str, module: &[String]) -> Vec<Reference> {
    let toks = tokens(source);
    let mut out = Vec::new();
    // Inline modules around the current token: name, the brace depth inside it, whether test.
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod: Option<String> = None;
    // `#[cfg(test)]` seen and not yet attached to an item.
    let mut cfg_test = false;
    let mut pending_test = false;
    let ident = |i: usize| match toks.get(i) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Tok| toks.get(i).is_some_and(|(x, _)| x == t);
    let mut i = 0;
    while i < toks.len() {
        let (tok, line) = &toks[i];
        let in_test = inline.iter().any(|(_, _, t)| *t);
        match tok {
            Tok::Hash
                if is(i + 1, &Tok::Bracket(true))
                    && ident(i + 2) == Some("cfg")
                    && is(i + 3, &Tok::Paren(true))
                    && ident(i + 4) == Some("test")
                    && is(i + 5, &Tok::Paren(false)) =>
            {
                cfg_test = true;
            }
            Tok::Ident(word) if word == "mod" => {
                if let Some(name) = ident(i + 1) {
                    pending_mod = Some(name.to_string());
                    pending_test = cfg_test;
                }
                cfg_test = false;
            }
            Tok::Open => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth, pending_test));
                }
                cfg_test = false;
            }
            Tok::Close => {
                if inline.last().is_some_and(|(_, d, _)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                cfg_test = false;
            }
            Tok::Semi => {
                pending_mod = None;
                cfg_test = false;
            }
            Tok::Ident(word) if is(i + 1, &Tok::PathSep) => {
                let after_sep = i > 0 && is(i - 1, &Tok::PathSep);
                match word.as_str() {
                    "crate" if !after_sep => targets_at(&toks, i + 2, *line, in_test, &mut out),
                    "sluice_host" => targets_at(&toks, i + 2, *line, in_test, &mut out),
                    "super" if !after_sep => {
                        let mut here: Vec<String> = module.to_vec();
                        here.extend(inline.iter().map(|(n, _, _)| n.clone()));
                        let mut j = i;
                        let mut climbed = true;
                        while ident(j) == Some("super") && is(j + 1, &Tok::PathSep) {
                            climbed &= here.pop().is_some();
                            j += 2;
                        }
                        match here.first() {
                            // Climbed past the root: not valid Rust; nothing to attribute.
                            _ if !climbed => {}
                            Some(first) => out.push(Reference {
                                line: *line,
                                target: first.clone(),
                                in_test,
                            }),
                            None => targets_at(&toks, j, *line, in_test, &mut out),
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The top-level modules named by a path continuing at `toks[i]` from the crate root: one
/// identifier, or each first identifier of a `{…}` group.
fn targets_at(
    toks: &[(Tok, usize)],
    i: usize,
    line: usize,
    in_test: bool,
    out: &mut Vec<Reference>,
) {
    match toks.get(i) {
        Some((Tok::Ident(name), _)) if name != "self" => out.push(Reference {
            line,
            target: name.clone(),
            in_test,
        }),
        Some((Tok::Open, _)) => {
            let mut depth = 0;
            let mut item_start = true;
            for (tok, tok_line) in &toks[i..] {
                match tok {
                    Tok::Open => {
                        depth += 1;
                        item_start = depth == 1;
                        continue;
                    }
                    Tok::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Comma if depth == 1 => {
                        item_start = true;
                        continue;
                    }
                    Tok::Ident(name) if item_start && depth == 1 && name != "self" => {
                        out.push(Reference {
                            line: *tok_line,
                            target: name.clone(),
                            in_test,
                        });
                    }
                    _ => {}
                }
                item_start = false;
            }
        }
        _ => {}
    }
}

/// One edge that breaks the layering, or a file no module claims.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation(pub String);

/// Check every `.rs` file under `src` (the `host/src` folder, shown as `shown`) against `table`.
pub fn check(table: &Table, src: &Path, shown: &str) -> Result<(Vec<Violation>, usize)> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    files.sort();
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for path in &files {
        let relative = path
            .strip_prefix(src)
            .context("a file outside the folder scanned")?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let from = match table.module_of(&relative) {
            Ok(Some(m)) => m.to_string(),
            Ok(None) => continue,
            Err(message) => {
                if seen.insert(format!("unclaimed {message}")) {
                    violations.push(Violation(format!("{shown}/{relative}: {message}")));
                }
                continue;
            }
        };
        let from_layer = table.modules[&from].0;
        let source =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for r in references(&source, &module_path(&relative)) {
            if r.target == from {
                continue;
            }
            let test = if r.in_test {
                " (in a #[cfg(test)] module)"
            } else {
                ""
            };
            let message = match table.modules.get(&r.target) {
                None => format!(
                    "{from} uses `{}`, which is not a module in host/layers.toml: add it to a layer, or name the item through the module that owns it",
                    r.target
                ),
                Some((to_layer, _)) if *to_layer > from_layer => format!(
                    "{from} (layer {from_layer}) uses {} (layer {to_layer}){test}: a back-edge; move the type down or invert the dependency",
                    r.target
                ),
                Some((to_layer, _)) if *to_layer == from_layer => format!(
                    "{from} uses {} of the same layer ({from_layer}){test}: modules of one layer are independent; move the type down or put the modules in different layers",
                    r.target
                ),
                Some(_) => continue,
            };
            let text = format!("{shown}/{relative}:{}: {message}", r.line);
            if seen.insert(text.clone()) {
                violations.push(Violation(text));
            }
        }
    }
    Ok((violations, files.len()))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(&path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `cargo xtask layers [--markdown]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let file = root.join("host/layers.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let table = Table::parse(&text).with_context(|| format!("in {}", file.display()))?;
    match args {
        [] => {}
        [flag] if flag == "--markdown" => {
            print!("{}", table.markdown());
            return Ok(());
        }
        _ => bail!("layers takes no arguments but --markdown"),
    }
    let (violations, files) = check(&table, &root.join("host/src"), "host/src")?;
    for v in &violations {
        println!("{}", v.0);
    }
    if !violations.is_empty() {
        bail!(
            "{} edge(s) against the layers of host/layers.toml in {files} files (a module may use only modules of lower layers)",
            violations.len()
        );
    }
    eprintln!(
        "xtask: layers: {files} files under host/src, every edge points down ({} layers)",
        table.layers.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(source: &str, module: &str) -> Vec<(usize, String)> {
        references(source, &module_path(module))
            .into_iter()
            .map(|r| (r.line, r.target))
            .collect()
    }

    #[test]
    fn grouped_and_nested_uses_name_each_top_level_module() {
        let source = "use crate::{\n    batch::{Batch, codec::{self, Codec}},\n    state::StateStore, wal::*,\n    self as root,\n};\nuse crate::plan::Start;\n";
        assert_eq!(
            targets(source, "sources/directory.rs"),
            [
                (2, "batch".to_string()),
                (3, "state".into()),
                (3, "wal".into()),
                (6, "plan".into())
            ]
        );
    }

    #[test]
    fn paths_in_code_attributes_and_macros_count() {
        let source = "fn f() -> crate::plan::Plan {\n    let x: Vec<crate::state::Entry> = vec![];\n    #[cfg(feature = \"x\")]\n    $crate::metrics::count!();\n    g::<crate::sinks::Sink>(crate::udf::call())\n}\n";
        assert_eq!(
            targets(source, "engine/job.rs"),
            [
                (1, "plan".to_string()),
                (2, "state".into()),
                (4, "metrics".into()),
                (5, "sinks".into()),
                (5, "udf".into())
            ]
        );
    }

    #[test]
    fn comments_strings_and_chars_are_not_edges() {
        let source = r####"//! Uses [`crate::plan::Plan`].
/// See crate::engine.
// crate::checkpoint in a line comment
/* crate::engine /* nested crate::plan */ crate::sinks */
fn f<'a>(x: &'a str) -> char {
    let s = "crate::plan::Plan \" crate::engine";
    let r = r#"crate::plan "quoted" crate::sinks"#;
    let b = b"crate::plan";
    let q = '"'; let e = '\''; let u = '\u{1F600}';
    let t = crate::state::time_key(0);
    'outer: loop { break 'outer; }
    q
}
"####;
        assert_eq!(
            targets(source, "sources/directory.rs"),
            [(10, "state".to_string())]
        );
    }

    #[test]
    fn super_paths_resolve_against_the_file_and_inline_modules() {
        // From a module's own mod.rs, `super::` is the crate root.
        assert_eq!(
            targets("use super::plan::Plan;\n", "sources/mod.rs"),
            [(1, "plan".to_string())]
        );
        // From a file inside a module, one `super::` stays in it, two reach the root.
        assert_eq!(
            targets(
                "use super::Source;\nuse super::super::{plan, state::X};\n",
                "sources/directory.rs"
            ),
            [
                (1, "sources".to_string()),
                (2, "plan".into()),
                (2, "state".into())
            ]
        );
        // Inside an inline module, `super::` is the file's module; after it closes, the root.
        let source = "#[cfg(test)]\nmod tests {\n    use super::*;\n    fn f() { crate::plan::x(); }\n}\nuse super::engine::Job;\n";
        let refs = references(source, &module_path("state/mod.rs"));
        assert_eq!(
            refs,
            [
                Reference {
                    line: 3,
                    target: "state".into(),
                    in_test: true
                },
                Reference {
                    line: 4,
                    target: "plan".into(),
                    in_test: true
                },
                Reference {
                    line: 6,
                    target: "engine".into(),
                    in_test: false
                },
            ]
        );
    }

    #[test]
    fn visibility_self_and_other_crates_are_not_edges() {
        let source = "pub(crate) fn f() {}\nuse self::inner::X;\nuse std::crate_like;\nuse other::crate::plan;\nuse sluice_host::plan::Plan;\n";
        assert_eq!(targets(source, "cli/run.rs"), [(5, "plan".to_string())]);
    }

    const TABLE: &str = r#"
version = 1
root = ["lib.rs"]
[[layer]]
name = "low"
[[layer.module]]
name = "batch"
owns = "batches"
[[layer.module]]
name = "config"
owns = "config"
[[layer]]
name = "high"
[[layer.module]]
name = "plan"
owns = "plans"
files = ["main.rs"]
"#;

    #[test]
    fn the_check_reports_back_edges_sideways_edges_and_unclaimed_files() {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("batch")).expect("mkdir");
        std::fs::create_dir_all(dir.join("server")).expect("mkdir");
        let write = |path: &str, text: &str| std::fs::write(dir.join(path), text).expect("write");
        write("lib.rs", "pub mod batch;\npub use crate::plan::Plan;\n");
        write(
            "batch/mod.rs",
            "use crate::config::Size;\n\nuse crate::plan::Plan; // up\n",
        );
        write("batch/codec.rs", "use super::Batch;\n");
        write("plan.rs", "use crate::{batch::Batch, config::Size};\n");
        write("main.rs", "use sluice_host::plan;\n");
        write("server/mod.rs", "use crate::plan::Plan;\n");
        let table = Table::parse(TABLE).expect("table");
        let (violations, files) = check(&table, &dir, "src").expect("check");
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(files, 6);
        let texts: Vec<&str> = violations.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(texts.len(), 3, "{texts:#?}");
        assert_eq!(
            texts[0],
            "src/batch/mod.rs:1: batch uses config of the same layer (0): modules of one layer are independent; move the type down or put the modules in different layers"
        );
        assert_eq!(
            texts[1],
            "src/batch/mod.rs:3: batch (layer 0) uses plan (layer 1): a back-edge; move the type down or invert the dependency"
        );
        assert!(
            texts[2].starts_with("src/server/mod.rs: module `server` is not in host/layers.toml"),
            "{}",
            texts[2]
        );
    }

    #[test]
    fn the_table_refuses_duplicates_unknown_fields_and_versions() {
        let twice = TABLE.replace("name = \"config\"", "name = \"batch\"");
        assert!(
            Table::parse(&twice)
                .expect_err("twice")
                .to_string()
                .contains("listed twice")
        );
        assert!(Table::parse(&TABLE.replace("owns = \"plans\"", "own = \"plans\"")).is_err());
        assert!(
            Table::parse(&TABLE.replace("version = 1", "version = 2"))
                .expect_err("version")
                .to_string()
                .contains("version = 2")
        );
    }

    #[test]
    fn the_markdown_table_lists_what_each_layer_may_use() {
        let table = Table::parse(TABLE).expect("table");
        let text = table.markdown();
        assert!(
            text.contains("| 0 low | `batch` | batches | nothing else |"),
            "{text}"
        );
        assert!(
            text.contains("| 1 high | `plan` | plans | layer 0 |"),
            "{text}"
        );
    }

    #[test]
    fn the_repository_table_parses() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/layers.toml");
        let table = Table::parse(&std::fs::read_to_string(file).expect("read")).expect("parse");
        assert_eq!(table.modules["config"].0, 0);
        assert!(table.modules["engine"].0 > table.modules["checkpoint"].0);
        assert_eq!(table.module_of("main.rs"), Ok(Some("cli")));
        assert_eq!(table.module_of("lib.rs"), Ok(None));
    }
}
