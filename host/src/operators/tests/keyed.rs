//! The shuffle, grouping by key and `group_by_key`.

use proptest::prelude::*;

use super::{Env, all_records, dealt, input, keyed, owned, run_stateless, text, unkeyed};
use crate::batch::{Batch, key_hash};
use crate::operators::OpError;
use crate::operators::group_by_key::GroupByKey;
use crate::operators::keyed::{grouped_values, groups, shuffle, shuffle_to};

/// Records of `parts` as sorted (key, value, event time).
fn tagged(parts: &[Batch]) -> Vec<(String, String, i64)> {
    all_records(parts)
        .into_iter()
        .map(|(k, v, t)| (k.unwrap_or_default(), v, t))
        .collect()
}

/// Check what the shuffle promises of `out` given `parts`: `n` partitions; every record in the
/// partition its key's hash names (so equal keys together, each key in exactly one); nothing
/// lost or duplicated; records of one key in their input order (partition by partition).
fn check_shuffle(parts: &[Batch], out: &[Batch], n: usize) {
    assert_eq!(out.len(), n);
    for (j, p) in out.iter().enumerate() {
        for r in p.records() {
            let key = r.key.expect("a shuffled keyed record keeps its key");
            assert_eq!((key_hash(key) % n as u64) as usize, j);
        }
    }
    assert_eq!(tagged(out), tagged(parts), "records lost or duplicated");
    // Per key, the order of values: input partitions in order, records in order.
    let order = |batches: &[Batch]| {
        let mut per_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for p in batches {
            for r in p.records() {
                per_key
                    .entry(text(r.key.unwrap_or_default()))
                    .or_default()
                    .push(text(r.value));
            }
        }
        per_key
    };
    assert_eq!(order(out), order(parts));
}

#[test]
fn shuffle_puts_each_key_in_one_partition_and_keeps_every_record() {
    let env = Env::new(2);
    let scope = env.scope(1, 1000);
    let parts = vec![
        keyed(&[("a", "1"), ("b", "2"), ("c", "3"), ("a", "4")]),
        keyed(&[("b", "5"), ("a", "6")]),
        keyed(&[]),
        keyed(&[("d", "7"), ("c", "8"), ("", "9")]),
    ];
    let out = shuffle(&scope, &parts).expect("shuffled");
    check_shuffle(&parts, &out, 2);
    for n in [1, 3, 5, 8] {
        check_shuffle(&parts, &shuffle_to(&scope, &parts, n).expect("shuffled"), n);
    }
}

#[test]
fn shuffle_of_nothing_gives_empty_partitions() {
    let env = Env::new(2);
    let scope = env.scope(1, 1000);
    for n in [1, 2, 4] {
        let out = shuffle_to(&scope, &[], n).expect("shuffled");
        assert_eq!(out.len(), n);
        assert!(out.iter().all(Batch::is_empty));
        let out = shuffle_to(&scope, &[keyed(&[]), keyed(&[])], n).expect("shuffled");
        assert_eq!(out.len(), n);
        assert!(out.iter().all(Batch::is_empty));
    }
}

#[test]
fn unkeyed_records_shuffle_by_value() {
    let env = Env::new(2);
    let scope = env.scope(1, 1000);
    let parts = vec![unkeyed(&["x", "y", "x"]), unkeyed(&["z", "y"])];
    let out = shuffle_to(&scope, &parts, 3).expect("shuffled");
    assert_eq!(out.len(), 3);
    let mut seen = Vec::new();
    for (j, p) in out.iter().enumerate() {
        for v in p.values.iter() {
            assert_eq!((key_hash(v) % 3) as usize, j);
            seen.push(text(v));
        }
    }
    seen.sort();
    assert_eq!(seen, ["x", "x", "y", "y", "z"]);
}

#[test]
fn groups_list_keys_in_first_appearance_order_with_their_records() {
    let b = keyed(&[("b", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("a", "5")]);
    let g = groups(&b);
    let got: Vec<(String, Vec<usize>)> = g.iter().map(|(k, m)| (text(k), m.clone())).collect();
    assert_eq!(
        got,
        [
            ("b".to_string(), vec![0, 2]),
            ("a".to_string(), vec![1, 4]),
            ("c".to_string(), vec![3]),
        ]
    );
    let (grouped, values, ends) = grouped_values(&b);
    assert_eq!(grouped.len(), 3);
    let laid: Vec<String> = values.iter().map(text).collect();
    assert_eq!(laid, ["1", "3", "2", "5", "4"]);
    assert_eq!(ends, [2, 4, 5]);
    assert_eq!(*ends.last().expect("ends") as usize, b.len());

    // An unkeyed batch is one group under the empty key; an empty batch has none.
    let u = unkeyed(&["p", "q"]);
    let g = groups(&u);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].0, b"");
    assert_eq!(g[0].1, [0, 1]);
    let empty = keyed(&[]);
    let (g, values, ends) = grouped_values(&empty);
    assert!(g.is_empty() && values.is_empty() && ends.is_empty());
}

#[test]
fn group_by_key_gathers_every_value_of_a_key_as_json() {
    let env = Env::new(2);
    let parts = dealt(
        &owned(&[
            ("a", "1"),
            ("b", "x\"y"),
            ("a", "2"),
            ("c", "3"),
            ("a", "4"),
        ]),
        3,
    );
    let out = run_stateless(&env, &GroupByKey, "grouped", vec![input(&parts)]).expect("run");
    let got = super::by_key(&out);
    let parsed: std::collections::BTreeMap<String, Vec<String>> = got
        .iter()
        .map(|(k, v)| {
            let mut items: Vec<String> = serde_json::from_str(v).expect("a JSON array of strings");
            items.sort();
            (k.clone(), items)
        })
        .collect();
    let want: std::collections::BTreeMap<String, Vec<String>> = [
        ("a", vec!["1", "2", "4"]),
        ("b", vec!["x\"y"]),
        ("c", vec!["3"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(parsed, want);
}

#[test]
fn group_by_key_refuses_unkeyed_input_naming_the_stream() {
    let env = Env::new(2);
    let parts = vec![unkeyed(&["1"])];
    let err = run_stateless(&env, &GroupByKey, "grouped", vec![input(&parts)])
        .expect_err("unkeyed input");
    assert!(
        matches!(&err, OpError::Input(m) if m.contains("stream 'grouped'") && m.contains("group_by_key")),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any records, any partitioning of the input, any partition count.
    #[test]
    fn shuffle_keeps_every_record_and_groups_keys(
        records in prop::collection::vec(("[a-f]{0,2}", "[0-9]{1,3}"), 0..60),
        input_parts in 1usize..5,
        n in 1usize..7,
    ) {
        let env = Env::new(2);
        let scope = env.scope(1, 1000);
        let parts = dealt(&records, input_parts);
        let out = shuffle_to(&scope, &parts, n).expect("shuffled");
        check_shuffle(&parts, &out, n);
    }
}
