//! The transform UDFs: `map`, `flat_map`, `filter` and `map_partitions` call a transform
//! function on every partition, in parallel; `transform` calls it over the whole batch.

use rayon::prelude::*;

use super::isolate::{IsolateError, isolate, kind_name};
use super::{
    BatchScope, OnError, OpError, Operator, OperatorKind, PlanCx, Planned, RunCx, UdfRef, UdfUse,
};
use crate::batch::Batch;
use crate::batch::codec::Codec;
use crate::state::dead_letters::{self, DeadLetter};
use crate::udf::{CallError, Role, UdfFunction};

/// How a transform function is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Any records out per partition (`map`, `flat_map`, `map_partitions`).
    PerPartition,
    /// Only records of the input, keys unchanged (`filter`).
    Filter,
    /// One call over the whole batch (`transform`).
    WholeBatch,
}

/// A transform operator's planning: its name, whether the SDK kind must match, how it applies.
pub struct TransformKind {
    name: &'static str,
    /// Whether only functions of its own SDK kind fit (else any transform function).
    checks_kind: bool,
    shape: Shape,
}

/// `map`: one record out per record in.
pub static MAP: TransformKind = TransformKind {
    name: "map",
    checks_kind: true,
    shape: Shape::PerPartition,
};

/// `flat_map`: any number of records out per record in.
pub static FLAT_MAP: TransformKind = TransformKind {
    name: "flat_map",
    checks_kind: true,
    shape: Shape::PerPartition,
};

/// `filter`: the records the UDF keeps.
pub static FILTER: TransformKind = TransformKind {
    name: "filter",
    checks_kind: true,
    shape: Shape::Filter,
};

/// `map_partitions`: a transform UDF over each partition as a whole.
pub static MAP_PARTITIONS: TransformKind = TransformKind {
    name: "map_partitions",
    checks_kind: false,
    shape: Shape::PerPartition,
};

/// `transform`: a transform UDF over the whole batch at once (Spark's `transform`).
pub static TRANSFORM: TransformKind = TransformKind {
    name: "transform",
    checks_kind: false,
    shape: Shape::WholeBatch,
};

impl OperatorKind for TransformKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn udf(&self) -> UdfUse {
        UdfUse::Needs {
            role: Role::Transform,
            builtin: false,
        }
    }

    fn checks_kind(&self) -> bool {
        self.checks_kind
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let f = cx.function?;
        let (key, value) = cx.input_codecs();
        let (key, value) = match self.shape {
            Shape::Filter => (key, value),
            Shape::PerPartition | Shape::WholeBatch => (Codec::Text, Codec::Text),
        };
        Some(Planned::new(
            Transform {
                f,
                shape: self.shape,
                dead_letter: cx.spec.on_error == Some(OnError::DeadLetter) && self.isolates(),
            },
            key,
            value,
        ))
    }

    fn isolates(&self) -> bool {
        // map_partitions may combine records (its output need not follow its input record by
        // record), and transform sees the whole batch: neither can be split soundly.
        self.checks_kind && self.shape != Shape::WholeBatch
    }
}

/// A planned transform.
#[derive(Debug)]
pub struct Transform {
    f: UdfRef,
    shape: Shape,
    /// `on_error = "dead_letter"`: failing records are isolated and the rest go on.
    dead_letter: bool,
}

impl Operator for Transform {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        let f = cx.scope.udf(self.f);
        let input = cx.input(0);
        let out = match self.shape {
            Shape::PerPartition | Shape::Filter if self.dead_letter => {
                let (out, letters) = isolating(cx.scope, f, input, cx.stream)?;
                if self.shape == Shape::Filter {
                    check_filtered(input, &out, f, cx.stream)?;
                }
                cx.dead_letters.extend(letters);
                out
            }
            Shape::PerPartition => per_partition(cx.scope, f, input)?,
            Shape::Filter => {
                let out = per_partition(cx.scope, f, input)?;
                check_filtered(input, &out, f, cx.stream)?;
                out
            }
            Shape::WholeBatch => whole_batch(cx.scope, f, input)?,
        };
        Ok(Some(out))
    }

    fn udfs(&self) -> Vec<UdfRef> {
        vec![self.f]
    }
}

/// A transform UDF on every partition, in parallel.
pub fn per_partition(
    scope: &BatchScope<'_>,
    f: &UdfFunction,
    parts: &[Batch],
) -> Result<Vec<Batch>, OpError> {
    let out: Result<Vec<Batch>, CallError> = scope.pool.install(|| {
        parts
            .par_iter()
            .enumerate()
            .map(|(i, p)| f.transform(&scope.context(i), p))
            .collect()
    });
    Ok(out?)
}

/// [`per_partition`], isolating the records a call fails on: every other record's output, in
/// input order, and a dead letter per failing record (version and hash left for the executor,
/// which knows the bindings).
pub fn isolating(
    scope: &BatchScope<'_>,
    f: &UdfFunction,
    parts: &[Batch],
    stream: &str,
) -> Result<(Vec<Batch>, Vec<DeadLetter>), OpError> {
    let per_part: Result<Vec<(Batch, Vec<DeadLetter>)>, OpError> = scope.pool.install(|| {
        parts
            .par_iter()
            .enumerate()
            .map(|(i, p)| {
                let context = scope.context(i);
                let found = isolate(p.len(), dead_letters::MAX_PER_PARTITION, |r| {
                    if r.start == 0 && r.end == p.len() {
                        f.transform(&context, p)
                    } else {
                        f.transform(&context, &p.slice(r))
                    }
                });
                let found = match found {
                    Ok(found) => found,
                    Err(IsolateError::NotIsolatable(e)) => return Err(OpError::Udf(e)),
                    Err(IsolateError::TooMany { max, first }) => {
                        return Err(OpError::Input(format!(
                            "stream '{stream}': more than {max} records of partition {i} fail in {} (the first: {first}); on_error = \"dead_letter\" isolates a few poison records, not a UDF that fails on everything: fix the UDF or its input",
                            f.spec()
                        )));
                    }
                };
                if !found.failed.is_empty() {
                    tracing::warn!(
                        tenant = %scope.tenant, job = %scope.job, batch = scope.id, stream,
                        partition = i, calls = found.calls,
                        "{} records of partition {i} dead-lettered ({} calls to find them)",
                        found.failed.len(), found.calls
                    );
                }
                let out = if found.outputs.len() == 1 {
                    found.outputs.into_iter().next().unwrap_or_else(|| Batch::empty(false))
                } else {
                    Batch::try_concat(found.outputs.iter())?
                };
                let letters = found
                    .failed
                    .into_iter()
                    .map(|failed| DeadLetter {
                        format: dead_letters::FORMAT,
                        stream: stream.to_string(),
                        batch_id: scope.id,
                        batch_time: scope.time,
                        partition: i as u32,
                        position: failed.position as u64,
                        key: p
                            .keys
                            .as_ref()
                            .and_then(|k| k.get(failed.position))
                            .map(<[u8]>::to_vec),
                        value: p.values.get(failed.position).unwrap_or_default().to_vec(),
                        event_time: p.event_times.get(failed.position).copied().unwrap_or(scope.time),
                        error: failed.error.kind.to_string(),
                        kind: kind_name(&failed.error.kind).to_string(),
                        udf: f.spec(),
                        version: None,
                        hash: String::new(),
                        replayed: None,
                    })
                    .collect();
                Ok((out, letters))
            })
            .collect()
    });
    let (out, letters): (Vec<Batch>, Vec<Vec<DeadLetter>>) = per_part?.into_iter().unzip();
    Ok((out, letters.into_iter().flatten().collect()))
}

/// A filter keeps or drops records: per partition, its output may not hold more records than its
/// input, nor add or take away keys. (Other transforms may re-key freely: returning keys is how
/// a UDF turns values into `(key, value)` pairs.)
pub fn check_filtered(
    input: &[Batch],
    output: &[Batch],
    f: &UdfFunction,
    stream: &str,
) -> Result<(), OpError> {
    for (i, (before, after)) in input.iter().zip(output).enumerate() {
        if after.len() > before.len()
            || (!after.is_empty() && after.is_keyed() != before.is_keyed())
        {
            return Err(OpError::Input(format!(
                "stream '{stream}': the filter UDF {} returned {} {} records for partition {i} of {} {} records; a filter keeps or drops records, it cannot add them or change their keys (use map or flat_map for that)",
                f.spec(),
                after.len(),
                if after.is_keyed() { "keyed" } else { "unkeyed" },
                before.len(),
                if before.is_keyed() {
                    "keyed"
                } else {
                    "unkeyed"
                },
            )));
        }
    }
    Ok(())
}

/// A transform UDF over the whole batch in one call; the output is spread over the job's
/// partitions again.
pub fn whole_batch(
    scope: &BatchScope<'_>,
    f: &UdfFunction,
    parts: &[Batch],
) -> Result<Vec<Batch>, OpError> {
    let out = match Batch::try_concat(parts) {
        Ok(all) => vec![f.transform(&scope.context(0), &all)?],
        // Past what one batch holds (4 GiB): the partitions go one by one, as a call's input
        // is cut into pieces anyway (`max_call_records`, `max_call_bytes`).
        Err(_) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| f.transform(&scope.context(i), p))
            .collect::<Result<_, _>>()?,
    };
    Ok(Batch::spread(&out, scope.partitions)?)
}
