//! `reduce` and `reduce_by_key` with each builtin reducer, over several partitions, against a
//! plain fold.

use std::collections::BTreeMap;

use super::{
    Env, Rng, all_records, by_key, dealt, fold, input, plan, run_stateless, spec, unkeyed,
};
use crate::batch::codec::Codec;
use crate::operators::{Builtin, OpError};

const BUILTINS: [Builtin; 4] = [
    Builtin::Count,
    Builtin::SumI64,
    Builtin::SumF64,
    Builtin::CountAndSum,
];

/// A value `b` can read: integers for the integer builtins, halves (exact in binary, so any
/// summation order gives the same float) for `sum_f64`.
fn value(b: Builtin, rng: &mut Rng) -> String {
    let n = rng.below(2001) as i64 - 1000;
    match b {
        Builtin::SumF64 => format!("{}", n as f64 / 2.0),
        Builtin::Count => format!("v{n}"),
        Builtin::SumI64 | Builtin::CountAndSum => n.to_string(),
    }
}

/// Random records over a few keys.
fn records(b: Builtin, seed: u64, n: usize) -> Vec<(String, String)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (format!("k{}", rng.below(7)), value(b, &mut rng)))
        .collect()
}

#[test]
fn reduce_by_key_with_each_builtin_equals_a_fold() {
    for b in BUILTINS {
        let planned = plan(
            &spec("reduce_by_key", Some(b)),
            (Codec::Text, Codec::Number),
            1000,
        )
        .expect("plans");
        assert_eq!(planned.value_codec, b.codec());
        for (env_parts, input_parts, seed) in [(2, 3, 1), (1, 1, 2), (3, 2, 3), (4, 5, 4)] {
            let env = Env::new(env_parts);
            let recs = records(b, seed, 80);
            let parts = dealt(&recs, input_parts);
            let out = run_stateless(&env, &*planned.op, "totals", vec![input(&parts)])
                .expect("reduce_by_key");
            assert_eq!(
                out.len(),
                env_parts,
                "one output partition per job partition"
            );
            let mut per_key: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for (k, v) in &recs {
                per_key.entry(k.clone()).or_default().push(v);
            }
            let want: BTreeMap<String, String> = per_key
                .iter()
                .map(|(k, vs)| (k.clone(), fold(b, vs)))
                .collect();
            assert_eq!(by_key(&out), want, "{b:?} over {input_parts} partitions");
            assert!(out.iter().flat_map(|p| &p.event_times).all(|&t| t == 1000));
        }
    }
}

#[test]
fn reduce_with_each_builtin_gives_one_record_equal_to_a_fold() {
    for b in BUILTINS {
        let planned =
            plan(&spec("reduce", Some(b)), (Codec::Text, Codec::Number), 1000).expect("plans");
        for (input_parts, seed) in [(1, 5), (3, 6), (6, 7)] {
            let env = Env::new(2);
            let recs = records(b, seed, 50);
            let parts = dealt(&recs, input_parts);
            let out =
                run_stateless(&env, &*planned.op, "total", vec![input(&parts)]).expect("reduce");
            let values: Vec<&str> = recs.iter().map(|(_, v)| v.as_str()).collect();
            assert_eq!(
                all_records(&out),
                [(None, fold(b, &values), 1000)],
                "{b:?} over {input_parts} partitions"
            );
        }
        // No records: no record out.
        let env = Env::new(2);
        let empty = dealt(&[], 3);
        let out = run_stateless(&env, &*planned.op, "total", vec![input(&empty)]).expect("reduce");
        assert!(all_records(&out).is_empty(), "{b:?} of nothing");
    }
}

#[test]
fn reduce_by_key_refuses_unkeyed_input_naming_the_stream() {
    let env = Env::new(2);
    let planned = plan(
        &spec("reduce_by_key", Some(Builtin::SumI64)),
        (Codec::Text, Codec::Number),
        1000,
    )
    .expect("plans");
    let parts = vec![unkeyed(&["1", "2"])];
    let err = run_stateless(&env, &*planned.op, "totals", vec![input(&parts)])
        .expect_err("unkeyed input");
    assert!(
        matches!(&err, OpError::Input(m) if m.contains("stream 'totals'") && m.contains("reduce_by_key")),
        "{err}"
    );
}

#[test]
fn a_builtin_names_the_value_it_cannot_read() {
    let env = Env::new(2);
    let planned = plan(
        &spec("reduce_by_key", Some(Builtin::SumI64)),
        (Codec::Text, Codec::Number),
        1000,
    )
    .expect("plans");
    let parts = dealt(&super::owned(&[("a", "1"), ("a", "one")]), 2);
    let err =
        run_stateless(&env, &*planned.op, "totals", vec![input(&parts)]).expect_err("not a number");
    assert!(
        matches!(&err, OpError::Input(m) if m.contains("sum_i64") && m.contains("\"one\"")),
        "{err}"
    );
}
