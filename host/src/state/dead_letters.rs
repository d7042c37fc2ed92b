//! The dead-letter store: the records a stream with `on_error = "dead_letter"` isolated, each
//! with its error, the UDF (name, registry version, component hash), stream, batch and
//! partition. One RocksDB in `dead-letters/` beside the job's state folder (for a served job
//! `checkpoint/dead-letters/`), apart from the state store: it is written whether or not the job
//! keeps state, does not count against the job's state limit, and is not rolled back when a
//! data checkpoint is restored (a re-run batch writes the same keys again).
//!
//! Keys are `<tenant>\0<job>\0` (escaped as in the state store), the batch time, the stream,
//! the partition and the record's position in it: a batch run again after `kill -9` writes the
//! same keys, never a second letter. Values are JSON with a `format` version.
//!
//! A process opens each folder once ([`DeadLetterStore::open`] shares the handle), so a served
//! job's executor and the API read and write the same database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::{Deserialize, Serialize};

/// The folder name, beside the state folder.
pub const DIR_NAME: &str = "dead-letters";

/// The format of a stored letter this host writes and reads.
pub const FORMAT: u32 = 1;

/// The most letters one partition of one batch may isolate: past it the call fails on
/// everything, not on a few poison records, and the batch fails instead.
pub const MAX_PER_PARTITION: usize = 1000;

/// The dead-letter folder of a job whose state folder is `state_dir`: its sibling.
pub fn dir_for(state_dir: &Path) -> PathBuf {
    state_dir
        .parent()
        .map_or_else(|| PathBuf::from(DIR_NAME), |p| p.join(DIR_NAME))
}

/// One isolated record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// [`FORMAT`].
    pub format: u32,
    /// The stream whose UDF failed on it.
    pub stream: String,
    /// The batch id.
    pub batch_id: u64,
    /// The batch time, ms since the Unix epoch.
    pub batch_time: i64,
    /// The partition.
    pub partition: u32,
    /// Its position in the partition.
    pub position: u64,
    /// Its key, if the stream is keyed.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its event time.
    pub event_time: i64,
    /// The call's error.
    pub error: String,
    /// Its kind: `guest`, `trap`, `panic`, `timeout`, `memory`, …
    pub kind: String,
    /// The UDF, `component#function`.
    pub udf: String,
    /// Its version in the registry (none for a folder of components).
    pub version: Option<u64>,
    /// The component's SHA-256, hex.
    pub hash: String,
    /// Set once a replay passed it through a version.
    pub replayed: Option<Replayed>,
}

/// A replay that passed a letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replayed {
    /// The version it passed through.
    pub version: Option<u64>,
    /// When, ms since the Unix epoch.
    pub at: i64,
}

impl DeadLetter {
    /// The record's value as text, cut to `max` characters, for tables.
    pub fn preview(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.value);
        let mut out: String = text.chars().take(max).collect();
        if text.chars().count() > max {
            out.push('…');
        }
        out.escape_debug().to_string()
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The folder could not be opened (another process holds it, permissions, damage).
    #[error(
        "cannot open the dead-letter store {}: {message}; if a job using it runs in another process, read its letters there (or stop it first)",
        path.display()
    )]
    Open {
        /// The folder.
        path: PathBuf,
        /// RocksDB's or the file system's reason.
        message: String,
    },
    /// A read or write failed.
    #[error("dead-letter store {}: {message}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A stored letter is not of a format this host reads.
    #[error(
        "dead-letter store {}: a letter of format {found} (this host reads {FORMAT}) or damaged: {message}; read it with the host version that wrote it",
        path.display()
    )]
    Format {
        /// The folder.
        path: PathBuf,
        /// The format found, 0 when unreadable.
        found: u32,
        /// Why.
        message: String,
    },
}

/// One dead-letter database, shared in the process.
pub struct DeadLetterStore {
    db: rocksdb::DB,
    dir: PathBuf,
}

impl std::fmt::Debug for DeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn open_stores() -> &'static Mutex<HashMap<PathBuf, Weak<DeadLetterStore>>> {
    static OPEN: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<DeadLetterStore>>>> =
        std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default)
}

impl DeadLetterStore {
    /// Open (creating) the store in `dir`, or the handle this process has open already.
    pub fn open(dir: &Path) -> Result<Arc<Self>, DeadLetterError> {
        let open_error = |message: String| DeadLetterError::Open {
            path: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let key = dir.canonicalize().map_err(|e| open_error(e.to_string()))?;
        let mut open = open_stores().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(store);
        }
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = rocksdb::DB::open(&options, &key).map_err(|e| open_error(e.to_string()))?;
        let store = Arc::new(Self {
            db,
            dir: dir.to_path_buf(),
        });
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(key, Arc::downgrade(&store));
        Ok(store)
    }

    /// The store in `dir` when one was ever written there.
    pub fn open_existing(dir: &Path) -> Result<Option<Arc<Self>>, DeadLetterError> {
        if !dir.join("CURRENT").is_file() {
            return Ok(None);
        }
        Self::open(dir).map(Some)
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, message: String) -> DeadLetterError {
        DeadLetterError::Io {
            path: self.dir.clone(),
            message,
        }
    }

    /// Write `letters` of `tenant`'s `job` in one synced write (a letter already there is
    /// written over: the same batch run again).
    pub fn write(
        &self,
        tenant: &str,
        job: &str,
        letters: &[DeadLetter],
    ) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut batch = rocksdb::WriteBatch::default();
        for letter in letters {
            let value = serde_json::to_vec(letter).map_err(|e| self.io(e.to_string()))?;
            batch.put(key(tenant, job, letter), value);
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.io(e.to_string()))
    }

    /// `tenant`'s `job`'s letters, oldest batch first, at most `limit`.
    pub fn list(
        &self,
        tenant: &str,
        job: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let prefix = super::key_prefix(tenant, job);
        let mut out = Vec::new();
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            &prefix,
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (k, v) = item.map_err(|e| self.io(e.to_string()))?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(self.decode(&v)?);
        }
        Ok(out)
    }

    /// Record that `letter` passed a replay.
    pub fn mark_replayed(
        &self,
        tenant: &str,
        job: &str,
        letter: &DeadLetter,
        replayed: Replayed,
    ) -> Result<(), DeadLetterError> {
        let mut letter = letter.clone();
        letter.replayed = Some(replayed);
        self.write(tenant, job, &[letter])
    }

    fn decode(&self, bytes: &[u8]) -> Result<DeadLetter, DeadLetterError> {
        #[derive(Deserialize)]
        struct Versioned {
            format: u32,
        }
        let format = serde_json::from_slice::<Versioned>(bytes).map_or(0, |v| v.format);
        if format != FORMAT {
            return Err(DeadLetterError::Format {
                path: self.dir.clone(),
                found: format,
                message: "unknown format".into(),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| DeadLetterError::Format {
            path: self.dir.clone(),
            found: format,
            message: e.to_string(),
        })
    }
}

/// `<tenant>\0<job>\0`, batch time (order-preserving), stream (length-prefixed), partition,
/// position.
fn key(tenant: &str, job: &str, letter: &DeadLetter) -> Vec<u8> {
    let mut k = super::key_prefix(tenant, job);
    k.extend_from_slice(&((letter.batch_time as u64) ^ (1 << 63)).to_be_bytes());
    let stream = letter.stream.as_bytes();
    k.extend_from_slice(&(stream.len() as u32).to_be_bytes());
    k.extend_from_slice(stream);
    k.extend_from_slice(&letter.partition.to_be_bytes());
    k.extend_from_slice(&letter.position.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(time: i64, position: u64) -> DeadLetter {
        DeadLetter {
            format: FORMAT,
            stream: "checked".into(),
            batch_id: 1,
            batch_time: time,
            partition: 1,
            position,
            key: None,
            value: b"a BAD record".to_vec(),
            event_time: time,
            error: "bad record".into(),
            kind: "guest".into(),
            udf: "poison#check".into(),
            version: Some(2),
            hash: "ab".into(),
            replayed: None,
        }
    }

    #[test]
    fn letters_are_kept_once_per_record_in_batch_order_and_per_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DeadLetterStore::open(&dir.path().join(DIR_NAME)).expect("open");
        let again = DeadLetterStore::open(&dir.path().join(DIR_NAME)).expect("shared");
        assert!(Arc::ptr_eq(&store, &again));
        store
            .write("t", "job", &[letter(2000, 5), letter(1000, 7)])
            .expect("write");
        // The same batch run again writes the same keys.
        store.write("t", "job", &[letter(1000, 7)]).expect("write");
        store.write("t", "job2", &[letter(1000, 1)]).expect("write");
        let got = store.list("t", "job", 100).expect("list");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].batch_time, 1000);
        assert_eq!(got[1].batch_time, 2000);
        assert_eq!(store.list("u", "job", 100).expect("list").len(), 0);
        store
            .mark_replayed(
                "t",
                "job",
                &got[0],
                Replayed {
                    version: Some(3),
                    at: 1,
                },
            )
            .expect("mark");
        let got = store.list("t", "job", 100).expect("list");
        assert_eq!(got.len(), 2);
        assert!(got[0].replayed.is_some());
    }
}
