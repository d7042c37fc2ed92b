//! `count` and `count_by_value`.

use std::collections::BTreeMap;

use super::{Env, Rng, all_records, by_key, input, plan, run_stateless, spec, unkeyed};
use crate::batch::Batch;
use crate::batch::codec::Codec;

#[test]
fn count_counts_every_record_of_every_partition() {
    let planned = plan(&spec("count", None), (Codec::Text, Codec::Text), 1000).expect("plans");
    assert_eq!(planned.value_codec, Codec::Number);
    let env = Env::new(2);
    let parts = vec![
        unkeyed(&["a", "b"]),
        super::keyed(&[("k", "c")]),
        Batch::empty(false),
        unkeyed(&["d", "e", "f"]),
    ];
    let out = run_stateless(&env, &*planned.op, "n", vec![input(&parts)]).expect("count");
    assert_eq!(all_records(&out), [(None, "6".to_string(), 1000)]);
    // Nothing counts as 0 (one record still).
    let out = run_stateless(&env, &*planned.op, "n", vec![input(&[])]).expect("count");
    assert_eq!(all_records(&out), [(None, "0".to_string(), 1000)]);
}

#[test]
fn count_by_value_counts_each_distinct_value_once_over_partitions() {
    let planned = plan(
        &spec("count_by_value", None),
        (Codec::Bytes, Codec::Text),
        1000,
    )
    .expect("plans");
    // Keys of the output are the input's values.
    assert_eq!(
        (planned.key_codec, planned.value_codec),
        (Codec::Text, Codec::Number)
    );
    for (partitions, seed) in [(1, 1), (2, 2), (3, 3)] {
        let env = Env::new(partitions);
        let mut rng = Rng::new(seed);
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        let parts: Vec<Batch> = (0..4)
            .map(|_| {
                let values: Vec<String> = (0..rng.below(30))
                    .map(|_| format!("v{}", rng.below(9)))
                    .collect();
                for v in &values {
                    *want.entry(v.clone()).or_default() += 1;
                }
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                unkeyed(&refs)
            })
            .collect();
        let out = run_stateless(&env, &*planned.op, "counts", vec![input(&parts)]).expect("count");
        assert_eq!(out.len(), partitions);
        let want: BTreeMap<String, String> =
            want.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        assert_eq!(by_key(&out), want);
    }
    // Keyed input counts values too, keys ignored.
    let env = Env::new(2);
    let parts = vec![super::keyed(&[("a", "x"), ("b", "x"), ("a", "y")])];
    let out = run_stateless(&env, &*planned.op, "counts", vec![input(&parts)]).expect("count");
    let got = by_key(&out);
    assert_eq!(got.get("x").map(String::as_str), Some("2"));
    assert_eq!(got.get("y").map(String::as_str), Some("1"));
    assert_eq!(got.len(), 2);
}
