//! The compile step: turning a component's bytes into machine code.
//!
//! Compiling is the one step of loading that runs the host's own code, Cranelift, on input the
//! guest controls; a small component can be made to cost gigabytes and minutes (deeply nested
//! blocks over many locals), and Cranelift cannot be cancelled. So an untrusted component is
//! compiled in a child process, `PROGRAM compile-worker` (see [`RuntimeConfig::compile_worker`]):
//!
//! - before it starts the child gets `RLIMIT_AS = compile_memory` (an allocation past it fails
//!   and the child dies), `RLIMIT_CPU` as a backstop past `compile_timeout`, `RLIMIT_CORE = 0`
//!   and a parent-death signal, so it never outlives the host;
//! - it reads the component from stdin and the runtime's settings from [`WORKER_CONFIG_ENV`],
//!   builds an engine of the same configuration as the host's (see [`wasm_config`]; only the
//!   instance allocator differs, as the pooling allocator's address-space reservation would not
//!   fit under `RLIMIT_AS`, and it does not change the compiled code) and writes
//!   `Engine::precompile_component`'s artifact to stdout;
//! - the host waits at most `compile_timeout`, then kills (SIGKILL) and reaps it, so no core stays
//!   busy after the refusal; the outcome is read from the exit status alone (see [`exit_code`]),
//!   never from the text of a message.
//!
//! Without a worker the component is compiled on a helper thread of the host: for trusted
//! components only (library tests, benchmarks), since neither memory nor CPU is bounded there.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

use super::config::RuntimeConfig;
use super::error::LoadError;
use super::runtime::PERFMAP_ENV;

/// The hidden subcommand of the `host` binary that runs [`run_compile_worker`].
pub const WORKER_SUBCOMMAND: &str = "compile-worker";

/// The environment variable that carries the [`RuntimeConfig`] (as JSON) to the worker.
pub const WORKER_CONFIG_ENV: &str = "SLUICE_COMPILE_WORKER_CONFIG";

/// The worker's exit codes: the protocol between it and the host. Anything else (a panic's 101,
/// a signal) is read as a failure of the worker, a signal most likely as the memory cap.
pub mod exit_code {
    /// Compiled: the artifact is on stdout.
    pub const COMPILED: i32 = 0;
    /// The component is not valid WebAssembly (or uses what the engine does not support); the
    /// validator's reason is on stderr.
    pub const INVALID: i32 = 2;
    /// The worker was started wrong (no or bad settings, stdin unreadable); the reason is on
    /// stderr.
    pub const BAD_REQUEST: i32 = 3;
    /// Compilation failed on an I/O error of the host, such as mapping memory under the cap.
    pub const RESOURCES: i32 = 4;
}

/// Pool slots reserved per component instance. A component made by wit-component holds its
/// main module plus shim modules (3 core instances for a Rust guest); other toolchains use more.
/// Slots only reserve address space until used.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const TABLES_PER_COMPONENT: u32 = 4;

/// Bytes of the worker's stderr the host keeps; the rest is read and dropped.
const STDERR_KEPT: usize = 4 << 10;
/// Bytes of a reason (which may quote guest-controlled text) put into an error.
const REASON_MAX: usize = 2 << 10;
/// How often the host looks whether the worker has ended.
const POLL: Duration = Duration::from_millis(5);
/// CPU seconds the worker gets past `compile_timeout × cores` before `RLIMIT_CPU` stops it.
const CPU_SLACK_SECS: u64 = 10;

/// Which engine a [`wasm_config`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineUse {
    /// The host's engine, which instantiates components: the pooling allocator, and the perf map
    /// when [`PERFMAP_ENV`] asks for it.
    Host,
    /// The compile worker's engine, which only compiles: instances allocated on demand (it makes
    /// none), so nothing reserves address space under `RLIMIT_AS`.
    CompileWorker,
}

/// The wasmtime configuration of an engine for `config`. The host and the compile worker both
/// build theirs here, so that the worker's artifacts load in the host's engine (wasmtime checks
/// this when deserializing; the instance allocator is no part of the check).
pub(crate) fn wasm_config(config: &RuntimeConfig, engine_use: EngineUse) -> Config {
    let mut wasm = Config::new();
    wasm.epoch_interruption(config.interruptible)
        .max_wasm_stack(config.limits.stack.as_usize())
        .parallel_compilation(true)
        .concurrency_support(false)
        .wasm_component_model(true);
    match engine_use {
        EngineUse::Host => {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(config.max_instances)
                .total_core_instances(
                    config
                        .max_instances
                        .saturating_mul(CORE_INSTANCES_PER_COMPONENT),
                )
                .total_memories(config.max_instances)
                .total_tables(config.max_instances.saturating_mul(TABLES_PER_COMPONENT))
                .max_memories_per_component(1)
                .max_tables_per_component(TABLES_PER_COMPONENT)
                .max_memory_size(config.limits.memory.as_usize())
                .table_elements(config.limits.table_elements as usize);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            if std::env::var_os(PERFMAP_ENV).is_some_and(|v| v == "1") {
                // Names guest functions in `perf report` (written to /tmp/perf-<pid>.map).
                wasm.profiler(ProfilingStrategy::PerfMap);
            }
        }
        EngineUse::CompileWorker => {
            wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        }
    }
    wasm
}

/// A compiled component, with the worker's artifact when it came from one (what the disk cache
/// stores, so it need not be serialized again).
pub(crate) struct Compiled {
    pub component: Component,
    pub artifact: Option<Vec<u8>>,
}

/// Compile `bytes` for `engine` as `config` says: in a capped child process when
/// `config.compile_worker` is set, else on a helper thread (trusted components only).
pub(crate) fn compile(
    engine: &Engine,
    config: &RuntimeConfig,
    name: &str,
    bytes: &[u8],
) -> Result<Compiled, LoadError> {
    let started = Instant::now();
    let compiled = match &config.compile_worker {
        Some(program) => compile_in_worker(engine, config, program, name, bytes)?,
        None => Compiled {
            component: compile_in_thread(engine, config.compile_timeout, name, bytes)?,
            artifact: None,
        },
    };
    tracing::debug!(component = name, elapsed = ?started.elapsed(), worker = config.compile_worker.is_some(), "compiled");
    Ok(compiled)
}

/// Compile on a helper thread so that a slow component cannot stall the caller past `limit`.
/// Cranelift cannot be cancelled: a timed-out compilation finishes in the background, using a
/// core and as much memory as it takes, and its result is dropped. For trusted components only.
fn compile_in_thread(
    engine: &Engine,
    limit: Duration,
    name: &str,
    bytes: &[u8],
) -> Result<Component, LoadError> {
    let (tx, rx) = mpsc::channel();
    let engine = engine.clone();
    let owned = bytes.to_vec();
    std::thread::Builder::new()
        .name(format!("sluice-compile-{name}"))
        .spawn(move || {
            let _ = tx.send(Component::new(&engine, &owned));
        })
        .map_err(|e| LoadError::Describe {
            name: name.to_string(),
            reason: format!("cannot start a compile thread: {e}"),
        })?;
    match rx.recv_timeout(limit) {
        Ok(Ok(component)) => Ok(component),
        Ok(Err(e)) => Err(LoadError::Invalid {
            name: name.to_string(),
            reason: printable(format!("{e:#}").as_bytes(), REASON_MAX),
        }),
        Err(_) => Err(LoadError::CompileTimeout {
            name: name.to_string(),
            limit,
            process_stopped: false,
        }),
    }
}

/// A started worker, killed (SIGKILL) and reaped when dropped unless it has been waited for.
struct Worker {
    child: Child,
    reaped: bool,
}

impl Worker {
    /// Wait until the worker ends or `deadline` passes; `None` when it is still running.
    fn wait_until(&mut self, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// SIGKILL and reap.
    fn stop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resource limits applied in the child between `fork` and `exec`.
#[derive(Clone, Copy)]
struct ChildLimits {
    address_space: u64,
    cpu_seconds: u64,
    parent: libc::pid_t,
}

impl ChildLimits {
    /// Runs in the forked child: only async-signal-safe calls, no allocation.
    fn apply(&self) -> std::io::Result<()> {
        fn set(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
            let limit = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            // SAFETY: setrlimit reads the struct we pass and nothing else.
            if unsafe { libc::setrlimit(resource, &limit) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        set(libc::RLIMIT_AS, self.address_space, self.address_space)?;
        // SIGXCPU at the soft limit, SIGKILL at the hard one.
        set(
            libc::RLIMIT_CPU,
            self.cpu_seconds,
            self.cpu_seconds.saturating_add(5),
        )?;
        set(libc::RLIMIT_CORE, 0, 0)?;
        // The lowest CPU priority: a compile (a tenant's upload) never takes a core from the
        // batches of running jobs. Best effort: a failure leaves the priority as it was.
        // SAFETY: setpriority is a system call changing only this process's nice value.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        // Die with the host, so that a worker never outlives a crashed or killed host.
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this process.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The host may have died between fork and prctl: then nobody would kill us.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != self.parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    }
}

/// Compile in a child process `program compile-worker`, capped in memory and time.
fn compile_in_worker(
    engine: &Engine,
    config: &RuntimeConfig,
    program: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<Compiled, LoadError> {
    let program_name = program.display().to_string();
    let start_error = |source| LoadError::CompileWorkerStart {
        program: program_name.clone(),
        source,
    };
    let settings = serde_json::to_string(config)
        .map_err(|e| start_error(std::io::Error::other(format!("encoding its settings: {e}"))))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let limits = ChildLimits {
        address_space: config.compile_memory.0,
        cpu_seconds: config
            .compile_timeout
            .as_secs()
            .saturating_add(1)
            .saturating_mul(cores)
            .saturating_add(CPU_SLACK_SECS),
        parent: std::process::id() as libc::pid_t,
    };
    let mut command = Command::new(program);
    command
        .arg(WORKER_SUBCOMMAND)
        .env(WORKER_CONFIG_ENV, settings)
        // Its stderr carries the reason only: no log lines, no backtraces.
        .env("SLUICE_LOG", "off")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: `apply` makes only async-signal-safe calls (setrlimit, prctl, getppid) and does not
    // allocate, as required between fork and exec.
    unsafe {
        command.pre_exec(move || limits.apply());
    }
    let started = Instant::now();
    let child = command.spawn().map_err(start_error)?;
    let mut worker = Worker {
        child,
        reaped: false,
    };
    let (stdin, stdout, stderr) = (
        worker.child.stdin.take(),
        worker.child.stdout.take(),
        worker.child.stderr.take(),
    );
    // The artifact cannot be larger than the worker's address space.
    let artifact_limit = config.compile_memory.0;
    let deadline = started + config.compile_timeout;

    let outcome = std::thread::scope(|scope| {
        // Feed, drain and collect on threads, so that no full pipe can block the worker or us;
        // each ends when the worker does (its pipe ends close).
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // An error means the worker died early; its exit status says why.
                let _ = stdin.write_all(bytes);
            }
        });
        let artifact = scope.spawn(move || -> std::io::Result<(Vec<u8>, bool)> {
            let mut out = Vec::new();
            if let Some(stdout) = stdout {
                stdout
                    .take(artifact_limit.saturating_add(1))
                    .read_to_end(&mut out)?;
            }
            let over = out.len() as u64 > artifact_limit;
            Ok((out, over))
        });
        let message = scope.spawn(move || read_bounded(stderr, STDERR_KEPT));

        let status = match worker.wait_until(deadline) {
            Ok(Some(status)) => status,
            Ok(None) => {
                worker.stop();
                tracing::debug!(component = name, limit = ?config.compile_timeout, "compilation timed out; its compiler process was killed");
                return Err(LoadError::CompileTimeout {
                    name: name.to_string(),
                    limit: config.compile_timeout,
                    process_stopped: true,
                });
            }
            Err(e) => {
                worker.stop();
                return Err(worker_failed(name, &program_name, "cannot wait for it", &e));
            }
        };
        let message = message.join().unwrap_or_default();
        let artifact = artifact.join();
        Ok((status, artifact, message))
    });
    let (status, artifact, message) = outcome?;

    match (status.code(), status.signal()) {
        (Some(exit_code::COMPILED), _) => {
            let (artifact, over) = match artifact {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    return Err(worker_failed(name, &program_name, "reading its output", &e));
                }
                Err(_) => {
                    return Err(worker_failed(
                        name,
                        &program_name,
                        "reading its output",
                        &"the reader thread panicked",
                    ));
                }
            };
            if over {
                return Err(worker_failed(
                    name,
                    &program_name,
                    "its output",
                    &format_args!("larger than compile_memory ({})", config.compile_memory),
                ));
            }
            // SAFETY: the artifact was made by `Engine::precompile_component` in the worker,
            // the host's own program named by the host's configuration, with an engine built
            // by `wasm_config` from the same settings; wasmtime checks the header and the
            // engine's compatibility before using it. It is in memory, not a mapped file.
            let component = unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| {
                worker_failed(
                    name,
                    &program_name,
                    "loading its output into the host's engine",
                    &format_args!("{e:#}"),
                )
            })?;
            Ok(Compiled {
                component,
                artifact: Some(artifact),
            })
        }
        (Some(exit_code::INVALID), _) => Err(LoadError::Invalid {
            name: name.to_string(),
            reason: printable(&message, REASON_MAX),
        }),
        (Some(exit_code::RESOURCES), _) => Err(LoadError::CompileMemory {
            name: name.to_string(),
            limit: config.compile_memory,
            how: format!(
                "failed to get memory from the system ({})",
                printable(&message, REASON_MAX)
            ),
        }),
        (None, Some(libc::SIGXCPU)) => Err(LoadError::CompileTimeout {
            name: name.to_string(),
            limit: config.compile_timeout,
            process_stopped: true,
        }),
        (None, Some(signal)) => Err(LoadError::CompileMemory {
            name: name.to_string(),
            limit: config.compile_memory,
            how: format!("died of signal {signal} ({})", signal_name(signal)),
        }),
        _ => Err(worker_failed(
            name,
            &program_name,
            &status.to_string(),
            &printable(&message, REASON_MAX),
        )),
    }
}

fn worker_failed(name: &str, program: &str, what: &str, why: &dyn std::fmt::Display) -> LoadError {
    LoadError::CompileWorkerFailed {
        name: name.to_string(),
        program: program.to_string(),
        reason: format!("{what}: {why}"),
    }
}

/// The first `keep` bytes of `pipe`, reading (and dropping) the rest until it closes.
fn read_bounded(pipe: Option<impl Read>, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kept
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "SIGABRT: an allocation failed",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        _ => "a signal",
    }
}

/// `bytes` as text fit to print: invalid UTF-8 replaced, control and bidirectional-formatting
/// characters escaped (the text may quote the guest), trailing whitespace dropped, cut after
/// about `max` bytes.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (at, c) in text.char_indices() {
        if out.len() >= max {
            out.push_str(&format!("… ({} more bytes)", text.len() - at));
            break;
        }
        let bidi = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The worker's side: `host compile-worker`. Reads the settings from [`WORKER_CONFIG_ENV`] and
/// the component from stdin, writes the precompiled artifact to stdout and returns the exit code
/// of [`exit_code`]; a reason goes to stderr. Runs under the limits the host set.
pub fn run_compile_worker() -> i32 {
    let fail = |code: i32, reason: &dyn std::fmt::Display| {
        let _ = writeln!(std::io::stderr().lock(), "{reason}");
        code
    };
    let Some(settings) = std::env::var_os(WORKER_CONFIG_ENV) else {
        return fail(
            exit_code::BAD_REQUEST,
            &format_args!(
                "{WORKER_CONFIG_ENV} is not set: this subcommand is run by the host, not by hand"
            ),
        );
    };
    let config: RuntimeConfig = match serde_json::from_str(&settings.to_string_lossy()) {
        Ok(config) => config,
        Err(e) => {
            return fail(
                exit_code::BAD_REQUEST,
                &format_args!("bad {WORKER_CONFIG_ENV}: {e}"),
            );
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin()
        .lock()
        .take(config.max_component_size.0.saturating_add(1))
        .read_to_end(&mut bytes)
    {
        return fail(
            exit_code::BAD_REQUEST,
            &format_args!("reading the component from stdin: {e}"),
        );
    }
    if bytes.len() as u64 > config.max_component_size.0 {
        return fail(
            exit_code::BAD_REQUEST,
            &format_args!(
                "the component is over max_component_size ({})",
                config.max_component_size
            ),
        );
    }
    let engine = match Engine::new(&wasm_config(&config, EngineUse::CompileWorker)) {
        Ok(engine) => engine,
        Err(e) => {
            return fail(
                exit_code::BAD_REQUEST,
                &format_args!("cannot build the engine: {e:#}"),
            );
        }
    };
    match engine.precompile_component(&bytes) {
        Ok(artifact) => {
            drop(bytes);
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&artifact).and_then(|()| stdout.flush()) {
                Ok(()) => exit_code::COMPILED,
                // The host went away or stopped reading; nobody is left to tell.
                Err(e) => fail(
                    exit_code::BAD_REQUEST,
                    &format_args!("writing the artifact: {e}"),
                ),
            }
        }
        // An I/O error of the system (mapping memory, most likely under RLIMIT_AS) says nothing
        // about the component; anything else is the validator's or compiler's refusal.
        Err(e) if e.chain().any(|cause| cause.is::<std::io::Error>()) => {
            fail(exit_code::RESOURCES, &format_args!("{e:#}"))
        }
        Err(e) => fail(exit_code::INVALID, &format_args!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_and_cuts() {
        assert_eq!(
            printable(b"bad\n\x1b[31mred\t\xff\n", 100),
            "bad\\n\\u{1b}[31mred\\t\u{fffd}"
        );
        assert_eq!(printable("a\u{202e}b".as_bytes(), 100), "a\\u{202e}b");
        let long = "x".repeat(10_000);
        let cut = printable(long.as_bytes(), 100);
        assert!(cut.starts_with(&"x".repeat(100)), "{cut}");
        assert!(cut.ends_with("(9900 more bytes)"), "{cut}");
    }

    #[test]
    fn read_bounded_keeps_a_prefix_and_drains_the_rest() {
        let data = vec![b'e'; 100_000];
        let kept = read_bounded(Some(&data[..]), STDERR_KEPT);
        assert_eq!(kept.len(), STDERR_KEPT);
        assert!(read_bounded(None::<&[u8]>, 10).is_empty());
    }
}
