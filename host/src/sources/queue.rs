//! Spark's `queueStream`: a program pushes batches of records; each micro-batch takes one.
//! With a rate budget a queued batch larger than the budget is split: the micro-batch takes
//! its first records and the rest stays at the front of the queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Source, SourceInput, SourceStatus, now_ms};
use crate::batch::Batch;

#[derive(Debug, Default)]
struct Shared {
    items: VecDeque<Batch>,
    closed: bool,
}

/// The program's end of a queue source. Dropping it closes the queue: once the queued batches
/// are taken the source is exhausted.
#[derive(Debug)]
pub struct QueueSender(Arc<Mutex<Shared>>);

/// The job's end of a queue source: the runtime handle a [`SourceKind::Queue`](super::SourceKind)
/// source reads (passed beside the job's description, in the planner's `Handles`).
#[derive(Debug, Clone)]
pub struct QueueReceiver(Arc<Mutex<Shared>>);

/// A new queue.
pub fn queue() -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

impl QueueSender {
    /// Queue one batch of records: one micro-batch will carry exactly these.
    pub fn push(&self, batch: Batch) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .items
            .push_back(batch);
    }

    /// Queue one batch of text lines, stamped with the current time.
    pub fn push_lines<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, lines: I) {
        let mut batch = Batch::empty(false);
        let now = now_ms();
        for line in lines {
            batch.push(None, line.as_ref().as_bytes(), now);
        }
        self.push(batch);
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
    }
}

/// A queue source in a running job.
pub struct QueueSource {
    name: String,
    queue: QueueReceiver,
    budget: Option<usize>,
}

impl QueueSource {
    /// The source reading `queue`.
    pub fn new(name: &str, queue: QueueReceiver) -> Self {
        Self {
            name: name.to_string(),
            queue,
            budget: None,
        }
    }
}

impl Source for QueueSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn take(&mut self, _max_records: Option<usize>) -> SourceInput {
        let mut shared = self.queue.0.lock().unwrap_or_else(PoisonError::into_inner);
        let records = match (shared.items.front_mut(), self.budget) {
            (Some(front), Some(budget)) if front.len() > budget => front.take_front(budget),
            _ => shared
                .items
                .pop_front()
                .unwrap_or_else(|| Batch::empty(false)),
        };
        SourceInput::Records {
            records,
            invalid_lines: 0,
            wal: None,
        }
    }

    fn status(&mut self) -> SourceStatus {
        let shared = self.queue.0.lock().unwrap_or_else(PoisonError::into_inner);
        SourceStatus {
            buffered: shared.items.front().map_or(0, Batch::len),
            backlog: !shared.items.is_empty(),
            exhausted: shared.closed && shared.items.is_empty(),
        }
    }

    fn set_budget(&mut self, records: Option<usize>) {
        self.budget = records;
    }

    fn stop(&mut self) {}
}
