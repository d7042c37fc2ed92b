//! Sluice: a micro-batch stream processor in the model of Spark Streaming, where every piece of
//! user logic is a sandboxed WebAssembly component.
//!
//! Data flows one way through the modules: sources → [`batch`] → operators calling [`udf`]s →
//! state → sinks → checkpoint. See `docs/architecture.md` for the map; the layers are in
//! `host/layers.toml`, and `cargo xtask layers` fails on a module using one of a higher layer.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod files;
pub mod metrics;
pub mod operators;
pub mod plan;
pub mod server;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod udf;
pub mod wal;
pub mod workloads;
