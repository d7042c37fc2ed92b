//! The join family and cogroup against hand-computed results.

use super::{Env, all_records, input_with, plan, run_stateless, timed, unkeyed};
use crate::batch::codec::Codec;
use crate::batch::{Batch, key_hash};
use crate::operators::{OpError, StreamSpec};

/// Left values are numbers, right values text.
fn sides() -> (Vec<Batch>, Vec<Batch>) {
    let left = vec![
        timed(&[("a", "1", 100), ("b", "3", 50)]),
        timed(&[("a", "2", 300), ("c", "4", 70)]),
    ];
    let right = vec![
        timed(&[("a", "x", 200), ("b", "y", 10)]),
        timed(&[("b", "z", 400), ("d", "w", 60)]),
    ];
    (left, right)
}

/// Run `op` over [`sides`]; its records (key, JSON value, event time), sorted, after checking
/// each is in the partition its key's hash names and its value is valid JSON.
fn joined(op: &str) -> Result<Vec<(Option<String>, String, i64)>, OpError> {
    let spec = StreamSpec::new("joined", op, vec!["left".into(), "right".into()]);
    let planned = plan(&spec, (Codec::Text, Codec::Text), 1000).expect("plans");
    assert_eq!(planned.value_codec, Codec::Json);
    let env = Env::new(3);
    let (left, right) = sides();
    let out = run_stateless(
        &env,
        &*planned.op,
        "joined",
        vec![
            input_with(&left, Codec::Text, Codec::Number),
            input_with(&right, Codec::Text, Codec::Text),
        ],
    )?;
    assert_eq!(out.len(), 3);
    for (j, p) in out.iter().enumerate() {
        for r in p.records() {
            let key = r.key.expect("keyed");
            assert_eq!((key_hash(key) % 3) as usize, j);
            serde_json::from_slice::<serde_json::Value>(r.value).expect("valid JSON");
        }
    }
    Ok(all_records(&out))
}

/// Records from `(key, value, event time)`, sorted.
fn want(records: &[(&str, &str, i64)]) -> Vec<(Option<String>, String, i64)> {
    let mut out: Vec<_> = records
        .iter()
        .map(|(k, v, t)| (Some(k.to_string()), v.to_string(), *t))
        .collect();
    out.sort();
    out
}

/// Pairs of matching keys, each at the later of its two event times.
const INNER: [(&str, &str, i64); 4] = [
    ("a", "[1,\"x\"]", 200),
    ("a", "[2,\"x\"]", 300),
    ("b", "[3,\"y\"]", 50),
    ("b", "[3,\"z\"]", 400),
];

#[test]
fn inner_join_pairs_every_match_at_the_later_event_time() {
    assert_eq!(joined("join").expect("join"), want(&INNER));
}

#[test]
fn outer_joins_fill_the_missing_side_with_null() {
    let left_only = ("c", "[4,null]", 70);
    let right_only = ("d", "[null,\"w\"]", 60);
    let with = |extra: &[(&'static str, &'static str, i64)]| {
        let mut all = INNER.to_vec();
        all.extend_from_slice(extra);
        want(&all)
    };
    assert_eq!(joined("left_outer_join").expect("join"), with(&[left_only]));
    assert_eq!(
        joined("right_outer_join").expect("join"),
        with(&[right_only])
    );
    assert_eq!(
        joined("full_outer_join").expect("join"),
        with(&[left_only, right_only])
    );
}

#[test]
fn cogroup_lists_each_key_once_with_both_sides_at_the_batch_time() {
    assert_eq!(
        joined("cogroup").expect("cogroup"),
        want(&[
            ("a", "[[1,2],[\"x\"]]", 1000),
            ("b", "[[3],[\"y\",\"z\"]]", 1000),
            ("c", "[[4],[]]", 1000),
            ("d", "[[],[\"w\"]]", 1000),
        ])
    );
}

#[test]
fn joins_of_empty_sides_give_nothing() {
    let spec = StreamSpec::new("joined", "full_outer_join", vec!["l".into(), "r".into()]);
    let planned = plan(&spec, (Codec::Text, Codec::Text), 1000).expect("plans");
    let env = Env::new(2);
    let (left, _) = sides();
    let out = run_stateless(
        &env,
        &*planned.op,
        "joined",
        vec![
            input_with(&[], Codec::Text, Codec::Text),
            input_with(&[], Codec::Text, Codec::Text),
        ],
    )
    .expect("join");
    assert!(all_records(&out).is_empty());
    // Only the left side: every left record with null.
    let out = run_stateless(
        &env,
        &*planned.op,
        "joined",
        vec![
            input_with(&left, Codec::Text, Codec::Number),
            input_with(&[], Codec::Text, Codec::Text),
        ],
    )
    .expect("join");
    assert_eq!(
        all_records(&out),
        want(&[
            ("a", "[1,null]", 100),
            ("a", "[2,null]", 300),
            ("b", "[3,null]", 50),
            ("c", "[4,null]", 70),
        ])
    );
}

#[test]
fn joins_refuse_unkeyed_input_naming_the_stream() {
    for op in ["join", "cogroup"] {
        let spec = StreamSpec::new("joined", op, vec!["l".into(), "r".into()]);
        let planned = plan(&spec, (Codec::Text, Codec::Text), 1000).expect("plans");
        let env = Env::new(2);
        let (left, _) = sides();
        let right = vec![unkeyed(&["1"])];
        let err = run_stateless(
            &env,
            &*planned.op,
            "joined",
            vec![
                input_with(&left, Codec::Text, Codec::Text),
                input_with(&right, Codec::Text, Codec::Text),
            ],
        )
        .expect_err("unkeyed right side");
        assert!(
            matches!(&err, OpError::Input(m) if m.contains("stream 'joined'")),
            "{op}: {err}"
        );
    }
}
