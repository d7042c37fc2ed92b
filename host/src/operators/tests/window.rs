//! Batch-time windows, planned through their [`OperatorKind`](crate::operators::OperatorKind),
//! run over batches at t = 1000, 2000, … and compared at every slide with the window
//! recomputed from the raw batches: in memory, mirrored in the store across a restart, and
//! incrementally with the inverse in RocksDB.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::{Driver, Env, Rng, Store, all_records, by_key, dealt, plan, spec};
use crate::batch::Batch;
use crate::batch::codec::Codec;
use crate::operators::window::WindowBuffer;
use crate::operators::{Builtin, Memory, Operator, StateLayout};
use crate::state::StateStore;

/// The batch interval of every test job, ms.
const INTERVAL: i64 = 1000;

/// The records of one input batch: `(key, value)`.
type Records = Vec<(String, String)>;

/// The input: a batch of records at each time.
struct Feed {
    batches: Vec<(i64, Records)>,
}

impl Feed {
    /// `n` batches at 1000, 2000, … of up to 12 records over 5 keys, integer values in
    /// -5..=5 (so some keys sum to 0 while they still have records).
    fn random(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed);
        let batches = (1..=n as i64)
            .map(|i| {
                let records = (0..rng.below(13))
                    .map(|_| {
                        (
                            format!("k{}", rng.below(5)),
                            (rng.below(11) as i64 - 5).to_string(),
                        )
                    })
                    .collect();
                (i * INTERVAL, records)
            })
            .collect();
        Self { batches }
    }

    /// The records of the batches in `(t - length, t]`.
    fn window(&self, t: i64, length: i64) -> Vec<(String, String)> {
        self.batches
            .iter()
            .filter(|(time, _)| *time > t - length && *time <= t)
            .flat_map(|(_, r)| r.iter().cloned())
            .collect()
    }

    /// The time of the last batch.
    fn end(&self) -> i64 {
        self.batches.last().map_or(0, |(t, _)| *t)
    }
}

/// A batch-time window operator and its stream name.
fn planned_window(
    op: &str,
    builtin: Option<Builtin>,
    length: i64,
    slide: i64,
    inverse: bool,
) -> Arc<dyn Operator> {
    let mut s = spec(op, builtin);
    s.window = Some(Duration::from_millis(length as u64));
    s.slide = Some(Duration::from_millis(slide as u64));
    s.inverse = inverse.then_some(true);
    let planned = plan(&s, (Codec::Text, Codec::Number), INTERVAL).expect("plans");
    assert_eq!(planned.slide, Some(slide));
    planned.op
}

/// Per key, its values in `records`.
fn per_key(records: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in records {
        out.entry(k.clone()).or_default().push(v.clone());
    }
    out
}

fn sum(values: &[String]) -> i64 {
    values
        .iter()
        .map(|v| v.parse::<i64>().expect("an integer"))
        .sum()
}

/// Check a slide's output of `op` against `records`, the window's input recomputed.
fn check(op: &str, builtin: Option<Builtin>, out: &[Batch], records: &[(String, String)], t: i64) {
    let what = format!("{op} ({builtin:?}) at t = {t}");
    match op {
        "window" => {
            let mut want: Vec<(Option<String>, String)> = records
                .iter()
                .map(|(k, v)| (Some(k.clone()), v.clone()))
                .collect();
            want.sort();
            let got: Vec<(Option<String>, String)> = all_records(out)
                .into_iter()
                .map(|(k, v, _)| (k, v))
                .collect();
            assert_eq!(got, want, "{what}");
        }
        "count_by_window" => {
            assert_eq!(
                all_records(out),
                [(None, records.len().to_string(), t)],
                "{what}"
            );
        }
        "reduce_by_window" => {
            let values: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
            let want: Vec<(Option<String>, String, i64)> = if values.is_empty() {
                Vec::new()
            } else {
                vec![(None, sum(&values).to_string(), t)]
            };
            assert_eq!(all_records(out), want, "{what}");
        }
        "reduce_by_key_and_window" => {
            let want: BTreeMap<String, String> = per_key(records)
                .into_iter()
                .map(|(k, vs)| {
                    let value = match builtin {
                        Some(Builtin::CountAndSum) => format!("[{},{}]", vs.len(), sum(&vs)),
                        Some(Builtin::Count) => vs.len().to_string(),
                        _ => sum(&vs).to_string(),
                    };
                    (k, value)
                })
                .collect();
            assert_eq!(by_key(out), want, "{what}");
        }
        "count_by_value_and_window" => {
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            for (_, v) in records {
                *want.entry(v.clone()).or_default() += 1;
            }
            let want: BTreeMap<String, String> =
                want.into_iter().map(|(k, n)| (k, n.to_string())).collect();
            assert_eq!(by_key(out), want, "{what}");
        }
        "group_by_key_and_window" => {
            let got: BTreeMap<String, Vec<String>> = by_key(out)
                .into_iter()
                .map(|(k, v)| {
                    // The input's values are numbers: the array holds them as JSON numbers.
                    let items: Vec<i64> = serde_json::from_str(&v).expect("a JSON array");
                    let mut items: Vec<String> = items.iter().map(i64::to_string).collect();
                    items.sort();
                    (k, items)
                })
                .collect();
            let want: BTreeMap<String, Vec<String>> = per_key(records)
                .into_iter()
                .map(|(k, mut vs)| {
                    vs.sort();
                    (k, vs)
                })
                .collect();
            assert_eq!(got, want, "{what}");
        }
        other => panic!("no model of {other}"),
    }
}

/// Run `op` over `feed` then empty batches until the last record has left the window;
/// every slide's output compared with the window recomputed. `restart_at`: reopen the
/// operator's memory from the store after that batch (a restart).
#[allow(clippy::too_many_arguments)]
fn run_window(
    name: &str,
    builtin: Option<Builtin>,
    length: i64,
    slide: i64,
    feed: &Feed,
    input_parts: usize,
    store: Option<(&Store, bool)>,
    restart_at: Option<i64>,
) {
    let inverse = store.is_some_and(|(_, checkpointed)| !checkpointed);
    let op = planned_window(name, builtin, length, slide, inverse);
    let env = Env::new(2);
    let stream = "out";
    let memory = match store {
        Some((s, checkpointed)) => s.open(&*op, stream, checkpointed),
        None => Memory::Buffer(WindowBuffer::default()),
    };
    match (&memory, inverse) {
        (Memory::Table(_), true) | (Memory::Buffer(_), false) => {}
        _ => panic!("{name}: unexpected memory for inverse = {inverse}"),
    }
    let mut driver = Driver::new(&env, &*op, stream, memory, store.map(|(s, _)| &s.store));
    driver.value_codec = Codec::Number;
    let last = feed.end() + length + slide;
    let mut slides = 0;
    for t in (1..).map(|i| i * INTERVAL).take_while(|t| *t <= last) {
        let records = feed
            .batches
            .iter()
            .find(|(time, _)| *time == t)
            .map(|(_, r)| r.clone());
        let parts = records.as_ref().map(|r| dealt(r, input_parts));
        // After the feed the input has no batches at all: the window still slides.
        let ran = driver.step(t, parts.as_deref()).expect("window batch");
        match ran.output {
            Some(out) => {
                assert_eq!(t % slide, 0, "{name}: output at t = {t}, not a slide time");
                check(name, builtin, &out, &feed.window(t, length), t);
                slides += 1;
            }
            None => assert_ne!(t % slide, 0, "{name}: no output at slide time {t}"),
        }
        if let (Some((s, _)), true) = (store, inverse) {
            check_current(&s.store, stream, builtin, &feed.window(t, length), t);
        }
        if restart_at == Some(t)
            && let Some((s, checkpointed)) = store
        {
            driver.memory = s.open(&*op, stream, checkpointed);
        }
    }
    assert!(slides > 0);
    if let Some((s, _)) = store {
        let left = s.table(stream).scan(&[]).expect("scan");
        assert!(
            left.is_empty(),
            "{name}: {} entries left in the store after every record left the window",
            left.len()
        );
    }
}

/// After each committed batch, an incremental window's stored current values are exactly the
/// keys with records in the window, each with its record count and accumulator.
fn check_current(
    store: &StateStore,
    stream: &str,
    builtin: Option<Builtin>,
    records: &[(String, String)],
    t: i64,
) {
    let stored: BTreeMap<String, (u64, String)> = store
        .table(stream)
        .scan(b"s")
        .expect("scan")
        .into_iter()
        .map(|(k, v)| {
            let (count, acc) = v.split_first_chunk::<8>().expect("a tally");
            (
                super::text(&k[1..]),
                (u64::from_be_bytes(*count), super::text(acc)),
            )
        })
        .collect();
    let want: BTreeMap<String, (u64, String)> = per_key(records)
        .into_iter()
        .map(|(k, vs)| {
            let acc = match builtin {
                Some(Builtin::CountAndSum) => format!("[{},{}]", vs.len(), sum(&vs)),
                _ => sum(&vs).to_string(),
            };
            (k, (vs.len() as u64, acc))
        })
        .collect();
    assert_eq!(stored, want, "stored window values at t = {t}");
}

const FAMILIES: [(&str, Option<Builtin>); 7] = [
    ("window", None),
    ("count_by_window", None),
    ("reduce_by_window", Some(Builtin::SumI64)),
    ("reduce_by_key_and_window", Some(Builtin::SumI64)),
    ("reduce_by_key_and_window", Some(Builtin::CountAndSum)),
    ("count_by_value_and_window", None),
    ("group_by_key_and_window", None),
];

#[test]
fn every_window_family_in_memory_equals_a_recomputation() {
    for (name, builtin) in FAMILIES {
        for (length, slide, seed) in [(3000, 2000, 1), (3000, 1000, 2), (4000, 4000, 3)] {
            let feed = Feed::random(seed, 12);
            run_window(name, builtin, length, slide, &feed, 3, None, None);
        }
    }
}

#[test]
fn windows_mirrored_in_the_store_survive_a_restart() {
    for (name, builtin) in FAMILIES {
        let store = Store::new(&["out"]);
        let feed = Feed::random(11, 10);
        run_window(
            name,
            builtin,
            3000,
            2000,
            &feed,
            2,
            Some((&store, true)),
            Some(5000),
        );
    }
}

#[test]
fn the_incremental_window_equals_a_recomputation_and_forgets_keys_exactly() {
    for builtin in [Builtin::SumI64, Builtin::CountAndSum] {
        for (length, slide, seed) in [(3000, 2000, 21), (3000, 1000, 22), (5000, 5000, 23)] {
            let store = Store::new(&["out"]);
            let feed = Feed::random(seed, 14);
            run_window(
                "reduce_by_key_and_window",
                Some(builtin),
                length,
                slide,
                &feed,
                3,
                Some((&store, false)),
                None,
            );
        }
    }
}

#[test]
fn an_incremental_key_whose_values_sum_to_zero_stays_while_it_has_records() {
    let feed = Feed {
        batches: vec![
            (1000, super::owned(&[("a", "3"), ("b", "1")])),
            (2000, super::owned(&[("a", "-3")])),
            (3000, Vec::new()),
            (4000, super::owned(&[("b", "2")])),
        ],
    };
    let store = Store::new(&["out"]);
    // The recomputation keeps `a` = 0 at t = 2000 and 3000; it leaves at t = 4000 (window
    // 2000ms: (2000, 4000]) — checked batch by batch against the stored values too.
    run_window(
        "reduce_by_key_and_window",
        Some(Builtin::SumI64),
        2000,
        1000,
        &feed,
        2,
        Some((&store, false)),
        None,
    );
}

#[test]
fn window_planning_checks_sizes_and_describes_the_layout() {
    let op = planned_window(
        "reduce_by_key_and_window",
        Some(Builtin::SumI64),
        3000,
        1000,
        true,
    );
    assert_eq!(
        op.layout(),
        Some(StateLayout::Window {
            length: 3000,
            slide: 1000,
            incremental: true,
            builtin: Some(Builtin::SumI64),
        })
    );
    assert!(op.keeps_state(false));
    assert!(op.runs_without_input() && op.needs_every_batch());
    let op = planned_window("count_by_window", None, 3000, 1000, false);
    assert!(!op.keeps_state(false) && op.keeps_state(true));

    let bad = |window: u64, slide: u64| {
        let mut s = spec("count_by_window", None);
        s.window = Some(Duration::from_millis(window));
        s.slide = Some(Duration::from_millis(slide));
        plan(&s, (Codec::Text, Codec::Text), INTERVAL)
            .err()
            .unwrap_or_default()
    };
    assert!(bad(3000, 1000).is_empty());
    let errors = bad(2500, 1000);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("window = 2s 500ms is not a multiple")),
        "{errors:?}"
    );
    let errors = bad(2000, 3000);
    assert!(
        errors.iter().any(|e| e.contains("longer than window")),
        "{errors:?}"
    );
    // `filter` needs inverse = true.
    let mut s = spec("reduce_by_key_and_window", Some(Builtin::SumI64));
    s.window = Some(Duration::from_secs(3));
    s.filter = Some("f#keep".into());
    let errors = plan(&s, (Codec::Text, Codec::Number), INTERVAL)
        .err()
        .unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`filter` applies only with inverse = true")),
        "{errors:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// reduce_by_key_and_window, recomputed in memory and incremental in RocksDB, over any
    /// window and slide (whole batches) and any input.
    #[test]
    fn reduce_by_key_and_window_equals_a_recomputation(
        seed in any::<u64>(),
        batches in 1usize..12,
        length_batches in 1i64..6,
        slide_batches in 1i64..6,
        input_parts in 1usize..4,
    ) {
        let slide_batches = slide_batches.min(length_batches);
        let (length, slide) = (length_batches * INTERVAL, slide_batches * INTERVAL);
        let feed = Feed::random(seed, batches);
        run_window("reduce_by_key_and_window", Some(Builtin::SumI64), length, slide, &feed, input_parts, None, None);
        let store = Store::new(&["out"]);
        run_window("reduce_by_key_and_window", Some(Builtin::SumI64), length, slide, &feed, input_parts, Some((&store, false)), None);
    }
}
