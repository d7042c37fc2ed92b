//! `update_state_by_key` with builtin updaters (state in a real store, committed batch by
//! batch), initial states, and the snapshot plumbing of `state_snapshots`. `map_with_state`
//! needs a UDF, so only its planning shows here.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    Driver, Env, FakePlanner, Rng, Store, by_key, dealt, fold, input, plan, spec, unkeyed,
};
use crate::batch::codec::Codec;
use crate::operators::state::{State, StateOp, StateSnapshots, Updater};
use crate::operators::{
    Builtin, Input, Memory, OpError, Operator, PlanCx, PlannedInput, StateLayout, UdfRef,
};

const STREAM: &str = "totals";

/// An `update_state_by_key` stream with builtin `b`, planned.
fn planned(b: Builtin) -> Arc<dyn Operator> {
    let planned = plan(
        &spec("update_state_by_key", Some(b)),
        (Codec::Text, Codec::Number),
        1000,
    )
    .expect("plans");
    assert_eq!(planned.value_codec, b.codec());
    planned.op
}

/// Batches of random records over 6 keys, integer values.
fn batches(seed: u64, n: usize) -> Vec<Vec<(String, String)>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            (0..rng.below(15))
                .map(|_| {
                    (
                        format!("k{}", rng.below(6)),
                        (rng.below(201) as i64 - 100).to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Per key, every value seen in the first `upto` batches, folded by `b`.
fn folded(b: Builtin, all: &[Vec<(String, String)>], upto: usize) -> BTreeMap<String, String> {
    let mut per_key: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (k, v) in all[..upto].iter().flatten() {
        per_key.entry(k.clone()).or_default().push(v);
    }
    per_key
        .into_iter()
        .map(|(k, vs)| (k, fold(b, &vs)))
        .collect()
}

#[test]
fn update_state_by_key_with_a_builtin_equals_a_fold_over_batches() {
    for (seed, b) in [
        (1, Builtin::CountAndSum),
        (2, Builtin::SumI64),
        (3, Builtin::Count),
    ] {
        let op = planned(b);
        assert_eq!(
            op.layout(),
            Some(StateLayout::State {
                map_with_state: false,
                builtin: Some(b),
            })
        );
        let store = Store::new(&[STREAM]);
        let env = Env::new(2);
        let memory = store.open(&*op, STREAM, false);
        assert!(matches!(memory, Memory::Table(_)));
        let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
        let all = batches(seed, 8);
        for (i, records) in all.iter().enumerate() {
            let parts = dealt(records, 3);
            let out = driver
                .step(1000 * (i as i64 + 1), Some(&parts))
                .expect("batch")
                .output
                .expect("a state stream has a batch every batch");
            // The stream is the whole state after the batch.
            assert_eq!(
                by_key(&out),
                folded(b, &all, i + 1),
                "{b:?} after batch {i}"
            );
        }
        // A batch without new values: the same state, nothing written.
        let out = driver
            .step(10_000, Some(&dealt(&[], 2)))
            .expect("batch")
            .output
            .expect("output");
        assert_eq!(by_key(&out), folded(b, &all, all.len()));
        assert!(
            driver.last_writes_empty,
            "{b:?}: an unchanged state was rewritten"
        );
    }
}

#[test]
fn state_persists_across_commits_and_restarts_with_its_own_partition_count() {
    let b = Builtin::CountAndSum;
    let mut s = spec("update_state_by_key", Some(b));
    s.partitions = Some(3);
    let op = plan(&s, (Codec::Text, Codec::Number), 1000)
        .expect("plans")
        .op;
    let all = batches(42, 10);
    let env = Env::new(2);
    let mut store = Store::new(&[STREAM]);
    let mut time = 0;
    for round in 0..3 {
        // Each round a new store handle on the same folder, and the operator opened anew.
        let memory = store.open(&*op, STREAM, false);
        let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
        for i in (round * 3)..(round * 3 + 3).min(all.len()) {
            time += 1000;
            let parts = dealt(&all[i], 2);
            let out = driver
                .step(time, Some(&parts))
                .expect("batch")
                .output
                .expect("output");
            assert_eq!(out.len(), 3, "num_partitions = 3");
            assert_eq!(by_key(&out), folded(b, &all, i + 1), "batch {i}");
        }
        // Every handle on the database goes before it is opened again.
        drop(driver);
        store = store.reopen(&[STREAM]);
    }
}

#[test]
fn initial_states_are_loaded_once() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("initial.tsv");
    std::fs::write(&path, "a\t[2,10]\nz\t[1,5]\n").expect("write the initial states");
    let mut s = spec("update_state_by_key", Some(Builtin::CountAndSum));
    s.initial_state = Some(path);
    let op = plan(&s, (Codec::Text, Codec::Number), 1000)
        .expect("plans")
        .op;
    let env = Env::new(2);
    let store = Store::new(&[STREAM]);
    let memory = store.open(&*op, STREAM, false);
    let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
    let parts = dealt(&super::owned(&[("a", "1"), ("b", "7")]), 2);
    let out = driver.step(1000, Some(&parts)).expect("batch").output;
    let want: BTreeMap<String, String> = [("a", "[3,11]"), ("b", "[1,7]"), ("z", "[1,5]")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(by_key(&out.expect("output")), want);
    // Opened again (a restart): the initial states are not loaded over the state.
    driver.memory = store.open(&*op, STREAM, false);
    let out = driver
        .step(2000, Some(&dealt(&[], 2)))
        .expect("batch")
        .output;
    assert_eq!(by_key(&out.expect("output")), want);
    drop(driver);
    let store = store.reopen(&[STREAM]);
    let memory = store.open(&*op, STREAM, false);
    let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
    let out = driver
        .step(3000, Some(&dealt(&[], 2)))
        .expect("batch")
        .output;
    assert_eq!(by_key(&out.expect("output")), want);
}

#[test]
fn update_state_by_key_refuses_unkeyed_input_naming_the_stream() {
    let op = planned(Builtin::SumI64);
    let store = Store::new(&[STREAM]);
    let env = Env::new(2);
    let memory = store.open(&*op, STREAM, false);
    let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
    let parts = vec![unkeyed(&["1"])];
    let err = driver
        .step(1000, Some(&parts))
        .err()
        .expect("unkeyed input");
    assert!(
        matches!(&err, OpError::Input(m) if m.contains("stream 'totals'") && m.contains("update_state_by_key")),
        "{err}"
    );
    // Without a store there is no state to run with.
    let mut memory = Memory::None;
    let scope = env.scope(9, 9000);
    let parts = dealt(&super::owned(&[("a", "1")]), 1);
    let err = super::run_op(
        &scope,
        &*op,
        STREAM,
        vec![input(&parts)],
        &mut memory,
        &mut Default::default(),
        false,
    )
    .err()
    .expect("no state");
    assert!(matches!(err, OpError::Input(_)), "{err}");
}

#[test]
fn snapshots_are_computed_only_when_wanted_and_passed_on() {
    let op = planned(Builtin::SumI64);
    let store = Store::new(&[STREAM]);
    let env = Env::new(2);
    let memory = store.open(&*op, STREAM, false);
    let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
    let first = dealt(&super::owned(&[("a", "1"), ("b", "2"), ("a", "3")]), 2);
    let ran = driver.step(1000, Some(&first)).expect("batch");
    assert!(ran.snapshot.is_none(), "a snapshot nobody asked for");
    driver.snapshot_wanted = true;
    let second = dealt(&super::owned(&[("b", "5")]), 2);
    let ran = driver.step(2000, Some(&second)).expect("batch");
    let snapshot = ran.snapshot.expect("a snapshot when wanted");
    let want: BTreeMap<String, String> = [("a", "4"), ("b", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(by_key(&snapshot), want);
    assert_eq!(by_key(&ran.output.expect("output")), want);

    // state_snapshots passes its input's snapshot on as its records.
    assert!(StateSnapshots.reads_snapshot());
    let records = dealt(&[], 2);
    let out = super::run_stateless(
        &env,
        &StateSnapshots,
        "snap",
        vec![Input {
            snapshot: Some(&snapshot),
            ..input(&records)
        }],
    )
    .expect("state_snapshots");
    assert_eq!(by_key(&out), want);
    // No snapshot: no records.
    let out = super::run_stateless(&env, &StateSnapshots, "snap", vec![input(&records)])
        .expect("state_snapshots");
    assert!(out.iter().all(|p| p.is_empty()));
}

#[test]
fn state_snapshots_plans_only_over_map_with_state() {
    let map_with_state = State(StateOp {
        updater: Updater::Udf(UdfRef(0)),
        map_with_state: true,
        partitions: 0,
        timeout: None,
        initial: None,
    });
    assert!(map_with_state.has_snapshots());
    let update = planned(Builtin::SumI64);
    assert!(!update.has_snapshots());
    let spec = spec("state_snapshots", None);
    let kind = crate::operators::kind("state_snapshots").expect("a kind");
    let try_plan = |op: Option<&dyn Operator>| {
        let inputs = [PlannedInput {
            name: "upstream",
            key_codec: Codec::Text,
            value_codec: Codec::Text,
            slide: 1000,
            op,
        }];
        let mut planner = FakePlanner {
            errors: Vec::new(),
            interval: 1000,
        };
        let planned = kind.plan(&mut PlanCx {
            spec: &spec,
            inputs: &inputs,
            function: None,
            reducer: None,
            services: &mut planner,
        });
        (planned.is_some(), planner.errors)
    };
    assert_eq!(try_plan(Some(&map_with_state)), (true, Vec::new()));
    for op in [Some(&*update), None] {
        let (ok, errors) = try_plan(op);
        assert!(!ok);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("state_snapshots reads the state of a map_with_state stream")),
            "{errors:?}"
        );
    }
}
