//! What a derived stream says, before it is checked: the part of a manifest's `[[streams]]`
//! table (or of a `DStream` call) every operator shares. Each operator's planning reads the
//! fields that apply to it; the planner reports the others.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::batch::codec::Codec;

/// How a static data set for `join_static` is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StaticFormat {
    /// `KEY<TAB>VALUE` per line (default).
    #[default]
    Kv,
    /// `{"key": …, "value": …}` per line; strings are taken as text, anything else as JSON.
    Jsonl,
}

/// Reducers that run natively in the host, so the common aggregations need no guest call.
/// Values are read as decimal numbers (the `number` codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// How many values (whatever they are).
    Count,
    /// The sum of 64-bit integers (wrapping, like Spark's `Long`).
    SumI64,
    /// The sum of 64-bit floats.
    SumF64,
    /// `[count, sum]` of 64-bit integers, as JSON.
    CountAndSum,
}

impl Builtin {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::Count => "count",
            Builtin::SumI64 => "sum_i64",
            Builtin::SumF64 => "sum_f64",
            Builtin::CountAndSum => "count_and_sum",
        }
    }
}

/// When an event-time window's results are written (Structured Streaming's output modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// Each window once, when the watermark passes its end; then it is forgotten (default).
    #[default]
    Append,
    /// Every window that changed in the batch, every batch.
    Update,
    /// Every window, every batch; nothing is forgotten and nothing is late.
    Complete,
}

/// What a failed UDF call of one stream does (`on_error` of a `[[streams]]` table); a stream
/// that does not say follows the job's `on_udf_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The batch fails, and the job with it.
    Fail,
    /// The batch's outputs are skipped (logged and counted) and the job goes on.
    SkipBatch,
    /// The failing call is run again up to this many times (each retry logged), then the
    /// batch fails.
    Retry(u32),
    /// The records whose call fails are isolated and kept in the job's dead-letter store; the
    /// rest of the batch proceeds (per-record operators only: map, flat_map, filter).
    DeadLetter,
}

/// What `on_error` accepts, for messages.
pub const ON_ERROR_VALUES: &str =
    "\"fail\", \"skip_batch\", \"retry(N)\" (N from 1 to 100) or \"dead_letter\"";

/// The most retries `retry(N)` may ask for.
pub const MAX_RETRIES: u32 = 100;

impl OnError {
    /// Parse `fail`, `skip_batch`, `retry(N)` or `dead_letter`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("on_error = {text:?} is not a policy; write {ON_ERROR_VALUES}");
        match text {
            "fail" => Ok(OnError::Fail),
            "skip_batch" => Ok(OnError::SkipBatch),
            "dead_letter" => Ok(OnError::DeadLetter),
            _ => {
                let n = text
                    .strip_prefix("retry(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                match n.trim().parse::<u32>() {
                    Ok(n) if (1..=MAX_RETRIES).contains(&n) => Ok(OnError::Retry(n)),
                    _ => Err(bad()),
                }
            }
        }
    }

    /// As a manifest writes it.
    pub fn as_text(self) -> String {
        match self {
            OnError::Fail => "fail".into(),
            OnError::SkipBatch => "skip_batch".into(),
            OnError::Retry(n) => format!("retry({n})"),
            OnError::DeadLetter => "dead_letter".into(),
        }
    }
}

impl Serialize for OnError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_text())
    }
}

impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        OnError::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One derived stream: an operator over upstream streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: String,
    /// The operator's name (`map`, `reduce_by_key`, …): one of [`KINDS`](super::KINDS).
    pub op: String,
    /// Upstream streams or sources: one, or two for joins and cogroup, two or more for union.
    pub inputs: Vec<String>,
    /// `component#function` for operators that call a UDF.
    pub udf: Option<String>,
    /// `repartition`: the new partition count.
    pub partitions: Option<usize>,
    /// `join_static`: the data file, relative to the manifest.
    pub path: Option<PathBuf>,
    /// `join_static`: the file's layout.
    pub format: Option<StaticFormat>,
    /// `join_static`: `inner` (default) or `left_outer`.
    pub how: Option<String>,
    /// The codec of the output keys; defaults by operator.
    pub key_codec: Option<Codec>,
    /// The codec of the output values; defaults by operator.
    pub value_codec: Option<Codec>,
    /// `join_static`: the codec of the static values. Default text.
    pub static_codec: Option<Codec>,
    /// Reducing operators: a reducer that runs in the host instead of a UDF.
    pub builtin: Option<Builtin>,
    /// Windows: the window length (a multiple of the batch interval, or of the input's slide).
    pub window: Option<Duration>,
    /// Windows: how often a window ends. Default: the window length (tumbling) for event time,
    /// the batch interval for batch-time windows.
    pub slide: Option<Duration>,
    /// `reduce_by_key_and_window`: update the window incrementally with the reducer's inverse.
    pub inverse: Option<bool>,
    /// `reduce_by_key_and_window` with `inverse`: a filter UDF over `(key, value)`; the keys it
    /// drops are left out of the output (Spark's `filterFunc`).
    pub filter: Option<String>,
    /// `map_with_state`: a key idle this long gets one last call marked as timing out, then
    /// is removed (Spark's `StateSpec.timeout`).
    pub timeout: Option<Duration>,
    /// `update_state_by_key` / `map_with_state`: a file of initial states (`format` applies).
    pub initial_state: Option<PathBuf>,
    /// `event_time_window`: how far behind the largest event time seen the watermark trails.
    pub watermark: Option<Duration>,
    /// `event_time_window`: when windows are written.
    pub output_mode: Option<OutputMode>,
    /// `event_time_window`: records whose event time is further than this ahead of the
    /// largest event time seen (or, before any, of the batch time) are dropped and counted,
    /// and never move the watermark. Default one day.
    pub max_event_time_ahead: Option<Duration>,
    /// What a failed UDF call of this stream does; `None`: the job's `on_udf_error`.
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// The manifest line it was declared on.
    pub line: Option<usize>,
}

impl StreamSpec {
    /// A stream with only name, operator and inputs set.
    pub fn new(name: impl Into<String>, op: &str, inputs: Vec<String>) -> Self {
        Self {
            name: name.into(),
            op: op.to_string(),
            inputs,
            udf: None,
            partitions: None,
            path: None,
            format: None,
            how: None,
            key_codec: None,
            value_codec: None,
            static_codec: None,
            builtin: None,
            window: None,
            slide: None,
            inverse: None,
            filter: None,
            timeout: None,
            initial_state: None,
            watermark: None,
            output_mode: None,
            max_event_time_ahead: None,
            on_error: None,
            line: None,
        }
    }
}
