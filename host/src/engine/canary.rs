//! A canary: a new version of a component run beside the bound one on the same batches, its
//! outputs compared and discarded, its state changes never committed (`host deploy --canary K`).
//!
//! The executor runs the plan a second time over a copy of the batch's input and of what the
//! streams remember, with the canary's version bound in place of the live one, before the live
//! run; the store is only read. It then compares, stream by stream, what each sink's stream
//! produced. A canary that fails is reported, never a failure of the job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::batch::codec::Codec;
use crate::sinks::SinkBatch;
use crate::udf::{Bindings, UdfComponent};

/// Differing records shown per stream and batch.
const SHOWN: usize = 5;

/// A version on trial beside the live one.
#[derive(Debug)]
pub struct Canary {
    /// The component's name.
    pub component: String,
    /// Its version in the registry.
    pub version: Option<u64>,
    code: Arc<UdfComponent>,
    /// Batches to compare.
    pub batches: u32,
    report: Mutex<CanaryReport>,
}

/// What a canary found so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CanaryReport {
    /// The component.
    pub component: String,
    /// The canary's version.
    pub version: Option<u64>,
    /// Batches to compare.
    pub batches_wanted: u32,
    /// Batches compared.
    pub batches_compared: u32,
    /// Of which every sink's stream had the same records (as multisets).
    pub batches_identical: u32,
    /// Records the live version produced into sink streams, over the batches compared.
    pub records_live: u64,
    /// Records the canary produced there.
    pub records_canary: u64,
    /// Where they differed, first ones first.
    pub differences: Vec<CanaryDiff>,
    /// Batches where the canary failed, with why.
    pub errors: Vec<String>,
}

impl CanaryReport {
    /// Whether every batch wanted was compared.
    pub fn done(&self) -> bool {
        self.batches_compared >= self.batches_wanted
    }
}

/// One stream of one batch where the versions disagreed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryDiff {
    /// The batch id.
    pub batch: u64,
    /// The stream.
    pub stream: String,
    /// Records the live version produced.
    pub live: u64,
    /// Records the canary produced.
    pub canary: u64,
    /// Some records only the live version produced.
    pub only_live: Vec<String>,
    /// Some records only the canary produced.
    pub only_canary: Vec<String>,
}

/// Differences kept in a report (later batches are counted, not listed).
const MAX_DIFFS: usize = 50;

impl Canary {
    /// A canary of `code` (version `version` of `component`) for `batches` batches.
    pub fn new(
        component: &str,
        code: Arc<UdfComponent>,
        version: Option<u64>,
        batches: u32,
    ) -> Self {
        Self {
            component: component.to_string(),
            version,
            code,
            batches,
            report: Mutex::new(CanaryReport {
                component: component.to_string(),
                version,
                batches_wanted: batches,
                ..CanaryReport::default()
            }),
        }
    }

    /// Whether batches are still to be compared.
    pub fn wants_more(&self) -> bool {
        !self.report().done()
    }

    /// What it found so far.
    pub fn report(&self) -> CanaryReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `live` with every slot of the canary's component bound to the canary's version (an
    /// error when a function the job calls is missing there).
    pub fn bindings(&self, live: &Bindings) -> Result<Bindings, crate::udf::ResolveError> {
        let ids: Vec<_> = live
            .iter()
            .filter(|(_, b)| b.component().name() == self.component)
            .map(|(id, _)| id)
            .collect();
        let mut bindings = live.clone();
        for id in ids {
            bindings = bindings.with(id, &self.code, self.version)?;
        }
        Ok(bindings)
    }

    /// Count a batch whose canary run failed.
    pub fn failed(&self, batch: u64, error: String) {
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        report.batches_compared += 1;
        report.errors.push(format!("batch {batch}: {error}"));
    }

    /// Count in batch `batch`'s comparison of its sink streams.
    pub fn compare(&self, batch: u64, streams: &[SinkStream<'_>]) {
        let found = compare(batch, streams);
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        report.batches_compared += 1;
        report.batches_identical += u32::from(found.differences.is_empty());
        report.records_live += found.live;
        report.records_canary += found.canary;
        let room = MAX_DIFFS.saturating_sub(report.differences.len());
        report
            .differences
            .extend(found.differences.into_iter().take(room));
    }
}

/// One sink's stream of a batch, as both versions produced it.
pub struct SinkStream<'a> {
    /// The stream.
    pub stream: &'a str,
    /// How its keys read.
    pub key_codec: Codec,
    /// How its values read.
    pub value_codec: Codec,
    /// The live version's partitions.
    pub live: &'a [Batch],
    /// The canary's.
    pub canary: &'a [Batch],
}

/// What one batch's comparison found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Records the live version produced.
    pub live: u64,
    /// Records the canary produced.
    pub canary: u64,
    /// The streams that differ (records compared as multisets: order does not count).
    pub differences: Vec<CanaryDiff>,
}

/// Compare each stream's records, as the sinks would show them.
pub fn compare(batch: u64, streams: &[SinkStream<'_>]) -> Comparison {
    let mut found = Comparison::default();
    for s in streams {
        let lines = |parts: &[Batch]| {
            let shown = SinkBatch {
                id: batch,
                time: 0,
                partitions: parts,
                key_codec: s.key_codec,
                value_codec: s.value_codec,
            };
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for line in shown.lines() {
                *counts.entry(line).or_default() += 1;
            }
            counts
        };
        let (live, canary) = (lines(s.live), lines(s.canary));
        let live_n: u64 = live.values().sum();
        let canary_n: u64 = canary.values().sum();
        found.live += live_n;
        found.canary += canary_n;
        if live == canary {
            continue;
        }
        let only = |x: &BTreeMap<String, u64>, y: &BTreeMap<String, u64>| {
            x.iter()
                .filter(|(k, n)| y.get(*k).copied().unwrap_or(0) < **n)
                .take(SHOWN)
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        };
        found.differences.push(CanaryDiff {
            batch,
            stream: s.stream.to_string(),
            live: live_n,
            canary: canary_n,
            only_live: only(&live, &canary),
            only_canary: only(&canary, &live),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(values: &[&str]) -> Vec<Batch> {
        let mut b = Batch::empty(false);
        for v in values {
            b.push(None, v.as_bytes(), 0);
        }
        vec![b]
    }

    fn compare_one(live: &[&str], canary: &[&str]) -> Comparison {
        let (live, canary) = (parts(live), parts(canary));
        compare(
            7,
            &[SinkStream {
                stream: "s",
                key_codec: Codec::Text,
                value_codec: Codec::Text,
                live: &live,
                canary: &canary,
            }],
        )
    }

    #[test]
    fn the_same_records_in_another_order_are_identical() {
        let c = compare_one(&["a", "b", "b"], &["b", "a", "b"]);
        assert!(c.differences.is_empty());
        assert_eq!((c.live, c.canary), (3, 3));
    }

    #[test]
    fn differing_records_are_shown_on_their_side() {
        let c = compare_one(&["a", "b", "b"], &["a", "b", "c", "d"]);
        assert_eq!((c.live, c.canary), (3, 4));
        let d = &c.differences[0];
        assert_eq!(
            (d.batch, d.stream.as_str(), d.live, d.canary),
            (7, "s", 3, 4)
        );
        assert_eq!(d.only_live, ["b"]);
        assert_eq!(d.only_canary, ["c", "d"]);
    }
}
