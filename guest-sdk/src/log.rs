//! Logging and metrics through the host's imports, and a panic hook that reports the panic
//! message before the guest traps.

use crate::bindings::transform::sluice::udf::{logging, metrics};

pub use logging::Level;

/// Write one log line with `(name, value)` fields. The host labels it with tenant, job, batch,
/// component and function.
pub fn log_fields(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    logging::log(level, message, &fields);
}

/// Write one log line.
pub fn log_message(level: Level, message: &str) {
    logging::log(level, message, &[]);
}

/// Add `delta` to the counter `name` (the host labels it with the component and function).
pub fn counter(name: &str, delta: u64) {
    metrics::counter_add(name, delta);
}

/// Set the gauge `name` to `value`.
pub fn gauge(name: &str, value: f64) {
    metrics::gauge_set(name, value);
}

/// `log!(info, "read {} lines", n)`: format and write one log line at `trace`, `debug`, `info`,
/// `warn` or `error`.
#[macro_export]
macro_rules! log {
    (trace, $($arg:tt)+) => { $crate::log::log_message($crate::log::Level::Trace, &format!($($arg)+)) };
    (debug, $($arg:tt)+) => { $crate::log::log_message($crate::log::Level::Debug, &format!($($arg)+)) };
    (info, $($arg:tt)+) => { $crate::log::log_message($crate::log::Level::Info, &format!($($arg)+)) };
    (warn, $($arg:tt)+) => { $crate::log::log_message($crate::log::Level::Warn, &format!($($arg)+)) };
    (error, $($arg:tt)+) => { $crate::log::log_message($crate::log::Level::Error, &format!($($arg)+)) };
}

/// Send the message of a panic to the host before the guest traps, so the host's error says
/// why. Installed by the export macros on the first call.
#[doc(hidden)]
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log_fields(Level::Error, &info.to_string(), &[("panic", "true")]);
        }));
    });
}
