//! The bundled components, loaded into the real runtime, give exact outputs for every role.

use sluice_host::batch::{Batch, Column};
use sluice_host::metrics::SeriesKey;
use sluice_host::udf::{
    CallContext, CallError, CallErrorKind, FunctionKind, ResolveError, Role, RuntimeConfig,
    UdfRuntime, UpdateInput,
};
use sluice_tests::{load, runtime_with, udf};

fn runtime() -> UdfRuntime {
    runtime_with(RuntimeConfig::default())
}

fn lines(values: &[&str]) -> Batch {
    let mut batch = Batch::empty(false);
    for (i, v) in values.iter().enumerate() {
        batch.push(None, v.as_bytes(), 1000 + i as i64);
    }
    batch
}

fn keyed(pairs: &[(&str, &str)]) -> Batch {
    let mut batch = Batch::empty(true);
    for (i, (k, v)) in pairs.iter().enumerate() {
        batch.push(Some(k.as_bytes()), v.as_bytes(), 1000 + i as i64);
    }
    batch
}

/// `(key, value, event time)` of every record, as text.
fn records(batch: &Batch) -> Vec<(Option<String>, String, i64)> {
    batch
        .records()
        .map(|r| {
            (
                r.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(r.value).into_owned(),
                r.event_time,
            )
        })
        .collect()
}

fn items(column: &Column) -> Vec<String> {
    column
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// `err` is the guest's own error about record `index`, its message containing `says`.
fn assert_guest_error(err: &CallError, index: u32, says: &str) {
    match &err.kind {
        CallErrorKind::Guest {
            message,
            record_index,
        } => {
            assert_eq!(*record_index, Some(index), "{message}");
            assert!(message.contains(says), "{message}");
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}

fn ctx() -> CallContext {
    CallContext::adhoc()
}

#[test]
fn text_transforms_give_exact_outputs() {
    let rt = runtime();
    let text = load(&rt, &udf("text"));
    assert_eq!(text.role(), Role::Transform);
    let names: Vec<_> = text
        .functions()
        .iter()
        .map(|f| (f.name.as_str(), f.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("split_words", FunctionKind::FlatMap),
            ("pair_one", FunctionKind::Map),
            ("key_number", FunctionKind::TryMap),
            ("uppercase", FunctionKind::Map),
            ("lowercase", FunctionKind::Map),
            ("non_empty", FunctionKind::Filter)
        ]
    );

    let split = text
        .function("split_words")
        .unwrap()
        .transform(&ctx(), &lines(&["to be  or", "", "not"]))
        .unwrap();
    assert_eq!(
        records(&split),
        [
            (None, "to".into(), 1000),
            (None, "be".into(), 1000),
            (None, "or".into(), 1000),
            (None, "not".into(), 1002)
        ]
    );

    let pairs = text
        .function("pair_one")
        .unwrap()
        .transform(&ctx(), &split)
        .unwrap();
    assert_eq!(records(&pairs)[1], (Some("be".into()), "1".into(), 1000));

    let upper = text
        .function("uppercase")
        .unwrap()
        .transform(&ctx(), &lines(&["straße", "abc"]))
        .unwrap();
    assert_eq!(
        records(&upper)
            .iter()
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>(),
        ["STRASSE", "ABC"]
    );
    let lower = text
        .function("lowercase")
        .unwrap()
        .transform(&ctx(), &lines(&["ÀB"]))
        .unwrap();
    assert_eq!(records(&lower)[0].1, "àb");

    // A filter passes records through unchanged, keys and times included.
    let kept = text
        .function("non_empty")
        .unwrap()
        .transform(&ctx(), &keyed(&[("k1", " "), ("k2", "x")]))
        .unwrap();
    assert_eq!(records(&kept), [(Some("k2".into()), "x".into(), 1001)]);

    // Text is checked once per partition; a record that is not UTF-8 still fails the batch by
    // its index, also when the partition as a whole is valid UTF-8 but a record boundary cuts
    // a character ("é" is C3 A9).
    for (values, bad) in [
        (&[&b"ok"[..], b"bad \xff", b"fine"][..], 1),
        (&[&b"ok"[..], b"fine", b"\xc3", b"\xa9"][..], 2),
    ] {
        let mut batch = Batch::empty(false);
        for v in values {
            batch.push(None, v, 0);
        }
        let err = text
            .function("uppercase")
            .unwrap()
            .transform(&ctx(), &batch)
            .unwrap_err();
        assert_guest_error(&err, bad, "UTF-8");
    }

    // An empty partition is fine.
    assert!(
        text.function("uppercase")
            .unwrap()
            .transform(&ctx(), &lines(&[]))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn clickstream_parses_filters_and_projects() {
    let rt = runtime();
    let click = load(&rt, &udf("clickstream"));
    let input = lines(&[
        "1700000000000,9,view,0",
        "1700000000001,42,purchase,12.34",
        "1699999998000,42,click,0",
    ]);
    let parsed = click
        .function("parse_event")
        .unwrap()
        .transform(&ctx(), &input)
        .unwrap();
    assert_eq!(
        records(&parsed),
        [
            (
                Some("9".into()),
                r#"{"user_id":9,"event_type":"view","amount_cents":0}"#.into(),
                1_700_000_000_000
            ),
            (
                Some("42".into()),
                r#"{"user_id":42,"event_type":"purchase","amount_cents":1234}"#.into(),
                1_700_000_000_001
            ),
            (
                Some("42".into()),
                r#"{"user_id":42,"event_type":"click","amount_cents":0}"#.into(),
                1_699_999_998_000
            ),
        ]
    );
    let purchases = click
        .function("is_purchase")
        .unwrap()
        .transform(&ctx(), &parsed)
        .unwrap();
    let amounts = click
        .function("amount_cents")
        .unwrap()
        .transform(&ctx(), &purchases)
        .unwrap();
    assert_eq!(
        records(&amounts),
        [(Some("42".into()), "1234".into(), 1_700_000_000_001)]
    );
    let views = click
        .function("is_view")
        .unwrap()
        .transform(&ctx(), &parsed)
        .unwrap();
    assert_eq!(views.len(), 1);
    let by_type = click
        .function("by_event_type")
        .unwrap()
        .transform(&ctx(), &parsed)
        .unwrap();
    assert_eq!(records(&by_type)[2].0.as_deref(), Some("click"));

    // Strict parsing fails the batch and names the record; lenient parsing skips and counts.
    let bad = lines(&["1,2,view,0", "1,2,teleport,0"]);
    let err = click
        .function("parse_event")
        .unwrap()
        .transform(&ctx(), &bad)
        .unwrap_err();
    assert_guest_error(&err, 1, "teleport");
    assert!(err.to_string().contains("clickstream#parse_event"), "{err}");
    let lenient = click
        .function("parse_event_lenient")
        .unwrap()
        .transform(&ctx(), &bad)
        .unwrap();
    assert_eq!(lenient.len(), 1);
    let malformed = SeriesKey::new(
        "malformed_lines",
        &[
            ("component", "clickstream"),
            ("function", "parse_event_lenient"),
            ("job", "adhoc"),
            ("tenant", "local"),
        ],
    );
    assert_eq!(rt.registry().counter(&malformed), 1);
}

#[test]
fn reducers_reduce_groups_and_invert() {
    let rt = runtime();
    let agg = load(&rt, &udf("aggregates"));
    assert_eq!(agg.role(), Role::Reducer);
    let inverse: Vec<_> = agg
        .functions()
        .iter()
        .map(|f| (f.name.as_str(), f.has_inverse))
        .collect();
    assert_eq!(
        inverse,
        [
            ("sum_i64", true),
            ("sum_f64", true),
            ("count_and_sum", true),
            ("min_i64", false),
            ("max_i64", false)
        ]
    );

    let values = Column::from_items(["1", "2", "3", "-10", "7"]);
    let sum = agg.function("sum_i64").unwrap();
    assert_eq!(
        items(&sum.reduce(&ctx(), &values, &[3, 4, 5]).unwrap()),
        ["6", "-10", "7"]
    );
    let max = agg.function("max_i64").unwrap();
    assert_eq!(items(&max.reduce(&ctx(), &values, &[5]).unwrap()), ["7"]);
    let min = agg.function("min_i64").unwrap();
    assert_eq!(
        items(&min.reduce(&ctx(), &values, &[2, 5]).unwrap()),
        ["1", "-10"]
    );
    let fsum = agg.function("sum_f64").unwrap();
    assert_eq!(
        items(
            &fsum
                .reduce(&ctx(), &Column::from_items(["0.5", "0.25"]), &[2])
                .unwrap()
        ),
        ["0.75"]
    );

    let pairs = Column::from_items(["[1,100]", "[2,50]", "[1,7]"]);
    let cs = agg.function("count_and_sum").unwrap();
    assert_eq!(
        items(&cs.reduce(&ctx(), &pairs, &[3]).unwrap()),
        ["[4,157]"]
    );
    assert_eq!(
        items(
            &cs.invert(
                &ctx(),
                &Column::from_items(["[4,157]"]),
                &Column::from_items(["[1,7]"])
            )
            .unwrap()
        ),
        ["[3,150]"]
    );

    // The inverse takes the right side out of the left, item by item.
    let left = Column::from_items(["10", "5"]);
    let right = Column::from_items(["3", "5"]);
    assert_eq!(
        items(&sum.invert(&ctx(), &left, &right).unwrap()),
        ["7", "0"]
    );
    let err = max.invert(&ctx(), &left, &right).unwrap_err();
    assert!(err.to_string().contains("has no inverse"), "{err}");

    // A value that is not a number fails with the item named.
    let err = sum
        .reduce(&ctx(), &Column::from_items(["1", "x"]), &[2])
        .unwrap_err();
    assert!(
        err.to_string().contains("value 1") && err.to_string().contains("i64"),
        "{err}"
    );
}

fn update_input(
    keys: &[&str],
    groups: &[&[&str]],
    states: &[Option<&str>],
    timing_out: &[bool],
    batch_time: i64,
) -> UpdateInput {
    let mut values = Column::new();
    let mut group_ends = Vec::new();
    for group in groups {
        for v in *group {
            values.push(v.as_bytes());
        }
        group_ends.push(values.len() as u32);
    }
    UpdateInput {
        keys: Column::from_items(keys),
        values,
        group_ends,
        states: Column::from_items(states.iter().map(|s| s.unwrap_or(""))),
        has_state: states.iter().map(Option::is_some).collect(),
        timing_out: timing_out.to_vec(),
        batch_time,
    }
}

#[test]
fn updaters_keep_running_totals_and_sessions() {
    let rt = runtime();
    let state = load(&rt, &udf("state"));
    assert_eq!(state.role(), Role::Updater);

    let total = state.function("running_total").unwrap();
    let out = total
        .update(
            &ctx(),
            &update_input(
                &["a", "b", "c"],
                &[&["1", "2"], &[], &["5"]],
                &[Some("10"), Some("4"), None],
                &[false; 3],
                0,
            ),
        )
        .unwrap();
    assert_eq!(items(&out.states), ["13", "4", "5"]);
    assert_eq!(out.has_state, [true, true, true]);
    assert!(out.emitted.is_empty());

    let count_sum = state.function("running_count_and_sum").unwrap();
    let out = count_sum
        .update(
            &ctx(),
            &update_input(&["u"], &[&["100", "250"]], &[Some("[1,5]")], &[false], 0),
        )
        .unwrap();
    assert_eq!(items(&out.states), ["[3,355]"]);

    // A session counts events while active and is emitted, then removed, when it times out.
    let session = state.function("session").unwrap();
    assert_eq!(session.info().kind, FunctionKind::MapWithState);
    let out = session
        .update(
            &ctx(),
            &update_input(&["alice"], &[&["e1", "e2"]], &[None], &[false], 5000),
        )
        .unwrap();
    let s1 = items(&out.states)[0].clone();
    assert_eq!(
        s1,
        r#"{"events":2,"first_batch_ms":5000,"last_batch_ms":5000}"#
    );
    let out = session
        .update(
            &ctx(),
            &update_input(&["alice"], &[&["e3"]], &[Some(&s1)], &[false], 6000),
        )
        .unwrap();
    let s2 = items(&out.states)[0].clone();
    assert_eq!(
        s2,
        r#"{"events":3,"first_batch_ms":5000,"last_batch_ms":6000}"#
    );
    let out = session
        .update(
            &ctx(),
            &update_input(&["alice"], &[&[]], &[Some(&s2)], &[true], 9000),
        )
        .unwrap();
    assert_eq!(out.has_state, [false]);
    assert_eq!(
        records(&out.emitted),
        [(
            Some("alice".into()),
            r#"{"events":3,"first_batch_ms":5000,"last_batch_ms":6000}"#.into(),
            9000
        )]
    );
}

#[test]
fn sinks_consume_partitions_and_report_metrics() {
    let rt = runtime();
    let sinks = load(&rt, &udf("sinks"));
    assert_eq!(sinks.role(), Role::Sink);
    let context = CallContext {
        batch_id: 7,
        batch_time: 123,
        partition: 2,
        ..CallContext::adhoc()
    };
    sinks
        .function("log_batch")
        .unwrap()
        .sink(&context, &lines(&["a", "b", "c"]))
        .unwrap();
    sinks
        .function("log_records")
        .unwrap()
        .sink(&context, &keyed(&[("k", "v")]))
        .unwrap();
    let seen = SeriesKey::new(
        "records_seen",
        &[
            ("component", "sinks"),
            ("function", "log_batch"),
            ("job", "adhoc"),
            ("tenant", "local"),
        ],
    );
    assert_eq!(rt.registry().counter(&seen), 3);
    let stats = sinks.function("log_batch").unwrap().stats();
    assert_eq!((stats.calls, stats.errors, stats.records_in), (1, 0, 3));
}

#[test]
fn functions_resolve_by_name_and_role() {
    let rt = runtime();
    let text = load(&rt, &udf("text"));
    let err = text.function("split").unwrap_err();
    assert!(matches!(err, ResolveError::UnknownFunction { .. }));
    assert!(err.to_string().contains("split_words, pair_one"), "{err}");
    let agg = load(&rt, &udf("aggregates"));
    let err = agg.function_for("sum_i64", Role::Transform).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`aggregates#sum_i64` is a reducer function, but this operator needs a transform function"
    );
    // Calling a reducer as a transform is a typed error, not a crash.
    let err = agg
        .function("sum_i64")
        .unwrap()
        .transform(&ctx(), &lines(&["1"]))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a reducer component was called as a transform"),
        "{err}"
    );
    assert!(sluice_host::udf::parse_spec("text").is_err());
    assert_eq!(
        sluice_host::udf::parse_spec("text#split_words").unwrap(),
        ("text", "split_words")
    );
}

#[test]
fn the_template_builds_into_a_working_component() {
    let rt = runtime();
    let template = load(&rt, &udf("template"));
    let out = template
        .function("greet")
        .unwrap()
        .transform(&ctx(), &lines(&["world"]))
        .unwrap();
    assert_eq!(records(&out)[0].1, "hello, world");
}
