//! The UDF registry: every tenant's components by name, each in numbered versions (1, 2, …)
//! with its content hash, size, deploy time and who deployed it, compiled and ready to call.
//!
//! In memory for now; the types are what a persistent store keeps (a version is
//! [`VersionInfo`] plus the component's bytes, recompiled on start through the runtime's
//! cache). Version numbers are never reused within a (tenant, name), even after removal, so a
//! job that named `text@3` never gets other code under that number.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::component::UdfComponent;
use super::config::UdfLimits;
use super::error::LoadError;
use super::guest_text;
use super::resolve::{MAX_LISTED_COMPONENTS, TenantRegistry};
use super::runtime::UdfRuntime;

/// The longest tenant or component name.
pub const MAX_NAME_LEN: usize = 64;
/// Versions kept per (tenant, name) unless set otherwise ([`Registry::with_keep`]).
pub const DEFAULT_KEEP: usize = 10;
/// The longest `deployed_by`.
pub const MAX_DEPLOYED_BY: usize = 256;

/// What the registry knows about one version of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// 1, 2, … per (tenant, name), in deploy order.
    pub version: u64,
    /// The SHA-256 of the component's bytes, hex (the same as [`UdfComponent::hash`]).
    pub hash: String,
    /// The component's size in bytes.
    pub size: u64,
    /// When it was deployed.
    pub deployed_at: SystemTime,
    /// Who (or what) deployed it: free-form, at most [`MAX_DEPLOYED_BY`] bytes, no control
    /// characters.
    pub deployed_by: String,
    /// How many holders pinned it ([`Registry::pin`]); a pinned version is neither dropped by
    /// the `keep` limit nor removable.
    pub pins: u32,
}

/// One version with its loaded component (which owns its compiled code and instance pool).
#[derive(Debug, Clone)]
pub struct RegisteredVersion {
    /// What the registry knows about it.
    pub info: VersionInfo,
    /// The component, ready to call.
    pub component: Arc<UdfComponent>,
}

/// What [`Registry::deploy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The version the bytes are now (the existing newest one when `unchanged`).
    pub version: u64,
    /// Their SHA-256, hex.
    pub hash: String,
    /// The bytes were those of the newest version already: nothing was added.
    pub unchanged: bool,
    /// Versions dropped to stay within the `keep` limit, oldest first.
    pub dropped: Vec<u64>,
}

/// A tenant or component name the registry does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} name \"{name}\" ({bytes} bytes) is not valid: names are 1 to 64 bytes of letters, digits, `_`, `-` or `.`"
)]
pub struct NameError {
    /// `tenant` or `component`.
    pub what: &'static str,
    /// The name, cut and escaped.
    pub name: String,
    /// Its length in bytes.
    pub bytes: usize,
}

/// A deploy was refused; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The tenant or component name is not valid.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// `deployed_by` is too long or holds control characters.
    #[error(
        "deployed_by \"{shown}\" ({bytes} bytes) is not accepted: at most {MAX_DEPLOYED_BY} bytes without control characters"
    )]
    BadDeployedBy {
        /// The value, cut and escaped.
        shown: String,
        /// Its length in bytes.
        bytes: usize,
    },
    /// The bytes are not a component this host can run.
    #[error("cannot deploy '{name}' for tenant '{tenant}': {source}")]
    Load {
        /// The tenant.
        tenant: String,
        /// The component name.
        name: String,
        /// Why the runtime refused it.
        source: Box<LoadError>,
    },
}

impl DeployError {
    /// What the deployer can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            DeployError::BadName(_) => "rename it: letters, digits, `_`, `-` or `.` only",
            DeployError::BadDeployedBy { .. } => {
                "give a short, plain deployed_by (a user or tool name)"
            }
            DeployError::Load { source, .. } => source.hint(),
        }
    }
}

/// A lookup found nothing; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The tenant or component name is not valid (so nothing can be stored under it).
    #[error(transparent)]
    BadName(#[from] NameError),
    /// The tenant has no component of that name.
    #[error("tenant '{tenant}' has no component '{name}'")]
    UnknownComponent {
        /// The tenant.
        tenant: String,
        /// The name asked for.
        name: String,
        /// The tenant's component names, sorted, at most [`MAX_LISTED_COMPONENTS`].
        available: Vec<String>,
        /// How many more there are.
        more: usize,
    },
    /// The component has no such version (never deployed, dropped or removed).
    #[error("component '{name}' of tenant '{tenant}' has no version {version}")]
    UnknownVersion {
        /// The tenant.
        tenant: String,
        /// The component.
        name: String,
        /// The version asked for.
        version: u64,
        /// The versions there, oldest first, at most the newest [`MAX_LISTED_COMPONENTS`].
        available: Vec<u64>,
    },
}

impl LookupError {
    /// What the caller can do about it.
    pub fn hint(&self) -> String {
        match self {
            LookupError::BadName(_) => "names are letters, digits, `_`, `-` or `.`".into(),
            LookupError::UnknownComponent {
                available, more, ..
            } => {
                if available.is_empty() {
                    "the tenant has no components yet; deploy one first".into()
                } else if *more > 0 {
                    format!(
                        "components there: {}, … and {more} more",
                        available.join(", ")
                    )
                } else {
                    format!("components there: {}", available.join(", "))
                }
            }
            LookupError::UnknownVersion { available, .. } => {
                let listed: Vec<String> = available.iter().map(u64::to_string).collect();
                format!("versions there: {}", listed.join(", "))
            }
        }
    }
}

/// A version could not be removed; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// There is no such version.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The version is pinned.
    #[error("version {version} of '{name}' (tenant '{tenant}') is pinned {pins} time(s)")]
    Pinned {
        /// The tenant.
        tenant: String,
        /// The component.
        name: String,
        /// The version.
        version: u64,
        /// How many pins hold it.
        pins: u32,
    },
}

impl RemoveError {
    /// What the caller can do about it.
    pub fn hint(&self) -> String {
        match self {
            RemoveError::Lookup(e) => e.hint(),
            RemoveError::Pinned { .. } => {
                "stop (or rebind) the jobs that pinned it first; each unpins it".into()
            }
        }
    }
}

/// One stored version.
struct Stored {
    info: VersionInfo,
    component: Arc<UdfComponent>,
}

impl Stored {
    fn registered(&self) -> RegisteredVersion {
        RegisteredVersion {
            info: self.info.clone(),
            component: self.component.clone(),
        }
    }
}

/// The versions of one (tenant, name).
#[derive(Default)]
struct Entry {
    /// The number the next deploy gets (never reused).
    next: u64,
    versions: BTreeMap<u64, Stored>,
}

impl Entry {
    fn newest(&self) -> Option<&Stored> {
        self.versions.values().next_back()
    }

    fn listed_versions(&self) -> Vec<u64> {
        let skip = self.versions.len().saturating_sub(MAX_LISTED_COMPONENTS);
        self.versions.keys().skip(skip).copied().collect()
    }

    /// Drop the oldest unpinned versions (never the newest) until at most `keep` remain.
    fn prune(&mut self, keep: usize) -> Vec<u64> {
        let mut dropped = Vec::new();
        let newest = self.versions.keys().next_back().copied();
        while self.versions.len() > keep {
            let oldest_unpinned = self
                .versions
                .iter()
                .find(|(v, s)| Some(**v) != newest && s.info.pins == 0)
                .map(|(v, _)| *v);
            let Some(version) = oldest_unpinned else {
                break;
            };
            self.versions.remove(&version);
            dropped.push(version);
        }
        dropped
    }
}

type Tenants = HashMap<String, HashMap<String, Entry>>;

/// Every tenant's components, by (tenant, name), in numbered versions. Shared by a host's jobs
/// (`Send + Sync`); a tenant never sees another's names.
pub struct Registry {
    runtime: Arc<UdfRuntime>,
    keep: usize,
    tenants: RwLock<Tenants>,
    /// Limits of each tenant's instances ([`Registry::with_tenant_limits`]); a tenant not
    /// here gets the runtime's.
    tenant_limits: HashMap<String, UdfLimits>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry compiling through `runtime`, keeping [`DEFAULT_KEEP`] versions per name.
    pub fn new(runtime: Arc<UdfRuntime>) -> Self {
        Self {
            runtime,
            keep: DEFAULT_KEEP,
            tenants: RwLock::new(HashMap::new()),
            tenant_limits: HashMap::new(),
        }
    }

    /// Give every component `tenant` deploys from now on `limits` instead of the runtime's
    /// (a shared host's per-tenant `udf_memory` and `udf_timeout` quotas). Set before the
    /// tenant's versions are deployed or restored: a loaded component keeps its limits.
    pub fn with_tenant_limits(mut self, tenant: &str, limits: UdfLimits) -> Self {
        self.tenant_limits.insert(tenant.to_string(), limits);
        self
    }

    /// The limits `tenant`'s components get.
    pub fn limits_of(&self, tenant: &str) -> &UdfLimits {
        self.tenant_limits
            .get(tenant)
            .unwrap_or(&self.runtime.config().limits)
    }

    /// Keep at most `keep` versions per name (at least 1): deploying past it drops the oldest
    /// unpinned ones.
    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    /// The versions kept per name.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// The runtime components are compiled with.
    pub fn runtime(&self) -> &Arc<UdfRuntime> {
        &self.runtime
    }

    /// `tenant`'s view, for the planner: `name` is the newest version, `name@N` version N.
    pub fn resolver<'a>(&'a self, tenant: &'a str) -> TenantRegistry<'a> {
        TenantRegistry {
            registry: self,
            tenant,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Tenants> {
        self.tenants.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tenants> {
        self.tenants.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Check, compile and store `bytes` as the next version of `name` for `tenant`.
    ///
    /// Bytes identical to the newest version are not stored again: the answer is that version
    /// with `unchanged: true`. Bytes of an older version become a new version (a rollback is a
    /// deploy). Compiling happens outside the registry's lock, so lookups go on meanwhile.
    pub fn deploy(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
        deployed_by: &str,
    ) -> Result<Deployed, DeployError> {
        check_name("tenant", tenant)?;
        check_name("component", name)?;
        if deployed_by.len() > MAX_DEPLOYED_BY || deployed_by.chars().any(char::is_control) {
            return Err(DeployError::BadDeployedBy {
                shown: guest_text::sanitize(deployed_by, MAX_DEPLOYED_BY),
                bytes: deployed_by.len(),
            });
        }
        let hash = hex::encode(Sha256::digest(bytes));
        let unchanged = |tenants: &Tenants| {
            let newest = tenants.get(tenant)?.get(name)?.newest()?;
            (newest.info.hash == hash).then(|| Deployed {
                version: newest.info.version,
                hash: hash.clone(),
                unchanged: true,
                dropped: Vec::new(),
            })
        };
        if let Some(same) = unchanged(&self.read()) {
            return Ok(same);
        }
        let component = self
            .runtime
            .load_with_limits(name, bytes, self.limits_of(tenant))
            .map_err(|source| DeployError::Load {
                tenant: tenant.to_string(),
                name: name.to_string(),
                source: Box::new(source),
            })?;
        let mut tenants = self.write();
        // The same bytes may have been deployed while this one compiled.
        if let Some(same) = unchanged(&tenants) {
            return Ok(same);
        }
        let entry = tenants
            .entry(tenant.to_string())
            .or_default()
            .entry(name.to_string())
            .or_default();
        entry.next = entry.next.max(1);
        let version = entry.next;
        entry.next += 1;
        entry.versions.insert(
            version,
            Stored {
                info: VersionInfo {
                    version,
                    hash: hash.clone(),
                    size: bytes.len() as u64,
                    deployed_at: SystemTime::now(),
                    deployed_by: deployed_by.to_string(),
                    pins: 0,
                },
                component,
            },
        );
        let dropped = entry.prune(self.keep);
        Ok(Deployed {
            version,
            hash,
            unchanged: false,
            dropped,
        })
    }

    /// The versions of `tenant`'s `name`, oldest first (none for an unknown name).
    pub fn versions(&self, tenant: &str, name: &str) -> Vec<VersionInfo> {
        self.read()
            .get(tenant)
            .and_then(|names| names.get(name))
            .map(|entry| entry.versions.values().map(|s| s.info.clone()).collect())
            .unwrap_or_default()
    }

    /// `tenant`'s component names with at least one version, sorted.
    pub fn names(&self, tenant: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .get(tenant)
            .map(|names| {
                names
                    .iter()
                    .filter(|(_, e)| !e.versions.is_empty())
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The tenants with at least one component, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut tenants: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, names)| names.values().any(|e| !e.versions.is_empty()))
            .map(|(t, _)| t.clone())
            .collect();
        tenants.sort();
        tenants
    }

    /// Version `version` of `tenant`'s `name`, or the newest when `None`.
    pub fn get(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<RegisteredVersion, LookupError> {
        self.with_version(tenant, name, version, |s| s.registered())
    }

    /// Remove one version (a version pinned by a job cannot be). Its number is not reused; a
    /// job already bound to it keeps running it (it holds the component).
    pub fn remove_version(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<VersionInfo, RemoveError> {
        self.with_version_mut(tenant, name, Some(version), |entry, version| {
            if let Some(s) = entry.versions.get(&version)
                && s.info.pins > 0
            {
                return Err(RemoveError::Pinned {
                    tenant: tenant.to_string(),
                    name: name.to_string(),
                    version,
                    pins: s.info.pins,
                });
            }
            match entry.versions.remove(&version) {
                Some(s) => Ok(s.info),
                None => Err(unknown_version(tenant, name, version, entry).into()),
            }
        })
    }

    /// Pin a version (the newest when `None`) so it is neither dropped by the `keep` limit nor
    /// removed; pins are counted, one [`unpin`](Self::unpin) each. Returns the version pinned.
    pub fn pin(&self, tenant: &str, name: &str, version: Option<u64>) -> Result<u64, LookupError> {
        self.with_version_mut(tenant, name, version, |entry, version| {
            if let Some(stored) = entry.versions.get_mut(&version) {
                stored.info.pins = stored.info.pins.saturating_add(1);
                return Ok(version);
            }
            Err(unknown_version(tenant, name, version, entry))
        })
    }

    /// Take back one pin of a version; returns the pins left. Versions past the `keep` limit
    /// are dropped at the next deploy, not now.
    pub fn unpin(&self, tenant: &str, name: &str, version: u64) -> Result<u32, LookupError> {
        self.with_version_mut(tenant, name, Some(version), |entry, version| {
            if let Some(stored) = entry.versions.get_mut(&version) {
                stored.info.pins = stored.info.pins.saturating_sub(1);
                return Ok(stored.info.pins);
            }
            Err(unknown_version(tenant, name, version, entry))
        })
    }

    fn with_version<R>(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
        f: impl FnOnce(&Stored) -> R,
    ) -> Result<R, LookupError> {
        check_name("tenant", tenant)?;
        check_name("component", name)?;
        let tenants = self.read();
        let entry = find_entry(&tenants, tenant, name)?;
        let stored = match version {
            Some(v) => entry.versions.get(&v),
            None => entry.newest(),
        };
        match stored {
            Some(s) => Ok(f(s)),
            None => Err(unknown_version(tenant, name, version.unwrap_or(0), entry)),
        }
    }

    /// Run `f` on the entry with the version (the newest when `None`) checked to be there.
    fn with_version_mut<R, E: From<LookupError>>(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
        f: impl FnOnce(&mut Entry, u64) -> Result<R, E>,
    ) -> Result<R, E> {
        check_name("tenant", tenant).map_err(LookupError::from)?;
        check_name("component", name).map_err(LookupError::from)?;
        let mut tenants = self.write();
        let found = tenants
            .get_mut(tenant)
            .and_then(|names| names.get_mut(name))
            .filter(|entry| !entry.versions.is_empty());
        let Some(entry) = found else {
            return Err(unknown_component(&tenants, tenant, name).into());
        };
        let version = match version.or_else(|| entry.versions.keys().next_back().copied()) {
            Some(v) if entry.versions.contains_key(&v) => v,
            v => return Err(unknown_version(tenant, name, v.unwrap_or(0), entry).into()),
        };
        f(entry, version)
    }
}

fn find_entry<'t>(
    tenants: &'t Tenants,
    tenant: &str,
    name: &str,
) -> Result<&'t Entry, LookupError> {
    tenants
        .get(tenant)
        .and_then(|names| names.get(name))
        .filter(|entry| !entry.versions.is_empty())
        .ok_or_else(|| unknown_component(tenants, tenant, name))
}

fn unknown_component(tenants: &Tenants, tenant: &str, name: &str) -> LookupError {
    let mut names: Vec<String> = tenants
        .get(tenant)
        .map(|names| {
            names
                .iter()
                .filter(|(_, e)| !e.versions.is_empty())
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let more = names.len().saturating_sub(MAX_LISTED_COMPONENTS);
    names.truncate(MAX_LISTED_COMPONENTS);
    LookupError::UnknownComponent {
        tenant: tenant.to_string(),
        name: name.to_string(),
        available: names,
        more,
    }
}

fn unknown_version(tenant: &str, name: &str, version: u64, entry: &Entry) -> LookupError {
    LookupError::UnknownVersion {
        tenant: tenant.to_string(),
        name: name.to_string(),
        version,
        available: entry.listed_versions(),
    }
}

/// Whether `name` is a valid tenant or component name: 1 to [`MAX_NAME_LEN`] bytes of
/// `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: guest_text::sanitize(name, MAX_NAME_LEN + 16),
            bytes: name.len(),
        })
    }
}

/// Real components for the unit tests of the registry, resolvers and slots: the bundled UDFs
/// and test guests in `dist/`, built with `cargo xtask udfs --tests` when missing.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;
    use std::sync::{Arc, OnceLock};

    use crate::udf::{RuntimeConfig, UdfRuntime};

    fn root() -> PathBuf {
        // Prefer the value `cargo test` sets at run time (see tests/src/lib.rs).
        let host = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        host.parent().map(PathBuf::from).unwrap_or(host)
    }

    /// Build the components once per test process if any is missing, under the same lock file
    /// as the end-to-end tests' build.
    fn ensure_built() {
        static BUILT: OnceLock<()> = OnceLock::new();
        BUILT.get_or_init(|| {
            let root = root();
            let present = ["dist/udfs/text.wasm", "dist/test-guests/bench.wasm"]
                .iter()
                .all(|p| root.join(p).is_file());
            if present {
                return;
            }
            std::fs::create_dir_all(root.join("dist")).unwrap();
            let lock = std::fs::File::create(root.join("dist/.components.lock")).unwrap();
            lock.lock().unwrap();
            let status = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .current_dir(&root)
            .args(["xtask", "udfs", "--tests"])
            .status()
            .unwrap();
            assert!(status.success(), "`cargo xtask udfs --tests` failed");
        });
    }

    /// The bytes of `dist/udfs/NAME.wasm`.
    pub fn udf_bytes(name: &str) -> Vec<u8> {
        ensure_built();
        std::fs::read(root().join("dist/udfs").join(format!("{name}.wasm"))).unwrap()
    }

    /// The bytes of `dist/test-guests/NAME.wasm`.
    pub fn guest_bytes(name: &str) -> Vec<u8> {
        ensure_built();
        std::fs::read(root().join("dist/test-guests").join(format!("{name}.wasm"))).unwrap()
    }

    /// One runtime for every test of the process (its compile cache makes reloading cheap).
    pub fn runtime() -> Arc<UdfRuntime> {
        static RUNTIME: OnceLock<Arc<UdfRuntime>> = OnceLock::new();
        RUNTIME
            .get_or_init(|| {
                Arc::new(
                    UdfRuntime::new(
                        RuntimeConfig::default(),
                        Arc::new(crate::metrics::Registry::default()),
                    )
                    .unwrap(),
                )
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::udf::{CallContext, ComponentError, Role, UdfResolver};

    fn registry() -> Registry {
        Registry::new(testing::runtime())
    }

    fn call(component: &Arc<UdfComponent>, function: &str, input: &str) -> Vec<String> {
        let f = component.function_for(function, Role::Transform).unwrap();
        let mut batch = Batch::empty(false);
        batch.push(None, input.as_bytes(), 0);
        let out = f.transform(&CallContext::adhoc(), &batch).unwrap();
        out.records()
            .map(|r| String::from_utf8_lossy(r.value).into_owned())
            .collect()
    }

    #[test]
    fn deploys_number_versions_and_skip_identical_bytes() {
        let r = registry();
        let text = testing::udf_bytes("text");
        let bench = testing::guest_bytes("bench");

        let v1 = r.deploy("acme", "text", &text, "alice").unwrap();
        assert_eq!((v1.version, v1.unchanged), (1, false));
        assert_eq!(v1.hash, hex::encode(Sha256::digest(&text)));

        let again = r.deploy("acme", "text", &text, "bob").unwrap();
        assert_eq!((again.version, again.unchanged), (1, true));
        assert_eq!(again.hash, v1.hash);

        let v2 = r.deploy("acme", "text", &bench, "bob").unwrap();
        assert_eq!((v2.version, v2.unchanged), (2, false));
        assert_ne!(v2.hash, v1.hash);

        // The old bytes again are a new version: a rollback is a deploy.
        let v3 = r.deploy("acme", "text", &text, "carol").unwrap();
        assert_eq!(
            (v3.version, v3.unchanged, v3.hash.as_str()),
            (3, false, v1.hash.as_str())
        );

        let versions = r.versions("acme", "text");
        let summary: Vec<(u64, &str, u64, &str)> = versions
            .iter()
            .map(|v| (v.version, v.deployed_by.as_str(), v.size, v.hash.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "alice", text.len() as u64, v1.hash.as_str()),
                (2, "bob", bench.len() as u64, v2.hash.as_str()),
                (3, "carol", text.len() as u64, v1.hash.as_str()),
            ]
        );
        assert!(versions[0].deployed_at <= versions[2].deployed_at);
        assert_eq!(r.names("acme"), vec!["text".to_string()]);
        assert_eq!(r.tenants(), vec!["acme".to_string()]);

        // get: newest, or a version; the component is the one deployed (named by the registry).
        let newest = r.get("acme", "text", None).unwrap();
        assert_eq!(newest.info.version, 3);
        assert_eq!(newest.component.name(), "text");
        assert_eq!(newest.component.hash(), v1.hash);
        let second = r.get("acme", "text", Some(2)).unwrap();
        assert_eq!(second.component.hash(), v2.hash);
        assert!(second.component.function("echo").is_ok());
        match r.get("acme", "text", Some(7)).unwrap_err() {
            LookupError::UnknownVersion {
                version, available, ..
            } => assert_eq!((version, available), (7, vec![1, 2, 3])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_input_is_refused_with_typed_errors() {
        let r = registry();
        let text = testing::udf_bytes("text");
        for bad in ["", "a b", "a/b", "a@1", "x#y", &"n".repeat(65), "é"] {
            match r.deploy("acme", bad, &text, "ci").unwrap_err() {
                DeployError::BadName(e) => assert_eq!(e.what, "component", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
            assert!(matches!(
                r.deploy(bad, "text", &text, "ci").unwrap_err(),
                DeployError::BadName(NameError { what: "tenant", .. })
            ));
        }
        assert!(valid_name(&"n".repeat(64)) && valid_name("a-b_c.1"));
        assert!(matches!(
            r.deploy("acme", "text", &text, "line\nforged").unwrap_err(),
            DeployError::BadDeployedBy { .. }
        ));
        assert!(matches!(
            r.deploy("acme", "text", &text, &"x".repeat(MAX_DEPLOYED_BY + 1))
                .unwrap_err(),
            DeployError::BadDeployedBy { .. }
        ));
        // Bytes the runtime refuses store nothing.
        let e = r
            .deploy("acme", "junk", b"not wasm at all", "ci")
            .unwrap_err();
        assert!(
            matches!(&e, DeployError::Load { source, .. } if matches!(**source, LoadError::NotWasm { .. })),
            "{e:?}"
        );
        assert_eq!(
            e.hint(),
            "rebuild it against wit/udf.wit with `cargo xtask udfs`"
        );
        assert!(r.names("acme").is_empty());
        assert!(r.versions("acme", "junk").is_empty());
    }

    #[test]
    fn tenants_never_see_each_others_components() {
        let r = registry();
        r.deploy("acme", "text", &testing::udf_bytes("text"), "a")
            .unwrap();
        r.deploy("globex", "words", &testing::guest_bytes("bench"), "g")
            .unwrap();

        assert_eq!(r.names("acme"), vec!["text".to_string()]);
        assert_eq!(r.names("globex"), vec!["words".to_string()]);
        assert!(r.versions("globex", "text").is_empty());
        match r.get("globex", "text", None).unwrap_err() {
            LookupError::UnknownComponent { available, .. } => {
                assert_eq!(available, vec!["words".to_string()])
            }
            other => panic!("{other:?}"),
        }
        assert!(r.remove_version("globex", "text", 1).is_err());
        assert!(r.pin("globex", "text", None).is_err());
        assert_eq!(r.versions("acme", "text").len(), 1);

        // Through the resolvers too: the hint lists only the tenant's own names.
        let e = r.resolver("globex").component("text").unwrap_err();
        assert_eq!(
            e.to_string(),
            "component 'text' not found: tenant 'globex' has no component of that name"
        );
        assert_eq!(e.hint(), "components there: words");
        let e = r.resolver("initech").component("text").unwrap_err();
        assert_eq!(
            e.hint(),
            "tenant 'initech' has no components yet; deploy one first"
        );
        assert_eq!(r.resolver("acme").component("text").unwrap().name(), "text");

        // The same name in two tenants is two components with their own numbering.
        let other = r
            .deploy("globex", "text", &testing::guest_bytes("bench"), "g")
            .unwrap();
        assert_eq!(other.version, 1);
        assert!(
            r.resolver("globex")
                .component("text")
                .unwrap()
                .function("echo")
                .is_ok()
        );
        assert!(
            r.resolver("acme")
                .component("text")
                .unwrap()
                .function("echo")
                .is_err()
        );
    }

    #[test]
    fn the_resolver_takes_the_newest_or_the_version_named() {
        let r = registry();
        let v1 = r
            .deploy("acme", "text", &testing::udf_bytes("text"), "a")
            .unwrap();
        let v2 = r
            .deploy("acme", "text", &testing::guest_bytes("bench"), "a")
            .unwrap();
        let tenant = r.resolver("acme");

        let newest = tenant.resolve("text").unwrap();
        assert_eq!(
            (newest.name.as_str(), newest.version, newest.pinned),
            ("text", Some(2), false)
        );
        assert_eq!(newest.component.hash(), v2.hash);
        let first = tenant.resolve("text@1").unwrap();
        assert_eq!((first.version, first.pinned), (Some(1), true));
        assert_eq!(first.component.hash(), v1.hash);
        assert_eq!(
            call(&tenant.component("text@1").unwrap(), "split_words", "to be"),
            ["to", "be"]
        );

        let e = tenant.component("text@9").unwrap_err();
        assert!(
            matches!(e, ComponentError::NoSuchVersion { version: 9, .. }),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "component 'text' has no version 9");
        assert_eq!(
            e.hint(),
            "versions of 'text' there: 1, 2; or drop `@N` for the newest"
        );
        assert!(matches!(
            tenant.component("text@zero").unwrap_err(),
            ComponentError::BadReference { .. }
        ));
        assert!(matches!(
            tenant.component("te xt").unwrap_err(),
            ComponentError::NotFound { .. }
        ));
    }

    #[test]
    fn the_keep_limit_drops_the_oldest_unpinned_versions() {
        let r = registry().with_keep(2);
        let text = testing::udf_bytes("text");
        let bench = testing::guest_bytes("bench");
        let deploy = |bytes: &[u8]| r.deploy("acme", "text", bytes, "ci").unwrap();
        let numbers = || -> Vec<u64> {
            r.versions("acme", "text")
                .iter()
                .map(|v| v.version)
                .collect()
        };

        deploy(&text);
        deploy(&bench);
        assert_eq!(numbers(), [1, 2]);
        let third = deploy(&text);
        assert_eq!((third.version, third.dropped.as_slice()), (3, &[1u64][..]));
        assert_eq!(numbers(), [2, 3]);

        // A pinned version stays past the limit, and cannot be removed.
        assert_eq!(r.pin("acme", "text", Some(2)).unwrap(), 2);
        let fourth = deploy(&bench);
        assert_eq!(fourth.dropped, [3]);
        assert_eq!(numbers(), [2, 4]);
        let fifth = deploy(&text);
        assert_eq!(fifth.dropped, [4]);
        assert_eq!(numbers(), [2, 5]);
        assert_eq!(r.versions("acme", "text")[0].pins, 1);
        match r.remove_version("acme", "text", 2).unwrap_err() {
            RemoveError::Pinned {
                version: 2,
                pins: 1,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(r.unpin("acme", "text", 2).unwrap(), 0);
        let removed = r.remove_version("acme", "text", 2).unwrap();
        assert_eq!(removed.version, 2);
        assert_eq!(numbers(), [5]);

        // Numbers are never reused, even when every version is gone.
        r.remove_version("acme", "text", 5).unwrap();
        assert!(r.names("acme").is_empty());
        assert!(matches!(
            r.get("acme", "text", None).unwrap_err(),
            LookupError::UnknownComponent { .. }
        ));
        assert_eq!(deploy(&bench).version, 6);
    }
}
