//! The store behind the exactly-once batch algorithm, as a small trait: the
//! DynamoDB implementation lives at the edge (`taxi-aws`); the in-memory one
//! here serves property tests; [`FaultyStore`] injects crashes into either.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;

use crate::pack::{LogItem, PackError, PaneLogReader, Partials};
use crate::seq::SeqNum;
use crate::shard::{ShardId, ShardState};
use crate::time::EventTime;
use crate::watermark::CloserProgress;
use crate::window::{PaneStart, WindowStart};

/// A store failure. Every one of them makes the batch report a retry from the
/// first record whose effects are not durable; none of them loses data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("throttled by the store (retry helps): {0}")]
    Throttled(String),
    #[error("store unavailable or timed out (retry helps): {0}")]
    Unavailable(String),
    #[error("store rejected the request (retry will not help until the configuration is fixed): {0}")]
    Rejected(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Rejected(_))
    }
}

/// "Window `window` received late data from `shard`, up to record `seq`: emit it again."
#[derive(Clone, Debug, PartialEq)]
pub struct ReemitMarker {
    pub window: WindowStart,
    pub seq: SeqNum,
    pub expires_at: EventTime,
}

/// What one commit appends to one pane log: its payload parts, written as
/// items keyed by the commit's sequence number (the new state's `applied_seq`).
#[derive(Clone, Debug, PartialEq)]
pub struct PaneAppend {
    pub pane: PaneStart,
    /// The parts hold the whole pane (a compaction), not only this batch's delta.
    pub compacted: bool,
    pub parts: Vec<Vec<u8>>,
    pub expires_at: EventTime,
}

impl PaneAppend {
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }
}

/// A batch's effects, committed atomically (DynamoDB TransactWriteItems):
/// the pane log items, the re-emit markers and the shard state, on two
/// conditions: the stored state's applied sequence is still `expected`, and
/// the closer's announced `closing_through` is still the one the batch was
/// judged against. Either everything lands, or nothing does.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit<'a> {
    pub shard: &'a ShardId,
    pub expected: Option<&'a SeqNum>,
    pub closing_through: Option<EventTime>,
    pub state: &'a ShardState,
    pub appends: Vec<PaneAppend>,
    pub markers: Vec<ReemitMarker>,
}

impl Commit<'_> {
    /// The sequence number the commit's items are keyed by.
    pub fn seq(&self) -> &SeqNum {
        self.state.applied_seq.as_ref().expect("a commit applies at least one record")
    }

    /// Items the transaction writes or checks: log parts, markers, the state and the closer check.
    pub fn items(&self) -> usize {
        self.appends.iter().map(|a| a.parts.len()).sum::<usize>() + self.markers.len() + 2
    }

    pub fn payload_bytes(&self) -> usize {
        self.appends.iter().map(PaneAppend::bytes).sum()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    Committed {
        capacity_units: f64,
    },
    /// Someone else moved the shard state; here is what it is now.
    StateMoved {
        current: Box<ShardState>,
    },
    /// The closer announced a new close since the batch was judged (or wrote
    /// its item concurrently): judge the batch again.
    CloserMoved,
}

/// The durable side of the aggregate function.
pub trait PartialStore: Send + Sync {
    fn load_shard_state(&self, shard: &ShardId) -> impl Future<Output = Result<Option<ShardState>, StoreError>> + Send;

    /// The closer's progress as it concerns `shard`.
    fn load_closer_progress(&self, shard: &ShardId) -> impl Future<Output = Result<CloserProgress, StoreError>> + Send;

    /// The whole of one pane log (consistent read, newest compaction on).
    fn read_pane_log(&self, shard: &ShardId, pane: PaneStart) -> impl Future<Output = Result<Partials, StoreError>> + Send;

    fn commit(&self, commit: &Commit<'_>) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;
}

/// The content of a [`MemoryStore`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryTables {
    /// (pane, shard) -> the log's items, oldest first.
    pub pane_logs: BTreeMap<(PaneStart, ShardId), Vec<LogItem>>,
    pub shard_states: BTreeMap<ShardId, ShardState>,
    pub markers: BTreeMap<(WindowStart, ShardId), SeqNum>,
    pub closer: CloserProgress,
}

impl MemoryTables {
    /// What every pane log holds, merged: comparable whatever the batches were.
    pub fn partials(&self) -> BTreeMap<(PaneStart, ShardId), Partials> {
        self.pane_logs.iter().map(|(id, items)| (id.clone(), read_log(items).expect("the memory store packs its own items"))).collect()
    }
}

/// A pane log's content, read newest first as a DynamoDB query would.
pub fn read_log(items: &[LogItem]) -> Result<Partials, PackError> {
    let mut reader = PaneLogReader::default();
    for item in items.iter().rev() {
        if reader.is_done() {
            break;
        }
        reader.push(item)?;
    }
    Ok(reader.finish())
}

/// The items of one append, keyed by the commit's sequence number.
pub fn log_items(append: &PaneAppend, seq: &SeqNum) -> Vec<LogItem> {
    let parts = append.parts.len() as u16;
    let item = |(part, payload): (usize, &Vec<u8>)| LogItem {
        seq: seq.clone(),
        part: part as u16,
        parts,
        compacted: append.compacted,
        payload: payload.clone(),
    };
    append.parts.iter().enumerate().map(item).collect()
}

/// An in-memory store with the same conditional semantics as the DynamoDB one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<MemoryTables>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    pub fn snapshot(&self) -> MemoryTables {
        self.tables().clone()
    }

    pub fn set_closer_progress(&self, progress: CloserProgress) {
        self.tables().closer = progress;
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, MemoryTables> {
        self.tables.lock().expect("memory store poisoned")
    }
}

impl PartialStore for MemoryStore {
    async fn load_shard_state(&self, shard: &ShardId) -> Result<Option<ShardState>, StoreError> {
        Ok(self.tables().shard_states.get(shard).cloned())
    }

    async fn load_closer_progress(&self, _shard: &ShardId) -> Result<CloserProgress, StoreError> {
        Ok(self.tables().closer)
    }

    async fn read_pane_log(&self, shard: &ShardId, pane: PaneStart) -> Result<Partials, StoreError> {
        let tables = self.tables();
        let items = tables.pane_logs.get(&(pane, shard.clone())).map(Vec::as_slice).unwrap_or_default();
        read_log(items).map_err(|e| StoreError::Rejected(e.to_string()))
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let mut tables = self.tables();
        let current = tables.shard_states.get(commit.shard);
        if current.and_then(|s| s.applied_seq.as_ref()) != commit.expected {
            return Ok(CommitOutcome::StateMoved { current: Box::new(current.cloned().unwrap_or_default()) });
        }
        if tables.closer.closing_through != commit.closing_through {
            return Ok(CommitOutcome::CloserMoved);
        }
        for append in &commit.appends {
            tables.pane_logs.entry((append.pane, commit.shard.clone())).or_default().extend(log_items(append, commit.seq()));
        }
        for marker in &commit.markers {
            tables.markers.insert((marker.window, commit.shard.clone()), marker.seq.clone());
        }
        tables.shard_states.insert(commit.shard.clone(), commit.state.clone());
        Ok(CommitOutcome::Committed { capacity_units: commit.items() as f64 })
    }
}

#[derive(Debug, Default)]
struct Faults {
    operations: usize,
    crash_at: Option<usize>,
    crash_after: Option<usize>,
    crashed: bool,
    failing_operations: BTreeSet<usize>,
}

/// Wraps any store with injected faults, counting each trait call as one
/// operation: [`FaultyStore::crash_at`] makes operation N and every later one
/// fail, as if the function died there (the writes before it stay);
/// [`FaultyStore::crash_after`] lets operation N land and then fails it and
/// every later one, as if the function died waiting for the answer;
/// [`FaultyStore::fail_operation`] makes one operation fail transiently.
#[derive(Debug, Default)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Mutex<Faults>,
}

impl<S> FaultyStore<S> {
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore { inner, faults: Mutex::default() }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().expect("fault state poisoned")
    }

    /// Operation number `n` from now on, and every later one, fails until [`FaultyStore::revive`].
    pub fn crash_at(&self, n: usize) {
        let mut faults = self.faults();
        faults.crash_at = Some(faults.operations + n);
    }

    /// Operation number `n` from now on lands, but its answer is lost: it and every
    /// later one fail until [`FaultyStore::revive`].
    pub fn crash_after(&self, n: usize) {
        let mut faults = self.faults();
        faults.crash_after = Some(faults.operations + n);
    }

    /// Operation number `n` from now on fails once.
    pub fn fail_operation(&self, n: usize) {
        let mut faults = self.faults();
        let at = faults.operations + n;
        faults.failing_operations.insert(at);
    }

    /// Clears every injected fault; tells whether the injected crash happened.
    pub fn revive(&self) -> bool {
        let mut faults = self.faults();
        faults.crash_at = None;
        faults.crash_after = None;
        faults.failing_operations.clear();
        std::mem::take(&mut faults.crashed)
    }

    /// Starts an operation; `Ok(true)` when it must land but lose its answer.
    fn begin_operation(&self) -> Result<bool, StoreError> {
        let mut faults = self.faults();
        let n = faults.operations;
        faults.operations += 1;
        if faults.crash_at.is_some_and(|at| n >= at) {
            faults.crashed = true;
            return Err(StoreError::Unavailable(format!("injected crash at operation {n}")));
        }
        if faults.failing_operations.remove(&n) {
            return Err(StoreError::Throttled(format!("injected failure of operation {n}")));
        }
        if faults.crash_after == Some(n) {
            faults.crashed = true;
            faults.crash_at = Some(n + 1);
            return Ok(true);
        }
        Ok(false)
    }

    async fn operation<T>(&self, run: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let lose_answer = self.begin_operation()?;
        let result = run.await;
        if lose_answer {
            return Err(StoreError::Unavailable("injected crash: the operation landed, its answer was lost".into()));
        }
        result
    }
}

impl<S: PartialStore> PartialStore for FaultyStore<S> {
    async fn load_shard_state(&self, shard: &ShardId) -> Result<Option<ShardState>, StoreError> {
        self.operation(self.inner.load_shard_state(shard)).await
    }

    async fn load_closer_progress(&self, shard: &ShardId) -> Result<CloserProgress, StoreError> {
        self.operation(self.inner.load_closer_progress(shard)).await
    }

    async fn read_pane_log(&self, shard: &ShardId, pane: PaneStart) -> Result<Partials, StoreError> {
        self.operation(self.inner.read_pane_log(shard, pane)).await
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        self.operation(self.inner.commit(commit)).await
    }
}
