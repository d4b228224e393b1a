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
//! 4. stop before the deadline, keeping what is done: a window's documents
//!    are indexed in chunks, and the progress within the window is durable
//!    ([`CloseCursor`]), so a window too big for one invocation closes over
//!    several;
//! 5. never close (or re-emit) a window whose partials TTL may have deleted
//!    ([`crate::expiry`]): refuse it, count it, and say what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use crate::aggregate::{MetricKey, PartialValue};
use crate::closing::{
    closable_through, exclusions, global_watermark, merge, quiet_advance, windows_to_close, GlobalWatermark, Idleness, QuietAdvance,
};
use crate::documents::{window_documents, Document, DocumentSettings};
use crate::expiry::PaneObservation;
use crate::pack::{LogRef, Partials};
use crate::seq::SeqNum;
use crate::shard::{ShardId, ShardState, StreamShard};
use crate::store::StoreError;
use crate::time::{EventTime, WallTime};
use crate::window::{PaneStart, WindowSpec, WindowStart};

/// How old the recorded observation of open panes may get before a pass that
/// lists nothing new records it again.
const OBSERVATION_REFRESH_MS: i64 = 10 * 60_000;

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
    /// How far the close of a window too big for one invocation has come.
    pub close_cursor: Option<CloseCursor>,
    /// When each open pane was first written, at the earliest (recorded with
    /// each announcement; see [`crate::expiry`]).
    pub observation: PaneObservation,
}

/// Durable progress within one window's emission: every document of
/// `window` up to `indexed_through`, in (index, `_id`) order, is indexed from
/// partials read after the close was announced, while the window's re-emit
/// markers were exactly `markers`.
///
/// A later pass may skip those documents: a partial of the window that lands
/// after that read leaves a re-emit marker behind it (the two-phase
/// protocol), so either the markers differ (the emission starts over) or the
/// marker lands later and the window is emitted again in full. Documents are
/// idempotent by `_id` and versioned, so sending one again is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseCursor {
    pub window: WindowStart,
    pub markers: BTreeMap<ShardId, SeqNum>,
    /// `(index, _id)` of the last document indexed.
    pub indexed_through: (String, String),
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
    /// `pane`'s partials over the shards: from the items `sources` names per
    /// shard (what each shard state lists for it) and, with `sealed`, from
    /// the pane's seals too (a pane is pruned from a state once its windows
    /// were closed).
    fn read_pane(
        &self,
        pane: PaneStart,
        sources: &[(ShardId, Vec<LogRef>)],
        sealed: bool,
    ) -> impl Future<Output = Result<Partials, StoreError>> + Send;
    fn list_reemit_markers(&self) -> impl Future<Output = Result<Vec<StoredMarker>, StoreError>> + Send;
    /// Deletes the marker unless late data has touched it again since it was read.
    fn delete_reemit_marker(&self, marker: &StoredMarker) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Moves `closing_through` forward (never back), before the partials of the
    /// windows ending at or before it are read: the first phase of a close.
    /// Returns `known_shards` as it is after the announcement: a shard's
    /// first commit registers it there, unless the announcement came first.
    fn announce_closing(&self, closing_through: EventTime) -> impl Future<Output = Result<BTreeSet<ShardId>, StoreError>> + Send;
    /// Stamps `closing_through` into each of these shards' states (never
    /// back; a shard without a state is left out) and returns the states as
    /// they are after it: every later commit was judged against the stamp,
    /// since a commit is refused if the stamp moved.
    fn stamp_shard_states(
        &self,
        shards: &[ShardId],
        closing_through: EventTime,
    ) -> impl Future<Output = Result<BTreeMap<ShardId, ShardState>, StoreError>> + Send;
    /// Records the pass's observation of the open panes (when each was first
    /// listed), unless a later one is recorded already.
    fn save_observation(&self, observation: &PaneObservation) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records (or, with `None`, clears) the progress within a window's emission.
    fn save_close_cursor(&self, cursor: Option<&CloseCursor>) -> impl Future<Output = Result<(), StoreError>> + Send;
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

/// The stream could not answer: the pass stops, and the next one asks again.
#[derive(Debug, thiserror::Error)]
#[error("asking the stream failed ({request}): {source}")]
pub struct SourceError {
    /// The request that failed, such as `ListShards`.
    pub request: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

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
    /// Documents indexed between two records of a window's progress
    /// (`CLOSE_CHUNK_DOCUMENTS`): one chunk must fit well within an invocation.
    pub chunk_documents: usize,
    /// The partials' retention (`RETENTION_HOURS`), as the aggregate function sets TTL.
    pub retention_s: i64,
    /// `CLOSE_EXPIRED_WINDOWS`: close a window whose partials may have
    /// expired anyway (after the operator re-indexed it from the source).
    pub close_expired: bool,
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
    /// Windows whose emission went on from a previous invocation's progress.
    pub windows_resumed: u64,
    /// Windows refused because their partials may have expired (each pass counts them again).
    pub refused_expired: Vec<WindowStart>,
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
        let Decision { mut shard_ids, states, global, excluded } =
            decide(&self.store, &self.shards, &shards, &closer, &s.window, s.idleness, now).await.map_err(|e| e.to_string())?;
        if global.first_seen != closer.first_seen {
            self.store.save_first_seen(&global.first_seen).await.map_err(|e| e.to_string())?;
        }
        // Recorded before any window closes without them.
        if excluded != closer.excluded {
            self.store.save_excluded(&excluded).await.map_err(|e| e.to_string())?;
        }
        report.closed_through = closer.closed_through;
        let watermark = global.watermark;
        let verdicts: Vec<String> = global.verdicts.iter().map(|(id, v)| format!("{id}={}", v.name())).collect();
        tracing::info!(watermark = ?watermark.map(EventTime::to_rfc3339), closed_through = ?closer.closed_through.map(EventTime::to_rfc3339), shards = %verdicts.join(","), "global watermark");
        report.global = Some(global);

        // Phase one: announce what this pass closes before reading anything, and
        // stamp it into every shard state; an aggregate commit judged against an
        // older announcement is refused. Stamped again on every pass that
        // closes, so a pass that died between the two phases is made whole.
        let through = watermark.map(|w| closable_through(&s.window, w));
        let states = match through.filter(|t| closer.closed_through.is_none_or(|c| *t > c)) {
            Some(through) => {
                let known = if closer.closing_through.is_none_or(|c| through > c) {
                    self.store.announce_closing(through).await.map_err(|e| e.to_string())?
                } else {
                    closer.known_shards.clone()
                };
                shard_ids = listed.union(&known).cloned().collect();
                let announced = closer.closing_through.map_or(through, |c| c.max(through));
                // A state read with the stamp already in it was read after every
                // commit judged without it; a shard neither known nor with a state
                // has its first commit still to come, checked against the
                // announcement. Only the others need a stamp (and a read).
                let unstamped: Vec<ShardId> = shard_ids
                    .iter()
                    .filter(|id| states.get(*id).map_or(known.contains(*id), |state| state.closing_through < Some(announced)))
                    .cloned()
                    .collect();
                let mut stamped: BTreeMap<ShardId, ShardState> =
                    states.into_iter().filter(|(_, state)| state.closing_through >= Some(announced)).collect();
                stamped.extend(self.store.stamp_shard_states(&unstamped, announced).await.map_err(|e| e.to_string())?);
                stamped
            }
            None => states,
        };
        // Late data first: those windows are older than any still open.
        let markers = self.store.list_reemit_markers().await.map_err(|e| e.to_string())?;
        // Read after the markers: a marker is written before its commit's state,
        // so a marker counts as served only by states that include its commit.
        let states = if markers.is_empty() { states } else { self.store.load_shard_states(&shard_ids).await.map_err(|e| e.to_string())? };

        // When each pane was first written, as far as this pass can tell: the panes the
        // states list, and those of the windows marked for late data (a late commit's
        // pane is never listed open, and its marker can be overwritten by a newer one).
        // Recorded whether the pass announces or not (a pane's first listing must be
        // seen while its data is young, not when its window first becomes closable),
        // when it lists new panes or the last record is getting old: a pane first
        // listed now counts as written since that record, which errs early.
        let marked_panes = markers.iter().flat_map(|marker| s.window.panes_of(marker.window));
        let observation = closer.observation.observe(
            states.values().flat_map(|state| state.open_panes.keys().copied()).chain(marked_panes),
            &s.window,
            closer.closed_through,
            now,
            s.retention_s,
        );
        let stored = &closer.observation;
        let changed = observation.since != stored.since || observation.pruned_through != stored.pruned_through;
        if changed || stored.observed_at.is_none_or(|at| now.0 - at.0 >= OBSERVATION_REFRESH_MS) {
            self.store.save_observation(&observation).await.map_err(|e| e.to_string())?;
        }
        // Every read of this pass comes after the announcement, so a pane read once serves every window of it.
        let mut pass = Pass { panes: PaneReads::default(), cursor: closer.close_cursor.clone(), observation };
        let mut by_window: BTreeMap<WindowStart, Vec<StoredMarker>> = BTreeMap::new();
        for marker in markers {
            by_window.entry(marker.window).or_default().push(marker);
        }
        let served = |marker: &StoredMarker| states.get(&marker.shard).is_some_and(|state| state.has_applied(&marker.seq));
        // A window's progress is resumed only under the same served markers: a
        // marker whose commit lands between two passes changes what was indexed.
        let marker_set = |markers: &[StoredMarker]| -> BTreeMap<ShardId, SeqNum> {
            markers.iter().filter(|m| served(m)).map(|m| (m.shard.clone(), m.seq.clone())).collect()
        };
        // Re-emission reads every shard, sealed panes too: open panes are pruned once their windows are closed.
        let every_shard = |pane: PaneStart| -> Vec<(ShardId, Vec<LogRef>)> {
            shard_ids.iter().map(|id| (id.clone(), states.get(id).map(|state| state.refs_of(pane)).unwrap_or_default())).collect()
        };
        let mut refused = BTreeSet::new();
        for (window, markers) in &by_window {
            if self.out_of_time(clock, deadline) {
                return Ok(());
            }
            if self.refuse_expired(*window, &pass.observation, deadline, report) {
                refused.insert(*window);
                continue;
            }
            let emitted = self.emit_window(*window, &every_shard, true, &marker_set(markers), &mut pass, clock, deadline, report).await?;
            if emitted == Emitted::OutOfTime {
                return Ok(());
            }
            for marker in markers {
                if served(marker) {
                    self.store.delete_reemit_marker(marker).await.map_err(|e| e.to_string())?;
                } else {
                    tracing::info!(window = %EventTime(window.0).to_rfc3339(), shard = %marker.shard, seq = %marker.seq, "re-emit marker kept: its commit has not landed yet (or never will: then the shard's next records serve it)");
                }
            }
            report.windows_reemitted += 1;
        }

        let (Some(watermark), Some(through)) = (watermark, through) else { return Ok(()) };
        let open_panes = states.values().flat_map(|state| state.open_panes.keys().copied());
        let windows = windows_to_close(&s.window, open_panes, closer.closed_through, watermark);
        // A pane is read from the shards whose state lists it: a batch committed
        // after these states were read was judged against the announcement,
        // so it re-emits the window.
        let listing = |pane: PaneStart| -> Vec<(ShardId, Vec<LogRef>)> {
            states
                .iter()
                .filter(|(_, state)| state.open_panes.contains_key(&pane))
                .map(|(id, state)| (id.clone(), state.refs_of(pane)))
                .collect()
        };
        for (i, window) in windows.iter().enumerate() {
            let left_open = (windows.len() - i) as u64;
            if self.out_of_time(clock, deadline) {
                report.windows_left_open = left_open;
                return Ok(());
            }
            // closed_through cannot move past a window refused: everything after it waits too.
            if refused.contains(window) || self.refuse_expired(*window, &pass.observation, deadline, report) {
                report.windows_left_open = left_open;
                return Ok(());
            }
            // Every marker listed was re-emitted and deleted above (or the pass stopped):
            // a marker written since differs from this cursor's none.
            match self.emit_window(*window, &listing, false, &BTreeMap::new(), &mut pass, clock, deadline, report).await {
                Ok(Emitted::Done) => {}
                Ok(Emitted::OutOfTime) => {
                    report.windows_left_open = left_open;
                    return Ok(());
                }
                Err(e) => {
                    report.windows_left_open = left_open;
                    return Err(e);
                }
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

    /// Whether `window` must not be emitted because TTL may have deleted some
    /// of its partials by the end of this pass; logs why and what to do.
    fn refuse_expired(&self, window: WindowStart, observation: &PaneObservation, deadline: WallTime, report: &mut CloseReport) -> bool {
        let s = &self.settings;
        let Some((pane, expiry)) = observation.expired_pane(&s.window, window, s.retention_s, deadline) else { return false };
        let window_start = EventTime(window.0).to_rfc3339();
        let expiry = EventTime(expiry).to_rfc3339();
        if s.close_expired {
            tracing::warn!(window = %window_start, pane = pane.0, may_expire_from = %expiry, "closing a window whose partials may have expired (CLOSE_EXPIRED_WINDOWS=true)");
            return false;
        }
        report.refused_expired.push(window);
        tracing::error!(
            window = %window_start,
            pane = pane.0,
            may_expire_from = %expiry,
            retention_hours = s.retention_s / 3600,
            "window not closed: its partials may have been deleted by TTL (the window waited longer than RETENTION_HOURS since its first write), so its documents could be wrong. \
             Re-index its time range from the source with `taxi-pipeline batch`, then set CLOSE_EXPIRED_WINDOWS=true for one run to move on \
             (versioned documents keep the complete ones); raise RETENTION_HOURS above the longest stall to avoid it"
        );
        true
    }

    fn out_of_time(&self, clock: &(dyn Fn() -> WallTime + Sync), deadline: WallTime) -> bool {
        clock().0 + self.settings.safety_margin_ms >= deadline.0
    }

    /// Reads, merges, builds and indexes one window, in chunks of documents
    /// with durable progress in between; dead-letters what the sink refused
    /// for good. `shards_of` names the shards each pane is read from
    /// (`every_shard` if that is all of them); `markers` are the window's
    /// re-emit markers, which a cursor must match to be resumed.
    #[allow(clippy::too_many_arguments)]
    async fn emit_window(
        &self,
        window: WindowStart,
        shards_of: &(dyn Fn(PaneStart) -> Vec<(ShardId, Vec<LogRef>)> + Sync),
        every_shard: bool,
        markers: &BTreeMap<ShardId, SeqNum>,
        pass: &mut Pass,
        clock: &(dyn Fn() -> WallTime + Sync),
        deadline: WallTime,
        report: &mut CloseReport,
    ) -> Result<Emitted, String> {
        let s = &self.settings;
        for pane in s.window.panes_of(window) {
            if pass.panes.get(pane, every_shard).is_some() {
                continue;
            }
            let partials = self.store.read_pane(pane, &shards_of(pane), every_shard).await.map_err(|e| e.to_string())?;
            pass.panes.insert(pane, every_shard, partials);
        }
        let merged = merge(s.window.panes_of(window).flat_map(|pane| {
            let pane = pass.panes.get(pane, every_shard).expect("read above");
            pane.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        }));
        let mut documents = window_documents(&s.window, window, &merged, &s.documents);
        documents.sort_by(|a, b| (&a.index, &a.id).cmp(&(&b.index, &b.id)));
        let resumed = pass.cursor.as_ref().filter(|c| c.window == window && c.markers == *markers);
        let start = resumed.map_or(0, |c| documents.partition_point(|d| (&d.index, &d.id) <= (&c.indexed_through.0, &c.indexed_through.1)));
        if resumed.is_some() {
            report.windows_resumed += 1;
            tracing::info!(window = %EventTime(window.0).to_rfc3339(), skipped = start, documents = documents.len(), "window resumed from the progress recorded");
        }
        let chunks: Vec<&[Document]> = documents[start..].chunks(s.chunk_documents.max(1)).collect();
        // A chunk is started only if one as long as the longest so far still fits.
        let mut longest_ms = 0;
        let (mut indexed_total, mut retried_total, mut rejected_total) = (0, 0, 0);
        for (i, chunk) in chunks.iter().enumerate() {
            let started = clock();
            if started.0 + longest_ms + s.safety_margin_ms >= deadline.0 {
                tracing::info!(window = %EventTime(window.0).to_rfc3339(), indexed = start + chunks[..i].iter().map(|c| c.len()).sum::<usize>(), documents = documents.len(), "out of time within a window; the next pass goes on from here");
                return Ok(Emitted::OutOfTime);
            }
            let indexed = self.sink.index(chunk, WallTime(deadline.0 - s.safety_margin_ms / 2)).await.map_err(|e| e.to_string())?;
            if !indexed.rejected.is_empty() {
                for letter in &indexed.rejected {
                    tracing::error!(index = %letter.document.index, id = %letter.document.id, status = letter.status, reason = %letter.reason, "document rejected; kept as a dead letter");
                }
                self.store.put_dead_letters(&indexed.rejected, clock()).await.map_err(|e| e.to_string())?;
            }
            report.documents_indexed += indexed.indexed;
            report.documents_retried += indexed.retried;
            report.dead_letters += indexed.rejected.len() as u64;
            (indexed_total, retried_total, rejected_total) =
                (indexed_total + indexed.indexed, retried_total + indexed.retried, rejected_total + indexed.rejected.len());
            if i + 1 < chunks.len() {
                let last = chunk.last().expect("chunks are not empty");
                let cursor = CloseCursor { window, markers: markers.clone(), indexed_through: (last.index.clone(), last.id.clone()) };
                self.store.save_close_cursor(Some(&cursor)).await.map_err(|e| e.to_string())?;
                pass.cursor = Some(cursor);
            }
            longest_ms = longest_ms.max(clock().0 - started.0);
        }
        if pass.cursor.as_ref().is_some_and(|c| c.window == window) {
            self.store.save_close_cursor(None).await.map_err(|e| e.to_string())?;
            pass.cursor = None;
        }
        tracing::info!(window = %EventTime(window.0).to_rfc3339(), documents = documents.len(), indexed = indexed_total, retried = retried_total, rejected = rejected_total, "window emitted");
        Ok(Emitted::Done)
    }
}

/// What a pass decides before it closes anything: the states of every shard
/// listed or ever known, the global watermark over them (the quiet rule
/// applied when it would close more and Kinesis says each shard is caught
/// up), and the shards left out for silence.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The shards listed now and every one known before, whose partials a window is read from.
    pub shard_ids: Vec<ShardId>,
    pub states: BTreeMap<ShardId, ShardState>,
    pub global: GlobalWatermark,
    /// What [`exclusions`] makes of the stored ones.
    pub excluded: BTreeMap<ShardId, EventTime>,
}

/// The closer's decision over `listed` (the shards Kinesis lists now) and
/// its stored state, read only: the close-windows pass acts on it, and
/// `taxi-pipeline status` shows it.
pub async fn decide<St: CloserStore, Sh: ShardSource>(
    store: &St,
    source: &Sh,
    listed: &[StreamShard],
    closer: &CloserState,
    window: &WindowSpec,
    idleness: Idleness,
    now: WallTime,
) -> Result<Decision, StoreError> {
    let shard_ids: Vec<ShardId> =
        listed.iter().map(|s| s.id.clone()).collect::<BTreeSet<_>>().union(&closer.known_shards).cloned().collect();
    let states = store.load_shard_states(&shard_ids).await?;
    let mut global = global_watermark(listed, &states, &closer.first_seen, now, idleness);
    // A quiet stream (bounded mode): worth asking Kinesis only when it would close more.
    let gain = |q: &QuietAdvance| {
        let through = closable_through(window, q.watermark);
        closer.closed_through.is_none_or(|c| through > c) && global.watermark.is_none_or(|w| through > closable_through(window, w))
    };
    if let Some(quiet) = quiet_advance(&global, &states, now, idleness).filter(gain) {
        if all_caught_up(source, &quiet).await {
            global = global.with_quiet_advance(&quiet);
        }
    }
    let excluded = exclusions(&global, &closer.excluded, closer.closed_through);
    Ok(Decision { shard_ids, states, global, excluded })
}

/// Every shard of `quiet` caught up; an error counts as not (it holds back, as a stuck shard would).
async fn all_caught_up<Sh: ShardSource>(source: &Sh, quiet: &QuietAdvance) -> bool {
    for (shard, applied) in &quiet.shards {
        match source.caught_up(shard, applied.as_ref()).await {
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

/// What one pass carries from window to window.
struct Pass {
    panes: PaneReads,
    /// The progress within a window, as stored.
    cursor: Option<CloseCursor>,
    observation: PaneObservation,
}

/// How a window's emission ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Emitted {
    Done,
    /// Stopped between two chunks before the deadline; the cursor says how far it came.
    OutOfTime,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    use futures::executor::block_on;

    use super::*;
    use crate::geo::Cell;
    use crate::watermark::ShardWatermark;

    const WINDOW: WindowStart = WindowStart(1_420_848_000);
    /// A replay: the wall clock is years past the event time.
    const T0: i64 = 1_796_000_000_000;
    const SHARD: &str = "shardId-000000000000";
    /// A window closed long before: late data for it is never listed open, only marked.
    const LATE: WindowStart = WindowStart(WINDOW.0 - 3600);

    /// The closer's table in memory, and a wall clock the sink moves on.
    #[derive(Default)]
    struct Table {
        state: Mutex<CloserState>,
        partials: Vec<(MetricKey, PartialValue)>,
        markers: Vec<StoredMarker>,
        clock: Arc<AtomicI64>,
        cursor_writes: Mutex<Vec<Option<CloseCursor>>>,
    }

    impl CloserStore for &Table {
        async fn load_shard_states(&self, _: &[ShardId]) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
            let state = ShardState {
                watermark: ShardWatermark { watermark: Some(EventTime(WINDOW.0 + 3600)), ..Default::default() },
                updated_at: Some(WallTime(self.clock.load(Ordering::SeqCst))),
                open_panes: [(PaneStart(WINDOW.0), Default::default())].into(),
                ..Default::default()
            };
            Ok([(ShardId(SHARD.into()), state)].into())
        }
        async fn load_closer_state(&self) -> Result<CloserState, StoreError> {
            Ok(self.state.lock().unwrap().clone())
        }
        async fn acquire_lease(&self, _: &str, _: WallTime, _: WallTime) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn release_lease(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn read_pane(&self, pane: PaneStart, _: &[(ShardId, Vec<LogRef>)], _: bool) -> Result<Partials, StoreError> {
            Ok(if pane.0 == WINDOW.0 || pane.0 == LATE.0 { self.partials.iter().cloned().collect() } else { Partials::new() })
        }
        async fn list_reemit_markers(&self) -> Result<Vec<StoredMarker>, StoreError> {
            Ok(self.markers.clone())
        }
        async fn delete_reemit_marker(&self, _: &StoredMarker) -> Result<(), StoreError> {
            Ok(())
        }
        async fn announce_closing(&self, through: EventTime) -> Result<BTreeSet<ShardId>, StoreError> {
            let mut state = self.state.lock().unwrap();
            if state.closing_through.is_none_or(|c| c < through) {
                state.closing_through = Some(through);
            }
            Ok(state.known_shards.clone())
        }
        async fn stamp_shard_states(&self, shards: &[ShardId], _: EventTime) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
            self.load_shard_states(shards).await
        }
        async fn save_observation(&self, observation: &PaneObservation) -> Result<(), StoreError> {
            self.state.lock().unwrap().observation = observation.clone();
            Ok(())
        }
        async fn save_close_cursor(&self, cursor: Option<&CloseCursor>) -> Result<(), StoreError> {
            self.state.lock().unwrap().close_cursor = cursor.cloned();
            self.cursor_writes.lock().unwrap().push(cursor.cloned());
            Ok(())
        }
        async fn advance_closed_through(&self, through: EventTime, watermark: EventTime) -> Result<(), StoreError> {
            let mut state = self.state.lock().unwrap();
            state.closed_through = state.closed_through.max(Some(through));
            state.watermark = Some(watermark);
            Ok(())
        }
        async fn save_excluded(&self, _: &BTreeMap<ShardId, EventTime>) -> Result<(), StoreError> {
            Ok(())
        }
        async fn remember_shards(&self, shards: &[ShardId]) -> Result<(), StoreError> {
            self.state.lock().unwrap().known_shards.extend(shards.iter().cloned());
            Ok(())
        }
        async fn save_first_seen(&self, _: &BTreeMap<ShardId, WallTime>) -> Result<(), StoreError> {
            Ok(())
        }
        async fn put_dead_letters(&self, _: &[DeadLetter], _: WallTime) -> Result<(), StoreError> {
            Ok(())
        }
    }

    struct OneShard;

    impl ShardSource for OneShard {
        async fn list_shards(&self) -> Result<Vec<StreamShard>, SourceError> {
            Ok(vec![StreamShard {
                id: ShardId(SHARD.into()),
                parent: None,
                adjacent_parent: None,
                starting_hash_key: "0".into(),
                closed: false,
            }])
        }
        async fn caught_up(&self, _: &ShardId, _: Option<&SeqNum>) -> Result<bool, SourceError> {
            Ok(false)
        }
    }

    /// An endpoint taking one second per document; keeps every `_id` it indexed, in order.
    struct SlowSink<'a> {
        clock: &'a AtomicI64,
        indexed: Mutex<Vec<String>>,
    }

    impl DocumentSink for SlowSink<'_> {
        async fn index(&self, documents: &[Document], deadline: WallTime) -> Result<IndexReport, SinkError> {
            let done = self.clock.fetch_add(1000 * documents.len() as i64, Ordering::SeqCst) + 1000 * documents.len() as i64;
            if done > deadline.0 {
                return Err(SinkError::Unavailable("timed out".into()));
            }
            self.indexed.lock().unwrap().extend(documents.iter().map(|d| d.id.clone()));
            Ok(IndexReport { indexed: documents.len() as u64, ..Default::default() })
        }
    }

    /// Seven hot spots in one window: seven documents, seven seconds to index.
    fn table() -> Table {
        let cells = ["dr5ru7", "dr5ru6", "dr5ru5", "dr5ru4", "dr5ru3", "dr5ru2", "dr5ru1"];
        let partials = cells.iter().map(|c| (MetricKey::Pickups(Cell::parse(c).unwrap()), PartialValue { count: 3, sum_s: 900 })).collect();
        Table { partials, clock: Arc::new(AtomicI64::new(T0)), ..Default::default() }
    }

    fn closer<'a>(table: &'a Table, chunk_documents: usize) -> Closer<&'a Table, OneShard, SlowSink<'a>> {
        Closer {
            store: table,
            shards: OneShard,
            sink: SlowSink { clock: &table.clock, indexed: Mutex::default() },
            settings: CloserSettings {
                window: WindowSpec::tumbling(600).unwrap(),
                documents: DocumentSettings { min_count: 1, ..DocumentSettings::default() },
                idleness: Idleness::Never,
                safety_margin_ms: 1000,
                owner: "test".into(),
                chunk_documents,
                retention_s: 48 * 3600,
                close_expired: false,
            },
        }
    }

    /// One invocation of 4 s from now.
    async fn invoke(closer: &Closer<&Table, OneShard, SlowSink<'_>>, table: &Table) -> CloseReport {
        invoke_for(closer, table, 4000).await
    }

    async fn invoke_for(closer: &Closer<&Table, OneShard, SlowSink<'_>>, table: &Table, ms: i64) -> CloseReport {
        let clock = || WallTime(table.clock.load(Ordering::SeqCst));
        let deadline = WallTime(clock().0 + ms);
        let report = closer.run_once(&clock, deadline).await;
        table.clock.fetch_add(60_000, Ordering::SeqCst);
        report
    }

    #[test]
    fn a_window_too_big_for_one_invocation_closes_over_several() {
        let table = table();
        let closer = closer(&table, 2);
        let end = EventTime(WINDOW.0 + 600);
        let mut invocations = 0;
        while table.state.lock().unwrap().closed_through < Some(end) {
            let report = block_on(invoke(&closer, &table));
            assert_eq!(report.error, None);
            assert_eq!(report.windows_resumed, u64::from(invocations > 0), "each later invocation goes on from the cursor");
            invocations += 1;
            assert!(invocations <= 4, "two documents per 4 s invocation: four invocations");
        }
        let indexed = closer.sink.indexed.lock().unwrap().clone();
        let unique: BTreeSet<&String> = indexed.iter().collect();
        assert_eq!((invocations, indexed.len(), unique.len()), (4, 7, 7), "every document once: {indexed:?}");
        assert_eq!(table.state.lock().unwrap().close_cursor, None, "cleared once the window is closed");
        assert_eq!(table.cursor_writes.lock().unwrap().len(), 4, "three chunks recorded, then cleared");
    }

    #[test]
    fn without_chunks_such_a_window_never_closes() {
        let table = table();
        let closer = closer(&table, 5000);
        for _ in 0..5 {
            assert!(block_on(invoke(&closer, &table)).error.is_some());
        }
        assert_eq!(table.state.lock().unwrap().closed_through, None);
    }

    /// A first pass that observes the pane but has no time to index anything
    /// (the endpoint was down, say), then `hours` later an invocation.
    fn after_first_observation(table: &Table, hours: i64, closer: &Closer<&Table, OneShard, SlowSink<'_>>) -> CloseReport {
        let clock = || WallTime(table.clock.load(Ordering::SeqCst));
        let report = block_on(closer.run_once(&clock, WallTime(clock().0 + 500)));
        assert_eq!(report.windows_closed, 0);
        assert_eq!(table.state.lock().unwrap().observation.since.get(&PaneStart(WINDOW.0)), Some(&WallTime(T0)));
        table.clock.fetch_add(hours * 3_600_000, Ordering::SeqCst);
        block_on(invoke_for(closer, table, 20_000))
    }

    #[test]
    fn a_window_waiting_past_the_retention_is_refused_not_closed() {
        // Retention 48 h, less the checkpoint lag: 47 h after its first write the window still closes.
        let table = table();
        let report = after_first_observation(&table, 47, &closer(&table, 10));
        assert_eq!((report.windows_closed, report.refused_expired.len()), (1, 0));

        let table = self::table();
        let closer = closer(&table, 10);
        let report = after_first_observation(&table, 49, &closer);
        assert_eq!(report.refused_expired, vec![WINDOW]);
        assert_eq!((report.windows_closed, report.windows_left_open), (0, 1));
        assert_eq!(table.state.lock().unwrap().closed_through, None, "nothing moves past it");
        assert!(closer.sink.indexed.lock().unwrap().is_empty(), "no document from partials that may be gone");
        // The operator's way out, once the window is re-indexed from the source.
        let forced = Closer { settings: CloserSettings { close_expired: true, ..closer.settings.clone() }, ..self::closer(&table, 10) };
        let report = block_on(invoke_for(&forced, &table, 20_000));
        assert_eq!((report.windows_closed, report.refused_expired.len()), (1, 0));
    }

    #[test]
    fn late_data_waiting_past_the_retention_is_refused_not_re_emitted() {
        for (hours, refused) in [(47, false), (49, true)] {
            let marker = StoredMarker { window: LATE, shard: ShardId(SHARD.into()), seq: SeqNum::parse("7").unwrap() };
            let table = Table { markers: vec![marker], ..table() };
            let closer = closer(&table, 10);
            let clock = || WallTime(table.clock.load(Ordering::SeqCst));
            // A first pass with no time to index (the endpoint was down, say) sees the marker.
            let first = block_on(closer.run_once(&clock, WallTime(clock().0 + 500)));
            assert_eq!(first.windows_reemitted, 0);
            let observation = table.state.lock().unwrap().observation.clone();
            assert_eq!(observation.since.get(&PaneStart(LATE.0)), Some(&WallTime(T0)), "the marked window's pane is recorded");
            table.clock.fetch_add(hours * 3_600_000, Ordering::SeqCst);
            let report = block_on(invoke_for(&closer, &table, 20_000));
            assert_eq!(report.refused_expired.contains(&LATE), refused, "{hours} h later: {report:?}");
            assert_eq!(report.windows_reemitted, u64::from(!refused), "{hours} h later");
        }
    }
}
