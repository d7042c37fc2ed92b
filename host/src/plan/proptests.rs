//! Property tests of the manifest parser and the planner: random and mutated manifests (the
//! examples with bytes, numbers and durations changed) never panic; each one parses and plans,
//! or comes back as a typed error of bounded size. The planner runs with an empty UDF
//! directory, so every UDF is "not found" and no component is compiled.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::manifest::{self, ManifestError};
use super::{SinkKind, plan};
use crate::metrics::Registry;
use crate::udf::{RuntimeConfig, UdfRuntime};

/// The example manifests, and one that uses every duration and file field.
const SEEDS: &[&str] = &[
    include_str!("../../../examples/wordcount/directory.toml"),
    include_str!("../../../examples/wordcount/socket.toml"),
    include_str!("../../../examples/clickstream/job.toml"),
    include_str!("../../../examples/clickstream/ingest.toml"),
    include_str!("../../../examples/clickstream/state.toml"),
    include_str!("../../../examples/clickstream/windows.toml"),
    r#"
[job]
name = "every-field"
batch_interval = "100ms"
checkpoint = "ck"
checkpoint_interval = "1s"
wal_fsync = "200ms"
max_batch_records = 10

[[sources]]
name = "s"
kind = "socket"
host = "127.0.0.1"
port = 9
reconnect_delay = "5s"

[[streams]]
name = "w"
op = "count_by_window"
input = "s"
window = "1s"
slide = "200ms"

[[streams]]
name = "e"
op = "event_time_window"
input = "s"
builtin = "count"
window = "10s"
slide = "5s"
watermark = "1s"
max_event_time_ahead = "1h"

[[streams]]
name = "m"
op = "map_with_state"
input = "s"
udf = "state#track"
timeout = "30s"
initial_state = "initial.tsv"

[[streams]]
name = "j"
op = "join_static"
input = "s"
path = "static.tsv"

[[streams]]
name = "u"
op = "union"
inputs = ["w", "e", "m", "j"]

[[sinks]]
kind = "text_files"
input = "u"
prefix = "/out/u"
"#,
];

/// Durations that are odd, huge or past what a `Duration` holds.
const DURATIONS: &[&str] = &[
    "0s",
    "1ns",
    "999us",
    "1ms",
    "7ms",
    "500ms",
    "1y",
    "2y",
    "100y",
    "18446744073709551s 616ms",
    "18446744073709551615s",
    "99999999999999999999999s",
    "584942417355y",
    "1d",
    "25h",
    "1w",
    "1h 1ns",
    "-1s",
    "",
    "soon",
];

/// Numbers of every size, as TOML writes them.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "4096",
    "4097",
    "65535",
    "65536",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "nan",
    "0x7fffffff",
];

/// Byte ranges `(start, end)`.
type Ranges = Vec<(usize, usize)>;

/// The byte ranges of quoted strings and of digit runs in `text`.
fn targets(text: &str) -> (Ranges, Ranges) {
    let bytes = text.as_bytes();
    let (mut quoted, mut digits) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let end = bytes[i + 1..]
                .iter()
                .position(|&b| b == b'"' || b == b'\n')
                .map_or(bytes.len(), |p| i + 1 + p);
            quoted.push((i + 1, end));
            i = end + 1;
        } else if bytes[i].is_ascii_digit() {
            let end = bytes[i..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(bytes.len(), |p| i + p);
            digits.push((i, end));
            i = end;
        } else {
            i += 1;
        }
    }
    (quoted, digits)
}

/// `text` with `start..end` replaced by `with`; the range is clamped to the text, since an
/// earlier mutation may have shortened it.
fn splice(text: &[u8], (start, end): (usize, usize), with: &[u8]) -> Vec<u8> {
    let start = start.min(text.len());
    let end = end.clamp(start, text.len());
    let mut out = text[..start].to_vec();
    out.extend_from_slice(with);
    out.extend_from_slice(&text[end..]);
    out
}

/// One change to a manifest.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite the byte at (index mod length).
    Byte(usize, u8),
    /// Delete up to 16 bytes from (index mod length).
    Delete(usize, usize),
    /// Put the n-th (mod count) quoted string's text to a duration.
    Duration(usize, usize),
    /// Replace the n-th (mod count) digit run by a number.
    Number(usize, usize),
    /// Repeat a line (index mod lines) up to 8 times.
    Repeat(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        (any::<usize>(), 1..16usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 0..DURATIONS.len()).prop_map(|(i, d)| Mutation::Duration(i, d)),
        (any::<usize>(), 0..NUMBERS.len()).prop_map(|(i, n)| Mutation::Number(i, n)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

fn apply(text: Vec<u8>, m: &Mutation) -> Vec<u8> {
    if text.is_empty() {
        return text;
    }
    let (quoted, digits) = targets(&String::from_utf8_lossy(&text));
    match *m {
        Mutation::Byte(i, b) => {
            let mut t = text;
            let at = i % t.len();
            t[at] = b;
            t
        }
        Mutation::Delete(i, n) => {
            let at = i % text.len();
            splice(&text, (at, at + n), b"")
        }
        Mutation::Duration(i, d) if !quoted.is_empty() => {
            splice(&text, quoted[i % quoted.len()], DURATIONS[d].as_bytes())
        }
        Mutation::Number(i, n) if !digits.is_empty() => {
            splice(&text, digits[i % digits.len()], NUMBERS[n].as_bytes())
        }
        Mutation::Repeat(i, n) => {
            let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            let at = i % lines.len();
            let mut out = Vec::new();
            for (j, line) in lines.iter().enumerate() {
                let times = if j == at { n + 1 } else { 1 };
                for _ in 0..times {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
            }
            out
        }
        _ => text,
    }
}

/// A manifest made of random tables of known and unknown fields with random values.
fn random_manifest() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "op",
        "input",
        "inputs",
        "udf",
        "kind",
        "path",
        "window",
        "slide",
        "watermark",
        "timeout",
        "max_event_time_ahead",
        "batch_interval",
        "checkpoint",
        "checkpoint_interval",
        "wal_fsync",
        "reconnect_delay",
        "partitions",
        "builtin",
        "initial_state",
        "prefix",
        "host",
        "port",
        "address",
        "num",
        "bogus",
    ]);
    let value = prop_oneof![
        prop::sample::select(DURATIONS).prop_map(|d| format!("{d:?}")),
        prop::sample::select(NUMBERS).prop_map(String::from),
        prop::sample::select(vec![
            "\"map\"",
            "\"event_time_window\"",
            "\"window\"",
            "\"join_static\"",
            "\"update_state_by_key\"",
            "\"map_with_state\"",
            "\"union\"",
            "\"directory\"",
            "\"socket\"",
            "\"print\"",
            "\"text_files\"",
            "\"count\"",
            "\"a\"",
            "\"b\"",
            "[\"a\", \"b\"]",
            "\"/dev/zero\"",
            "true",
        ])
        .prop_map(String::from),
        "[a-z#]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    let table = (
        prop::sample::select(vec!["[job]", "[[sources]]", "[[streams]]", "[[sinks]]"]),
        prop::collection::vec((key, value), 0..8),
    );
    prop::collection::vec(table, 0..10).prop_map(|tables| {
        let mut text = String::from("[job]\nname = \"fuzz\"\n");
        for (header, fields) in tables {
            text.push_str(header);
            text.push('\n');
            for (k, v) in fields {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text
    })
}

struct Fixture {
    dir: tempfile::TempDir,
    runtime: UdfRuntime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir_all(dir.path().join("udfs")).expect("an empty udfs/");
        std::fs::write(dir.path().join("static.tsv"), "1\ta\n").expect("static data");
        std::fs::write(dir.path().join("initial.tsv"), "1\t2\n").expect("initial state");
        let runtime = UdfRuntime::new(RuntimeConfig::default(), Arc::new(Registry::default()))
            .expect("a UDF runtime");
        Fixture { dir, runtime }
    })
}

/// Load (from a real file, as `host run` does), then plan; the outcome must be a plan or a typed
/// error, and the printed error must stay small.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let f = fixture();
    let file = tempfile::NamedTempFile::new_in(f.dir.path()).expect("a manifest file");
    std::fs::write(file.path(), bytes).expect("write the manifest");
    let spec = match manifest::load(file.path()) {
        Ok(spec) => spec,
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.len() < 64 << 10, "a {} byte error", shown.len());
            if let ManifestError::NotUtf8 { offset, .. } = e {
                prop_assert!(std::str::from_utf8(&bytes[..offset]).is_ok());
                prop_assert!(std::str::from_utf8(bytes).is_err());
            }
            return Ok(());
        }
    };
    let mut spec = spec;
    // Outputs stay in the temporary folder, whatever path a mutation made.
    for (i, sink) in spec.sinks.iter_mut().enumerate() {
        if let SinkKind::TextFiles { prefix, .. } = &mut sink.kind {
            *prefix = f.dir.path().join("out").join(format!("p{i}"));
        }
    }
    let udfs = crate::udf::UdfDirectory::new(f.dir.path().join("udfs"), &f.runtime);
    if let Err(e) = plan(spec, &udfs, Some(Path::new("job.toml"))) {
        prop_assert!(!e.errors.is_empty());
        let shown = e.to_string();
        prop_assert!(shown.len() < 64 << 10, "a {} byte error", shown.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_examples_plan_or_fail_cleanly(
        seed in 0..SEEDS.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let text = mutations
            .iter()
            .fold(SEEDS[seed].as_bytes().to_vec(), apply);
        check(&text)?;
    }

    #[test]
    fn random_manifests_plan_or_fail_cleanly(text in random_manifest()) {
        check(text.as_bytes())?;
    }
}

#[test]
fn every_seed_parses() {
    for seed in SEEDS {
        manifest::parse(seed, Path::new("job.toml"), Path::new("/base"))
            .unwrap_or_else(|e| panic!("{e}\n{seed}"));
    }
}
