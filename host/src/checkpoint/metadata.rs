//! What a metadata checkpoint says: enough to pick a job up where it stopped (Spark's
//! `Checkpoint`: the plan, the batches generated but not finished, the source positions).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::batch::codec::Codec;
use crate::operators::{Builtin, StateLayout};
use crate::plan::{Plan, SourceKind};
use crate::sources::kafka::{OffsetRange, PartitionOffset};

/// The format of metadata files this version writes: 5, where a Kafka source's batches record
/// offset ranges ([`RecordedInput::Offsets`]) and its position the next offset per partition
/// ([`SourcePosition::offsets`]). Version 4 recorded each sealed batch's UDF versions
/// ([`BatchRecord::udfs`]). Version 3 typed a stateful operator's
/// codecs and layout ([`Layout::Typed`]). Versions 1 (before `skipped`), 2, 3 and 4 are read too:
/// what they lack reads as empty (a batch without recorded UDFs runs with the plan's), and
/// the layouts of 1 and 2, descriptions, compare with [`describe`] of the plan's.
pub const VERSION: u32 = 5;

/// The oldest format this version reads.
pub const OLDEST_VERSION: u32 = 1;

/// The largest batch id a checkpoint may hold: ids count batches from 1, so a larger one is
/// not a real job's (and would wrap when counted on).
pub const MAX_BATCH_ID: u64 = 1 << 62;

/// The whole of a metadata checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// [`VERSION`].
    pub version: u32,
    /// The job's name.
    pub job: String,
    /// SHA-256 of the plan's description: changes when any stream or sink changes.
    pub plan_fingerprint: String,
    /// The operators whose state outlives a batch, as the plan had them.
    pub stateful: Vec<StatefulOp>,
    /// Content hashes (SHA-256) of the components the job uses, by component name.
    pub udfs: BTreeMap<String, String>,
    /// The id the next sealed batch gets.
    pub next_batch: u64,
    /// The time of the last sealed batch.
    pub last_time: Option<i64>,
    /// The last batch whose sinks ran and whose state was committed.
    pub finished: Option<u64>,
    /// Where each source stands, by source name.
    pub sources: BTreeMap<String, SourcePosition>,
    /// Sealed batches not covered by the newest data checkpoint (the unfinished ones among
    /// them): what recovery re-runs, with exactly the input they had.
    pub batches: Vec<BatchRecord>,
    /// The batch the newest data checkpoint holds the state of.
    pub data_checkpoint: Option<u64>,
    /// Event-time watermarks (largest event time seen) by stream, as of `finished`.
    #[serde(default)]
    pub watermarks: BTreeMap<String, i64>,
    /// Batches the owner chose to go past (`host run --skip-batch ID`), oldest first: their
    /// records produced no output and no state change. Since version 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedBatch>,
}

/// A batch passed over with `host run --skip-batch ID`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SkippedBatch {
    /// Its id.
    pub id: u64,
    /// Its time.
    pub time: i64,
    /// The input it had, per source of the plan (what was not processed).
    pub inputs: Vec<RecordedInput>,
    /// When it was skipped (ms since the epoch).
    pub skipped_at: i64,
}

impl Metadata {
    /// The metadata of a job that has not run a batch yet.
    pub fn fresh(job: &str) -> Self {
        Self {
            version: VERSION,
            job: job.to_string(),
            plan_fingerprint: String::new(),
            stateful: Vec::new(),
            udfs: BTreeMap::new(),
            next_batch: 1,
            last_time: None,
            finished: None,
            sources: BTreeMap::new(),
            batches: Vec::new(),
            data_checkpoint: None,
            watermarks: BTreeMap::new(),
            skipped: Vec::new(),
        }
    }

    /// Check every value against itself and against `plan`'s sources: batch ids in range and
    /// consistent, each recorded input of its source's kind, log offsets ordered, recorded
    /// files inside their source's folder. Returns the field at fault and why.
    pub fn validate(&self, plan: &Plan) -> Result<(), (String, String)> {
        let bad = |field: &str, why: String| Err((field.to_string(), why));
        if !(OLDEST_VERSION..=VERSION).contains(&self.version) {
            return bad(
                "version",
                format!(
                    "{} (this host reads {OLDEST_VERSION} to {VERSION})",
                    self.version
                ),
            );
        }
        if self.next_batch == 0 || self.next_batch > MAX_BATCH_ID {
            return bad(
                "next_batch",
                format!("{} is not in 1..={MAX_BATCH_ID}", self.next_batch),
            );
        }
        let below_next = |field: &str, id: u64| {
            if id >= self.next_batch {
                bad(
                    field,
                    format!(
                        "batch {id} is not below next_batch {} (it was never sealed)",
                        self.next_batch
                    ),
                )
            } else {
                Ok(())
            }
        };
        if let Some(f) = self.finished {
            below_next("finished", f)?;
        }
        if let Some(d) = self.data_checkpoint {
            below_next("data_checkpoint", d)?;
        }
        let kinds: BTreeMap<&str, &SourceKind> = plan
            .sources
            .iter()
            .map(|s| (s.name.as_str(), &s.kind))
            .collect();
        for (name, position) in &self.sources {
            let Some(kind) = kinds.get(name.as_str()) else {
                continue; // a source no longer in the job: its position is not used
            };
            let field = format!("sources.{name}");
            if !position.files.is_empty() {
                let SourceKind::Directory { path, .. } = kind else {
                    return bad(
                        &format!("{field}.files"),
                        format!("files recorded for a {} source", kind_name(kind)),
                    );
                };
                for f in &position.files {
                    inside(path, f).or_else(|why| bad(&format!("{field}.files"), why))?;
                }
            }
            if !position.offsets.is_empty() && !matches!(kind, SourceKind::Kafka(_)) {
                return bad(
                    &format!("{field}.offsets"),
                    format!("Kafka offsets recorded for a {} source", kind_name(kind)),
                );
            }
            if let Some(p) = position.offsets.iter().find(|p| p.next < 0) {
                return bad(
                    &format!("{field}.offsets"),
                    format!(
                        "offset {} of {}/{} is negative",
                        p.next, p.topic, p.partition
                    ),
                );
            }
            if let Some(sealed) = position.wal_sealed
                && !matches!(kind, SourceKind::Http { .. } | SourceKind::Socket { .. })
            {
                return bad(
                    &format!("{field}.wal_sealed"),
                    format!(
                        "a write-ahead log offset ({sealed}) recorded for a {} source",
                        kind_name(kind)
                    ),
                );
            }
        }
        let mut previous: Option<(u64, i64)> = None;
        let mut log_end: BTreeMap<&str, u64> = BTreeMap::new();
        let mut offsets_end: OffsetsEnd = BTreeMap::new();
        for (i, b) in self.batches.iter().enumerate() {
            let field = format!("batches[{i}]");
            below_next(&format!("{field}.id"), b.id)?;
            if b.id == 0 {
                return bad(&format!("{field}.id"), "batch ids start at 1".into());
            }
            if let Some((id, time)) = previous {
                if b.id <= id {
                    return bad(
                        &format!("{field}.id"),
                        format!("{} after batch {id}: ids must increase", b.id),
                    );
                }
                if b.time <= time {
                    return bad(
                        &format!("{field}.time"),
                        format!("{} after time {time}: times must increase", b.time),
                    );
                }
            }
            if self.last_time.is_some_and(|t| b.time > t) {
                return bad(
                    &format!("{field}.time"),
                    format!("{} is after last_time", b.time),
                );
            }
            previous = Some((b.id, b.time));
            self.check_inputs(plan, &field, &b.inputs, &mut log_end, &mut offsets_end)?;
        }
        for ((name, topic, partition), end) in &offsets_end {
            let next = self.sources.get(name).and_then(|p| {
                p.offsets
                    .iter()
                    .find(|o| &o.topic == topic && o.partition == *partition)
            });
            if next.is_none_or(|o| o.next < *end) {
                return bad(
                    &format!("sources.{name}.offsets"),
                    format!(
                        "{topic}/{partition} is recorded before the end of a recorded batch's range ({end})"
                    ),
                );
            }
        }
        for (name, end) in &log_end {
            if let Some(sealed) = self.sources.get(*name).and_then(|p| p.wal_sealed)
                && *end > sealed
            {
                return bad(
                    &format!("sources.{name}.wal_sealed"),
                    format!("{sealed} is before the end of a recorded batch's log range ({end})"),
                );
            }
        }
        for (i, s) in self.skipped.iter().enumerate() {
            below_next(&format!("skipped[{i}].id"), s.id)?;
        }
        Ok(())
    }

    fn check_inputs<'a>(
        &self,
        plan: &'a Plan,
        field: &str,
        inputs: &[RecordedInput],
        log_end: &mut BTreeMap<&'a str, u64>,
        offsets_end: &mut OffsetsEnd,
    ) -> Result<(), (String, String)> {
        let bad = |field: String, why: String| Err((field, why));
        for (j, (source, input)) in plan.sources.iter().zip(inputs).enumerate() {
            let field = format!("{field}.inputs[{j}]");
            match (input, &source.kind) {
                (RecordedInput::Files { files }, SourceKind::Directory { path, .. }) => {
                    for f in files {
                        inside(path, f).or_else(|why| bad(field.clone(), why))?;
                    }
                }
                (
                    RecordedInput::Wal { from, to },
                    SourceKind::Http { .. } | SourceKind::Socket { .. },
                ) => {
                    if from > to {
                        return bad(field, format!("log range {from}..{to} is reversed"));
                    }
                    let end = log_end.entry(source.name.as_str()).or_insert(*from);
                    if *from < *end {
                        return bad(
                            field,
                            format!(
                                "log range {from}..{to} starts before the previous batch's ends ({end})"
                            ),
                        );
                    }
                    *end = *to;
                }
                (RecordedInput::Offsets { ranges }, SourceKind::Kafka(_)) => {
                    for r in ranges {
                        if r.from < 0 || r.from > r.to {
                            return bad(
                                field,
                                format!(
                                    "offset range {}..{} of {}/{} is reversed or negative",
                                    r.from, r.to, r.topic, r.partition
                                ),
                            );
                        }
                        let key = (source.name.clone(), r.topic.clone(), r.partition);
                        let end = offsets_end.entry(key).or_insert(r.from);
                        if r.from < *end {
                            return bad(
                                field,
                                format!(
                                    "offset range {}..{} of {}/{} starts before the previous batch's ends ({end})",
                                    r.from, r.to, r.topic, r.partition
                                ),
                            );
                        }
                        *end = r.to;
                    }
                }
                (RecordedInput::Unlogged { records: 0 }, _) => {}
                (RecordedInput::Unlogged { .. }, SourceKind::Queue) => {}
                (other, kind) => {
                    return bad(
                        field,
                        format!(
                            "{} recorded for {} source '{}'",
                            match other {
                                RecordedInput::Files { .. } => "files",
                                RecordedInput::Wal { .. } => "a write-ahead log range",
                                RecordedInput::Unlogged { .. } => "unlogged records",
                                RecordedInput::Offsets { .. } => "Kafka offset ranges",
                            },
                            kind_name(kind),
                            source.name
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Where each Kafka partition's recorded ranges end, by (source, topic, partition).
type OffsetsEnd = BTreeMap<(String, String, i32), i64>;

fn kind_name(kind: &SourceKind) -> &'static str {
    source_kind(kind)
}

/// Whether `file` is a file directly in the directory source's folder `dir` (as the source
/// lists them), with no `..` or other detour.
fn inside(dir: &std::path::Path, file: &str) -> Result<(), String> {
    use std::path::{Component, Path};
    let path = Path::new(file);
    let plain = path.components().all(|c| {
        matches!(
            c,
            Component::Normal(_) | Component::RootDir | Component::CurDir
        )
    });
    if !plain || path.parent() != Some(dir) {
        return Err(format!(
            "'{file}' is not a file in the source's folder {}",
            dir.display()
        ));
    }
    Ok(())
}

/// Where a source stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourcePosition {
    /// A directory source: every file it has put in a batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// A receiver: the write-ahead log offset up to which records are in sealed batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_sealed: Option<u64>,
    /// A Kafka source: per partition, the offset up to which records are in sealed batches.
    /// Since version 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<PartitionOffset>,
}

/// A sealed batch and its input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    /// Its id.
    pub id: u64,
    /// Its time.
    pub time: i64,
    /// Per source of the plan, in order.
    pub inputs: Vec<RecordedInput>,
    /// The UDF each slot of the plan was bound to when the batch was sealed, in slot order:
    /// a recovery re-runs the batch with these versions, not with newer ones. Since version 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udfs: Vec<RecordedUdf>,
}

/// The version of a UDF a batch runs with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordedUdf {
    /// The component's name (without `@N`).
    pub component: String,
    /// The function.
    pub function: String,
    /// SHA-256 of the component's bytes, hex.
    pub hash: String,
    /// Its version in the registry; none for a component from a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl RecordedUdf {
    /// What `bindings` hold, in slot order.
    pub fn of(bindings: &crate::udf::Bindings) -> Vec<RecordedUdf> {
        bindings
            .iter()
            .map(|(_, b)| RecordedUdf {
                component: b.component().name().to_string(),
                function: b.function.name().to_string(),
                hash: b.hash().to_string(),
                version: b.version,
            })
            .collect()
    }
}

/// One source's input to a sealed batch, as recovery finds it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordedInput {
    /// These files, read again.
    Files {
        /// Their paths.
        files: Vec<String>,
    },
    /// The records of this range of the source's write-ahead log.
    Wal {
        /// First offset.
        from: u64,
        /// End offset.
        to: u64,
    },
    /// These Kafka offset ranges, read again from the brokers. Since version 5.
    Offsets {
        /// One per partition.
        ranges: Vec<OffsetRange>,
    },
    /// Records from a source without a log (a queue): cannot be read again.
    Unlogged {
        /// How many there were.
        records: u64,
    },
}

/// A stateful operator as a checkpoint remembers it, to tell whether a changed plan can still
/// read its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatefulOp {
    /// The stream.
    pub stream: String,
    /// Its operator's name in manifests (`update_state_by_key`, …).
    pub op: String,
    /// How its keys read.
    pub key_codec: Codec,
    /// How its values read.
    pub value_codec: Codec,
    /// What else its state's layout depends on (window length and slide, builtin reducer).
    pub layout: Layout,
    /// The UDF that computes it, if any (`component#function`): a new version is accepted.
    pub udf: Option<String>,
}

/// A stateful operator's layout as a checkpoint holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Layout {
    /// Typed (format 3 on).
    Typed(StateLayout),
    /// As formats 1 and 2 wrote it: a description, compared with [`describe`] of the plan's.
    Described(String),
}

impl Layout {
    /// Whether a plan's operator with layout `now` can read state kept under this one.
    pub fn fits(&self, now: &StateLayout) -> bool {
        match self {
            Layout::Typed(before) => before == now,
            Layout::Described(before) => *before == describe(now),
        }
    }

    /// For messages.
    pub fn show(&self) -> String {
        match self {
            Layout::Typed(l) => describe(l),
            Layout::Described(d) => d.clone(),
        }
    }
}

/// A layout described as formats 1 and 2 wrote it (`window 3000 ms every 1000 ms, buffered`),
/// so that checkpoints written by them still compare, and for messages.
pub fn describe(layout: &StateLayout) -> String {
    // Formats 1 and 2 named builtins by their Rust variant.
    fn builtin(b: Builtin) -> &'static str {
        match b {
            Builtin::Count => "Count",
            Builtin::SumI64 => "SumI64",
            Builtin::SumF64 => "SumF64",
            Builtin::CountAndSum => "CountAndSum",
        }
    }
    match layout {
        StateLayout::Window {
            length,
            slide,
            incremental,
            builtin: b,
        } => format!(
            "window {length} ms every {slide} ms, {}{}",
            if *incremental { "inverse" } else { "buffered" },
            b.map_or(String::new(), |b| format!(", builtin {}", builtin(b)))
        ),
        StateLayout::State {
            map_with_state,
            builtin: b,
        } => {
            let kind = if *map_with_state {
                "map_with_state"
            } else {
                "update_state_by_key"
            };
            match b {
                Some(b) => format!("{kind} builtin {}", builtin(*b)),
                None => kind.to_string(),
            }
        }
        StateLayout::EventTimeWindow {
            length,
            slide,
            builtin: b,
        } => format!(
            "event-time window {length} ms every {slide} ms{}",
            b.map_or(String::new(), |b| format!(", builtin {}", builtin(b)))
        ),
    }
}

impl StatefulOp {
    /// The stateful operators of a plan.
    pub fn of(plan: &Plan) -> Vec<StatefulOp> {
        plan.nodes
            .iter()
            .filter_map(|n| {
                let op = n.operator()?;
                let layout = op.layout()?;
                Some(StatefulOp {
                    stream: n.name.to_string(),
                    op: n.op_name.to_string(),
                    key_codec: n.key_codec,
                    value_codec: n.value_codec,
                    layout: Layout::Typed(layout),
                    udf: op.udfs().first().map(|r| plan.udf_spec(*r)),
                })
            })
            .collect()
    }
}

/// The components a plan calls, by name, with their content hashes.
pub fn udf_versions(plan: &Plan) -> BTreeMap<String, String> {
    plan.udfs
        .snapshot()
        .iter()
        .map(|(_, b)| (b.component().name().to_string(), b.hash().to_string()))
        .collect()
}

/// SHA-256 of a description of every stream and sink of the plan.
pub fn fingerprint(plan: &Plan) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(format!(
        "interval {:?} partitions {}\n",
        plan.batch_interval, plan.partitions
    ));
    for s in &plan.sources {
        hash.update(format!("source {} {:?}\n", s.name, source_kind(&s.kind)));
    }
    for n in &plan.nodes {
        let inputs: Vec<&str> = n.inputs.iter().map(|&i| &*plan.nodes[i].name).collect();
        hash.update(format!(
            "stream {} {} {inputs:?} {} {} {}\n",
            n.name,
            n.op_name,
            codec_name(n.key_codec),
            codec_name(n.value_codec),
            n.slide
        ));
    }
    for op in StatefulOp::of(plan) {
        let Layout::Typed(layout) = &op.layout else {
            continue;
        };
        hash.update(format!(
            "StatefulOp {{ stream: {:?}, op: {:?}, key_codec: {:?}, value_codec: {:?}, layout: {:?}, udf: {:?} }}\n",
            op.stream,
            op.op,
            codec_name(op.key_codec).to_lowercase(),
            codec_name(op.value_codec).to_lowercase(),
            describe(layout),
            op.udf
        ));
    }
    for (node, sink) in &plan.sinks {
        hash.update(format!(
            "sink {} {}\n",
            plan.nodes[*node].name,
            sink_kind(plan, sink)
        ));
    }
    hex::encode(hash.finalize())
}

fn source_kind(kind: &crate::plan::SourceKind) -> &'static str {
    match kind {
        crate::plan::SourceKind::Socket { .. } => "socket",
        crate::plan::SourceKind::Directory { .. } => "directory",
        crate::plan::SourceKind::Http { .. } => "http",
        crate::plan::SourceKind::Queue => "queue",
        crate::plan::SourceKind::Kafka(_) => "kafka",
    }
}

/// A codec as formats 1 and 2 described it in the fingerprint, so fingerprints stay the same.
fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Text => "Text",
        Codec::Number => "Number",
        Codec::Json => "Json",
        Codec::Bytes => "Bytes",
    }
}

fn sink_kind(plan: &Plan, sink: &crate::plan::PlannedSink) -> String {
    match sink {
        crate::plan::PlannedSink::Print { num } => format!("print {num}"),
        crate::plan::PlannedSink::TextFiles { prefix, suffix, .. } => {
            format!("text_files {} {suffix:?}", prefix.display())
        }
        crate::plan::PlannedSink::Udf(f) => format!("udf {}", plan.udf_spec(*f)),
        crate::plan::PlannedSink::Kafka(k) => format!(
            "kafka {} {:?} {:?} exactly_once={}",
            k.bootstrap, k.topic, k.topic_field, k.exactly_once
        ),
        crate::plan::PlannedSink::Native(_) => "native".into(),
    }
}
