//! Flow control for every source: how many records the next batch may take from a source.
//!
//! A source's budget per batch is its rate (records per second) times the batch interval,
//! at least one record. The rate is the smaller of the source's `max_rate` and, with the
//! job's `backpressure = true`, the estimate of a [`PidRateEstimator`] (Spark's
//! `spark.streaming.backpressure`), which starts from the source's `initial_rate` (unbounded
//! without one) and is fed each finished batch. [`RateLimiter`] holds both; it knows nothing
//! of the kind of source, so any source (a receiver's buffer, a directory, a future Kafka
//! direct source reading offsets) takes its budget the same way.

use std::time::Duration;

/// Spark's default proportional gain (`spark.streaming.backpressure.pid.proportional`).
pub const DEFAULT_PROPORTIONAL: f64 = 1.0;
/// Spark's default integral gain (`spark.streaming.backpressure.pid.integral`).
pub const DEFAULT_INTEGRAL: f64 = 0.2;
/// Spark's default derivative gain (`spark.streaming.backpressure.pid.derived`).
pub const DEFAULT_DERIVATIVE: f64 = 0.0;
/// Spark's default lowest estimate, records per second (`…pid.minRate`).
pub const DEFAULT_MIN_RATE: f64 = 100.0;

/// Why a [`PidRateEstimator`] could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    /// A gain, the interval or the minimum rate is out of range.
    #[error(
        "rate estimator: {what} is {value}, it must be {must}: use Spark's defaults (proportional 1.0, integral 0.2, derivative 0, min rate 100) unless you have measured better"
    )]
    OutOfRange {
        /// The setting.
        what: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        must: &'static str,
    },
}

/// Spark's `PIDRateEstimator`: from each finished batch's records, processing time and
/// scheduling delay, the rate (records per second) the next batches should take in.
///
/// `error = latest − processing rate`; `historical = scheduling delay × processing rate /
/// interval`; `new = max(latest − P·error − I·historical − D·d(error)/dt, min rate)`. The
/// first batch only measures (the latest rate becomes its processing rate, no estimate);
/// batches with no records, no processing time, or a time not after the previous one give no
/// estimate, as in Spark.
#[derive(Debug, Clone)]
pub struct PidRateEstimator {
    interval_ms: f64,
    proportional: f64,
    integral: f64,
    derivative: f64,
    min_rate: f64,
    first_run: bool,
    latest_time: i64,
    latest_rate: f64,
    latest_error: f64,
}

impl PidRateEstimator {
    /// An estimator for batches `interval` apart with Spark's defaults.
    pub fn new(interval: Duration) -> Self {
        // Spark's defaults are in range, and the interval is at least 1 ms.
        Self::unchecked(
            (interval.as_secs_f64() * 1000.0).max(1.0),
            DEFAULT_PROPORTIONAL,
            DEFAULT_INTEGRAL,
            DEFAULT_DERIVATIVE,
            DEFAULT_MIN_RATE,
        )
    }

    fn unchecked(
        interval_ms: f64,
        proportional: f64,
        integral: f64,
        derivative: f64,
        min_rate: f64,
    ) -> Self {
        Self {
            interval_ms,
            proportional,
            integral,
            derivative,
            min_rate,
            first_run: true,
            latest_time: -1,
            latest_rate: -1.0,
            latest_error: -1.0,
        }
    }

    /// An estimator with its gains given (all ≥ 0), a positive batch interval in
    /// milliseconds and a positive lowest rate.
    pub fn with_gains(
        interval_ms: f64,
        proportional: f64,
        integral: f64,
        derivative: f64,
        min_rate: f64,
    ) -> Result<Self, RateError> {
        let check = |what, value: f64, positive: bool| {
            let ok = if positive { value > 0.0 } else { value >= 0.0 };
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(RateError::OutOfRange {
                    what,
                    value,
                    must: if positive { "> 0" } else { ">= 0" },
                })
            }
        };
        check("the batch interval (ms)", interval_ms, true)?;
        check("the proportional gain", proportional, false)?;
        check("the integral gain", integral, false)?;
        check("the derivative gain", derivative, false)?;
        check("the minimum rate", min_rate, true)?;
        Ok(Self::unchecked(
            interval_ms,
            proportional,
            integral,
            derivative,
            min_rate,
        ))
    }

    /// Feed a finished batch: `time` (ms, increasing from batch to batch), the records it
    /// took, its processing time and scheduling delay (ms). The new rate, or `None` when this
    /// batch gives no estimate.
    pub fn compute(
        &mut self,
        time: i64,
        records: u64,
        processing_ms: f64,
        scheduling_delay_ms: f64,
    ) -> Option<f64> {
        if !(time > self.latest_time && records > 0 && processing_ms > 0.0) {
            return None;
        }
        let since_update = (time - self.latest_time) as f64 / 1000.0;
        let processing_rate = records as f64 / processing_ms * 1000.0;
        let error = self.latest_rate - processing_rate;
        let historical = scheduling_delay_ms * processing_rate / self.interval_ms;
        let d_error = (error - self.latest_error) / since_update;
        let new_rate = (self.latest_rate
            - self.proportional * error
            - self.integral * historical
            - self.derivative * d_error)
            .max(self.min_rate);
        self.latest_time = time;
        if self.first_run {
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            self.first_run = false;
            None
        } else {
            self.latest_rate = new_rate;
            self.latest_error = error;
            Some(new_rate)
        }
    }
}

/// One source's rate: its `max_rate`, and with backpressure the estimator's latest rate
/// (its `initial_rate` until the first estimate). Gives the records budget of each batch.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    max_rate: Option<f64>,
    estimated: Option<f64>,
    estimator: Option<PidRateEstimator>,
}

impl RateLimiter {
    /// A source's limiter: `max_rate` records per second at most (none: unbounded); with
    /// `backpressure`, an estimator for batches `interval` apart that starts at
    /// `initial_rate` (none: unbounded until the first estimate).
    pub fn new(
        max_rate: Option<u64>,
        backpressure: bool,
        initial_rate: Option<u64>,
        interval: Duration,
    ) -> Self {
        Self {
            max_rate: max_rate.map(|r| r as f64),
            estimated: initial_rate.filter(|_| backpressure).map(|r| r as f64),
            estimator: backpressure.then(|| PidRateEstimator::new(interval)),
        }
    }

    /// The rate the source takes records in now, records per second; `None`: unbounded.
    pub fn rate(&self) -> Option<f64> {
        match (self.max_rate, self.estimated) {
            (Some(max), Some(est)) => Some(max.min(est)),
            (max, est) => max.or(est),
        }
    }

    /// The most records the next batch may take: rate × `interval`, at least one (as Spark's
    /// direct Kafka stream: `max(1, rate × seconds per batch)`); `None`: no limit.
    pub fn budget(&self, interval: Duration) -> Option<usize> {
        self.rate()
            .map(|rate| ((rate * interval.as_secs_f64()) as usize).max(1))
    }

    /// Feed a finished batch (see [`PidRateEstimator::compute`]): the records it took from
    /// this source. The new rate when the estimate changed it, else `None`. Without
    /// backpressure nothing changes.
    pub fn update(
        &mut self,
        time: i64,
        records: u64,
        processing: Duration,
        scheduling_delay: Duration,
    ) -> Option<f64> {
        let before = self.rate();
        let estimate = self.estimator.as_mut()?.compute(
            time,
            records,
            processing.as_secs_f64() * 1000.0,
            scheduling_delay.as_secs_f64() * 1000.0,
        )?;
        self.estimated = Some(estimate);
        let after = self.rate();
        if after == before { None } else { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spark's `createDefaultEstimator`: 20 ms batches, P 1, I 0, D 0, min 10.
    fn spark_default() -> PidRateEstimator {
        PidRateEstimator::with_gains(20.0, 1.0, 0.0, 0.0, 10.0).unwrap()
    }

    #[test]
    fn ranges_are_checked() {
        assert!(PidRateEstimator::with_gains(0.0, 1.0, 2.0, 3.0, 10.0).is_err());
        assert!(PidRateEstimator::with_gains(100.0, -1.0, 2.0, 3.0, 10.0).is_err());
        assert!(PidRateEstimator::with_gains(100.0, 0.0, -1.0, 3.0, 10.0).is_err());
        assert!(PidRateEstimator::with_gains(100.0, 0.0, 0.0, -1.0, 10.0).is_err());
        assert!(PidRateEstimator::with_gains(100.0, 0.0, 0.0, 0.0, 0.0).is_err());
        let err = PidRateEstimator::with_gains(100.0, 0.0, 0.0, 0.0, -10.0).unwrap_err();
        assert!(matches!(
            err,
            RateError::OutOfRange {
                what: "the minimum rate",
                ..
            }
        ));
    }

    #[test]
    fn first_estimate_is_none_the_second_follows_processing() {
        let mut p = spark_default();
        assert_eq!(p.compute(0, 10, 10.0, 0.0), None);
        // 10 records in 10 ms: 1000 records/s.
        assert_eq!(p.compute(10, 10, 10.0, 0.0), Some(1000.0));
        // No time difference: no estimate.
        assert_eq!(p.compute(10, 10, 10.0, 0.0), None);
    }

    #[test]
    fn no_estimate_without_records_or_processing_time() {
        let mut p = spark_default();
        p.compute(0, 10, 10.0, 0.0);
        assert_eq!(p.compute(10, 0, 10.0, 0.0), None);
        assert_eq!(p.compute(20, 10, 0.0, 0.0), None);
        assert_eq!(p.compute(30, 10, -10.0, 0.0), None);
    }

    #[test]
    fn never_below_the_min_rate() {
        // Spark's case: 20 ms batches, P 1, I 1, one record per 20 ms, 100 ms of delay.
        let mut p = PidRateEstimator::with_gains(20.0, 1.0, 1.0, 0.0, 5.0).unwrap();
        let out: Vec<_> = (0..50).map(|i| p.compute(i * 20, 1, 20.0, 100.0)).collect();
        assert_eq!(out[0], None);
        assert!(out[1..].iter().all(|r| *r == Some(5.0)), "{out:?}");
    }

    #[test]
    fn without_delay_the_rate_follows_processing_speed() {
        // Spark's cases: increasing, then decreasing, records in 20 ms each, no delay.
        let mut up = PidRateEstimator::with_gains(20.0, 1.0, 1.0, 0.0, 10.0).unwrap();
        let mut down = PidRateEstimator::with_gains(20.0, 1.0, 1.0, 0.0, 10.0).unwrap();
        for i in 0..50u64 {
            let rising = up.compute(i as i64 * 20, (i + 1) * 20, 20.0, 0.0);
            let falling = down.compute(i as i64 * 20, (50 - i) * 20, 20.0, 0.0);
            if i == 0 {
                assert_eq!((rising, falling), (None, None));
            } else {
                assert_eq!(rising, Some((i + 1) as f64 * 1000.0));
                assert_eq!(falling, Some((50 - i) as f64 * 1000.0));
            }
        }
    }

    #[test]
    fn spark_defaults_by_hand() {
        // 1 s batches, P 1.0, I 0.2, D 0, min 100.
        let mut p = PidRateEstimator::new(Duration::from_secs(1));
        // 2000 records in 1000 ms: latest = 2000/s, no estimate.
        assert_eq!(p.compute(1000, 2000, 1000.0, 0.0), None);
        // 2000 records in 2000 ms with 500 ms delay: processing 1000/s, error 1000,
        // historical 500 × 1000 / 1000 = 500: 2000 − 1000 − 0.2 × 500 = 900.
        assert_eq!(p.compute(2000, 2000, 2000.0, 500.0), Some(900.0));
        // 900 records in 600 ms, no delay: processing 1500/s, error −600: 900 + 600 = 1500.
        assert_eq!(p.compute(3000, 900, 600.0, 0.0), Some(1500.0));
        // A crawl with a long delay: floored at 100.
        assert_eq!(p.compute(4000, 10, 1000.0, 60_000.0), Some(100.0));
    }

    #[test]
    fn the_limiter_takes_the_smaller_rate_and_budgets_per_batch() {
        let second = Duration::from_secs(1);
        let half = Duration::from_millis(500);
        let fixed = RateLimiter::new(Some(300), false, None, second);
        assert_eq!(fixed.rate(), Some(300.0));
        assert_eq!(fixed.budget(half), Some(150));
        assert_eq!(
            RateLimiter::new(None, false, Some(50), second).rate(),
            None,
            "initial_rate needs backpressure"
        );
        let open = RateLimiter::new(None, false, None, second);
        assert_eq!(open.budget(second), None);
        assert_eq!(
            RateLimiter::new(Some(1), false, None, Duration::from_millis(10)).budget(half),
            Some(1),
            "at least one record"
        );

        let mut pid = RateLimiter::new(Some(5000), true, Some(1000), second);
        assert_eq!(pid.rate(), Some(1000.0), "initial rate");
        // The first batch only measures.
        assert_eq!(pid.update(1000, 1000, second, Duration::ZERO), None);
        assert_eq!(pid.rate(), Some(1000.0));
        // 1000 records in 2 s, 1 s late: 1000 − 500 − 0.2 × 500 = 400.
        assert_eq!(
            pid.update(2000, 1000, 2 * second, second),
            Some(400.0),
            "slower than the interval: the rate falls"
        );
        assert_eq!(pid.budget(half), Some(200));
        // 400 records in 100 ms: processing 4000/s; 400 + 3600 = 4000.
        assert_eq!(
            pid.update(3000, 400, Duration::from_millis(100), Duration::ZERO),
            Some(4000.0)
        );
        // Faster again: the estimate passes max_rate, which bounds it.
        assert_eq!(
            pid.update(4000, 4000, Duration::from_millis(100), Duration::ZERO),
            Some(5000.0)
        );
        assert_eq!(pid.rate(), Some(5000.0));
        assert_eq!(
            pid.update(5000, 5000, Duration::from_millis(100), Duration::ZERO),
            None,
            "still max_rate: no change"
        );
    }
}
