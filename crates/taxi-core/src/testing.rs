//! Test scaffolding, compiled only with the `testing` feature: an in-memory
//! [`PartialStore`] with the DynamoDB one's conditional semantics, for the
//! property tests, and [`FaultyStore`], which injects crashes into either.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;

use crate::pack::{LogRef, Partials};
use crate::seq::SeqNum;
use crate::shard::{ShardId, ShardState};
use crate::store::{merge_pane, Commit, CommitOutcome, LogWrite, PartialStore, StoreError};
use crate::time::EventTime;
use crate::watermark::CloserProgress;
use crate::window::{PaneStart, WindowStart};

/// The content of a [`MemoryStore`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryTables {
    /// (shard, digest) -> the batch item's parts.
    pub batch_items: BTreeMap<(ShardId, u128), Vec<Vec<u8>>>,
    /// (pane, shard) -> seals by the sequence number that sealed them.
    pub seals: BTreeMap<(PaneStart, ShardId), BTreeMap<SeqNum, Vec<LogRef>>>,
    pub shard_states: BTreeMap<ShardId, ShardState>,
    pub markers: BTreeMap<(WindowStart, ShardId), SeqNum>,
    pub closer: CloserProgress,
    /// Shards registered by their first commit.
    pub registered: BTreeSet<ShardId>,
}

impl MemoryTables {
    /// Every pane's committed partials per shard (open, pending a seal and
    /// sealed), merged: comparable whatever the batches were.
    pub fn partials(&self) -> BTreeMap<(PaneStart, ShardId), Partials> {
        let mut refs: BTreeMap<(PaneStart, ShardId), BTreeSet<LogRef>> = BTreeMap::new();
        for (shard, state) in &self.shard_states {
            for pane in state.open_panes.keys().chain(state.sealing.keys()) {
                refs.entry((*pane, shard.clone())).or_default().extend(state.refs_of(*pane));
            }
        }
        for (id, seals) in &self.seals {
            refs.entry(id.clone()).or_default().extend(seals.values().flatten());
        }
        refs.into_iter()
            .map(|((pane, shard), refs)| {
                let refs: Vec<LogRef> = refs.into_iter().collect();
                let partials = merge_pane(&refs, pane, |r| self.batch_items.get(&(shard.clone(), r.digest)).map(Vec::as_slice))
                    .expect("the memory store keeps every item");
                ((pane, shard), partials)
            })
            .filter(|(_, partials)| !partials.is_empty())
            .collect()
    }
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

    /// What the closer's stamp does to a shard state (see `CloserStore::stamp_shard_states`).
    pub fn stamp(&self, shard: &ShardId, closing_through: EventTime) {
        if let Some(state) = self.tables().shard_states.get_mut(shard) {
            state.closing_through = state.closing_through.max(Some(closing_through));
        }
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

    async fn read_pane(&self, shard: &ShardId, pane: PaneStart, refs: &[LogRef]) -> Result<Partials, StoreError> {
        let tables = self.tables();
        merge_pane(refs, pane, |r| tables.batch_items.get(&(shard.clone(), r.digest)).map(Vec::as_slice))
    }

    async fn write_log(&self, shard: &ShardId, write: &LogWrite) -> Result<(), StoreError> {
        let mut tables = self.tables();
        if let Some(item) = &write.item {
            tables.batch_items.insert((shard.clone(), item.log_ref.digest), item.parts.clone());
        }
        for marker in &write.markers {
            tables.markers.insert((marker.window, shard.clone()), marker.seq.clone());
        }
        for seal in &write.seals {
            tables.seals.entry((seal.pane, shard.clone())).or_default().insert(seal.sealed_at.clone(), seal.refs.clone());
        }
        Ok(())
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let mut tables = self.tables();
        let current = tables.shard_states.get(commit.shard);
        let moved = match current {
            None => commit.expected.is_some(),
            Some(current) => current.applied_seq.as_ref() != commit.expected || current.closing_through != commit.state.closing_through,
        };
        if moved {
            return Ok(CommitOutcome::StateMoved { current: Box::new(current.cloned().unwrap_or_default()) });
        }
        if commit.expected.is_none() {
            if tables.closer.closing_through != commit.state.closing_through {
                return Ok(CommitOutcome::CloserMoved);
            }
            tables.registered.insert(commit.shard.clone());
        }
        tables.shard_states.insert(commit.shard.clone(), commit.state.clone());
        Ok(CommitOutcome::Committed { capacity_units: 1.0 })
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

    async fn read_pane(&self, shard: &ShardId, pane: PaneStart, refs: &[LogRef]) -> Result<Partials, StoreError> {
        self.operation(self.inner.read_pane(shard, pane, refs)).await
    }

    async fn write_log(&self, shard: &ShardId, write: &LogWrite) -> Result<(), StoreError> {
        self.operation(self.inner.write_log(shard, write)).await
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        self.operation(self.inner.commit(commit)).await
    }
}
