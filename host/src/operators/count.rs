//! `count` (one record: how many the batch has) and `count_by_value` (per distinct value, how
//! many records have it: counted per partition, shuffled by value, summed).

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::keyed::{groups, shuffle};
use super::{BatchScope, OpError, Operator, OperatorKind, PlanCx, Planned, RunCx};
use crate::batch::Batch;
use crate::batch::codec::Codec;

/// `count`'s planning.
pub struct CountKind;

/// `count`.
pub static COUNT: CountKind = CountKind;

impl OperatorKind for CountKind {
    fn name(&self) -> &'static str {
        "count"
    }

    fn plan(&self, _cx: &mut PlanCx<'_>) -> Option<Planned> {
        Some(Planned::new(Count, Codec::Text, Codec::Number))
    }
}

/// A planned count.
#[derive(Debug)]
pub struct Count;

impl Operator for Count {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        Ok(Some(count(cx.scope, cx.input(0))))
    }
}

/// `count_by_value`'s planning.
pub struct CountByValueKind;

/// `count_by_value`.
pub static COUNT_BY_VALUE: CountByValueKind = CountByValueKind;

impl OperatorKind for CountByValueKind {
    fn name(&self) -> &'static str {
        "count_by_value"
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let (_, value) = cx.input_codecs();
        Some(Planned::new(CountByValue, value, Codec::Number))
    }
}

/// A planned count_by_value.
#[derive(Debug)]
pub struct CountByValue;

impl Operator for CountByValue {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        count_by_value(cx.scope, cx.input(0)).map(Some)
    }
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
    let shuffled = shuffle(scope, &partial)?;
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
