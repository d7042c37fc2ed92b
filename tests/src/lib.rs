//! Helpers shared by the end-to-end tests and benchmarks: where the built components and the
//! `host` binary are, building them on first use so `cargo test` works from a fresh clone.

pub mod kafka;
pub mod serve;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_host::engine::DStream;
use sluice_host::sinks::SinkBatch;

use sluice_host::metrics::Registry;
use sluice_host::udf::{RuntimeConfig, UdfComponent, UdfRuntime};

/// The workspace root.
pub fn root() -> PathBuf {
    // `cargo test` sets CARGO_MANIFEST_DIR when it runs a test: prefer it to the compile-time
    // value, which is stale when one target directory is shared by clones at different paths.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Run `f` once per test process and, through a lock file, once at a time across processes.
fn once_locked(cell: &'static OnceLock<()>, name: &str, f: impl FnOnce()) {
    cell.get_or_init(|| {
        let dist = root().join("dist");
        std::fs::create_dir_all(&dist).expect("create dist/");
        let lock =
            File::create(dist.join(format!(".{name}.lock"))).expect("create a lock file in dist/");
        lock.lock().expect("lock dist/");
        f();
    });
}

/// Build every component (bundled UDFs and hostile test guests) once per test process; cargo
/// rebuilds only what changed, so a stale component is never tested.
fn ensure_components() {
    static BUILT: OnceLock<()> = OnceLock::new();
    once_locked(&BUILT, "components", || {
        let status = cargo()
            .args(["xtask", "udfs", "--tests"])
            .status()
            .expect("run cargo xtask");
        assert!(status.success(), "`cargo xtask udfs --tests` failed");
    });
}

/// The path of a bundled component, e.g. `udf("text")` for `dist/udfs/text.wasm`.
pub fn udf(name: &str) -> PathBuf {
    ensure_components();
    root().join("dist/udfs").join(format!("{name}.wasm"))
}

/// The path of a test guest, e.g. `test_guest("hostile")`.
pub fn test_guest(name: &str) -> PathBuf {
    ensure_components();
    root().join("dist/test-guests").join(format!("{name}.wasm"))
}

/// The `host` binary of the same profile as this test, built (or brought up to date) once per
/// test process.
pub fn host_bin() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf();
    once_locked(&BUILT, "host-bin", || {
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "-p", "sluice-host", "--bin", "host"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("run cargo build").success(),
            "building the host binary failed"
        );
    });
    profile_dir.join("host")
}

/// A runtime with `config` and a fresh metrics registry.
pub fn runtime_with(config: RuntimeConfig) -> UdfRuntime {
    UdfRuntime::new(config, Arc::new(Registry::default())).expect("start the UDF runtime")
}

/// Load a component file into `runtime`, panicking with the error if it fails.
pub fn load(runtime: &UdfRuntime, path: &Path) -> Arc<UdfComponent> {
    runtime
        .load_file(path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// A job in a temporary folder: its manifest, input files, a `udfs/` folder holding every
/// bundled component and test guest, and its outputs.
pub struct JobDir {
    dir: tempfile::TempDir,
}

impl Default for JobDir {
    fn default() -> Self {
        Self::new()
    }
}

impl JobDir {
    /// A fresh folder with `udfs/` filled.
    pub fn new() -> Self {
        ensure_components();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let udfs = dir.path().join("udfs");
        std::fs::create_dir_all(&udfs).expect("create udfs/");
        for from in ["dist/udfs", "dist/test-guests"] {
            for entry in std::fs::read_dir(root().join(from)).expect("list components") {
                let path = entry.expect("a directory entry").path();
                if path.extension().is_some_and(|e| e == "wasm") {
                    let name = path.file_name().expect("a file name");
                    std::fs::copy(&path, udfs.join(name)).expect("copy a component");
                }
            }
        }
        Self { dir }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `contents` to `rel` (folders created), dated five seconds back so a directory
    /// source takes it at once.
    pub fn file(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.write_fresh(rel, contents);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("date a file back");
        path
    }

    /// Write `contents` to `rel` as it is (a file a directory source waits a listing for).
    pub fn write_fresh(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a folder");
        }
        std::fs::write(&path, contents).expect("write a file");
        path
    }

    /// Write the manifest `job.toml`.
    pub fn manifest(&self, text: &str) -> PathBuf {
        self.write_fresh("job.toml", text)
    }

    /// `host run job.toml --udfs udfs` with `args`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(host_bin());
        cmd.arg("run")
            .arg(self.path().join("job.toml"))
            .arg("--udfs")
            .arg(self.path().join("udfs"))
            .args(args)
            .env("SLUICE_COMPONENT_CACHE", self.path().join("cache"))
            .env("SLUICE_LOG", "info");
        cmd
    }

    /// Start `host run job.toml --udfs udfs` with `args`, output piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host run")
    }

    /// Start `host run job.toml --udfs udfs` with `args`, stdout dropped and stderr gathered
    /// line by line into the returned log as it comes (for tests that wait on what it says).
    pub fn spawn_logged(&self, args: &[&str]) -> (Child, Arc<Mutex<String>>) {
        spawn_logged(&mut self.command(args))
    }

    /// Run `host run job.toml --until-idle` to the end.
    pub fn run_until_idle(&self) -> std::process::Output {
        self.command(&["--until-idle"])
            .output()
            .expect("run the host binary")
    }

    /// Every line of every batch a `text_files` sink with `prefix` wrote, sorted.
    pub fn output_lines(&self, prefix: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .batch_dirs(prefix)
            .iter()
            .flat_map(|dir| part_lines(dir))
            .collect();
        lines.sort();
        lines
    }

    /// The lines of the newest whole batch folder (one with `_SUCCESS`) a `text_files` sink
    /// with `prefix` wrote; empty when there is none.
    pub fn last_batch_lines(&self, prefix: &str) -> Vec<String> {
        self.batch_dirs(prefix)
            .into_iter()
            .rfind(|d| d.join("_SUCCESS").exists())
            .map_or_else(Vec::new, |dir| part_lines(&dir))
    }

    /// The batch folders `prefix-<time>…` written so far, oldest first.
    pub fn batch_dirs(&self, prefix: &str) -> Vec<PathBuf> {
        let prefix_path = self.path().join(prefix);
        let parent = prefix_path.parent().expect("a prefix with a folder");
        let stem = format!(
            "{}-",
            prefix_path
                .file_name()
                .expect("a prefix name")
                .to_string_lossy()
        );
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&stem))
                    })
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }
}

/// Copy the folder `from` into `to`, recursively (fixtures into a test's folder).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

/// The lines of a batch folder's `part-*` files, in file order.
pub fn part_lines(dir: &Path) -> Vec<String> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list a batch folder")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|p| match std::fs::read_to_string(p) {
            Ok(text) => text.lines().map(String::from).collect::<Vec<_>>(),
            // A batch folder replaced whole while it is read (a re-run batch after a
            // restart): the caller reads again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read a part file {}: {e}", p.display()),
        })
        .collect()
}

/// Text of an output, for assertion messages.
pub fn describe(output: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The record lines `print` wrote to stdout (headers, rules, `...` and blank lines left out),
/// sorted.
pub fn printed_records(stdout: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stdout);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            !(l.is_empty() || l.starts_with("----") || l.starts_with("Time: ") || *l == "...")
        })
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// Wait until `done` holds, up to 60 s.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One batch a stream produced, as a closure sink saw it: keys and values as text.
#[derive(Debug, Clone)]
pub struct SeenBatch {
    /// The batch id.
    pub id: u64,
    /// The batch time.
    pub time: i64,
    /// `(key, value)` of every record (an empty key for unkeyed records).
    pub records: Vec<(String, String)>,
}

/// Every batch a stream produced, in order.
pub type Seen = Arc<Mutex<Vec<SeenBatch>>>;

/// Add a foreach-batch sink to `stream` that keeps every batch it gets.
pub fn record_batches(stream: &DStream) -> Seen {
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    stream.foreach_batch(move |b: &SinkBatch<'_>| {
        let records = b
            .partitions
            .iter()
            .flat_map(|p| p.records())
            .map(|r| {
                (
                    String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned(),
                    String::from_utf8_lossy(r.value).into_owned(),
                )
            })
            .collect();
        keep.lock().unwrap().push(SeenBatch {
            id: b.id,
            time: b.time,
            records,
        });
        Ok(())
    });
    seen
}

/// A free port on 127.0.0.1 (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `POST path` to 127.0.0.1:`port` with `body`: the status code and the answer's body, or the
/// error when there was no answer (the server is down, or died mid-request).
pub fn post(port: u16, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http(port, "POST", path, "Content-Type: text/plain\r\n", body)
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`headers`: further header lines, each ending in
/// CRLF): the status code and the answer's body, or the error when there was no answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    http_answer(port, method, path, headers, body).map(|a| (a.status, a.body))
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The value of header `name` (any case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// [`http`], with the answer's headers.
pub fn http_answer(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<Answer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A server may answer before it reads the request (a refusal at accept: 503) and close:
    // the write then fails with a broken pipe or a reset, but the answer is there to read.
    let refused_early = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    };
    match stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
    {
        Err(e) if !refused_early(&e) => return Err(e),
        _ => {}
    }
    let mut answer = Vec::new();
    // A reset after the answer arrived (the server closed with our body unread) still leaves
    // the answer read.
    if let Err(e) = stream.read_to_end(&mut answer)
        && (answer.is_empty() || !refused_early(&e))
    {
        return Err(e);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// What a measured run of a process gave: its exit, output and peak memory.
pub struct Measured {
    /// The exit code, `None` when a signal ended it.
    pub code: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its peak resident memory (the kernel's `ru_maxrss`), in bytes.
    pub peak_rss: u64,
}

impl Measured {
    /// stderr as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Everything, for assertion messages (long output cut to its first and last 4 KiB).
    pub fn describe(&self) -> String {
        fn cut(bytes: &[u8]) -> String {
            let text = String::from_utf8_lossy(bytes);
            if text.len() <= 8192 {
                return text.into_owned();
            }
            let head: String = text.chars().take(4096).collect();
            let tail: String = text
                .chars()
                .rev()
                .take(4096)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("{head}\n[… {} bytes …]\n{tail}", text.len())
        }
        format!(
            "exit {:?}, peak RSS {} MiB\n--- stdout\n{}\n--- stderr ({} bytes)\n{}",
            self.code,
            self.peak_rss >> 20,
            cut(&self.stdout),
            self.stderr.len(),
            cut(&self.stderr)
        )
    }
}

/// Run `cmd` to the end with `stdin` as its input, and measure its peak memory: the process is
/// reaped with `wait4`, whose resource usage is that one child's.
#[allow(clippy::zombie_processes)] // reaped by `wait4` below, not by `Child::wait`
pub fn run_measured(cmd: &mut Command, stdin: &[u8]) -> Measured {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the process");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (std's `Child` is never waited on).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let _ = writer.join();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        peak_rss: (usage.ru_maxrss as u64) * 1024,
    }
}

/// The resident memory of a running process, in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Start `cmd` with stdout dropped and stderr gathered line by line into the returned log as it
/// comes.
pub fn spawn_logged(cmd: &mut Command) -> (Child, Arc<Mutex<String>>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the job");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let keep = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut log = keep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

/// A small deterministic generator (SplitMix64), so a seed replays a crash test.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Lines of the child's stderr as they come, on a channel.
pub fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
