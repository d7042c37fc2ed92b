//! A receiver's write-ahead log damaged between a `kill -9` and the restart, through the `host`
//! binary: an HTTP-ingest job with a checkpoint takes four posts (each acknowledged with 200,
//! each one record in the log, none in a batch yet), is killed with SIGKILL, its log is damaged,
//! and it is started again. For every kind of damage the restart either resumes with exactly
//! the acknowledged records (each once in the output) or exits non-zero within a bounded time,
//! naming the file and the byte offset on stderr. Never silent loss, never doubling, never a
//! hang.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_tests::{JobDir, free_port, post, wait_for};

const SEGMENT: &str = "00000000000000000000.wal";

/// http source → text files, every record as it came.
fn job(port: u16, interval: &str) -> String {
    format!(
        r#"[job]
name = "ingest"
batch_interval = "{interval}"
checkpoint = "ckpt"

[[sources]]
name = "events"
kind = "http"
address = "127.0.0.1:{port}"

[[sinks]]
kind = "text_files"
input = "events"
prefix = "out/events"
"#
    )
}

/// A job killed with SIGKILL after four acknowledged posts that live only in its log.
struct Crashed {
    dir: JobDir,
    port: u16,
    /// Every line the client was acknowledged, sorted.
    acked: Vec<String>,
    /// Where each record starts in the segment, and where the last ends.
    starts: Vec<u64>,
    end: u64,
}

impl Crashed {
    fn new() -> Crashed {
        let port = free_port();
        let dir = JobDir::new();
        // The first tick seals at once; the next is a minute away: the posts stay unsealed.
        dir.manifest(&job(port, "60s"));
        let (mut child, log) = dir.spawn_logged(&[]);
        wait_for("the first, empty batch", || {
            log.lock().expect("log").contains("batch done")
        });
        let mut acked = Vec::new();
        for i in 0..4 {
            let lines: Vec<String> = (0..=i).map(|j| format!("post{i}-line{j}")).collect();
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let (status, answer) = post(port, "/ingest/events", body.as_bytes()).expect("post");
            assert_eq!(status, 200, "{answer}");
            acked.extend(lines);
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        acked.sort();
        let data = std::fs::read(dir.path().join("ckpt/wal/events").join(SEGMENT)).expect("log");
        let mut starts = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            starts.push(at as u64);
            let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
            at += 8 + len;
        }
        assert_eq!(starts.len(), 4, "one record per post");
        Crashed {
            dir,
            port,
            acked,
            starts,
            end: data.len() as u64,
        }
    }

    fn wal(&self) -> PathBuf {
        self.dir.path().join("ckpt/wal/events")
    }

    fn segment(&self) -> PathBuf {
        self.wal().join(SEGMENT)
    }

    /// Start again: either it resumes (`Ok(log)`, after every acknowledged record is through
    /// the sink and a SIGTERM) or it exits non-zero (`Err(stderr)`), within 60 s.
    fn restart(&self) -> Result<String, String> {
        self.dir.manifest(&job(self.port, "100ms"));
        let started = Instant::now();
        let (mut child, log) = self.dir.spawn_logged(&[]);
        let text = || log.lock().expect("log").clone();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                // Let the reader thread take the rest of stderr.
                std::thread::sleep(Duration::from_millis(200));
                assert!(!status.success(), "exited 0 before SIGTERM\n{}", text());
                return Err(text());
            }
            if self.dir.output_lines("out/events").len() >= self.acked.len() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "neither resumed with every acknowledged record nor exited within 60 s\n{}",
                    text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Give a doubled record the time to show up, then stop gracefully.
        std::thread::sleep(Duration::from_millis(500));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "{}", text());
        Ok(text())
    }

    /// The restart refuses, naming `file` and `at byte {offset}`.
    fn refused(&self, file: &str, offset: u64) -> String {
        match self.restart() {
            Ok(log) => panic!("resumed after damage that loses acknowledged records\n{log}"),
            Err(err) => {
                assert!(
                    err.contains(file) && err.contains(&format!("at byte {offset}")),
                    "the error names {file} at byte {offset}:\n{err}"
                );
                assert!(err.contains("--accept-wal-loss"), "{err}");
                err
            }
        }
    }

    /// The restart resumes with exactly the acknowledged records, each once.
    fn resumed(&self) -> String {
        match self.restart() {
            Ok(log) => {
                assert_eq!(self.dir.output_lines("out/events"), self.acked, "{log}");
                log
            }
            Err(err) => panic!("refused a log that holds every acknowledged record\n{err}"),
        }
    }
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut data = std::fs::read(path).expect("read");
    f(&mut data);
    std::fs::write(path, data).expect("write");
}

#[test]
fn undamaged_the_acknowledged_records_come_back_once() {
    let c = Crashed::new();
    c.resumed();
}

#[test]
fn a_length_flipped_mid_segment_is_refused_not_cut_as_a_torn_tail() {
    let c = Crashed::new();
    // Record 1's length now claims far more than the file has: it used to read as an
    // interrupted last write, and records 1..3 were cut off with a warning only.
    let at = c.starts[1] as usize + 3;
    rewrite(&c.segment(), |d| d[at] ^= 0x40);
    c.refused(SEGMENT, c.starts[1]);
}

#[test]
fn truncation_at_a_record_boundary_is_refused() {
    let c = Crashed::new();
    let f = std::fs::File::options()
        .write(true)
        .open(c.segment())
        .expect("open");
    f.set_len(c.starts[3]).expect("truncate");
    let err = c.refused(SEGMENT, c.starts[3]);
    assert!(
        err.contains(&format!("up to log offset {}", c.end)),
        "{err}"
    );
}

#[test]
fn truncation_between_record_boundaries_is_refused() {
    let c = Crashed::new();
    let f = std::fs::File::options()
        .write(true)
        .open(c.segment())
        .expect("open");
    f.set_len(c.end - 5).expect("truncate");
    c.refused(SEGMENT, c.starts[3]);
}

#[test]
fn garbage_appended_past_the_acknowledged_end_is_cut_and_the_records_resume() {
    let c = Crashed::new();
    rewrite(&c.segment(), |d| {
        d.extend_from_slice(b"\x07\x00\x00garbage after the end")
    });
    let log = c.resumed();
    assert!(log.contains("past the last acknowledged offset"), "{log}");
    assert!(
        c.wal().join("lost").read_dir().expect("lost/").count() == 1,
        "the garbage is kept in lost/"
    );
}

#[test]
fn a_deleted_segment_is_refused() {
    let c = Crashed::new();
    std::fs::remove_file(c.segment()).expect("delete");
    c.refused(SEGMENT, 0);
}

#[test]
fn a_renamed_segment_is_refused() {
    let c = Crashed::new();
    // Under another offset: the log's start is missing.
    let moved = c.wal().join("00000000000000000007.wal");
    std::fs::rename(c.segment(), &moved).expect("rename");
    c.refused(SEGMENT, 0);
    // Under a name that is not a segment's: refused, naming it.
    let odd = c.wal().join("00000000000000000000.wal.bak");
    std::fs::rename(&moved, &odd).expect("rename");
    match c.restart() {
        Ok(log) => panic!("resumed without its segment\n{log}"),
        Err(err) => assert!(
            err.contains("00000000000000000000.wal.bak") && err.contains("not part of the log"),
            "{err}"
        ),
    }
}

#[test]
fn a_duplicated_segment_is_refused_not_replayed_twice() {
    let c = Crashed::new();
    // A copy under the name at the log's end used to be replayed as four more records.
    let copy = c.wal().join(format!("{:020}.wal", c.end));
    std::fs::copy(c.segment(), &copy).expect("copy");
    let err = c.refused(&format!("{:020}.wal", c.end), 0);
    assert!(err.contains(&format!("appending to ({SEGMENT}")), "{err}");
    std::fs::remove_file(&copy).expect("remove");
    // A copy whose range overlaps the original: both are named.
    let inside = c.wal().join("00000000000000000001.wal");
    std::fs::copy(c.segment(), &inside).expect("copy");
    let err = c.refused("00000000000000000001.wal", 0);
    assert!(err.contains(SEGMENT) && err.contains("overlap"), "{err}");
}

#[test]
fn a_sparse_huge_segment_is_refused_unread() {
    let c = Crashed::new();
    let f = std::fs::File::options()
        .write(true)
        .open(c.segment())
        .expect("open");
    f.set_len(40 << 30).expect("a sparse 40 GiB segment");
    let err = c.refused(SEGMENT, 0);
    assert!(err.contains("more than a segment can hold"), "{err}");
}

#[test]
fn a_symlink_to_dev_zero_is_refused() {
    let c = Crashed::new();
    std::fs::remove_file(c.segment()).expect("delete");
    std::os::unix::fs::symlink("/dev/zero", c.segment()).expect("symlink");
    let err = c.refused(SEGMENT, 0);
    assert!(err.contains("character device"), "{err}");
}

#[test]
fn a_fifo_in_place_of_a_segment_is_refused_without_blocking() {
    let c = Crashed::new();
    std::fs::remove_file(c.segment()).expect("delete");
    let status = std::process::Command::new("mkfifo")
        .arg(c.segment())
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let err = c.refused(SEGMENT, 0);
    assert!(err.contains("FIFO"), "{err}");
}
