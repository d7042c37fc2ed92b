//! Checkpoints: what lets `host run` pick a job up where it stopped (Spark's `getOrCreate`).
//!
//! A job's checkpoint folder holds
//! - `metadata/metadata-<seq>.ckpt`: a **metadata checkpoint**, written when batches are sealed
//!   and when one finishes: the plan's fingerprint and stateful operators, UDF versions, source
//!   positions, the sealed batches not yet covered by a data checkpoint (with their inputs),
//!   watermarks. Each file is written to a temporary name, fsynced and renamed, and starts with
//!   a header carrying its length and CRC-32; a torn or damaged file is skipped, with a log
//!   line, for the previous good one. The last [`KEEP_METADATA`] are kept. A metadata file is
//!   read only if it is a regular file of at most [`MAX_METADATA_BYTES`] (a FIFO, a symlink, a
//!   huge file count as damaged), and its values are checked ([`Metadata::validate`]): a
//!   hostile value is refused naming the file and the field.
//! - `data/batch-<id>/`: a **data checkpoint**, a RocksDB checkpoint of the job's state
//!   after batch `id`, every `checkpoint_interval`: real copies of the files with a CRC-32 of
//!   each ([`crate::state::CHECKSUMS`]), verified on restore; the last `keep_checkpoints` are
//!   kept. Recovery restores from it when the live state is lost or damaged.
//! - `wal/<source>/`: the write-ahead logs of receiver sources ([`crate::wal`]), trimmed when a
//!   data checkpoint covers them.
//! - `state/`: the live state, unless the job names another `state_dir`.

pub mod metadata;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

pub use metadata::{
    BatchRecord, Metadata, RecordedInput, RecordedUdf, SkippedBatch, SourcePosition, StatefulOp,
};

use crate::plan::Plan;
use crate::sources::kafka::PartitionOffset;
use crate::wal::{Wal, WalError};

/// How many metadata files are kept.
pub const KEEP_METADATA: usize = 10;

/// The largest metadata file read (its size is checked before reading). Metadata grows with
/// the files a directory source has read (each path once): 256 MiB is millions of files.
pub const MAX_METADATA_BYTES: u64 = 256 << 20;

const MAGIC: &str = "sluice-checkpoint";

/// What went wrong with a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file or folder could not be read or written.
    #[error("checkpoint {path}: {what}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Metadata files exist but none reads back.
    #[error(
        "checkpoint {dir}: none of the {count} metadata files can be read (the newest: {why}); move the folder aside to start the job afresh"
    )]
    Unreadable {
        /// The metadata folder.
        dir: PathBuf,
        /// How many files there were.
        count: usize,
        /// What was wrong with the newest.
        why: String,
    },
    /// The checkpoint belongs to another job.
    #[error(
        "checkpoint {dir} belongs to job '{found}', not '{job}'; give each job its own checkpoint folder"
    )]
    OtherJob {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Its job.
        found: String,
        /// This job.
        job: String,
    },
    /// The plan changed in a way its checkpointed state cannot follow.
    #[error(
        "the job changed incompatibly since checkpoint {dir}: stateful operator '{stream}' {what}. Its state cannot be carried over: restore the operator as it was, or start afresh with a new checkpoint folder"
    )]
    Incompatible {
        /// The checkpoint folder.
        dir: PathBuf,
        /// The stream.
        stream: String,
        /// What changed.
        what: String,
    },
    /// The state could not be checkpointed or restored.
    #[error("checkpoint {path}: {message}")]
    State {
        /// Where.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// A write-ahead log could not be opened, read or trimmed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A metadata file reads back (its checksum matches) but holds a value no run writes.
    #[error(
        "checkpoint metadata {file}: field `{field}`: {why}. The file was not written by this job as it is: restore the checkpoint folder from a backup, or move it aside to start the job afresh"
    )]
    Invalid {
        /// The metadata file.
        file: PathBuf,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// The metadata says batches sealed log offsets the write-ahead log no longer holds.
    #[error(
        "write-ahead log {wal}: the checkpoint metadata {file} says batches sealed log offsets {needed_from}..{needed_to} of source '{source_name}', but the log holds {held_from}..{held_to} ({missing} bytes missing: segments deleted, the folder deleted, or the log cut short). Restore the log's segments from a backup, or run with --accept-wal-loss to go on without them (what is missing is logged and counted as lost)"
    )]
    WalBehind {
        /// The log's folder.
        wal: PathBuf,
        /// The metadata file.
        file: PathBuf,
        /// The source.
        source_name: String,
        /// First offset the metadata needs.
        needed_from: u64,
        /// End offset the metadata needs.
        needed_to: u64,
        /// What the log holds: first offset.
        held_from: u64,
        /// What the log holds: end.
        held_to: u64,
        /// Bytes of the needed range not in the log.
        missing: u64,
    },
    /// The state store has committed batches but there is no metadata to go with it.
    #[error(
        "checkpoint {dir} has no metadata (metadata/ is empty or missing), but the state in {state} has committed batch {batch}: replaying the sources from the start would count its input twice. Restore the metadata folder from a backup; or, to start the job afresh, move the checkpoint folder and {state} aside"
    )]
    NoMetadata {
        /// The checkpoint folder.
        dir: PathBuf,
        /// The state folder.
        state: PathBuf,
        /// Its last committed batch.
        batch: u64,
    },
    /// The checkpoint has data checkpoints or a trimmed log but no metadata: a start from
    /// nothing would replay what is left as new.
    #[error(
        "checkpoint {dir} has no metadata (metadata/ is empty or missing), but {what}: the job ran before. Restore the metadata folder from a backup; or, to start the job afresh, move the checkpoint folder aside"
    )]
    Orphaned {
        /// The checkpoint folder.
        dir: PathBuf,
        /// What is there.
        what: String,
    },
    /// The newest readable metadata is older than the state: it does not know batches whose
    /// state is committed (their input would be read again and counted twice).
    #[error(
        "checkpoint metadata {file} (the newest readable{damaged}) knows batches up to {known}, but the state in {state} has committed batch {committed}: resuming from it would count the input of batches {first}..={committed} twice. Restore the newer metadata files from a backup; or, to start the job afresh, move the checkpoint folder and {state} aside"
    )]
    StaleMetadata {
        /// The metadata file used.
        file: PathBuf,
        /// Newer files that could not be read, for the message.
        damaged: String,
        /// The last batch it knows (next_batch − 1).
        known: u64,
        /// The first batch it does not know.
        first: u64,
        /// The state folder.
        state: PathBuf,
        /// The state's last committed batch.
        committed: u64,
    },
    /// `--skip-batch` names a batch that cannot be skipped.
    #[error("--skip-batch {id}: {why}")]
    Skip {
        /// The batch named.
        id: u64,
        /// Why not, and which batch can be.
        why: String,
    },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { path, what, source }
}

/// A job's checkpoint folder.
#[derive(Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
    seq: u64,
    /// The metadata file the job resumed from, if any.
    loaded: Option<PathBuf>,
    /// Newer metadata files that could not be read, with why.
    damaged: Vec<String>,
}

impl CheckpointDir {
    /// Open (or create) `dir` and read its newest good metadata, if any.
    pub fn open(dir: &Path) -> Result<(CheckpointDir, Option<Metadata>), CheckpointError> {
        let meta_dir = dir.join("metadata");
        std::fs::create_dir_all(&meta_dir).map_err(io(&meta_dir, "create the folder"))?;
        std::fs::create_dir_all(dir.join("data")).map_err(io(dir, "create the data folder"))?;
        let mut files = numbered(&meta_dir, "metadata-", ".ckpt")?;
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        let seq = files.first().map_or(0, |f| f.0);
        let mut newest_problem = None;
        let mut damaged = Vec::new();
        for (n, path) in &files {
            match read_metadata(path) {
                Ok(meta) => {
                    if let Some(why) = &newest_problem {
                        tracing::warn!(checkpoint = %dir.display(), "newer metadata is damaged ({why}); recovering from {} (metadata {n}) instead", path.display());
                    }
                    return Ok((
                        CheckpointDir {
                            dir: dir.to_path_buf(),
                            seq,
                            loaded: Some(path.clone()),
                            damaged,
                        },
                        Some(meta),
                    ));
                }
                Err(why) => {
                    tracing::warn!(checkpoint = %dir.display(), "metadata file {} cannot be used: {why}", path.display());
                    newest_problem.get_or_insert(format!("{}: {why}", path.display()));
                    damaged.push(format!("{}: {why}", path.display()));
                }
            }
        }
        if let Some(why) = newest_problem {
            return Err(CheckpointError::Unreadable {
                dir: meta_dir,
                count: files.len(),
                why,
            });
        }
        Ok((
            CheckpointDir {
                dir: dir.to_path_buf(),
                seq,
                loaded: None,
                damaged,
            },
            None,
        ))
    }

    /// The checkpoint folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The metadata file the job resumed from, if any.
    pub fn loaded(&self) -> Option<&Path> {
        self.loaded.as_deref()
    }

    /// Newer metadata files that could not be read (with why), newest first.
    pub fn damaged(&self) -> &[String] {
        &self.damaged
    }

    /// Where source `name`'s write-ahead log lives.
    pub fn wal_dir(&self, source: &str) -> PathBuf {
        self.dir.join("wal").join(source)
    }

    /// Where the data checkpoint of batch `id` lives.
    pub fn data_path(&self, id: u64) -> PathBuf {
        self.dir.join("data").join(format!("batch-{id:020}"))
    }

    /// The data checkpoints there are, newest first.
    pub fn data_checkpoints(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let mut all = numbered(&self.dir.join("data"), "batch-", "")?;
        all.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(all)
    }

    /// Write `meta` atomically as the newest metadata file and drop the oldest beyond
    /// [`KEEP_METADATA`].
    pub fn write(&mut self, meta: &Metadata) -> Result<(), CheckpointError> {
        self.seq += 1;
        let meta_dir = self.dir.join("metadata");
        let path = meta_dir.join(format!("metadata-{:020}.ckpt", self.seq));
        let body = serde_json::to_vec_pretty(meta).map_err(|e| CheckpointError::State {
            path: path.clone(),
            message: format!("cannot encode the metadata: {e}"),
        })?;
        let mut data = format!(
            "{MAGIC} v{} len={} crc32={:08x}\n",
            metadata::VERSION,
            body.len(),
            crc32fast::hash(&body)
        )
        .into_bytes();
        data.extend_from_slice(&body);
        write_atomic(&path, &data)?;
        let mut files = numbered(&meta_dir, "metadata-", ".ckpt")?;
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, old) in files.iter().skip(KEEP_METADATA) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    /// Delete all but the newest `keep` data checkpoints, and what a run killed while making
    /// one left half-done (RocksDB builds a checkpoint in `<name>.tmp`, then renames it).
    pub fn prune_data(&self, keep: usize) -> Result<(), CheckpointError> {
        for (_, old) in self.data_checkpoints()?.iter().skip(keep.max(1)) {
            std::fs::remove_dir_all(old).map_err(io(old, "delete an old data checkpoint"))?;
        }
        let data = self.dir.join("data");
        for entry in std::fs::read_dir(&data)
            .map_err(io(&data, "list"))?
            .filter_map(Result::ok)
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let path = entry.path();
                std::fs::remove_dir_all(&path)
                    .map_err(io(&path, "delete a half-made data checkpoint"))?;
            }
        }
        Ok(())
    }
}

/// Files (or folders) in `dir` named `<prefix><number><suffix>`, with their numbers.
fn numbered(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(io(dir, "list"))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let n = name
                .to_str()?
                .strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect())
}

/// Write `data` to `path` so a reader sees all of it or the old file: temporary file, fsync,
/// rename, fsync of the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&temp).map_err(io(&temp, "create"))?;
    file.write_all(data).map_err(io(&temp, "write"))?;
    file.sync_all().map_err(io(&temp, "fsync"))?;
    std::fs::rename(&temp, path).map_err(io(path, "rename into place"))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync the folder"))
}

/// Read a metadata file, checking its header, length and checksum (not its values: see
/// [`Metadata::validate`]).
pub fn read_metadata(path: &Path) -> Result<Metadata, String> {
    let data =
        crate::files::read_regular_file(path, MAX_METADATA_BYTES).map_err(|e| e.to_string())?;
    let newline = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&data[..newline]).map_err(|_| "a header that is not text")?;
    let mut parts = header.split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(format!("not a Sluice checkpoint (header '{header}')"));
    }
    let version = parts.next().unwrap_or("");
    let known = version
        .strip_prefix('v')
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| (metadata::OLDEST_VERSION..=metadata::VERSION).contains(&v));
    if !known {
        return Err(format!(
            "written by another version of the format ({version}, this host reads v{} to v{})",
            metadata::OLDEST_VERSION,
            metadata::VERSION
        ));
    }
    let field = |name: &str| -> Option<&str> {
        header
            .split(' ')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    };
    let len: usize = field("len")
        .and_then(|v| v.parse().ok())
        .ok_or("no length in the header")?;
    let crc = field("crc32")
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .ok_or("no checksum in the header")?;
    let body = &data[newline + 1..];
    if body.len() != len {
        return Err(format!(
            "torn: {} bytes where the header says {len}",
            body.len()
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch: the file is damaged".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("cannot be decoded: {e}"))
}

/// Check that `plan` can carry on from the state `old` describes; returns notes worth
/// logging (UDFs with new versions, a changed plan).
pub fn check_compatible(
    dir: &Path,
    old: &Metadata,
    plan: &Plan,
) -> Result<Vec<String>, CheckpointError> {
    if old.job != *plan.name {
        return Err(CheckpointError::OtherJob {
            dir: dir.to_path_buf(),
            found: old.job.clone(),
            job: plan.name.to_string(),
        });
    }
    let now = StatefulOp::of(plan);
    for before in &old.stateful {
        let incompatible = |what: String| CheckpointError::Incompatible {
            dir: dir.to_path_buf(),
            stream: before.stream.clone(),
            what,
        };
        let Some(after) = now.iter().find(|o| o.stream == before.stream) else {
            return Err(incompatible(format!(
                "({}) is no longer in the job (removed or renamed)",
                before.op
            )));
        };
        if after.op != before.op {
            return Err(incompatible(format!(
                "was {} and is now {}",
                before.op, after.op
            )));
        }
        if after.key_codec != before.key_codec {
            return Err(incompatible(format!(
                "had keys read as {} and now as {}",
                before.key_codec.as_str(),
                after.key_codec.as_str()
            )));
        }
        if after.value_codec != before.value_codec {
            return Err(incompatible(format!(
                "had values read as {} and now as {}",
                before.value_codec.as_str(),
                after.value_codec.as_str()
            )));
        }
        let metadata::Layout::Typed(now) = &after.layout else {
            continue;
        };
        if !before.layout.fits(now) {
            return Err(incompatible(format!(
                "was '{}' and is now '{}'",
                before.layout.show(),
                after.layout.show()
            )));
        }
    }
    let mut notes = Vec::new();
    let udfs = metadata::udf_versions(plan);
    for (name, hash) in &udfs {
        match old.udfs.get(name) {
            Some(h) if h != hash => notes.push(format!(
                "component '{name}' has a new version ({} → {}): batches from now on use it",
                &h[..h.len().min(12)],
                &hash[..hash.len().min(12)]
            )),
            _ => {}
        }
    }
    if old.plan_fingerprint != metadata::fingerprint(plan) {
        notes.push(
            "the job's streams or sinks changed since the checkpoint; its state carries over"
                .into(),
        );
    }
    Ok(notes)
}

/// The live checkpoint of a running job, shared by the scheduler (which seals batches) and the
/// executor (which finishes them and takes data checkpoints).
#[derive(Debug)]
pub struct CheckpointLog {
    inner: Mutex<Inner>,
    /// The plan's source names, in order (recorded inputs are in this order).
    sources: Vec<String>,
    wals: BTreeMap<String, Arc<Mutex<Wal>>>,
    /// A data checkpoint every this many batches.
    pub interval_batches: u64,
    /// Data checkpoints kept.
    pub keep: usize,
}

#[derive(Debug)]
struct Inner {
    dir: CheckpointDir,
    meta: Metadata,
}

impl CheckpointLog {
    /// A log continuing from `meta`, with the write-ahead logs of the job's receivers.
    pub fn new(
        dir: CheckpointDir,
        meta: Metadata,
        sources: Vec<String>,
        wals: BTreeMap<String, Arc<Mutex<Wal>>>,
        interval_batches: u64,
        keep: usize,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner { dir, meta }),
            sources,
            wals,
            interval_batches: interval_batches.max(1),
            keep,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The metadata as it stands.
    pub fn metadata(&self) -> Metadata {
        self.lock().meta.clone()
    }

    /// Change the metadata as it stands (written with the next change), for recovery.
    pub fn amend(&self, change: impl FnOnce(&mut Metadata)) {
        change(&mut self.lock().meta);
    }

    /// Record sealed batches, durably, before any of them runs.
    pub fn sealed(
        &self,
        batches: Vec<BatchRecord>,
        next_batch: u64,
        last_time: i64,
    ) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        let Inner { dir, meta } = &mut *inner;
        for b in &batches {
            for (name, input) in self.sources.iter().zip(&b.inputs) {
                let position = meta.sources.entry(name.clone()).or_default();
                match input {
                    RecordedInput::Files { files } => position.files.extend(files.iter().cloned()),
                    RecordedInput::Wal { to, .. } => position.wal_sealed = Some(*to),
                    RecordedInput::Offsets { ranges } => {
                        for r in ranges {
                            match position
                                .offsets
                                .iter_mut()
                                .find(|o| o.topic == r.topic && o.partition == r.partition)
                            {
                                Some(o) => o.next = o.next.max(r.to),
                                None => position.offsets.push(PartitionOffset {
                                    topic: r.topic.clone(),
                                    partition: r.partition,
                                    next: r.to,
                                }),
                            }
                        }
                    }
                    RecordedInput::Unlogged { .. } => {}
                }
            }
        }
        meta.batches.extend(batches);
        meta.next_batch = next_batch;
        meta.last_time = Some(last_time);
        dir.write(meta)
    }

    /// Record that sealed batch `record` is passed over (`--skip-batch`): in
    /// [`Metadata::skipped`], and finished.
    pub fn skipped(&self, record: &BatchRecord) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        let Inner { dir, meta } = &mut *inner;
        if !meta.skipped.iter().any(|s| s.id == record.id) {
            meta.skipped.push(SkippedBatch {
                id: record.id,
                time: record.time,
                inputs: record.inputs.clone(),
                skipped_at: crate::sources::now_ms(),
            });
        }
        meta.finished = Some(meta.finished.map_or(record.id, |f| f.max(record.id)));
        dir.write(meta)
    }

    /// Forget the UDF versions recorded with sealed batch `id` (it failed with them): a
    /// restart runs it with the versions current then, such as a fix deployed meanwhile.
    pub fn unpin_udfs(&self, id: u64) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        let Inner { dir, meta } = &mut *inner;
        let Some(record) = meta.batches.iter_mut().find(|b| b.id == id) else {
            return Ok(());
        };
        if record.udfs.is_empty() {
            return Ok(());
        }
        record.udfs.clear();
        dir.write(meta)
    }

    /// Record that batch `id` is done (sinks written, state committed).
    pub fn finished(
        &self,
        id: u64,
        watermarks: BTreeMap<String, i64>,
    ) -> Result<(), CheckpointError> {
        let mut inner = self.lock();
        let Inner { dir, meta } = &mut *inner;
        meta.finished = Some(meta.finished.map_or(id, |f| f.max(id)));
        meta.watermarks.extend(watermarks);
        dir.write(meta)
    }

    /// Whether batch `id` is due a data checkpoint.
    pub fn due(&self, id: u64) -> bool {
        id.is_multiple_of(self.interval_batches)
    }

    /// Where a data checkpoint of batch `id` goes.
    pub fn data_path(&self, id: u64) -> PathBuf {
        self.lock().dir.data_path(id)
    }

    /// Record that the state after batch `id` is in a data checkpoint (or that the job has no
    /// state, so a finished batch needs nothing more): batches up to it are dropped from the
    /// metadata, write-ahead log segments only they needed are deleted, old data checkpoints
    /// pruned.
    pub fn covered(&self, id: u64) -> Result<(), CheckpointError> {
        let needed = {
            let mut inner = self.lock();
            let Inner { dir, meta } = &mut *inner;
            meta.data_checkpoint = Some(id);
            meta.batches.retain(|b| b.id > id);
            dir.write(meta)?;
            dir.prune_data(self.keep)?;
            // Per source, the first log offset that a retained batch or the next batch needs.
            let mut needed: BTreeMap<&str, u64> = BTreeMap::new();
            for (name, position) in &meta.sources {
                if let Some(sealed) = position.wal_sealed {
                    needed.insert(name, sealed);
                }
            }
            for b in &meta.batches {
                for (name, input) in self.sources.iter().zip(&b.inputs) {
                    if let RecordedInput::Wal { from, .. } = input {
                        let n = needed.entry(name).or_insert(*from);
                        *n = (*n).min(*from);
                    }
                }
            }
            needed
                .into_iter()
                .map(|(n, o)| (n.to_string(), o))
                .collect::<Vec<_>>()
        };
        for (name, offset) in needed {
            if let Some(wal) = self.wals.get(&name) {
                let mut wal = wal.lock().unwrap_or_else(PoisonError::into_inner);
                let deleted = wal.delete_before(offset)?;
                if deleted > 0 {
                    tracing::debug!(source = %name, "{deleted} write-ahead log segments covered by the checkpoint of batch {id} deleted");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalSync;

    #[test]
    fn metadata_reads_back_and_a_torn_newest_file_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ckpt, found) = CheckpointDir::open(dir.path()).unwrap();
        assert!(found.is_none());
        let mut meta = Metadata::fresh("j");
        ckpt.write(&meta).unwrap();
        meta.next_batch = 7;
        ckpt.write(&meta).unwrap();
        let newest = dir
            .path()
            .join("metadata/metadata-00000000000000000002.ckpt");
        let (_, found) = CheckpointDir::open(dir.path()).unwrap();
        assert_eq!(found.unwrap().next_batch, 7);
        let data = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &data[..data.len() - 3]).unwrap();
        assert!(read_metadata(&newest).unwrap_err().starts_with("torn"));
        let (mut ckpt, found) = CheckpointDir::open(dir.path()).unwrap();
        assert_eq!(found.unwrap().next_batch, 1, "the previous good file");
        for _ in 0..KEEP_METADATA + 3 {
            ckpt.write(&meta).unwrap();
        }
        let kept = std::fs::read_dir(dir.path().join("metadata"))
            .unwrap()
            .count();
        assert_eq!(kept, KEEP_METADATA);
        std::fs::write(
            dir.path()
                .join("metadata/metadata-00000000000000000099.ckpt"),
            "junk",
        )
        .unwrap();
        let (_, found) = CheckpointDir::open(dir.path()).unwrap();
        assert_eq!(found.unwrap().next_batch, 7);
    }

    #[test]
    fn a_data_checkpoint_drops_covered_batches_and_log_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (ckpt, _) = CheckpointDir::open(dir.path()).unwrap();
        let mut wal = Wal::open_with(&ckpt.wal_dir("r"), WalSync::EveryBlock, false, 100).unwrap();
        let block = [b'x'; 60];
        wal.append(&block).unwrap();
        let first = wal.append(&block).unwrap();
        let end = wal.append(&block).unwrap();
        assert_eq!(wal.start(), 0);
        let wal = Arc::new(Mutex::new(wal));
        let log = CheckpointLog::new(
            ckpt,
            Metadata::fresh("j"),
            vec!["r".into()],
            BTreeMap::from([("r".to_string(), wal.clone())]),
            2,
            1,
        );
        let batch = |id, from, to| BatchRecord {
            id,
            time: id as i64 * 100,
            udfs: Vec::new(),
            inputs: vec![RecordedInput::Wal { from, to }],
        };
        log.sealed(vec![batch(1, 0, first)], 2, 100).unwrap();
        log.finished(1, BTreeMap::new()).unwrap();
        log.sealed(vec![batch(2, first, end)], 3, 200).unwrap();
        // Batch 2 is sealed but not covered: the segment it reads stays.
        log.covered(1).unwrap();
        let meta = log.metadata();
        assert_eq!(meta.data_checkpoint, Some(1));
        assert_eq!(meta.batches, [batch(2, first, end)]);
        assert_eq!(
            wal.lock().unwrap().start(),
            first,
            "the first segment held only batch 1"
        );
        log.finished(2, BTreeMap::new()).unwrap();
        log.covered(2).unwrap();
        assert!(log.metadata().batches.is_empty());
        assert_eq!(log.metadata().sources["r"].wal_sealed, Some(end));
    }
}
