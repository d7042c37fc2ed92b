//! The write-ahead log of a receiver source: what a socket or HTTP receiver took in, on disk
//! before anyone is told it is safe, replayed after a crash and deleted once a data checkpoint
//! covers it.
//!
//! A log is a folder of segment files named by the logical offset of their first byte
//! (`00000000000000000000.wal`, …, exactly 20 digits), so a missing or shortened segment shows
//! as a gap. Each record is `[length u32 LE][crc32 u32 LE][payload]`: one received block of
//! complete lines (never empty). Offsets are logical byte positions over all segments; a batch
//! remembers the range it took.
//!
//! Beside the segments, the file `ack` (format version 2) records the log's first offset, the
//! segment appends go to and the *acknowledged end*:
//! `["SWAK"][version u32][start u64][tail u64][end u64][crc32 u32]`, all LE, 36 bytes, rewritten
//! in place after every append before [`Wal::append`] returns (and fsynced after the segment
//! with [`WalSync::EveryBlock`]; at a roll, before the new segment is created), so a receiver
//! acknowledges only what the `ack` file covers. A folder without `ack` was written by format version 1 (before it existed);
//! it opens under version 1's rules (a record cut short at the very end of the last segment is
//! cut off) and is version 2 from then on. `ack.tmp` is the log's own temporary name while it
//! creates `ack` and is removed; `lost/` holds what was cut off. Any other file in the folder is
//! refused, naming it.
//!
//! Opening a log checks every file (a regular file, no larger than a segment can legally be,
//! never a FIFO, device or link to one) and every record. Past the acknowledged end there can
//! only be what one append interrupted before it was acknowledged: a whole record is kept (its
//! append wrote it; the crash came before the `ack` file, so an HTTP client got no answer and
//! may send it again), a part of one is cut off into `lost/` with a warning. Anything else that
//! does not read back — a checksum or length that does not match, a segment shortened, missing,
//! overlapping another or starting past the one being appended to, a second record past the
//! acknowledged end, acknowledged records missing —
//! stops the job with the file and byte offset, unless the owner accepts the loss
//! (`--accept-wal-loss`): then everything before the damage is kept and the rest is moved aside
//! into `lost/`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of a record's header: length and checksum.
const HEADER: u64 = 8;
/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The largest record accepted (a received block).
pub const MAX_RECORD: usize = 256 << 20;
/// The on-disk format this code writes: 2 = segments plus the `ack` file.
pub const FORMAT_VERSION: u32 = 2;
/// The log's record of its start and acknowledged end.
const ACK_FILE: &str = "ack";
/// Where `ack` is written before it is renamed into place (at open only).
const ACK_TMP: &str = "ack.tmp";
/// Where cut-off and refused files go.
const LOST: &str = "lost";
const ACK_MAGIC: [u8; 4] = *b"SWAK";
const ACK_BYTES: usize = 36;

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalSync {
    /// `fsync` after every block, before it is acknowledged (default): nothing acknowledged is
    /// lost even if the machine loses power.
    #[default]
    EveryBlock,
    /// `fsync` at most this often (and when a batch is sealed): faster; a process crash
    /// (`kill -9`) still loses nothing, a power loss may lose the last interval (and a restart
    /// then refuses, naming the acknowledged records that are missing).
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
    /// A record or file does not read back as written.
    #[error(
        "write-ahead log damaged: {file} at byte {offset} (log offset {log_offset}): {what}. Records before it are intact; records after it cannot be trusted. Restore the file, or run with --accept-wal-loss to keep what is before the damage and move the rest to {lost}"
    )]
    Damaged {
        /// The segment (or the `ack` file, or the segment that should be there).
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
    /// A file in the log's folder that is not part of the log.
    #[error(
        "write-ahead log {file}: not part of the log ({what}); segments are named <20 digits>.wal and the log keeps only `ack` and `lost/` beside them. Move the file out of the folder, or run with --accept-wal-loss to move it to {lost}"
    )]
    Foreign {
        /// The file.
        file: PathBuf,
        /// Why it is not a segment.
        what: String,
        /// Where `--accept-wal-loss` moves it.
        lost: PathBuf,
    },
    /// The log was written in an on-disk format this host does not read.
    #[error(
        "write-ahead log {file}: written in format version {found}; this host reads versions 1 and {FORMAT_VERSION}. Run the host version that wrote it until a data checkpoint covers the log"
    )]
    Version {
        /// The file that names the version.
        file: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A block the log does not take: empty, or over [`MAX_RECORD`].
    #[error(
        "write-ahead log {dir}: a block of {len} bytes cannot be appended (1 to {MAX_RECORD} bytes)"
    )]
    Block {
        /// The log's folder.
        dir: PathBuf,
        /// The block's size.
        len: usize,
    },
}

/// A segment: its file and the logical offsets it holds.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    len: u64,
    path: PathBuf,
}

/// What the `ack` file holds: the log's first offset and its acknowledged end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    start: u64,
    /// The first offset of the segment appends go to (written when the log rolls, before the
    /// segment is created): no segment may start past it.
    tail: u64,
    end: u64,
}

impl Ack {
    fn encode(self) -> [u8; ACK_BYTES] {
        let mut out = [0u8; ACK_BYTES];
        out[0..4].copy_from_slice(&ACK_MAGIC);
        out[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.start.to_le_bytes());
        out[16..24].copy_from_slice(&self.tail.to_le_bytes());
        out[24..32].copy_from_slice(&self.end.to_le_bytes());
        let crc = crc32fast::hash(&out[..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// One source's write-ahead log, open for appending.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    sync: WalSync,
    segments: Vec<Segment>,
    file: File,
    ack: File,
    last_sync: Instant,
    unsynced: bool,
    segment_bytes: u64,
    /// An fsync failed or a failed append could not be undone: no more appends.
    broken: bool,
}

impl Wal {
    /// Open (or create) the log in `dir`, checking every file and record. With `accept_loss`,
    /// damage keeps what is before it and moves the rest into `dir/lost/`; without, it is an
    /// error.
    pub fn open(dir: &Path, sync: WalSync, accept_loss: bool) -> Result<Wal, WalError> {
        Self::open_with(dir, sync, accept_loss, SEGMENT_BYTES)
    }

    pub(crate) fn open_with(
        dir: &Path,
        sync: WalSync,
        accept_loss: bool,
        segment_bytes: u64,
    ) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "create the folder"))?;
        let lost = dir.join(LOST);
        let listing = list(dir)?;
        for (file, what) in listing.foreign {
            if !accept_loss {
                return Err(WalError::Foreign { file, what, lost });
            }
            let to = move_aside(dir, &file)?;
            tracing::warn!(wal = %dir.display(), "--accept-wal-loss: {} is not part of the log ({what}): moved to {}", file.display(), to.display());
        }
        let mut segments = listing.segments;
        let limit = segment_bytes + HEADER + MAX_RECORD as u64;
        let acked = match read_ack(dir) {
            Ok(Some(ack)) => Some(ack),
            Ok(None) if segments.is_empty() => Some(Ack {
                start: 0,
                tail: 0,
                end: 0,
            }),
            Ok(None) => {
                tracing::warn!(wal = %dir.display(), "no `ack` file: a log written by format version 1; opened under its rules (an incomplete last record is taken for an interrupted write), then upgraded to version {FORMAT_VERSION}");
                None
            }
            Err(e @ WalError::Damaged { .. }) if accept_loss => {
                tracing::warn!(wal = %dir.display(), "--accept-wal-loss: {e}; the acknowledged end is unknown: every record that reads back is kept");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(ack) = acked {
            finish_trim(dir, &mut segments, ack.start)?;
        }
        // Each pass cuts something or settles the acknowledged range, so this ends; the bound
        // only guards against a mistake here.
        let mut acked = acked;
        let mut passes = 0;
        loop {
            passes += 1;
            let damage = match check(dir, &mut segments, acked, limit) {
                Ok(()) => break,
                Err(damage) => damage,
            };
            if damage.unacknowledged && passes <= 2 {
                cut(dir, &mut segments, damage.cut)?;
                let past = match acked {
                    Some(a) => format!("past the last acknowledged offset {}", a.end),
                    None => "the end of the last segment of a format 1 log".to_string(),
                };
                tracing::warn!(wal = %dir.display(), "{} at byte {} of {} (log offset {}): {past}, so an append interrupted before it was acknowledged: cut off, moved to {}", damage.what, damage.offset, damage.file.display(), damage.log_offset, lost.display());
            } else if accept_loss && passes <= 2 * segments.len() + 8 {
                cut(dir, &mut segments, damage.cut)?;
                let end = segments.last().map(|s| s.start + s.len);
                if let Some(a) = &mut acked {
                    // What is left is what the owner accepted: the acknowledged range shrinks to it.
                    a.start = segments.first().map_or(a.start, |s| s.start);
                    a.end = end.map_or(a.start, |end| end.min(a.end)).max(a.start);
                    a.tail = segments
                        .last()
                        .map_or(a.start, |s| s.start)
                        .clamp(a.start, a.end);
                }
                tracing::warn!(wal = %dir.display(), "--accept-wal-loss: {} at byte {} of {} (log offset {}); kept the log up to log offset {}, moved the rest to {}", damage.what, damage.offset, damage.file.display(), damage.log_offset, end.unwrap_or(0), lost.display());
            } else {
                return Err(WalError::Damaged {
                    file: damage.file,
                    offset: damage.offset,
                    log_offset: damage.log_offset,
                    what: damage.what,
                    lost,
                });
            }
        }
        if segments.is_empty() {
            let start = acked.map_or(0, |a| a.start);
            let path = segment_path(dir, start);
            File::create(&path).map_err(io(&path, "create a segment"))?;
            segments.push(Segment {
                start,
                len: 0,
                path,
            });
        }
        let last = segments.last().cloned().unwrap_or(Segment {
            start: 0,
            len: 0,
            path: segment_path(dir, 0),
        });
        let mut file = File::options()
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&last.path)
            .map_err(io(&last.path, "open for appending"))?;
        file.seek(SeekFrom::End(0))
            .map_err(io(&last.path, "seek"))?;
        let now = Ack {
            start: segments.first().map_or(0, |s| s.start),
            tail: last.start,
            end: last.start + last.len,
        };
        let ack = create_ack(dir, now)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            sync,
            segments,
            file,
            ack,
            last_sync: Instant::now(),
            unsynced: false,
            segment_bytes,
            broken: false,
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

    /// Append one block; when this returns, the block is in the log and the `ack` file covers
    /// it (both on disk, with [`WalSync::EveryBlock`]): it may be acknowledged. Returns the
    /// log's new end. On an error nothing of the block is left in the log.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.is_empty() || payload.len() > MAX_RECORD {
            return Err(WalError::Block {
                dir: self.dir.clone(),
                len: payload.len(),
            });
        }
        if self.broken {
            return Err(WalError::Io {
                path: self.dir.clone(),
                what: "append",
                source: std::io::Error::other(
                    "an earlier write or fsync of the log failed; restart the job to reopen and check the log",
                ),
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
        let (path, before) = match self.segments.last() {
            Some(s) => (s.path.clone(), s.len),
            None => {
                return Err(WalError::Io {
                    path: self.dir.clone(),
                    what: "append",
                    source: std::io::Error::other("no open segment"),
                });
            }
        };
        if let Err(source) = self.file.write_all(&record) {
            // Take back what part of the record was written: nothing unacknowledged stays.
            if self.file.set_len(before).is_err() {
                self.broken = true;
            }
            return Err(WalError::Io {
                path,
                what: "append",
                source,
            });
        }
        if let Some(last) = self.segments.last_mut() {
            last.len += record.len() as u64;
        }
        self.unsynced = true;
        let durable = match self.sync {
            WalSync::EveryBlock => self
                .file
                .sync_data()
                .map_err(|source| WalError::Io {
                    path: path.clone(),
                    what: "fsync",
                    source,
                })
                .and_then(|()| self.write_ack(true)),
            WalSync::Interval(every) => self.write_ack(false).and_then(|()| {
                if self.last_sync.elapsed() >= every {
                    self.flush()
                } else {
                    Ok(())
                }
            }),
        };
        if let Err(e) = durable {
            // A failed fsync leaves the file in an unknown state: refuse further appends.
            self.broken = true;
            return Err(e);
        }
        if self.sync == WalSync::EveryBlock {
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(self.end())
    }

    /// Write the `ack` file: the log's start, last segment and end, fsynced when `sync`.
    fn write_ack(&mut self, sync: bool) -> Result<(), WalError> {
        let ack = Ack {
            start: self.start(),
            tail: self.segments.last().map_or(0, |s| s.start),
            end: self.end(),
        };
        self.put_ack(ack, sync)
    }

    fn put_ack(&mut self, ack: Ack, sync: bool) -> Result<(), WalError> {
        let path = self.dir.join(ACK_FILE);
        self.ack
            .write_all_at(&ack.encode(), 0)
            .map_err(io(&path, "record the acknowledged end"))?;
        if sync {
            self.ack.sync_data().map_err(io(&path, "fsync"))?;
        }
        Ok(())
    }

    /// Force what was appended to disk: the segment, then the `ack` file.
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
            let ack = self.dir.join(ACK_FILE);
            self.ack.sync_data().map_err(io(&ack, "fsync"))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.flush()?;
        let start = self.end();
        // The `ack` file names the new segment before it exists: a segment past it is not the
        // log's (a copy, say).
        self.put_ack(
            Ack {
                start: self.start(),
                tail: start,
                end: start,
            },
            true,
        )?;
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
        let limit = self.segment_bytes + HEADER + MAX_RECORD as u64;
        let mut out = Vec::new();
        for segment in &self.segments {
            let end = segment.start + segment.len;
            if end <= from || segment.start >= to {
                continue;
            }
            let damaged = |offset: u64, what: String| WalError::Damaged {
                file: segment.path.clone(),
                offset,
                log_offset: segment.start + offset,
                what,
                lost: self.dir.join(LOST),
            };
            let (mut file, _) = open_regular(&segment.path, limit).map_err(|w| damaged(0, w))?;
            let mut at = from.saturating_sub(segment.start);
            file.seek(SeekFrom::Start(at))
                .map_err(io(&segment.path, "seek"))?;
            let mut reader = BufReader::new(file.take(segment.len - at));
            while segment.start + at < to.min(end) {
                let mut payload = Vec::new();
                match next_record(&mut reader, at, segment.len, &mut payload) {
                    Ok(Some(next)) => {
                        out.push((payload, segment.start + next));
                        at = next;
                    }
                    Ok(None) => break,
                    Err(bad) => return Err(damaged(at, bad.what)),
                }
            }
        }
        Ok(out)
    }

    /// Delete the segments that end at or before `offset` (a data checkpoint covers them);
    /// the segment being written is kept. The `ack` file records the new start first.
    pub fn delete_before(&mut self, offset: u64) -> Result<usize, WalError> {
        let mut n = 0;
        while n + 1 < self.segments.len() && self.segments[n].start + self.segments[n].len <= offset
        {
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // The appended data and the new start are on disk before any file goes.
        self.flush()?;
        let gone: Vec<Segment> = self.segments.drain(..n).collect();
        self.write_ack(true)?;
        for segment in &gone {
            std::fs::remove_file(&segment.path)
                .map_err(io(&segment.path, "delete a covered segment"))?;
        }
        Ok(n)
    }
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { path, what, source }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.wal"))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync the folder"))
}

/// What a file that should be regular is instead.
fn kind_of(path: &Path) -> String {
    let kind = |t: std::fs::FileType| {
        if t.is_dir() {
            "a folder"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_symlink() {
            "a symbolic link"
        } else if t.is_file() {
            "a regular file"
        } else {
            "not a regular file"
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(target) => format!("a symbolic link to {}", kind(target.file_type())),
            Err(e) => format!("a symbolic link that cannot be followed ({e})"),
        },
        Ok(m) => kind(m.file_type()).to_string(),
        Err(e) => format!("cannot be examined ({e})"),
    }
}

/// Open a file the log reads, only when it is a regular file (following links) of at most
/// `limit` bytes: checked before it is opened (a FIFO is never opened) and again on the open
/// file. Returns the file and its length, or what is wrong.
fn open_regular(path: &Path, limit: u64) -> Result<(File, u64), String> {
    let regular = |m: &std::fs::Metadata| -> Result<u64, String> {
        if !m.file_type().is_file() {
            return Err(format!(
                "{} is {}, not a regular file: the log never writes one",
                file_name(path),
                kind_of(path)
            ));
        }
        if m.len() > limit {
            return Err(format!(
                "{} is {} bytes, more than a segment can hold ({limit}): not written by the log (a sparse or foreign file?); it was not read",
                file_name(path),
                m.len()
            ));
        }
        Ok(m.len())
    };
    let before = std::fs::metadata(path).map_err(|e| format!("cannot be examined: {e}"))?;
    regular(&before)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot be opened: {e}"))?;
    let len = regular(
        &file
            .metadata()
            .map_err(|e| format!("cannot be examined: {e}"))?,
    )?;
    Ok((file, len))
}

/// What is in a log's folder.
struct Listing {
    segments: Vec<Segment>,
    /// Files that are not part of the log, with why.
    foreign: Vec<(PathBuf, String)>,
}

fn list(dir: &Path) -> Result<Listing, WalError> {
    let entries = std::fs::read_dir(dir).map_err(io(dir, "list"))?;
    let mut segments = Vec::new();
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir, "list"))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            foreign.push((path, "a name that is not UTF-8".into()));
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match name.as_str() {
            ACK_FILE => continue,
            LOST if is_dir => continue,
            ACK_TMP => {
                // The log's own temporary name, left by a crash while `ack` was created.
                std::fs::remove_file(&path).map_err(io(&path, "remove a temporary file"))?;
                continue;
            }
            _ => {}
        }
        let digits = name
            .strip_suffix(".wal")
            .filter(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()));
        match digits.map(str::parse::<u64>) {
            Some(Ok(start)) => {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                segments.push(Segment { start, len, path });
            }
            Some(Err(_)) => {
                foreign.push((path, "an offset past the largest a log can reach".into()))
            }
            None => foreign.push((
                path,
                format!("{}, not named <20 digits>.wal", kind_of(&entry.path())),
            )),
        }
    }
    segments.sort_by_key(|s| s.start);
    foreign.sort();
    Ok(Listing { segments, foreign })
}

/// The `ack` file: `None` when there is none (a version 1 log, or a new one).
fn read_ack(dir: &Path) -> Result<Option<Ack>, WalError> {
    let path = dir.join(ACK_FILE);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, "examine")(e)),
        Ok(_) => {}
    }
    let damaged = |offset: u64, what: String| WalError::Damaged {
        file: path.clone(),
        offset,
        log_offset: 0,
        what,
        lost: dir.join(LOST),
    };
    let (file, len) = open_regular(&path, 4096).map_err(|w| damaged(0, w))?;
    let mut data = Vec::new();
    file.take(4096)
        .read_to_end(&mut data)
        .map_err(io(&path, "read"))?;
    if data.len() >= 8 && data[0..4] == ACK_MAGIC {
        let version = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        if version != FORMAT_VERSION && data.len() != ACK_BYTES {
            return Err(WalError::Version {
                file: path,
                found: version,
            });
        }
    }
    if data.len() != ACK_BYTES || len != ACK_BYTES as u64 {
        return Err(damaged(
            0,
            format!(
                "the acknowledged-end record is {} bytes, not {ACK_BYTES}",
                data.len()
            ),
        ));
    }
    if data[0..4] != ACK_MAGIC {
        return Err(damaged(
            0,
            "not an acknowledged-end record (no SWAK mark)".into(),
        ));
    }
    let crc = u32::from_le_bytes([data[32], data[33], data[34], data[35]]);
    if crc32fast::hash(&data[..32]) != crc {
        return Err(damaged(
            0,
            "checksum mismatch in the acknowledged-end record".into(),
        ));
    }
    let version = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if version != FORMAT_VERSION {
        return Err(WalError::Version {
            file: path,
            found: version,
        });
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let ack = Ack {
        start: word(8),
        tail: word(16),
        end: word(24),
    };
    if ack.start > ack.tail || ack.tail > ack.end {
        return Err(damaged(
            8,
            format!(
                "the log's start {}, last segment {} and end {} are out of order",
                ack.start, ack.tail, ack.end
            ),
        ));
    }
    Ok(Some(ack))
}

/// Write `ack` whole (temporary name, fsync, rename, folder fsync) and open it for updates.
fn create_ack(dir: &Path, ack: Ack) -> Result<File, WalError> {
    let tmp = dir.join(ACK_TMP);
    let path = dir.join(ACK_FILE);
    {
        let mut file = File::create(&tmp).map_err(io(&tmp, "create"))?;
        file.write_all(&ack.encode())
            .and_then(|()| file.sync_all())
            .map_err(io(&tmp, "write"))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path, "rename into place"))?;
    sync_dir(dir)?;
    File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(&path, "open"))
}

/// Delete the segments wholly before `start` that a trim was deleting when it was
/// interrupted (the `ack` file already says the log starts at `start`).
fn finish_trim(dir: &Path, segments: &mut Vec<Segment>, start: u64) -> Result<(), WalError> {
    while let Some(first) = segments.first()
        && first.start < start
        && first.start + first.len <= start
        && std::fs::symlink_metadata(&first.path).is_ok_and(|m| m.file_type().is_file())
    {
        let first = segments.remove(0);
        std::fs::remove_file(&first.path).map_err(io(&first.path, "delete a covered segment"))?;
        tracing::info!(wal = %dir.display(), "{} was covered by a data checkpoint (an interrupted trim): deleted", first.path.display());
    }
    Ok(())
}

/// A record that does not read back.
struct Bad {
    what: String,
    /// The header claims more bytes than the file has: what an interrupted write leaves.
    incomplete: bool,
}

/// Read the record at file offset `at` of a segment of `len` bytes into `payload`: where the
/// next one starts, `None` at the end, or what is wrong. Never reads past `len`.
fn next_record(
    reader: &mut impl Read,
    at: u64,
    len: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<u64>, Bad> {
    let remaining = len.saturating_sub(at);
    if remaining == 0 {
        return Ok(None);
    }
    let unreadable = |e: std::io::Error| Bad {
        what: format!("cannot be read: {e}"),
        incomplete: false,
    };
    if remaining < HEADER {
        return Err(Bad {
            what: format!("{remaining} bytes of a record header"),
            incomplete: true,
        });
    }
    let mut header = [0u8; HEADER as usize];
    reader.read_exact(&mut header).map_err(unreadable)?;
    let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let left = remaining - HEADER;
    if size == 0 {
        return Err(Bad {
            what: "a record of 0 bytes (the log writes none: zeros or garbage where a record should start)".into(),
            incomplete: false,
        });
    }
    if u64::from(size) > left {
        return Err(Bad {
            what: format!("a record of {size} bytes but only {left} left in the file"),
            incomplete: true,
        });
    }
    if size as usize > MAX_RECORD {
        return Err(Bad {
            what: format!("a record of {size} bytes, over the limit of {MAX_RECORD}"),
            incomplete: false,
        });
    }
    payload.clear();
    payload.resize(size as usize, 0);
    reader.read_exact(payload).map_err(unreadable)?;
    if crc32fast::hash(payload) != crc {
        return Err(Bad {
            what: format!("checksum mismatch in a record of {size} bytes"),
            incomplete: false,
        });
    }
    Ok(Some(at + HEADER + u64::from(size)))
}

/// Where a log stops reading as written, and what may be done about it.
struct Damage {
    file: PathBuf,
    offset: u64,
    log_offset: u64,
    what: String,
    /// Where to cut with `--accept-wal-loss` (or here, when `unacknowledged`): the segment index
    /// and the log offset to keep up to; `None`: nothing to cut.
    cut: Option<(usize, u64)>,
    /// Past the acknowledged end (or, in a version 1 log, an incomplete last record): an append
    /// interrupted before it was acknowledged, cut off without asking.
    unacknowledged: bool,
}

/// Check every segment and record against the acknowledged range (`None`: a version 1 log).
/// Updates each segment's length to what its open file says.
fn check(
    dir: &Path,
    segments: &mut [Segment],
    acked: Option<Ack>,
    limit: u64,
) -> Result<(), Damage> {
    let Some(first) = segments.first() else {
        return match acked {
            Some(a) if a.end > a.start => Err(Damage {
                file: segment_path(dir, a.start),
                offset: 0,
                log_offset: a.start,
                what: format!(
                    "no segment is left, but log offsets {}..{} were acknowledged (segments deleted or renamed?)",
                    a.start, a.end
                ),
                cut: None,
                unacknowledged: false,
            }),
            _ => Ok(()),
        };
    };
    // Where the acknowledged end is: the last segment starting at or before it.
    let at_ack = acked.map(|a| {
        let i = segments.iter().rposition(|s| s.start <= a.end).unwrap_or(0);
        (i, a.end)
    });
    if let Some(a) = acked
        && first.start != a.start
    {
        let (file, what) = if first.start > a.start {
            (
                segment_path(dir, a.start),
                format!(
                    "the log starts at log offset {} (per its ack file) but its first segment, {}, starts at {}: the segment(s) before it are missing",
                    a.start,
                    file_name(&first.path),
                    first.start
                ),
            )
        } else {
            (
                first.path.clone(),
                format!(
                    "the segment starts at log offset {}, before the log's start {} (per its ack file), and runs past it: renamed?",
                    first.start, a.start
                ),
            )
        };
        let cut = (first.start < a.start).then_some((0, first.start));
        return Err(Damage {
            file,
            offset: 0,
            log_offset: a.start,
            what,
            cut,
            unacknowledged: false,
        });
    }
    let n = segments.len();
    let mut past = 0usize;
    let mut payload = Vec::new();
    for i in 0..n {
        let (before, rest) = segments.split_at_mut(i);
        let segment = &mut rest[0];
        let last = i + 1 == n;
        let (path, start) = (segment.path.clone(), segment.start);
        let damage = |offset: u64, what: String, cut: Option<(usize, u64)>, unack: bool| Damage {
            file: path.clone(),
            offset,
            log_offset: start + offset,
            what,
            cut,
            unacknowledged: unack,
        };
        if let Some(prev) = before.last() {
            let prev_end = prev.start + prev.len;
            if segment.start < prev_end {
                return Err(damage(
                    0,
                    format!(
                        "the segment starts at log offset {}, inside {} (log offsets {}..{}): two segments overlap (one a copy under another name?); move the one that does not belong out of the folder",
                        segment.start,
                        prev.path.display(),
                        prev.start,
                        prev_end
                    ),
                    Some((i, segment.start)),
                    false,
                ));
            }
            if segment.start > prev_end {
                return Err(Damage {
                    file: prev.path.clone(),
                    offset: prev.len,
                    log_offset: prev_end,
                    what: format!(
                        "the segment ends at log offset {prev_end} but the next one, {}, starts at {}: {} bytes are missing (a segment shortened or deleted)",
                        file_name(&segment.path),
                        segment.start,
                        segment.start - prev_end
                    ),
                    cut: Some((i, segment.start)),
                    unacknowledged: false,
                });
            }
        }
        let (file, len) = match open_regular(&segment.path, limit) {
            Ok(opened) => opened,
            Err(what) => return Err(damage(0, what, Some((i, segment.start)), false)),
        };
        if let Some(a) = acked
            && segment.start > a.tail
        {
            return Err(damage(
                0,
                format!(
                    "the segment starts at log offset {}, past the segment the log was appending to ({}, per its ack file; acknowledged up to log offset {}): the log never wrote it (a copy of a segment, or one renamed?)",
                    segment.start,
                    file_name(&segment_path(dir, a.tail)),
                    a.end
                ),
                at_ack,
                false,
            ));
        }
        segment.len = len;
        let mut reader = BufReader::new(file.take(len));
        let mut at = 0u64;
        loop {
            match next_record(&mut reader, at, len, &mut payload) {
                Ok(None) => break,
                Ok(Some(next)) => {
                    let (from, to) = (segment.start + at, segment.start + next);
                    if let Some(a) = acked {
                        if from < a.end && a.end < to {
                            return Err(damage(
                                at,
                                format!(
                                    "the last acknowledged offset {} falls inside the record at log offset {from} (the ack file does not belong to these segments?)",
                                    a.end
                                ),
                                Some((i, from)),
                                false,
                            ));
                        }
                        if from >= a.end {
                            past += 1;
                            if past > 1 {
                                return Err(damage(
                                    at,
                                    format!(
                                        "a second complete record after the last acknowledged offset {}, where one interrupted append leaves at most one (records copied in or written by something else?)",
                                        a.end
                                    ),
                                    at_ack,
                                    false,
                                ));
                            }
                        }
                    }
                    at = next;
                }
                Err(bad) => {
                    let log_offset = segment.start + at;
                    return Err(match acked {
                        Some(a) if log_offset >= a.end => {
                            damage(at, bad.what, Some((i, log_offset)), last)
                        }
                        Some(_) => damage(at, bad.what, Some((i, log_offset)), false),
                        None => damage(at, bad.what, Some((i, log_offset)), last && bad.incomplete),
                    });
                }
            }
        }
    }
    let (Some(a), Some(last)) = (acked, segments.last()) else {
        return Ok(());
    };
    let end = last.start + last.len;
    if end < a.end {
        return Err(Damage {
            file: last.path.clone(),
            offset: last.len,
            log_offset: end,
            what: format!(
                "the log ends here but records up to log offset {} were acknowledged: {} bytes of acknowledged records are missing (the segment shortened, or the next one, {}, deleted)",
                a.end,
                a.end - end,
                file_name(&segment_path(dir, end))
            ),
            cut: None,
            unacknowledged: false,
        });
    }
    Ok(())
}

/// Keep the log up to `cut` (segment index, log offset); move the rest of that segment and
/// every later one into `lost/`.
fn cut(dir: &Path, segments: &mut Vec<Segment>, cut: Option<(usize, u64)>) -> Result<(), WalError> {
    let Some((i, keep_to)) = cut else {
        return Ok(());
    };
    if i >= segments.len() {
        return Ok(());
    }
    let later: Vec<Segment> = segments.drain(i + 1..).collect();
    let segment = &segments[i];
    let offset = keep_to.saturating_sub(segment.start);
    if offset == 0 {
        let whole = segments.remove(i);
        move_aside(dir, &whole.path)?;
    } else if offset < segment.len {
        let lost = dir.join(LOST);
        std::fs::create_dir_all(&lost).map_err(io(&lost, "create the folder"))?;
        let rest = unique(&lost.join(format!("{}.from-{offset}", file_name(&segment.path))));
        let mut file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&segment.path)
            .map_err(io(&segment.path, "open"))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(io(&segment.path, "seek"))?;
        let mut out = File::create(&rest).map_err(io(&rest, "create"))?;
        std::io::copy(&mut (&mut file).take(segment.len - offset), &mut out)
            .and_then(|_| out.sync_all())
            .map_err(io(&rest, "save"))?;
        file.set_len(offset)
            .and_then(|()| file.sync_all())
            .map_err(io(&segment.path, "truncate"))?;
        segments[i].len = offset;
    }
    for s in later {
        move_aside(dir, &s.path)?;
    }
    sync_dir(dir)
}

/// `path` itself, or with `.1`, `.2`, … when it exists.
fn unique(path: &Path) -> PathBuf {
    let mut candidate = path.to_path_buf();
    let mut n = 0;
    while std::fs::symlink_metadata(&candidate).is_ok() {
        n += 1;
        candidate = PathBuf::from(format!("{}.{n}", path.display()));
    }
    candidate
}

/// Move a file of the log's folder into `lost/` (renamed, never read). Returns where it went.
fn move_aside(dir: &Path, path: &Path) -> Result<PathBuf, WalError> {
    let lost = dir.join(LOST);
    std::fs::create_dir_all(&lost).map_err(io(&lost, "create the folder"))?;
    let to = unique(&lost.join(file_name(path)));
    std::fs::rename(path, &to).map_err(io(path, "move aside"))?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    fn log_with(dir: &Path, blocks: &[&[u8]]) -> Vec<u64> {
        let mut wal = Wal::open(dir, WalSync::EveryBlock, false).unwrap();
        blocks.iter().map(|b| wal.append(b).unwrap()).collect()
    }

    fn segment_count(dir: &Path) -> usize {
        list(dir).unwrap().segments.len()
    }

    fn damaged_at(err: &WalError) -> (String, u64) {
        match err {
            WalError::Damaged { file, offset, .. } => (file_name(file), *offset),
            other => panic!("not Damaged: {other}"),
        }
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
    fn empty_and_oversized_blocks_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert!(matches!(
            wal.append(b""),
            Err(WalError::Block { len: 0, .. })
        ));
        assert_eq!(wal.end(), 0);
        assert_eq!(wal.append(b"x\n").unwrap(), 10);
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
        assert_eq!(segment_count(dir.path()), 2);
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
        assert_eq!(wal.start(), third - 13);
    }

    #[test]
    fn an_append_interrupted_past_the_acknowledged_end_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let ends = log_with(dir.path(), &[b"a\n", b"bb\n"]);
        let file = segment_path(dir.path(), 0);
        // What a crash in the middle of a third append leaves: part of a record past the ack.
        let mut f = File::options().append(true).open(&file).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'c']).unwrap();
        drop(f);
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!(wal.end(), ends[1]);
        assert_eq!(wal.read(0, ends[1]).unwrap().len(), 2);
        assert_eq!(dir.path().join(LOST).read_dir().unwrap().count(), 1);
        // A whole record past the ack (the crash came between the record and the ack) is
        // kept: its append wrote it whole. A second one is not what a crash leaves.
        drop(wal);
        let mut wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        wal.append(b"c\n").unwrap();
        let stale = Ack {
            start: 0,
            tail: 0,
            end: ends[1],
        };
        std::fs::write(dir.path().join(ACK_FILE), stale.encode()).unwrap();
        drop(wal);
        let mut wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!(wal.end(), ends[1] + 10);
        wal.append(b"d\n").unwrap();
        std::fs::write(dir.path().join(ACK_FILE), stale.encode()).unwrap();
        drop(wal);
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(
            damaged_at(&err),
            ("00000000000000000000.wal".into(), ends[1] + 10)
        );
    }

    #[test]
    fn an_acknowledged_record_cut_short_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ends = log_with(dir.path(), &[b"a\n", b"bb\n", b"ccc\n"]);
        let file = segment_path(dir.path(), 0);
        let mut data = std::fs::read(&file).unwrap();
        // The length of the middle record claims more than the file has.
        data[ends[0] as usize + 2] = 0x10;
        std::fs::write(&file, &data).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(
            damaged_at(&err),
            ("00000000000000000000.wal".into(), ends[0]),
            "{err}"
        );
        // Truncated at a record boundary: nothing is torn, but acknowledged records are gone.
        std::fs::write(&file, &data[..ends[1] as usize]).unwrap();
        let mut fixed = std::fs::read(&file).unwrap();
        fixed[ends[0] as usize + 2] = 0;
        std::fs::write(&file, &fixed).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(
            damaged_at(&err),
            ("00000000000000000000.wal".into(), ends[1])
        );
        assert!(
            err.to_string()
                .contains(&format!("up to log offset {}", ends[2])),
            "{err}"
        );
        // Accepting the loss keeps the two records that are there.
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, true).unwrap();
        assert_eq!(wal.end(), ends[1]);
        assert_eq!(read_ack(dir.path()).unwrap().map(|a| a.end), Some(ends[1]));
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
        assert!(dir.path().join(LOST).read_dir().unwrap().count() == 1);
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
            err.contains(&format!("{second:020}.wal, starts at {second}")),
            "{err}"
        );
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, true).unwrap();
        assert_eq!(wal.end(), first);
    }

    #[test]
    fn deleted_first_or_last_segments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open_with(dir.path(), WalSync::EveryBlock, false, 100).unwrap();
        let big = vec![b'x'; 100];
        let first = wal.append(&big).unwrap();
        let end = wal.append(&big).unwrap();
        drop(wal);
        let saved = std::fs::read(segment_path(dir.path(), first)).unwrap();
        std::fs::remove_file(segment_path(dir.path(), first)).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(damaged_at(&err), ("00000000000000000000.wal".into(), first));
        assert!(
            err.to_string().contains(&format!("up to log offset {end}")),
            "{err}"
        );
        std::fs::write(segment_path(dir.path(), first), saved).unwrap();
        std::fs::remove_file(segment_path(dir.path(), 0)).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(damaged_at(&err), ("00000000000000000000.wal".into(), 0));
        assert!(err.to_string().contains("missing"), "{err}");
        // Every segment gone.
        std::fs::remove_file(segment_path(dir.path(), first)).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(damaged_at(&err), ("00000000000000000000.wal".into(), 0));
    }

    #[test]
    fn copies_and_renamed_segments_are_refused_naming_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open_with(dir.path(), WalSync::EveryBlock, false, 100).unwrap();
        let block = vec![b'x'; 40];
        let mut ends = Vec::new();
        for _ in 0..5 {
            ends.push(wal.append(&block).unwrap());
        }
        drop(wal);
        let last = segment_path(dir.path(), ends[2]);
        assert!(last.exists());
        // A copy of the last segment under the name at the log's end: the log never rolled
        // there. Both files are named.
        let copy = segment_path(dir.path(), ends[4]);
        std::fs::copy(&last, &copy).unwrap();
        let err = Wal::open_with(dir.path(), WalSync::EveryBlock, false, 100).unwrap_err();
        assert_eq!(damaged_at(&err), (file_name(&copy), 0), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "past the segment the log was appending to ({}",
                file_name(&last)
            )),
            "{err}"
        );
        std::fs::remove_file(&copy).unwrap();
        // A copy under a name inside the last one: the two overlap; both are named.
        let inside = segment_path(dir.path(), ends[2] + 1);
        std::fs::copy(&last, &inside).unwrap();
        let text = Wal::open_with(dir.path(), WalSync::EveryBlock, false, 100)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(&file_name(&inside))
                && text.contains(&file_name(&last))
                && text.contains("overlap"),
            "{text}"
        );
        std::fs::remove_file(&inside).unwrap();
        // Renamed to something that is not a segment name.
        let renamed = dir.path().join(format!("{}.bak", file_name(&last)));
        std::fs::rename(&last, &renamed).unwrap();
        let err = Wal::open_with(dir.path(), WalSync::EveryBlock, false, 100).unwrap_err();
        assert!(
            matches!(&err, WalError::Foreign { file, .. } if *file == renamed),
            "{err}"
        );
        assert!(err.to_string().contains(&file_name(&renamed)));
        std::fs::rename(&renamed, &last).unwrap();
        // The log's own temporary file is removed; everything reads back.
        std::fs::write(dir.path().join(ACK_TMP), b"half").unwrap();
        let wal = Wal::open_with(dir.path(), WalSync::EveryBlock, false, 100).unwrap();
        assert_eq!(wal.read(0, ends[4]).unwrap().len(), 5);
        assert!(!dir.path().join(ACK_TMP).exists());
    }

    #[test]
    fn special_and_huge_files_are_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let ends = log_with(dir.path(), &[b"a\n", b"b\n"]);
        let seg = segment_path(dir.path(), 0);
        let next = segment_path(dir.path(), ends[1]);
        let started = Instant::now();
        // A FIFO where the next segment would be: never opened (that would block).
        let c = std::ffi::CString::new(next.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(damaged_at(&err), (file_name(&next), 0));
        assert!(err.to_string().contains("FIFO"), "{err}");
        std::fs::remove_file(&next).unwrap();
        // A link to /dev/zero in place of the segment.
        let saved = std::fs::read(&seg).unwrap();
        std::fs::remove_file(&seg).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &seg).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(damaged_at(&err), (file_name(&seg), 0));
        assert!(err.to_string().contains("character device"), "{err}");
        std::fs::remove_file(&seg).unwrap();
        // A sparse segment of 64 GiB.
        std::fs::write(&seg, &saved).unwrap();
        File::options()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert_eq!(damaged_at(&err), (file_name(&seg), 0));
        assert!(
            err.to_string().contains("more than a segment can hold"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // --accept-wal-loss moves it aside, unread; the log starts again at its offset.
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, true).unwrap();
        assert_eq!((wal.start(), wal.end()), (0, 0));
        assert!(dir.path().join(LOST).join(file_name(&seg)).exists());
    }

    #[test]
    fn foreign_files_and_unknown_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        log_with(dir.path(), &[b"a\n"]);
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, b"hello").unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap_err();
        assert!(
            matches!(&err, WalError::Foreign { file, .. } if *file == notes),
            "{err}"
        );
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, true).unwrap();
        assert_eq!(wal.end(), 10);
        assert!(dir.path().join(LOST).join("notes.txt").exists());
        drop(wal);
        // An `ack` file of a later format.
        let mut ack = Ack {
            start: 0,
            tail: 0,
            end: 10,
        }
        .encode();
        ack[4..8].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32fast::hash(&ack[..32]);
        ack[32..36].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.path().join(ACK_FILE), ack).unwrap();
        let err = Wal::open(dir.path(), WalSync::EveryBlock, true).unwrap_err();
        assert!(matches!(err, WalError::Version { found: 3, .. }), "{err}");
        assert!(err.to_string().contains("version 3"));
    }

    /// A copy of `tests/fixtures/wal-v1`, written by the code before the `ack` file existed
    /// (12 blocks as a receiver logs them, in 100-byte segments).
    fn version_1_fixture() -> tempfile::TempDir {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wal-v1");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        dir
    }

    fn fixture_blocks() -> Vec<Vec<u8>> {
        (0..12i64)
            .map(|i| {
                let mut payload = (1_700_000_000_000i64 + i).to_le_bytes().to_vec();
                for j in 0..=(i % 4) {
                    payload.extend_from_slice(format!("k{i} {j}\n").as_bytes());
                }
                payload
            })
            .collect()
    }

    #[test]
    fn a_version_1_log_opens_reads_back_and_is_upgraded() {
        let dir = version_1_fixture();
        assert!(!dir.path().join(ACK_FILE).exists());
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!((wal.start(), wal.end()), (0, 349));
        let got: Vec<Vec<u8>> = wal
            .read(0, 349)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(got, fixture_blocks());
        drop(wal);
        assert_eq!(
            read_ack(dir.path()).unwrap(),
            Some(Ack {
                start: 0,
                tail: 228,
                end: 349
            })
        );
        let mut wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!(wal.append(b"more\n").unwrap(), 362);
        // Version 1's rule still holds for a version 1 log: its torn last record is cut off.
        let dir = version_1_fixture();
        let last = segment_path(dir.path(), 228);
        let f = File::options().write(true).open(&last).unwrap();
        f.set_len(121 - 3).unwrap();
        let wal = Wal::open(dir.path(), WalSync::EveryBlock, false).unwrap();
        assert_eq!(wal.end(), 309);
    }

    /// Damage done to a log's folder.
    #[derive(Debug, Clone)]
    enum Harm {
        Flip {
            file: Index,
            at: Index,
            bit: u8,
        },
        Truncate {
            file: Index,
            at: Index,
        },
        Garbage {
            file: Index,
            bytes: Vec<u8>,
        },
        Zeros {
            file: Index,
            n: u16,
        },
        /// Copy a segment under the name of the log's end (0), inside itself (1), or past the end (2).
        Copy {
            file: Index,
            to: u8,
        },
        Delete {
            file: Index,
        },
        /// Rename a segment by `shift` bytes of offset, or (0) to a name that is not a segment's.
        Rename {
            file: Index,
            shift: i8,
        },
    }

    fn harm() -> impl Strategy<Value = Harm> {
        prop_oneof![
            (any::<Index>(), any::<Index>(), 0u8..8).prop_map(|(file, at, bit)| Harm::Flip {
                file,
                at,
                bit
            }),
            (any::<Index>(), any::<Index>()).prop_map(|(file, at)| Harm::Truncate { file, at }),
            (
                any::<Index>(),
                proptest::collection::vec(any::<u8>(), 1..64)
            )
                .prop_map(|(file, bytes)| Harm::Garbage { file, bytes }),
            (any::<Index>(), 1u16..600).prop_map(|(file, n)| Harm::Zeros { file, n }),
            (any::<Index>(), 0u8..3).prop_map(|(file, to)| Harm::Copy { file, to }),
            any::<Index>().prop_map(|file| Harm::Delete { file }),
            (any::<Index>(), -3i8..4).prop_map(|(file, shift)| Harm::Rename { file, shift }),
        ]
    }

    fn apply(dir: &Path, end: u64, harm: &Harm) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let segments: Vec<PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .cloned()
            .collect();
        let start_of = |p: &Path| -> u64 { file_name(p)[..20].parse().unwrap() };
        match harm {
            Harm::Flip { file, at, bit } => {
                let path = file.get(&files);
                let mut data = std::fs::read(path).unwrap();
                if !data.is_empty() {
                    let i = at.index(data.len());
                    data[i] ^= 1 << bit;
                    std::fs::write(path, data).unwrap();
                }
            }
            Harm::Truncate { file, at } => {
                let path = file.get(&files);
                let len = std::fs::metadata(path).unwrap().len();
                let to = at.index(len as usize + 1) as u64;
                File::options()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len(to)
                    .unwrap();
            }
            Harm::Garbage { file, bytes } => {
                let mut f = File::options().append(true).open(file.get(&files)).unwrap();
                f.write_all(bytes).unwrap();
            }
            Harm::Zeros { file, n } => {
                let path = file.get(&segments);
                let f = File::options().write(true).open(path).unwrap();
                let len = f.metadata().unwrap().len();
                f.set_len(len + u64::from(*n)).unwrap();
            }
            Harm::Copy { file, to } => {
                let path = file.get(&segments);
                let start = start_of(path);
                let name = match to {
                    0 => end,
                    1 => start + 1,
                    _ => end + 7,
                };
                let target = segment_path(dir, name);
                if !target.exists() {
                    std::fs::copy(path, target).unwrap();
                }
            }
            Harm::Delete { file } => std::fs::remove_file(file.get(&files)).unwrap(),
            Harm::Rename { file, shift } => {
                let path = file.get(&segments);
                let target = match start_of(path).checked_add_signed(i64::from(*shift)) {
                    Some(s) if *shift != 0 => segment_path(dir, s),
                    _ => dir.join(format!("{}.old", file_name(path))),
                };
                if !target.exists() {
                    std::fs::rename(path, target).unwrap();
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 160,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the damage, opening either gives back exactly the acknowledged records or
        /// refuses naming a file (and an offset); accepting the loss keeps a prefix of them.
        #[test]
        fn damage_is_refused_or_the_acknowledged_records_come_back(
            blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..60), 1..24),
            segment_bytes in 30u64..200,
            harm in harm(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut wal = Wal::open_with(dir.path(), WalSync::Interval(Duration::from_secs(3600)), false, segment_bytes).unwrap();
            for block in &blocks {
                wal.append(block).unwrap();
            }
            let end = wal.end();
            // Not flushed: a kill -9 leaves the same files.
            drop(wal);
            apply(dir.path(), end, &harm);
            match Wal::open_with(dir.path(), WalSync::EveryBlock, false, segment_bytes) {
                Ok(wal) => {
                    let got: Vec<Vec<u8>> = wal.read(wal.start(), wal.end()).unwrap().into_iter().map(|(p, _)| p).collect();
                    prop_assert_eq!(&got, &blocks, "opened after {:?}", harm);
                }
                Err(err @ WalError::Damaged { .. }) => {
                    let (file, offset) = damaged_at(&err);
                    let text = err.to_string();
                    prop_assert!(text.contains(&file) && text.contains(&format!("at byte {offset}")), "{}", text);
                }
                Err(err @ WalError::Foreign { .. }) => {
                    prop_assert!(matches!(harm, Harm::Rename { .. }), "{}", err);
                }
                Err(err) => prop_assert!(false, "{:?}: {}", harm, err),
            }
            // Accepting the loss always opens, with a run of what was acknowledged, in order.
            let wal = Wal::open_with(dir.path(), WalSync::EveryBlock, true, segment_bytes).unwrap();
            let got: Vec<Vec<u8>> = wal.read(wal.start(), wal.end()).unwrap().into_iter().map(|(p, _)| p).collect();
            prop_assert!(got.is_empty() || blocks.windows(got.len()).any(|w| w == &got[..]), "{:?}: {} of {}", harm, got.len(), blocks.len());
        }
    }
}
