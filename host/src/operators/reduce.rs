//! `reduce` (one record: every value of the batch reduced, keys ignored) and `reduce_by_key`
//! (per key, its values reduced: within each partition first, Spark's map-side combine, then
//! shuffled by key and reduced again). The reducer is a UDF or a builtin ([`Reducer`]).

use rayon::prelude::*;

use super::keyed::{grouped_values, require_keys, shuffle};
use super::{
    BatchScope, Field, OpError, Operator, OperatorKind, PlanCx, Planned, Reducer, RunCx, UdfRef,
    UdfUse,
};
use crate::batch::{Batch, Column};
use crate::udf::Role;

/// `reduce` and `reduce_by_key`'s planning.
pub struct ReduceKind {
    name: &'static str,
    by_key: bool,
}

/// `reduce`.
pub static REDUCE: ReduceKind = ReduceKind {
    name: "reduce",
    by_key: false,
};

/// `reduce_by_key`.
pub static REDUCE_BY_KEY: ReduceKind = ReduceKind {
    name: "reduce_by_key",
    by_key: true,
};

impl OperatorKind for ReduceKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn udf(&self) -> UdfUse {
        UdfUse::Needs {
            role: Role::Reducer,
            builtin: true,
        }
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Builtin]
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let reducer = cx.reducer.clone()?;
        let (key, value) = cx.input_codecs();
        let value = cx.reduced_codec(value);
        Some(Planned::new(
            Reduce {
                reducer,
                by_key: self.by_key,
            },
            key,
            value,
        ))
    }
}

/// A planned reduce or reduce_by_key.
#[derive(Debug)]
pub struct Reduce {
    reducer: Reducer,
    by_key: bool,
}

impl Operator for Reduce {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        let out = if self.by_key {
            reduce_by_key(cx.scope, &self.reducer, cx.input(0), cx.stream)?
        } else {
            reduce(cx.scope, &self.reducer, cx.input(0), true)?
        };
        Ok(Some(out))
    }

    fn udfs(&self) -> Vec<UdfRef> {
        self.reducer.udf().into_iter().collect()
    }
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
                let out = r.reduce(scope, i, &p.values, &[p.len() as u32], raw)?;
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
            let reduced = r.reduce(scope, 0, &column, &[n as u32], false)?;
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
    let shuffled = shuffle(scope, &partial)?;
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
    let reduced = r.reduce(scope, partition, &values, &ends, raw)?;
    let mut out = Batch::empty(true);
    for ((key, _), value) in grouped.iter().zip(reduced.iter()) {
        out.push(Some(key), value, scope.time);
    }
    Ok(out)
}
