//! Runners for reducers: `fn(V, V) -> V`, folded over each group of values, and its inverse.

use crate::bindings::{Column, UdfError};
use crate::codec::{Decode, Encode};
use crate::records::{ColumnBuilder, ColumnRef, error};

fn decode<'a, V: Decode<'a>>(bytes: &'a [u8], what: &str, index: usize) -> Result<V, UdfError> {
    V::decode(bytes).map_err(|e| error(format!("{what} {index}: {e}"), Some(index as u32)))
}

/// Fold `f` over each group of `values`; `group_ends[g]` is the exclusive end of group `g`.
pub fn reduce<'a, V: Decode<'a> + Encode>(
    values: &'a Column,
    group_ends: &[u32],
    mut f: impl FnMut(V, V) -> V,
) -> Result<Column, UdfError> {
    let values = ColumnRef::new(values, "value")?;
    let mut out = ColumnBuilder::with_capacity(group_ends.len());
    let mut start = 0usize;
    for (g, &end) in group_ends.iter().enumerate() {
        let end = end as usize;
        if end <= start || end > values.len() {
            return Err(error(
                format!(
                    "malformed groups from the host: group {g} spans items {start}..{end} of {}",
                    values.len()
                ),
                None,
            ));
        }
        let mut acc: V = decode(values.get(start), "value", start)?;
        for i in start + 1..end {
            acc = f(acc, decode(values.get(i), "value", i)?);
        }
        out.push(&acc)?;
        start = end;
    }
    Ok(out.finish())
}

/// Apply the inverse `f(left[i], right[i])` item by item.
pub fn invert<'a, V: Decode<'a> + Encode>(
    left: &'a Column,
    right: &'a Column,
    mut f: impl FnMut(V, V) -> V,
) -> Result<Column, UdfError> {
    let left = ColumnRef::new(left, "left")?;
    let right = ColumnRef::new(right, "right")?;
    if left.len() != right.len() {
        return Err(error(
            format!(
                "malformed inverse call from the host: {} left items, {} right",
                left.len(),
                right.len()
            ),
            None,
        ));
    }
    let mut out = ColumnBuilder::with_capacity(left.len());
    for i in 0..left.len() {
        let result = f(
            decode(left.get(i), "left item", i)?,
            decode(right.get(i), "right item", i)?,
        );
        out.push(&result)?;
    }
    Ok(out.finish())
}

/// The answer of `invert` for a reducer exported without an inverse.
pub fn no_inverse(name: &str) -> UdfError {
    error(
        format!(
            "reducer `{name}` has no inverse; export it as `{name}(inverse = ...)` to use it in a sliding window with an inverse"
        ),
        None,
    )
}
