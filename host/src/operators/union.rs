//! `union`: the records of all inputs, partitions side by side (Spark's union).

use super::{Arity, OpError, Operator, OperatorKind, PlanCx, Planned, RunCx};
use crate::batch::Batch;

/// `union`'s planning.
pub struct UnionKind;

/// `union`.
pub static UNION: UnionKind = UnionKind;

impl OperatorKind for UnionKind {
    fn name(&self) -> &'static str {
        "union"
    }

    fn arity(&self) -> Arity {
        Arity::Many
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let (key, value) = cx.input_codecs();
        Some(Planned::new(Union, key, value))
    }
}

/// A planned union.
#[derive(Debug)]
pub struct Union;

impl Operator for Union {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        let all: Vec<&[Batch]> = cx.inputs.iter().map(|i| i.parts).collect();
        Ok(Some(union(&all)))
    }
}

/// The records of every input, partitions side by side (Spark's union).
pub fn union(inputs: &[&[Batch]]) -> Vec<Batch> {
    inputs
        .iter()
        .flat_map(|parts| parts.iter().cloned())
        .collect()
}
