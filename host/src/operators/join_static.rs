//! `join_static`: join a keyed stream with a static data set loaded when the job starts,
//! partition by partition (no shuffle: the table is whole in every partition's reach):
//! `[value, static value]`, or `[value, null]` for `left_outer`. Also the loader of static
//! files, which initial states (`initial_state`) use too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::join::JoinKind;
use super::keyed::{pair, require_keys};
use super::{
    BatchScope, Field, OpError, Operator, OperatorKind, PlanCx, Planned, RunCx, StaticFormat,
};
use crate::batch::Batch;
use crate::batch::codec::Codec;
use crate::files::{FileError, read_regular_file};

/// The largest static data set or initial state file read: 64 MiB.
pub const MAX_STATIC_BYTES: u64 = 64 << 20;

/// `join_static`'s planning.
pub struct JoinStaticKind;

/// `join_static`.
pub static JOIN_STATIC: JoinStaticKind = JoinStaticKind;

impl OperatorKind for JoinStaticKind {
    fn name(&self) -> &'static str {
        "join_static"
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Path, Field::Format, Field::How, Field::StaticCodec]
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let s = cx.spec;
        let kind = match s.how.as_deref() {
            None | Some("inner") => JoinKind::Inner,
            Some("left_outer") => JoinKind::LeftOuter,
            Some(other) => {
                cx.error(
                    format!("how = {other:?} is not a static join"),
                    Some("use \"inner\" or \"left_outer\"".into()),
                );
                return None;
            }
        };
        let Some(path) = &s.path else {
            cx.error(
                "join_static needs `path`, the file of the static data set".into(),
                Some("KEY<TAB>VALUE lines, or format = \"jsonl\"".into()),
            );
            return None;
        };
        let static_codec = s.static_codec.unwrap_or_default();
        match load_static(path, s.format.unwrap_or_default()) {
            Ok(table) => {
                let (key, _) = cx.input_codecs();
                Some(Planned::new(
                    JoinStatic {
                        table: Arc::new(table),
                        kind,
                        static_codec,
                    },
                    key,
                    Codec::Json,
                ))
            }
            Err(e) => {
                cx.error(format!("path: {e}"), static_hint("path", &e));
                None
            }
        }
    }
}

/// A planned static join.
#[derive(Debug)]
pub struct JoinStatic {
    table: Arc<StaticTable>,
    kind: JoinKind,
    static_codec: Codec,
}

impl Operator for JoinStatic {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        join_static(
            cx.scope,
            cx.input(0),
            (cx.value_codec(0), self.static_codec),
            &self.table,
            self.kind,
            cx.stream,
        )
        .map(Some)
    }
}

/// Join with a static table, partition by partition (no shuffle: the table is whole in every
/// partition's reach): `[value, static value]`, or `[value, null]` for `left_outer`.
pub fn join_static(
    scope: &BatchScope<'_>,
    parts: &[Batch],
    codecs: (Codec, Codec),
    table: &StaticTable,
    kind: JoinKind,
    stream: &str,
) -> Result<Vec<Batch>, OpError> {
    require_keys(parts, "join_static", stream)?;
    Ok(scope.pool.install(|| {
        parts
            .par_iter()
            .map(|p| {
                let mut out = Batch::empty(true);
                let mut json = Vec::new();
                for rec in p.records() {
                    let key = rec.key.unwrap_or_default();
                    match table.rows.get(key) {
                        Some(rows) => {
                            for row in rows {
                                json.clear();
                                pair(
                                    &mut json,
                                    Some((rec.value, codecs.0)),
                                    Some((row, codecs.1)),
                                );
                                out.push(Some(key), &json, rec.event_time);
                            }
                        }
                        None if kind == JoinKind::LeftOuter => {
                            json.clear();
                            pair(&mut json, Some((rec.value, codecs.0)), None);
                            out.push(Some(key), &json, rec.event_time);
                        }
                        None => {}
                    }
                }
                out
            })
            .collect()
    }))
}

/// A static data set for `join_static`: values by key, loaded once at job start.
#[derive(Debug, Default)]
pub struct StaticTable {
    /// Values of each key, in file order.
    pub rows: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// The file it came from.
    pub path: PathBuf,
}

/// A static data set or initial state file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StaticDataError {
    /// Not a regular file, larger than [`MAX_STATIC_BYTES`], or unreadable.
    #[error(transparent)]
    File(#[from] FileError),
    /// A line that is not of the file's format.
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// Load a static data set (a regular file of at most [`MAX_STATIC_BYTES`]), saying which line
/// is bad.
pub fn load_static(path: &Path, format: StaticFormat) -> Result<StaticTable, StaticDataError> {
    let text = read_regular_file(path, MAX_STATIC_BYTES)?;
    let mut table = StaticTable {
        rows: HashMap::new(),
        path: path.to_path_buf(),
    };
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let bad = |problem: String| StaticDataError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            problem,
        };
        let (key, value) = match format {
            StaticFormat::Kv => {
                let Some(tab) = line.iter().position(|&b| b == b'\t') else {
                    return Err(bad("expected KEY<TAB>VALUE, found no tab".into()));
                };
                (line[..tab].to_vec(), line[tab + 1..].to_vec())
            }
            StaticFormat::Jsonl => {
                let row: serde_json::Value =
                    serde_json::from_slice(line).map_err(|e| bad(format!("not JSON: {e}")))?;
                let (Some(key), Some(value)) = (row.get("key"), row.get("value")) else {
                    return Err(bad("expected {\"key\": …, \"value\": …}".into()));
                };
                (json_bytes(key), json_bytes(value))
            }
        };
        table.rows.entry(key).or_default().push(value);
    }
    Ok(table)
}

/// The hint for a static file that cannot be used.
pub fn static_hint(field: &str, e: &StaticDataError) -> Option<String> {
    match e {
        StaticDataError::File(FileError::NotRegular { .. }) => Some(format!(
            "point `{field}` at a regular file; devices, FIFOs and directories are not read"
        )),
        StaticDataError::File(FileError::TooLarge { .. }) => Some(format!(
            "a static file may hold at most {MAX_STATIC_BYTES} bytes (64 MiB); keep larger data in the state store (update_state_by_key) instead"
        )),
        StaticDataError::File(FileError::Io { .. }) => None,
        StaticDataError::Line { .. } => Some(
            "KEY<TAB>VALUE lines, or format = \"jsonl\" for {\"key\": …, \"value\": …} lines"
                .into(),
        ),
    }
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_data_loads_or_names_the_line() {
        let dir = std::env::temp_dir().join(format!("sluice-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kv = dir.join("users.tsv");
        std::fs::write(&kv, "1\talice\n2\tbob\n1\tal\n").unwrap();
        let t = load_static(&kv, StaticFormat::Kv).unwrap();
        assert_eq!(
            t.rows[&b"1".to_vec()],
            vec![b"alice".to_vec(), b"al".to_vec()]
        );
        std::fs::write(&kv, "1\talice\nbroken\n").unwrap();
        assert!(
            load_static(&kv, StaticFormat::Kv)
                .unwrap_err()
                .to_string()
                .ends_with("users.tsv:2: expected KEY<TAB>VALUE, found no tab")
        );
        assert!(matches!(
            load_static(Path::new("/dev/zero"), StaticFormat::Kv),
            Err(StaticDataError::File(FileError::NotRegular { .. }))
        ));
        let jl = dir.join("users.jsonl");
        std::fs::write(&jl, "{\"key\": 1, \"value\": {\"name\": \"a\"}}\n").unwrap();
        let t = load_static(&jl, StaticFormat::Jsonl).unwrap();
        assert_eq!(t.rows[&b"1".to_vec()], vec![br#"{"name":"a"}"#.to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
