//! The UDF runtime: one wasmtime engine per host, components compiled once and cached by content
//! hash (in memory and on disk), loading bounded in size and time.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings;
use super::compiler::{self, EngineUse};
use super::component::{Role, UdfComponent};
use super::config::{RuntimeConfig, UdfLimits};
use super::error::LoadError;
use super::guest_text;
use super::host_state::HostState;
use crate::files::{FileError, read_regular_file};
use crate::metrics::Registry;

/// The ABI version of `wit/udf.wit` this host speaks (`sluice_guest::ABI_VERSION` on the guest
/// side).
///
/// It versions what the exchanged values *mean* (how columns, group ends and states are laid
/// out), within one version of the WIT package; the package version ([`WIT_VERSION`]) versions
/// the *shapes*. Turning the function kind from a string into an enum (sluice:udf 0.2.0) changed
/// a shape only, so the ABI version stayed 1: a 0.1.0 component is refused by its interface
/// names before its `abi-version` could be asked.
pub const ABI_VERSION: u32 = 1;

/// The version of the WIT package `sluice:udf` this host speaks: every interface a component
/// imports or exports is named with it (`sluice:udf/transforms@0.2.0`).
macro_rules! wit_version {
    () => {
        "0.2.0"
    };
}
pub(crate) use wit_version;

/// The version of the WIT package `sluice:udf` this host speaks (`package sluice:udf@…` in
/// `wit/udf.wit`). A component built against another version is refused at load
/// ([`LoadError::WitVersion`]).
pub const WIT_VERSION: &str = wit_version!();

/// The interface of shared types, as components import it.
pub(crate) const TYPES_INTERFACE: &str = concat!("sluice:udf/types@", wit_version!());

/// How often the epoch advances; CPU deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Set to `1` to have the engine write a perf map of compiled guest code, so `perf record` /
/// `perf report` name the guest's functions instead of bare JIT addresses.
pub const PERFMAP_ENV: &str = "SLUICE_WASM_PERFMAP";

/// The imports a component may have: what `wit/udf.wit` gives every world.
const PROVIDED_IMPORTS: [&str; 3] = [
    concat!("sluice:udf/logging@", wit_version!()),
    concat!("sluice:udf/metrics@", wit_version!()),
    TYPES_INTERFACE,
];

/// Where the interfaces of the `sluice:udf` package start their names.
const PACKAGE_PREFIX: &str = "sluice:udf/";

/// How much of a component's own import or export names an error shows.
const MAX_SHOWN_NAMES: usize = 1024;

/// Why the runtime itself could not start (a host configuration problem, not a guest's).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the UDF runtime: {0}")]
pub struct RuntimeError(String);

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Loads, checks and caches UDF components; one per host process.
pub struct UdfRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    compiled: Mutex<HashMap<String, Component>>,
    registry: Arc<Registry>,
    /// Advances the epoch; none when the runtime is not interruptible.
    _ticker: Option<EpochTicker>,
}

impl UdfRuntime {
    /// A runtime with `config`, reporting guest metrics into `registry`.
    pub fn new(config: RuntimeConfig, registry: Arc<Registry>) -> Result<Self, RuntimeError> {
        let wasm = compiler::wasm_config(&config, EngineUse::Host);
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        bindings::transform::Transform::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError(format!("linking the host imports: {e:#}")))?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                RuntimeError(format!(
                    "creating the component cache {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let ticker = if config.interruptible {
            Some(EpochTicker::start(engine.clone()))
        } else {
            tracing::warn!(
                "UDF calls have no CPU deadline (interruptible = false, `--udf-timeout off`): \
                 a UDF that never returns holds its worker for good; use this only when every UDF is trusted"
            );
            None
        };
        Ok(Self {
            engine,
            linker,
            config,
            compiled: Mutex::new(HashMap::new()),
            registry,
            _ticker: ticker,
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The registry guest and per-function metrics go to.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Load the component in `path`; its name is the file name without `.wasm`.
    pub fn load_file(&self, path: &Path) -> Result<Arc<UdfComponent>, LoadError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let read_error = |source| LoadError::Read {
            path: path.display().to_string(),
            source,
        };
        // Only a regular file (`/dev/zero` or a FIFO would be read without end or block), with
        // the cap on the bytes read, not only on the size the file reports.
        let limit = self.config.max_component_size;
        let bytes = read_regular_file(path, limit.0).map_err(|e| match e {
            FileError::NotRegular { .. } => LoadError::NotAFile {
                path: path.display().to_string(),
            },
            FileError::TooLarge { size, .. } => LoadError::TooLarge {
                name: name.clone(),
                size: Some(size),
                limit,
            },
            FileError::Io { error, .. } => read_error(error),
        })?;
        self.load(&name, &bytes)
    }

    fn check_size(&self, name: &str, size: u64) -> Result<(), LoadError> {
        let limit = self.config.max_component_size;
        if size > limit.0 {
            return Err(LoadError::TooLarge {
                name: name.to_string(),
                size: Some(size),
                limit,
            });
        }
        Ok(())
    }

    /// Load a component from its bytes: check, compile (or take from the cache), inspect its
    /// world and imports, instantiate it once to read its ABI version and functions.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<UdfComponent>, LoadError> {
        self.load_with_limits(name, bytes, &self.config.limits)
    }

    /// [`load`](Self::load), its instances bounded by `limits` instead of the runtime's (a
    /// shared host's tenant quotas). The engine's pool still caps memory at the runtime's
    /// `limits.memory`, so a larger `limits.memory` has no effect past it.
    pub fn load_with_limits(
        &self,
        name: &str,
        bytes: &[u8],
        limits: &UdfLimits,
    ) -> Result<Arc<UdfComponent>, LoadError> {
        self.check_size(name, bytes.len() as u64)?;
        check_header(name, bytes)?;
        let hash = hex::encode(Sha256::digest(bytes));
        let component = self.compiled_component(name, &hash, bytes)?;
        let role = self.inspect(name, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Describe {
                name: name.to_string(),
                reason: format!("{e:#}"),
            })?;
        UdfComponent::new(
            name,
            hash,
            role,
            pre,
            &self.engine,
            &RuntimeConfig {
                limits: limits.clone(),
                ..self.config.clone()
            },
            self.registry.clone(),
        )
    }

    fn compiled_component(
        &self,
        name: &str,
        hash: &str,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        if let Some(component) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
        {
            return Ok(component.clone());
        }
        let cache_file = self.cache_file(hash);
        if let Some(path) = &cache_file
            && let Ok(precompiled) = std::fs::read(path)
        {
            // Read into memory rather than mapping the file: a cache file rewritten or truncated
            // by anyone while the component runs must not be able to crash the host (SIGBUS).
            // SAFETY: the cache directory is the host's own; files in it were written by
            // `Component::serialize` of an engine with this configuration, or are the compile
            // worker's `precompile_component` output for one (the name carries the engine's
            // compatibility hash), and wasmtime checks the header before using one.
            match unsafe { Component::deserialize(&self.engine, &precompiled) } {
                Ok(component) => {
                    tracing::debug!(component = name, cache = %path.display(), "loaded a precompiled component");
                    self.remember(hash, &component);
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(cache = %path.display(), "ignoring an unusable cached component: {e:#}")
                }
            }
        }
        // In a capped child process when `compile_worker` is set (see `compiler`).
        let compiler::Compiled {
            component,
            artifact,
        } = compiler::compile(&self.engine, &self.config, name, bytes)?;
        if let Some(path) = cache_file {
            self.write_cache(&path, &component, artifact)?;
        }
        self.remember(hash, &component);
        Ok(component)
    }

    fn remember(&self, hash: &str, component: &Component) {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash.to_string(), component.clone());
    }

    fn cache_file(&self, hash: &str) -> Option<PathBuf> {
        let dir = self.config.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        Some(dir.join(format!("{hash}-{:016x}.cwasm", hasher.finish())))
    }

    /// Write `component` to the cache: the compile worker's `artifact` as it is when there is
    /// one, else the component serialized.
    fn write_cache(
        &self,
        path: &Path,
        component: &Component,
        artifact: Option<Vec<u8>>,
    ) -> Result<(), LoadError> {
        let cache_error = |source| LoadError::Cache {
            path: path.display().to_string(),
            source,
        };
        let bytes = match artifact {
            Some(bytes) => bytes,
            None => component
                .serialize()
                .map_err(|e| cache_error(std::io::Error::other(format!("{e:#}"))))?,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(cache_error)?;
        std::fs::rename(&tmp, path).map_err(cache_error)
    }

    /// Which world the component was built for, and whether it imports only what the host
    /// provides.
    fn inspect(&self, name: &str, component: &Component) -> Result<Role, LoadError> {
        let ty = component.component_type();
        // A Sluice component of another package version first: its interfaces are named with
        // the version it was built against, and rebuilding it is all it needs.
        let names = ty
            .imports(&self.engine)
            .map(|(n, _)| n)
            .chain(ty.exports(&self.engine).map(|(n, _)| n));
        if let Some(found) = names.filter_map(other_package_version).next() {
            return Err(LoadError::WitVersion {
                name: name.to_string(),
                found,
                expected: WIT_VERSION,
            });
        }
        // Imports first: a component built for WASI (the most common wrong build) gets the
        // message that says how to build it right.
        if let Some((import, _)) = ty
            .imports(&self.engine)
            .find(|(n, _)| !PROVIDED_IMPORTS.contains(n))
        {
            return Err(LoadError::ForbiddenImport {
                name: name.to_string(),
                import: guest_text::sanitize(import, MAX_SHOWN_NAMES),
            });
        }
        let exports: Vec<&str> = ty.exports(&self.engine).map(|(n, _)| n).collect();
        let role = Role::ALL
            .into_iter()
            .find(|role| exports.contains(&role.export_name()))
            .ok_or_else(|| LoadError::WrongWorld {
                name: name.to_string(),
                exports: if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    guest_text::sanitize(&exports.join(", "), MAX_SHOWN_NAMES)
                },
                expected: WIT_VERSION,
            })?;
        Ok(role)
    }
}

/// The version in `name` when it names an interface of the `sluice:udf` package of another
/// version than [`WIT_VERSION`] (cut and escaped, for a message); `None` for this version's
/// interfaces and for names of other packages.
fn other_package_version(name: &str) -> Option<String> {
    let interface = name.strip_prefix(PACKAGE_PREFIX)?;
    match interface.split_once('@') {
        Some((_, WIT_VERSION)) => None,
        Some((_, version)) => Some(guest_text::sanitize(version, MAX_SHOWN_VERSION)),
        None => Some("(no version)".to_string()),
    }
}

/// How much of a foreign package version an error shows.
const MAX_SHOWN_VERSION: usize = 64;

/// Tell apart "not wasm", "a core module" and "a component" from the 8-byte preamble, so each
/// gets an error that says what to do.
fn check_header(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            name: name.to_string(),
            reason: format!(
                "it does not start with the WebAssembly magic bytes ({} bytes in all)",
                bytes.len()
            ),
        });
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_file_and_the_host_agree_on_the_package_version() {
        let wit = include_str!("../../../wit/udf.wit");
        assert!(
            wit.contains(&format!("package sluice:udf@{WIT_VERSION};")),
            "wit/udf.wit does not declare sluice:udf@{WIT_VERSION}"
        );
        for role in Role::ALL {
            assert!(role.export_name().ends_with(&format!("@{WIT_VERSION}")));
        }
    }

    #[test]
    fn other_package_versions_are_told_apart() {
        assert_eq!(other_package_version(TYPES_INTERFACE), None);
        assert_eq!(
            other_package_version("sluice:udf/transforms@0.1.0").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            other_package_version("sluice:udf/logging").as_deref(),
            Some("(no version)")
        );
        assert_eq!(other_package_version("wasi:io/streams@0.2.0"), None);
        assert_eq!(other_package_version("functions"), None);
        let hostile = format!("sluice:udf/types@9\n{}", "9".repeat(10_000));
        let shown = other_package_version(&hostile).unwrap_or_default();
        assert!(!shown.contains('\n') && shown.len() < 128, "{shown}");
    }
}
