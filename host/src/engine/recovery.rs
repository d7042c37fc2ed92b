//! Picking a job up from its checkpoint (Spark's `StreamingContext.getOrCreate`): read the
//! newest good metadata, refuse a plan that cannot carry its state on, bring back lost state
//! from the newest data checkpoint, open the receivers' write-ahead logs, and say which sealed
//! batches must run again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::checkpoint::{
    BatchRecord, CheckpointDir, CheckpointError, CheckpointLog, Metadata, StatefulOp, metadata,
};
use crate::plan::{Plan, SourceKind};
use crate::sources::received::Received;
use crate::wal::Wal;

/// A job's checkpoint, opened.
pub struct Recovered {
    /// The live checkpoint the scheduler and executor write to.
    pub log: Arc<CheckpointLog>,
    /// The metadata the job starts from (fresh when there was none).
    pub meta: Metadata,
    /// Whether a checkpoint was there to resume from.
    pub resumed: bool,
    /// The receivers' buffers, holding what their logs had past the last sealed batch.
    pub received: BTreeMap<String, Received>,
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
}

/// Open `plan`'s checkpoint, if it has one.
pub fn open(plan: &Plan) -> Result<Option<Recovered>, CheckpointError> {
    let Some(c) = &plan.checkpoint else {
        return Ok(None);
    };
    let (dir, found) = CheckpointDir::open(&c.dir)?;
    let resumed = found.is_some();
    let meta = match found {
        Some(meta) => {
            for note in crate::checkpoint::check_compatible(&c.dir, &meta, plan)? {
                tracing::warn!(job = %plan.name, "{note}");
            }
            let mut meta = meta;
            // From now on the checkpoint describes this plan.
            meta.plan_fingerprint = metadata::fingerprint(plan);
            meta.stateful = StatefulOp::of(plan);
            meta.udfs = metadata::udf_versions(plan);
            tracing::info!(job = %plan.name, "resuming from checkpoint {}: last finished batch {}, {} sealed batches to check, next batch {}",
                c.dir.display(),
                meta.finished.map_or("none".into(), |f| f.to_string()),
                meta.batches.len(),
                meta.next_batch);
            meta
        }
        None => Metadata {
            plan_fingerprint: metadata::fingerprint(plan),
            stateful: StatefulOp::of(plan),
            udfs: metadata::udf_versions(plan),
            ..Metadata::fresh(&plan.name)
        },
    };
    if let (Some(state_dir), Some(batch)) = (&plan.state_dir, meta.data_checkpoint)
        && !state_dir.join("CURRENT").exists()
    {
        restore_state(&dir.data_path(batch), batch, state_dir, "is missing")?;
    }
    let mut wals = BTreeMap::new();
    let mut received = BTreeMap::new();
    for s in &plan.sources {
        if matches!(s.kind, SourceKind::Socket { .. } | SourceKind::Http { .. }) {
            let wal = Arc::new(Mutex::new(Wal::open(
                &dir.wal_dir(&s.name),
                c.wal_sync,
                c.accept_wal_loss,
            )?));
            let sealed = meta.sources.get(&s.name).and_then(|p| p.wal_sealed);
            let (buffer, pending) = Received::logged(wal.clone(), sealed, c.accept_wal_loss)?;
            if pending > 0 {
                tracing::info!(job = %plan.name, source = %s.name, "{pending} records received before the restart and in no batch yet are back from the write-ahead log");
            }
            wals.insert(s.name.clone(), wal);
            received.insert(s.name.clone(), buffer);
        }
    }
    let sources = plan.sources.iter().map(|s| s.name.clone()).collect();
    let log = CheckpointLog::new(dir, meta.clone(), sources, wals, c.interval_batches, c.keep);
    Ok(Some(Recovered {
        log: Arc::new(log),
        meta,
        resumed,
        received,
    }))
}

/// Put the data checkpoint of `batch` in place of the live state in `state_dir` (moved aside
/// when there is one).
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
    if !source.join("CURRENT").exists() {
        return Err(fail(format!(
            "the live state in {} {why}, and the data checkpoint of batch {batch} it would be restored from is not there either",
            state_dir.display()
        )));
    }
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
        tracing::warn!(state = %state_dir.display(), "the damaged state was moved to {}", aside.display());
    }
    std::fs::create_dir_all(state_dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", state_dir.display())))?;
    let entries = std::fs::read_dir(&source).map_err(|e| fail(e.to_string()))?;
    for entry in entries.filter_map(Result::ok) {
        let from = entry.path();
        let to = state_dir.join(entry.file_name());
        // Table files never change once written: a hard link is a copy. The rest is copied.
        let linked =
            from.extension().is_some_and(|e| e == "sst") && std::fs::hard_link(&from, &to).is_ok();
        if !linked {
            std::fs::copy(&from, &to)
                .map_err(|e| fail(format!("cannot copy {}: {e}", from.display())))?;
        }
    }
    tracing::warn!(state = %state_dir.display(), "the live state {why}: restored the data checkpoint of batch {batch}; the batches after it run again");
    Ok(())
}
