//! The operators that run in the host, and the glue around the ones that call UDFs: per
//! partition, whole batch, and the keyed operators with their in-process shuffle (map-side
//! combine, scatter by key hash, reduce per partition).
//!
//! Every operator takes the partitions of its inputs and returns its own. Aggregates carry the
//! batch time as event time; joins the later event time of the two sides.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::executor::BatchScope;
use crate::batch::codec::Codec;
use crate::batch::{Batch, Column};
use crate::plan::{JoinKind, Reducer, StaticTable};
use crate::udf::{CallError, UdfFunction};

/// Why an operator could not produce its output.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A UDF call failed.
    #[error(transparent)]
    Udf(#[from] CallError),
    /// The records do not fit the operator (an unkeyed stream into a keyed operator).
    #[error("{0}")]
    Input(String),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
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
    let all = Batch::concat(parts);
    let out = f.transform(&scope.context(0), &all)?;
    Ok(out.split(scope.partitions))
}

/// The records of every input, partitions side by side (Spark's union).
pub fn union(inputs: &[&[Batch]]) -> Vec<Batch> {
    inputs
        .iter()
        .flat_map(|parts| parts.iter().cloned())
        .collect()
}

/// The same records over `n` partitions of nearly equal size.
pub fn repartition(parts: &[Batch], n: usize) -> Vec<Batch> {
    Batch::concat(parts).split(n)
}

/// One record: how many records the batch has.
pub fn count(scope: &BatchScope<'_>, parts: &[Batch]) -> Vec<Batch> {
    let n: usize = parts.iter().map(Batch::len).sum();
    let mut out = Batch::empty(false);
    out.push(None, n.to_string().as_bytes(), scope.time);
    vec![out]
}

/// Per distinct value, how many records have it: counted per partition, shuffled by value,
/// summed.
pub fn count_by_value(scope: &BatchScope<'_>, parts: &[Batch]) -> Result<Vec<Batch>, OpError> {
    let partial: Vec<Batch> = scope.pool.install(|| {
        parts
            .par_iter()
            .map(|p| {
                let mut counts: FxHashMap<&[u8], u64> = FxHashMap::default();
                let mut order = Vec::new();
                for v in p.values.iter() {
                    let c = counts.entry(v).or_insert_with(|| {
                        order.push(v);
                        0
                    });
                    *c += 1;
                }
                let mut b = Batch::empty(true);
                for v in order {
                    b.push(Some(v), counts[v].to_string().as_bytes(), scope.time);
                }
                b
            })
            .collect()
    });
    let shuffled = shuffle(scope, &partial);
    scope.pool.install(|| {
        shuffled
            .par_iter()
            .map(|p| {
                let mut out = Batch::empty(true);
                for (key, members) in groups(p) {
                    let mut total = 0u64;
                    for &i in &members {
                        total += parse_count(p.values.get(i).unwrap_or_default())?;
                    }
                    out.push(Some(key), total.to_string().as_bytes(), scope.time);
                }
                Ok(out)
            })
            .collect()
    })
}

fn parse_count(bytes: &[u8]) -> Result<u64, OpError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            OpError::Input(format!(
                "a partial count {:?} is not a number",
                String::from_utf8_lossy(bytes)
            ))
        })
}

/// One record: every value of the batch reduced (keys ignored). Partitions reduce in
/// parallel, then their results in one more call. An empty batch gives no record. `raw` says
/// whether the values are records or accumulators (see [`Reducer::reduce`]).
pub fn reduce(
    scope: &BatchScope<'_>,
    r: &Reducer,
    parts: &[Batch],
    raw: bool,
) -> Result<Vec<Batch>, OpError> {
    let partials: Result<Vec<Option<Vec<u8>>>, OpError> = scope.pool.install(|| {
        parts
            .par_iter()
            .enumerate()
            .map(|(i, p)| {
                if p.is_empty() {
                    return Ok(None);
                }
                let out = r.reduce(&scope.context(i), &p.values, &[p.len() as u32], raw)?;
                Ok(out.get(0).map(<[u8]>::to_vec))
            })
            .collect()
    });
    let partials: Vec<Vec<u8>> = partials?.into_iter().flatten().collect();
    let mut out = Batch::empty(false);
    match partials.len() {
        0 => {}
        1 => out.push(None, &partials[0], scope.time),
        n => {
            let column = Column::from_items(&partials);
            let reduced = r.reduce(&scope.context(0), &column, &[n as u32], false)?;
            out.push(None, reduced.get(0).unwrap_or_default(), scope.time);
        }
    }
    Ok(vec![out])
}

/// Per key, its values reduced: reduced within each partition first (Spark's map-side
/// combine), shuffled by key, reduced again.
pub fn reduce_by_key(
    scope: &BatchScope<'_>,
    r: &Reducer,
    parts: &[Batch],
    stream: &str,
) -> Result<Vec<Batch>, OpError> {
    require_keys(parts, "reduce_by_key", stream)?;
    let partial = reduce_partitions(scope, r, parts, true)?;
    let shuffled = shuffle(scope, &partial);
    reduce_partitions(scope, r, &shuffled, false)
}

/// Every partition's values reduced per key, in parallel (no shuffle).
pub fn reduce_partitions(
    scope: &BatchScope<'_>,
    r: &Reducer,
    parts: &[Batch],
    raw: bool,
) -> Result<Vec<Batch>, OpError> {
    scope.pool.install(|| {
        parts
            .par_iter()
            .enumerate()
            .map(|(i, p)| reduce_groups(scope, r, i, p, raw))
            .collect()
    })
}

fn reduce_groups(
    scope: &BatchScope<'_>,
    r: &Reducer,
    partition: usize,
    p: &Batch,
    raw: bool,
) -> Result<Batch, OpError> {
    if p.is_empty() {
        return Ok(Batch::empty(true));
    }
    let (grouped, values, ends) = grouped_values(p);
    let reduced = r.reduce(&scope.context(partition), &values, &ends, raw)?;
    let mut out = Batch::empty(true);
    for ((key, _), value) in grouped.iter().zip(reduced.iter()) {
        out.push(Some(key), value, scope.time);
    }
    Ok(out)
}

/// Per key, a JSON array of its values (decoded by `codec`).
pub fn group_by_key(
    scope: &BatchScope<'_>,
    parts: &[Batch],
    codec: Codec,
    stream: &str,
) -> Result<Vec<Batch>, OpError> {
    require_keys(parts, "group_by_key", stream)?;
    let shuffled = shuffle(scope, parts);
    Ok(scope.pool.install(|| {
        shuffled
            .par_iter()
            .map(|p| {
                let mut out = Batch::empty(true);
                let mut json = Vec::new();
                for (key, members) in groups(p) {
                    json.clear();
                    json_array(
                        &mut json,
                        members.iter().map(|&i| p.values.get(i).unwrap_or_default()),
                        codec,
                    );
                    out.push(Some(key), &json, scope.time);
                }
                out
            })
            .collect()
    }))
}

/// Both sides of a join or cogroup, shuffled so equal keys meet in one partition.
pub struct Sides<'a> {
    /// The left stream's partitions and value codec.
    pub left: (&'a [Batch], Codec),
    /// The right stream's.
    pub right: (&'a [Batch], Codec),
}

impl Sides<'_> {
    /// Both sides checked for keys and shuffled, with their codecs.
    fn shuffled(
        &self,
        scope: &BatchScope<'_>,
        op: &str,
        stream: &str,
    ) -> Result<(Vec<Batch>, Vec<Batch>, Codec, Codec), OpError> {
        require_keys(self.left.0, op, stream)?;
        require_keys(self.right.0, op, stream)?;
        Ok((
            shuffle(scope, self.left.0),
            shuffle(scope, self.right.0),
            self.left.1,
            self.right.1,
        ))
    }
}

/// Spark's join family: per matching pair `[left, right]`; outer joins fill the missing side
/// with `null`.
pub fn join(
    scope: &BatchScope<'_>,
    sides: Sides<'_>,
    kind: JoinKind,
    stream: &str,
) -> Result<Vec<Batch>, OpError> {
    let (left, right, lc, rc) = sides.shuffled(scope, "a join", stream)?;
    Ok(scope.pool.install(|| {
        left.par_iter()
            .zip(right.par_iter())
            .map(|(l, r)| {
                let mut out = Batch::empty(true);
                let mut by_key: FxHashMap<&[u8], Vec<usize>> = FxHashMap::default();
                for (i, k) in keys(r).enumerate() {
                    by_key.entry(k).or_default().push(i);
                }
                let mut matched = vec![false; r.len()];
                let mut json = Vec::new();
                for (i, rec) in l.records().enumerate() {
                    let key = rec.key.unwrap_or_default();
                    match by_key.get(key) {
                        Some(rights) => {
                            for &j in rights {
                                matched[j] = true;
                                json.clear();
                                pair(
                                    &mut json,
                                    Some((rec.value, lc)),
                                    r.values.get(j).map(|v| (v, rc)),
                                );
                                out.push(Some(key), &json, rec.event_time.max(r.event_times[j]));
                            }
                        }
                        None if matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter) => {
                            json.clear();
                            pair(&mut json, Some((rec.value, lc)), None);
                            out.push(Some(key), &json, l.event_times[i]);
                        }
                        None => {}
                    }
                }
                if matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter) {
                    for (_, rec) in r.records().enumerate().filter(|(j, _)| !matched[*j]) {
                        json.clear();
                        pair(&mut json, None, Some((rec.value, rc)));
                        out.push(rec.key, &json, rec.event_time);
                    }
                }
                out
            })
            .collect()
    }))
}

/// Spark's cogroup: per key on either side, `[[left values], [right values]]`.
pub fn cogroup(
    scope: &BatchScope<'_>,
    sides: Sides<'_>,
    stream: &str,
) -> Result<Vec<Batch>, OpError> {
    let (left, right, lc, rc) = sides.shuffled(scope, "cogroup", stream)?;
    Ok(scope.pool.install(|| {
        left.par_iter()
            .zip(right.par_iter())
            .map(|(l, r)| {
                let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
                let mut groups: Vec<CoGroup<'_>> = Vec::new();
                for (side, batch) in [(0, l), (1, r)] {
                    for rec in batch.records() {
                        let key = rec.key.unwrap_or_default();
                        let g = *index.entry(key).or_insert_with(|| {
                            groups.push((key, Vec::new(), Vec::new()));
                            groups.len() - 1
                        });
                        if side == 0 {
                            groups[g].1.push(rec.value);
                        } else {
                            groups[g].2.push(rec.value);
                        }
                    }
                }
                let mut out = Batch::empty(true);
                let mut json = Vec::new();
                for (key, ls, rs) in groups {
                    json.clear();
                    json.push(b'[');
                    json_array(&mut json, ls.into_iter(), lc);
                    json.push(b',');
                    json_array(&mut json, rs.into_iter(), rc);
                    json.push(b']');
                    out.push(Some(key), &json, scope.time);
                }
                out
            })
            .collect()
    }))
}

/// A key with its values on the left and on the right.
type CoGroup<'a> = (&'a [u8], Vec<&'a [u8]>, Vec<&'a [u8]>);

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

/// Scatter every partition by key hash and gather the pieces: equal keys meet in one of the
/// job's partitions.
pub fn shuffle(scope: &BatchScope<'_>, parts: &[Batch]) -> Vec<Batch> {
    shuffle_to(scope, parts, scope.partitions)
}

/// Scatter by key hash into `n` partitions.
pub fn shuffle_to(scope: &BatchScope<'_>, parts: &[Batch], n: usize) -> Vec<Batch> {
    let scattered: Vec<Vec<Batch>> = scope
        .pool
        .install(|| parts.par_iter().map(|p| p.scatter_by_key(n)).collect());
    scope.pool.install(|| {
        (0..n)
            .into_par_iter()
            .map(|j| Batch::concat(scattered.iter().map(|pieces| &pieces[j])))
            .collect()
    })
}

/// A partition's records grouped by key, and their values laid out group after group, with
/// each group's end: what a reducer call takes.
pub fn grouped_values(p: &Batch) -> (Groups<'_>, Column, Vec<u32>) {
    let grouped = groups(p);
    let mut values = Column::with_capacity(p.len(), p.values.data.len());
    let mut ends = Vec::with_capacity(grouped.len());
    for (_, members) in &grouped {
        for &i in members {
            values.push(p.values.get(i).unwrap_or_default());
        }
        ends.push(values.len() as u32);
    }
    (grouped, values, ends)
}

/// Keys with the indexes of their records, in the order the keys first appear.
pub type Groups<'a> = Vec<(&'a [u8], Vec<usize>)>;

/// Record indexes grouped by key, groups in the order their keys first appear.
pub fn groups(p: &Batch) -> Groups<'_> {
    let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
    let mut out: Vec<(&[u8], Vec<usize>)> = Vec::new();
    for (i, key) in keys(p).enumerate() {
        let g = *index.entry(key).or_insert_with(|| {
            out.push((key, Vec::new()));
            out.len() - 1
        });
        out[g].1.push(i);
    }
    out
}

fn keys(p: &Batch) -> Box<dyn Iterator<Item = &[u8]> + '_> {
    match &p.keys {
        Some(k) => Box::new(k.iter()),
        None => Box::new(std::iter::repeat_n(&b""[..], p.len())),
    }
}

pub fn require_keys(parts: &[Batch], op: &str, stream: &str) -> Result<(), OpError> {
    if parts.iter().any(|p| !p.is_keyed() && !p.is_empty()) {
        return Err(OpError::Input(format!(
            "stream '{stream}': {op} needs keyed records, but its input has none; emit (key, value) pairs from a UDF before it"
        )));
    }
    Ok(())
}

fn json_array<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>, codec: Codec) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        codec.write_json(item, out);
    }
    out.push(b']');
}

fn pair(out: &mut Vec<u8>, left: Option<(&[u8], Codec)>, right: Option<(&[u8], Codec)>) {
    out.push(b'[');
    for (i, side) in [left, right].into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match side {
            Some((item, codec)) => {
                codec.write_json(item, out);
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b']');
}
