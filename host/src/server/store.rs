//! The persistent UDF registry: a RocksDB in `<data-dir>/registry/`.
//!
//! Layout (format 1):
//! - column family `components`: the component's bytes, keyed by their SHA-256 (hex), shared by
//!   every version (of any tenant) with those bytes;
//! - column family `versions`: one [`VersionRecord`] (JSON, with a `format` field) per version,
//!   keyed `tenant \0 name \0 version` (the version as 8 big-endian bytes, so a prefix scan
//!   lists a name's versions in order);
//! - the default column family: `format` → the layout's version, checked on open.
//!
//! A deploy is one synced `WriteBatch` (bytes, record, the records of versions it drops and the
//! bytes no record refers to any more), so a `kill -9` leaves either all of it or none.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options,
    WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};

type Db = DBWithThreadMode<MultiThreaded>;

/// The version of the store's layout.
pub const STORE_FORMAT: u32 = 1;
/// The version of [`VersionRecord`]'s JSON.
pub const RECORD_FORMAT: u32 = 1;

const CF_COMPONENTS: &str = "components";
const CF_VERSIONS: &str = "versions";
const FORMAT_KEY: &[u8] = b"format";

/// One stored version of a UDF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    /// The record's format, [`RECORD_FORMAT`].
    pub format: u32,
    /// The tenant.
    pub tenant: String,
    /// The UDF's name.
    pub name: String,
    /// The version number.
    pub version: u64,
    /// The SHA-256 of the component's bytes, hex.
    pub sha256: String,
    /// The component's size in bytes.
    pub size: u64,
    /// When it was deployed, in milliseconds since the Unix epoch.
    pub deployed_at_ms: u64,
    /// Who deployed it.
    pub deployed_by: String,
}

impl VersionRecord {
    /// When it was deployed.
    pub fn deployed_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.deployed_at_ms)
    }
}

/// The registry store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error(
        "the UDF registry store in {path} failed {what}: {source}; check the disk and the data directory (--data-dir)"
    )]
    Db {
        /// The store's folder.
        path: PathBuf,
        /// What it was doing.
        what: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The store holds what this host cannot read.
    #[error("the UDF registry store in {path} is not readable: {message}")]
    Format {
        /// The store's folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The persistent registry. `Send + Sync`.
pub struct RegistryStore {
    db: Db,
    path: PathBuf,
}

impl std::fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn version_key(tenant: &str, name: &str, version: u64) -> Vec<u8> {
    let mut key = name_prefix(tenant, name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn name_prefix(tenant: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + name.len() + 10);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

impl RegistryStore {
    /// Open (or create) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db_err = |what, source| StoreError::Db {
            path: path.to_path_buf(),
            what,
            source,
        };
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cfs = [CF_COMPONENTS, CF_VERSIONS]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db =
            Db::open_cf_descriptors(&options, path, cfs).map_err(|e| db_err("opening it", e))?;
        let store = Self {
            db,
            path: path.to_path_buf(),
        };
        match store
            .db
            .get(FORMAT_KEY)
            .map_err(|e| db_err("reading its format", e))?
        {
            None => store
                .db
                .put_opt(FORMAT_KEY, STORE_FORMAT.to_string(), &synced())
                .map_err(|e| db_err("writing its format", e))?,
            Some(v) if v == STORE_FORMAT.to_string().as_bytes() => {}
            Some(v) => {
                return Err(StoreError::Format {
                    path: path.to_path_buf(),
                    message: format!(
                        "its format is {:?}, this host reads format {STORE_FORMAT}; run the host version that wrote it",
                        String::from_utf8_lossy(&v)
                    ),
                });
            }
        }
        Ok(store)
    }

    fn db_err(&self, what: &'static str, source: rocksdb::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn format_err(&self, message: String) -> StoreError {
        StoreError::Format {
            path: self.path.clone(),
            message,
        }
    }

    fn cf(
        &self,
        name: &'static str,
    ) -> Result<std::sync::Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.format_err(format!("its column family `{name}` is missing")))
    }

    /// Every version record, by tenant, name and version.
    pub fn all_versions(&self) -> Result<Vec<VersionRecord>, StoreError> {
        self.scan(&[])
    }

    /// The versions of `tenant`'s `name`, oldest first.
    pub fn versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>, StoreError> {
        self.scan(&name_prefix(tenant, name))
    }

    /// The versions of every name of `tenant`.
    pub fn tenant_versions(&self, tenant: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let mut prefix = tenant.as_bytes().to_vec();
        prefix.push(0);
        self.scan(&prefix)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<VersionRecord>, StoreError> {
        let cf = self.cf(CF_VERSIONS)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(&cf, IteratorMode::From(prefix, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| self.db_err("listing versions", e))?;
            if !key.starts_with(prefix) {
                break;
            }
            let record: VersionRecord = serde_json::from_slice(&value).map_err(|e| {
                self.format_err(format!(
                    "a version record is not valid ({e}); restore the data directory from a backup"
                ))
            })?;
            if record.format != RECORD_FORMAT {
                return Err(self.format_err(format!(
                    "a version record has format {}, this host reads format {RECORD_FORMAT}",
                    record.format
                )));
            }
            out.push(record);
        }
        Ok(out)
    }

    /// The bytes of the component with SHA-256 `sha256`.
    pub fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.cf(CF_COMPONENTS)?;
        self.db
            .get_cf(&cf, sha256.as_bytes())
            .map_err(|e| self.db_err("reading a component", e))
    }

    /// Store a new version and its bytes and drop the versions `dropped` of the same name, in
    /// one synced write; bytes no version refers to any more are deleted with it.
    pub fn commit_deploy(
        &self,
        record: &VersionRecord,
        bytes: &[u8],
        dropped: &[u64],
    ) -> Result<(), StoreError> {
        let components = self.cf(CF_COMPONENTS)?;
        let versions = self.cf(CF_VERSIONS)?;
        let mut batch = WriteBatch::default();
        let value = serde_json::to_vec(record)
            .map_err(|e| self.format_err(format!("cannot encode a version record: {e}")))?;
        batch.put_cf(&components, record.sha256.as_bytes(), bytes);
        batch.put_cf(
            &versions,
            version_key(&record.tenant, &record.name, record.version),
            value,
        );
        if !dropped.is_empty() {
            let all = self.all_versions()?;
            let dropped_records: Vec<&VersionRecord> = all
                .iter()
                .filter(|r| {
                    r.tenant == record.tenant
                        && r.name == record.name
                        && dropped.contains(&r.version)
                })
                .collect();
            for r in &dropped_records {
                batch.delete_cf(&versions, version_key(&r.tenant, &r.name, r.version));
                let still_used = r.sha256 == record.sha256
                    || all.iter().any(|o| {
                        o.sha256 == r.sha256
                            && !(o.tenant == r.tenant
                                && o.name == r.name
                                && dropped.contains(&o.version))
                    });
                if !still_used {
                    batch.delete_cf(&components, r.sha256.as_bytes());
                }
            }
        }
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| self.db_err("storing a deploy", e))
    }
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str, name: &str, version: u64, sha: &str) -> VersionRecord {
        VersionRecord {
            format: RECORD_FORMAT,
            tenant: tenant.into(),
            name: name.into(),
            version,
            sha256: sha.into(),
            size: 3,
            deployed_at_ms: 1,
            deployed_by: "t".into(),
        }
    }

    #[test]
    fn deploys_survive_reopening_and_drops_free_unused_bytes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RegistryStore::open(dir.path()).unwrap();
            s.commit_deploy(&record("a", "x", 1, "h1"), b"one", &[])
                .unwrap();
            s.commit_deploy(&record("a", "x", 2, "h2"), b"two", &[])
                .unwrap();
            s.commit_deploy(&record("b", "x", 1, "h1"), b"one", &[])
                .unwrap();
            s.commit_deploy(&record("a", "x10", 1, "h3"), b"three", &[])
                .unwrap();
        }
        let s = RegistryStore::open(dir.path()).unwrap();
        let versions: Vec<u64> = s
            .versions("a", "x")
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, [1, 2]);
        assert_eq!(s.tenant_versions("a").unwrap().len(), 3);
        assert_eq!(s.all_versions().unwrap().len(), 4);
        // Dropping a:x@1 keeps h1 (b:x@1 uses it); dropping a:x@2 frees h2.
        s.commit_deploy(&record("a", "x", 3, "h4"), b"four", &[1, 2])
            .unwrap();
        assert_eq!(s.component("h1").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(s.component("h2").unwrap(), None);
        let versions: Vec<u64> = s
            .versions("a", "x")
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, [3]);
    }
}
