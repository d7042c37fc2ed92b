//! Event-time windows with a builtin reducer: a hand-computed run per output mode, and random
//! runs against a model of the watermark rules (windows `[s, s + length)` with `s` a multiple
//! of the slide; the watermark is the largest event time of earlier batches minus the delay;
//! records older than it are late; records too far ahead are dropped).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Driver, Env, Rng, Store, plan, spec, text, timed};
use crate::batch::codec::Codec;
use crate::batch::{Batch, key_hash};
use crate::operators::{Builtin, Memory, Operator, OutputMode, StateLayout};
use crate::state::time_key;

const STREAM: &str = "per_window";

/// A window of the output: its start and key.
type WindowKey = (i64, String);

/// An `event_time_window` summing integers, planned.
fn planned(length: i64, slide: i64, delay: i64, mode: OutputMode, ahead: i64) -> Arc<dyn Operator> {
    let mut s = spec("event_time_window", Some(Builtin::SumI64));
    s.window = Some(Duration::from_millis(length as u64));
    s.slide = Some(Duration::from_millis(slide as u64));
    s.watermark = Some(Duration::from_millis(delay as u64));
    s.output_mode = Some(mode);
    s.max_event_time_ahead = Some(Duration::from_millis(ahead as u64));
    let planned = plan(&s, (Codec::Text, Codec::Number), 1000).expect("plans");
    assert_eq!(planned.key_codec, Codec::Json);
    planned.op
}

/// The windows of an output, by (start, key), after checking each record's key reads
/// `{"start", "end", "key"}`, its event time is the start, it is in the partition its
/// window's hash names, and no window appears twice.
fn windows(out: &[Batch], length: i64) -> BTreeMap<WindowKey, String> {
    let n = out.len() as u64;
    let mut got = BTreeMap::new();
    for (j, p) in out.iter().enumerate() {
        for r in p.records() {
            let key: serde_json::Value =
                serde_json::from_slice(r.key.expect("keyed")).expect("a JSON key");
            let start = key["start"].as_i64().expect("start");
            assert_eq!(key["end"].as_i64(), Some(start + length));
            let k = key["key"].as_str().expect("a text key").to_string();
            assert_eq!(r.event_time, start);
            let mut gk = time_key(start).to_vec();
            gk.extend_from_slice(k.as_bytes());
            assert_eq!((key_hash(&gk) % n) as usize, j);
            assert!(
                got.insert((start, k), text(r.value)).is_none(),
                "a window twice in one output"
            );
        }
    }
    got
}

/// Windows from `(start, key, value)`.
fn want(items: &[(i64, &str, i64)]) -> BTreeMap<WindowKey, String> {
    items
        .iter()
        .map(|(s, k, v)| ((*s, k.to_string()), v.to_string()))
        .collect()
}

/// The hand-computed run: tumbling 10 s windows, watermark 2 s behind, at most 60 s ahead.
/// Returns, per batch, the windows written and the records counted late.
fn scripted(mode: OutputMode) -> (Vec<BTreeMap<WindowKey, String>>, Vec<u64>, Env, i64) {
    let op = planned(10_000, 10_000, 2_000, mode, 60_000);
    let store = Store::new(&[STREAM]);
    let env = Env::new(2);
    let memory = store.open(&*op, STREAM, false);
    assert!(matches!(memory, Memory::Table(_)));
    let batches: Vec<Vec<Batch>> = vec![
        vec![
            timed(&[("a", "1", 1_000), ("b", "4", 9_000)]),
            timed(&[("a", "2", 5_000), ("a", "3", 12_000)]),
        ],
        // 9 000 is older than the watermark (12 000 - 2 000); 100 000 is more than 60 s ahead
        // of 12 000.
        vec![
            timed(&[("a", "10", 9_000), ("a", "20", 15_000)]),
            timed(&[("c", "5", 100_000)]),
        ],
        vec![timed(&[("b", "7", 25_000)])],
        vec![],
        vec![],
    ];
    let mut outputs = Vec::new();
    let mut late = Vec::new();
    let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
    for (i, parts) in batches.iter().enumerate() {
        let ran = driver
            .step(1000 * (i as i64 + 1), Some(parts))
            .expect("batch");
        outputs.push(windows(&ran.output.expect("output every batch"), 10_000));
        late.push(ran.late_records);
    }
    let watermark = op
        .watermark(&driver.memory)
        .expect("read the watermark")
        .expect("a watermark");
    let left = store.table(STREAM).scan(b"").expect("scan").len();
    drop(driver);
    // What is left in the store: append and update forget windows the watermark passed.
    let expect_left = match mode {
        OutputMode::Append | OutputMode::Update => 1,
        OutputMode::Complete => 4,
    };
    assert_eq!(left, expect_left, "{mode:?}: windows kept");
    (outputs, late, env, watermark)
}

#[test]
fn append_mode_writes_each_window_once_when_the_watermark_passes_it() {
    let (outputs, late, env, watermark) = scripted(OutputMode::Append);
    assert_eq!(
        outputs,
        [
            want(&[]),
            want(&[(0, "a", 3), (0, "b", 4)]),
            want(&[]),
            want(&[(10_000, "a", 23)]),
            want(&[]),
        ]
    );
    assert_eq!(late, [0, 1, 0, 0, 0]);
    assert_eq!(env.counter("sluice_late_records_total", STREAM), 1);
    assert_eq!(
        env.counter("sluice_event_time_too_far_ahead_total", STREAM),
        1
    );
    // The largest event time kept; the one too far ahead did not move it.
    assert_eq!(watermark, 25_000);
}

#[test]
fn update_mode_writes_the_windows_each_batch_changed() {
    let (outputs, late, env, _) = scripted(OutputMode::Update);
    assert_eq!(
        outputs,
        [
            want(&[(0, "a", 3), (0, "b", 4), (10_000, "a", 3)]),
            want(&[(10_000, "a", 23)]),
            want(&[(20_000, "b", 7)]),
            want(&[]),
            want(&[]),
        ]
    );
    assert_eq!(late, [0, 1, 0, 0, 0]);
    assert_eq!(env.counter("sluice_late_records_total", STREAM), 1);
    assert_eq!(
        env.counter("sluice_event_time_too_far_ahead_total", STREAM),
        1
    );
}

#[test]
fn complete_mode_writes_every_window_every_batch_and_nothing_is_late() {
    let (outputs, late, env, _) = scripted(OutputMode::Complete);
    let second = want(&[(0, "a", 13), (0, "b", 4), (10_000, "a", 23)]);
    let third = want(&[
        (0, "a", 13),
        (0, "b", 4),
        (10_000, "a", 23),
        (20_000, "b", 7),
    ]);
    assert_eq!(
        outputs,
        [
            want(&[(0, "a", 3), (0, "b", 4), (10_000, "a", 3)]),
            second,
            third.clone(),
            third.clone(),
            third,
        ]
    );
    assert_eq!(late, [0; 5]);
    assert_eq!(env.counter("sluice_late_records_total", STREAM), 0);
    assert_eq!(
        env.counter("sluice_event_time_too_far_ahead_total", STREAM),
        1
    );
}

/// The watermark rules, over windows of sums.
struct Model {
    length: i64,
    slide: i64,
    delay: i64,
    mode: OutputMode,
    ahead: i64,
    seen: Option<i64>,
    windows: BTreeMap<WindowKey, i64>,
}

impl Model {
    /// One batch at `time`: the windows written, records late, records too far ahead.
    fn step(
        &mut self,
        time: i64,
        records: &[(String, i64, i64)],
    ) -> (BTreeMap<WindowKey, String>, u64, u64) {
        let watermark = self.seen.map(|m| m - self.delay);
        let drop_before = match self.mode {
            OutputMode::Complete => i64::MIN,
            OutputMode::Append | OutputMode::Update => watermark.unwrap_or(i64::MIN),
        };
        let drop_after = self.seen.unwrap_or(time) + self.ahead;
        let (mut late, mut ahead) = (0, 0);
        let mut changed = Vec::new();
        let mut max = None;
        for (key, value, t) in records {
            if *t < drop_before {
                late += 1;
            } else if *t > drop_after {
                ahead += 1;
            } else {
                max = max.max(Some(*t));
                let mut s = t.div_euclid(self.slide) * self.slide;
                while s + self.length > *t {
                    *self.windows.entry((s, key.clone())).or_default() += value;
                    changed.push((s, key.clone()));
                    s -= self.slide;
                }
            }
        }
        self.seen = self.seen.max(max);
        let closed = |w: &WindowKey| watermark.is_some_and(|wm| w.0 + self.length <= wm);
        let mut out = BTreeMap::new();
        match self.mode {
            OutputMode::Append | OutputMode::Update => {
                if self.mode == OutputMode::Update {
                    for w in changed {
                        out.insert(w.clone(), self.windows[&w].to_string());
                    }
                }
                let gone: Vec<WindowKey> =
                    self.windows.keys().filter(|w| closed(w)).cloned().collect();
                for w in gone {
                    let v = self.windows.remove(&w).unwrap_or_default();
                    if self.mode == OutputMode::Append {
                        out.insert(w, v.to_string());
                    }
                }
            }
            OutputMode::Complete => {
                for (w, v) in &self.windows {
                    out.insert(w.clone(), v.to_string());
                }
            }
        }
        (out, late, ahead)
    }
}

#[test]
fn sliding_windows_follow_the_watermark_rules_in_every_mode() {
    let (length, slide, delay, ahead) = (10_000, 5_000, 3_000, 40_000);
    for mode in [OutputMode::Append, OutputMode::Update, OutputMode::Complete] {
        // Over the seeds: records were late (except in complete mode) and too far ahead.
        let (mut late_seen, mut ahead_seen) = (0, 0);
        for seed in 1..=4 {
            let op = planned(length, slide, delay, mode, ahead);
            assert_eq!(
                op.layout(),
                Some(StateLayout::EventTimeWindow {
                    length,
                    slide,
                    builtin: Some(Builtin::SumI64),
                })
            );
            let store = Store::new(&[STREAM]);
            let env = Env::new(3);
            let memory = store.open(&*op, STREAM, false);
            let mut driver = Driver::new(&env, &*op, STREAM, memory, Some(&store.store));
            let mut model = Model {
                length,
                slide,
                delay,
                mode,
                ahead,
                seen: None,
                windows: BTreeMap::new(),
            };
            let mut rng = Rng::new(seed * 7 + mode as u64);
            let (mut late_total, mut ahead_total) = (0, 0);
            for i in 1..=15i64 {
                let time = i * 1000;
                // Event times around 4 s per batch, some behind, now and then far ahead.
                let records: Vec<(String, i64, i64)> = (0..rng.below(10))
                    .map(|_| {
                        let jitter = rng.below(16_000) as i64 - 10_000;
                        let far = if rng.below(25) == 0 { 100_000 } else { 0 };
                        (
                            format!("k{}", rng.below(3)),
                            rng.below(9) as i64 + 1,
                            (i * 4_000 + jitter + far).max(0),
                        )
                    })
                    .collect();
                let mut parts: Vec<Batch> = (0..2).map(|_| Batch::empty(true)).collect();
                for (j, (k, v, t)) in records.iter().enumerate() {
                    parts[j % 2].push(Some(k.as_bytes()), v.to_string().as_bytes(), *t);
                }
                let ran = driver.step(time, Some(&parts)).expect("batch");
                let (want, late, too_far) = model.step(time, &records);
                let got = windows(&ran.output.expect("output"), length);
                assert_eq!(got, want, "{mode:?}, seed {seed}, batch {i}");
                assert_eq!(ran.late_records, late, "{mode:?}, seed {seed}, batch {i}");
                late_total += late;
                ahead_total += too_far;
            }
            assert_eq!(env.counter("sluice_late_records_total", STREAM), late_total);
            assert_eq!(
                env.counter("sluice_event_time_too_far_ahead_total", STREAM),
                ahead_total
            );
            assert_eq!(op.watermark(&driver.memory).expect("watermark"), model.seen);
            late_seen += late_total;
            ahead_seen += ahead_total;
        }
        assert_eq!(
            late_seen > 0,
            mode != OutputMode::Complete,
            "{mode:?}: late records"
        );
        assert!(ahead_seen > 0, "{mode:?}: no record too far ahead");
    }
}
