//! Spark's join family over two keyed streams, shuffled so equal keys meet in one partition:
//! `join` (per matching pair `[left, right]`), `left_outer_join`, `right_outer_join` and
//! `full_outer_join` (the missing side `null`), and `cogroup` (per key on either side,
//! `[[left values], [right values]]`).

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::keyed::{json_array, keys, pair, require_keys, shuffle};
use super::{Arity, BatchScope, OpError, Operator, OperatorKind, PlanCx, Planned, RunCx};
use crate::batch::Batch;
use crate::batch::codec::Codec;

/// Whether joins keep records without a match on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Only keys on both sides.
    Inner,
    /// Every left record.
    LeftOuter,
    /// Every right record.
    RightOuter,
    /// Every record of both.
    FullOuter,
}

/// The planning of a join or cogroup.
pub struct JoinOpKind {
    name: &'static str,
    /// `None`: cogroup.
    join: Option<JoinKind>,
}

/// `join`.
pub static JOIN: JoinOpKind = JoinOpKind {
    name: "join",
    join: Some(JoinKind::Inner),
};

/// `left_outer_join`.
pub static LEFT_OUTER_JOIN: JoinOpKind = JoinOpKind {
    name: "left_outer_join",
    join: Some(JoinKind::LeftOuter),
};

/// `right_outer_join`.
pub static RIGHT_OUTER_JOIN: JoinOpKind = JoinOpKind {
    name: "right_outer_join",
    join: Some(JoinKind::RightOuter),
};

/// `full_outer_join`.
pub static FULL_OUTER_JOIN: JoinOpKind = JoinOpKind {
    name: "full_outer_join",
    join: Some(JoinKind::FullOuter),
};

/// `cogroup`.
pub static COGROUP: JoinOpKind = JoinOpKind {
    name: "cogroup",
    join: None,
};

impl OperatorKind for JoinOpKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn arity(&self) -> Arity {
        Arity::Two
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let (key, _) = cx.input_codecs();
        Some(Planned::new(Join { join: self.join }, key, Codec::Json))
    }
}

/// A planned join or cogroup.
#[derive(Debug)]
pub struct Join {
    join: Option<JoinKind>,
}

impl Operator for Join {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        let sides = Sides {
            left: (cx.input(0), cx.value_codec(0)),
            right: (cx.input(1), cx.value_codec(1)),
        };
        match self.join {
            Some(kind) => join(cx.scope, sides, kind, cx.stream),
            None => cogroup(cx.scope, sides, cx.stream),
        }
        .map(Some)
    }
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
            shuffle(scope, self.left.0)?,
            shuffle(scope, self.right.0)?,
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
