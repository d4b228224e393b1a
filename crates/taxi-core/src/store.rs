//! The store behind the exactly-once batch algorithm, as a small trait: the
//! DynamoDB implementation lives at the edge (`taxi-aws`); an in-memory one
//! and a fault-injecting wrapper serve the tests (`crate::testing`, behind
//! the `testing` feature).
//!
//! A commit is two steps: [`PartialStore::write_log`] (plain puts of the
//! batch item, markers and seals), then [`PartialStore::commit`] (the
//! conditional write of the shard state that refers to the item). Only a
//! landed state makes the item count, so the commit is atomic without a
//! transaction (which DynamoDB bills double).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use crate::pack::{merge_into, pane_partials, BatchItem, LogRef, Partials};
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

/// A pane pruned from a shard state, sealed: the items holding its partials,
/// written by the commit after the one that pruned it (`sealed_at`, the
/// applied sequence of the state that listed it), so that any attempt writes
/// the same item under the same key.
#[derive(Clone, Debug, PartialEq)]
pub struct Seal {
    pub pane: PaneStart,
    pub sealed_at: SeqNum,
    pub refs: Vec<LogRef>,
    pub expires_at: EventTime,
}

/// What a commit writes before its shard state, with plain puts: its batch
/// item, its re-emit markers and the seals of the panes the previous commit
/// pruned. An attempt that dies after these leaves items no committed state
/// refers to (never read; TTL deletes them) and markers that at worst make
/// the closer emit a window again with the same documents.
#[derive(Clone, Debug, PartialEq)]
pub struct LogWrite {
    pub item: Option<BatchItem>,
    pub item_expires_at: EventTime,
    pub markers: Vec<ReemitMarker>,
    pub seals: Vec<Seal>,
}

/// A batch's shard state, written on the condition that the stored state is
/// still the one the batch was judged on: the same applied sequence and the
/// same `closing_through` stamp (`state.closing_through`, carried
/// unchanged). A shard's first commit has no stored state to carry a stamp,
/// so it checks the closer's own `closing_through` instead, and registers the
/// shard with the closer, in one transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit<'a> {
    pub shard: &'a ShardId,
    pub expected: Option<&'a SeqNum>,
    pub state: &'a ShardState,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    Committed {
        capacity_units: f64,
    },
    /// Someone else moved the shard state (a writer, or the closer's stamp); here is what it is now.
    StateMoved {
        current: Box<ShardState>,
    },
    /// A first commit: the closer announced a new close since the batch was judged.
    CloserMoved,
}

/// The durable side of the aggregate function.
pub trait PartialStore: Send + Sync {
    fn load_shard_state(&self, shard: &ShardId) -> impl Future<Output = Result<Option<ShardState>, StoreError>> + Send;

    /// The closer's progress as it concerns `shard`.
    fn load_closer_progress(&self, shard: &ShardId) -> impl Future<Output = Result<CloserProgress, StoreError>> + Send;

    /// One pane's partials from the items `refs` names (consistent reads).
    fn read_pane(&self, shard: &ShardId, pane: PaneStart, refs: &[LogRef]) -> impl Future<Output = Result<Partials, StoreError>> + Send;

    fn write_log(&self, shard: &ShardId, write: &LogWrite) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn commit(&self, commit: &Commit<'_>) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;
}

/// One pane's partials merged from the items `refs` names, `parts_of`
/// fetching an item's parts (`None` if it is not there). An item that is
/// gone was deleted by TTL, as DynamoDB's TTL would have deleted any
/// partial of a window that waited longer than the retention; it is logged
/// and left out (the closer refuses such windows, see [`crate::expiry`]).
pub fn merge_pane<'a>(
    refs: &[LogRef],
    pane: PaneStart,
    parts_of: impl Fn(&LogRef) -> Option<&'a [Vec<u8>]>,
) -> Result<Partials, StoreError> {
    let mut partials = Partials::new();
    for log_ref in refs {
        let Some(parts) = parts_of(log_ref) else {
            tracing::error!(item = %log_ref.digest_hex(), pane = pane.0, "a batch item the shard state refers to is gone (deleted by TTL after RETENTION_HOURS?); its partials are left out");
            continue;
        };
        merge_into(&mut partials, pane_partials(parts, pane).map_err(|e| StoreError::Rejected(e.to_string()))?);
    }
    Ok(partials)
}

/// What a re-emission reads of one pane: per shard, the items its state
/// lists and those its seals list, each once.
pub fn with_seals(
    sources: &[(ShardId, Vec<LogRef>)],
    seals: impl IntoIterator<Item = (ShardId, Vec<LogRef>)>,
) -> Vec<(ShardId, Vec<LogRef>)> {
    let mut by_shard: BTreeMap<ShardId, BTreeSet<LogRef>> = BTreeMap::new();
    for (shard, refs) in sources.iter().cloned().chain(seals) {
        by_shard.entry(shard).or_default().extend(refs);
    }
    by_shard.into_iter().map(|(shard, refs)| (shard, refs.into_iter().collect())).collect()
}
