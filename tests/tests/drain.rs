//! `--until-idle` drains windows: after the input ends, batch-time windows slide on through
//! empty batches until the last records have left them, as Spark's windows do when the job is
//! left running; event-time windows get one empty batch that moves the watermark past the data.

use sluice_tests::{JobDir, describe};

#[test]
fn until_idle_emits_the_trailing_windows_of_batch_time_windows() {
    let dir = JobDir::new();
    dir.manifest(
        r#"[job]
name = "trailing"
batch_interval = "100ms"
partitions = 2

[[sources]]
name = "lines"
kind = "directory"
path = "in"
max_files_per_batch = 1

[[streams]]
name = "counts"
op = "count_by_window"
input = "lines"
window = "300ms"

[[sinks]]
kind = "text_files"
input = "counts"
prefix = "out/counts"
"#,
    );
    for i in 0..20 {
        dir.file(&format!("in/{i:02}.txt"), format!("line {i}\n"));
    }
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    let windows = dir.batch_dirs("out/counts");
    let counts: Vec<Vec<String>> = windows
        .iter()
        .map(|w| {
            std::fs::read_dir(w)
                .expect("a window's folder")
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                .flat_map(|e| {
                    std::fs::read_to_string(e.path())
                        .expect("a part")
                        .lines()
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect();
    // 20 windows while files arrive, then the 2 that still hold the last files.
    assert_eq!(windows.len(), 22, "{counts:?}\n{}", describe(&out));
    let last: Vec<&[String]> = counts[19..].iter().map(Vec::as_slice).collect();
    assert_eq!(
        last,
        [
            &["3".to_string()][..],
            &["2".to_string()][..],
            &["1".to_string()][..]
        ],
        "the window of the last file, then the two trailing ones: {counts:?}"
    );
}
