//! Bad jobs and bad input through the real `host` binary: each gets a clear message naming the
//! manifest line (or the batch and UDF) and a non-zero exit, or a counted, logged skip where the
//! job must go on.

use sluice_tests::{JobDir, describe, wait_for};

const HEAD: &str = "[job]\nname = \"bad\"\nbatch_interval = \"100ms\"\n\n[[sources]]\nname = \"lines\"\nkind = \"directory\"\npath = \"in\"\n";

/// Run `manifest` (after the common head when `with_head`), expecting failure; returns stderr.
fn refused(manifest: &str) -> String {
    let dir = JobDir::new();
    dir.file("in/a.txt", "a b\n");
    dir.manifest(manifest);
    let out = dir.run_until_idle();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "nothing runs: {}", describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn print_sink(input: &str) -> String {
    format!("\n[[sinks]]\nkind = \"print\"\ninput = \"{input}\"\n")
}

#[test]
fn malformed_toml_names_the_line() {
    let err = refused("[job]\nname = \"bad\"\nbatch_interval = 100ms\n");
    assert!(err.contains("job.toml:3:"), "{err}");
}

#[test]
fn an_unknown_field_names_the_line_and_the_field() {
    let err = refused(&format!(
        "{HEAD}\n[[streams]]\nname = \"w\"\nop = \"flat_map\"\ninput = \"lines\"\nudf = \"text#split_words\"\npartitions_count = 2\n{}",
        print_sink("w")
    ));
    assert!(
        err.contains("job.toml:15:") && err.contains("unknown field `partitions_count`"),
        "{err}"
    );
}

#[test]
fn an_unknown_stream_gets_a_suggestion() {
    let err = refused(&format!(
        "{HEAD}\n[[streams]]\nname = \"words\"\nop = \"flat_map\"\ninput = \"line\"\nudf = \"text#split_words\"\n{}",
        print_sink("wrds")
    ));
    assert!(
        err.contains("job.toml:10: stream 'words': input 'line' is not a source or a stream"),
        "{err}"
    );
    assert!(err.contains("hint: did you mean 'lines'?"), "{err}");
    assert!(
        err.contains("sink 1: input 'wrds' is not a source or a stream")
            && err.contains("did you mean 'words'?"),
        "{err}"
    );
    assert!(
        err.contains("2 problems"),
        "every problem is reported at once: {err}"
    );
}

#[test]
fn a_cycle_is_shown_as_a_path() {
    let err = refused(&format!(
        "{HEAD}\n[[streams]]\nname = \"a\"\nop = \"filter\"\ninput = \"b\"\nudf = \"text#non_empty\"\n\n[[streams]]\nname = \"b\"\nop = \"filter\"\ninput = \"a\"\nudf = \"text#non_empty\"\n{}",
        print_sink("b")
    ));
    assert!(
        err.contains("the streams form a cycle:")
            && (err.contains("a → b → a") || err.contains("b → a → b")),
        "{err}"
    );
}

#[test]
fn a_missing_component_lists_what_is_there() {
    let err = refused(&format!(
        "{HEAD}\n[[streams]]\nname = \"w\"\nop = \"flat_map\"\ninput = \"lines\"\nudf = \"txt#split_words\"\n{}",
        print_sink("w")
    ));
    assert!(
        err.contains("job.toml:10: stream 'w': component 'txt' not found"),
        "{err}"
    );
    assert!(
        err.contains("components there:") && err.contains("text"),
        "{err}"
    );
}

#[test]
fn a_missing_function_gets_a_suggestion() {
    let err = refused(&format!(
        "{HEAD}\n[[streams]]\nname = \"w\"\nop = \"flat_map\"\ninput = \"lines\"\nudf = \"text#split_word\"\n{}",
        print_sink("w")
    ));
    assert!(
        err.contains("split_word") && err.contains("did you mean 'split_words'?"),
        "{err}"
    );
}

#[test]
fn the_wrong_world_says_which_is_needed() {
    let err = refused(&format!(
        "{HEAD}\n[[streams]]\nname = \"w\"\nop = \"reduce\"\ninput = \"lines\"\nudf = \"text#split_words\"\n{}",
        print_sink("w")
    ));
    assert!(err.contains("job.toml:10: stream 'w'"), "{err}");
    assert!(
        err.contains("reduce needs a function of the reducer world; text is a transform component"),
        "{err}"
    );
    let err = refused(&format!(
        "{HEAD}\n[[streams]]\nname = \"w\"\nop = \"map\"\ninput = \"lines\"\nudf = \"text#non_empty\"\n{}",
        print_sink("w")
    ));
    assert!(
        err.contains("text#non_empty is a `filter` function, which does not fit op = \"map\"")
            && err.contains("use op = \"filter\""),
        "{err}"
    );
}

#[test]
fn an_unwritable_sink_directory_is_refused_before_the_first_batch() {
    let dir = JobDir::new();
    dir.file("in/a.txt", "a\n");
    dir.file("blocker", "a file where a folder should be");
    dir.manifest(&format!(
        "{HEAD}\n[[sinks]]\nkind = \"text_files\"\ninput = \"lines\"\nprefix = \"blocker/out/w\"\n"
    ));
    let out = dir.run_until_idle();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("job.toml:10: sink 1 (lines): cannot create the output directory"),
        "{err}"
    );
}

#[test]
fn a_sink_directory_that_goes_away_fails_the_job_with_the_path() {
    let dir = JobDir::new();
    dir.manifest(&format!(
        "{HEAD}\n[[sinks]]\nkind = \"text_files\"\ninput = \"lines\"\nprefix = \"out/sub/w\"\n"
    ));
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    let (mut child, log) = dir.spawn_logged(&[]);
    // Planning created out/sub (and proved it writable); once the job runs, replace it with a
    // file, then give the job input.
    let sub = dir.path().join("out/sub");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(sub.is_dir() && log.lock().unwrap().contains("running:")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            log.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&sub).unwrap();
    std::fs::write(&sub, "not a folder").unwrap();
    dir.file("in/a.txt", "a\n");
    let status = child.wait().unwrap();
    // stderr is gathered by a thread: wait until it has read the error.
    wait_for("the job's error", || {
        let log = log.lock().unwrap();
        log.contains("failed in batch") && log.contains("out/sub/")
    });
    let err = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed in batch")
            && err.contains("sink 1 (of stream 'lines'): cannot write")
            && err.contains("out/sub/"),
        "{err}"
    );
}

const REJECT: &str = "\n[[streams]]\nname = \"checked\"\nop = \"map\"\ninput = \"lines\"\nudf = \"hostile#reject_bad\"\n\n[[sinks]]\nkind = \"text_files\"\ninput = \"checked\"\nprefix = \"out/checked\"\n";

#[test]
fn a_failing_udf_fails_the_job_naming_batch_udf_and_record() {
    let dir = JobDir::new();
    dir.file("in/a.txt", "fine\nbad\n");
    dir.manifest(&format!("{HEAD}{REJECT}"));
    let out = dir.run_until_idle();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job 'bad' failed in batch"), "{err}");
    assert!(
        err.contains("stream 'checked' (map)") && err.contains("hostile#reject_bad"),
        "{err}"
    );
    assert!(err.contains("value \"bad\" is not allowed"), "{err}");
}

#[test]
fn skip_batch_logs_and_counts_the_failure_and_goes_on() {
    let dir = JobDir::new();
    dir.file("in/a.txt", "bad\n");
    dir.manifest(&format!(
        "{}{REJECT}",
        HEAD.replace(
            "batch_interval = \"100ms\"",
            "batch_interval = \"100ms\"\non_udf_error = \"skip_batch\""
        )
    ));
    let child = dir
        .command(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The failed batch is skipped; a later file still goes through. Planning creates out/
    // after the components are compiled, and the first batch is sealed right after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.path().join("out").is_dir() {
        assert!(std::time::Instant::now() < deadline, "the job was planned");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    dir.file("in/b.txt", "good\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir
        .output_lines("out/checked")
        .contains(&"good".to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job went on after the failed batch"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("batch failed")
            && err.contains("skip_batch")
            && err.contains("1 records produce no output"),
        "{err}"
    );
    assert!(err.contains("1 batches failed and were skipped"), "{err}");
}

#[test]
fn a_missing_manifest_says_so_once() {
    let dir = JobDir::new();
    let out = dir.run_until_idle();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the job manifest") && err.contains("job.toml"),
        "{err}"
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
