//! Swappable UDF bindings: what a job holds instead of a bare [`UdfFunction`], so a later
//! version of a component can be bound between batches.
//!
//! A [`UdfSlot`] remembers the function's name and role and holds its current binding. A
//! job's slots live in one [`SlotSet`]: the engine takes [`SlotSet::snapshot`] once at the
//! start of a batch and calls only through it, and [`SlotSet::rebind_component`] swaps every
//! slot of a component at once (or none), so no batch ever mixes two versions.

use std::sync::{Arc, RwLock};

use super::component::{Role, UdfComponent, UdfFunction};
use super::error::ResolveError;
use super::resolve::Resolved;

/// One function as bound: the function and the registry version of its component (none for
/// a component from a folder).
#[derive(Debug, Clone)]
pub struct Binding {
    /// The function.
    pub function: Arc<UdfFunction>,
    /// The component's version in the registry.
    pub version: Option<u64>,
}

impl Binding {
    /// The component the function belongs to.
    pub fn component(&self) -> &Arc<UdfComponent> {
        self.function.component()
    }

    /// The SHA-256 of the component's bytes, hex.
    pub fn hash(&self) -> &str {
        self.function.component().hash()
    }
}

/// What a rebinding changed, for logs and the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebindOutcome {
    /// `component#function`.
    pub spec: String,
    /// The version bound before.
    pub from_version: Option<u64>,
    /// The hash bound before.
    pub from_hash: String,
    /// The version bound now.
    pub to_version: Option<u64>,
    /// The hash bound now.
    pub to_hash: String,
}

impl RebindOutcome {
    /// Whether anything changed (the code, or only the version number of the same code).
    pub fn changed(&self) -> bool {
        self.from_hash != self.to_hash || self.from_version != self.to_version
    }
}

/// A function a job calls, rebindable to another version of its component between batches.
#[derive(Debug)]
pub struct UdfSlot {
    function: Arc<str>,
    role: Role,
    current: RwLock<Binding>,
}

impl UdfSlot {
    /// A slot bound to `function` (resolved for its component's role), of `version`.
    pub fn new(function: UdfFunction, version: Option<u64>) -> Self {
        Self {
            function: Arc::from(function.name()),
            role: function.component().role(),
            current: RwLock::new(Binding {
                function: Arc::new(function),
                version,
            }),
        }
    }

    /// The function's name, resolved again in every new component.
    pub fn function_name(&self) -> &str {
        &self.function
    }

    /// The role the function must have in every component bound.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The function bound now. A slot inside a [`SlotSet`] is read through
    /// [`SlotSet::snapshot`], once per batch.
    pub fn current(&self) -> Arc<UdfFunction> {
        self.binding().function
    }

    /// The binding now: function and version, read together.
    pub fn binding(&self) -> Binding {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bound component's registry version.
    pub fn version(&self) -> Option<u64> {
        self.binding().version
    }

    /// The bound component's hash.
    pub fn hash(&self) -> String {
        self.binding().hash().to_string()
    }

    /// Bind the same function of the same role in `component` (of `version`). On an error (the
    /// function is missing there, or it is of another world) the slot keeps its binding.
    pub fn rebind(
        &self,
        component: Arc<UdfComponent>,
        version: Option<u64>,
    ) -> Result<RebindOutcome, ResolveError> {
        let next = self.prepare(&component, version)?;
        Ok(self.install(next))
    }

    fn prepare(
        &self,
        component: &Arc<UdfComponent>,
        version: Option<u64>,
    ) -> Result<Binding, ResolveError> {
        let function = component.function_for(&self.function, self.role)?;
        Ok(Binding {
            function: Arc::new(function),
            version,
        })
    }

    fn install(&self, next: Binding) -> RebindOutcome {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let outcome = RebindOutcome {
            spec: next.function.spec(),
            from_version: current.version,
            from_hash: current.hash().to_string(),
            to_version: next.version,
            to_hash: next.hash().to_string(),
        };
        *current = next;
        outcome
    }
}

/// A slot's index in its [`SlotSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(usize);

impl SlotId {
    /// The index.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A slot with the component name it follows.
#[derive(Debug)]
struct Member {
    /// The component's name without `@N`.
    component: String,
    /// Whether the job named the version (`name@N`): then the slot keeps it.
    pinned: bool,
    slot: UdfSlot,
}

/// A rebinding was refused: one slot's function cannot be bound in the new component. No
/// slot was changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot bind `{component}#{function}` to {}: {source}; the job keeps the version it runs",
    version.map_or_else(|| "the new component".to_string(), |v| format!("version {v}"))
)]
pub struct RebindError {
    /// The component.
    pub component: String,
    /// The function that could not be bound.
    pub function: String,
    /// The version that was offered.
    pub version: Option<u64>,
    /// Why.
    pub source: Box<ResolveError>,
}

/// The slots of one job. Built while planning ([`add`](Self::add)), then shared; every read
/// for a batch goes through one [`snapshot`](Self::snapshot).
#[derive(Debug, Default)]
pub struct SlotSet {
    slots: Vec<Member>,
    /// Held for reading by a snapshot and for writing by a rebinding, so a snapshot sees every
    /// slot of a component before or after a rebinding, never a mix.
    gate: RwLock<()>,
}

impl SlotSet {
    /// No slots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a slot bound to `function` of the `resolved` component (the function must be one
    /// of `resolved.component`'s). A slot of a pinned reference (`name@N`) is never rebound by
    /// [`rebind_component`](Self::rebind_component).
    pub fn add(&mut self, resolved: &Resolved, function: UdfFunction) -> SlotId {
        let id = SlotId(self.slots.len());
        self.slots.push(Member {
            component: resolved.name.clone(),
            pinned: resolved.pinned,
            slot: UdfSlot::new(function, resolved.version),
        });
        id
    }

    /// How many slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// One slot (to read; rebind through the set, so the batch boundary holds).
    pub fn slot(&self, id: SlotId) -> Option<&UdfSlot> {
        self.slots.get(id.0).map(|m| &m.slot)
    }

    /// Every slot's binding, taken at once: what one batch calls.
    pub fn snapshot(&self) -> Bindings {
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        Bindings {
            bindings: self.slots.iter().map(|m| m.slot.binding()).collect(),
        }
    }

    /// Bind every slot that follows component `name` (all but pinned ones) to the same
    /// function in `component` (of `version`), all or none: if one slot's function is missing
    /// from `component` or of another world, no slot changes. Returns one outcome per slot
    /// rebound (none when no slot follows `name`).
    pub fn rebind_component(
        &self,
        name: &str,
        component: Arc<UdfComponent>,
        version: Option<u64>,
    ) -> Result<Vec<RebindOutcome>, RebindError> {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut prepared = Vec::new();
        for member in self
            .slots
            .iter()
            .filter(|m| m.component == name && !m.pinned)
        {
            let next = member
                .slot
                .prepare(&component, version)
                .map_err(|source| RebindError {
                    component: name.to_string(),
                    function: member.slot.function_name().to_string(),
                    version,
                    source: Box::new(source),
                })?;
            prepared.push((&member.slot, next));
        }
        Ok(prepared
            .into_iter()
            .map(|(slot, next)| slot.install(next))
            .collect())
    }
}

/// Every slot's binding for one batch, by [`SlotId`].
#[derive(Debug, Clone)]
pub struct Bindings {
    bindings: Vec<Binding>,
}

impl Bindings {
    /// The binding of slot `id` (none for an id of another set).
    pub fn get(&self, id: SlotId) -> Option<&Binding> {
        self.bindings.get(id.0)
    }

    /// The function of slot `id`.
    pub fn function(&self, id: SlotId) -> Option<&UdfFunction> {
        self.get(id).map(|b| &*b.function)
    }

    /// Every binding, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (SlotId, &Binding)> + '_ {
        self.bindings
            .iter()
            .enumerate()
            .map(|(i, b)| (SlotId(i), b))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// These bindings with slot `id` bound as `binding` (a version to go back to).
    pub fn replace(mut self, id: SlotId, binding: Binding) -> Self {
        if let Some(b) = self.bindings.get_mut(id.0) {
            *b = binding;
        }
        self
    }

    /// These bindings with slot `id` bound to the same function in `component` (of
    /// `version`): a batch re-run with the version it ran with before a restart. The slot's
    /// function must be in `component`, of the same role.
    pub fn with(
        mut self,
        id: SlotId,
        component: &Arc<UdfComponent>,
        version: Option<u64>,
    ) -> Result<Self, ResolveError> {
        if let Some(binding) = self.bindings.get_mut(id.0) {
            let function =
                component.function_for(binding.function.name(), binding.component().role())?;
            *binding = Binding {
                function: Arc::new(function),
                version,
            };
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::batch::Batch;
    use crate::udf::registry::testing;
    use crate::udf::{CallContext, Registry, UdfResolver};

    fn upper(function: &UdfFunction, input: &str) -> String {
        let mut batch = Batch::empty(false);
        batch.push(None, input.as_bytes(), 0);
        let out = function.transform(&CallContext::adhoc(), &batch).unwrap();
        let values: Vec<&[u8]> = out.records().map(|r| r.value).collect();
        assert_eq!(values.len(), 1);
        String::from_utf8_lossy(values[0]).into_owned()
    }

    /// `text` v1 (the bundled component) and v2 (the `bench` guest, which also exports
    /// `uppercase` but not `split_words`).
    fn two_versions() -> Registry {
        let r = Registry::new(testing::runtime());
        r.deploy("acme", "text", &testing::udf_bytes("text"), "t")
            .unwrap();
        r.deploy("acme", "text", &testing::guest_bytes("bench"), "t")
            .unwrap();
        r
    }

    fn slot_of(r: &Registry, reference: &str, function: &str) -> (Resolved, UdfFunction) {
        let resolved = r.resolver("acme").resolve(reference).unwrap();
        let f = resolved
            .component
            .function_for(function, Role::Transform)
            .unwrap();
        (resolved, f)
    }

    #[test]
    fn a_rebound_slot_calls_the_new_version() {
        let r = two_versions();
        let (v1, f) = slot_of(&r, "text@1", "uppercase");
        let v2 = r.get("acme", "text", Some(2)).unwrap();
        let slot = UdfSlot::new(f, v1.version);
        assert_eq!(
            (slot.function_name(), slot.role()),
            ("uppercase", Role::Transform)
        );
        assert_eq!(slot.version(), Some(1));
        assert_eq!(upper(&slot.current(), "hello"), "HELLO");
        let before = slot.current();

        let outcome = slot.rebind(v2.component.clone(), Some(2)).unwrap();
        assert_eq!(outcome.spec, "text#uppercase");
        assert_eq!(
            (outcome.from_version, outcome.to_version),
            (Some(1), Some(2))
        );
        assert_eq!(outcome.from_hash, v1.component.hash());
        assert_eq!(outcome.to_hash, v2.info.hash);
        assert!(outcome.changed());
        assert_eq!(
            (slot.version(), slot.hash()),
            (Some(2), v2.info.hash.clone())
        );
        assert_eq!(slot.current().component().hash(), v2.info.hash);
        assert_eq!(upper(&slot.current(), "abc"), "ABC");
        // A function taken before the rebinding still works: a batch in flight finishes on it.
        assert_eq!(upper(&before, "abc"), "ABC");
        assert_eq!(before.component().hash(), v1.component.hash());

        // Rebinding to what is bound changes nothing.
        assert!(!slot.rebind(v2.component, Some(2)).unwrap().changed());
    }

    #[test]
    fn a_failed_rebind_keeps_the_old_binding() {
        let r = two_versions();
        let (v1, f) = slot_of(&r, "text@1", "split_words");
        let slot = UdfSlot::new(f, v1.version);
        let bench = r.get("acme", "text", Some(2)).unwrap().component;
        match slot.rebind(bench, Some(2)).unwrap_err() {
            ResolveError::UnknownFunction {
                function,
                available,
                ..
            } => {
                assert_eq!(function, "split_words");
                assert!(available.contains("uppercase"), "{available}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            (slot.version(), slot.hash()),
            (Some(1), v1.component.hash().to_string())
        );
        let out = slot
            .current()
            .transform(&CallContext::adhoc(), &{
                let mut b = Batch::empty(false);
                b.push(None, b"a b c", 0);
                b
            })
            .unwrap();
        assert_eq!(out.len(), 3);

        // A component of another world (a reducer) has no such transform either.
        let aggregates = testing::runtime()
            .load("aggregates", &testing::udf_bytes("aggregates"))
            .unwrap();
        assert!(slot.rebind(aggregates, None).is_err());
        assert_eq!(slot.version(), Some(1));
    }

    #[test]
    fn a_set_rebinds_all_slots_of_a_component_or_none() {
        let r = two_versions();
        let v2 = r.get("acme", "text", Some(2)).unwrap();
        let mut set = SlotSet::new();
        // Both follow `text` (resolved to v1 by number here, but not pinned: built by hand).
        let (mut v1, upper_fn) = slot_of(&r, "text@1", "uppercase");
        v1.pinned = false;
        let a = set.add(&v1, upper_fn);
        let (_, split_fn) = slot_of(&r, "text@1", "split_words");
        let b = set.add(&v1, split_fn);
        // A pinned slot keeps its version.
        let (pinned, upper_pinned) = slot_of(&r, "text@1", "uppercase");
        let c = set.add(&pinned, upper_pinned);
        assert_eq!(set.len(), 3);

        // `split_words` is not in v2: nothing changes.
        let e = set
            .rebind_component("text", v2.component.clone(), Some(2))
            .unwrap_err();
        assert_eq!((e.function.as_str(), e.version), ("split_words", Some(2)));
        assert!(
            e.to_string().contains("the job keeps the version it runs"),
            "{e}"
        );
        let snap = set.snapshot();
        assert!(snap.iter().all(|(_, b)| b.version == Some(1)));

        // Two slots following `text`, one pinned: only the first is rebound.
        let mut set = SlotSet::new();
        let (_, f1) = slot_of(&r, "text@1", "uppercase");
        let a2 = set.add(&v1, f1);
        let (_, f2) = slot_of(&r, "text@1", "uppercase");
        let c2 = set.add(&pinned, f2);
        let outcomes = set
            .rebind_component("text", v2.component.clone(), Some(2))
            .unwrap();
        assert_eq!(outcomes.len(), 1);
        let snap = set.snapshot();
        assert_eq!(snap.get(a2).unwrap().version, Some(2));
        assert_eq!(snap.get(c2).unwrap().version, Some(1));
        assert_eq!(upper(snap.function(a2).unwrap(), "x"), "X");
        assert!(
            set.rebind_component("other", v2.component, Some(2))
                .unwrap()
                .is_empty()
        );
        let _ = (a, b, c);
    }

    #[test]
    fn a_snapshot_never_mixes_versions_under_concurrent_rebinds() {
        let r = two_versions();
        let v1 = r.get("acme", "text", Some(1)).unwrap().component;
        let v2 = r.get("acme", "text", Some(2)).unwrap().component;
        let follows = r.resolver("acme").resolve("text").unwrap();
        let mut set = SlotSet::new();
        for _ in 0..4 {
            set.add(&follows, follows.component.function("uppercase").unwrap());
        }
        let set = Arc::new(set);
        let stop = Arc::new(AtomicBool::new(false));
        let rebinder = {
            let (set, stop) = (set.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rebinds = 0u32;
                while !stop.load(Ordering::Relaxed) || rebinds < 100 {
                    let (c, v) = if rebinds.is_multiple_of(2) {
                        (&v1, 1)
                    } else {
                        (&v2, 2)
                    };
                    let outcomes = set.rebind_component("text", c.clone(), Some(v)).unwrap();
                    assert_eq!(outcomes.len(), 4);
                    rebinds += 1;
                }
                rebinds
            })
        };
        // Snapshot until both versions were seen (the rebinder runs meanwhile), each whole.
        let mut seen = [0u32; 3];
        let started = std::time::Instant::now();
        while seen[1] == 0 || seen[2] == 0 || seen[1] + seen[2] < 20_000 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "only saw {seen:?}"
            );
            let snap = set.snapshot();
            let first = snap.get(SlotId(0)).unwrap();
            for (_, b) in snap.iter() {
                assert_eq!(b.version, first.version);
                assert_eq!(b.hash(), first.hash());
            }
            seen[first.version.unwrap_or(0) as usize] += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let rebinds = rebinder.join().unwrap();
        assert!(rebinds >= 100);
        assert_eq!(seen[0], 0);
        let snap = set.snapshot();
        assert_eq!(upper(snap.function(SlotId(3)).unwrap(), "ok"), "OK");
    }
}
