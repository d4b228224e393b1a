//! The store behind the exactly-once batch algorithm, as a small trait: the
//! DynamoDB implementation lives at the edge (`taxi-aws`); the in-memory one
//! here serves property tests; [`FaultyStore`] injects crashes into either.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;

use crate::aggregate::{MetricKey, PartialKey, PartialValue};
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

/// Add `value` to one partial, applied only if the item has not yet seen
/// `first_seq` (`attribute_not_exists(seq) OR seq < first_seq`); the item's
/// sequence fence then moves to `last_seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialWrite<'a> {
    pub shard: &'a ShardId,
    pub key: PartialKey,
    pub value: PartialValue,
    pub first_seq: &'a SeqNum,
    pub last_seq: &'a SeqNum,
    pub expires_at: EventTime,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PartialWriteOutcome {
    Applied {
        capacity_units: f64,
    },
    /// The fence refused the write: the item has applied every record up to
    /// `item_seq` already.
    Fenced {
        item_seq: SeqNum,
        capacity_units: f64,
    },
}

/// "Window `window` received late data from `shard`, up to record `seq`: emit it again."
#[derive(Clone, Debug, PartialEq)]
pub struct ReemitMarker<'a> {
    pub window: WindowStart,
    pub shard: &'a ShardId,
    pub seq: &'a SeqNum,
    pub expires_at: EventTime,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SaveOutcome {
    Saved {
        capacity_units: f64,
    },
    /// Someone else moved the shard state; here is what it is now.
    Conflict {
        current: Box<ShardState>,
    },
}

/// The durable side of the aggregate function.
pub trait PartialStore: Send + Sync {
    fn load_shard_state(&self, shard: &ShardId) -> impl Future<Output = Result<Option<ShardState>, StoreError>> + Send;

    /// The closer's progress as it concerns `shard`.
    fn load_closer_progress(&self, shard: &ShardId) -> impl Future<Output = Result<CloserProgress, StoreError>> + Send;

    fn write_partial(&self, write: &PartialWrite<'_>) -> impl Future<Output = Result<PartialWriteOutcome, StoreError>> + Send;

    /// The sequence fence of one partial item (consistent read): how far the
    /// shard's records are applied to it.
    fn partial_seq(&self, shard: &ShardId, key: PartialKey) -> impl Future<Output = Result<Option<SeqNum>, StoreError>> + Send;

    /// Idempotent; returns the capacity consumed.
    fn put_reemit_marker(&self, marker: &ReemitMarker<'_>) -> impl Future<Output = Result<f64, StoreError>> + Send;

    /// Saves `state` if the stored state's applied sequence is still `expected`.
    fn save_shard_state(
        &self,
        shard: &ShardId,
        state: &ShardState,
        expected: Option<&SeqNum>,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;
}

/// A partial as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPartial {
    pub value: PartialValue,
    pub seq: SeqNum,
    pub expires_at: EventTime,
}

/// The content of a [`MemoryStore`], comparable as a whole.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryTables {
    pub partials: BTreeMap<(PaneStart, ShardId, MetricKey), StoredPartial>,
    pub shard_states: BTreeMap<ShardId, ShardState>,
    pub markers: BTreeMap<(WindowStart, ShardId), SeqNum>,
    pub closer: CloserProgress,
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

    async fn write_partial(&self, write: &PartialWrite<'_>) -> Result<PartialWriteOutcome, StoreError> {
        let mut tables = self.tables();
        let id = (write.key.pane, write.shard.clone(), write.key.metric);
        // The DynamoDB condition: attribute_not_exists(seq) OR seq < :first.
        match tables.partials.get_mut(&id) {
            Some(item) if item.seq >= *write.first_seq => {
                return Ok(PartialWriteOutcome::Fenced { item_seq: item.seq.clone(), capacity_units: 1.0 });
            }
            Some(item) => {
                item.value.add(write.value);
                item.seq = write.last_seq.clone();
                item.expires_at = write.expires_at;
            }
            None => {
                let item = StoredPartial { value: write.value, seq: write.last_seq.clone(), expires_at: write.expires_at };
                tables.partials.insert(id, item);
            }
        }
        Ok(PartialWriteOutcome::Applied { capacity_units: 1.0 })
    }

    async fn partial_seq(&self, shard: &ShardId, key: PartialKey) -> Result<Option<SeqNum>, StoreError> {
        Ok(self.tables().partials.get(&(key.pane, shard.clone(), key.metric)).map(|item| item.seq.clone()))
    }

    async fn put_reemit_marker(&self, marker: &ReemitMarker<'_>) -> Result<f64, StoreError> {
        let mut tables = self.tables();
        tables.markers.insert((marker.window, marker.shard.clone()), marker.seq.clone());
        Ok(1.0)
    }

    async fn save_shard_state(&self, shard: &ShardId, state: &ShardState, expected: Option<&SeqNum>) -> Result<SaveOutcome, StoreError> {
        let mut tables = self.tables();
        let current = tables.shard_states.get(shard);
        if current.and_then(|s| s.applied_seq.as_ref()) != expected {
            return Ok(SaveOutcome::Conflict { current: Box::new(current.cloned().unwrap_or_default()) });
        }
        tables.shard_states.insert(shard.clone(), state.clone());
        Ok(SaveOutcome::Saved { capacity_units: 1.0 })
    }
}

#[derive(Debug, Default)]
struct Faults {
    operations: usize,
    crash_at: Option<usize>,
    crashed: bool,
    failing_operations: BTreeSet<usize>,
}

/// Wraps any store with injected faults, counting each trait call as one
/// operation: [`FaultyStore::crash_at`] makes operation N and every later one
/// fail, as if the function died there (the writes before it stay);
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
        faults.failing_operations.clear();
        std::mem::take(&mut faults.crashed)
    }

    fn begin_operation(&self) -> Result<(), StoreError> {
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
        Ok(())
    }
}

impl<S: PartialStore> PartialStore for FaultyStore<S> {
    async fn load_shard_state(&self, shard: &ShardId) -> Result<Option<ShardState>, StoreError> {
        self.begin_operation()?;
        self.inner.load_shard_state(shard).await
    }

    async fn load_closer_progress(&self, shard: &ShardId) -> Result<CloserProgress, StoreError> {
        self.begin_operation()?;
        self.inner.load_closer_progress(shard).await
    }

    async fn write_partial(&self, write: &PartialWrite<'_>) -> Result<PartialWriteOutcome, StoreError> {
        self.begin_operation()?;
        self.inner.write_partial(write).await
    }

    async fn partial_seq(&self, shard: &ShardId, key: PartialKey) -> Result<Option<SeqNum>, StoreError> {
        self.begin_operation()?;
        self.inner.partial_seq(shard, key).await
    }

    async fn put_reemit_marker(&self, marker: &ReemitMarker<'_>) -> Result<f64, StoreError> {
        self.begin_operation()?;
        self.inner.put_reemit_marker(marker).await
    }

    async fn save_shard_state(&self, shard: &ShardId, state: &ShardState, expected: Option<&SeqNum>) -> Result<SaveOutcome, StoreError> {
        self.begin_operation()?;
        self.inner.save_shard_state(shard, state, expected).await
    }
}
