//! What can go wrong loading, resolving and calling a UDF, with the context a user needs.

use std::time::Duration;

use crate::config::ByteSize;

/// A component could not be loaded. Nothing was run; the host is unaffected.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read UDF component {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Larger than `max_component_size`.
    #[error(
        "UDF component `{name}` is {size} bytes, over the limit of {limit} (udf max_component_size)"
    )]
    TooLarge {
        /// The component.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The limit.
        limit: ByteSize,
    },
    /// Not WebAssembly at all.
    #[error("`{name}` is not WebAssembly: {reason}")]
    NotWasm {
        /// The component.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A core module where a component was expected.
    #[error(
        "`{name}` is a core WebAssembly module, not a component; wrap it with `cargo xtask componentize MODULE.wasm OUT.wasm` (build Rust UDFs with `cargo xtask udfs`)"
    )]
    CoreModule {
        /// The component.
        name: String,
    },
    /// The component is malformed or truncated.
    #[error("`{name}` is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The component.
        name: String,
        /// The validator's reason.
        reason: String,
    },
    /// Compilation took longer than `compile_timeout`.
    #[error("compiling `{name}` took longer than {limit:?} (udf compile_timeout); it was refused")]
    CompileTimeout {
        /// The component.
        name: String,
        /// The limit.
        limit: Duration,
    },
    /// The component does not export any Sluice world.
    #[error(
        "`{name}` is not a Sluice UDF component: it exports none of sluice:udf/transforms, reducers, updaters or sinks @0.1.0 (it exports: {exports}); build it with sluice-guest against wit/udf.wit"
    )]
    WrongWorld {
        /// The component.
        name: String,
        /// What it does export.
        exports: String,
    },
    /// The component imports something the host does not provide.
    #[error(
        "`{name}` imports `{import}`, which the Sluice host does not provide: guests get only sluice:udf/logging and sluice:udf/metrics (no WASI: no files, sockets, environment or clocks); build Rust UDFs for wasm32-unknown-unknown, Python ones with componentize-py --stub-wasi"
    )]
    ForbiddenImport {
        /// The component.
        name: String,
        /// The first import the host does not provide.
        import: String,
    },
    /// Built for another ABI version.
    #[error(
        "`{name}` was built for Sluice UDF ABI version {found}, but this host speaks version {expected}; rebuild it with a matching sluice-guest"
    )]
    AbiMismatch {
        /// The component.
        name: String,
        /// The version it claims.
        found: u32,
        /// The version the host speaks.
        expected: u32,
    },
    /// Instantiating it or asking it to describe itself failed.
    #[error("`{name}` failed while describing itself: {reason}")]
    Describe {
        /// The component.
        name: String,
        /// What happened.
        reason: String,
    },
    /// The disk cache could not be written (reading falls back to compiling).
    #[error("cannot write the compiled-component cache at {path}: {source}")]
    Cache {
        /// The cache file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// `component#function` could not be resolved for an operator.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not of the form `component#function`.
    #[error("`{spec}` does not name a UDF; write `component#function`, e.g. `text#split_words`")]
    BadSpec {
        /// What was written.
        spec: String,
    },
    /// The component has no such function.
    #[error("component `{component}` has no function `{function}`; it exports: {available}")]
    UnknownFunction {
        /// The component.
        component: String,
        /// The missing function.
        function: String,
        /// The functions it does export.
        available: String,
    },
    /// The function has the wrong role for the operator.
    #[error(
        "`{component}#{function}` is a {found} function, but this operator needs a {expected} function"
    )]
    WrongRole {
        /// The component.
        component: String,
        /// The function.
        function: String,
        /// Its role.
        found: &'static str,
        /// The role the operator needs.
        expected: &'static str,
    },
}

/// A call failed. Names the component, function, batch and partition.
#[derive(Debug, thiserror::Error)]
#[error("UDF `{component}#{function}` failed on batch {batch} partition {partition}: {kind}")]
pub struct CallError {
    /// The component.
    pub component: String,
    /// The function.
    pub function: String,
    /// The batch being processed.
    pub batch: u64,
    /// Its partition.
    pub partition: u32,
    /// What happened.
    pub kind: CallErrorKind,
}

/// What went wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum CallErrorKind {
    /// The call ran past its CPU deadline.
    #[error("ran past its CPU deadline of {0:?} (udf call_timeout) and was interrupted")]
    Timeout(Duration),
    /// The guest tried to grow its memory past the limit.
    #[error(
        "tried to grow its memory to {requested} bytes, past the limit of {limit} (udf memory)"
    )]
    MemoryLimit {
        /// The size it asked for.
        requested: u64,
        /// The limit.
        limit: ByteSize,
    },
    /// The guest tried to grow a table past the limit.
    #[error(
        "tried to grow a table to {requested} elements, past the limit of {limit} (udf table_elements)"
    )]
    TableLimit {
        /// The size it asked for.
        requested: u64,
        /// The limit.
        limit: u32,
    },
    /// The guest ran out of stack.
    #[error("overflowed its stack (udf stack = {0})")]
    StackOverflow(ByteSize),
    /// The guest panicked (its message came through the logging import).
    #[error("panicked: {0}")]
    Panic(String),
    /// Any other trap.
    #[error("trapped: {0}")]
    Trap(String),
    /// The guest returned data that breaks the contract.
    #[error("returned malformed data: {0}")]
    Malformed(String),
    /// The guest returned more than the output limit allows.
    #[error(
        "returned {records} records and {bytes} bytes for {input_records} input records and {input_bytes} bytes, over the limit of {max_records} records and {max_bytes} bytes (udf max_output_ratio)"
    )]
    OutputTooLarge {
        /// Records returned.
        records: u64,
        /// Bytes returned.
        bytes: u64,
        /// Records given.
        input_records: u64,
        /// Bytes given.
        input_bytes: u64,
        /// The record limit for this input.
        max_records: u64,
        /// The byte limit for this input.
        max_bytes: u64,
    },
    /// The guest reported an error of its own.
    #[error("{}{message}", record_index.map(|i| format!("input record {i}: ")).unwrap_or_default())]
    Guest {
        /// The guest's message.
        message: String,
        /// The input record it blamed, if any.
        record_index: Option<u32>,
    },
    /// A fresh instance could not be created.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}
