//! Checkpoints written by earlier formats still load: a v2 metadata checkpoint (stateful
//! operators described by strings) resumes under today's typed format (v3) with its state.

use std::process::Command;

use sluice_tests::{JobDir, copy_tree, describe, host_bin};

#[test]
fn a_checkpoint_of_format_v2_resumes_with_its_state() {
    let fixture = sluice_tests::root().join("tests/fixtures/checkpoint-v2");
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
        log.contains("restored the data checkpoint of batch 2"),
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
    // From now on the metadata is written in the current format, layouts typed.
    let newest = std::fs::read_dir(dir.path().join("ckpt/metadata"))
        .expect("metadata")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("a metadata file");
    let text = std::fs::read_to_string(&newest).expect("read metadata");
    let body: serde_json::Value =
        serde_json::from_str(text.split_once('\n').expect("a header line").1).expect("JSON");
    assert_eq!(body["version"], 3, "{text}");
    assert_eq!(
        body["stateful"][1]["layout"],
        serde_json::json!({"kind": "window", "length": 3000, "slide": 1000, "incremental": true, "builtin": "sum_i64"}),
        "{text}"
    );
}
