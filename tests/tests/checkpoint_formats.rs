//! Checkpoints written by earlier formats still load: a v2 metadata checkpoint (stateful
//! operators described by strings), a v3 one (sealed batches without their UDF versions) and a
//! v4 one (no Kafka offsets) resume under today's format (v5) with their state.

use std::process::Command;

use sluice_tests::{JobDir, copy_tree, describe, host_bin};

/// Copy fixture `name` (its `ckpt`, `in` and `job.toml`) into a fresh folder, add `in/f3.txt`
/// and run it with `--until-idle`: the folder. The run must succeed, restoring
/// the fixture's data checkpoint of batch `restored`, and the totals carry on over f3.
fn resume(name: &str, restored: u64) -> JobDir {
    let fixture = sluice_tests::root().join("tests/fixtures").join(name);
    let dir = JobDir::new();
    copy_tree(&fixture.join("ckpt"), &dir.path().join("ckpt"));
    copy_tree(&fixture.join("in"), &dir.path().join("in"));
    std::fs::copy(fixture.join("job.toml"), dir.path().join("job.toml")).expect("manifest");
    dir.file("in/f3.txt", "a 10\nd 7\n");
    // The fixture's metadata names its files relative to the manifest's folder.
    let out = Command::new(host_bin())
        .current_dir(dir.path())
        .args(["run", "job.toml", "--udfs", "udfs", "--until-idle"])
        .env("SLUICE_COMPONENT_CACHE", dir.path().join("cache"))
        .env("SLUICE_LOG", "info")
        .output()
        .expect("run the host binary");
    let log = describe(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("restored the data checkpoint of batch {restored}")),
        "{log}"
    );
    // f1 and f2 were read before the checkpoint: only f3 is new, and the totals carry on.
    let mut totals = dir.last_batch_lines("out/totals");
    totals.sort();
    assert_eq!(
        totals,
        [
            r#"{"key":"a","value":[3,14]}"#,
            r#"{"key":"b","value":[2,3]}"#,
            r#"{"key":"c","value":[1,5]}"#,
            r#"{"key":"d","value":[1,7]}"#,
        ],
        "{log}"
    );
    dir
}

/// The newest metadata file of `dir`'s checkpoint, as JSON, and its text.
fn newest_metadata(dir: &JobDir) -> (serde_json::Value, String) {
    let newest = std::fs::read_dir(dir.path().join("ckpt/metadata"))
        .expect("metadata")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("a metadata file");
    let text = std::fs::read_to_string(&newest).expect("read metadata");
    let body: serde_json::Value =
        serde_json::from_str(text.split_once('\n').expect("a header line").1).expect("JSON");
    (body, text)
}

#[test]
fn a_checkpoint_of_format_v2_resumes_with_its_state() {
    let dir = resume("checkpoint-v2", 2);
    // From now on the metadata is written in the current format, layouts typed.
    let (body, text) = newest_metadata(&dir);
    assert_eq!(body["version"], 5, "{text}");
    assert_eq!(
        body["stateful"][1]["layout"],
        serde_json::json!({"kind": "window", "length": 3000, "slide": 1000, "incremental": true, "builtin": "sum_i64"}),
        "{text}"
    );
}

#[test]
fn a_checkpoint_of_format_v3_resumes_with_its_state() {
    let dir = resume("checkpoint-v3", 4);
    let (body, text) = newest_metadata(&dir);
    assert_eq!(body["version"], 5, "{text}");
}

#[test]
fn a_checkpoint_of_format_v4_resumes_with_its_state() {
    let dir = resume("checkpoint-v4", 4);
    let (body, text) = newest_metadata(&dir);
    assert_eq!(body["version"], 5, "{text}");
}
