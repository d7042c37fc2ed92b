//! `group_by_key`: per key, a JSON array of its values.

use rayon::prelude::*;

use super::keyed::{groups, json_array, require_keys, shuffle};
use super::{BatchScope, OpError, Operator, OperatorKind, PlanCx, Planned, RunCx};
use crate::batch::Batch;
use crate::batch::codec::Codec;

/// `group_by_key`'s planning.
pub struct GroupByKeyKind;

/// `group_by_key`.
pub static GROUP_BY_KEY: GroupByKeyKind = GroupByKeyKind;

impl OperatorKind for GroupByKeyKind {
    fn name(&self) -> &'static str {
        "group_by_key"
    }

    fn plan(&self, cx: &mut PlanCx<'_>) -> Option<Planned> {
        let (key, _) = cx.input_codecs();
        Some(Planned::new(GroupByKey, key, Codec::Json))
    }
}

/// A planned group_by_key.
#[derive(Debug)]
pub struct GroupByKey;

impl Operator for GroupByKey {
    fn run(&self, cx: &mut RunCx<'_, '_>) -> Result<Option<Vec<Batch>>, OpError> {
        group_by_key(cx.scope, cx.input(0), cx.value_codec(0), cx.stream).map(Some)
    }
}

/// Per key, a JSON array of its values (decoded by `codec`).
pub fn group_by_key(
    scope: &BatchScope<'_>,
    parts: &[Batch],
    codec: Codec,
    stream: &str,
) -> Result<Vec<Batch>, OpError> {
    require_keys(parts, "group_by_key", stream)?;
    let shuffled = shuffle(scope, parts)?;
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
