//! Counters and gauges of the host and of its guests, labelled, kept in memory for the UI and
//! a Prometheus endpoint.
//!
//! Guests can name their own metrics; the UDF runtime caps how many distinct series one
//! component may create and how long a name may be (`UdfLimits::max_metric_series`,
//! `max_metric_name`), so a guest cannot grow host memory without end.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One series: a metric name and its labels, e.g. `udf_calls_total{component="text",function="split_words"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// The metric name.
    pub name: String,
    /// `(label, value)` pairs, sorted by label.
    pub labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// A series named `name` with `labels`.
    pub fn new(name: impl Into<String>, labels: &[(&str, &str)]) -> Self {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        Self {
            name: name.into(),
            labels,
        }
    }
}

/// Every counter and gauge of the process.
#[derive(Debug, Default)]
pub struct Registry {
    counters: Mutex<BTreeMap<SeriesKey, u64>>,
    gauges: Mutex<BTreeMap<SeriesKey, f64>>,
}

impl Registry {
    /// Add `delta` to a counter. The key is cloned only when the series is new.
    pub fn add(&self, key: &SeriesKey, delta: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        match counters.get_mut(key) {
            Some(value) => *value = value.saturating_add(delta),
            None => {
                counters.insert(key.clone(), delta);
            }
        }
    }

    /// Set a gauge. The key is cloned only when the series is new.
    pub fn set(&self, key: &SeriesKey, value: f64) {
        let mut gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        match gauges.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                gauges.insert(key.clone(), value);
            }
        }
    }

    /// The value of a counter (0 if never added to).
    pub fn counter(&self, key: &SeriesKey) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// The value of a gauge, if ever set.
    pub fn gauge(&self, key: &SeriesKey) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// How many series carry the label `label = value` (used to cap what one guest creates).
    pub fn series_with_label(&self, label: &str, value: &str) -> usize {
        let has = |k: &SeriesKey| k.labels.iter().any(|(l, v)| l == label && v == value);
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| has(k))
            .count();
        let gauges = self
            .gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| has(k))
            .count();
        counters + gauges
    }

    /// Whether a series exists already.
    pub fn contains(&self, key: &SeriesKey) -> bool {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
            || self
                .gauges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(key)
    }

    /// Every counter, for display.
    pub fn counters(&self) -> Vec<(SeriesKey, u64)> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Every gauge, for display.
    pub fn gauges(&self) -> Vec<(SeriesKey, f64)> {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}
