//! The README's tutorial "a shared host in five minutes", run exactly as written: every `sh`
//! block between `<!-- tutorial:begin -->` and `<!-- tutorial:end -->` in README.md, in order,
//! as one bash script (`set -euo pipefail`) in a temporary folder holding a link to `dist/`,
//! with the release `host` first on `PATH` and a free `PORT`. The script starts `host serve`
//! itself; it runs in a process group of its own, which the test kills whatever happens, so no
//! server outlives it.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{free_port, host_bin, part_lines, root};

/// The tutorial's shell blocks, in order.
fn tutorial_blocks(readme: &str) -> Vec<String> {
    let begin = readme
        .find("<!-- tutorial:begin -->")
        .expect("README.md has <!-- tutorial:begin -->");
    let end = readme[begin..]
        .find("<!-- tutorial:end -->")
        .map(|e| begin + e)
        .expect("README.md has <!-- tutorial:end --> after its begin");
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in readme[begin..end].lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(String::new()),
            (Some(_), "```") => blocks.extend(block.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(block.is_none(), "an unclosed ```sh block in the tutorial");
    blocks
}

/// Kills the script's whole process group (bash, `host serve`, curl) when dropped.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the group this test created and leads.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn the_readme_tutorial_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let blocks = tutorial_blocks(&readme);
    assert!(blocks.len() >= 5, "the tutorial's blocks: {blocks:?}");
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    for step in [
        "host serve",
        "host deploy dist/udfs/text.wasm",
        "host submit",
        "host status",
        "host logs",
        "--name text",
        "host rollback text",
        "host stop",
    ] {
        assert!(script.contains(step), "the tutorial lost its step {step:?}");
    }

    let dir = tempfile::tempdir().expect("a temporary folder");
    std::os::unix::fs::symlink(root().join("dist"), dir.path().join("dist")).expect("link dist/");
    let bin = host_bin();
    let path = format!(
        "{}:{}",
        bin.parent().expect("the host's folder").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("PORT", port.to_string())
        .env("SLUICE_COMPONENT_CACHE", dir.path().join("cache"))
        .env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start bash");
    let group = Group(i32::try_from(child.id()).expect("a pid"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = started + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll bash") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(group);
    let _ = child.wait();
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let host_log = std::fs::read_to_string(dir.path().join("host.log")).unwrap_or_default();
    let shown = format!("stdout:\n{stdout}\nstderr:\n{stderr}\nhost.log:\n{host_log}");
    let status = status.unwrap_or_else(|| panic!("the tutorial took over 180 s\n{shown}"));
    assert!(status.success(), "the tutorial failed ({status})\n{shown}");
    eprintln!(
        "the tutorial ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // What the comments promise, in the order they promise it.
    let mut at = 0;
    for promised in [
        "no jobs",
        "text: deployed as version 1",
        "submitted job 'shout': running",
        "{\"accepted\":2}",
        "HELLO",
        "WORLD",
        "state:   running",
        "udf:     text#uppercase version 1",
        "deployed as version 2",
        "job 'shout': text#uppercase run version 2 from its next batch",
        "{\"accepted\":1}",
        "v2:AGAIN",
        "deployed again as version 3",
        "job 'shout': text#uppercase run version 3 from its next batch",
        "udf:     text#uppercase version 3",
        "job 'shout': stopped",
    ] {
        let found = stdout[at..]
            .find(promised)
            .unwrap_or_else(|| panic!("{promised:?} missing (after byte {at})\n{shown}"));
        at += found + promised.len();
    }
    // The host stopped: nothing listens on its port any more, and it said so.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the host still listens on {port}"
    );
    assert!(host_log.contains("sluice host stopped"), "{host_log}");

    // Every line posted came out exactly once, by the version bound when it ran.
    let out_dir = dir
        .path()
        .join("sluice-data/tenants/default/jobs/shout/out");
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(&out_dir).expect("the job's output folder") {
        let batch = entry.expect("an entry").path();
        if batch.join("_SUCCESS").exists() {
            for line in part_lines(&batch) {
                *lines.entry(line).or_default() += 1;
            }
        }
    }
    let expected: BTreeMap<String, usize> = ["HELLO", "WORLD", "v2:AGAIN", "ONCE MORE"]
        .into_iter()
        .map(|l| (l.to_string(), 1))
        .collect();
    assert_eq!(lines, expected, "in {}", out_dir.display());
    assert!(Path::new(&dir.path().join("sluice-data/default.token")).is_file());
}
