//! The write-ahead log of a receiver source: what a socket or HTTP receiver took in, on disk
//! before anyone is told it is safe, replayed after a crash and deleted once a data checkpoint
//! covers it.
//!
//! A log is a folder of segment files named by the logical offset of their first byte
//! (`00000000000000000000.wal`, …), so a missing or shortened segment shows as a gap. Each
//! record is `[length u32 LE][crc32 u32 LE][payload]`: one received block of complete lines.
//! Offsets are logical byte positions over all segments; a batch remembers the range it took.
//!
//! Opening a log checks every record. A record cut short at the very end of the last segment
//! is a write the crash interrupted (it was never acknowledged): it is cut off with a warning.
//! Any other damage (a checksum that does not match, a segment shorter than the next one
//! says, a segment missing) stops the job with the file and offset, unless the owner accepts
//! the loss (`--accept-wal-loss`): then everything before the damage is kept and the rest is
//! moved aside into `lost/`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of a record's header: length and checksum.
const HEADER: u64 = 8;
/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The largest record accepted (a received block).
pub const MAX_RECORD: usize = 256 << 20;

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalSync {
    /// `fsync` after every block, before it is acknowledged (default): nothing acknowledged is
    /// lost even if the machine loses power.
    #[default]
    EveryBlock,
    /// `fsync` at most this often (and when a batch is sealed): faster; a process crash
    /// (`kill -9`) still loses nothing, a power loss may lose the last interval.
    Interval(Duration),
}

/// What is wrong with a log, with where.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file could not be read or written.
    #[error("write-ahead log {path}: {what}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A record does not read back as written.
    #[error(
        "write-ahead log damaged: {file} at byte {offset} (log offset {log_offset}): {what}. Records before it are intact; records after it cannot be read. Restore the file, or run with --accept-wal-loss to keep what is before the damage and move the rest to {lost}"
    )]
    Damaged {
        /// The segment.
        file: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// Logical offset in the log.
        log_offset: u64,
        /// What was found.
        what: String,
        /// Where `--accept-wal-loss` moves the unreadable rest.
        lost: PathBuf,
    },
    /// A batch needs records the log no longer has.
    #[error(
        "write-ahead log {dir}: log offsets {from}..{to} are needed but {what}; were segments deleted by hand?"
    )]
    Missing {
        /// The log's folder.
        dir: PathBuf,
        /// First offset needed.
        from: u64,
        /// End of the range needed.
        to: u64,
        /// What is there instead.
        what: String,
    },
}

/// A segment: its file and the logical offsets it holds.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    len: u64,
    path: PathBuf,
}

/// One source's write-ahead log, open for appending.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    sync: WalSync,
    segments: Vec<Segment>,
    file: File,
    last_sync: Instant,
    unsynced: bool,
    segment_bytes: u64,
}

impl Wal {
    /// Open (or create) the log in `dir`, checking every record. With `accept_loss`, damage
    /// keeps what is before it and moves the rest into `dir/lost/`; without, it is an error.
    pub fn open(dir: &Path, sync: WalSync, accept_loss: bool) -> Result<Wal, WalError> {
        Self::open_with(dir, sync, accept_loss, SEGMENT_BYTES)
    }

    pub(crate) fn open_with(
        dir: &Path,
        sync: WalSync,
        accept_loss: bool,
        segment_bytes: u64,
    ) -> Result<Wal, WalError> {
        let io = |path: &Path, what| {
            let path = path.to_path_buf();
            move |source| WalError::Io { path, what, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir, "create the folder"))?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            let path = segment_path(dir, 0);
            File::create(&path).map_err(io(&path, "create a segment"))?;
            segments.push(Segment {
                start: 0,
                len: 0,
                path,
            });
        }
        match check(&segments) {
            Ok(()) => {}
            Err(damage) if accept_loss => {
                cut(dir, &mut segments, &damage)?;
                tracing::warn!(wal = %dir.display(), "--accept-wal-loss: {}; kept the {} bytes before it, moved the rest to {}", damage.what, damage.log_offset, dir.join("lost").display());
            }
            Err(damage) if damage.torn_tail => {
                cut(dir, &mut segments, &damage)?;
                tracing::warn!(wal = %dir.display(), "{}: an incomplete last record at byte {} of {} (a write cut short by a crash, never acknowledged) was cut off", damage.what, damage.offset, damage.file.display());
            }
            Err(damage) => {
                return Err(WalError::Damaged {
                    file: damage.file,
                    offset: damage.offset,
                    log_offset: damage.log_offset,
                    what: damage.what,
                    lost: dir.join("lost"),
                });
            }
        }
        let last = segments.last().cloned().unwrap_or(Segment {
            start: 0,
            len: 0,
            path: segment_path(dir, 0),
        });
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&last.path)
            .map_err(io(&last.path, "open for appending"))?;
        file.seek(SeekFrom::End(0))
            .map_err(io(&last.path, "seek"))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            sync,
            segments,
            file,
            last_sync: Instant::now(),
            unsynced: false,
            segment_bytes,
        })
    }

    /// The folder of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The logical offset the next record gets: the end of the log.
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.start + s.len)
    }

    /// The first offset still in the log.
    pub fn start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.start)
    }

    /// Append one block; when this returns, the block is in the log (and on disk, with
    /// [`WalSync::EveryBlock`]). Returns the log's new end.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() > MAX_RECORD {
            return Err(WalError::Io {
                path: self.dir.clone(),
                what: "append",
                source: std::io::Error::other(format!(
                    "a block of {} bytes is over the limit of {MAX_RECORD}",
                    payload.len()
                )),
            });
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.len >= self.segment_bytes)
        {
            self.roll()?;
        }
        let mut record = Vec::with_capacity(payload.len() + HEADER as usize);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        record.extend_from_slice(payload);
        let last = self.segments.last_mut().ok_or_else(|| WalError::Io {
            path: self.dir.clone(),
            what: "append",
            source: std::io::Error::other("no open segment"),
        })?;
        self.file
            .write_all(&record)
            .map_err(|source| WalError::Io {
                path: last.path.clone(),
                what: "append",
                source,
            })?;
        last.len += record.len() as u64;
        self.unsynced = true;
        match self.sync {
            WalSync::EveryBlock => self.flush()?,
            WalSync::Interval(every) if self.last_sync.elapsed() >= every => self.flush()?,
            WalSync::Interval(_) => {}
        }
        Ok(self.end())
    }

    /// Force what was appended to disk.
    pub fn flush(&mut self) -> Result<(), WalError> {
        if self.unsynced {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            self.file.sync_data().map_err(|source| WalError::Io {
                path,
                what: "fsync",
                source,
            })?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.flush()?;
        let start = self.end();
        let path = segment_path(&self.dir, start);
        self.file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| WalError::Io {
                path: path.clone(),
                what: "create a segment",
                source,
            })?;
        self.segments.push(Segment {
            start,
            len: 0,
            path,
        });
        sync_dir(&self.dir)
    }

    /// The payloads of the records in `from..to` (offsets at record boundaries), in order, each
    /// with the offset where it ends.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(Vec<u8>, u64)>, WalError> {
        let missing = |what: String| WalError::Missing {
            dir: self.dir.clone(),
            from,
            to,
            what,
        };
        if from >= to {
            return Ok(Vec::new());
        }
        if from < self.start() || to > self.end() {
            return Err(missing(format!(
                "the log holds {}..{}",
                self.start(),
                self.end()
            )));
        }
        let mut out = Vec::new();
        for segment in &self.segments {
            let end = segment.start + segment.len;
            if end <= from || segment.start >= to {
                continue;
            }
            let data = std::fs::read(&segment.path).map_err(|source| WalError::Io {
                path: segment.path.clone(),
                what: "read",
                source,
            })?;
            let mut at = from.saturating_sub(segment.start) as usize;
            while (segment.start + at as u64) < to.min(end) {
                match parse(&data, at) {
                    Ok((payload, next)) => {
                        out.push((payload.to_vec(), segment.start + next as u64));
                        at = next;
                    }
                    Err(what) => {
                        return Err(WalError::Damaged {
                            file: segment.path.clone(),
                            offset: at as u64,
                            log_offset: segment.start + at as u64,
                            what,
                            lost: self.dir.join("lost"),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Delete the segments that end at or before `offset` (a data checkpoint covers them);
    /// the segment being written is kept.
    pub fn delete_before(&mut self, offset: u64) -> Result<usize, WalError> {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[0].start + self.segments[0].len <= offset {
            let segment = self.segments.remove(0);
            std::fs::remove_file(&segment.path).map_err(|source| WalError::Io {
                path: segment.path.clone(),
                what: "delete a covered segment",
                source,
            })?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WalError::Io {
            path: dir.to_path_buf(),
            what: "fsync the folder",
            source,
        })
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|source| WalError::Io {
        path: dir.to_path_buf(),
        what: "list",
        source,
    })?;
    let mut segments = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(start) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        segments.push(Segment {
            start,
            len,
            path: entry.path(),
        });
    }
    segments.sort_by_key(|s| s.start);
    Ok(segments)
}

/// One record at `at`: its payload and where the next starts, or what is wrong.
fn parse(data: &[u8], at: usize) -> Result<(&[u8], usize), String> {
    let header = data
        .get(at..at + HEADER as usize)
        .ok_or_else(|| format!("{} bytes of a record header", data.len() - at))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let start = at + HEADER as usize;
    let payload = data.get(start..start + len).ok_or_else(|| {
        format!(
            "a record of {len} bytes but only {} left in the file",
            data.len() - start
        )
    })?;
    if crc32fast::hash(payload) != crc {
        return Err(format!("checksum mismatch in a record of {len} bytes"));
    }
    Ok((payload, start + len))
}

/// Where a log stops reading as written.
struct Damage {
    /// The segment index.
    segment: usize,
    file: PathBuf,
    offset: u64,
    log_offset: u64,
    what: String,
    /// Only the last record of the last segment is incomplete: an interrupted write.
    torn_tail: bool,
}

/// Check every segment and record.
fn check(segments: &[Segment]) -> Result<(), Damage> {
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let damage = |offset: u64, what: String, torn_tail: bool| Damage {
            segment: i,
            file: segment.path.clone(),
            offset,
            log_offset: segment.start + offset,
            what,
            torn_tail,
        };
        let data = std::fs::read(&segment.path)
            .map_err(|e| damage(0, format!("cannot be read: {e}"), false))?;
        let mut at = 0usize;
        while at < data.len() {
            match parse(&data, at) {
                Ok((_, next)) => at = next,
                Err(what) => {
                    let incomplete = what.contains("left in the file") || what.contains("header");
                    return Err(damage(at as u64, what, last && incomplete));
                }
            }
        }
        if let Some(next) = segments.get(i + 1) {
            let end = segment.start + data.len() as u64;
            if next.start != end {
                let what = if next.start > end {
                    format!(
                        "the segment ends at log offset {end} but the next one starts at {}: {} bytes are missing (a segment shortened or deleted)",
                        next.start,
                        next.start - end
                    )
                } else {
                    format!(
                        "the segment runs to log offset {end}, past the start of the next one ({})",
                        next.start
                    )
                };
                return Err(damage(data.len() as u64, what, false));
            }
        }
    }
    Ok(())
}

/// Keep the log up to the damage; move the damaged segment's rest and every later segment
/// into `lost/`.
fn cut(dir: &Path, segments: &mut Vec<Segment>, damage: &Damage) -> Result<(), WalError> {
    let io = |path: &Path, what| {
        let path = path.to_path_buf();
        move |source| WalError::Io { path, what, source }
    };
    let lost = dir.join("lost");
    let later: Vec<Segment> = segments.drain(damage.segment + 1..).collect();
    let segment = &mut segments[damage.segment];
    let data = std::fs::read(&segment.path).unwrap_or_default();
    if (damage.offset as usize) < data.len() || !later.is_empty() {
        std::fs::create_dir_all(&lost).map_err(io(&lost, "create the folder"))?;
    }
    if (damage.offset as usize) < data.len() {
        let rest = lost.join(format!(
            "{}.from-{}",
            segment
                .path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            damage.offset
        ));
        std::fs::write(&rest, &data[damage.offset as usize..]).map_err(io(&rest, "save"))?;
        let file = File::options()
            .write(true)
            .open(&segment.path)
            .map_err(io(&segment.path, "open"))?;
        file.set_len(damage.offset)
            .and_then(|_| file.sync_all())
            .map_err(io(&segment.path, "truncate"))?;
    }
    segment.len = damage.offset;
    for s in later {
        let to = lost.join(s.path.file_name().unwrap_or_default());
        std::fs::rename(&s.path, &to).map_err(io(&s.path, "move aside"))?;
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(dir: &Path, blocks: &[&[u8]]) -> Vec<u64> {
        let mut wal = Wal::open(dir, WalSync::EveryBlock, false).unwrap();
        blocks.iter().map(|b| wal.append(b).unwrap()).collect()
    }

    #[test]
    fn blocks_read_back_by_range_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ends = log_with(dir.path(), &[b"a\nb\n", b"c\n", b"d\n"]);
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!(wal.end(), ends[2]);
        assert_eq!(
            wal.read(ends[0], ends[2]).unwrap(),
            [(b"c\n".to_vec(), ends[1]), (b"d\n".to_vec(), ends[2])]
        );
        assert_eq!(
            wal.read(0, ends[0]).unwrap(),
            [(b"a\nb\n".to_vec(), ends[0])]
        );
        assert!(matches!(
            wal.read(0, ends[2] + 1),
            Err(WalError::Missing { .. })
        ));
    }

    #[test]
    fn segments_roll_and_covered_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open_with(
            dir.path(),
            WalSync::Interval(Duration::from_secs(1)),
            false,
            100,
        )
        .unwrap();
        let big = vec![b'x'; 50];
        let first = wal.append(&big).unwrap();
        wal.append(&big).unwrap();
        let third = wal.append(b"tail\n").unwrap();
        wal.flush().unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
        assert_eq!(
            wal.delete_before(first).unwrap(),
            0,
            "the first segment holds two records"
        );
        assert_eq!(wal.delete_before(third - 13).unwrap(), 1);
        assert_eq!(
            wal.read(wal.start(), third).unwrap(),
            [(b"tail\n".to_vec(), third)]
        );
        drop(wal);
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!(wal.end(), third);
    }

    #[test]
    fn a_torn_last_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let ends = log_with(dir.path(), &[b"a\n", b"bb\n"]);
        let file = segment_path(dir.path(), 0);
        let f = File::options().write(true).open(&file).unwrap();
        f.set_len(ends[1] - 2).unwrap();
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!(wal.end(), ends[0]);
        assert_eq!(wal.read(0, ends[0]).unwrap(), [(b"a\n".to_vec(), ends[0])]);
    }

    #[test]
    fn a_flipped_byte_is_reported_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let ends = log_with(dir.path(), &[b"a\n", b"bb\n", b"ccc\n"]);
        let file = segment_path(dir.path(), 0);
        let mut data = std::fs::read(&file).unwrap();
        data[ends[0] as usize + HEADER as usize] ^= 0x20;
        std::fs::write(&file, &data).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, WalError::Damaged { offset, .. } if *offset == ends[0]),
            "{text}"
        );
        assert!(
            text.contains("00000000000000000000.wal") && text.contains("checksum"),
            "{text}"
        );
        // Accepting the loss keeps what is before the damage.
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, true).unwrap();
        assert_eq!(wal.end(), ends[0]);
        assert_eq!(wal.read(0, ends[0]).unwrap(), [(b"a\n".to_vec(), ends[0])]);
        assert!(dir.path().join("lost").read_dir().unwrap().count() == 1);
    }

    #[test]
    fn a_missing_or_shortened_segment_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open_with(dir.path(), WalSync::EveryBlock, false, 100).unwrap();
        let big = vec![b'x'; 100];
        let first = wal.append(&big).unwrap();
        let second = wal.append(&big).unwrap();
        wal.append(b"z\n").unwrap();
        drop(wal);
        // Shortened: the first segment loses its end.
        let whole = std::fs::read(segment_path(dir.path(), 0)).unwrap();
        std::fs::write(segment_path(dir.path(), 0), &whole[..whole.len() - 50]).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("00000000000000000000.wal") && err.contains("record of"),
            "{err}"
        );
        // Missing: the middle segment is gone.
        std::fs::write(segment_path(dir.path(), 0), &whole).unwrap();
        std::fs::remove_file(segment_path(dir.path(), first)).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("next one starts at {second}")),
            "{err}"
        );
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, true).unwrap();
        assert_eq!(wal.end(), first);
    }
}
