//! Picking a job up from its checkpoint (Spark's `StreamingContext.getOrCreate`): read the
//! newest good metadata and check its values, refuse a plan that cannot carry its state on,
//! bring back lost or damaged state from the newest data checkpoint (verified), open the
//! receivers' write-ahead logs, and say which sealed batches must run again.
//!
//! The state store's last committed batch is the authority on what was applied: batches at
//! or below it never run again, and metadata that does not know it (deleted, or older than the
//! state) is refused rather than replaying input the state already holds. The metadata's
//! sealed log offsets are checked against what each write-ahead log holds: a log shorter than
//! sealed is refused unless the owner accepts the loss (`--accept-wal-loss`), which is logged
//! and counted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::checkpoint::{
    BatchRecord, CheckpointDir, CheckpointError, CheckpointLog, Metadata, RecordedInput,
    StatefulOp, metadata,
};
use crate::metrics::{Registry, SeriesKey};
use crate::plan::{Plan, SourceKind};
use crate::sources::received::Received;
use crate::state::{Committed, StateStore};
use crate::wal::Wal;

/// A job's checkpoint, opened.
pub struct Recovered {
    /// The live checkpoint the scheduler and executor write to.
    pub log: Arc<CheckpointLog>,
    /// The metadata the job starts from (fresh when there was none).
    pub meta: Metadata,
    /// Whether a checkpoint was there to resume from.
    pub resumed: bool,
    /// The receivers' buffers, holding what their logs had past the last sealed batch (filled
    /// by [`Recovered::resume`]).
    pub received: BTreeMap<String, Received>,
    /// The metadata file resumed from (for messages).
    loaded: Option<std::path::PathBuf>,
    /// Newer metadata files that could not be read (for messages).
    damaged: Vec<String>,
    /// The checkpoint folder.
    dir: std::path::PathBuf,
    /// The receivers' logs, by source.
    wals: BTreeMap<String, Arc<Mutex<Wal>>>,
    /// Whether the owner accepts losing what a damaged log no longer holds.
    accept_wal_loss: bool,
    /// Whether data checkpoints were there when the checkpoint was opened.
    had_data: bool,
}

impl Recovered {
    /// The sealed batches to run again: those after `done` (the last batch whose state is
    /// committed, or that finished when the job keeps no state).
    pub fn replay(&self, done: Option<u64>) -> Vec<BatchRecord> {
        self.meta
            .batches
            .iter()
            .filter(|b| done.is_none_or(|d| b.id > d))
            .cloned()
            .collect()
    }

    /// The metadata file the job resumed from, if any.
    pub fn loaded(&self) -> Option<&Path> {
        self.loaded.as_deref()
    }

    /// Check the checkpoint against the state's last committed batch (`committed`, when the
    /// job keeps state) and against the write-ahead logs, then buffer again what the logs hold
    /// past the last sealed batch. Refuses metadata that is missing or older than committed
    /// state, and sealed log offsets a log no longer holds (unless the loss is accepted).
    pub fn resume(
        &mut self,
        plan: &Plan,
        state: Option<(&Path, Option<u64>)>,
        registry: &Registry,
    ) -> Result<(), CheckpointError> {
        let committed = state.and_then(|(_, c)| c);
        if let (Some((state_dir, _)), Some(c)) = (state, committed) {
            if c > metadata::MAX_BATCH_ID {
                return Err(CheckpointError::State {
                    path: state_dir.to_path_buf(),
                    message: format!(
                        "the state's last committed batch is {c}, over {}: the state folder was not written by a job; move it aside",
                        metadata::MAX_BATCH_ID
                    ),
                });
            }
            if !self.resumed {
                return Err(CheckpointError::NoMetadata {
                    dir: self.dir.clone(),
                    state: state_dir.to_path_buf(),
                    batch: c,
                });
            }
            if c >= self.meta.next_batch {
                return Err(CheckpointError::StaleMetadata {
                    file: self.loaded.clone().unwrap_or_else(|| self.dir.clone()),
                    damaged: if self.damaged.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; newer ones could not be read: {}",
                            self.damaged.join("; ")
                        )
                    },
                    known: self.meta.next_batch - 1,
                    first: self.meta.next_batch,
                    state: state_dir.to_path_buf(),
                    committed: c,
                });
            }
        }
        if !self.resumed {
            if self.had_data {
                return Err(CheckpointError::Orphaned {
                    dir: self.dir.clone(),
                    what: format!("{} holds data checkpoints", self.dir.join("data").display()),
                });
            }
            for (name, wal) in &self.wals {
                let wal = wal.lock().unwrap_or_else(PoisonError::into_inner);
                if wal.start() > 0 {
                    return Err(CheckpointError::Orphaned {
                        dir: self.dir.clone(),
                        what: format!(
                            "the write-ahead log of source '{name}' ({}) starts at offset {}: its first segments were deleted once checkpoints covered them",
                            wal.dir().display(),
                            wal.start()
                        ),
                    });
                }
            }
        }
        let done = if state.is_some() {
            committed
        } else {
            self.meta.finished
        };
        self.check_logs(plan, done, registry)?;
        for (name, wal) in &self.wals {
            let sealed = self.meta.sources.get(name).and_then(|p| p.wal_sealed);
            let (buffer, pending) = Received::logged(wal.clone(), sealed, self.accept_wal_loss)?;
            if pending > 0 {
                tracing::info!(job = %plan.name, source = %name, "{pending} records received before the restart and in no batch yet are back from the write-ahead log");
            }
            self.received.insert(name.clone(), buffer);
        }
        Ok(())
    }

    /// Every log offset the metadata says was sealed (the sealed position, the ranges of the
    /// batches to run again) must be in the log.
    fn check_logs(
        &mut self,
        plan: &Plan,
        done: Option<u64>,
        registry: &Registry,
    ) -> Result<(), CheckpointError> {
        let sources: Vec<&str> = plan.sources.iter().map(|s| s.name.as_str()).collect();
        for (name, wal) in &self.wals {
            let (start, end, wal_dir) = {
                let wal = wal.lock().unwrap_or_else(PoisonError::into_inner);
                (wal.start(), wal.end(), wal.dir().to_path_buf())
            };
            let Some(index) = sources.iter().position(|s| s == name) else {
                continue;
            };
            let sealed = self.meta.sources.get(name).and_then(|p| p.wal_sealed);
            let mut needed: Option<(u64, u64)> = sealed.map(|s| (s, s));
            for b in self
                .meta
                .batches
                .iter()
                .filter(|b| done.is_none_or(|d| b.id > d))
            {
                if let Some(RecordedInput::Wal { from, to }) = b.inputs.get(index) {
                    needed = Some(needed.map_or((*from, *to), |(f, t)| (f.min(*from), t.max(*to))));
                }
            }
            let Some((from, to)) = needed else { continue };
            if from >= start && to <= end {
                continue;
            }
            // Sealed bytes past the log's end, and before its start.
            let missing = to.saturating_sub(end) + start.min(to).saturating_sub(from);
            let error = CheckpointError::WalBehind {
                wal: wal_dir.clone(),
                file: self.loaded.clone().unwrap_or_else(|| self.dir.clone()),
                source_name: name.clone(),
                needed_from: from,
                needed_to: to,
                held_from: start,
                held_to: end,
                missing,
            };
            if !self.accept_wal_loss {
                return Err(error);
            }
            tracing::error!(job = %plan.name, source = %name, "--accept-wal-loss: {error}: going on; batches run again get what the log still holds, {missing} bytes of sealed log are lost");
            registry.add(
                &SeriesKey::new(
                    "sluice_wal_lost_bytes_total",
                    &[("job", &*plan.name), ("source", name)],
                ),
                missing,
            );
            let clamp = |o: u64| o.clamp(start, end);
            let fix = |meta: &mut Metadata| {
                if let Some(p) = meta.sources.get_mut(name)
                    && let Some(s) = p.wal_sealed
                {
                    p.wal_sealed = Some(clamp(s));
                }
                for b in &mut meta.batches {
                    if let Some(RecordedInput::Wal { from, to }) = b.inputs.get_mut(index) {
                        (*from, *to) = (clamp(*from), clamp(*to));
                    }
                }
            };
            fix(&mut self.meta);
            self.log.amend(fix);
        }
        Ok(())
    }
}

/// Open `plan`'s checkpoint, if it has one: the newest good metadata (its values checked),
/// the plan checked against it, the live state restored from the newest data checkpoint if it
/// is missing, the receivers' logs opened. [`Recovered::resume`] finishes the job.
pub fn open(plan: &Plan) -> Result<Option<Recovered>, CheckpointError> {
    let Some(c) = &plan.checkpoint else {
        return Ok(None);
    };
    let (mut dir, found) = CheckpointDir::open(&c.dir)?;
    let resumed = found.is_some();
    let loaded = dir.loaded().map(Path::to_path_buf);
    let damaged = dir.damaged().to_vec();
    let meta = match found {
        Some(meta) => {
            let file = loaded.clone().unwrap_or_else(|| c.dir.clone());
            meta.validate(plan)
                .map_err(|(field, why)| CheckpointError::Invalid {
                    file: file.clone(),
                    field,
                    why,
                })?;
            for note in crate::checkpoint::check_compatible(&c.dir, &meta, plan)? {
                tracing::warn!(job = %plan.name, "{note}");
            }
            let mut meta = meta;
            // From now on the checkpoint describes this plan, in this version's format.
            meta.version = metadata::VERSION;
            meta.plan_fingerprint = metadata::fingerprint(plan);
            meta.stateful = StatefulOp::of(plan);
            meta.udfs = metadata::udf_versions(plan);
            tracing::info!(job = %plan.name, "resuming from checkpoint {} ({}): last finished batch {}, {} sealed batches to check, next batch {}",
                c.dir.display(),
                file.display(),
                meta.finished.map_or("none".into(), |f| f.to_string()),
                meta.batches.len(),
                meta.next_batch);
            if !meta.skipped.is_empty() {
                let ids: Vec<String> = meta.skipped.iter().map(|s| s.id.to_string()).collect();
                tracing::warn!(job = %plan.name, "{} batches were skipped with --skip-batch before (their records produced no output): {}", ids.len(), ids.join(", "));
            }
            meta
        }
        None => Metadata {
            plan_fingerprint: metadata::fingerprint(plan),
            stateful: StatefulOp::of(plan),
            udfs: metadata::udf_versions(plan),
            ..Metadata::fresh(&plan.name)
        },
    };
    let had_data = !dir.data_checkpoints()?.is_empty();
    if let (Some(state_dir), Some(batch)) = (&plan.state_dir, meta.data_checkpoint)
        && !state_dir.join("CURRENT").exists()
    {
        restore_state(&dir.data_path(batch), batch, state_dir, "is missing")?;
    }
    let mut wals = BTreeMap::new();
    for s in &plan.sources {
        if matches!(s.kind, SourceKind::Socket { .. } | SourceKind::Http { .. }) {
            let wal = Arc::new(Mutex::new(Wal::open(
                &dir.wal_dir(&s.name),
                c.wal_sync,
                c.accept_wal_loss,
            )?));
            wals.insert(s.name.clone(), wal);
        }
    }
    if !resumed && damaged.is_empty() {
        // A fresh job writes its metadata before any receiver acknowledges a record, so a log
        // that holds records without metadata means the metadata was deleted: replaying the
        // log as new input would count it twice.
        for (name, wal) in &wals {
            let wal = wal.lock().unwrap_or_else(PoisonError::into_inner);
            if wal.end() > wal.start() {
                return Err(CheckpointError::Orphaned {
                    dir: dir.path().to_path_buf(),
                    what: format!(
                        "the write-ahead log of source '{name}' ({}) holds {} bytes of received records",
                        wal.dir().display(),
                        wal.end() - wal.start()
                    ),
                });
            }
        }
        dir.write(&meta)?;
    }
    let sources = plan.sources.iter().map(|s| s.name.clone()).collect();
    let checkpoint_dir = dir.path().to_path_buf();
    let log = CheckpointLog::new(
        dir,
        meta.clone(),
        sources,
        wals.clone(),
        c.interval_batches,
        c.keep,
    );
    Ok(Some(Recovered {
        log: Arc::new(log),
        meta,
        resumed,
        received: BTreeMap::new(),
        loaded,
        damaged,
        dir: checkpoint_dir,
        wals,
        accept_wal_loss: c.accept_wal_loss,
        had_data,
    }))
}

/// `host run --restore-state`: move the live state aside and put the newest data checkpoint
/// in its place (verified); the batches after it run again.
pub fn restore_newest(plan: &Plan, recovered: &Recovered) -> Result<(), CheckpointError> {
    let refuse = |message: String| CheckpointError::State {
        path: recovered.dir.join("data"),
        message,
    };
    let Some(state_dir) = &plan.state_dir else {
        return Err(refuse("--restore-state: the job keeps no state".into()));
    };
    let Some(batch) = recovered.meta.data_checkpoint else {
        return Err(refuse(
            "--restore-state: the checkpoint has no data checkpoint yet; move the state folder aside to start the state afresh".into(),
        ));
    };
    restore_state(
        &recovered.log.data_path(batch),
        batch,
        state_dir,
        "was replaced on request (--restore-state)",
    )
}

/// `host run --skip-batch ID`: go past sealed batch `id`, the next one to run again, without
/// running it: recorded in the metadata (with its input) first, then, when the job keeps
/// state, committed as done in the state store with no change, so it is never run again. Its
/// records produce no output and no state change. Without `id`, only skips recorded before
/// whose state commit a crash cut off are completed.
pub fn skip(
    plan: &Plan,
    recovered: &mut Recovered,
    id: Option<u64>,
    registry: &Registry,
) -> Result<(), CheckpointError> {
    if id.is_none() && recovered.meta.skipped.is_empty() {
        return Ok(());
    }
    let refuse = |why: String| CheckpointError::Skip {
        id: id.unwrap_or_default(),
        why,
    };
    if !recovered.resumed {
        return Err(refuse(
            "the checkpoint has no metadata: no batch to skip".into(),
        ));
    }
    let state_error = |path: &Path, e: crate::state::StateError| CheckpointError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let stateful: Vec<&str> = plan.stateful_nodes().map(|(_, n)| &*n.name).collect();
    let store = match &plan.state_dir {
        Some(dir) if !stateful.is_empty() => Some(
            StateStore::open(dir, &plan.tenant, &plan.name, &stateful)
                .map_err(|e| state_error(dir, e))?,
        ),
        _ => None,
    };
    let mark_done = |store: &StateStore, record: &BatchRecord| {
        store
            .commit(
                crate::state::StateWrites::default(),
                Some(Committed {
                    batch: record.id,
                    time: record.time,
                }),
            )
            .and_then(|()| store.flush())
            .map_err(|e| state_error(store.dir(), e))
    };
    let done = |recovered: &Recovered| -> Result<Option<u64>, CheckpointError> {
        match &store {
            Some(store) => Ok(store
                .committed()
                .map_err(|e| state_error(store.dir(), e))?
                .map(|c| c.batch)),
            None => Ok(recovered.meta.finished),
        }
    };
    // A skip recorded before whose state commit a crash cut off: finish it.
    if let Some(store) = &store {
        while let Some(next) = recovered.replay(done(recovered)?).first().cloned()
            && recovered.meta.skipped.iter().any(|s| s.id == next.id)
        {
            mark_done(store, &next)?;
            tracing::warn!(job = %plan.name, batch = next.id, "batch {} was skipped (--skip-batch) by an earlier run: committed as done", next.id);
        }
    }
    let Some(id) = id else {
        return Ok(());
    };
    let last_done = done(recovered)?;
    let replay = recovered.replay(last_done);
    let Some(next) = replay.first() else {
        return Err(refuse(format!(
            "no sealed batch is waiting to run again (last done: {}); nothing to skip",
            last_done.map_or("none".into(), |d| d.to_string())
        )));
    };
    if next.id != id {
        return Err(refuse(format!(
            "only the next batch to run again can be skipped, and that is batch {}",
            next.id
        )));
    }
    let record = next.clone();
    recovered.log.skipped(&record)?;
    if let Some(store) = &store {
        mark_done(store, &record)?;
    }
    recovered.meta = recovered.log.metadata();
    registry.add(
        &SeriesKey::new(
            "sluice_batches_skipped_total",
            &[("tenant", &*plan.tenant), ("job", &*plan.name)],
        ),
        1,
    );
    let inputs: Vec<String> = plan
        .sources
        .iter()
        .zip(&record.inputs)
        .map(|(s, input)| match input {
            RecordedInput::Files { files } => format!("{}: {} files", s.name, files.len()),
            RecordedInput::Wal { from, to } => {
                format!("{}: write-ahead log offsets {from}..{to}", s.name)
            }
            RecordedInput::Unlogged { records } => format!("{}: {records} records", s.name),
            RecordedInput::Offsets { ranges } => format!(
                "{}: Kafka offsets {}",
                s.name,
                ranges
                    .iter()
                    .map(|r| format!("{}/{} {}..{}", r.topic, r.partition, r.from, r.to))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    tracing::warn!(job = %plan.name, batch = id, "--skip-batch {id}: batch {id} (time {} ms) is skipped, recorded in the checkpoint: its input ({}) produces no output and no state change; {} batches skipped in all", record.time, inputs.join("; "), recovered.meta.skipped.len());
    Ok(())
}

/// Put the data checkpoint of `batch` in place of the live state in `state_dir` (moved aside
/// when there is one): every file verified against the checkpoint's checksums and copied (not
/// linked, so damage to the live files never reaches the checkpoint).
pub fn restore_state(
    source: &Path,
    batch: u64,
    state_dir: &Path,
    why: &str,
) -> Result<(), CheckpointError> {
    let source = source.to_path_buf();
    let fail = |message: String| CheckpointError::State {
        path: source.clone(),
        message,
    };
    let is_dir = std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_dir());
    if !is_dir || !source.join("CURRENT").exists() {
        return Err(fail(format!(
            "the live state in {} {why}, and the data checkpoint of batch {batch} it would be restored from is not there either",
            state_dir.display()
        )));
    }
    // Into a fresh folder beside the live one first: a failed verification leaves the live
    // state as it was.
    let staging = state_dir.with_file_name(format!(
        "{}.restoring",
        state_dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| fail(format!("cannot clear {}: {e}", staging.display())))?;
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| fail(format!("cannot create {}: {e}", staging.display())))?;
    let verified = crate::state::restore_checkpoint(&source, &staging).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staging);
        fail(e.to_string())
    })?;
    if state_dir.exists() {
        let aside = state_dir.with_file_name(format!(
            "{}.damaged-{}",
            state_dir
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            crate::sources::now_ms()
        ));
        std::fs::rename(state_dir, &aside)
            .map_err(|e| fail(format!("cannot move {} aside: {e}", state_dir.display())))?;
        tracing::warn!(state = %state_dir.display(), "the replaced state was moved to {}", aside.display());
    }
    std::fs::rename(&staging, state_dir).map_err(|e| {
        fail(format!(
            "cannot rename {} into place: {e}",
            staging.display()
        ))
    })?;
    tracing::warn!(state = %state_dir.display(), "the live state {why}: restored the data checkpoint of batch {batch} ({verified} files verified); the batches after it run again");
    Ok(())
}

/// For `Job::start`: the job's state folder and its last committed batch, when it keeps
/// state.
pub fn state_of(
    plan: &Plan,
    has_state: bool,
    committed: Option<u64>,
) -> Option<(&Path, Option<u64>)> {
    match &plan.state_dir {
        Some(dir) if has_state => Some((dir.as_path(), committed)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_verifies_and_copies_and_leaves_the_live_state_when_the_checkpoint_is_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("state");
        let ckpt = dir.path().join("data/batch-1");
        {
            let store = StateStore::open(&live, "t", "j", &["s"]).expect("open");
            let table = store.table("s");
            let mut w = crate::state::StateWrites::default();
            w.put(&table, b"k", b"v".to_vec(), None);
            store
                .commit(w, Some(Committed { batch: 1, time: 1 }))
                .expect("commit");
            store.flush().expect("flush");
            store.checkpoint(&ckpt).expect("checkpoint");
        }
        restore_state(&ckpt, 1, &live, "is damaged").expect("restore");
        let store = StateStore::open(&live, "t", "j", &["s"]).expect("reopen");
        assert_eq!(store.committed().expect("marker").map(|c| c.batch), Some(1));
        drop(store);
        std::fs::write(ckpt.join("CURRENT"), "MANIFEST-999999\n").expect("damage");
        let err = restore_state(&ckpt, 1, &live, "is damaged").expect_err("damaged");
        assert!(err.to_string().contains("CURRENT"), "{err}");
        assert!(
            live.join("CURRENT").exists(),
            "the live state is left as it was"
        );
    }
}
