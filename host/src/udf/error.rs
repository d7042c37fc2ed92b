//! What can go wrong loading, resolving and calling a UDF, with the context a user needs.

use std::time::Duration;

use super::bindings::types::FunctionKind;
use super::component::Role;
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
    /// Not a regular file (a device, a FIFO, a directory).
    #[error(
        "cannot read UDF component {path}: it is not a regular file (a device, a FIFO or a folder); give the path of a .wasm file"
    )]
    NotAFile {
        /// The path.
        path: String,
    },
    /// Larger than `max_component_size`.
    #[error(
        "UDF component `{name}` is {}, over the limit of {limit} (udf max_component_size)",
        size.map_or_else(|| "larger".to_string(), |n| format!("{n} bytes"))
    )]
    TooLarge {
        /// The component.
        name: String,
        /// Its size in bytes, when known (reading stops past the limit).
        size: Option<u64>,
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
    #[error(
        "compiling `{name}` took longer than {limit:?} (udf compile_timeout, `host --compile-timeout`); it was refused{}",
        if *process_stopped { " and its compiler process was stopped" } else { " (it was compiled in the host's process, where it runs on in the background)" }
    )]
    CompileTimeout {
        /// The component.
        name: String,
        /// The limit.
        limit: Duration,
        /// Whether the compilation ran in a compile worker, which was killed; else it ran on a
        /// thread of the host, which cannot be stopped.
        process_stopped: bool,
    },
    /// The compile worker died of a signal or could not get memory: most likely compiling the
    /// component needed more than `compile_memory`.
    #[error(
        "compiling `{name}` was refused: the compiler process {how}; most likely it needed more than {limit} of memory (udf compile_memory, `host --compile-memory`)"
    )]
    CompileMemory {
        /// The component.
        name: String,
        /// The memory cap of the compile worker.
        limit: ByteSize,
        /// What happened to the worker (the signal, or the system's error).
        how: String,
    },
    /// The compile worker program could not be started.
    #[error("cannot start the compile worker `{program}` (udf compile_worker): {source}")]
    CompileWorkerStart {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The compile worker failed in a way that says nothing about the component (a panic, bad
    /// settings, output the host's engine would not load).
    #[error("the compile worker `{program}` failed while compiling `{name}`: {reason}")]
    CompileWorkerFailed {
        /// The component.
        name: String,
        /// The program.
        program: String,
        /// What happened (its stderr cut and escaped).
        reason: String,
    },
    /// The component does not export any Sluice world.
    #[error(
        "`{name}` is not a Sluice UDF component: it exports none of sluice:udf/transforms, reducers, updaters or sinks @{expected} (it exports: {exports}); build it with sluice-guest against wit/udf.wit"
    )]
    WrongWorld {
        /// The component.
        name: String,
        /// What it does export.
        exports: String,
        /// The package version the host speaks.
        expected: &'static str,
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
    /// Built against another version of the WIT package `sluice:udf` (its interfaces are named
    /// with it): the host cannot link it.
    #[error(
        "`{name}` was built against sluice:udf {found}, but this host speaks sluice:udf {expected}"
    )]
    WitVersion {
        /// The component.
        name: String,
        /// The package version it was built against, cut and escaped.
        found: String,
        /// The version the host speaks.
        expected: &'static str,
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
    /// Its bindings could not be prepared (a shape the host's bindings do not accept).
    #[error("`{name}` failed while describing itself: {reason}")]
    Describe {
        /// The component.
        name: String,
        /// What happened.
        reason: String,
    },
    /// Instantiating it, or calling `abi-version` or `functions` to describe it, failed: these
    /// must answer at once, so a loop, a trap or a memory bomb there refuses the component.
    #[error(
        "`{name}` failed when the host asked for its {export} (a component must answer these at once): {kind}"
    )]
    DescribeFailed {
        /// The component.
        name: String,
        /// `instance`, `abi-version` or `functions`.
        export: &'static str,
        /// What happened.
        kind: CallErrorKind,
    },
    /// The list of functions it exports is not one the host accepts.
    #[error("`{name}` describes its functions in a way the host refuses: {problem}")]
    BadFunctions {
        /// The component.
        name: String,
        /// What is wrong.
        problem: FunctionsProblem,
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

impl LoadError {
    /// What the job's owner can do about it, for the planner's report.
    pub fn hint(&self) -> &'static str {
        match self {
            LoadError::Read { .. } | LoadError::NotAFile { .. } => {
                "check the path and that the file is readable"
            }
            LoadError::TooLarge { .. } => {
                "make the component smaller (build with the `udf` profile: LTO, stripped) or raise max_component_size"
            }
            LoadError::CompileTimeout { .. } | LoadError::CompileMemory { .. } => {
                "the component is too costly to compile under the host's limits; simplify it or raise --compile-timeout / --compile-memory"
            }
            LoadError::CompileWorkerStart { .. } | LoadError::CompileWorkerFailed { .. } => {
                "the host could not run its compiler process; check that the host binary is intact, then try again"
            }
            LoadError::Cache { .. } => {
                "check that the component cache folder is writable (--component-cache)"
            }
            LoadError::WitVersion { .. } => {
                "rebuild it with the sluice-guest of this host: `cargo xtask udfs` rebuilds the bundled and udfs/ crates; for a crate of your own, update its sluice-guest dependency and build it again"
            }
            LoadError::NotWasm { .. }
            | LoadError::CoreModule { .. }
            | LoadError::Invalid { .. }
            | LoadError::WrongWorld { .. }
            | LoadError::ForbiddenImport { .. }
            | LoadError::AbiMismatch { .. }
            | LoadError::Describe { .. } => {
                "rebuild it against wit/udf.wit with `cargo xtask udfs`"
            }
            LoadError::DescribeFailed { .. } | LoadError::BadFunctions { .. } => {
                "fix the component: its abi-version and functions exports must answer at once with a plain list of functions"
            }
        }
    }
}

/// What is wrong with a component's list of functions.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsProblem {
    /// It exports none.
    #[error("it exports no functions")]
    None,
    /// More than `max_functions`.
    #[error("it lists {count} functions, over the limit of {limit} (udf max_functions)")]
    TooMany {
        /// How many.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A name a manifest could not write, or too long.
    #[error(
        "function {index} is named \"{name}\" ({bytes} bytes); names must be 1 to 128 bytes of letters, digits, `_`, `-` or `.`"
    )]
    BadName {
        /// Its index in the list.
        index: usize,
        /// The name, cut and escaped.
        name: String,
        /// Its length in bytes.
        bytes: usize,
    },
    /// A kind of another world's functions (a transform component reporting `reduce`).
    #[error(
        "function \"{function}\" reports the kind `{kind}`, which is for {kind_role} components, but this is a {role} component"
    )]
    KindOfAnotherRole {
        /// The function.
        function: String,
        /// The kind it reports.
        kind: FunctionKind,
        /// The world that kind belongs to.
        kind_role: Role,
        /// The component's world.
        role: Role,
    },
    /// Two functions of one name.
    #[error("two functions are named \"{name}\"; names must be unique")]
    Duplicate {
        /// The name.
        name: String,
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
    /// The guest trapped after reporting a panic through the logging import. The reason is the
    /// runtime's; the report is the guest's own words (cut and escaped), shown as such.
    #[error("trapped ({trap}) after the guest reported a panic: {report}")]
    Panic {
        /// The runtime's reason for the trap.
        trap: String,
        /// What the guest logged as its panic message, cut and escaped.
        report: String,
    },
    /// Any other trap.
    #[error("trapped: {0}")]
    Trap(String),
    /// The guest returned data that breaks the contract.
    #[error("returned malformed data: {0}")]
    Malformed(String),
    /// The runtime could not read what the guest returned: pointers out of its memory, invalid
    /// UTF-8, or more than the copy budget of one call.
    #[error(
        "returned a result the host cannot read: {reason} (a result must follow the component model's encoding and be at most {copy_limit} in all: udf max_output_bytes)"
    )]
    Unreadable {
        /// The runtime's reason.
        reason: String,
        /// The copy budget of one call.
        copy_limit: ByteSize,
    },
    /// The guest reported an error naming a record it was not given.
    #[error(
        "reported an error naming input record {index}, but it was given {records} records (a bug in the UDF): {message}"
    )]
    BadRecordIndex {
        /// The index it named.
        index: u32,
        /// How many records (or items) the call had.
        records: u64,
        /// The guest's message, cut and escaped.
        message: String,
    },
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
        /// The guest's message, cut and escaped (`UdfLimits::max_error_message`).
        message: String,
        /// The input record it blamed, if any.
        record_index: Option<u32>,
    },
    /// A fresh instance could not be created.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// One key of a state updater holds more than one call may be given; an updater sees all
    /// of a key's values at once, so the key cannot be split over calls.
    #[error(
        "key {key} has {records} new values and {bytes} bytes (values and state) in this batch, over what one call may be given ({max_records} records, {max_bytes}: udf max_call_records / max_call_bytes); raise `host --udf-max-call-records` / `--udf-max-call-bytes`, or pre-aggregate the key's values (e.g. reduce_by_key) before the stateful operator"
    )]
    KeyTooLarge {
        /// The key, cut and escaped (it is input data).
        key: String,
        /// Its values in the call.
        records: u64,
        /// Its bytes: key, values and old state.
        bytes: u64,
        /// `max_call_records`.
        max_records: u64,
        /// `max_call_bytes`.
        max_bytes: crate::config::ByteSize,
    },
    /// The input was cut into pieces (over `max_call_records` / `max_call_bytes`) and their
    /// outputs together are too large for one partition.
    #[error(
        "returned too much over the {pieces} pieces its partition was cut into: {source}; lower udf max_output_ratio or give the job more partitions"
    )]
    JoinedTooLarge {
        /// How many calls the partition took.
        pieces: usize,
        /// What was too large.
        source: crate::batch::BatchError,
    },
}
