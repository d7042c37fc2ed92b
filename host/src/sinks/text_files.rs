//! Spark's `saveAsTextFiles(prefix, suffix)`: each batch becomes the directory
//! `prefix-<batch time ms>[.suffix]` holding `part-00000 …` (one file per partition) and an
//! empty `_SUCCESS`. It is written under a hidden temporary name beside it and renamed into place
//! when whole, so a reader sees the whole batch or nothing. Writing a batch again (after a
//! restart) replaces it, and removes what a killed run left half-written: the sink is
//! idempotent per batch time. With a checkpoint, a batch run again after a crash keeps its id
//! and time, so the sink is exactly-once.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{SinkBatch, SinkError};

/// The line format of `text_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// `(key,value)` or `value` per line, as `print` shows them.
    #[default]
    Text,
    /// `{"key": …, "value": …}` per line, keys and values decoded by their codecs.
    Jsonl,
}

/// The directory a batch lands in.
pub fn batch_dir(prefix: &Path, suffix: Option<&str>, time: i64) -> PathBuf {
    let mut name = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.push_str(&format!("-{time}"));
    if let Some(suffix) = suffix {
        name.push('.');
        name.push_str(suffix);
    }
    prefix.with_file_name(name)
}

/// Write one batch; returns the directory written and how many values did not decode as their
/// codec says (written as JSON strings in `jsonl`).
pub fn write(
    batch: &SinkBatch<'_>,
    prefix: &Path,
    suffix: Option<&str>,
    format: OutputFormat,
) -> Result<(PathBuf, u64), SinkError> {
    let target = batch_dir(prefix, suffix, batch.time);
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SinkError::Write { path, source }
    };
    // A run killed while writing this batch left its temporary folder (named for its pid):
    // the batch is being written again, so it goes.
    let stale = format!(".{file_name}.tmp-");
    if let Some(parent) = target.parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with(&stale) {
                std::fs::remove_dir_all(entry.path()).map_err(fail(&entry.path()))?;
            }
        }
    }
    std::fs::create_dir_all(&temp).map_err(fail(&temp))?;
    let mut undecodable = 0u64;
    for (i, part) in batch.partitions.iter().enumerate() {
        let path = temp.join(format!("part-{i:05}"));
        let file = std::fs::File::create(&path).map_err(fail(&path))?;
        let mut out = std::io::BufWriter::new(file);
        match format {
            OutputFormat::Text => {
                let one = SinkBatch {
                    partitions: std::slice::from_ref(part),
                    ..*batch
                };
                for line in one.lines() {
                    writeln!(out, "{line}").map_err(fail(&path))?;
                }
            }
            OutputFormat::Jsonl => {
                let mut line = Vec::new();
                for r in part.records() {
                    line.clear();
                    line.extend_from_slice(b"{\"key\":");
                    match r.key {
                        Some(key) => {
                            undecodable += u64::from(!batch.key_codec.write_json(key, &mut line))
                        }
                        None => line.extend_from_slice(b"null"),
                    }
                    line.extend_from_slice(b",\"value\":");
                    undecodable += u64::from(!batch.value_codec.write_json(r.value, &mut line));
                    line.extend_from_slice(b"}\n");
                    out.write_all(&line).map_err(fail(&path))?;
                }
            }
        }
        let file = out.into_inner().map_err(|e| SinkError::Write {
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_data().map_err(fail(&path))?;
    }
    let success = temp.join("_SUCCESS");
    std::fs::write(&success, b"").map_err(fail(&success))?;
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(fail(&target))?;
    }
    std::fs::rename(&temp, &target).map_err(fail(&target))?;
    Ok((target, undecodable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::batch::codec::Codec;

    #[test]
    fn a_batch_lands_whole_in_its_directory() {
        let root = std::env::temp_dir().join(format!("sluice-textfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut a = Batch::empty(true);
        a.push(Some(b"k"), br#"{"n":1}"#, 0);
        let mut b = Batch::empty(true);
        b.push(Some(b"j"), b"not json", 0);
        let parts = [a, b];
        let batch = SinkBatch {
            id: 1,
            time: 5000,
            partitions: &parts,
            key_codec: Codec::Text,
            value_codec: Codec::Json,
        };
        let (dir, bad) = write(
            &batch,
            &root.join("out/w"),
            Some("txt"),
            OutputFormat::Jsonl,
        )
        .unwrap();
        assert_eq!(dir, root.join("out/w-5000.txt"));
        assert_eq!(bad, 1);
        assert_eq!(
            std::fs::read_to_string(dir.join("part-00000")).unwrap(),
            "{\"key\":\"k\",\"value\":{\"n\":1}}\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("part-00001")).unwrap(),
            "{\"key\":\"j\",\"value\":\"not json\"}\n"
        );
        assert!(dir.join("_SUCCESS").exists());
        let (dir, _) = write(&batch, &root.join("out/w"), Some("txt"), OutputFormat::Text).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("part-00000")).unwrap(),
            "(k,{\"n\":1})\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(root.join("out"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
