//! Reducers for `reduce`, `reduce_by_key` and the windowed operators.
//!
//! `sum_i64` and `sum_f64` (with inverses, so sliding windows update incrementally; a count is
//! the sum of ones), `count_and_sum` over JSON pairs `[count, sum]` (with inverse), and
//! `min_i64` / `max_i64` (no inverse exists).

use sluice_guest::{Json, export_reducers};

/// `a + b`, wrapping on overflow like Spark's `Long` arithmetic.
pub fn sum_i64(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

/// `a - b`: the inverse of [`sum_i64`].
pub fn sub_i64(a: i64, b: i64) -> i64 {
    a.wrapping_sub(b)
}

/// `a + b` for floats.
pub fn sum_f64(a: f64, b: f64) -> f64 {
    a + b
}

/// `a - b`: the inverse of [`sum_f64`].
pub fn sub_f64(a: f64, b: f64) -> f64 {
    a - b
}

/// Component-wise sum of `[count, sum]` pairs.
pub fn count_and_sum(a: Json<(i64, i64)>, b: Json<(i64, i64)>) -> Json<(i64, i64)> {
    Json((a.0.0.wrapping_add(b.0.0), a.0.1.wrapping_add(b.0.1)))
}

/// Component-wise difference: the inverse of [`count_and_sum`].
pub fn uncount_and_unsum(a: Json<(i64, i64)>, b: Json<(i64, i64)>) -> Json<(i64, i64)> {
    Json((a.0.0.wrapping_sub(b.0.0), a.0.1.wrapping_sub(b.0.1)))
}

/// The smaller value.
pub fn min_i64(a: i64, b: i64) -> i64 {
    a.min(b)
}

/// The larger value.
pub fn max_i64(a: i64, b: i64) -> i64 {
    a.max(b)
}

export_reducers! {
    sum_i64(inverse = sub_i64),
    sum_f64(inverse = sub_f64),
    count_and_sum(inverse = uncount_and_unsum),
    min_i64,
    max_i64,
}
