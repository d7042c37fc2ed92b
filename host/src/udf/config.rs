//! Limits and settings of the UDF runtime, as a job or host config file writes them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ByteSize;

/// What one guest instance may use. Going past any of these fails the call with a typed error
/// and discards the instance; the host and every other job keep running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdfLimits {
    /// Linear memory one instance may grow to. Default `256MiB`.
    pub memory: ByteSize,
    /// Elements one table may grow to. Default `100000`.
    pub table_elements: u32,
    /// CPU time one call may take before it is interrupted. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Native stack that wasm code may use. Default `1MiB`.
    pub stack: ByteSize,
    /// One call may return at most `max(min_output_records, max_output_ratio × input records)`
    /// records and `max(min_output_bytes, max_output_ratio × input bytes)` bytes, so a
    /// `flat_map` that explodes is an error, not an out-of-memory. Default `100`.
    pub max_output_ratio: u32,
    /// See `max_output_ratio`. Default `100000`.
    pub min_output_records: u64,
    /// See `max_output_ratio`. Default `64MiB`.
    pub min_output_bytes: ByteSize,
    /// Hard ceiling on the bytes one call may return, whatever its input: the copy budget the
    /// runtime gives the lift of a call's result. Default `128MiB`.
    pub max_output_bytes: ByteSize,
    /// Log lines one call may write, at every level, panic reports included; further lines
    /// are counted and dropped, with one warning per call. Default `100`.
    pub max_log_lines_per_call: u32,
    /// Bytes of guest log lines one call may print in all (message and fields); further lines
    /// are counted and dropped. Default `64KiB`.
    pub max_log_bytes_per_call: ByteSize,
    /// Bytes of one guest log message that are kept; the rest is cut. Default `4KiB`.
    pub max_log_message: ByteSize,
    /// Bytes of one log field's value that are kept (names are cut at 64). Default `1KiB`.
    pub max_log_field: ByteSize,
    /// Fields one log line may carry; further fields are dropped. Default `16`.
    pub max_log_fields: u32,
    /// Distinct metric series one component may create; new names past it are dropped, with
    /// one warning per call. Default `1000`.
    pub max_metric_series: u32,
    /// The longest metric name a guest may use (names are `[A-Za-z_:][A-Za-z0-9_:]*`); longer
    /// or other names are refused and counted. Default `128`.
    pub max_metric_name: u32,
    /// Bytes of a guest's error message (or panic report) that are kept in errors, logs and
    /// batch history. Default `4KiB`.
    pub max_error_message: ByteSize,
    /// Functions one component may export. Default `1000`.
    pub max_functions: u32,
    /// Input records one guest call is given: a larger partition is cut into consecutive
    /// pieces and the guest called piece by piece, its results joined so that the operator
    /// cannot tell (`udf::chunks`). Default `1000000`: a record costs a guest 12 bytes of
    /// offsets and event time (16 keyed) on top of its bytes, in its input and again in its
    /// output, so a million records of a `map` take ~32 MiB of guest memory beside their data.
    /// Measured (one partition, one call): 16 M empty lines through `text#uppercase` asked for
    /// 368 MiB, past the default 256 MiB `memory`; 1 M lines of 33 bytes (both defaults at
    /// once) take 74 MiB through `text#uppercase` and 154 MiB through `text#split_words`
    /// (3 M words out). At least 1; a reducer's pieces hold at least 2 values.
    pub max_call_records: u64,
    /// Bytes of keys and values one guest call is given (with `max_call_records`). Default
    /// `32MiB`: 32 MiB of input with its offsets (above, ~16 MiB) and the largest output a call
    /// may return (`max_output_bytes`, 128 MiB) fit the default 256 MiB `memory` with ~80 MiB
    /// to spare for the guest's own work. A single record larger than this still goes to one call of
    /// its own (it is never dropped); a key of `update_state_by_key` / `map_with_state` is
    /// never split, so one whose values together pass either limit fails its batch with
    /// [`KeyTooLarge`](super::CallErrorKind::KeyTooLarge).
    pub max_call_bytes: ByteSize,
}

impl Default for UdfLimits {
    fn default() -> Self {
        Self {
            memory: ByteSize::mib(256),
            table_elements: 100_000,
            call_timeout: Duration::from_secs(10),
            stack: ByteSize::mib(1),
            max_output_ratio: 100,
            min_output_records: 100_000,
            min_output_bytes: ByteSize::mib(64),
            max_output_bytes: ByteSize::mib(128),
            max_log_lines_per_call: 100,
            max_log_bytes_per_call: ByteSize::kib(64),
            max_log_message: ByteSize::kib(4),
            max_log_field: ByteSize::kib(1),
            max_log_fields: 16,
            max_metric_series: 1000,
            max_metric_name: 128,
            max_error_message: ByteSize::kib(4),
            max_functions: 1000,
            max_call_records: 1_000_000,
            max_call_bytes: ByteSize::mib(32),
        }
    }
}

/// Settings of the runtime as a whole (one per host process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Limits every instance gets.
    pub limits: UdfLimits,
    /// Components larger than this are refused before compilation. Default `64MiB`.
    pub max_component_size: ByteSize,
    /// Compiling one component may take this long; a slower one is refused (and, with a
    /// `compile_worker`, its compiler process killed). Default `120s`.
    #[serde(with = "humantime_serde")]
    pub compile_timeout: Duration,
    /// The program that compiles components in a child process, run as
    /// `PROGRAM compile-worker`: the `host` binary (the CLI sets its own path). The child's
    /// address space is capped at `compile_memory`, its CPU time past `compile_timeout`, and it
    /// is killed when refused, so a component built to make Cranelift take gigabytes or minutes
    /// costs the host nothing. None: compile on a thread of this process, where neither memory
    /// nor a timed-out compilation can be stopped; for trusted components only (library tests,
    /// benchmarks). Default: none.
    pub compile_worker: Option<PathBuf>,
    /// The address space (`RLIMIT_AS`) of the compile worker: the program, the component, the
    /// compiler's working memory and the compiled code. A compilation that needs more is refused.
    /// Default `4GiB`; no effect without `compile_worker`.
    pub compile_memory: ByteSize,
    /// Where compiled components are cached by content hash; none = memory only.
    /// Default: none.
    pub cache_dir: Option<PathBuf>,
    /// Guest instances alive at once, over all components. Default `200`.
    pub max_instances: u32,
    /// Idle instances kept per component for reuse. Default `8`.
    pub idle_instances_per_component: usize,
    /// Whether guest code is compiled with epoch checks, so that `limits.call_timeout` can
    /// interrupt a call. Default `true`. The checks cost up to a third of a tight byte loop's
    /// speed (`cargo bench --bench udf_boundary`, `paired`); without them a call that never
    /// returns holds its worker thread for good, so turn this off only on a host whose UDFs
    /// are all trusted (`host --udf-timeout off`).
    pub interruptible: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            limits: UdfLimits::default(),
            max_component_size: ByteSize::mib(64),
            compile_timeout: Duration::from_secs(120),
            compile_worker: None,
            compile_memory: ByteSize::gib(4),
            cache_dir: None,
            max_instances: 200,
            idle_instances_per_component: 8,
            interruptible: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_humane_values_and_reject_unknown_fields() {
        let limits: UdfLimits =
            toml::from_str("memory = \"32MiB\"\ncall_timeout = \"250ms\"").unwrap();
        assert_eq!(limits.memory, ByteSize::mib(32));
        assert_eq!(limits.call_timeout, Duration::from_millis(250));
        assert_eq!(limits.stack, UdfLimits::default().stack);
        let calls: UdfLimits =
            toml::from_str("max_call_records = 1000\nmax_call_bytes = \"1MiB\"").unwrap();
        assert_eq!(
            (calls.max_call_records, calls.max_call_bytes),
            (1000, ByteSize::mib(1))
        );
        let err = toml::from_str::<UdfLimits>("memroy = \"32MiB\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `memroy`"), "{err}");
    }
}
