//! Reducers as operators see them: a UDF of the reducer world, or a [`Builtin`] that runs in
//! the host. Both reduce groups of values to one accumulator per group, merge accumulators, and
//! (for sliding windows) take one accumulator out of another.
//!
//! A UDF's accumulator is a value of the stream (`fn(V, V) -> V`). A builtin lifts each raw
//! value into a typed [`Acc`] (`count` lifts anything to 1, `count_and_sum` lifts `x` to
//! `[1, x]`) and writes accumulators as decimal numbers or a JSON pair.

use std::io::Write as _;

use super::{BatchScope, Builtin, OpError, UdfRef};
use crate::batch::Column;
use crate::batch::codec::Codec;

/// A reducer of a planned stream: a UDF or a builtin.
#[derive(Debug, Clone)]
pub enum Reducer {
    /// A reducer UDF.
    Udf(UdfRef),
    /// A reducer the host runs natively.
    Builtin(Builtin),
}

/// A builtin's accumulator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acc {
    /// count, sum_i64.
    Int(i64),
    /// sum_f64.
    Float(f64),
    /// count_and_sum: `[count, sum]`.
    Pair(i64, i64),
}

impl Acc {
    /// `self + other`.
    pub fn add(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Int(a), Acc::Int(b)) => *a = a.wrapping_add(b),
            (Acc::Float(a), Acc::Float(b)) => *a += b,
            (Acc::Pair(c, s), Acc::Pair(c2, s2)) => {
                *c = c.wrapping_add(c2);
                *s = s.wrapping_add(s2);
            }
            _ => {}
        }
    }

    /// `self - other`.
    pub fn sub(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Int(a), Acc::Int(b)) => *a = a.wrapping_sub(b),
            (Acc::Float(a), Acc::Float(b)) => *a -= b,
            (Acc::Pair(c, s), Acc::Pair(c2, s2)) => {
                *c = c.wrapping_sub(c2);
                *s = s.wrapping_sub(s2);
            }
            _ => {}
        }
    }

    /// Append the accumulator as its stream writes it.
    pub fn encode(self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = match self {
            Acc::Int(n) => write!(out, "{n}"),
            Acc::Float(x) => write!(out, "{x}"),
            Acc::Pair(c, s) => write!(out, "[{c},{s}]"),
        };
    }
}

impl Builtin {
    /// The accumulator of one raw value.
    pub fn lift(self, value: &[u8]) -> Result<Acc, OpError> {
        match self {
            Builtin::Count => Ok(Acc::Int(1)),
            Builtin::SumI64 => parse_i64(value, self).map(Acc::Int),
            Builtin::SumF64 => parse_f64(value, self).map(Acc::Float),
            Builtin::CountAndSum => parse_i64(value, self).map(|x| Acc::Pair(1, x)),
        }
    }

    /// An accumulator read back from its encoding.
    pub fn decode(self, acc: &[u8]) -> Result<Acc, OpError> {
        match self {
            Builtin::Count | Builtin::SumI64 => parse_i64(acc, self).map(Acc::Int),
            Builtin::SumF64 => parse_f64(acc, self).map(Acc::Float),
            Builtin::CountAndSum => {
                let bad = || {
                    OpError::Input(format!(
                        "builtin count_and_sum: {:?} is not a [count, sum] pair",
                        String::from_utf8_lossy(acc)
                    ))
                };
                let text = std::str::from_utf8(acc).map_err(|_| bad())?;
                let inner = text
                    .trim()
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .ok_or_else(bad)?;
                let (c, s) = inner.split_once(',').ok_or_else(bad)?;
                let c = c.trim().parse().map_err(|_| bad())?;
                let s = s.trim().parse().map_err(|_| bad())?;
                Ok(Acc::Pair(c, s))
            }
        }
    }

    /// The codec of its accumulators.
    pub fn codec(self) -> Codec {
        match self {
            Builtin::CountAndSum => Codec::Json,
            _ => Codec::Number,
        }
    }

    /// The accumulator of no values.
    pub fn zero(self) -> Acc {
        match self {
            Builtin::Count | Builtin::SumI64 => Acc::Int(0),
            Builtin::SumF64 => Acc::Float(0.0),
            Builtin::CountAndSum => Acc::Pair(0, 0),
        }
    }
}

fn parse_i64(value: &[u8], b: Builtin) -> Result<i64, OpError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            OpError::Input(format!(
                "builtin {}: the value {:?} is not an integer",
                b.as_str(),
                String::from_utf8_lossy(value)
            ))
        })
}

fn parse_f64(value: &[u8], b: Builtin) -> Result<f64, OpError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            OpError::Input(format!(
                "builtin {}: the value {:?} is not a number",
                b.as_str(),
                String::from_utf8_lossy(value)
            ))
        })
}

impl Reducer {
    /// Reduce each group of `values` (`ends[g]` is group `g`'s exclusive end) to one
    /// accumulator, for `partition` of the batch. `raw` says whether the values are the
    /// stream's records (lifted first by a builtin) or accumulators already.
    pub fn reduce(
        &self,
        scope: &BatchScope<'_>,
        partition: usize,
        values: &Column,
        ends: &[u32],
        raw: bool,
    ) -> Result<Column, OpError> {
        match self {
            Reducer::Udf(f) => Ok(scope
                .udf(*f)
                .reduce(&scope.context(partition), values, ends)?),
            Reducer::Builtin(b) => b.reduce(values, ends, raw),
        }
    }

    /// Item by item, `left[i]` with `right[i]` taken out (both accumulators).
    pub fn invert(
        &self,
        scope: &BatchScope<'_>,
        partition: usize,
        left: &Column,
        right: &Column,
    ) -> Result<Column, OpError> {
        match self {
            Reducer::Udf(f) => Ok(scope
                .udf(*f)
                .invert(&scope.context(partition), left, right)?),
            Reducer::Builtin(b) => b.invert(left, right),
        }
    }

    /// The codec of the accumulators, given the codec of the values reduced.
    pub fn codec(&self, input: Codec) -> Codec {
        match self {
            Reducer::Udf(_) => input,
            Reducer::Builtin(b) => b.codec(),
        }
    }

    /// The UDF, when it is one.
    pub fn udf(&self) -> Option<UdfRef> {
        match self {
            Reducer::Udf(f) => Some(*f),
            Reducer::Builtin(_) => None,
        }
    }

    /// The builtin, when it is one.
    pub fn builtin(&self) -> Option<Builtin> {
        match self {
            Reducer::Udf(_) => None,
            Reducer::Builtin(b) => Some(*b),
        }
    }
}

impl Builtin {
    /// Reduce each group of `values` to one accumulator (see [`Reducer::reduce`]).
    pub fn reduce(self, values: &Column, ends: &[u32], raw: bool) -> Result<Column, OpError> {
        let mut out = Column::with_capacity(ends.len(), ends.len() * 8);
        let mut buf = Vec::new();
        let mut start = 0usize;
        for &end in ends {
            let mut acc = self.zero();
            for i in start..end as usize {
                let v = values.get(i).unwrap_or_default();
                acc.add(if raw { self.lift(v)? } else { self.decode(v)? });
            }
            buf.clear();
            acc.encode(&mut buf);
            out.push(&buf);
            start = end as usize;
        }
        Ok(out)
    }

    /// Item by item, `left[i]` with `right[i]` taken out.
    pub fn invert(self, left: &Column, right: &Column) -> Result<Column, OpError> {
        let mut out = Column::with_capacity(left.len(), left.data.len());
        let mut buf = Vec::new();
        for (l, r) in left.iter().zip(right.iter()) {
            let mut acc = self.decode(l)?;
            acc.sub(self.decode(r)?);
            buf.clear();
            acc.encode(&mut buf);
            out.push(&buf);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce(b: Builtin, values: &[&str], ends: &[u32], raw: bool) -> Vec<String> {
        let column = Column::from_items(values);
        let out = b.reduce(&column, ends, raw).expect("reduce");
        out.iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn builtins_lift_merge_and_invert() {
        assert_eq!(
            reduce(Builtin::Count, &["a", "b", "c"], &[2, 3], true),
            ["2", "1"]
        );
        assert_eq!(reduce(Builtin::Count, &["2", "5"], &[2], false), ["7"]);
        assert_eq!(
            reduce(Builtin::SumI64, &["4", "-1", " 10 "], &[3], true),
            ["13"]
        );
        assert_eq!(reduce(Builtin::SumF64, &["1.5", "2"], &[2], true), ["3.5"]);
        assert_eq!(
            reduce(Builtin::CountAndSum, &["250", "100"], &[2], true),
            ["[2,350]"]
        );
        assert_eq!(
            reduce(Builtin::CountAndSum, &["[2,350]", "[1, 5]"], &[2], false),
            ["[3,355]"]
        );
        let inv = Builtin::CountAndSum
            .invert(
                &Column::from_items(["[3,355]"]),
                &Column::from_items(["[1,5]"]),
            )
            .expect("invert");
        assert_eq!(inv.get(0), Some(&b"[2,350]"[..]));
    }

    #[test]
    fn builtins_name_values_they_cannot_read() {
        let err = Builtin::SumI64
            .reduce(&Column::from_items(["7", "x7"]), &[2], true)
            .expect_err("not a number");
        assert_eq!(
            err.to_string(),
            "builtin sum_i64: the value \"x7\" is not an integer"
        );
    }
}
