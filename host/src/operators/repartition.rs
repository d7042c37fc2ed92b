//! `repartition`: the same records spread evenly over `partitions` partitions.

use super::{Field, OpError, Operator, OperatorKind, PlanCx, Planned, RunCx};
use crate::batch::Batch;

/// The most partitions a job or a stream may have.
pub const MAX_PARTITIONS: usize = 4096;

/// `repartition`'s planning.
pub struct RepartitionKind;

/// `repartition`.
pub static REPARTITION: RepartitionKind = RepartitionKind;

impl OperatorKind for RepartitionKind {
    fn name(&self) -> &'static str {
        "repartition"
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Partitions]
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        match cx.spec.partitions {
            Some(n) if (1..=MAX_PARTITIONS).contains(&n) => {
                let (key, value) = cx.input_codecs();
                Some(Planned::new(Repartition(n), key, value))
            }
            other => {
                cx.error(
                    match other {
                        Some(n) => {
                            format!("partitions = {n} is not between 1 and {MAX_PARTITIONS}")
                        }
                        None => "repartition needs `partitions = N`".into(),
                    },
                    None,
                );
                None
            }
        }
    }
}

/// A planned repartition into this many partitions.
#[derive(Debug)]
pub struct Repartition(usize);

impl Operator for Repartition {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        Ok(Some(repartition(cx.input(0), self.0)?))
    }
}

/// The same records over `n` partitions of nearly equal size.
pub fn repartition(parts: &[Batch], n: usize) -> Result<Vec<Batch>, OpError> {
    Ok(Batch::spread(parts, n)?)
}
