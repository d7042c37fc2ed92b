//! Finding the records a failing call fails on (`on_error = "dead_letter"`): the call is run
//! on the whole partition first (no cost when it passes); when it fails, the range is narrowed
//! — to the record the guest blamed (`record-index`) when it names one, else by halving — until
//! every failing record is alone in a call of its own, while every passing range's output is
//! kept in input order. Finding k failing records among n takes O(k log n) calls.
//!
//! The search is generic over the call, so it is tested here with a fake one.

use std::ops::Range;

use crate::udf::{CallError, CallErrorKind};

/// What the search needs to know about a call's error.
pub trait Blame {
    /// The record (0-based, in the range the call was given) the error names, if any.
    fn record_index(&self) -> Option<usize>;
    /// Whether a record can have caused it (a trap, a guest error, a limit); else (an instance
    /// that cannot be created, …) no narrowing helps and the error is returned as is.
    fn isolatable(&self) -> bool;
}

/// One record that failed alone.
#[derive(Debug)]
pub struct Failed<E> {
    /// Its position in the partition.
    pub position: usize,
    /// Its call's error.
    pub error: E,
}

/// The outcome of a search.
#[derive(Debug)]
pub struct Isolated<O, E> {
    /// The outputs of the passing ranges, in input order.
    pub outputs: Vec<O>,
    /// The failing records, in input order.
    pub failed: Vec<Failed<E>>,
    /// Calls made, the first included.
    pub calls: usize,
}

/// Why the search gave up.
#[derive(Debug)]
pub enum IsolateError<E> {
    /// An error no record caused.
    NotIsolatable(E),
    /// More than the cap failed: the call fails on everything, not on a few poison records.
    TooMany {
        /// The cap.
        max: usize,
        /// The first failure.
        first: E,
    },
}

/// Run `call` over `0..len`, narrowing failing ranges down to single records; at most
/// `max_failed` records may fail.
pub fn isolate<O, E: Blame>(
    len: usize,
    max_failed: usize,
    mut call: impl FnMut(Range<usize>) -> Result<O, E>,
) -> Result<Isolated<O, E>, IsolateError<E>> {
    let mut out = Isolated {
        outputs: Vec::new(),
        failed: Vec::new(),
        calls: 0,
    };
    // Ranges still to run, the next one last: popping keeps input order.
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(64);
    todo.push(0..len);
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        out.calls += 1;
        let error = match call(range.clone()) {
            Ok(o) => {
                out.outputs.push(o);
                continue;
            }
            Err(e) => e,
        };
        if !error.isolatable() {
            return Err(IsolateError::NotIsolatable(error));
        }
        let blamed = error
            .record_index()
            .filter(|&i| i < range.len())
            .map(|i| range.start + i);
        if range.len() == 1 || blamed.is_some() {
            let position = blamed.unwrap_or(range.start);
            if out.failed.len() >= max_failed {
                let first = out.failed.into_iter().next().map_or(error, |f| f.error);
                return Err(IsolateError::TooMany {
                    max: max_failed,
                    first,
                });
            }
            // The records before the blamed one run again (they may fail too), then the rest.
            todo.push(position + 1..range.end);
            out.failed.push(Failed { position, error });
            todo.push(range.start..position);
            // Keep `failed` in input order: the ranges before it are searched after it is
            // pushed, so sort at the end.
            continue;
        }
        let mid = range.start + range.len() / 2;
        todo.push(mid..range.end);
        todo.push(range.start..mid);
    }
    out.failed.sort_by_key(|f| f.position);
    Ok(out)
}

impl Blame for CallError {
    fn record_index(&self) -> Option<usize> {
        match self.kind {
            CallErrorKind::Guest {
                record_index: Some(i),
                ..
            } => Some(i as usize),
            _ => None,
        }
    }

    fn isolatable(&self) -> bool {
        !matches!(
            self.kind,
            CallErrorKind::Instantiate(_)
                | CallErrorKind::KeyTooLarge { .. }
                | CallErrorKind::JoinedTooLarge { .. }
        )
    }
}

/// A short name for a call error's kind, as dead letters keep it.
pub fn kind_name(kind: &CallErrorKind) -> &'static str {
    match kind {
        CallErrorKind::Timeout(_) => "timeout",
        CallErrorKind::MemoryLimit { .. } => "memory_limit",
        CallErrorKind::TableLimit { .. } => "table_limit",
        CallErrorKind::StackOverflow(_) => "stack_overflow",
        CallErrorKind::Panic { .. } => "trap",
        CallErrorKind::Trap(_) => "trap",
        CallErrorKind::Malformed(_) => "malformed",
        CallErrorKind::Unreadable { .. } => "unreadable",
        CallErrorKind::BadRecordIndex { .. } => "bad_record_index",
        CallErrorKind::OutputTooLarge { .. } => "output_too_large",
        CallErrorKind::Guest { .. } => "guest",
        CallErrorKind::Instantiate(_) => "instantiate",
        CallErrorKind::KeyTooLarge { .. } => "key_too_large",
        CallErrorKind::JoinedTooLarge { .. } => "joined_too_large",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake error: which record, whether the call names it.
    #[derive(Debug, PartialEq)]
    struct Fake {
        index: Option<usize>,
        isolatable: bool,
    }

    impl Blame for Fake {
        fn record_index(&self) -> Option<usize> {
            self.index
        }
        fn isolatable(&self) -> bool {
            self.isolatable
        }
    }

    /// A call over records `0..n` that fails on `poison` (naming the first such record when
    /// `names` is set), and outputs the range's records.
    fn run(n: usize, poison: &[usize], names: bool) -> Isolated<Vec<usize>, Fake> {
        isolate(n, 1000, |r: Range<usize>| {
            match r.clone().find(|i| poison.contains(i)) {
                Some(i) => Err(Fake {
                    index: names.then(|| i - r.start),
                    isolatable: true,
                }),
                None => Ok(r.collect()),
            }
        })
        .expect("isolatable")
    }

    fn check(n: usize, poison: &[usize], names: bool) -> usize {
        let got = run(n, poison, names);
        let positions: Vec<usize> = got.failed.iter().map(|f| f.position).collect();
        assert_eq!(positions, poison, "n {n}");
        let kept: Vec<usize> = got.outputs.into_iter().flatten().collect();
        let expected: Vec<usize> = (0..n).filter(|i| !poison.contains(i)).collect();
        assert_eq!(kept, expected, "every other record, in order");
        got.calls
    }

    #[test]
    fn halving_finds_one_two_adjacent_and_all() {
        assert_eq!(check(1000, &[], false), 1);
        check(1000, &[0], false);
        check(1000, &[999], false);
        check(1000, &[437], false);
        check(1000, &[10, 900], false);
        check(1000, &[500, 501], false);
        check(1000, &[0, 1, 2], false);
        check(7, &[0, 1, 2, 3, 4, 5, 6], false);
        check(1, &[0], false);
        assert_eq!(check(0, &[], false), 0);
    }

    #[test]
    fn record_index_goes_straight_to_the_record() {
        // One call fails naming 437, then 0..437 and 438..1000 pass.
        assert_eq!(check(1000, &[437], true), 3);
        check(1000, &[500, 501], true);
        check(1000, &[0, 999], true);
        check(5, &[0, 1, 2, 3, 4], true);
    }

    #[test]
    fn calls_are_bounded_by_k_log_n() {
        let n = 100_000;
        for k in [1usize, 3, 10] {
            let poison: Vec<usize> = (0..k).map(|i| i * 9_973 + 17).collect();
            let calls = check(n, &poison, false);
            let bound = 1 + 2 * k * (n.ilog2() as usize + 1);
            assert!(calls <= bound, "{k} poison: {calls} calls, bound {bound}");
        }
    }

    #[test]
    fn an_error_no_record_caused_is_returned() {
        let r = isolate(10, 1000, |_| -> Result<(), Fake> {
            Err(Fake {
                index: None,
                isolatable: false,
            })
        });
        assert!(matches!(r, Err(IsolateError::NotIsolatable(_))));
    }

    #[test]
    fn past_the_cap_the_search_gives_up() {
        let r = isolate(100, 5, |_| -> Result<(), Fake> {
            Err(Fake {
                index: None,
                isolatable: true,
            })
        });
        assert!(matches!(r, Err(IsolateError::TooMany { max: 5, .. })));
    }
}
