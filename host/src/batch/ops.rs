//! Moving records between batches: concatenating partitions, splitting a batch into even
//! partitions, and scattering records by key hash for the in-process shuffle.

use std::hash::Hasher;

use super::bounds::{self, BatchError, MAX_COLUMN_BYTES};
use super::{Batch, Column};

impl Column {
    /// Append item range `range` of `other` (which must lie within it) to a column bounded by
    /// construction. Panics past [`MAX_COLUMN_BYTES`]; where input decides the size, use
    /// [`try_extend_from`](Self::try_extend_from).
    pub fn extend_from(&mut self, other: &Column, range: std::ops::Range<usize>) {
        if let Err(e) = self.try_extend_from(other, range) {
            panic!("{e}");
        }
    }

    /// Append item range `range` of `other`, or refuse with [`BatchError::ColumnFull`] (the
    /// column unchanged) when it would pass [`MAX_COLUMN_BYTES`].
    pub fn try_extend_from(
        &mut self,
        other: &Column,
        range: std::ops::Range<usize>,
    ) -> Result<(), BatchError> {
        self.extend_within(other, range, MAX_COLUMN_BYTES, "value")
    }

    /// [`try_extend_from`](Self::try_extend_from) against `limit` bytes (lowered in tests).
    pub(super) fn extend_within(
        &mut self,
        other: &Column,
        range: std::ops::Range<usize>,
        limit: u64,
        what: &'static str,
    ) -> Result<(), BatchError> {
        if range.is_empty() {
            return Ok(());
        }
        let start = if range.start == 0 {
            0
        } else {
            other.ends[range.start - 1] as usize
        };
        let end = other.ends[range.end - 1] as usize;
        let base = self.data.len();
        // The new last end bounds every new end: check it once, then no shift can overflow.
        bounds::end_within(what, (base + (end - start)) as u64, limit)?;
        self.data.extend_from_slice(&other.data[start..end]);
        let shift = |e: u32| (e as usize - start + base) as u32;
        self.ends
            .extend(other.ends[range].iter().map(|&e| shift(e)));
        Ok(())
    }
}

impl Batch {
    /// Append records `range` of `other` to a batch bounded by construction. Panics past
    /// [`MAX_COLUMN_BYTES`] in a column; where input decides the size, use
    /// [`try_extend_from`](Self::try_extend_from). Keys are kept when both are keyed; a keyed
    /// batch taking unkeyed records gives them empty keys.
    pub fn extend_from(&mut self, other: &Batch, range: std::ops::Range<usize>) {
        if let Err(e) = self.try_extend_from(other, range) {
            panic!("{e}");
        }
    }

    /// Append records `range` of `other`, or refuse with [`BatchError::ColumnFull`] (the batch
    /// unchanged) when a column would pass [`MAX_COLUMN_BYTES`].
    pub fn try_extend_from(
        &mut self,
        other: &Batch,
        range: std::ops::Range<usize>,
    ) -> Result<(), BatchError> {
        self.extend_within(other, range, MAX_COLUMN_BYTES)
    }

    /// [`try_extend_from`](Self::try_extend_from) against `limit` bytes per column.
    fn extend_within(
        &mut self,
        other: &Batch,
        range: std::ops::Range<usize>,
        limit: u64,
    ) -> Result<(), BatchError> {
        // Check the value column first, so that a refusal changes nothing.
        let value_bytes = self.values.data.len() + other.values.span_bytes(range.clone());
        bounds::end_within("value", value_bytes as u64, limit)?;
        match (&mut self.keys, &other.keys) {
            (Some(mine), Some(theirs)) => {
                mine.extend_within(theirs, range.clone(), limit, "key")?
            }
            (Some(mine), None) => {
                for _ in range.clone() {
                    mine.push_within(b"", limit, "key")?;
                }
            }
            (None, _) => {}
        }
        self.values
            .extend_within(&other.values, range.clone(), limit, "value")?;
        self.event_times
            .extend_from_slice(&other.event_times[range]);
        Ok(())
    }

    /// All records of `parts`, in order; keyed if any part is. For parts bounded together by
    /// construction; panics past [`MAX_COLUMN_BYTES`] in a column. Where input decides the
    /// size, use [`try_concat`](Self::try_concat), or [`spread`](Self::spread) to repartition
    /// without gathering everything into one batch.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Batch> + Clone) -> Batch {
        Self::try_concat(parts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// All records of `parts`, in order (keyed if any part is), or [`BatchError::ColumnFull`]
    /// when together they pass [`MAX_COLUMN_BYTES`] in a column. Checks the sizes before
    /// copying anything.
    pub fn try_concat<'a>(
        parts: impl IntoIterator<Item = &'a Batch> + Clone,
    ) -> Result<Batch, BatchError> {
        Self::concat_within(parts, MAX_COLUMN_BYTES)
    }

    fn concat_within<'a>(
        parts: impl IntoIterator<Item = &'a Batch> + Clone,
        limit: u64,
    ) -> Result<Batch, BatchError> {
        let keyed = parts.clone().into_iter().any(Batch::is_keyed);
        let (n, bytes, key_bytes) =
            parts
                .clone()
                .into_iter()
                .fold((0, 0u64, 0u64), |(n, b, k), p| {
                    (
                        n + p.len(),
                        b + p.values.data.len() as u64,
                        k + p.keys.as_ref().map_or(0, |c| c.data.len() as u64),
                    )
                });
        bounds::end_within("value", bytes, limit)?;
        bounds::end_within("key", key_bytes, limit)?;
        let mut out = Batch {
            keys: keyed.then(Column::new),
            values: Column::with_capacity(n, bytes as usize),
            event_times: Vec::with_capacity(n),
        };
        for part in parts {
            out.extend_within(part, 0..part.len(), limit)?;
        }
        Ok(out)
    }

    /// The records of `parts`, in order, over `n` partitions of nearly equal record counts
    /// (what `concat(parts).split(n)` gives), without gathering them into one batch first: no
    /// partition passes the size of its share. Keyed if any part is.
    /// [`BatchError::ColumnFull`] only when one partition's share passes
    /// [`MAX_COLUMN_BYTES`]: more partitions are needed.
    pub fn spread(parts: &[Batch], n: usize) -> Result<Vec<Batch>, BatchError> {
        Self::spread_within(parts, n, MAX_COLUMN_BYTES)
    }

    fn spread_within(parts: &[Batch], n: usize, limit: u64) -> Result<Vec<Batch>, BatchError> {
        let n = n.max(1);
        let keyed = parts.iter().any(Batch::is_keyed);
        let total: usize = parts.iter().map(Batch::len).sum();
        let mut out: Vec<Batch> = (0..n).map(|_| Batch::empty(keyed)).collect();
        // Walk the parts once; output j takes global records [j*total/n, (j+1)*total/n).
        let (mut part, mut offset) = (0usize, 0usize);
        for (j, target) in out.iter_mut().enumerate() {
            let mut want = (j + 1) * total / n - j * total / n;
            while want > 0 {
                let Some(p) = parts.get(part) else { break };
                let take = want.min(p.len() - offset);
                target.extend_within(p, offset..offset + take, limit)?;
                want -= take;
                offset += take;
                if offset == p.len() {
                    part += 1;
                    offset = 0;
                }
            }
        }
        Ok(out)
    }

    /// Split into `n` partitions of nearly equal record counts, order kept.
    pub fn split(&self, n: usize) -> Vec<Batch> {
        let n = n.max(1);
        let len = self.len();
        (0..n)
            .map(|i| {
                let range = (i * len / n)..((i + 1) * len / n);
                let mut part = Batch::empty(self.is_keyed());
                part.extend_from(self, range);
                part
            })
            .collect()
    }

    /// The batch as bytes, for keeping it in the state store: `[keyed u8]` then per record
    /// `[key len u32][key][value len u32][value][event time i64]`, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.byte_len() + self.len() * 16);
        out.push(u8::from(self.is_keyed()));
        for r in self.records() {
            if let Some(key) = r.key {
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            out.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
            out.extend_from_slice(r.value);
            out.extend_from_slice(&r.event_time.to_le_bytes());
        }
        out
    }

    /// A batch back from [`to_bytes`](Self::to_bytes); `None` if the bytes are not one (or
    /// would not fit one: a column past [`MAX_COLUMN_BYTES`]).
    pub fn from_bytes(data: &[u8]) -> Option<Batch> {
        let (&keyed, mut rest) = data.split_first()?;
        let mut batch = Batch::empty(keyed == 1);
        let field = |rest: &mut &[u8]| -> Option<Vec<u8>> {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let item = tail.get(..len)?.to_vec();
            *rest = &tail[len..];
            Some(item)
        };
        while !rest.is_empty() {
            let key = if keyed == 1 {
                Some(field(&mut rest)?)
            } else {
                None
            };
            let value = field(&mut rest)?;
            let (time, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            batch
                .try_push(key.as_deref(), &value, i64::from_le_bytes(*time))
                .ok()?;
        }
        Some(batch)
    }

    /// Remove and return the first `n` records (all of them if fewer).
    pub fn take_front(&mut self, n: usize) -> Batch {
        if n >= self.len() {
            return std::mem::replace(self, Batch::empty(self.is_keyed()));
        }
        let mut front = Batch::empty(self.is_keyed());
        front.extend_from(self, 0..n);
        let mut rest = Batch::empty(self.is_keyed());
        rest.extend_from(self, n..self.len());
        *self = rest;
        front
    }

    /// Scatter the records into `n` batches by the hash of their key (unkeyed records by the
    /// hash of their value), so equal keys meet in one partition.
    pub fn scatter_by_key(&self, n: usize) -> Vec<Batch> {
        let n = n.max(1);
        let mut out: Vec<Batch> = (0..n).map(|_| Batch::empty(self.is_keyed())).collect();
        let column = self.keys.as_ref().unwrap_or(&self.values);
        for (i, key) in column.iter().enumerate() {
            let target = (key_hash(key) % n as u64) as usize;
            out[target].extend_from(self, i..i + 1);
        }
        out
    }
}

/// The shuffle's hash: the same key lands in the same partition in every batch and every run.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(key);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: &[(&str, &str)]) -> Batch {
        let mut b = Batch::empty(true);
        for (i, (k, v)) in items.iter().enumerate() {
            b.push(Some(k.as_bytes()), v.as_bytes(), i as i64);
        }
        b
    }

    fn values(b: &Batch) -> Vec<String> {
        b.values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn split_and_concat_round_trip() {
        let b = batch(&[("a", "1"), ("b", "22"), ("c", "333"), ("d", ""), ("e", "5")]);
        let parts = b.split(2);
        assert_eq!(values(&parts[0]), ["1", "22"]);
        assert_eq!(values(&parts[1]), ["333", "", "5"]);
        for p in &parts {
            p.validate().unwrap();
        }
        let whole = Batch::concat(&parts);
        whole.validate().unwrap();
        assert_eq!(
            (
                &whole.keys.as_ref().unwrap().data,
                &whole.values.data,
                &whole.values.ends,
                &whole.event_times
            ),
            (
                &b.keys.as_ref().unwrap().data,
                &b.values.data,
                &b.values.ends,
                &b.event_times
            )
        );
        assert_eq!(b.split(9).iter().map(Batch::len).sum::<usize>(), 5);
    }

    #[test]
    fn a_batch_goes_to_bytes_and_back() {
        let mut keyed = Batch::empty(true);
        keyed.push(Some(b"k"), b"v1", 5);
        keyed.push(Some(b""), b"", -1);
        let back = Batch::from_bytes(&keyed.to_bytes()).unwrap();
        assert_eq!(back.to_bytes(), keyed.to_bytes());
        assert_eq!(back.len(), 2);
        let mut plain = Batch::empty(false);
        plain.push(None, b"x", 9);
        assert_eq!(
            Batch::from_bytes(&plain.to_bytes()).unwrap().event_times,
            [9]
        );
        assert!(Batch::from_bytes(&keyed.to_bytes()[..5]).is_none());
    }

    #[test]
    fn builders_refuse_past_the_column_limit_and_change_nothing() {
        // The 4 GiB guard, against a lowered limit of 8 bytes per column.
        let mut column = Column::from_items(["abc", "de"]);
        let err = column.push_within(b"xyz9", 8, "value").unwrap_err();
        assert_eq!(
            err,
            BatchError::ColumnFull {
                what: "value",
                bytes: 9,
                limit: 8
            }
        );
        assert!(
            err.to_string().contains("raise the job's `partitions`"),
            "{err}"
        );
        assert_eq!(column, Column::from_items(["abc", "de"]));
        column.push_within(b"xyz", 8, "value").unwrap();
        assert_eq!(column.ends, [3, 5, 8]);

        let b = batch(&[("a", "1234"), ("bb", "5678")]);
        let mut into = batch(&[("k", "v")]);
        let before = into.clone();
        // values 1 + 8 = 9 > 8
        assert!(matches!(
            into.extend_within(&b, 0..2, 8),
            Err(BatchError::ColumnFull {
                what: "value",
                bytes: 9,
                ..
            })
        ));
        assert_eq!(into, before);
        // keys: 1 + 1 + 2 = 4 ≤ 4, values 1 + 8 = 9 > 4: refused on values first, unchanged
        assert!(into.extend_within(&b, 0..2, 4).is_err());
        assert_eq!(into, before);
        into.extend_within(&b, 0..1, 8).unwrap();
        assert_eq!(values(&into), ["v", "1234"]);
        // a keyed batch refusing an unkeyed record leaves its keys alone too
        let mut keyed = batch(&[("k", "1234567")]);
        let mut plain = Batch::empty(false);
        plain.push(None, b"xx", 0);
        assert!(keyed.extend_within(&plain, 0..1, 8).is_err());
        assert_eq!(keyed.keys.as_ref().unwrap().len(), 1);
        keyed.validate().unwrap();
        // push: the value is checked before the key is written
        let mut k = batch(&[("k", "1234567")]);
        assert!(k.push_within(Some(b"x"), b"xx", 0, 8).is_err());
        k.validate().unwrap();
        assert_eq!(k.len(), 1);

        // concat: sizes are checked before anything is copied
        let parts = [batch(&[("a", "12345")]), batch(&[("b", "6789")])];
        assert!(matches!(
            Batch::concat_within(&parts, 8),
            Err(BatchError::ColumnFull { bytes: 9, .. })
        ));
        assert_eq!(Batch::concat_within(&parts, 9).unwrap().len(), 2);
        // spread: only a partition's share must fit
        let spread = Batch::spread_within(&parts, 2, 5).unwrap();
        assert_eq!(values(&spread[0]), ["12345"]);
        assert!(Batch::spread_within(&parts, 1, 8).is_err());
        // from_bytes refuses what is not a batch rather than panicking
        assert!(Batch::from_bytes(&[1, 9, 0, 0, 0]).is_none());
    }

    #[test]
    fn spread_is_concat_then_split_without_the_concat() {
        let parts = [
            batch(&[("a", "1"), ("b", "22")]),
            Batch::empty(true),
            batch(&[("c", "333"), ("d", ""), ("e", "5")]),
            batch(&[("f", "6")]),
        ];
        for n in [1, 2, 3, 4, 7, 9] {
            let spread = Batch::spread(&parts, n).unwrap();
            let reference = Batch::concat(&parts).split(n);
            assert_eq!(spread, reference, "n = {n}");
        }
        let mixed = [Batch::empty(false), batch(&[("a", "1")])];
        assert!(
            Batch::spread(&mixed, 2)
                .unwrap()
                .iter()
                .all(Batch::is_keyed)
        );
        assert!(Batch::spread(&[], 3).unwrap().iter().all(Batch::is_empty));
    }

    #[test]
    fn take_front_leaves_the_rest() {
        let mut b = batch(&[("a", "1"), ("b", "22"), ("c", "333")]);
        let front = b.take_front(2);
        assert_eq!(values(&front), ["1", "22"]);
        assert_eq!(values(&b), ["333"]);
        assert_eq!(b.event_times, [2]);
        b.validate().unwrap();
    }

    #[test]
    fn scatter_puts_equal_keys_together() {
        let b = batch(&[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("a", "5")]);
        let parts = b.scatter_by_key(3);
        let with_a: Vec<_> = parts
            .iter()
            .filter(|p| p.keys.as_ref().unwrap().iter().any(|k| k == b"a"))
            .collect();
        assert_eq!(with_a.len(), 1);
        assert_eq!(
            values(with_a[0])
                .iter()
                .filter(|v| ["1", "3", "5"].contains(&v.as_str()))
                .count(),
            3
        );
        assert_eq!(parts.iter().map(Batch::len).sum::<usize>(), 5);
    }
}
