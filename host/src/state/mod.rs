//! Operator state on RocksDB: one database per state directory, one column family per stateful
//! operator (`<tenant>/<job>/<stream>`), every key prefixed by the tenant and the job, and all
//! the state changes of a batch written in one atomic write batch together with the batch's id
//! and time.
//!
//! The folder's [`Layout`] is kept in it (a typed, versioned marker written on creation). A
//! folder written before tenants existed (layout 1: no marker, column families `<job>/<stream>`,
//! keys prefixed by the job) is migrated when opened: its jobs belong to tenant
//! [`LEGACY_TENANT`] (the only tenant `host run` had), their entries are copied into the new
//! column families and the switch (metadata rekeyed, marker written) is one atomic write, so a
//! kill at any point leaves a folder that opens as before or as migrated.
//!
//! Operators read committed state during a batch and stage their changes in [`StateWrites`];
//! the executor commits them once the batch is whole, so a failed or skipped batch leaves the
//! state as the previous batch left it. Sizes are counted exactly (key + value bytes of every
//! live entry) and kept beside the data, so the per-job limit holds across restarts.
//!
//! A state folder is held by one process at a time (a `SLUICE.LOCK` file, locked while the
//! store is open): a second opener gets [`StateError::Locked`]. Damage RocksDB detects (a
//! table file whose checksum does not match, a missing file) is [`StateError::Damaged`].
//! Data checkpoints ([`StateStore::checkpoint`]) are real copies of the files with a CRC-32
//! of each in [`CHECKSUMS`], so damage to the live files never reaches them, and a restore
//! ([`restore_checkpoint`]) verifies every file before it copies it back.

pub mod dead_letters;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options,
    WriteBatch, WriteOptions,
};

type Db = DBWithThreadMode<MultiThreaded>;

/// Why state could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened.
    #[error("cannot open the state directory {path}: {message}")]
    Open {
        /// The state directory.
        path: PathBuf,
        /// What RocksDB said, with a hint.
        message: String,
    },
    /// Another process (or another store in this one) holds the state folder.
    #[error(
        "cannot open the state directory {path}: another process holds its lock ({lock}): is the job already running?"
    )]
    Locked {
        /// The state directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// RocksDB found the state's files damaged (a checksum mismatch, a missing or cut table
    /// file).
    #[error(
        "the state in {path} is damaged: {message}. Restore it from the newest data checkpoint with `host run JOB.toml --restore-state` (the live folder is moved aside; the batches after the checkpoint run again), or move the folder aside to start the state afresh"
    )]
    Damaged {
        /// The state directory.
        path: PathBuf,
        /// What RocksDB said (it names the file).
        message: String,
    },
    /// A data checkpoint could not be made or restored.
    #[error("data checkpoint {path}: {message}")]
    Checkpoint {
        /// The data checkpoint folder, or the file in it.
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A read or write failed.
    #[error("state of stream '{table}' in {path}: {what} failed: {source}")]
    Io {
        /// The operator's column family.
        table: String,
        /// The state directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// An entry does not have the layout this version writes.
    #[error(
        "state of stream '{table}': an entry is malformed ({what}); was the state directory written by another program?"
    )]
    Corrupt {
        /// The operator's column family.
        table: String,
        /// What was wrong.
        what: String,
    },
    /// The folder was written by a newer Sluice, in a layout this one does not know.
    #[error(
        "the state in {path} has layout version {found}; this host reads versions 1 to {}: it was written by a newer Sluice. Run the job with that version, or move the folder aside to start the state afresh",
        Layout::CURRENT.version()
    )]
    Layout {
        /// The state directory.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The job holds more state than it may.
    #[error(
        "the job's state would grow to {size} bytes, over max_state_bytes = {limit} ({largest}); the batch is not committed. Raise max_state_bytes, shorten windows or timeouts, or reduce the key space"
    )]
    Limit {
        /// The size after the batch.
        size: u64,
        /// The limit.
        limit: u64,
        /// Which stream holds most.
        largest: String,
    },
}

/// The state database of one job.
pub struct StateStore {
    db: Arc<Db>,
    dir: PathBuf,
    tenant: Arc<str>,
    job: Arc<str>,
    /// `<tenant>\0<job>\0` (escaped): the start of every key of the job.
    prefix: Vec<u8>,
    /// Held (locked) while the store is open.
    _lock: std::fs::File,
}

/// The lock file in a state folder.
pub const LOCK_FILE: &str = "SLUICE.LOCK";

/// The file in a data checkpoint listing each of its files with size and CRC-32.
pub const CHECKSUMS: &str = "SLUICE-CHECKSUMS";

/// The largest [`CHECKSUMS`] file read (a listing, one line per table file).
pub const MAX_CHECKSUMS_BYTES: u64 = 16 << 20;

/// The tenant of every job whose state was written before tenants existed (layout 1): `host
/// run`'s tenant.
pub const LEGACY_TENANT: &str = "local";

/// How a state folder names its column families and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Before tenants: column families `<job>/<stream>`, keys and metadata prefixed by
    /// `<job>\0`; no marker.
    V1,
    /// Column families `<tenant>/<job>/<stream>`, keys and metadata prefixed by
    /// `<tenant>\0<job>\0` (names escaped, see [`column_family`]); the marker [`LAYOUT_KEY`].
    V2,
}

impl Layout {
    /// The layout this version writes.
    pub const CURRENT: Layout = Layout::V2;

    /// Its version number.
    pub fn version(self) -> u32 {
        match self {
            Layout::V1 => 1,
            Layout::V2 => 2,
        }
    }

    /// The marker value: the version, 4 bytes big-endian.
    fn marker(self) -> [u8; 4] {
        self.version().to_be_bytes()
    }
}

/// The key (in the default column family) of the [`Layout`] marker. Every key of a job holds a
/// `\0`, so no job key is this.
pub const LAYOUT_KEY: &[u8] = b"sluice.layout";

/// The key (in the default column family) listing a layout-1 folder's column families while it
/// is being migrated and until they are dropped: each name as a 4-byte big-endian length and its
/// bytes.
const LAYOUT_V1_FAMILIES: &[u8] = b"sluice.layout.v1-families";

/// Entries copied per write while migrating a layout-1 column family (bytes, about).
const MIGRATION_CHUNK_BYTES: usize = 8 << 20;

/// `name` with every byte outside `[A-Za-z0-9_.-]` written as `%XX`: names the planner accepts
/// are unchanged, and no escaped name holds `/` or `\0`, so column families and key prefixes
/// built from them are unambiguous whatever the caller passes.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The column family of a stream's state: `<tenant>/<job>/<stream>`, each part escaped.
pub fn column_family(tenant: &str, job: &str, stream: &str) -> String {
    format!("{}/{}/{}", escape(tenant), escape(job), escape(stream))
}

/// The start of every key, and of every metadata key, of a job: `<tenant>\0<job>\0`, escaped.
fn key_prefix(tenant: &str, job: &str) -> Vec<u8> {
    format!("{}\0{}\0", escape(tenant), escape(job)).into_bytes()
}

fn encode_names(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n.as_bytes());
    }
    out
}

fn decode_names(mut bytes: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let name = bytes.get(4..4 + len)?;
        out.push(String::from_utf8(name.to_vec()).ok()?);
        bytes = &bytes[4 + len..];
    }
    Some(out)
}

/// `source` as a [`StateError`]: [`StateError::Damaged`] when RocksDB says the data is corrupt,
/// else [`StateError::Io`].
fn rocks_error(
    table: String,
    path: &Path,
    what: &'static str,
    source: rocksdb::Error,
) -> StateError {
    if source.kind() == rocksdb::ErrorKind::Corruption {
        StateError::Damaged {
            path: path.to_path_buf(),
            message: format!("{what} of stream '{table}' failed: {source}"),
        }
    } else {
        StateError::Io {
            table,
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}

/// The last batch whose state was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Its id.
    pub batch: u64,
    /// Its time.
    pub time: i64,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("dir", &self.dir)
            .field("tenant", &self.tenant)
            .field("job", &self.job)
            .finish()
    }
}

impl StateStore {
    /// Open (or create) the state of `tenant`'s `job` in `dir`, with a column family for each
    /// of `streams`. A folder of layout 1 is migrated first (see [`Layout`]).
    pub fn open(dir: &Path, tenant: &str, job: &str, streams: &[&str]) -> Result<Self, StateError> {
        let open_error = |message: String| StateError::Open {
            path: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_error(format!("cannot create {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: dir.to_path_buf(),
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(open_error(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_allow_concurrent_memtable_write(false);
        let mut names: Vec<String> = Db::list_cf(&options, dir).unwrap_or_default();
        if !names.iter().any(|n| n == "default") {
            names.push("default".into());
        }
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, table_options()));
        let db = Db::open_cf_descriptors(&options, dir, descriptors).map_err(|e| {
            if e.kind() == rocksdb::ErrorKind::Corruption {
                StateError::Damaged {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                }
            } else {
                open_error(e.to_string())
            }
        })?;
        let store = Self {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            tenant: Arc::from(tenant),
            job: Arc::from(job),
            prefix: key_prefix(tenant, job),
            _lock: lock,
        };
        store.settle_layout(&names)?;
        for s in streams {
            let cf = column_family(tenant, job, s);
            if store.db.cf_handle(&cf).is_none() {
                store
                    .db
                    .create_cf(&cf, &table_options())
                    .map_err(|source| store.meta_error("create the column family", source))?;
            }
        }
        Ok(store)
    }

    /// Bring the folder to [`Layout::CURRENT`]: mark a new folder, migrate a layout-1 one (or
    /// finish a migration a kill interrupted), drop what a finished migration left.
    fn settle_layout(&self, families: &[String]) -> Result<(), StateError> {
        let corrupt = |what: String| StateError::Corrupt {
            table: "(layout)".into(),
            what,
        };
        let get = |key: &[u8]| {
            self.db
                .get(key)
                .map_err(|source| self.meta_error("read the layout", source))
        };
        let v1_families = get(LAYOUT_V1_FAMILIES)?
            .map(|v| {
                decode_names(&v).ok_or_else(|| corrupt("the list of layout-1 families".into()))
            })
            .transpose()?;
        match get(LAYOUT_KEY)? {
            Some(marker) => {
                let found = marker
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .filter(|_| marker.len() == 4)
                    .ok_or_else(|| corrupt(format!("a layout marker of {} bytes", marker.len())))?;
                if found > Layout::CURRENT.version() {
                    return Err(StateError::Layout {
                        path: self.dir.clone(),
                        found,
                    });
                }
                if found < Layout::CURRENT.version() {
                    // Layout 1 has no marker: no version of Sluice writes this one.
                    return Err(corrupt(format!("a layout marker of version {found}")));
                }
                if let Some(old) = v1_families {
                    self.drop_families(&old)?;
                }
                Ok(())
            }
            None => {
                let old: Vec<String> = match v1_families {
                    Some(old) => old,
                    None => families
                        .iter()
                        .filter(|n| *n != "default")
                        .cloned()
                        .collect(),
                };
                let has_metadata = self
                    .db
                    .iterator(IteratorMode::Start)
                    .next()
                    .transpose()
                    .map_err(|source| self.meta_error("read the layout", source))?
                    .is_some();
                if old.is_empty() && !has_metadata {
                    // A new folder (or one that never held anything).
                    return self
                        .db
                        .put(LAYOUT_KEY, Layout::CURRENT.marker())
                        .map_err(|source| self.meta_error("write the layout", source));
                }
                self.migrate_v1(&old)
            }
        }
    }

    /// Migrate a layout-1 folder whose column families are `old`: copy every entry into the
    /// column family of tenant [`LEGACY_TENANT`] (idempotent: the old families are not changed,
    /// so a kill part-way and another run copy the same entries again), then rekey the
    /// metadata and write the marker in one atomic write, then drop the old families.
    fn migrate_v1(&self, old: &[String]) -> Result<(), StateError> {
        let corrupt = |table: &str, what: String| StateError::Corrupt {
            table: table.to_string(),
            what: format!("{what} (migrating a layout-1 state folder)"),
        };
        let mut plain = WriteOptions::default();
        plain.set_sync(false);
        // Remember which families are the old ones before any new one exists.
        self.db
            .put(LAYOUT_V1_FAMILIES, encode_names(old))
            .map_err(|source| self.meta_error("migrate", source))?;
        let mut entries = 0u64;
        for name in old {
            let Some((job, stream)) = name.split_once('/') else {
                return Err(corrupt(name, "not a `<job>/<stream>` column family".into()));
            };
            let from_prefix = format!("{job}\0").into_bytes();
            let to_prefix = key_prefix(LEGACY_TENANT, job);
            let to_name = column_family(LEGACY_TENANT, job, stream);
            if self.db.cf_handle(&to_name).is_none() {
                self.db
                    .create_cf(&to_name, &table_options())
                    .map_err(|source| self.meta_error("migrate", source))?;
            }
            let from = self
                .db
                .cf_handle(name)
                .ok_or_else(|| corrupt(name, "its column family is missing".into()))?;
            let to = self
                .db
                .cf_handle(&to_name)
                .ok_or_else(|| corrupt(&to_name, "its column family is missing".into()))?;
            let mut wb = WriteBatch::default();
            for item in self.db.iterator_cf(&from, IteratorMode::Start) {
                let (key, value) =
                    item.map_err(|e| rocks_error(name.clone(), &self.dir, "migrate", e))?;
                let Some(rest) = key.strip_prefix(from_prefix.as_slice()) else {
                    return Err(corrupt(name, "a key not prefixed by its job".into()));
                };
                let mut new_key = to_prefix.clone();
                new_key.extend_from_slice(rest);
                wb.put_cf(&to, new_key, value);
                entries += 1;
                if wb.size_in_bytes() >= MIGRATION_CHUNK_BYTES {
                    self.db
                        .write_opt(std::mem::take(&mut wb), &plain)
                        .map_err(|source| self.meta_error("migrate", source))?;
                }
            }
            self.db
                .write_opt(wb, &plain)
                .map_err(|source| self.meta_error("migrate", source))?;
        }
        // The copies reach the disk before the switch names them the state.
        self.db
            .flush_wal(true)
            .map_err(|source| self.meta_error("migrate", source))?;
        // The switch: every metadata key rekeyed, and the marker, in one write.
        let mut wb = WriteBatch::default();
        for item in self.db.iterator(IteratorMode::Start) {
            let (key, value) = item.map_err(|source| self.meta_error("migrate", source))?;
            if &*key == LAYOUT_V1_FAMILIES {
                continue;
            }
            let Some(at) = key.iter().position(|&b| b == 0) else {
                return Err(corrupt("(metadata)", "a metadata key without a job".into()));
            };
            let job = String::from_utf8_lossy(&key[..at]);
            let mut new_key = key_prefix(LEGACY_TENANT, &job);
            new_key.extend_from_slice(&key[at + 1..]);
            wb.delete(&key);
            wb.put(new_key, value);
        }
        wb.put(LAYOUT_KEY, Layout::CURRENT.marker());
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.db
            .write_opt(wb, &synced)
            .map_err(|source| self.meta_error("migrate", source))?;
        tracing::info!(dir = %self.dir.display(), families = old.len(), entries, tenant = LEGACY_TENANT,
            "migrated the state folder from layout 1 (job only) to layout 2 (tenant and job)");
        self.drop_families(old)
    }

    /// Drop the layout-1 families a migration left, then forget them.
    fn drop_families(&self, old: &[String]) -> Result<(), StateError> {
        for name in old {
            if self.db.cf_handle(name).is_some() {
                self.db
                    .drop_cf(name)
                    .map_err(|source| self.meta_error("drop a layout-1 column family", source))?;
            }
        }
        self.db
            .delete(LAYOUT_V1_FAMILIES)
            .map_err(|source| self.meta_error("migrate", source))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The table of stream `stream`'s operator.
    pub fn table(&self, stream: &str) -> StateTable {
        StateTable {
            db: self.db.clone(),
            cf: Arc::from(column_family(&self.tenant, &self.job, stream)),
            stream: Arc::from(stream),
            prefix: self.prefix.clone(),
            dir: self.dir.clone(),
        }
    }

    /// The metadata key `<tenant>\0<job>\0<part>\0<part>…`.
    fn meta_key(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut key = self.prefix.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                key.push(0);
            }
            key.extend_from_slice(p);
        }
        key
    }

    fn meta_get(&self, parts: &[&[u8]]) -> Result<Option<Vec<u8>>, StateError> {
        self.db
            .get(self.meta_key(parts))
            .map_err(|source| self.meta_error("read", source))
    }

    fn meta_error(&self, what: &'static str, source: rocksdb::Error) -> StateError {
        rocks_error(
            format!("{}/{}/(metadata)", self.tenant, self.job),
            &self.dir,
            what,
            source,
        )
    }

    /// The last committed batch, if any.
    pub fn committed(&self) -> Result<Option<Committed>, StateError> {
        Ok(self.meta_get(&[b"batch"])?.and_then(|v| {
            let batch = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            let time = i64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
            Some(Committed { batch, time })
        }))
    }

    /// A number an operator keeps beside its entries (a size, a watermark), if written.
    pub fn number(&self, stream: &str, name: &str) -> Result<Option<i64>, StateError> {
        Ok(self
            .meta_get(&[name.as_bytes(), stream.as_bytes()])?
            .and_then(|v| Some(i64::from_be_bytes(v.get(..8)?.try_into().ok()?))))
    }

    /// Write `writes` and the batch marker (if given) in one atomic write.
    pub fn commit(&self, writes: StateWrites, batch: Option<Committed>) -> Result<(), StateError> {
        let mut wb = WriteBatch::default();
        let mut handles: Vec<(Arc<str>, Arc<rocksdb::BoundColumnFamily<'_>>)> = Vec::new();
        for (table, key, value) in writes.entries {
            let cf = match handles.iter().find(|(name, _)| *name == table) {
                Some((_, cf)) => cf.clone(),
                None => {
                    let cf = self
                        .db
                        .cf_handle(&table)
                        .ok_or_else(|| StateError::Corrupt {
                            table: table.to_string(),
                            what: "its column family is missing".into(),
                        })?;
                    handles.push((table.clone(), cf.clone()));
                    cf
                }
            };
            match value {
                Some(v) => wb.put_cf(&cf, key, v),
                None => wb.delete_cf(&cf, key),
            }
        }
        for (stream, name, value) in writes.numbers {
            wb.put(
                self.meta_key(&[name.as_bytes(), stream.as_bytes()]),
                value.to_be_bytes(),
            );
        }
        if let Some(batch) = batch {
            let mut marker = batch.batch.to_be_bytes().to_vec();
            marker.extend_from_slice(&batch.time.to_be_bytes());
            wb.put(self.meta_key(&[b"batch"]), marker);
        }
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db
            .write_opt(wb, &options)
            .map_err(|source| self.meta_error("commit", source))
    }

    /// Copy the committed state into `path` as a RocksDB checkpoint whose files are real
    /// copies (not hard links to the live files, so damage to those cannot reach it), with the
    /// size and CRC-32 of each in [`CHECKSUMS`]; `path` is replaced if it exists. It is built in
    /// `<path>.tmp` and renamed into place, so `path` is whole or absent.
    pub fn checkpoint(&self, path: &Path) -> Result<(), StateError> {
        let fail = |message: String| StateError::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        // An older copy of the same batch, or one a killed run left half-made in `<path>.tmp`
        // (and RocksDB's own staging folder of that, `<path>.tmp.tmp`).
        let staging = with_suffix(path, ".tmp");
        for old in [
            path.to_path_buf(),
            staging.clone(),
            with_suffix(&staging, ".tmp"),
        ] {
            if old.exists() {
                std::fs::remove_dir_all(&old)
                    .map_err(|e| fail(format!("cannot replace an older copy: {e}")))?;
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        }
        rocksdb::checkpoint::Checkpoint::new(&*self.db)
            .and_then(|c| c.create_checkpoint(&staging))
            .map_err(|source| self.meta_error("checkpoint", source))?;
        // RocksDB hard-links table files on the same filesystem: replace each link by a copy,
        // and list every file with its size and checksum.
        let mut listing = String::new();
        let mut names: Vec<_> = std::fs::read_dir(&staging)
            .map_err(|e| fail(format!("cannot list {}: {e}", staging.display())))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let file = staging.join(&name);
            let copy = with_suffix(&file, ".copy");
            let (size, crc) = copy_verified(&file, &copy, None)
                .map_err(|e| fail(format!("cannot copy {}: {e}", file.display())))?;
            std::fs::rename(&copy, &file)
                .map_err(|e| fail(format!("cannot rename {}: {e}", copy.display())))?;
            listing.push_str(&format!("{crc:08x} {size} {}\n", name.to_string_lossy()));
        }
        let sums = staging.join(CHECKSUMS);
        std::fs::File::create(&sums)
            .and_then(|mut f| {
                f.write_all(listing.as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| fail(format!("cannot write {}: {e}", sums.display())))?;
        sync_dir(&staging).map_err(|e| fail(e.to_string()))?;
        std::fs::rename(&staging, path).map_err(|e| {
            fail(format!(
                "cannot rename {} into place: {e}",
                staging.display()
            ))
        })?;
        if let Some(parent) = path.parent() {
            sync_dir(parent).map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    /// Flush memtables to disk (on a graceful stop), so a restart reads no log.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db
            .flush_wal(true)
            .and_then(|_| self.db.flush())
            .map_err(|source| self.meta_error("flush", source))
    }
}

/// `path` with `suffix` appended to its last component.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Copy the regular file `from` to a new file `to` (fsynced), streaming; returns its size and
/// CRC-32. With `expect`, `from` must have that size (checked before reading) and checksum
/// (checked before `to` is kept: on a mismatch `to` is removed).
fn copy_verified(from: &Path, to: &Path, expect: Option<(u64, u32)>) -> Result<(u64, u32), String> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if let Some((size, _)) = expect
        && meta.len() != size
    {
        return Err(format!(
            "{} bytes where the checkpoint listed {size}",
            meta.len()
        ));
    }
    let limit = expect.map_or(meta.len(), |(size, _)| size);
    let mut input = std::fs::File::open(from)
        .map_err(|e| e.to_string())?
        .take(limit + 1);
    let mut output = std::fs::File::create(to).map_err(|e| e.to_string())?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        output.write_all(&buffer[..n]).map_err(|e| e.to_string())?;
        size += n as u64;
    }
    output.sync_all().map_err(|e| e.to_string())?;
    let crc = hasher.finalize();
    if let Some((want_size, want_crc)) = expect
        && (size != want_size || crc != want_crc)
    {
        let _ = std::fs::remove_file(to);
        return Err(format!(
            "checksum mismatch ({size} bytes, CRC-32 {crc:08x}; the checkpoint listed {want_size} bytes, {want_crc:08x}): the file is damaged"
        ));
    }
    Ok((size, crc))
}

/// Copy the data checkpoint `from` into the empty folder `to`, verifying every file against
/// its [`CHECKSUMS`] listing before it is used (each a regular file of the listed size). A
/// checkpoint written before listings existed is copied as it is, with a warning. Returns how
/// many files were verified.
pub fn restore_checkpoint(from: &Path, to: &Path) -> Result<usize, StateError> {
    let fail = |path: &Path, message: String| StateError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let sums = from.join(CHECKSUMS);
    let listing = match std::fs::symlink_metadata(&sums) {
        Ok(meta) if !meta.file_type().is_file() || meta.len() > MAX_CHECKSUMS_BYTES => {
            return Err(fail(
                &sums,
                format!(
                    "not a regular file of at most {MAX_CHECKSUMS_BYTES} bytes; the data checkpoint cannot be verified"
                ),
            ));
        }
        Ok(_) => {
            let mut text = String::new();
            std::fs::File::open(&sums)
                .and_then(|f| f.take(MAX_CHECKSUMS_BYTES).read_to_string(&mut text))
                .map_err(|e| fail(&sums, e.to_string()))?;
            Some(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(&sums, e.to_string())),
    };
    let Some(listing) = listing else {
        tracing::warn!(checkpoint = %from.display(), "the data checkpoint has no {CHECKSUMS} (written by an older version): copied without verification");
        for entry in std::fs::read_dir(from)
            .map_err(|e| fail(from, e.to_string()))?
            .filter_map(Result::ok)
        {
            let file = entry.path();
            copy_verified(&file, &to.join(entry.file_name()), None).map_err(|e| fail(&file, e))?;
        }
        return Ok(0);
    };
    let mut verified = 0;
    for (n, line) in listing.lines().enumerate() {
        let mut parts = line.splitn(3, ' ');
        let (Some(crc), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(fail(
                &sums,
                format!("line {} is not `crc size name`", n + 1),
            ));
        };
        let (Ok(crc), Ok(size)) = (u32::from_str_radix(crc, 16), size.parse::<u64>()) else {
            return Err(fail(
                &sums,
                format!("line {}: a bad checksum or size", n + 1),
            ));
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(fail(&sums, format!("line {}: a bad file name", n + 1)));
        }
        let file = from.join(name);
        copy_verified(&file, &to.join(name), Some((size, crc))).map_err(|e| {
            fail(
                &file,
                format!("{e}; the data checkpoint cannot be restored: restore the file from a backup, or move the checkpoint folder aside to start the job afresh"),
            )
        })?;
        verified += 1;
    }
    Ok(verified)
}

fn table_options() -> Options {
    let mut o = Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Operators rewrite the same keys batch after batch; updated in place, the memtable holds
    // one version per key, so full scans (update_state_by_key reads every key every batch) do
    // not slow down as versions pile up.
    o.set_inplace_update_support(true);
    o.set_allow_concurrent_memtable_write(false);
    o
}

/// One operator's entries: a column family, keys prefixed by the tenant and the job.
#[derive(Clone)]
pub struct StateTable {
    db: Arc<Db>,
    cf: Arc<str>,
    stream: Arc<str>,
    prefix: Vec<u8>,
    dir: PathBuf,
}

impl std::fmt::Debug for StateTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTable").field("cf", &self.cf).finish()
    }
}

/// A key and value read from a table (the key without the tenant and job prefix).
pub type Entry = (Vec<u8>, Vec<u8>);

impl StateTable {
    /// The stream whose state this is.
    pub fn stream(&self) -> &Arc<str> {
        &self.stream
    }

    fn error(&self, what: &'static str, source: rocksdb::Error) -> StateError {
        rocks_error(self.cf.to_string(), &self.dir, what, source)
    }

    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// The values of `keys`, in order.
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let cf = self.handle()?;
        let full: Vec<Vec<u8>> = keys.iter().map(|k| self.full_key(k)).collect();
        self.db
            .batched_multi_get_cf(&cf, &full, false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|s| s.to_vec()))
                    .map_err(|e| self.error("read", e))
            })
            .collect()
    }

    /// A number kept beside the table's entries (see [`StateWrites::set_number`]).
    pub fn number(&self, name: &str) -> Result<Option<i64>, StateError> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(name.as_bytes());
        key.push(0);
        key.extend_from_slice(self.stream.as_bytes());
        let value = self.db.get(key).map_err(|e| self.error("read", e))?;
        Ok(value.and_then(|v| Some(i64::from_be_bytes(v.get(..8)?.try_into().ok()?))))
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StateError> {
        self.scan_while(prefix, |_| true)
    }

    /// Entries whose key starts with `prefix`, in key order, while `keep(key)` holds.
    pub fn scan_while(
        &self,
        prefix: &[u8],
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Entry>, StateError> {
        let cf = self.handle()?;
        let start = self.full_key(prefix);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(&cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.error("scan", e))?;
            if !k.starts_with(&start) {
                break;
            }
            let key = &k[self.prefix.len()..];
            if !keep(key) {
                break;
            }
            out.push((key.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn handle(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StateError> {
        self.db
            .cf_handle(&self.cf)
            .ok_or_else(|| StateError::Corrupt {
                table: self.cf.to_string(),
                what: "its column family is missing".into(),
            })
    }
}

/// One staged change: column family, full key, new value or removal.
type Staged = (Arc<str>, Vec<u8>, Option<Vec<u8>>);

/// The state changes of one batch, staged until the batch is whole; with the size change of
/// each table.
#[derive(Debug, Default)]
pub struct StateWrites {
    entries: Vec<Staged>,
    numbers: Vec<(Arc<str>, &'static str, i64)>,
    /// Bytes added (or, negative, freed) per stream.
    pub size_delta: Vec<(Arc<str>, i64)>,
}

impl StateWrites {
    /// Set `key` to `value`; `old` is the size of the value it replaces, if any.
    pub fn put(&mut self, table: &StateTable, key: &[u8], value: Vec<u8>, old: Option<usize>) {
        let delta = (key.len() + value.len()) as i64 - old.map_or(0, |o| (key.len() + o) as i64);
        self.add_size(table, delta);
        self.entries
            .push((table.cf.clone(), table.full_key(key), Some(value)));
    }

    /// Remove `key`, whose value had size `old`.
    pub fn delete(&mut self, table: &StateTable, key: &[u8], old: usize) {
        self.add_size(table, -((key.len() + old) as i64));
        self.entries
            .push((table.cf.clone(), table.full_key(key), None));
    }

    /// Keep `value` under `name` for the table's stream (a watermark, a flag).
    pub fn set_number(&mut self, table: &StateTable, name: &'static str, value: i64) {
        self.numbers.push((table.stream.clone(), name, value));
    }

    fn add_size(&mut self, table: &StateTable, delta: i64) {
        match self.size_delta.iter_mut().find(|(s, _)| *s == table.stream) {
            Some((_, d)) => *d += delta,
            None => self.size_delta.push((table.stream.clone(), delta)),
        }
    }

    /// Take over the changes of `other` (staged by another partition).
    pub fn append(&mut self, other: StateWrites) {
        self.entries.extend(other.entries);
        self.numbers.extend(other.numbers);
        for (stream, delta) in other.size_delta {
            match self.size_delta.iter_mut().find(|(s, _)| *s == stream) {
                Some((_, d)) => *d += delta,
                None => self.size_delta.push((stream, delta)),
            }
        }
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.numbers.is_empty()
    }
}

/// Sizes are kept under this name per stream.
pub const SIZE: &str = "size";

/// Encode an event or batch time so byte order is time order (sign bit flipped).
pub fn time_key(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`time_key`].
pub fn time_from_key(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_commit_atomically_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path(), "local", "job", &["counts"]).expect("open");
        let table = store.table("counts");
        let mut w = StateWrites::default();
        w.put(&table, b"a", b"1".to_vec(), None);
        w.put(&table, b"b", b"22".to_vec(), None);
        w.set_number(&table, SIZE, 5);
        assert_eq!(w.size_delta, vec![(Arc::from("counts"), 5)]);
        store
            .commit(
                w,
                Some(Committed {
                    batch: 3,
                    time: 3000,
                }),
            )
            .expect("commit");
        let mut w = StateWrites::default();
        w.delete(&table, b"a", 1);
        w.put(&table, b"b", b"3".to_vec(), Some(2));
        assert_eq!(w.size_delta, vec![(Arc::from("counts"), -3)]);
        store
            .commit(
                w,
                Some(Committed {
                    batch: 4,
                    time: 4000,
                }),
            )
            .expect("commit");
        drop(table);
        drop(store);

        let store = StateStore::open(dir.path(), "local", "job", &["counts"]).expect("reopen");
        let table = store.table("counts");
        assert_eq!(
            table.scan(b"").expect("scan"),
            vec![(b"b".to_vec(), b"3".to_vec())]
        );
        assert_eq!(
            table.get_many(&[b"a", b"b"]).expect("get"),
            vec![None, Some(b"3".to_vec())]
        );
        assert_eq!(
            store.committed().expect("marker"),
            Some(Committed {
                batch: 4,
                time: 4000
            })
        );
        assert_eq!(store.number("counts", SIZE).expect("size"), Some(5));
        // Another job in the same directory sees none of it.
        drop(table);
        drop(store);
        let other = StateStore::open(dir.path(), "local", "other", &["counts"]).expect("open");
        assert!(other.table("counts").scan(b"").expect("scan").is_empty());
        assert_eq!(other.committed().expect("marker"), None);
    }

    /// A copy of `tests/fixtures/state-v1/state` (see its README) in a new temporary folder.
    fn v1_fixture() -> (tempfile::TempDir, PathBuf) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/state-v1/state");
        let dir = tempfile::tempdir().expect("tempdir");
        let to = dir.path().join("state");
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(&from).expect("fixture") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
        (dir, to)
    }

    /// Every entry of a table as (key, last active time, state), the state as text.
    fn entries(table: &StateTable) -> Vec<(String, i64, String)> {
        table
            .scan(b"")
            .expect("scan")
            .into_iter()
            .map(|(k, v)| {
                let (time, state) = v.split_first_chunk::<8>().expect("an entry");
                (
                    String::from_utf8(k).expect("a text key"),
                    i64::from_be_bytes(*time),
                    String::from_utf8(state.to_vec()).expect("a text state"),
                )
            })
            .collect()
    }

    fn families(dir: &Path) -> Vec<String> {
        let mut names = Db::list_cf(&Options::default(), dir).expect("list");
        names.sort();
        names
    }

    fn layout_marker(dir: &Path) -> Option<Vec<u8>> {
        let db = Db::open_for_read_only(&Options::default(), dir, false).expect("open");
        db.get(LAYOUT_KEY).expect("read")
    }

    const FIXTURE_JOB: &str = "totals-v1";
    const T1: i64 = 1796185333000;
    const T2: i64 = 1796185333100;

    fn assert_fixture_state(store: &StateStore) {
        let row = |k: &str, t: i64, s: &str| (k.to_string(), t, s.to_string());
        assert_eq!(
            entries(&store.table("sums")),
            [
                row("a", T2, "11"),
                row("b", T1, "2"),
                row("c", T1, "3"),
                row("d", T2, "4")
            ]
        );
        assert_eq!(
            entries(&store.table("counts")),
            [
                row("a", T2, "2"),
                row("b", T1, "1"),
                row("c", T1, "1"),
                row("d", T2, "1")
            ]
        );
        assert_eq!(
            store.committed().expect("marker"),
            Some(Committed { batch: 2, time: T2 })
        );
        // Sizes are key + value bytes of the live entries: 4 keys of 1 byte, 8-byte times.
        assert_eq!(store.number("sums", SIZE).expect("size"), Some(4 + 32 + 5));
        assert_eq!(
            store.number("counts", SIZE).expect("size"),
            Some(4 + 32 + 4)
        );
    }

    #[test]
    fn a_layout_1_folder_is_migrated_to_carry_the_tenant() {
        let (_tmp, dir) = v1_fixture();
        assert_eq!(
            families(&dir),
            ["default", "totals-v1/counts", "totals-v1/sums"]
        );
        assert_eq!(layout_marker(&dir), None, "the fixture predates the marker");
        let store = StateStore::open(&dir, LEGACY_TENANT, FIXTURE_JOB, &["sums", "counts"])
            .expect("open layout 1");
        assert_fixture_state(&store);
        drop(store);
        assert_eq!(
            families(&dir),
            ["default", "local/totals-v1/counts", "local/totals-v1/sums"],
            "the layout-1 families are dropped"
        );
        assert_eq!(layout_marker(&dir), Some(2u32.to_be_bytes().to_vec()));
        // Opened again, it is read as layout 2 and nothing moves.
        let store = StateStore::open(&dir, LEGACY_TENANT, FIXTURE_JOB, &["sums", "counts"])
            .expect("reopen");
        assert_fixture_state(&store);
        drop(store);
        // The job under another tenant is another job: it starts empty.
        let other = StateStore::open(&dir, "acme", FIXTURE_JOB, &["sums"]).expect("open");
        assert!(other.table("sums").scan(b"").expect("scan").is_empty());
        assert_eq!(other.committed().expect("marker"), None);
        assert_eq!(other.number("sums", SIZE).expect("size"), None);
    }

    #[test]
    fn a_migration_cut_short_by_a_kill_is_finished_on_the_next_open() {
        // Cut after copying part of one family: the list of old families is written and a new
        // family holds one of the copied entries, no marker yet.
        let (_tmp, dir) = v1_fixture();
        {
            let mut options = Options::default();
            options.create_missing_column_families(true);
            let names = [
                "default",
                "totals-v1/counts",
                "totals-v1/sums",
                "local/totals-v1/sums",
            ];
            let db = Db::open_cf(&options, &dir, names).expect("open raw");
            let old = ["totals-v1/counts".to_string(), "totals-v1/sums".to_string()];
            db.put(LAYOUT_V1_FAMILIES, encode_names(&old)).expect("put");
            let from = db.cf_handle("totals-v1/sums").expect("old family");
            let first = db
                .get_cf(&from, b"totals-v1\0a")
                .expect("read")
                .expect("the fixture's entry a");
            let to = db.cf_handle("local/totals-v1/sums").expect("new family");
            db.put_cf(&to, b"local\0totals-v1\0a", first).expect("put");
        }
        let store =
            StateStore::open(&dir, LEGACY_TENANT, FIXTURE_JOB, &["sums", "counts"]).expect("open");
        assert_fixture_state(&store);
        drop(store);
        assert_eq!(
            families(&dir),
            ["default", "local/totals-v1/counts", "local/totals-v1/sums"]
        );

        // Cut after the switch, before the old families were dropped: they are dropped now.
        {
            let names = families(&dir);
            let mut options = Options::default();
            options.create_missing_column_families(true);
            let mut with_old = names.clone();
            with_old.push("totals-v1/sums".into());
            let db = Db::open_cf(&options, &dir, &with_old).expect("open raw");
            db.put(LAYOUT_V1_FAMILIES, encode_names(&["totals-v1/sums".into()]))
                .expect("put");
        }
        let store =
            StateStore::open(&dir, LEGACY_TENANT, FIXTURE_JOB, &["sums", "counts"]).expect("open");
        assert_fixture_state(&store);
        assert_eq!(store.db.get(LAYOUT_V1_FAMILIES).expect("read"), None);
        drop(store);
        assert_eq!(
            families(&dir),
            ["default", "local/totals-v1/counts", "local/totals-v1/sums"]
        );
    }

    #[test]
    fn a_new_folder_is_marked_and_a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(StateStore::open(dir.path(), "t", "j", &["s"]).expect("open"));
        assert_eq!(families(dir.path()), ["default", "t/j/s"]);
        assert_eq!(layout_marker(dir.path()), Some(2u32.to_be_bytes().to_vec()));
        {
            let db = Db::open_cf(&Options::default(), dir.path(), ["default", "t/j/s"])
                .expect("open raw");
            db.put(LAYOUT_KEY, 3u32.to_be_bytes()).expect("put");
        }
        let err = StateStore::open(dir.path(), "t", "j", &["s"]).expect_err("newer");
        assert!(matches!(err, StateError::Layout { found: 3, .. }), "{err}");
        assert!(err.to_string().contains("newer Sluice"), "{err}");
    }

    #[test]
    fn tenants_and_jobs_are_kept_apart_whatever_their_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Without escaping, these pairs would share a family or a key prefix.
        let owners = [
            ("a/b", "c"),
            ("a", "b/c"),
            ("a\0b", "c"),
            ("a", "b\0c"),
            ("a%2Fb", "c"),
        ];
        for (n, (tenant, job)) in owners.iter().enumerate() {
            let store = StateStore::open(dir.path(), tenant, job, &["s"]).expect("open");
            let table = store.table("s");
            let mut w = StateWrites::default();
            w.put(&table, b"k", vec![n as u8], None);
            w.set_number(&table, SIZE, n as i64);
            store
                .commit(
                    w,
                    Some(Committed {
                        batch: n as u64,
                        time: 0,
                    }),
                )
                .expect("commit");
        }
        for (n, (tenant, job)) in owners.iter().enumerate() {
            let store = StateStore::open(dir.path(), tenant, job, &["s"]).expect("open");
            assert_eq!(
                store.table("s").scan(b"").expect("scan"),
                [(b"k".to_vec(), vec![n as u8])],
                "{tenant:?} {job:?}"
            );
            assert_eq!(store.number("s", SIZE).expect("size"), Some(n as i64));
            assert_eq!(
                store.committed().expect("marker").map(|c| c.batch),
                Some(n as u64)
            );
        }
        assert_eq!(column_family("a/b", "c", "s"), "a%2Fb/c/s");
        assert_eq!(column_family("a%2Fb", "c", "s"), "a%252Fb/c/s");
        assert_eq!(
            column_family("local", "job-1.x_y", "s"),
            "local/job-1.x_y/s"
        );
    }

    #[test]
    fn time_keys_sort_in_time_order() {
        let mut times = [5i64, -3, 0, i64::MIN, i64::MAX, 1_700_000_000_000];
        let mut keys: Vec<[u8; 8]> = times.iter().map(|&t| time_key(t)).collect();
        keys.sort();
        times.sort();
        let back: Vec<i64> = keys.iter().filter_map(|k| time_from_key(k)).collect();
        assert_eq!(back, times);
    }

    #[test]
    fn a_second_opener_is_told_the_job_may_be_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = StateStore::open(dir.path(), "local", "job", &[]).expect("open");
        let err = StateStore::open(dir.path(), "local", "job", &[]).expect_err("locked");
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("already running"), "{err}");
    }

    #[test]
    fn a_data_checkpoint_is_a_verified_copy_that_damage_to_the_live_files_does_not_reach() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        let store = StateStore::open(&live, "local", "job", &["counts"]).expect("open");
        let table = store.table("counts");
        let mut w = StateWrites::default();
        for i in 0..1000u32 {
            w.put(&table, &i.to_be_bytes(), vec![7; 100], None);
        }
        store
            .commit(w, Some(Committed { batch: 1, time: 1 }))
            .expect("commit");
        store.flush().expect("flush");
        let ckpt = dir.path().join("data/batch-1");
        store.checkpoint(&ckpt).expect("checkpoint");
        assert!(ckpt.join(CHECKSUMS).exists());
        let ssts: Vec<PathBuf> = std::fs::read_dir(&ckpt)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sst"))
            .collect();
        assert!(!ssts.is_empty(), "the flush made a table file");
        for sst in &ssts {
            assert_eq!(
                std::fs::metadata(sst).expect("stat").nlink(),
                1,
                "a copy, not a link"
            );
        }
        drop(table);
        drop(store);
        // Restored: every file verified.
        let back = dir.path().join("back");
        std::fs::create_dir_all(&back).expect("mkdir");
        assert!(restore_checkpoint(&ckpt, &back).expect("restore") >= ssts.len());
        let store = StateStore::open(&back, "local", "job", &["counts"]).expect("open restored");
        assert_eq!(store.table("counts").scan(b"").expect("scan").len(), 1000);
        drop(store);
        // A damaged file in the checkpoint is refused, naming it.
        let mut data = std::fs::read(&ssts[0]).expect("read");
        let middle = data.len() / 2;
        data[middle] ^= 0xff;
        std::fs::write(&ssts[0], &data).expect("damage");
        let again = dir.path().join("again");
        std::fs::create_dir_all(&again).expect("mkdir");
        let err = restore_checkpoint(&ckpt, &again).expect_err("damaged");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(
            err.to_string().contains(&*ssts[0].to_string_lossy()),
            "{err}"
        );
    }
}
