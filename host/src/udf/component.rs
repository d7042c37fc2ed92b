//! A loaded component: its role and functions, a pool of ready instances, and the typed calls
//! the engine makes, each bounded by the instance's limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap};

use super::bindings::reducer::{Reducer, ReducerPre};
use super::bindings::sink::{Sink, SinkPre};
use super::bindings::transform::sluice::udf::types::{FunctionInfo, UdfError as GuestError};
use super::bindings::transform::{Transform, TransformPre};
use super::bindings::updater::exports::sluice::udf::updaters::{UpdateInput, UpdateOutput};
use super::bindings::updater::{Updater, UpdaterPre};
use super::chunks::{self, CallBounds};
use super::config::{RuntimeConfig, UdfLimits};
use super::error::{CallError, CallErrorKind, FunctionsProblem, LoadError, ResolveError};
use super::guest_text;
use super::host_state::{
    CallContext, HostState, ImportBudget, Limiter, MemoryLimitExceeded, Overflow,
    TableLimitExceeded,
};
use super::runtime::{ABI_VERSION, EPOCH_TICK, wit_version};
use crate::batch::{Batch, Column};
use crate::metrics::{Registry, SeriesKey};

/// The role a component was built for: one world of `wit/udf.wit` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// map, flat_map, filter, map_partitions, transform.
    Transform,
    /// reduce, reduce_by_key and the windowed reducers.
    Reducer,
    /// update_state_by_key, map_with_state.
    Updater,
    /// foreach-batch sinks.
    Sink,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Transform, Role::Reducer, Role::Updater, Role::Sink];

    /// The interface a component of this role exports.
    pub fn export_name(self) -> &'static str {
        match self {
            Role::Transform => concat!("sluice:udf/transforms@", wit_version!()),
            Role::Reducer => concat!("sluice:udf/reducers@", wit_version!()),
            Role::Updater => concat!("sluice:udf/updaters@", wit_version!()),
            Role::Sink => concat!("sluice:udf/sinks@", wit_version!()),
        }
    }

    /// The role's name, as the worlds are named.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Transform => "transform",
            Role::Reducer => "reducer",
            Role::Updater => "updater",
            Role::Sink => "sink",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pre-instantiated bindings, one kind per world.
enum RolePre {
    Transform(TransformPre<HostState>),
    Reducer(ReducerPre<HostState>),
    Updater(UpdaterPre<HostState>),
    Sink(SinkPre<HostState>),
}

/// An instance's exports, one kind per world.
enum Bound {
    Transform(Transform),
    Reducer(Reducer),
    Updater(Updater),
    Sink(Sink),
}

/// Run the same expression on whichever world's bindings `$bound` holds.
macro_rules! on_world {
    ($bound:expr, $b:ident => $body:expr) => {
        match $bound {
            Bound::Transform($b) => $body,
            Bound::Reducer($b) => $body,
            Bound::Updater($b) => $body,
            Bound::Sink($b) => $body,
        }
    };
}

/// Counters of one function, updated with atomics on every call (no locks, no allocation on
/// the hot path).
#[derive(Debug, Default)]
struct FunctionCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    records_in: AtomicU64,
    records_out: AtomicU64,
    busy_nanos: AtomicU64,
}

/// What a function has done since its component was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Records (or groups) handed in.
    pub records_in: u64,
    /// Records (or items) returned by successful calls.
    pub records_out: u64,
    /// Time spent in calls, in nanoseconds.
    pub busy_nanos: u64,
}

/// One live guest instance with its own store (memory, limiter, labels).
struct Instance {
    store: Store<HostState>,
    bound: Bound,
}

/// A component, checked and ready to call. Cheap to share: instances come from its pool.
pub struct UdfComponent {
    name: Arc<str>,
    hash: String,
    role: Role,
    abi_version: u32,
    functions: Vec<FunctionInfo>,
    counters: Vec<FunctionCounters>,
    pre: RolePre,
    engine: Engine,
    limits: UdfLimits,
    /// Whether the engine compiles epoch checks, i.e. `limits.call_timeout` is enforced.
    interruptible: bool,
    idle: Mutex<Vec<Instance>>,
    max_idle: usize,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for UdfComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdfComponent")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl UdfComponent {
    pub(crate) fn new(
        name: &str,
        hash: String,
        role: Role,
        pre: InstancePre<HostState>,
        engine: &Engine,
        config: &RuntimeConfig,
        registry: Arc<Registry>,
    ) -> Result<Arc<Self>, LoadError> {
        let describe_error = |e: wasmtime::Error| LoadError::Describe {
            name: name.to_string(),
            reason: guest_text::sanitize(
                &format!("{e:#}"),
                config.limits.max_error_message.as_usize(),
            ),
        };
        let pre = match role {
            Role::Transform => RolePre::Transform(TransformPre::new(pre).map_err(describe_error)?),
            Role::Reducer => RolePre::Reducer(ReducerPre::new(pre).map_err(describe_error)?),
            Role::Updater => RolePre::Updater(UpdaterPre::new(pre).map_err(describe_error)?),
            Role::Sink => RolePre::Sink(SinkPre::new(pre).map_err(describe_error)?),
        };
        let mut component = Self {
            name: Arc::from(name),
            hash,
            role,
            abi_version: 0,
            functions: Vec::new(),
            counters: Vec::new(),
            pre,
            engine: engine.clone(),
            limits: config.limits.clone(),
            interruptible: config.interruptible,
            idle: Mutex::new(Vec::new()),
            max_idle: config.idle_instances_per_component,
            registry,
        };
        let describe = |component: &Self| -> Result<(u32, Vec<FunctionInfo>), LoadError> {
            let failed = |export: &'static str, kind: CallErrorKind| LoadError::DescribeFailed {
                name: name.to_string(),
                export,
                kind,
            };
            let mut instance = component
                .instantiate()
                .map_err(|e| failed("instance", component.instantiate_error(e)))?;
            instance
                .store
                .data_mut()
                .begin_call(&Arc::from("functions"), &CallContext::adhoc());
            component.arm_deadline(&mut instance.store);
            let abi = on_world!(&instance.bound, b => b.call_abi_version(&mut instance.store))
                .map_err(|e| failed("abi-version", component.classify(e, &mut instance.store)))?;
            if abi != ABI_VERSION {
                return Ok((abi, Vec::new()));
            }
            let functions = on_world!(&instance.bound, b => b.call_functions(&mut instance.store))
                .map_err(|e| failed("functions", component.classify(e, &mut instance.store)))?;
            component.release(instance);
            Ok((abi, functions))
        };
        let (abi, functions) = describe(&component)?;
        if abi != ABI_VERSION {
            return Err(LoadError::AbiMismatch {
                name: name.to_string(),
                found: abi,
                expected: ABI_VERSION,
            });
        }
        check_functions(name, role, &functions, config.limits.max_functions as usize)?;
        component.abi_version = abi;
        component.counters = functions
            .iter()
            .map(|_| FunctionCounters::default())
            .collect();
        component.functions = functions;
        Ok(Arc::new(component))
    }

    /// The component's name (its file name without `.wasm`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SHA-256 of its bytes, hex: its identity in caches and checkpoints.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The world it was built for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The ABI version it was built against.
    pub fn abi_version(&self) -> u32 {
        self.abi_version
    }

    /// The functions it exports, in call-index order.
    pub fn functions(&self) -> &[FunctionInfo] {
        &self.functions
    }

    /// Resolve one of its functions by name.
    pub fn function(self: &Arc<Self>, name: &str) -> Result<UdfFunction, ResolveError> {
        let index = self
            .functions
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| ResolveError::UnknownFunction {
                component: self.name.to_string(),
                function: name.to_string(),
                available: self
                    .functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(UdfFunction {
            component: self.clone(),
            index: index as u32,
            name: Arc::from(name),
        })
    }

    /// Resolve a function that must have `role` (what an operator needs).
    pub fn function_for(
        self: &Arc<Self>,
        name: &str,
        role: Role,
    ) -> Result<UdfFunction, ResolveError> {
        let function = self.function(name)?;
        if self.role != role {
            return Err(ResolveError::WrongRole {
                component: self.name.to_string(),
                function: name.to_string(),
                found: self.role.as_str(),
                expected: role.as_str(),
            });
        }
        Ok(function)
    }

    fn instantiate(&self) -> wasmtime::Result<Instance> {
        let limiter = Limiter {
            memory: self.limits.memory.as_usize(),
            table_elements: self.limits.table_elements as usize,
        };
        let state = HostState::new(
            limiter,
            self.name.clone(),
            self.registry.clone(),
            ImportBudget::new(&self.limits),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // What the lift of one result (or of one import call's arguments) may copy into the
        // host: the hard output ceiling, so nothing a guest returns is larger.
        store.set_hostcall_fuel(self.limits.max_output_bytes.as_usize());
        store.epoch_deadline_trap();
        self.arm_deadline(&mut store);
        let bound = match &self.pre {
            RolePre::Transform(p) => Bound::Transform(p.instantiate(&mut store)?),
            RolePre::Reducer(p) => Bound::Reducer(p.instantiate(&mut store)?),
            RolePre::Updater(p) => Bound::Updater(p.instantiate(&mut store)?),
            RolePre::Sink(p) => Bound::Sink(p.instantiate(&mut store)?),
        };
        Ok(Instance { store, bound })
    }

    /// Give the next call `limits.call_timeout` of CPU time (nothing when not interruptible).
    fn arm_deadline(&self, store: &mut Store<HostState>) {
        if !self.interruptible {
            return;
        }
        let ticks = self
            .limits
            .call_timeout
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            .max(1) as u64
            + 1;
        store.set_epoch_deadline(ticks);
    }

    fn acquire(&self) -> wasmtime::Result<Instance> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(instance) => Ok(instance),
            None => self.instantiate(),
        }
    }

    fn release(&self, instance: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }

    /// Create one fresh instance and drop it: what a new worker or a hot reload costs (for
    /// benchmarks and deploy checks).
    pub fn instantiate_probe(&self) -> Result<(), CallErrorKind> {
        self.instantiate()
            .map(drop)
            .map_err(|e| self.instantiate_error(e))
    }

    /// Idle instances in the pool (for tests and the UI).
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Run one call on a pooled (or fresh) instance. An instance that trapped, or whose output
    /// failed `check`, is discarded; one that returned a guest error or good output goes back to
    /// the pool.
    fn call<R>(
        &self,
        function: &Arc<str>,
        context: &CallContext,
        records_in: usize,
        call: impl FnOnce(&mut Store<HostState>, &Bound) -> wasmtime::Result<Result<R, GuestError>>,
        check: impl FnOnce(&R) -> Result<(), CallErrorKind>,
    ) -> Result<R, CallErrorKind> {
        let mut instance = self.acquire().map_err(|e| self.instantiate_error(e))?;
        instance.store.data_mut().begin_call(function, context);
        self.arm_deadline(&mut instance.store);
        let result = call(&mut instance.store, &instance.bound);
        let overflow = std::mem::take(&mut instance.store.data_mut().overflow);
        if !overflow.is_empty() {
            self.report_overflow(function, context, &overflow);
        }
        match result {
            Ok(Ok(output)) => {
                check(&output)?;
                self.release(instance);
                Ok(output)
            }
            Ok(Err(guest)) => {
                self.release(instance);
                let message =
                    guest_text::sanitize(&guest.message, self.limits.max_error_message.as_usize());
                match guest.record_index {
                    Some(index) if index as usize >= records_in => {
                        Err(CallErrorKind::BadRecordIndex {
                            index,
                            records: records_in as u64,
                            message,
                        })
                    }
                    record_index => Err(CallErrorKind::Guest {
                        message,
                        record_index,
                    }),
                }
            }
            Err(trap) => Err(self.classify(trap, &mut instance.store)),
        }
    }

    /// One warning per call for everything a guest wrote past its budget, and the tenant's
    /// counters of it.
    fn report_overflow(&self, function: &Arc<str>, context: &CallContext, overflow: &Overflow) {
        let summary = overflow
            .items()
            .map(|(what, n)| format!("{what}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::warn!(
            tenant = %context.tenant, job = %context.job, batch = context.batch_id, udf = %format!("{}#{function}", self.name),
            "the UDF wrote past its per-call budget of logs and metrics (udf max_log_* / max_metric_* limits); the excess was dropped: {summary}"
        );
        for (what, n) in overflow.items() {
            self.registry.add(
                &SeriesKey::new(
                    "sluice_guest_budget_exceeded_total",
                    &[
                        ("tenant", &context.tenant),
                        ("job", &context.job),
                        // Not `component`: that label counts towards the guest's own series cap.
                        ("udf", &self.name),
                        ("what", what),
                    ],
                ),
                n,
            );
        }
    }

    /// Why a fresh instance could not be made: its initial memory over the limit, the engine's
    /// instance pool exhausted (`max_instances`), or anything else wasmtime reports.
    fn instantiate_error(&self, error: wasmtime::Error) -> CallErrorKind {
        match self.classify_error(error, None) {
            CallErrorKind::Malformed(message)
            | CallErrorKind::Unreadable {
                reason: message, ..
            }
            | CallErrorKind::Trap(message) => CallErrorKind::Instantiate(message),
            limit => limit,
        }
    }

    /// Why a call failed: the runtime's reason, with the guest's panic report of this call (its
    /// own words, cut and escaped) beside it when it wrote one.
    fn classify(&self, error: wasmtime::Error, store: &mut Store<HostState>) -> CallErrorKind {
        let report = store.data_mut().panic_report.take();
        self.classify_error(error, report)
    }

    fn classify_error(&self, error: wasmtime::Error, report: Option<String>) -> CallErrorKind {
        if let Some(e) = error.downcast_ref::<MemoryLimitExceeded>() {
            return CallErrorKind::MemoryLimit {
                requested: e.requested,
                limit: self.limits.memory,
            };
        }
        if let Some(e) = error.downcast_ref::<TableLimitExceeded>() {
            return CallErrorKind::TableLimit {
                requested: e.requested,
                limit: self.limits.table_elements,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallErrorKind::Timeout(self.limits.call_timeout),
            Some(Trap::StackOverflow) => CallErrorKind::StackOverflow(self.limits.stack),
            Some(trap) => match report {
                Some(report) => CallErrorKind::Panic {
                    trap: trap.to_string(),
                    report,
                },
                None => CallErrorKind::Trap(trap.to_string()),
            },
            // Not a trap: the canonical ABI could not lift what the guest returned (pointers out
            // of bounds, invalid UTF-8, more than the copy budget, …) or instantiation failed.
            // The text is wasmtime's, but it may quote what the guest returned: cut and escaped.
            None => CallErrorKind::Unreadable {
                reason: guest_text::sanitize(
                    &format!("{error:#}"),
                    self.limits.max_error_message.as_usize(),
                ),
                copy_limit: self.limits.max_output_bytes,
            },
        }
    }

    fn output_limit(&self, input_records: usize, input_bytes: usize) -> (u64, u64) {
        let ratio = u64::from(self.limits.max_output_ratio);
        (
            (input_records as u64)
                .saturating_mul(ratio)
                .max(self.limits.min_output_records),
            (input_bytes as u64)
                .saturating_mul(ratio)
                .max(self.limits.min_output_bytes.0)
                .min(self.limits.max_output_bytes.0),
        )
    }

    fn check_output(&self, input: (usize, usize), output: &Batch) -> Result<(), CallErrorKind> {
        output.validate().map_err(CallErrorKind::Malformed)?;
        let (max_records, max_bytes) = self.output_limit(input.0, input.1);
        let (records, bytes) = (output.len() as u64, output.byte_len() as u64);
        if records > max_records || bytes > max_bytes {
            return Err(CallErrorKind::OutputTooLarge {
                records,
                bytes,
                input_records: input.0 as u64,
                input_bytes: input.1 as u64,
                max_records,
                max_bytes,
            });
        }
        Ok(())
    }

    fn record_metrics(
        &self,
        index: u32,
        started: Instant,
        records_in: usize,
        outcome: Result<usize, ()>,
    ) {
        let Some(c) = self.counters.get(index as usize) else {
            return;
        };
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.records_in.fetch_add(records_in as u64, Ordering::Relaxed);
        c.busy_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match outcome {
            Ok(out) => c.records_out.fetch_add(out as u64, Ordering::Relaxed),
            Err(()) => c.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// One function of a component, resolved from `component#function`: what an operator holds.
#[derive(Clone)]
pub struct UdfFunction {
    component: Arc<UdfComponent>,
    index: u32,
    name: Arc<str>,
}

impl std::fmt::Debug for UdfFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UdfFunction({})", self.spec())
    }
}

impl UdfFunction {
    /// The component it belongs to.
    pub fn component(&self) -> &Arc<UdfComponent> {
        &self.component
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `component#function`.
    pub fn spec(&self) -> String {
        format!("{}#{}", self.component.name, self.name)
    }

    /// What the component says about the function.
    pub fn info(&self) -> &FunctionInfo {
        &self.component.functions[self.index as usize]
    }

    /// What this function has done since its component was loaded.
    pub fn stats(&self) -> FunctionStats {
        let Some(c) = self.component.counters.get(self.index as usize) else {
            return FunctionStats::default();
        };
        FunctionStats {
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            records_in: c.records_in.load(Ordering::Relaxed),
            records_out: c.records_out.load(Ordering::Relaxed),
            busy_nanos: c.busy_nanos.load(Ordering::Relaxed),
        }
    }

    fn fail(&self, context: &CallContext, kind: CallErrorKind) -> CallError {
        CallError {
            component: self.component.name.to_string(),
            function: self.name.to_string(),
            batch: context.batch_id,
            partition: context.partition,
            kind,
        }
    }

    fn finish<R>(
        &self,
        context: &CallContext,
        started: Instant,
        records_in: usize,
        result: Result<R, CallErrorKind>,
        records_out: impl Fn(&R) -> usize,
    ) -> Result<R, CallError> {
        let outcome = result.as_ref().map(&records_out).map_err(|_| ());
        self.component
            .record_metrics(self.index, started, records_in, outcome);
        result.map_err(|kind| self.fail(context, kind))
    }

    fn wrong_role(&self, needed: Role) -> CallErrorKind {
        CallErrorKind::Malformed(format!(
            "a {} component was called as a {needed}",
            self.component.role
        ))
    }

    /// One call of a function of `role`: check the role, call on a pooled instance, check the
    /// output, count the call.
    fn run<R>(
        &self,
        context: &CallContext,
        role: Role,
        records_in: usize,
        call: impl FnOnce(&mut Store<HostState>, &Bound) -> wasmtime::Result<Result<R, GuestError>>,
        check: impl FnOnce(&R) -> Result<(), CallErrorKind>,
        records_out: impl Fn(&R) -> usize,
    ) -> Result<R, CallError> {
        let started = Instant::now();
        let result = if self.component.role == role {
            self.component
                .call(&self.name, context, records_in, call, check)
        } else {
            Err(self.wrong_role(role))
        };
        self.finish(context, started, records_in, result, records_out)
    }

    /// How much one call may be given (`max_call_records`, `max_call_bytes`).
    fn call_bounds(&self) -> CallBounds {
        CallBounds::of(&self.component.limits)
    }

    /// A transform function over one partition: one call, or one per piece when the partition
    /// is over the call bounds (`udf::chunks`), the outputs joined in order.
    pub fn transform(&self, context: &CallContext, input: &Batch) -> Result<Batch, CallError> {
        let fail = |kind| self.fail(context, kind);
        chunks::transform(self.call_bounds(), input, &fail, |piece| {
            self.transform_one(context, piece)
        })
    }

    fn transform_one(&self, context: &CallContext, input: &Batch) -> Result<Batch, CallError> {
        self.run(
            context,
            Role::Transform,
            input.len(),
            |store, bound| match bound {
                Bound::Transform(b) => b
                    .sluice_udf_transforms()
                    .call_transform(store, self.index, input),
                _ => Err(role_mismatch()),
            },
            |out| {
                self.component
                    .check_output((input.len(), input.byte_len()), out)
            },
            Batch::len,
        )
    }

    /// A reducer over groups of values: one value out per group. Over the call bounds, cut at
    /// group boundaries; a group over them alone is reduced in pieces whose results are reduced
    /// again (`udf::chunks`).
    pub fn reduce(
        &self,
        context: &CallContext,
        values: &Column,
        group_ends: &[u32],
    ) -> Result<Column, CallError> {
        let fail = |kind| self.fail(context, kind);
        chunks::reduce(self.call_bounds(), values, group_ends, &fail, |v, e| {
            self.reduce_one(context, v, e)
        })
    }

    fn reduce_one(
        &self,
        context: &CallContext,
        values: &Column,
        group_ends: &[u32],
    ) -> Result<Column, CallError> {
        self.run(
            context,
            Role::Reducer,
            values.len(),
            |store, bound| match bound {
                Bound::Reducer(b) => b
                    .sluice_udf_reducers()
                    .call_reduce(store, self.index, values, group_ends),
                _ => Err(role_mismatch()),
            },
            |out| check_column(out, group_ends.len(), "reduced"),
            Column::len,
        )
    }

    /// The inverse reducer, item by item: `left[i]` with `right[i]` taken out (in pieces
    /// over the call bounds).
    pub fn invert(
        &self,
        context: &CallContext,
        left: &Column,
        right: &Column,
    ) -> Result<Column, CallError> {
        let fail = |kind| self.fail(context, kind);
        chunks::invert(self.call_bounds(), left, right, &fail, |l, r| {
            self.invert_one(context, l, r)
        })
    }

    fn invert_one(
        &self,
        context: &CallContext,
        left: &Column,
        right: &Column,
    ) -> Result<Column, CallError> {
        self.run(
            context,
            Role::Reducer,
            left.len(),
            |store, bound| match bound {
                Bound::Reducer(b) => b
                    .sluice_udf_reducers()
                    .call_invert(store, self.index, left, right),
                _ => Err(role_mismatch()),
            },
            |out| check_column(out, left.len(), "inverted"),
            Column::len,
        )
    }

    /// A state updater over the keys of one partition, in pieces of whole keys over the call
    /// bounds; a key that alone passes them is [`CallErrorKind::KeyTooLarge`].
    pub fn update(
        &self,
        context: &CallContext,
        input: &UpdateInput,
    ) -> Result<UpdateOutput, CallError> {
        let fail = |kind| self.fail(context, kind);
        chunks::update(self.call_bounds(), input, &fail, |piece| {
            self.update_one(context, piece)
        })
    }

    fn update_one(
        &self,
        context: &CallContext,
        input: &UpdateInput,
    ) -> Result<UpdateOutput, CallError> {
        let groups = input.group_ends.len();
        let input_bytes = input.values.data.len() + input.states.data.len();
        self.run(
            context,
            Role::Updater,
            input.values.len().max(groups),
            |store, bound| match bound {
                Bound::Updater(b) => b
                    .sluice_udf_updaters()
                    .call_update(store, self.index, input),
                _ => Err(role_mismatch()),
            },
            |out| {
                check_column(&out.states, groups, "state")?;
                if out.has_state.len() != groups {
                    return Err(CallErrorKind::Malformed(format!(
                        "{} has-state flags for {groups} keys",
                        out.has_state.len()
                    )));
                }
                self.component
                    .check_output((input.values.len().max(groups), input_bytes), &out.emitted)
            },
            |out| out.emitted.len(),
        )
    }

    /// A foreach-batch sink over one partition: over the call bounds, several calls in order,
    /// each with the same batch id, time and partition.
    pub fn sink(&self, context: &CallContext, input: &Batch) -> Result<(), CallError> {
        chunks::sink(self.call_bounds(), input, |piece| {
            self.sink_one(context, piece)
        })
    }

    fn sink_one(&self, context: &CallContext, input: &Batch) -> Result<(), CallError> {
        self.run(
            context,
            Role::Sink,
            input.len(),
            |store, bound| match bound {
                Bound::Sink(b) => b.sluice_udf_sinks().call_write(
                    store,
                    self.index,
                    context.batch_id,
                    context.batch_time,
                    context.partition,
                    input,
                ),
                _ => Err(role_mismatch()),
            },
            |_| Ok(()),
            |_| 0,
        )
    }
}

/// Bindings of another world than the role checked: cannot happen, reported as an error anyway.
fn role_mismatch() -> wasmtime::Error {
    wasmtime::Error::msg("the instance's world does not match the component's role")
}

/// The longest function name a component may export.
pub const MAX_FUNCTION_NAME: usize = 128;

/// What a component says about its functions, checked before anything prints or resolves it:
/// a bounded count, names a manifest can write (`[A-Za-z0-9_.-]`, at most
/// [`MAX_FUNCTION_NAME`] bytes, no duplicates) and kinds of the component's own world (or
/// `raw`). Kinds are a WIT enum, so they need no check of length or characters.
fn check_functions(
    name: &str,
    role: Role,
    functions: &[FunctionInfo],
    max_functions: usize,
) -> Result<(), LoadError> {
    let bad = |problem: FunctionsProblem| LoadError::BadFunctions {
        name: name.to_string(),
        problem,
    };
    if functions.is_empty() {
        return Err(bad(FunctionsProblem::None));
    }
    if functions.len() > max_functions {
        return Err(bad(FunctionsProblem::TooMany {
            count: functions.len(),
            limit: max_functions,
        }));
    }
    let mut seen = std::collections::HashSet::with_capacity(functions.len());
    for (index, f) in functions.iter().enumerate() {
        let shown = || guest_text::sanitize(&f.name, MAX_FUNCTION_NAME);
        let name_ok = !f.name.is_empty()
            && f.name.len() <= MAX_FUNCTION_NAME
            && f.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            return Err(bad(FunctionsProblem::BadName {
                index,
                name: shown(),
                bytes: f.name.len(),
            }));
        }
        if let Some(kind_role) = f.kind.role()
            && kind_role != role
        {
            return Err(bad(FunctionsProblem::KindOfAnotherRole {
                function: shown(),
                kind: f.kind,
                kind_role,
                role,
            }));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(bad(FunctionsProblem::Duplicate { name: shown() }));
        }
    }
    Ok(())
}

fn check_column(column: &Column, expected: usize, what: &str) -> Result<(), CallErrorKind> {
    column.validate(what).map_err(CallErrorKind::Malformed)?;
    if column.len() != expected {
        return Err(CallErrorKind::Malformed(format!(
            "{} {what} items where {expected} were due",
            column.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::bindings::types::FunctionKind;

    fn info(name: &str, kind: FunctionKind) -> FunctionInfo {
        FunctionInfo {
            name: name.into(),
            kind,
            has_inverse: false,
        }
    }

    fn problem(functions: &[FunctionInfo]) -> FunctionsProblem {
        match check_functions("c", Role::Transform, functions, 3) {
            Err(LoadError::BadFunctions { problem, .. }) => problem,
            other => panic!("expected BadFunctions, got {other:?}"),
        }
    }

    #[test]
    fn plain_metadata_passes() {
        check_functions(
            "c",
            Role::Transform,
            &[
                info("split_words", FunctionKind::FlatMap),
                info("v1.pair-one", FunctionKind::Map),
                info("columns", FunctionKind::Raw),
            ],
            3,
        )
        .unwrap();
        for role in Role::ALL {
            check_functions("c", role, &[info("anything", FunctionKind::Raw)], 3).unwrap();
        }
    }

    #[test]
    fn hostile_metadata_is_refused_with_what_is_wrong() {
        assert!(matches!(problem(&[]), FunctionsProblem::None));
        let four: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| info(n, FunctionKind::Map))
            .collect();
        assert!(matches!(
            problem(&four),
            FunctionsProblem::TooMany { count: 4, limit: 3 }
        ));
        assert!(matches!(
            problem(&[
                info("a", FunctionKind::Map),
                info("a", FunctionKind::Filter)
            ]),
            FunctionsProblem::Duplicate { .. }
        ));
        for name in ["", "with#hash", "new\nline", "esc\u{1b}[31m", "sp ace"] {
            assert!(
                matches!(
                    problem(&[info(name, FunctionKind::Map)]),
                    FunctionsProblem::BadName { .. }
                ),
                "{name:?}"
            );
        }
        let long = "n".repeat(64 << 10);
        match problem(&[info(&long, FunctionKind::Map)]) {
            FunctionsProblem::BadName { name, bytes, .. } => {
                assert_eq!(bytes, 64 << 10);
                assert!(name.len() < MAX_FUNCTION_NAME + 32, "{}", name.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            problem(&[
                info("f", FunctionKind::Map),
                info("g", FunctionKind::Reduce)
            ]),
            FunctionsProblem::KindOfAnotherRole {
                kind: FunctionKind::Reduce,
                kind_role: Role::Reducer,
                role: Role::Transform,
                ..
            }
        ));
    }
}
