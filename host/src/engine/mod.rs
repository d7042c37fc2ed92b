//! The micro-batch engine: a scheduler that seals what the sources received into a batch every
//! interval, an executor that runs each batch through the plan's operators (partitions in
//! parallel, keyed operators shuffled by key hash in-process), and the Rust API that builds
//! jobs.

pub mod canary;
pub mod context;
pub mod core;
pub mod executor;
pub mod job;
pub mod recovery;
pub mod replay;
pub mod stats;
pub mod trial;

pub use canary::{Canary, CanaryDiff, CanaryReport};
pub use context::{By, ContextError, DStream, EventTimeSpec, StateSpec, StreamingContext};
pub use core::{Core, CoreConfig, CoreError};
pub use job::{Job, JobError, JobHandle, JobOptions, SourceLag, Versions};
pub use stats::{BatchReport, JobSummary, OperatorStats, UsedUdf, percentile};
pub use trial::Rollback;
