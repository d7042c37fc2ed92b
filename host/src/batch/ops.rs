//! Moving records between batches: concatenating partitions, splitting a batch into even
//! partitions, and scattering records by key hash for the in-process shuffle.

use std::hash::Hasher;

use super::{Batch, Column};

impl Column {
    /// Append item range `range` of `other`.
    pub fn extend_from(&mut self, other: &Column, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        let start = if range.start == 0 {
            0
        } else {
            other.ends[range.start - 1] as usize
        };
        let end = other.ends[range.end - 1] as usize;
        let base = self.data.len();
        self.data.extend_from_slice(&other.data[start..end]);
        let shift = |e: u32| (e as usize - start + base) as u32;
        self.ends
            .extend(other.ends[range].iter().map(|&e| shift(e)));
    }
}

impl Batch {
    /// Append records `range` of `other`. Keys are kept when both are keyed; a keyed batch
    /// taking unkeyed records gives them empty keys.
    pub fn extend_from(&mut self, other: &Batch, range: std::ops::Range<usize>) {
        match (&mut self.keys, &other.keys) {
            (Some(mine), Some(theirs)) => mine.extend_from(theirs, range.clone()),
            (Some(mine), None) => {
                for _ in range.clone() {
                    mine.push(b"");
                }
            }
            (None, _) => {}
        }
        self.values.extend_from(&other.values, range.clone());
        self.event_times
            .extend_from_slice(&other.event_times[range]);
    }

    /// All records of `parts`, in order; keyed if any part is.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Batch> + Clone) -> Batch {
        let keyed = parts.clone().into_iter().any(Batch::is_keyed);
        let (n, bytes) = parts
            .clone()
            .into_iter()
            .fold((0, 0), |(n, b), p| (n + p.len(), b + p.values.data.len()));
        let mut out = Batch {
            keys: keyed.then(Column::new),
            values: Column::with_capacity(n, bytes),
            event_times: Vec::with_capacity(n),
        };
        for part in parts {
            out.extend_from(part, 0..part.len());
        }
        out
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

    /// A batch back from [`to_bytes`](Self::to_bytes); `None` if the bytes are not one.
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
            batch.push(key.as_deref(), &value, i64::from_le_bytes(*time));
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
