//! The close-windows algorithm over small traits for its three edges: the
//! shard set (Kinesis), the state (DynamoDB) and the documents' sink
//! (Elasticsearch / OpenSearch).
//!
//! One run:
//! 1. take the lease (normally one closer at a time; correctness does not
//!    depend on it, since every document has a deterministic `_id` and
//!    `closed_through` only moves forward, conditionally);
//! 2. list the shards, read their states and the closer state, and decide the
//!    global watermark (see [`crate::closing::global_watermark`]);
//! 3. re-emit the windows that late data marked, then close every window the
//!    watermark has passed, oldest first: read its partials over every shard,
//!    merge, build the documents, index them, and only then move
//!    `closed_through` past it;
//! 4. stop before the deadline, keeping what is done.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::aggregate::{MetricKey, PartialValue};
use crate::closing::{
    closable_through, exclusions, global_watermark, merge, quiet_advance, windows_to_close, GlobalWatermark, Idleness, QuietAdvance,
};
use crate::documents::{window_documents, Document, DocumentSettings};
use crate::seq::SeqNum;
use crate::shard::{ShardId, ShardState, StreamShard};
use crate::store::StoreError;
use crate::time::{EventTime, WallTime};
use crate::window::{PaneStart, WindowSpec, WindowStart};

/// Partial reads in flight while closing one window.
const READ_CONCURRENCY: usize = 8;

/// The closer's own durable state (item `C` / `STATE`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloserState {
    pub closed_through: Option<EventTime>,
    /// What the closer announced it is closing (see [`CloserStore::announce_closing`]).
    pub closing_through: Option<EventTime>,
    pub watermark: Option<EventTime>,
    pub first_seen: BTreeMap<ShardId, WallTime>,
    /// Every shard the closer has ever seen listed: a parent past the stream's
    /// retention drops out of `ListShards`, but its partials still feed the
    /// re-emission of its windows.
    pub known_shards: BTreeSet<ShardId>,
    /// Bounded mode: shards judged idle, each with the `closed_through` at the
    /// time (see [`crate::closing::exclusions`]).
    pub excluded: BTreeMap<ShardId, EventTime>,
}

/// A re-emit marker as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMarker {
    pub window: WindowStart,
    pub shard: ShardId,
    pub seq: SeqNum,
}

/// A document the sink refused for good, kept so that nothing disappears.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub document: Document,
    pub status: u16,
    pub reason: String,
}

/// The closer's view of the DynamoDB table.
pub trait CloserStore: Send + Sync {
    fn load_shard_states(&self, shards: &[ShardId]) -> impl Future<Output = Result<BTreeMap<ShardId, ShardState>, StoreError>> + Send;
    fn load_closer_state(&self) -> impl Future<Output = Result<CloserState, StoreError>> + Send;
    /// Takes or renews the lease; false if another owner holds it.
    fn acquire_lease(&self, owner: &str, now: WallTime, until: WallTime) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn release_lease(&self, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn read_partials(
        &self,
        pane: PaneStart,
        shard: &ShardId,
    ) -> impl Future<Output = Result<Vec<(MetricKey, PartialValue)>, StoreError>> + Send;
    fn list_reemit_markers(&self) -> impl Future<Output = Result<Vec<StoredMarker>, StoreError>> + Send;
    /// Deletes the marker unless late data has touched it again since it was read.
    fn delete_reemit_marker(&self, marker: &StoredMarker) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Moves `closing_through` forward (never back), before the partials of the
    /// windows ending at or before it are read: the first phase of a close.
    fn announce_closing(&self, closing_through: EventTime) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Moves `closed_through` forward (never back) and records the watermark.
    fn advance_closed_through(
        &self,
        closed_through: EventTime,
        watermark: EventTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn save_excluded(&self, excluded: &BTreeMap<ShardId, EventTime>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Adds shards to `known_shards` (a set union, idempotent).
    fn remember_shards(&self, shards: &[ShardId]) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn save_first_seen(&self, first_seen: &BTreeMap<ShardId, WallTime>) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn put_dead_letters(&self, letters: &[DeadLetter], now: WallTime) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The stream's shard set.
pub trait ShardSource: Send + Sync {
    fn list_shards(&self) -> impl Future<Output = Result<Vec<StreamShard>, SourceError>> + Send;
    /// Whether the shard holds no record after `applied` (no record at all if
    /// `None`): nothing unread or unapplied, so a silent shard is idle, not stuck.
    fn caught_up(&self, shard: &ShardId, applied: Option<&SeqNum>) -> impl Future<Output = Result<bool, SourceError>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listing the shards failed: {0}")]
pub struct SourceError(pub String);

/// What indexing one window's documents achieved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexReport {
    pub indexed: u64,
    /// Documents sent again after a 429 / 5xx.
    pub retried: u64,
    pub rejected: Vec<DeadLetter>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The endpoint is down or kept refusing until the time ran out: the
    /// window stays open and is tried again on the next run.
    #[error("the search endpoint is unavailable (the window stays open): {0}")]
    Unavailable(String),
    /// Authentication or configuration: retrying will not help.
    #[error("the search endpoint refused the requests (fix the configuration): {0}")]
    Refused(String),
}

/// Where the documents go.
pub trait DocumentSink: Send + Sync {
    /// Indexes all the documents, retrying what can be retried until `deadline`.
    fn index(&self, documents: &[Document], deadline: WallTime) -> impl Future<Output = Result<IndexReport, SinkError>> + Send;
}

/// The panes one pass has read, each merged over the shards it was read from;
/// a pane read from every shard also serves a read from some of them.
#[derive(Default)]
struct PaneReads {
    merged: BTreeMap<PaneStart, (bool, BTreeMap<MetricKey, PartialValue>)>,
}

impl PaneReads {
    fn get(&self, pane: PaneStart, every_shard: bool) -> Option<&BTreeMap<MetricKey, PartialValue>> {
        self.merged.get(&pane).filter(|(all, _)| *all || !every_shard).map(|(_, merged)| merged)
    }

    fn insert(&mut self, pane: PaneStart, every_shard: bool, merged: BTreeMap<MetricKey, PartialValue>) {
        self.merged.insert(pane, (every_shard, merged));
    }
}

/// The closer's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CloserSettings {
    pub window: WindowSpec,
    pub documents: DocumentSettings,
    /// When a silent shard stops holding windows back.
    pub idleness: Idleness,
    /// Time kept free before the deadline: no window is started after it.
    pub safety_margin_ms: i64,
    pub owner: String,
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloseReport {
    pub lease_held_elsewhere: bool,
    pub global: Option<GlobalWatermark>,
    pub closed_through: Option<EventTime>,
    pub windows_closed: u64,
    pub windows_reemitted: u64,
    pub documents_indexed: u64,
    pub documents_retried: u64,
    pub dead_letters: u64,
    /// Windows the watermark had passed but that stay open for now.
    pub windows_left_open: u64,
    pub error: Option<String>,
}

pub struct Closer<St, Sh, Si> {
    pub store: St,
    pub shards: Sh,
    pub sink: Si,
    pub settings: CloserSettings,
}

impl<St: CloserStore, Sh: ShardSource, Si: DocumentSink> Closer<St, Sh, Si> {
    /// One run; `clock` gives the wall time (taken again before each window).
    pub async fn run_once(&self, clock: &(dyn Fn() -> WallTime + Sync), deadline: WallTime) -> CloseReport {
        let mut report = CloseReport::default();
        if let Err(e) = self.run(clock, deadline, &mut report).await {
            tracing::error!("closing windows stopped: {e}");
            report.error = Some(e);
        }
        if !report.lease_held_elsewhere {
            if let Err(e) = self.store.release_lease(&self.settings.owner).await {
                tracing::warn!("releasing the lease failed (it expires by itself): {e}");
            }
        }
        report
    }

    async fn run(&self, clock: &(dyn Fn() -> WallTime + Sync), deadline: WallTime, report: &mut CloseReport) -> Result<(), String> {
        let s = &self.settings;
        let now = clock();
        // The lease lasts until this run's deadline, so a closer that dies frees it by then.
        if !self.store.acquire_lease(&s.owner, now, deadline).await.map_err(|e| e.to_string())? {
            report.lease_held_elsewhere = true;
            return Ok(());
        }
        // Every shard Kinesis still lists, open or closed, and every shard it ever
        // listed: a window's partials are read from all of them.
        let shards = self.shards.list_shards().await.map_err(|e| e.to_string())?;
        let closer = self.store.load_closer_state().await.map_err(|e| e.to_string())?;
        let listed: BTreeSet<ShardId> = shards.iter().map(|s| s.id.clone()).collect();
        let new: Vec<ShardId> = listed.difference(&closer.known_shards).cloned().collect();
        if !new.is_empty() {
            self.store.remember_shards(&new).await.map_err(|e| e.to_string())?;
        }
        let shard_ids: Vec<ShardId> = listed.union(&closer.known_shards).cloned().collect();
        let states = self.store.load_shard_states(&shard_ids).await.map_err(|e| e.to_string())?;
        let mut global = global_watermark(&shards, &states, &closer.first_seen, now, s.idleness);
        // A quiet stream (bounded mode): worth asking Kinesis only when it would close more.
        let gain = |q: &QuietAdvance| {
            let through = closable_through(&s.window, q.watermark);
            closer.closed_through.is_none_or(|c| through > c) && global.watermark.is_none_or(|w| through > closable_through(&s.window, w))
        };
        if let Some(quiet) = quiet_advance(&global, &states, now, s.idleness).filter(gain) {
            if self.all_caught_up(&quiet).await {
                global = global.with_quiet_advance(&quiet);
            }
        }
        if global.first_seen != closer.first_seen {
            self.store.save_first_seen(&global.first_seen).await.map_err(|e| e.to_string())?;
        }
        // Recorded before any window closes without them.
        let excluded = exclusions(&global, &closer.excluded, closer.closed_through);
        if excluded != closer.excluded {
            self.store.save_excluded(&excluded).await.map_err(|e| e.to_string())?;
        }
        report.closed_through = closer.closed_through;
        let watermark = global.watermark;
        let verdicts: Vec<String> = global.verdicts.iter().map(|(id, v)| format!("{id}={}", v.name())).collect();
        tracing::info!(watermark = ?watermark.map(EventTime::to_rfc3339), closed_through = ?closer.closed_through.map(EventTime::to_rfc3339), shards = %verdicts.join(","), "global watermark");
        report.global = Some(global);

        // Phase one: announce what this pass closes before reading anything, so an
        // aggregate function whose partial lands after a read re-emits the window.
        let through = watermark.map(|w| closable_through(&s.window, w));
        if let Some(through) =
            through.filter(|t| closer.closing_through.is_none_or(|c| *t > c) && closer.closed_through.is_none_or(|c| *t > c))
        {
            self.store.announce_closing(through).await.map_err(|e| e.to_string())?;
        }
        // Every read of this pass comes after the announcement, so a pane read once serves every window of it.
        let mut panes = PaneReads::default();

        // Late data first: those windows are older than any still open.
        let markers = self.store.list_reemit_markers().await.map_err(|e| e.to_string())?;
        let mut by_window: BTreeMap<WindowStart, Vec<StoredMarker>> = BTreeMap::new();
        for marker in markers {
            by_window.entry(marker.window).or_default().push(marker);
        }
        for (window, markers) in by_window {
            if self.out_of_time(clock, deadline) {
                return Ok(());
            }
            // Re-emission reads every shard: open panes are pruned once their windows are closed.
            self.emit_window(window, &|_| shard_ids.clone(), true, &mut panes, clock, deadline, report).await?;
            for marker in &markers {
                self.store.delete_reemit_marker(marker).await.map_err(|e| e.to_string())?;
            }
            report.windows_reemitted += 1;
        }

        let (Some(watermark), Some(through)) = (watermark, through) else { return Ok(()) };
        let open_panes = states.values().flat_map(|state| state.open_panes.iter().copied());
        let windows = windows_to_close(&s.window, open_panes, closer.closed_through, watermark);
        // A pane is read from the shards whose state lists it: a partial written
        // after these states were read comes with a second read of the closer's
        // progress, which sees the announcement and re-emits the window.
        let listing = |pane: PaneStart| -> Vec<ShardId> {
            states.iter().filter(|(_, state)| state.open_panes.contains(&pane)).map(|(id, _)| id.clone()).collect()
        };
        for (i, window) in windows.iter().enumerate() {
            if self.out_of_time(clock, deadline) {
                report.windows_left_open = (windows.len() - i) as u64;
                return Ok(());
            }
            if let Err(e) = self.emit_window(*window, &listing, false, &mut panes, clock, deadline, report).await {
                report.windows_left_open = (windows.len() - i) as u64;
                return Err(e);
            }
            let end = s.window.window_end(*window);
            self.store.advance_closed_through(end, watermark).await.map_err(|e| e.to_string())?;
            report.closed_through = Some(end);
            report.windows_closed += 1;
        }
        // Every window with data up to the watermark is closed; empty ones need nothing.
        if closer.closed_through.is_none_or(|c| through > c) {
            self.store.advance_closed_through(through, watermark).await.map_err(|e| e.to_string())?;
            report.closed_through = Some(through);
        }
        Ok(())
    }

    /// Every shard of `quiet` caught up; an error counts as not (it holds back, as a stuck shard would).
    async fn all_caught_up(&self, quiet: &QuietAdvance) -> bool {
        for (shard, applied) in &quiet.shards {
            match self.shards.caught_up(shard, applied.as_ref()).await {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    tracing::warn!("{e}: the quiet stream's watermark waits");
                    return false;
                }
            }
        }
        true
    }

    fn out_of_time(&self, clock: &(dyn Fn() -> WallTime + Sync), deadline: WallTime) -> bool {
        clock().0 + self.settings.safety_margin_ms >= deadline.0
    }

    /// Reads, merges, builds and indexes one window; dead-letters what the sink refused for good.
    /// `shards_of` names the shards each pane is read from (`every_shard` if that is all of them).
    #[allow(clippy::too_many_arguments)]
    async fn emit_window(
        &self,
        window: WindowStart,
        shards_of: &(dyn Fn(PaneStart) -> Vec<ShardId> + Sync),
        every_shard: bool,
        panes: &mut PaneReads,
        clock: &(dyn Fn() -> WallTime + Sync),
        deadline: WallTime,
        report: &mut CloseReport,
    ) -> Result<(), String> {
        let s = &self.settings;
        for pane in s.window.panes_of(window) {
            if panes.get(pane, every_shard).is_some() {
                continue;
            }
            let shards = shards_of(pane);
            let partials: Vec<Vec<(MetricKey, PartialValue)>> =
                stream::iter(shards.iter().map(|shard| self.store.read_partials(pane, shard)))
                    .buffer_unordered(READ_CONCURRENCY)
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
            panes.insert(pane, every_shard, merge(partials.into_iter().flatten()));
        }
        let merged = merge(s.window.panes_of(window).flat_map(|pane| {
            let pane = panes.get(pane, every_shard).expect("read above");
            pane.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        }));
        let documents = window_documents(&s.window, window, &merged, &s.documents);
        let indexed = self.sink.index(&documents, WallTime(deadline.0 - s.safety_margin_ms / 2)).await.map_err(|e| e.to_string())?;
        if !indexed.rejected.is_empty() {
            for letter in &indexed.rejected {
                tracing::error!(index = %letter.document.index, id = %letter.document.id, status = letter.status, reason = %letter.reason, "document rejected; kept as a dead letter");
            }
            self.store.put_dead_letters(&indexed.rejected, clock()).await.map_err(|e| e.to_string())?;
        }
        tracing::info!(window = %EventTime(window.0).to_rfc3339(), documents = documents.len(), retried = indexed.retried, rejected = indexed.rejected.len(), "window emitted");
        report.documents_indexed += indexed.indexed;
        report.documents_retried += indexed.retried;
        report.dead_letters += indexed.rejected.len() as u64;
        Ok(())
    }
}
