//! A new version on trial: after a job's UDF is bound to new code (hot reload), its first
//! `probation_batches` batches are watched. If the new code fails one of them (a trap, a
//! deadline, a guest error), the executor goes back to the version it replaced, runs the batch
//! again with it, and never binds the failing code again in this job, even for batches sealed
//! before the rollback.

use serde::Serialize;

use super::executor::BatchError;
use crate::operators::OpError;
use crate::plan::Plan;
use crate::sinks::SinkError;
use std::sync::Arc;

use crate::udf::{Binding, Bindings, CallError, SlotId, UdfComponent};

/// A version rolled back after it failed on trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollback {
    /// The component.
    pub component: String,
    /// The version that failed.
    pub from_version: Option<u64>,
    /// Its hash.
    pub from_hash: String,
    /// The version the job went back to.
    pub to_version: Option<u64>,
    /// Its hash.
    pub to_hash: String,
    /// How the new version failed.
    pub error: String,
}

/// The versions on trial in one job, and those it rolled back.
#[derive(Debug, Default)]
pub struct Trials {
    on_trial: Vec<OnTrial>,
    refused: Vec<Refused>,
}

#[derive(Debug)]
struct OnTrial {
    component: String,
    hash: String,
    version: Option<u64>,
    /// The binding each slot had before.
    previous: Vec<(SlotId, Binding)>,
    /// Batches still to pass.
    left: u32,
}

#[derive(Debug)]
struct Refused {
    hash: String,
    previous: Vec<(SlotId, Binding)>,
}

impl Trials {
    /// Whether a version is on trial.
    pub fn any(&self) -> bool {
        !self.on_trial.is_empty()
    }

    /// Slot `id` went from `old` to `new` code: `new` is on trial for `batches` batches (none
    /// when 0).
    pub fn start(&mut self, id: SlotId, old: &Binding, new: &Binding, batches: u32) {
        if batches == 0 {
            return;
        }
        let component = new.component().name().to_string();
        // An older trial of the same component ends: the code it tried is gone.
        self.on_trial
            .retain(|t| t.component != component || t.hash == new.hash());
        match self
            .on_trial
            .iter_mut()
            .find(|t| t.component == component && t.hash == new.hash())
        {
            Some(t) => t.previous.push((id, old.clone())),
            None => self.on_trial.push(OnTrial {
                component,
                hash: new.hash().to_string(),
                version: new.version,
                previous: vec![(id, old.clone())],
                left: batches,
            }),
        }
    }

    /// `bindings` with every slot bound to code this job rolled back put back to what it had.
    pub fn keep_out_refused(&self, mut bindings: Bindings) -> Bindings {
        for refused in &self.refused {
            for (id, old) in &refused.previous {
                if bindings.get(*id).is_some_and(|b| b.hash() == refused.hash) {
                    bindings = bindings.replace(*id, old.clone());
                }
            }
        }
        bindings
    }

    /// The batch run with `bindings` failed with `error`: when a version on trial failed, it
    /// is refused from now on; returns the rollback and the code to go back to.
    pub fn failed(
        &mut self,
        error: &BatchError,
        bindings: &Bindings,
    ) -> Option<(Rollback, Arc<UdfComponent>)> {
        let call = failed_call(error)?;
        let at = self.on_trial.iter().position(|t| {
            t.component == call.component
                && bindings
                    .iter()
                    .any(|(_, b)| b.component().name() == t.component && b.hash() == t.hash)
        })?;
        let trial = self.on_trial.remove(at);
        let old = trial.previous.first()?.1.clone();
        let rollback = Rollback {
            component: trial.component,
            from_version: trial.version,
            from_hash: trial.hash.clone(),
            to_version: old.version,
            to_hash: old.hash().to_string(),
            error: call.to_string(),
        };
        self.refused.push(Refused {
            hash: trial.hash,
            previous: trial.previous,
        });
        Some((rollback, old.component().clone()))
    }

    /// A batch run with `bindings` succeeded: every version on trial in it has one batch less
    /// to pass.
    pub fn passed(&mut self, bindings: &Bindings, plan: &Plan) {
        for t in &mut self.on_trial {
            if bindings
                .iter()
                .any(|(_, b)| b.component().name() == t.component && b.hash() == t.hash)
            {
                t.left = t.left.saturating_sub(1);
                if t.left == 0 {
                    tracing::info!(tenant = %plan.tenant, job = %plan.name, udf = %t.component, "{} passed its first {} batches", version_name(&t.component, t.version), plan.probation_batches);
                }
            }
        }
        self.on_trial.retain(|t| t.left > 0);
    }
}

/// The UDF call a batch failed on, if it failed on one.
fn failed_call(error: &BatchError) -> Option<&CallError> {
    match error {
        BatchError::Operator {
            error: OpError::Udf(call),
            ..
        }
        | BatchError::Sink {
            error: SinkError::Udf(call),
            ..
        } => Some(call),
        BatchError::Operator { .. }
        | BatchError::Sink { .. }
        | BatchError::State(_)
        | BatchError::DeadLetters(_) => None,
    }
}

/// `text v3`, or `text` for a component from a folder.
pub fn version_name(component: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("{component} v{v}"),
        None => component.to_string(),
    }
}
