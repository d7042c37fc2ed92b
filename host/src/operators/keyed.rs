//! What the keyed operators share: the in-process shuffle (every partition scatters its
//! records by key hash, partition j gathers piece j of each), grouping by key, and the JSON
//! their composite values are written in.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::{BatchScope, OpError};
use crate::batch::codec::Codec;
use crate::batch::{Batch, Column};

/// Scatter every partition by key hash and gather the pieces: equal keys meet in one of the
/// job's partitions.
pub fn shuffle(scope: &BatchScope<'_>, parts: &[Batch]) -> Result<Vec<Batch>, OpError> {
    shuffle_to(scope, parts, scope.partitions)
}

/// Scatter by key hash into `n` partitions.
pub fn shuffle_to(
    scope: &BatchScope<'_>,
    parts: &[Batch],
    n: usize,
) -> Result<Vec<Batch>, OpError> {
    let scattered: Vec<Vec<Batch>> = scope
        .pool
        .install(|| parts.par_iter().map(|p| p.scatter_by_key(n)).collect());
    scope.pool.install(|| {
        (0..n)
            .into_par_iter()
            .map(|j| {
                Ok(Batch::try_concat(
                    scattered.iter().map(|pieces| &pieces[j]),
                )?)
            })
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

pub(super) fn keys(p: &Batch) -> Box<dyn Iterator<Item = &[u8]> + '_> {
    match &p.keys {
        Some(k) => Box::new(k.iter()),
        None => Box::new(std::iter::repeat_n(&b""[..], p.len())),
    }
}

/// An error unless every non-empty partition is keyed.
pub fn require_keys(parts: &[Batch], op: &str, stream: &str) -> Result<(), OpError> {
    if parts.iter().any(|p| !p.is_keyed() && !p.is_empty()) {
        return Err(OpError::Input(format!(
            "stream '{stream}': {op} needs keyed records, but its input has none; emit (key, value) pairs from a UDF before it"
        )));
    }
    Ok(())
}

pub(super) fn json_array<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = &'a [u8]>,
    codec: Codec,
) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        codec.write_json(item, out);
    }
    out.push(b']');
}

pub(super) fn pair(out: &mut Vec<u8>, left: Option<(&[u8], Codec)>, right: Option<(&[u8], Codec)>) {
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
