//! No client can hang, exhaust or kill the ingest sources (issue 14), through the real `host`
//! binary on real sockets on 127.0.0.1: slow heads and bodies are cut off, idle connections
//! over the cap are answered 503, concurrent bodies over the memory cap 429 with the host's
//! memory bounded, a job out of file descriptors keeps running and serving, and a 200 MB line
//! without a newline on a socket source is skipped and counted in bounded memory.
//!
//! The http limits are the defaults (`header_timeout` 10 s, `body_timeout` 30 s,
//! `max_connections` 512, `max_inflight_bytes` 4 × `max_request_bytes`); the socket's
//! `max_line_bytes` is 1 MiB.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_tests::{JobDir, free_port, post, rss_of, run_measured, wait_for};

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 512;

/// The connections a host started by this test serves at once: `max_connections`, or half
/// the open-file limit it inherits when that is lower.
fn connection_cap() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` only writes the struct it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit");
    MAX_CONNECTIONS.min(usize::try_from(limit.rlim_cur / 2).unwrap_or(usize::MAX))
}

/// An http source `events` on `port` with a checkpoint, its records (or their count per
/// batch, `count`) written under `out/`.
fn http_manifest(port: u16, count: bool) -> String {
    let (input, streams) = if count {
        (
            "n",
            "[[streams]]\nname = \"n\"\nop = \"count\"\ninput = \"events\"\n",
        )
    } else {
        ("events", "")
    };
    format!(
        r#"[job]
name = "ingest"
batch_interval = "100ms"
partitions = 1
checkpoint = "ckpt"

[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{port}"

{streams}
[[sinks]]
kind = "text_files"
input = "{input}"
prefix = "out/events"
"#
    )
}

/// A running job whose stderr is collected; killed if the test ends without stopping it.
struct Running {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let (child, log) = sluice_tests::spawn_logged(&mut cmd);
        Self {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn wait_log(&self, what: &str) {
        wait_for(what, || self.log().contains(what));
    }

    fn assert_alive(&mut self) {
        let status = self
            .child
            .as_mut()
            .expect("running")
            .try_wait()
            .expect("wait");
        assert!(status.is_none(), "the job died: {status:?}\n{}", self.log());
    }

    /// SIGTERM, then the exit code and the whole log.
    fn stop(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the job did not stop on SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Let the stderr reader drain.
        std::thread::sleep(Duration::from_millis(200));
        (code, self.log())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_http_job(dir: &JobDir, port: u16, count: bool, max_files: Option<u64>) -> Running {
    dir.manifest(&http_manifest(port, count));
    let mut cmd = dir.command(&[]);
    if let Some(limit) = max_files {
        // SAFETY: only an async-signal-safe system call runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let job = Running::start(cmd);
    job.wait_log("listening on http://");
    job
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint")
}

/// What the server sent on `stream` so far without waiting: `None` while nothing came and the
/// connection is open; `Some(text)` once it answered or closed (`""` for a bare close).
fn poll_answer(stream: &mut TcpStream) -> Option<String> {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let result = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Some(()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                break (!answer.is_empty()).then_some(());
            }
            Err(_) => break Some(()),
        }
    };
    stream.set_nonblocking(false).expect("blocking");
    result.map(|()| String::from_utf8_lossy(&answer).into_owned())
}

/// Post `body` until it is acknowledged (at most `within`); the answers seen.
fn post_until_ok(port: u16, body: &[u8], within: Duration) -> Vec<u16> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let status = post(port, "/ingest/events", body).map_or(0, |(status, _)| status);
        seen.push(status);
        if status == 200 || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn slow_heads_and_slow_bodies_are_cut_off_while_the_job_keeps_serving() {
    let dir = JobDir::new();
    let port = free_port();
    let job = start_http_job(&dir, port, false, None);

    // A head sent a header line every 500 ms, never finished.
    let slow_head = std::thread::spawn(move || {
        let mut stream = connect(port);
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("read timeout");
        let start = Instant::now();
        let _ = stream.write_all(b"POST /ingest/events HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for _ in 0..80 {
            let _ = stream.write_all(b"X-Slow: 1\r\n");
            let mut buf = [0u8; 1024];
            match stream.read(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // Closed (0), reset, or an answer: cut off.
                _ => return Some(start.elapsed()),
            }
        }
        None
    });
    // A whole head announcing 1000 bytes, then a byte every 500 ms.
    let slow_body = std::thread::spawn(move || {
        let mut stream = connect(port);
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("read timeout");
        let start = Instant::now();
        let _ = stream.write_all(
            b"POST /ingest/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nslow 1\n",
        );
        let mut answer = Vec::new();
        for _ in 0..200 {
            let _ = stream.write_all(b"x");
            let mut buf = [0u8; 1024];
            match stream.read(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => {
                    return Some((
                        start.elapsed(),
                        String::from_utf8_lossy(&answer).into_owned(),
                    ));
                }
            }
        }
        None
    });

    // Meanwhile the endpoint takes real posts.
    std::thread::sleep(Duration::from_secs(1));
    let (status, body) = post(port, "/ingest/events", b"real 1\nreal 2\n").expect("a post");
    assert_eq!(status, 200, "{body}\n{}", job.log());

    let head_cut = slow_head.join().expect("the slow head");
    let head_cut =
        head_cut.unwrap_or_else(|| panic!("a slow head was never cut off\n{}", job.log()));
    assert!(
        head_cut < HEADER_TIMEOUT + Duration::from_secs(10),
        "a slow head is cut off within the header timeout, not after {head_cut:?}"
    );
    let (body_cut, answer) = slow_body
        .join()
        .expect("the slow body")
        .unwrap_or_else(|| panic!("a slow body was never cut off\n{}", job.log()));
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a slow body is answered 408: {answer:?}"
    );
    assert!(
        body_cut < BODY_TIMEOUT + Duration::from_secs(15),
        "a slow body is cut off within the body timeout, not after {body_cut:?}"
    );

    let (status, body) = post(port, "/ingest/events", b"after 3\n").expect("a post");
    assert_eq!(status, 200, "{body}");
    let (code, log) = job.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("(header_timeout)"), "{log}");
    assert!(log.contains("answered 408"), "{log}");
    assert_eq!(
        dir.output_lines("out/events"),
        ["after 3", "real 1", "real 2"],
        "only the acknowledged records, none of the cut-off requests"
    );
}

#[test]
fn idle_connections_over_the_cap_get_503_and_posts_are_served_once_the_idle_are_cut() {
    const OVER: usize = 40;
    let dir = JobDir::new();
    let port = free_port();
    let mut job = start_http_job(&dir, port, false, None);

    let cap = connection_cap();
    let mut idle: Vec<TcpStream> = (0..cap + OVER).map(|_| connect(port)).collect();
    // The connections past the cap are answered at once; the others wait for a request.
    let mut answers: Vec<Option<String>> = vec![None; idle.len()];
    let deadline = Instant::now() + Duration::from_secs(8);
    let refused = |answers: &[Option<String>]| {
        answers
            .iter()
            .flatten()
            .filter(|a| a.starts_with("HTTP/1.1 503"))
            .count()
    };
    while refused(&answers) < OVER && Instant::now() < deadline {
        for (stream, answer) in idle.iter_mut().zip(answers.iter_mut()) {
            if answer.is_none() {
                *answer = poll_answer(stream);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let refusals: Vec<&String> = answers.iter().flatten().collect();
    assert_eq!(
        refused(&answers),
        OVER,
        "every connection past {cap} is refused, the others wait: {refusals:?}"
    );
    assert!(
        refusals.iter().all(|a| a.contains("Retry-After: 1")),
        "{refusals:?}"
    );
    // A real post now finds the endpoint full: 503, nothing taken.
    let (status, _) = post(port, "/ingest/events", b"refused 1\n").expect("an answer");
    assert_eq!(status, 503);
    job.assert_alive();

    // The idle connections are cut off after the header timeout...
    let deadline = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(20);
    while answers.iter().any(Option::is_none) && Instant::now() < deadline {
        for (stream, answer) in idle.iter_mut().zip(answers.iter_mut()) {
            if answer.is_none() {
                *answer = poll_answer(stream);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let waiting = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!(
        waiting, 0,
        "idle connections still open past the header timeout"
    );
    drop(idle);
    // ...and real posts are served again.
    let seen = post_until_ok(port, b"served 1\nserved 2\n", Duration::from_secs(10));
    assert_eq!(seen.last(), Some(&200), "{seen:?}\n{}", job.log());
    let (code, log) = job.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("refused with 503"), "{log}");
    assert_eq!(dir.output_lines("out/events"), ["served 1", "served 2"]);
}

#[test]
fn concurrent_bodies_over_the_memory_cap_get_429_and_the_host_memory_stays_bounded() {
    // max_request_bytes is 16 MiB, so 64 MiB of bodies may be read at once: four of these.
    const CLIENTS: usize = 40;
    const LINE: usize = 1000;
    const LINES: usize = 15_000;
    const BODY: usize = LINE * LINES;
    let dir = JobDir::new();
    let port = free_port();
    let job = start_http_job(&dir, port, true, None);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss_of(job.pid()).expect("the host's memory");

    let line = format!("{}\n", "a".repeat(LINE - 1));
    let body = Arc::new(line.repeat(LINES).into_bytes());
    let head = format!(
        "POST /ingest/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {BODY}\r\n\r\n"
    );
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = connect(port);
            stream.write_all(head.as_bytes()).expect("send a head");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let early: Vec<Option<String>> = clients.iter_mut().map(poll_answer).collect();
    let throttled: Vec<&String> = early.iter().flatten().collect();
    assert_eq!(
        throttled.len(),
        CLIENTS - 4,
        "all but four bodies are refused before they are sent: {throttled:?}"
    );
    assert!(
        throttled
            .iter()
            .all(|a| a.starts_with("HTTP/1.1 429")
                && a.to_ascii_lowercase().contains("retry-after: 1")),
        "{throttled:?}"
    );

    // Every client sends its body but the last line (the refused ones into closed
    // connections); the host holds the four it reads.
    let senders: Vec<_> = clients
        .into_iter()
        .map(|mut stream| {
            let body = body.clone();
            std::thread::spawn(move || {
                let sent = stream.write_all(&body[..BODY - LINE]).is_ok();
                (stream, sent)
            })
        })
        .collect();
    let mut peak = baseline;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_of(job.pid()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut clients: Vec<(TcpStream, bool)> = senders
        .into_iter()
        .map(|s| s.join().expect("a sender"))
        .collect();
    for _ in 0..25 {
        peak = peak.max(rss_of(job.pid()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "host RSS {} MiB idle, {} MiB at most while bodies were held",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        grown < 128 << 20,
        "the host grew by {} MiB holding bodies (64 MiB allowed in flight; {CLIENTS} × {} MB without a cap)",
        grown >> 20,
        BODY / 1_000_000
    );
    // The four finish and are acknowledged.
    let mut acked = 0;
    for ((stream, _), answer) in clients.iter_mut().zip(&early) {
        if answer.is_some() {
            continue;
        }
        stream
            .write_all(&body[BODY - LINE..])
            .expect("the last line");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&text).contains("accepted") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&text);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains(&format!("{{\"accepted\":{LINES}}}")),
            "{text}"
        );
        acked += 1;
    }
    assert_eq!(acked, 4);
    drop(clients);
    // A refused client sends it again later and is served.
    let seen = post_until_ok(port, &body, Duration::from_secs(20));
    assert_eq!(seen.last(), Some(&200), "{seen:?}");
    let (code, log) = job.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("answered 429"), "{log}");
    let counted: u64 = dir
        .output_lines("out/events")
        .iter()
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum();
    assert_eq!(counted, 5 * LINES as u64, "every acknowledged record, once");
}

#[test]
fn out_of_file_descriptors_the_job_keeps_running_and_serves_posts_after() {
    let dir = JobDir::new();
    let port = free_port();
    let mut job = start_http_job(&dir, port, false, Some(256));
    let (status, body) = post(port, "/ingest/events", b"before 1\n").expect("a post");
    assert_eq!(status, 200, "{body}");

    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| {
            TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(2),
            )
            .ok()
        })
        .collect();
    assert!(idle.len() > 200, "only {} connections opened", idle.len());
    // Batches go on (each one is recorded in the checkpoint, which needs files) while the
    // connections are held.
    let batches = |log: &str| log.matches("batch done").count();
    let before = batches(&job.log());
    wait_for("batches while the connections are held", || {
        batches(&job.log()) >= before + 10
    });
    job.assert_alive();
    drop(idle);
    let seen = post_until_ok(port, b"after 2\n", HEADER_TIMEOUT + Duration::from_secs(20));
    assert_eq!(seen.last(), Some(&200), "{seen:?}\n{}", job.log());
    let (code, log) = job.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("cannot record"), "{log}");
    assert_eq!(dir.output_lines("out/events"), ["after 2", "before 1"]);
}

#[test]
fn a_200_mb_line_without_newline_on_a_socket_is_skipped_and_counted_in_bounded_memory() {
    const LONG: usize = 200 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    let dir = JobDir::new();
    dir.manifest(&format!(
        r#"[job]
name = "long-line"
batch_interval = "100ms"
partitions = 1

[[sources]]
name = "lines"
kind = "socket"
host = "127.0.0.1"
port = {port}

[[sinks]]
kind = "text_files"
input = "lines"
prefix = "out/lines"
"#
    ));
    let peer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the source connects");
        stream.write_all(b"first\n").expect("write");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..LONG / chunk.len() {
            stream.write_all(&chunk).expect("write the long line");
        }
        stream.write_all(b"\nsecond\nthird\n").expect("write");
    });
    let measured = run_measured(&mut dir.command(&["--until-idle"]), b"");
    peer.join().expect("the peer");
    let log = measured.stderr_text();
    eprintln!("peak RSS {} MiB", measured.peak_rss >> 20);
    assert_eq!(measured.code, Some(0), "{}", measured.describe());
    assert_eq!(
        dir.output_lines("out/lines"),
        ["first", "second", "third"],
        "{}",
        measured.describe()
    );
    assert!(
        log.contains(&format!(
            "line 2 from 127.0.0.1:{port} is {LONG} bytes, over max_line_bytes"
        )),
        "{log}"
    );
    assert!(log.contains("1 input lines"), "counted: {log}");
    assert!(
        measured.peak_rss < 64 << 20,
        "a 200 MB line is never held: peak RSS {} MiB",
        measured.peak_rss >> 20
    );
}

/// `max_line_bytes` on a socket source is the manifest's: a 40-byte line over a 16-byte cap is
/// skipped and counted; the limits of one kind of source are refused on another.
#[test]
fn source_limits_are_manifest_fields() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    let dir = JobDir::new();
    dir.manifest(&format!(
        r#"[job]
name = "short-lines"
batch_interval = "100ms"
partitions = 1

[[sources]]
name = "lines"
kind = "socket"
host = "127.0.0.1"
port = {port}
max_line_bytes = "16B"

[[sinks]]
kind = "text_files"
input = "lines"
prefix = "out/lines"
"#
    ));
    let peer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the source connects");
        stream
            .write_all(format!("short\n{}\nalso short\n", "y".repeat(40)).as_bytes())
            .expect("write");
    });
    let measured = run_measured(&mut dir.command(&["--until-idle"]), b"");
    peer.join().expect("the peer");
    assert_eq!(measured.code, Some(0), "{}", measured.describe());
    assert_eq!(dir.output_lines("out/lines"), ["also short", "short"]);
    assert!(
        measured
            .stderr_text()
            .contains("is 40 bytes, over max_line_bytes"),
        "{}",
        measured.describe()
    );

    // An http limit on a socket source, and a header timeout out of range, are refused.
    dir.manifest(&format!(
        "[job]\nname = \"x\"\n\n[[sources]]\nname = \"lines\"\nkind = \"socket\"\nhost = \"127.0.0.1\"\nport = {port}\nmax_connections = 5\n"
    ));
    let out = run_measured(&mut dir.command(&["--check"]), b"");
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr_text().contains("max_connections"),
        "{}",
        out.describe()
    );
    dir.manifest(
        "[job]\nname = \"x\"\ncheckpoint = \"ckpt\"\n\n[[sources]]\nname = \"lines\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\nheader_timeout = \"2h\"\n\n[[sinks]]\nkind = \"print\"\ninput = \"lines\"\n",
    );
    let out = run_measured(&mut dir.command(&["--check"]), b"");
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr_text().contains("header_timeout") && out.stderr_text().contains("1h"),
        "{}",
        out.describe()
    );
}
