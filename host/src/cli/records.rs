//! Reading and printing records for `host call`, in three plain formats.

use std::io::Write;

use anyhow::{Context, bail};
use sluice_host::batch::{Batch, RecordRef};

/// How records are written on stdin and stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One value per line (unkeyed).
    Lines,
    /// `KEY<TAB>VALUE` per line (keyed).
    Kv,
    /// One JSON object per line: `{"key": …, "value": …, "event_time": …}`.
    Jsonl,
}

/// One input record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub event_time: i64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    #[serde(default)]
    key: Option<String>,
    value: String,
    #[serde(default)]
    event_time: Option<i64>,
}

/// Parse `input` (lines split on `\n`, a trailing `\r` dropped) in `format`. Bytes need not be
/// UTF-8 except in `jsonl`.
pub fn parse(input: &[u8], format: Format, default_time: i64) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (n, line) in lines.into_iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let record = match format {
            Format::Lines => Record {
                key: None,
                value: line.to_vec(),
                event_time: default_time,
            },
            Format::Kv => {
                let Some(tab) = line.iter().position(|&b| b == b'\t') else {
                    bail!(
                        "input line {}: expected KEY<TAB>VALUE (format kv), found no tab",
                        n + 1
                    );
                };
                Record {
                    key: Some(line[..tab].to_vec()),
                    value: line[tab + 1..].to_vec(),
                    event_time: default_time,
                }
            }
            Format::Jsonl => {
                let json: JsonRecord = serde_json::from_slice(line).with_context(|| {
                    format!(
                        "input line {}: expected {{\"key\": …, \"value\": …, \"event_time\": …}}",
                        n + 1
                    )
                })?;
                Record {
                    key: json.key.map(String::into_bytes),
                    value: json.value.into_bytes(),
                    event_time: json.event_time.unwrap_or(default_time),
                }
            }
        };
        records.push(record);
    }
    Ok(records)
}

/// Build one batch from records; keyed if the first record has a key.
pub fn to_batch(records: &[Record]) -> anyhow::Result<Batch> {
    let keyed = records.first().is_some_and(|r| r.key.is_some());
    let mut batch = Batch::empty(keyed);
    for (i, r) in records.iter().enumerate() {
        if r.key.is_some() != keyed {
            bail!(
                "input record {}: mixes keyed and unkeyed records; a stream is either keyed or not",
                i + 1
            );
        }
        batch.push(r.key.as_deref(), &r.value, r.event_time);
    }
    Ok(batch)
}

/// Print one record in `format`.
pub fn print(out: &mut impl Write, record: RecordRef<'_>, format: Format) -> std::io::Result<()> {
    match format {
        Format::Lines | Format::Kv => {
            if let Some(key) = record.key {
                out.write_all(key)?;
                out.write_all(b"\t")?;
            }
            out.write_all(record.value)?;
            out.write_all(b"\n")
        }
        Format::Jsonl => {
            let json = serde_json::json!({
                "key": record.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                "value": String::from_utf8_lossy(record.value),
                "event_time": record.event_time,
            });
            writeln!(out, "{json}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        let r = parse(b"a\tb\r\nc\t\n", Format::Kv, 5).unwrap();
        assert_eq!(
            r[0],
            Record {
                key: Some(b"a".to_vec()),
                value: b"b".to_vec(),
                event_time: 5
            }
        );
        assert_eq!(r[1].value, b"");
        assert!(
            parse(b"no tab\n", Format::Kv, 0)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        let r = parse(b"{\"value\":\"v\",\"event_time\":7}\n", Format::Jsonl, 0).unwrap();
        assert_eq!(r[0].event_time, 7);
        assert!(parse(b"{\"valu\":\"v\"}\n", Format::Jsonl, 0).is_err());
        assert_eq!(
            parse(b"\xff\n", Format::Lines, 0).unwrap()[0].value,
            vec![0xff]
        );
    }
}
