//! Every operator, end to end through the real `host` binary: directory sources over known
//! files, `--until-idle`, `text_files` sinks in `jsonl` read back and compared exactly (sorted,
//! since the order across partitions is not defined).

use sluice_tests::{JobDir, describe};

/// A job over two directory sources, `a/` and `b/`, with `streams` and one jsonl sink per
/// stream in `sinks` (prefix `out/<stream>`).
fn job(streams: &str, sinks: &[&str]) -> String {
    let mut text = String::from(
        r#"
[job]
name = "ops"
batch_interval = "200ms"
partitions = 2

[[sources]]
name = "a"
kind = "directory"
path = "a"

[[sources]]
name = "b"
kind = "directory"
path = "b"
"#,
    );
    text.push_str(streams);
    for s in sinks {
        text.push_str(&format!("\n[[sinks]]\nkind = \"text_files\"\ninput = \"{s}\"\nprefix = \"out/{s}\"\nformat = \"jsonl\"\n"));
    }
    text
}

fn run(streams: &str, sinks: &[&str]) -> JobDir {
    let dir = JobDir::new();
    dir.file("a/one.txt", "to be or\nnot to be\n\n");
    dir.file("b/two.txt", "be quick\nor be gone\n");
    dir.manifest(&job(streams, sinks));
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    dir
}

fn v(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

const WORDS: &str = r#"
[[streams]]
name = "words_a"
op = "flat_map"
input = "a"
udf = "text#split_words"

[[streams]]
name = "words_b"
op = "flat_map"
input = "b"
udf = "text#split_words"

[[streams]]
name = "pairs_a"
op = "map"
input = "words_a"
udf = "text#pair_one"
value_codec = "number"

[[streams]]
name = "pairs_b"
op = "map"
input = "words_b"
udf = "text#pair_one"
value_codec = "number"
"#;

fn text_values(words: &[&str]) -> Vec<String> {
    v(&words
        .iter()
        .map(|w| format!("{{\"key\":null,\"value\":\"{w}\"}}"))
        .collect::<Vec<_>>()
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
}

#[test]
fn map_flat_map_filter_map_partitions_and_transform() {
    let streams = r#"
[[streams]]
name = "upper"
op = "map"
input = "a"
udf = "text#uppercase"

[[streams]]
name = "words"
op = "flat_map"
input = "a"
udf = "text#split_words"

[[streams]]
name = "nonempty"
op = "filter"
input = "a"
udf = "text#non_empty"

[[streams]]
name = "lower_parts"
op = "map_partitions"
input = "upper"
udf = "text#lowercase"

[[streams]]
name = "whole"
op = "transform"
input = "nonempty"
udf = "text#uppercase"
"#;
    let dir = run(
        streams,
        &["upper", "words", "nonempty", "lower_parts", "whole"],
    );
    assert_eq!(
        dir.output_lines("out/upper"),
        text_values(&["TO BE OR", "NOT TO BE", ""])
    );
    assert_eq!(
        dir.output_lines("out/words"),
        text_values(&["to", "be", "or", "not", "to", "be"])
    );
    assert_eq!(
        dir.output_lines("out/nonempty"),
        text_values(&["to be or", "not to be"])
    );
    assert_eq!(
        dir.output_lines("out/lower_parts"),
        text_values(&["to be or", "not to be", ""])
    );
    assert_eq!(
        dir.output_lines("out/whole"),
        text_values(&["TO BE OR", "NOT TO BE"])
    );
}

#[test]
fn union_repartition_count_and_count_by_value() {
    let streams = r#"
[[streams]]
name = "both"
op = "union"
inputs = ["a", "b"]

[[streams]]
name = "spread"
op = "repartition"
input = "both"
partitions = 3

[[streams]]
name = "lines"
op = "count"
input = "both"

[[streams]]
name = "distinct"
op = "count_by_value"
input = "words"

[[streams]]
name = "words"
op = "flat_map"
input = "both"
udf = "text#split_words"
"#;
    let dir = run(streams, &["both", "spread", "lines", "distinct"]);
    let all = text_values(&["to be or", "not to be", "", "be quick", "or be gone"]);
    assert_eq!(dir.output_lines("out/both"), all);
    assert_eq!(dir.output_lines("out/spread"), all);
    for batch in dir.batch_dirs("out/spread") {
        let parts = std::fs::read_dir(&batch)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("part-")
            })
            .count();
        assert_eq!(
            parts,
            3,
            "repartition(3) writes three parts in {}",
            batch.display()
        );
    }
    // One count per batch: the batch with the files says 5, any other batch 0.
    let counts = dir.output_lines("out/lines");
    assert!(
        counts.contains(&"{\"key\":null,\"value\":5}".to_string()),
        "{counts:?}"
    );
    assert!(
        counts
            .iter()
            .all(|c| c == "{\"key\":null,\"value\":5}" || c == "{\"key\":null,\"value\":0}"),
        "{counts:?}"
    );
    assert_eq!(
        dir.output_lines("out/distinct"),
        v(&[
            r#"{"key":"be","value":4}"#,
            r#"{"key":"gone","value":1}"#,
            r#"{"key":"not","value":1}"#,
            r#"{"key":"or","value":2}"#,
            r#"{"key":"quick","value":1}"#,
            r#"{"key":"to","value":2}"#,
        ])
    );
}

#[test]
fn reduce_reduce_by_key_and_group_by_key() {
    let streams = format!(
        "{WORDS}{}",
        r#"
[[streams]]
name = "total"
op = "reduce"
input = "pairs_a"
udf = "aggregates#sum_i64"

[[streams]]
name = "counts"
op = "reduce_by_key"
input = "pairs_a"
udf = "aggregates#sum_i64"

[[streams]]
name = "groups"
op = "group_by_key"
input = "pairs_a"
"#
    );
    let dir = run(&streams, &["total", "counts", "groups"]);
    assert_eq!(
        dir.output_lines("out/total"),
        v(&[r#"{"key":null,"value":6}"#])
    );
    assert_eq!(
        dir.output_lines("out/counts"),
        v(&[
            r#"{"key":"be","value":2}"#,
            r#"{"key":"not","value":1}"#,
            r#"{"key":"or","value":1}"#,
            r#"{"key":"to","value":2}"#
        ])
    );
    assert_eq!(
        dir.output_lines("out/groups"),
        v(&[
            r#"{"key":"be","value":[1,1]}"#,
            r#"{"key":"not","value":[1]}"#,
            r#"{"key":"or","value":[1]}"#,
            r#"{"key":"to","value":[1,1]}"#
        ])
    );
}

#[test]
fn joins_and_cogroup() {
    // Left words: to be or not to be. Right words: be quick or be gone.
    let mut streams = WORDS.to_string();
    for op in [
        "join",
        "left_outer_join",
        "right_outer_join",
        "full_outer_join",
        "cogroup",
    ] {
        streams.push_str(&format!(
            "\n[[streams]]\nname = \"{op}\"\nop = \"{op}\"\ninputs = [\"pairs_a\", \"pairs_b\"]\n"
        ));
    }
    let dir = run(
        &streams,
        &[
            "join",
            "left_outer_join",
            "right_outer_join",
            "full_outer_join",
            "cogroup",
        ],
    );
    let be4 = [r#"{"key":"be","value":[1,1]}"#; 4];
    let mut join = be4.to_vec();
    join.push(r#"{"key":"or","value":[1,1]}"#);
    assert_eq!(dir.output_lines("out/join"), v(&join));

    let mut left = join.clone();
    left.extend([
        r#"{"key":"to","value":[1,null]}"#,
        r#"{"key":"to","value":[1,null]}"#,
        r#"{"key":"not","value":[1,null]}"#,
    ]);
    assert_eq!(dir.output_lines("out/left_outer_join"), v(&left));

    let mut right = join.clone();
    right.extend([
        r#"{"key":"quick","value":[null,1]}"#,
        r#"{"key":"gone","value":[null,1]}"#,
    ]);
    assert_eq!(dir.output_lines("out/right_outer_join"), v(&right));

    let mut full = left.clone();
    full.extend([
        r#"{"key":"quick","value":[null,1]}"#,
        r#"{"key":"gone","value":[null,1]}"#,
    ]);
    assert_eq!(dir.output_lines("out/full_outer_join"), v(&full));

    assert_eq!(
        dir.output_lines("out/cogroup"),
        v(&[
            r#"{"key":"be","value":[[1,1],[1,1]]}"#,
            r#"{"key":"gone","value":[[],[1]]}"#,
            r#"{"key":"not","value":[[1],[]]}"#,
            r#"{"key":"or","value":[[1],[1]]}"#,
            r#"{"key":"quick","value":[[],[1]]}"#,
            r#"{"key":"to","value":[[1,1],[]]}"#,
        ])
    );
}

#[test]
fn join_with_a_static_data_set() {
    let mut streams = WORDS.to_string();
    streams.push_str(
        r#"
[[streams]]
name = "named"
op = "join_static"
input = "pairs_a"
path = "static/meaning.tsv"

[[streams]]
name = "named_all"
op = "join_static"
input = "pairs_a"
path = "static/meaning.jsonl"
format = "jsonl"
how = "left_outer"
static_codec = "json"
"#,
    );
    let dir = JobDir::new();
    dir.file("a/one.txt", "to be or\nnot to be\n");
    dir.file("b/two.txt", "");
    dir.file(
        "static/meaning.tsv",
        "be\texist\nnot\tnegation\nzebra\tanimal\n",
    );
    dir.file(
        "static/meaning.jsonl",
        "{\"key\":\"be\",\"value\":{\"len\":2}}\n",
    );
    dir.manifest(&job(&streams, &["named", "named_all"]));
    let out = dir.run_until_idle();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        dir.output_lines("out/named"),
        v(&[
            r#"{"key":"be","value":[1,"exist"]}"#,
            r#"{"key":"be","value":[1,"exist"]}"#,
            r#"{"key":"not","value":[1,"negation"]}"#
        ])
    );
    assert_eq!(
        dir.output_lines("out/named_all"),
        v(&[
            r#"{"key":"be","value":[1,{"len":2}]}"#,
            r#"{"key":"be","value":[1,{"len":2}]}"#,
            r#"{"key":"not","value":[1,null]}"#,
            r#"{"key":"or","value":[1,null]}"#,
            r#"{"key":"to","value":[1,null]}"#,
            r#"{"key":"to","value":[1,null]}"#,
        ])
    );
}
