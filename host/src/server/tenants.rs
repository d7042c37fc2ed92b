//! Tenants: who may call the host's API, with which token, under which quotas.
//!
//! With no configuration the host has one tenant, `default`, whose random token is written to
//! `<data-dir>/default.token` (mode 0600) on first start and reused after. A config file
//! (`host serve --config host.toml`) declares the tenants instead:
//!
//! ```toml
//! [[tenants]]
//! name = "acme"
//! token_sha256 = "…64 hex digits: the SHA-256 of the token (`host hash-token`)…"
//! [tenants.quotas]            # every field optional; the defaults below
//! max_jobs = 16
//! udf_memory = "256MiB"
//! udf_timeout = "10s"
//! max_state_bytes = "10GiB"
//! max_component_bytes = "64MiB"
//! versions_kept = 10
//! max_compiles = 1
//! api_rate = "50/s"
//! api_burst = 100
//! deploy_rate = "20/min"
//! deploy_burst = 10
//! max_ingest_rate = "64MiB/s"
//!
//! [host]                      # optional: settings of the host as a whole
//! compile_slots = 1           # compiles at once over all tenants (default cores − 1, ≥ 1)
//! ```
//!
//! `udf_memory` and `udf_timeout` are the limits of every instance of the tenant's UDFs
//! (`udf_memory` capped at the host's `--udf-memory`, which sizes the engine's memory pool);
//! the rates are enforced by [`super::limits`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::limits::Rate;
use crate::config::ByteSize;
use crate::udf::{UdfLimits, valid_name};

/// The tenant a host without a config file has.
pub const DEFAULT_TENANT: &str = "default";
/// The file in the data directory holding the default tenant's token.
pub const DEFAULT_TOKEN_FILE: &str = "default.token";
/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What one tenant may use. Every field has a default, so `[tenants.quotas]` may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// Jobs the tenant may have at once (default 16).
    pub max_jobs: u32,
    /// Memory one instance of the tenant's UDFs may grow to (default `256MiB`).
    pub udf_memory: ByteSize,
    /// CPU time one call of the tenant's UDFs may take (default `10s`).
    #[serde(with = "humantime_serde")]
    pub udf_timeout: Duration,
    /// State the tenant's jobs may keep, all together (default `10GiB`).
    pub max_state_bytes: ByteSize,
    /// The largest component the tenant may deploy (default `64MiB`); a larger upload is
    /// refused with 413.
    pub max_component_bytes: ByteSize,
    /// Versions kept per UDF name (default 10, at least 1): a deploy past it drops the oldest
    /// version no job pinned (never the newest).
    pub versions_kept: u32,
    /// Compiles of the tenant's uploads at once (default 1, at least 1); more wait their turn.
    pub max_compiles: u32,
    /// API calls per period, ingest aside (default `50/s`); past it 429 with `Retry-After`.
    pub api_rate: Rate,
    /// API calls that may come at once before `api_rate` applies (default 100).
    pub api_burst: u64,
    /// Uploads and rollbacks per period (default `20/min`); past it 429 with `Retry-After`.
    pub deploy_rate: Rate,
    /// Uploads that may come at once before `deploy_rate` applies (default 10).
    pub deploy_burst: u64,
    /// Bytes per period of records posted to the tenant's jobs' ingest routes (default
    /// `64MiB/s`, with a burst of one second's worth); past it 429 with `Retry-After`.
    pub max_ingest_rate: Rate,
}

impl Quotas {
    /// The limits of the tenant's UDF instances: `base` (the host's) with `udf_memory` (at most
    /// `base.memory`, the engine's pool size) and `udf_timeout`.
    pub fn udf_limits(&self, base: &UdfLimits) -> UdfLimits {
        UdfLimits {
            memory: self.udf_memory.min(base.memory),
            call_timeout: self.udf_timeout,
            ..base.clone()
        }
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_jobs: 16,
            udf_memory: ByteSize::mib(256),
            udf_timeout: Duration::from_secs(10),
            max_state_bytes: ByteSize::gib(10),
            max_component_bytes: ByteSize::mib(64),
            versions_kept: 10,
            max_compiles: 1,
            api_rate: Rate::per_second(50),
            api_burst: 100,
            deploy_rate: Rate::per_minute(20),
            deploy_burst: 10,
            max_ingest_rate: Rate::per_second(64 << 20),
        }
    }
}

/// One tenant as a config file declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's name: 1 to 64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// The SHA-256 of the tenant's bearer token, 64 hex digits (`host hash-token` prints it).
    pub token_sha256: String,
    /// Its quotas.
    #[serde(default)]
    pub quotas: Quotas,
}

/// The config file of `host serve --config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The tenants; at least one.
    pub tenants: Vec<TenantConfig>,
    /// Settings of the host as a whole.
    #[serde(default)]
    pub host: HostSettings,
}

/// `[host]` of a config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// Compiles at once over all tenants (default cores − 1, at least 1).
    pub compile_slots: Option<usize>,
}

/// One tenant the host knows.
#[derive(Debug, Clone)]
pub struct TenantInfo {
    /// Its name.
    pub name: String,
    /// The SHA-256 of its token.
    pub token_sha256: [u8; 32],
    /// Its quotas.
    pub quotas: Quotas,
}

/// Every tenant of a host, and where the default tenant's token is (when there is one).
#[derive(Debug, Clone)]
pub struct Tenants {
    tenants: Vec<TenantInfo>,
    /// Where the default tenant's token was written (no config file), for hints.
    pub token_file: Option<PathBuf>,
    /// Compiles at once over all tenants (`[host] compile_slots`).
    pub compile_slots: usize,
}

/// The tenants could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}: {source}; check the path given to --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: crate::files::FileError,
    },
    /// The config file is not valid.
    #[error("the config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, where.
        message: String,
    },
    /// The default token file could not be read or written.
    #[error(
        "cannot use the token file {path}: {source}; check the data directory's permissions (--data-dir)"
    )]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file holds no token.
    #[error(
        "the token file {path} does not hold a token (64 hex digits); delete it and restart to make a new one"
    )]
    BadTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// No random bytes for a token.
    #[error("cannot read random bytes for a token from /dev/urandom: {0}")]
    Random(std::io::Error),
}

impl Tenants {
    /// The tenants of a config file (`--config`).
    pub fn from_config(path: &Path) -> Result<Self, TenantsError> {
        let bytes = crate::files::read_regular_file(path, MAX_CONFIG_BYTES).map_err(|source| {
            TenantsError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|_| TenantsError::Parse {
            path: path.to_path_buf(),
            message: "it is not UTF-8 text".into(),
        })?;
        Self::parse(path, &text)
    }

    /// The tenants of config text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, TenantsError> {
        let bad = |message: String| TenantsError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let config: HostConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if config.tenants.is_empty() {
            return Err(bad("no [[tenants]]: declare at least one".into()));
        }
        let mut tenants: Vec<TenantInfo> = Vec::new();
        for t in config.tenants {
            if !valid_name(&t.name) {
                return Err(bad(format!(
                    "tenant name {:?} is not valid: 1 to 64 letters, digits, `_`, `-` or `.`",
                    crate::udf::guest_text::sanitize(&t.name, 80)
                )));
            }
            if tenants.iter().any(|o| o.name == t.name) {
                return Err(bad(format!("tenant {:?} is declared twice", t.name)));
            }
            let token_sha256 = parse_hash(&t.token_sha256).ok_or_else(|| {
                bad(format!(
                    "token_sha256 of tenant {:?} is not 64 hex digits; `host hash-token` prints the hash of a token",
                    t.name
                ))
            })?;
            if tenants.iter().any(|o| o.token_sha256 == token_sha256) {
                return Err(bad(format!(
                    "tenant {:?} has the same token as another tenant; give each its own",
                    t.name
                )));
            }
            let mut quotas = t.quotas;
            quotas.versions_kept = quotas.versions_kept.max(1);
            quotas.max_compiles = quotas.max_compiles.max(1);
            tenants.push(TenantInfo {
                name: t.name,
                token_sha256,
                quotas,
            });
        }
        Ok(Self {
            tenants,
            token_file: None,
            compile_slots: config
                .host
                .compile_slots
                .unwrap_or_else(super::limits::default_compile_slots)
                .max(1),
        })
    }

    /// The `default` tenant alone, its token read from `<data_dir>/default.token`, or made and
    /// written there (mode 0600) when the file is not there yet. Returns whether it was made.
    pub fn default_in(data_dir: &Path) -> Result<(Self, bool), TenantsError> {
        let path = data_dir.join(DEFAULT_TOKEN_FILE);
        let io = |source| TenantsError::TokenFile {
            path: path.clone(),
            source,
        };
        let (token, created) = match std::fs::read_to_string(&path) {
            Ok(text) => (text.trim().to_string(), false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = random_token()?;
                write_private(&path, token.as_bytes()).map_err(io)?;
                (token, true)
            }
            Err(e) => return Err(io(e)),
        };
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TenantsError::BadTokenFile { path });
        }
        let tenants = vec![TenantInfo {
            name: DEFAULT_TENANT.to_string(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            quotas: Quotas::default(),
        }];
        Ok((
            Self {
                tenants,
                token_file: Some(path),
                compile_slots: super::limits::default_compile_slots(),
            },
            created,
        ))
    }

    /// The tenant named `name`.
    pub fn get(&self, name: &str) -> Option<&TenantInfo> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// Every tenant, in declaration order.
    pub fn all(&self) -> &[TenantInfo] {
        &self.tenants
    }

    /// The tenant whose token is `token`: every tenant's hash is compared, each in constant
    /// time, so the answer's timing tells nothing about any token.
    pub fn authenticate(&self, token: &str) -> Option<&TenantInfo> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for t in &self.tenants {
            if constant_time_eq(&hash, &t.token_sha256) {
                found = Some(t);
            }
        }
        found
    }
}

/// The SHA-256 of `token`, hex: what a config file's `token_sha256` holds.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn random_token() -> Result<String, TenantsError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(TenantsError::Random)?;
    Ok(hex::encode(bytes))
}

/// Write `bytes` to `path` with mode 0600, atomically (a temporary file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{DEFAULT_TOKEN_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_parsed_checked_and_authenticates_by_hash() {
        let path = Path::new("host.toml");
        let text = format!(
            "[[tenants]]\nname = \"acme\"\ntoken_sha256 = \"{}\"\n[tenants.quotas]\nmax_component_bytes = \"1MiB\"\nudf_timeout = \"500ms\"\n\n[[tenants]]\nname = \"globex\"\ntoken_sha256 = \"{}\"\n",
            hash_token("a-token"),
            hash_token("g-token")
        );
        let t = Tenants::parse(path, &text).unwrap();
        let acme = t.authenticate("a-token").unwrap();
        assert_eq!(acme.name, "acme");
        assert_eq!(acme.quotas.max_component_bytes, ByteSize::mib(1));
        assert_eq!(acme.quotas.udf_timeout, Duration::from_millis(500));
        assert_eq!(acme.quotas.versions_kept, 10);
        assert_eq!(acme.quotas.api_rate, Rate::per_second(50));
        assert_eq!(acme.quotas.max_compiles, 1);
        // The tenant's limits are the host's with its memory (capped at the host's) and timeout.
        let host = UdfLimits {
            memory: ByteSize::mib(128),
            ..UdfLimits::default()
        };
        let limits = acme.quotas.udf_limits(&host);
        assert_eq!(limits.call_timeout, Duration::from_millis(500));
        assert_eq!(limits.memory, ByteSize::mib(128));
        assert_eq!(limits.stack, host.stack);
        assert_eq!(
            t.compile_slots,
            super::super::limits::default_compile_slots()
        );
        assert_eq!(t.authenticate("g-token").unwrap().name, "globex");
        assert!(t.authenticate("nope").is_none());

        for bad in [
            "tenants = []",
            "[[tenants]]\nname = \"../x\"\ntoken_sha256 = \"00\"",
            "[[tenants]]\nname = \"a\"\ntoken_sha256 = \"00\"",
            "[[tenants]]\nname = \"a\"\ntoken_sha256 = \"00\"\nextra = 1",
            "[[tenants]]\nname = \"a\"\ntoken_sha256 = \"00\"\n[tenants.quotas]\napi_rate = \"50/day\"",
            "[host]\ncompile_slotz = 2\n[[tenants]]\nname = \"a\"\ntoken_sha256 = \"00\"",
        ] {
            assert!(
                matches!(Tenants::parse(path, bad), Err(TenantsError::Parse { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn rates_compiles_and_host_settings_are_read() {
        let text = format!(
            "[host]\ncompile_slots = 3\n\n[[tenants]]\nname = \"acme\"\ntoken_sha256 = \"{}\"\n[tenants.quotas]\nudf_memory = \"16MiB\"\nmax_compiles = 0\napi_rate = \"5/s\"\napi_burst = 7\ndeploy_rate = \"2/min\"\ndeploy_burst = 1\nmax_ingest_rate = \"1MiB/s\"\n",
            hash_token("a-token")
        );
        let t = Tenants::parse(Path::new("host.toml"), &text).unwrap();
        assert_eq!(t.compile_slots, 3);
        let q = &t.get("acme").unwrap().quotas;
        assert_eq!(q.max_compiles, 1, "at least one compile");
        assert_eq!((q.api_rate, q.api_burst), (Rate::per_second(5), 7));
        assert_eq!((q.deploy_rate, q.deploy_burst), (Rate::per_minute(2), 1));
        assert_eq!(q.max_ingest_rate, Rate::per_second(1 << 20));
        assert_eq!(
            q.udf_limits(&UdfLimits::default()).memory,
            ByteSize::mib(16)
        );
    }

    #[test]
    fn the_default_token_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = Tenants::default_in(dir.path()).unwrap();
        assert!(created);
        let file = dir.path().join(DEFAULT_TOKEN_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            first.authenticate(token.trim()).unwrap().name,
            DEFAULT_TENANT
        );
        let (again, created) = Tenants::default_in(dir.path()).unwrap();
        assert!(!created);
        assert!(again.authenticate(token.trim()).is_some());
    }
}
