//! What a receiver (socket, HTTP) has taken in and not yet handed to a batch, and, when the job
//! checkpoints, its write-ahead log: a block goes to the log first, then into the buffer, under
//! one lock, so the log range a batch takes holds exactly the batch's records.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::{SourceInput, push_lines};
use crate::batch::Batch;
use crate::wal::{Wal, WalError};

/// The most bytes of records a receiver holds for the next batch: a block that would take it
/// past this is refused whole before it is logged (HTTP answers 503, a socket receiver stops
/// reading until a batch takes the buffer), so a buffer never nears a batch column's 4 GiB.
pub const MAX_BUFFERED_BYTES: u64 = 1 << 30;

/// Buffered bytes past which a receiver asks for an early seal, so a burst goes into batches
/// as it comes instead of piling up to [`MAX_BUFFERED_BYTES`].
pub const EARLY_SEAL_BYTES: u64 = 256 << 20;

/// With a rate budget (`max_rate`, backpressure), the high-water mark of a receiver's buffer,
/// in batches' budgets: while it holds this many batches' worth of records a receiver pushes
/// back (HTTP answers `429` with `Retry-After`, a socket receiver stops reading), so a burst
/// waits at the client instead of piling up to [`MAX_BUFFERED_BYTES`].
pub const HIGH_WATER_BATCHES: usize = 4;

/// Why [`Received::push`] took nothing.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The write-ahead log refused the block.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The buffer holds as much as it may until the next batch takes it.
    #[error(
        "the receiver holds {buffered} bytes not yet in a batch, and {incoming} more would pass its limit of {limit}: send them again after the next batch"
    )]
    Full {
        /// Bytes held.
        buffered: u64,
        /// Bytes of the block refused.
        incoming: u64,
        /// [`MAX_BUFFERED_BYTES`].
        limit: u64,
    },
}

/// What [`Received::push`] took.
#[derive(Debug)]
pub struct Pushed {
    /// Bytes of the data used (complete lines).
    pub used: usize,
    /// Records added.
    pub added: usize,
    /// Records now waiting for a batch.
    pub buffered: usize,
    /// Bytes of those records.
    pub buffered_bytes: u64,
    /// 0-based indexes of lines that were not UTF-8 (skipped and counted).
    pub invalid: Vec<u64>,
}

/// A receiver's buffer, shared by its task and the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Received {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    records: Option<Batch>,
    invalid_lines: u64,
    wal: Option<Arc<Mutex<Wal>>>,
    /// Logged blocks not yet in a batch: where each ends in the log, and its record count.
    blocks: VecDeque<(u64, usize)>,
    /// The log offset up to which blocks are in sealed batches.
    sealed: u64,
    /// The owner accepted losing what a damaged log no longer holds (`--accept-wal-loss`).
    accept_loss: bool,
    /// Bytes held at most, when not [`MAX_BUFFERED_BYTES`] (tests lower it).
    limit: Option<u64>,
    /// The most records the next batch takes (the source's rate × the batch interval).
    budget: Option<usize>,
}

impl Received {
    /// A buffer whose blocks go to `wal` first; the log's records after `sealed` (received
    /// before a crash, in no batch yet) are buffered again.
    /// With `accept_loss`, batches re-run after damage get what the log still holds.
    pub fn logged(
        wal: Arc<Mutex<Wal>>,
        sealed: Option<u64>,
        accept_loss: bool,
    ) -> Result<(Self, usize), WalError> {
        let (start, pending) = {
            let log = wal.lock().unwrap_or_else(PoisonError::into_inner);
            let start = sealed.unwrap_or(log.start()).clamp(log.start(), log.end());
            (start, log.read(start, log.end())?)
        };
        let mut inner = Inner {
            wal: Some(wal),
            sealed: start,
            accept_loss,
            ..Inner::default()
        };
        let mut records = Batch::empty(false);
        for (payload, block_end) in &pending {
            let before = records.len();
            let invalid = decode(payload, &mut records);
            inner.invalid_lines += invalid;
            inner.blocks.push_back((*block_end, records.len() - before));
        }
        let n = records.len();
        if n > 0 {
            inner.records = Some(records);
        }
        Ok((
            Self {
                inner: Arc::new(Mutex::new(inner)),
            },
            n,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take in `data`: the complete lines in it (all of it when `last`), logged first when the
    /// receiver has a log.
    pub fn push(&self, data: &[u8], last: bool, arrival: i64) -> Result<Pushed, PushError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let buffered = inner
            .records
            .as_ref()
            .map_or(0, |r| r.values.data.len() as u64);
        let limit = inner.limit.unwrap_or(MAX_BUFFERED_BYTES);
        if buffered.saturating_add(data.len() as u64) > limit {
            return Err(PushError::Full {
                buffered,
                incoming: data.len() as u64,
                limit,
            });
        }
        let mut invalid = Vec::new();
        let Some(wal) = &inner.wal else {
            let records = inner.records.get_or_insert_with(|| Batch::empty(false));
            let before = records.len();
            let used = push_lines(data, last, records, arrival, &mut invalid);
            inner.invalid_lines += invalid.len() as u64;
            return Ok(Pushed {
                used,
                added: records.len() - before,
                buffered: records.len(),
                buffered_bytes: records.values.data.len() as u64,
                invalid,
            });
        };
        // Logged: the block goes to the log first; only what the log holds is buffered.
        let mut fresh = Batch::empty(false);
        let used = push_lines(data, last, &mut fresh, arrival, &mut invalid);
        if used > 0 {
            let mut payload = Vec::with_capacity(used + 8);
            payload.extend_from_slice(&arrival.to_le_bytes());
            payload.extend_from_slice(&data[..used]);
            let end = wal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&payload)?;
            inner.blocks.push_back((end, fresh.len()));
        }
        let records = inner.records.get_or_insert_with(|| Batch::empty(false));
        records.extend_from(&fresh, 0..fresh.len());
        inner.invalid_lines += invalid.len() as u64;
        Ok(Pushed {
            used,
            added: fresh.len(),
            buffered: records.len(),
            buffered_bytes: records.values.data.len() as u64,
            invalid,
        })
    }

    /// Bytes of records waiting for a batch.
    pub fn buffered_bytes(&self) -> u64 {
        self.lock()
            .records
            .as_ref()
            .map_or(0, |r| r.values.data.len() as u64)
    }

    /// Set the most records a batch takes from now on (see [`rate`](super::rate)); `None`:
    /// no limit. The high-water mark is [`HIGH_WATER_BATCHES`] budgets.
    pub fn set_budget(&self, records: Option<usize>) {
        self.lock().budget = records;
    }

    /// `(records held, high-water mark)` when the buffer holds at least its high-water mark
    /// of records: the receiver should push back rather than take more in.
    pub fn over_high_water(&self) -> Option<(usize, usize)> {
        let inner = self.lock();
        let mark = inner.budget?.saturating_mul(HIGH_WATER_BATCHES);
        let held = inner.records.as_ref().map_or(0, Batch::len);
        (held >= mark).then_some((held, mark))
    }

    /// Whether a receiver that has just pushed should ask for an early seal.
    pub fn wants_seal(pushed: &Pushed, max_batch_records: Option<usize>) -> bool {
        max_batch_records.is_some_and(|max| pushed.buffered >= max)
            || pushed.buffered_bytes >= EARLY_SEAL_BYTES
    }

    /// Whether blocks go to a write-ahead log first: [`push`](Self::push) may then wait for a
    /// disk write and its fsync, so async receivers call it on the blocking pool.
    pub fn is_logged(&self) -> bool {
        self.lock().wal.is_some()
    }

    /// Count `lines` the receiver skipped without taking them in (over a line cap): they are
    /// reported with the lines that are not UTF-8.
    pub fn skipped(&self, lines: u64) {
        self.lock().invalid_lines += lines;
    }

    /// Where the receiver stands; `ended` when its input will not come back.
    pub fn status(&self, ended: bool) -> super::SourceStatus {
        let buffered = self.buffered();
        super::SourceStatus {
            buffered,
            backlog: false,
            exhausted: ended && buffered == 0,
        }
    }

    /// How many records wait for a batch.
    pub fn buffered(&self) -> usize {
        self.lock().records.as_ref().map_or(0, Batch::len)
    }

    /// The next batch's input: at most `max` records when set, and at most the budget
    /// (whole logged blocks, at least one: a block larger than the limit is taken alone), with
    /// the log range they came from.
    pub fn take(&self, max: Option<usize>) -> SourceInput {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let max = match (max, inner.budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let available = inner.records.as_ref().map_or(0, Batch::len);
        let mut count = available;
        let mut wal = None;
        if let Some(log) = &inner.wal {
            // A batch takes whole blocks, so its log range holds exactly its records.
            let limit = max.unwrap_or(usize::MAX);
            let (mut n, mut to) = (0usize, inner.sealed);
            while let Some(&(end, records)) = inner.blocks.front() {
                if n > 0 && n + records > limit {
                    break;
                }
                n += records;
                to = end;
                inner.blocks.pop_front();
            }
            count = n;
            if let Err(e) = log.lock().unwrap_or_else(PoisonError::into_inner).flush() {
                tracing::error!("{e}");
            }
            wal = Some((inner.sealed, to));
            inner.sealed = to;
        } else if let Some(max) = max {
            count = count.min(max);
        }
        let records = match &mut inner.records {
            Some(all) if count < all.len() => all.take_front(count),
            Some(_) => inner.records.take().unwrap_or_else(|| Batch::empty(false)),
            None => Batch::empty(false),
        };
        SourceInput::Records {
            records,
            invalid_lines: std::mem::take(&mut inner.invalid_lines),
            wal,
        }
    }

    /// The records of log range `from..to`, read again for a batch being re-run.
    pub fn replay(&self, from: u64, to: u64) -> Result<SourceInput, WalError> {
        let inner = self.lock();
        let mut records = Batch::empty(false);
        let mut invalid_lines = 0;
        if let Some(wal) = &inner.wal {
            let log = wal.lock().unwrap_or_else(PoisonError::into_inner);
            let (from, to) = if inner.accept_loss && to > log.end() {
                tracing::error!(wal = %log.dir().display(), "--accept-wal-loss: a batch run again needs log offsets {from}..{to}, the log now ends at {}: the records past it are lost", log.end());
                (from.min(log.end()), log.end())
            } else {
                (from, to)
            };
            for (payload, _) in log.read(from, to)? {
                invalid_lines += decode(&payload, &mut records);
            }
        }
        Ok(SourceInput::Records {
            records,
            invalid_lines,
            wal: Some((from, to)),
        })
    }
}

/// A logged block back into records: `[arrival ms i64 LE][lines]`. Returns lines skipped.
fn decode(payload: &[u8], records: &mut Batch) -> u64 {
    let Some((time, lines)) = payload.split_first_chunk::<8>() else {
        return 0;
    };
    let mut invalid = Vec::new();
    push_lines(
        lines,
        true,
        records,
        i64::from_le_bytes(*time),
        &mut invalid,
    );
    invalid.len() as u64
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_full_buffer_refuses_a_block_whole_and_takes_it_after_a_batch() {
        let buffer = Received::default();
        buffer.lock().limit = Some(10);
        let pushed = buffer.push(b"abc\ndef\n", true, 1).expect("fits");
        assert_eq!((pushed.added, pushed.buffered_bytes), (2, 6));
        let err = buffer
            .push(b"ghi\njkl\n", true, 2)
            .expect_err("over the limit");
        assert!(
            matches!(
                err,
                PushError::Full {
                    buffered: 6,
                    incoming: 8,
                    limit: 10
                }
            ),
            "{err}"
        );
        assert_eq!(
            buffer.buffered_bytes(),
            6,
            "nothing of the refused block taken"
        );
        let SourceInput::Records { records, .. } = buffer.take(None) else {
            panic!("records")
        };
        assert_eq!(records.len(), 2);
        let pushed = buffer.push(b"ghi\njkl\n", true, 2).expect("room again");
        assert_eq!(pushed.added, 2);
        assert!(Received::wants_seal(&pushed, Some(2)));
        assert!(!Received::wants_seal(&pushed, None));
    }

    use super::*;
    use crate::wal::WalSync;

    #[test]
    fn a_budget_caps_each_take_and_sets_the_high_water_mark() {
        let buffer = Received::default();
        for i in 0..10 {
            buffer.push(format!("{i}\n").as_bytes(), false, 1).unwrap();
        }
        assert_eq!(buffer.over_high_water(), None, "no budget, no mark");
        buffer.set_budget(Some(2));
        assert_eq!(buffer.over_high_water(), Some((10, 8)));
        let (v, _) = values(&buffer.take(None));
        assert_eq!(v, ["0", "1"]);
        let (v, _) = values(&buffer.take(Some(1)));
        assert_eq!(v, ["2"], "the smaller of max and the budget");
        assert_eq!(buffer.over_high_water(), None, "7 held, under 8");
        buffer.set_budget(None);
        assert_eq!(values(&buffer.take(None)).0.len(), 7);
    }

    fn values(input: &SourceInput) -> (Vec<String>, Option<(u64, u64)>) {
        match input {
            SourceInput::Records { records, wal, .. } => (
                records
                    .values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect(),
                *wal,
            ),
            SourceInput::Files(_) | SourceInput::Fetched { .. } => panic!("not records"),
        }
    }

    #[test]
    fn batches_take_whole_logged_blocks_and_unsealed_ones_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Mutex::new(
            Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap(),
        ));
        let (received, n) = Received::logged(wal.clone(), None, false).unwrap();
        assert_eq!(n, 0);
        received.push(b"a\nb\n", false, 1).unwrap();
        received.push(b"c\n", false, 2).unwrap();
        received.push(b"d\ne\n", false, 3).unwrap();
        let first = received.take(Some(3));
        let (v, range) = values(&first);
        assert_eq!(v, ["a", "b", "c"], "two whole blocks fit in 3");
        let (from, to) = range.unwrap();
        assert_eq!(from, 0);
        assert_eq!(
            values(&received.replay(from, to).unwrap()).0,
            ["a", "b", "c"]
        );
        drop(received);
        // After a crash: what is past the sealed range is buffered again, with its times.
        let (again, n) = Received::logged(wal, Some(to), false).unwrap();
        assert_eq!(n, 2);
        let (v, range) = values(&again.take(None));
        assert_eq!(v, ["d", "e"]);
        assert_eq!(range.unwrap().0, to);
    }
}
