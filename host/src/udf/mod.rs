//! The sandboxed UDF runtime: loads WebAssembly components built against `wit/udf.wit`, checks
//! them, and calls them once per partition under strict limits.
//!
//! - [`UdfRuntime`] owns the one wasmtime engine, compiles components once (cached by content
//!   hash, in memory and on disk) and refuses anything that is not a Sluice component: a core
//!   module, a truncated file, the wrong world, an import the host does not provide (no WASI is
//!   linked at all), an ABI version it does not speak, a file over the size cap, a compilation
//!   over the time or memory cap ([`compiler`]: untrusted components compile in a child process
//!   capped in memory and time, killed when refused).
//! - [`UdfComponent`] keeps a pool of pre-instantiated instances; each has its own store with a
//!   memory and table limiter, a CPU deadline per call (epoch interruption) and a stack cap.
//! - [`UdfFunction`] is one resolved `component#function`; its calls return typed
//!   [`CallError`]s naming component, function and batch. A trap discards the instance; the
//!   next call gets a fresh one.

pub mod bindings;
mod chunks;
pub mod compiler;
mod component;
pub mod config;
pub mod error;
pub mod guest_text;
mod host_state;
mod registry;
mod resolve;
mod runtime;
mod slot;

pub use bindings::types::{FunctionInfo, FunctionKind};
pub use bindings::updater::exports::sluice::udf::updaters::{UpdateInput, UpdateOutput};
pub use compiler::run_compile_worker;
pub use component::{FunctionStats, MAX_FUNCTION_NAME, Role, UdfComponent, UdfFunction};
pub use config::{RuntimeConfig, UdfLimits};
pub use error::{CallError, CallErrorKind, FunctionsProblem, LoadError, ResolveError};
pub use host_state::CallContext;
pub use registry::{
    DEFAULT_KEEP, DeployError, Deployed, LookupError, MAX_DEPLOYED_BY, MAX_NAME_LEN, NameError,
    RegisteredVersion, Registry, RemoveError, VersionInfo, valid_name,
};
pub use resolve::{
    ComponentError, ComponentRef, MAX_LISTED_COMPONENTS, Place, Resolved, TenantRegistry,
    UdfDirectory, UdfResolver,
};
pub use runtime::{ABI_VERSION, RuntimeError, UdfRuntime, WIT_VERSION};
pub use slot::{Binding, Bindings, RebindError, RebindOutcome, SlotId, SlotSet, UdfSlot};

/// Split `component#function` into its two names.
pub fn parse_spec(spec: &str) -> Result<(&str, &str), ResolveError> {
    match spec.split_once('#') {
        Some((component, function))
            if !component.is_empty() && !function.is_empty() && !function.contains('#') =>
        {
            Ok((component, function))
        }
        _ => Err(ResolveError::BadSpec {
            spec: spec.to_string(),
        }),
    }
}
