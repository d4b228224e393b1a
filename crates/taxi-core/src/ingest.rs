//! The exactly-once batch algorithm of the aggregate function.
//!
//! Per batch of one shard:
//! 1. load the shard state and the closer's progress;
//! 2. skip records at or below the shard's applied sequence number;
//! 3. decode, validate and pre-aggregate the rest by (pane, metric, key);
//! 4. write each partial behind its sequence fence (bounded concurrency);
//! 5. write re-emit markers for late data, after the partials they point to;
//! 6. advance the shard state (watermark, applied sequence, counters) over
//!    the prefix of records whose every effect is durable, conditionally;
//! 7. report a retry from the first record that is not durable, if any.
//!
//! Whatever the delivery history (duplicates, retries, re-cut batches, a crash
//! between any two writes), the store ends as after one clean pass: see
//! docs/ARCHITECTURE.md for the argument, and the property tests for the check.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};

use crate::aggregate::{BatchAggregate, Contribution, MetricKey, PartialKey};
use crate::event::{decode, validate_trip, Event, InvalidReason, TripFacts};
use crate::geo::{Areas, GeohashPrecision};
use crate::metrics::BatchMetrics;
use crate::seq::SeqNum;
use crate::shard::{Counters, ShardId, ShardState};
use crate::store::{PartialStore, PartialWrite, PartialWriteOutcome, ReemitMarker, SaveOutcome, StoreError};
use crate::time::{EventTime, WallTime};
use crate::watermark::{CloserProgress, Lateness, WatermarkMode};
use crate::window::{WindowSpec, WindowStart};

/// How many malformed records per batch are logged with a sample; the rest are only counted.
const LOGGED_SAMPLES_PER_BATCH: usize = 5;
/// Bytes of a malformed record shown in its log line.
const SAMPLE_BYTES: usize = 160;
/// Rounds of "the store moved under us, recompute and try again" before giving up
/// and asking for a retry. More than one round means a second writer on the shard.
const MAX_CONFLICT_ROUNDS: usize = 3;

/// Settings of the aggregate function's analytics.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestSettings {
    pub window: WindowSpec,
    pub precision: GeohashPrecision,
    pub areas: Areas,
    pub watermark_mode: WatermarkMode,
    pub allowed_lateness_s: i64,
    /// Event times later than wall clock + this are rejected as bogus.
    pub future_tolerance_s: i64,
    /// How long partials and markers outlive the windows they feed.
    pub retention_s: i64,
    pub write_concurrency: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            window: WindowSpec::tumbling(600).expect("600 s is a valid window"),
            precision: GeohashPrecision::default(),
            areas: Areas::default(),
            watermark_mode: WatermarkMode::Producer,
            allowed_lateness_s: 300,
            future_tolerance_s: 900,
            retention_s: 48 * 3600,
            write_concurrency: 16,
        }
    }
}

/// One Kinesis record as the function receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct InputRecord {
    pub seq: SeqNum,
    pub data: Vec<u8>,
}

/// The result of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchReport {
    /// Report this record as the batch item failure: every earlier record is
    /// durable, this one and the rest must be delivered again.
    pub retry_from: Option<SeqNum>,
    pub metrics: BatchMetrics,
}

/// What one new record turned out to be.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// A valid trip; `reemit` names the already emitted windows it makes late.
    Trip {
        facts: TripFacts,
        reemit: Vec<WindowStart>,
    },
    DroppedLate {
        facts: TripFacts,
    },
    Watermark(EventTime),
    Invalid(InvalidReason),
}

/// A record not yet applied, with its position in the batch.
struct Fresh<'a> {
    record: &'a InputRecord,
    outcome: Outcome,
}

/// The aggregate function's logic over any [`PartialStore`].
pub struct Aggregator<S> {
    store: S,
    settings: IngestSettings,
}

impl<S: PartialStore> Aggregator<S> {
    pub fn new(store: S, settings: IngestSettings) -> Aggregator<S> {
        Aggregator { store, settings }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn settings(&self) -> &IngestSettings {
        &self.settings
    }

    /// Processes one batch of one shard; never fails: infrastructure errors
    /// become a `retry_from`, malformed records become counts.
    pub async fn process_batch(&self, shard: &ShardId, records: &[InputRecord], now: WallTime) -> BatchReport {
        let mut metrics = BatchMetrics { shard: Some(shard.clone()), records: records.len() as u64, ..Default::default() };
        let Some(first) = records.first() else {
            return BatchReport { retry_from: None, metrics };
        };
        let loaded = futures::future::try_join(self.store.load_shard_state(shard), self.store.load_closer_progress(shard)).await;
        let (state, progress) = match loaded {
            Ok((state, progress)) => (state.unwrap_or_default(), progress),
            Err(e) => return self.retry(metrics, &first.seq, "loading the shard state", &e),
        };

        let mut plan = plan_batch(&self.settings, shard, records, &state, &progress, now, &BTreeSet::new());
        match self.rescued(shard, &plan).await {
            Ok(rescued) if rescued.is_empty() => {}
            Ok(rescued) => plan = plan_batch(&self.settings, shard, records, &state, &progress, now, &rescued),
            Err(e) => return self.retry(metrics, &first.seq, "reading the partials of dropped trips", &e),
        }
        metrics.redelivered = (records.len() - plan.fresh.len()) as u64;

        let (durable, write_metrics) = self.write_effects(shard, &plan, now).await;
        let fresh = &plan.fresh;
        metrics.partial_writes = write_metrics.partial_writes;
        metrics.fenced_writes = write_metrics.fenced_writes;
        metrics.marker_writes = write_metrics.marker_writes;
        metrics.consumed_capacity_units = write_metrics.consumed_capacity_units;

        let saved = self.advance_state(shard, state, &fresh[..durable], &progress, now, &mut metrics).await;
        let retry_from = match saved {
            Ok(()) => fresh.get(durable).map(|f| f.record.seq.clone()),
            Err(e) => {
                metrics.applied = Counters::default();
                return self.retry(metrics, &fresh[0].record.seq, "saving the shard state", &e);
            }
        };
        metrics.retry_requested = retry_from.is_some();
        BatchReport { retry_from, metrics }
    }

    /// The trips judged past lateness that an earlier attempt of this batch
    /// already wrote to a partial (the item's fence is at or past the record).
    async fn rescued(&self, shard: &ShardId, plan: &BatchPlan<'_>) -> Result<BTreeSet<usize>, StoreError> {
        let mut rescued = BTreeSet::new();
        for (position, fresh) in plan.fresh.iter().enumerate() {
            let Outcome::DroppedLate { facts } = &fresh.outcome else { continue };
            let pane = self.settings.window.pane_of(facts.event_time);
            for metric in MetricKey::of_trip(facts) {
                if self.store.partial_seq(shard, PartialKey { pane, metric }).await?.is_some_and(|seq| seq >= fresh.record.seq) {
                    rescued.insert(position);
                    break;
                }
            }
        }
        Ok(rescued)
    }

    fn retry(&self, mut metrics: BatchMetrics, from: &SeqNum, doing: &str, error: &StoreError) -> BatchReport {
        tracing::error!(shard = ?metrics.shard, retry_from = %from, retryable = error.is_retryable(), "{doing} failed: {error}");
        metrics.retry_requested = true;
        BatchReport { retry_from: Some(from.clone()), metrics }
    }

    /// Writes every partial and re-emit marker of the new records. Returns how
    /// many of them, from the front, have all their effects durable.
    async fn write_effects(&self, shard: &ShardId, plan: &BatchPlan<'_>, now: WallTime) -> (usize, BatchMetrics) {
        let s = &self.settings;
        let fresh = &plan.fresh;
        let mut metrics = BatchMetrics::default();
        let mut durable = fresh.len();
        // The futures are collected first: a lazy `map` closure kept across the
        // await would make the future's `Send` unprovable to the compiler.
        let writes: Vec<_> = plan.parts.iter().map(|(key, c)| self.write_partial(shard, fresh, *key, c, now)).collect();
        let writes = stream::iter(writes).buffer_unordered(s.write_concurrency.max(1)).collect::<Vec<_>>().await;
        for write in writes {
            metrics.partial_writes += write.attempts;
            metrics.fenced_writes += write.fenced;
            metrics.consumed_capacity_units += write.capacity_units;
            if let Some(position) = write.not_durable_from {
                durable = durable.min(position);
            }
        }

        // Phase two of the closer's protocol: a window the closer announced after
        // this batch read its progress may have been read before these partials
        // landed, so every such window the batch wrote to is emitted again.
        let mut reemit = plan.reemit.clone();
        let reread = if plan.parts.is_empty() { Ok(plan.progress) } else { self.store.load_closer_progress(shard).await };
        match reread {
            Ok(now_closing) => {
                for (window, span) in plan.closing_windows(&s.window, &now_closing) {
                    reemit.entry(window).and_modify(|s| *s = (s.0.min(span.0), s.1.max(span.1))).or_insert(span);
                }
            }
            Err(e) => {
                tracing::warn!(%shard, "re-reading the closer's progress failed: {e}");
                durable = 0;
            }
        }

        // Markers go after the partials: a closer that sees one finds the data in.
        // The closer's progress only matters for windows within lateness; the
        // marker is written even if the closer has not reached the window yet.
        let markers: Vec<_> = reemit.iter().filter(|(_, (first, _))| *first < durable).collect();
        let results: Vec<_> = markers
            .into_iter()
            .map(|(window, (first, last))| async move {
                let last = (*last).min(durable - 1);
                let marker = ReemitMarker {
                    window: *window,
                    shard,
                    seq: &fresh[last].record.seq,
                    expires_at: self.expires_at(s.window.window_end(*window), now),
                };
                (*first, self.store.put_reemit_marker(&marker).await)
            })
            .collect();
        let results = stream::iter(results).buffer_unordered(s.write_concurrency.max(1)).collect::<Vec<_>>().await;
        for (first, result) in results {
            metrics.marker_writes += 1;
            match result {
                Ok(capacity) => metrics.consumed_capacity_units += capacity,
                Err(e) => {
                    tracing::warn!(%shard, "re-emit marker write failed: {e}");
                    durable = durable.min(first);
                }
            }
        }
        (durable, metrics)
    }

    /// Applies one contribution behind the item's sequence fence. When the
    /// fence refuses, the item tells how far it has applied, and only the
    /// records after that are written.
    async fn write_partial(
        &self,
        shard: &ShardId,
        fresh: &[Fresh<'_>],
        key: PartialKey,
        contribution: &Contribution,
        now: WallTime,
    ) -> PartialWriteResult {
        let seq_at = |position: usize| &fresh[position].record.seq;
        let expires_at = self.expires_at(self.settings.window.window_end(self.settings.window.last_window_containing(key.pane)), now);
        let mut result = PartialWriteResult::default();
        let mut pending = Cow::Borrowed(contribution);
        for _ in 0..MAX_CONFLICT_ROUNDS {
            let write = PartialWrite {
                shard,
                key,
                value: pending.value,
                first_seq: seq_at(pending.first_position()),
                last_seq: seq_at(pending.last_position()),
                expires_at,
            };
            result.attempts += 1;
            match self.store.write_partial(&write).await {
                Ok(PartialWriteOutcome::Applied { capacity_units }) => {
                    result.capacity_units += capacity_units;
                    return result;
                }
                Ok(PartialWriteOutcome::Fenced { item_seq, capacity_units }) => {
                    result.capacity_units += capacity_units;
                    result.fenced += 1;
                    match pending.remainder(|position| *seq_at(position) <= item_seq) {
                        None => return result,
                        Some(rest) => pending = Cow::Owned(rest),
                    }
                }
                Err(e) => {
                    tracing::warn!(%shard, pane = key.pane.0, key = %key.metric, "partial write failed: {e}");
                    break;
                }
            }
        }
        result.not_durable_from = Some(pending.first_position());
        result
    }

    /// Moves the shard state over the durable prefix, conditionally on nobody
    /// else having moved it; on a conflict, recomputes from what is stored.
    async fn advance_state(
        &self,
        shard: &ShardId,
        mut base: ShardState,
        durable: &[Fresh<'_>],
        progress: &CloserProgress,
        now: WallTime,
        metrics: &mut BatchMetrics,
    ) -> Result<(), StoreError> {
        metrics.watermark = base.watermark.watermark;
        for _ in 0..MAX_CONFLICT_ROUNDS {
            let start = durable.partition_point(|f| base.has_applied(&f.record.seq));
            let todo = &durable[start..];
            if todo.is_empty() {
                return Ok(());
            }
            let mut next = base.clone();
            let applied = self.fold(&mut next, todo, progress, now);
            metrics.state_writes += 1;
            match self.store.save_shard_state(shard, &next, base.applied_seq.as_ref()).await? {
                SaveOutcome::Saved { capacity_units } => {
                    metrics.consumed_capacity_units += capacity_units;
                    metrics.applied = applied;
                    metrics.watermark = next.watermark.watermark;
                    return Ok(());
                }
                SaveOutcome::Conflict { current } => {
                    tracing::warn!(%shard, "shard state moved by another writer; recomputing");
                    base = *current;
                }
            }
        }
        Err(StoreError::Unavailable(format!("shard state of {shard} kept changing under this writer")))
    }

    /// The shard state after `records`, and the counters they add.
    fn fold(&self, state: &mut ShardState, records: &[Fresh<'_>], progress: &CloserProgress, now: WallTime) -> Counters {
        let (mode, window) = (self.settings.watermark_mode, self.settings.window);
        let mut added = Counters { records: records.len() as u64, ..Counters::default() };
        for f in records {
            match &f.outcome {
                Outcome::Trip { facts, reemit } => {
                    added.trips_aggregated += 1;
                    added.late += u64::from(!reemit.is_empty());
                    state.watermark.observe_trip(facts.event_time, mode);
                    state.open_panes.insert(window.pane_of(facts.event_time));
                }
                Outcome::DroppedLate { facts } => {
                    added.dropped_late += 1;
                    state.watermark.observe_trip(facts.event_time, mode);
                }
                Outcome::Watermark(w) => {
                    added.watermark_events += 1;
                    state.watermark.observe_watermark_event(*w);
                }
                Outcome::Invalid(reason) => added.invalid.add(*reason, 1),
            }
        }
        if let Some(last) = records.last() {
            state.applied_seq = Some(last.record.seq.clone());
        }
        // Panes whose every window the closer has emitted need no tracking:
        // late data for them travels by re-emit markers.
        if let Some(closed_through) = progress.closed_through {
            state.open_panes.retain(|pane| window.window_end(window.last_window_containing(*pane)) > closed_through);
        }
        state.updated_at = Some(now);
        state.counters.add(&added);
        added
    }

    /// DynamoDB's TTL compares `expires_at` with the wall clock, so the item
    /// outlives both this write and the last use of its data (the end of the
    /// last window that reads it, plus the allowed lateness) by the retention,
    /// whether the data is live or replayed from years ago.
    fn expires_at(&self, last_use: EventTime, now: WallTime) -> EventTime {
        let last_use = last_use.plus_seconds(self.settings.allowed_lateness_s);
        last_use.max(now.as_event_time()).plus_seconds(self.settings.retention_s)
    }
}

/// What a batch means, decided without I/O: the records the shard has not
/// applied yet with what each turned out to be, their contributions to
/// partials, and the windows their late trips require to be re-emitted.
pub struct BatchPlan<'a> {
    fresh: Vec<Fresh<'a>>,
    parts: Vec<(PartialKey, Contribution)>,
    /// Window -> (first, last) position of the late trips that need it re-emitted.
    reemit: BTreeMap<WindowStart, (usize, usize)>,
    /// The closer's progress the batch was judged against.
    progress: CloserProgress,
}

impl BatchPlan<'_> {
    /// The windows this batch's trips were written to as open that `progress`
    /// now says are being closed, with the first and last position of those trips.
    fn closing_windows(&self, spec: &WindowSpec, progress: &CloserProgress) -> BTreeMap<WindowStart, (usize, usize)> {
        let mut windows: BTreeMap<WindowStart, (usize, usize)> = BTreeMap::new();
        let Some(closing) = progress.closing_through else { return windows };
        let open_before = |end: EventTime| self.progress.closed_through.is_none_or(|c| end > c);
        for (position, fresh) in self.fresh.iter().enumerate() {
            let Outcome::Trip { facts, .. } = &fresh.outcome else { continue };
            for window in spec.windows_containing(spec.pane_of(facts.event_time)) {
                let end = spec.window_end(window);
                if end <= closing && open_before(end) {
                    windows.entry(window).and_modify(|s| s.1 = position).or_insert((position, position));
                }
            }
        }
        windows
    }

    /// Records above the shard's applied sequence number.
    pub fn new_records(&self) -> usize {
        self.fresh.len()
    }

    /// Distinct (pane, metric, key) partials, i.e. the writes the batch needs.
    pub fn partials(&self) -> usize {
        self.parts.len()
    }
}

/// Decodes, validates, judges the lateness of and pre-aggregates every record
/// the shard has not applied yet, in order. Records not above everything seen
/// before (redeliveries) are left out. `rescued` lists the positions (among
/// the new records) of trips past lateness that an earlier attempt already wrote.
pub fn plan_batch<'a>(
    settings: &IngestSettings,
    shard: &ShardId,
    records: &'a [InputRecord],
    state: &ShardState,
    progress: &CloserProgress,
    now: WallTime,
    rescued: &BTreeSet<usize>,
) -> BatchPlan<'a> {
    let latest_plausible = now.as_event_time().plus_seconds(settings.future_tolerance_s);
    let mut highest = state.applied_seq.as_ref();
    let mut plan = BatchPlan { fresh: Vec::with_capacity(records.len()), parts: Vec::new(), reemit: BTreeMap::new(), progress: *progress };
    let mut aggregate = BatchAggregate::default();
    let mut logged = 0;
    for record in records {
        if highest.is_some_and(|h| record.seq <= *h) {
            continue;
        }
        highest = Some(&record.seq);
        let position = plan.fresh.len();
        let outcome = outcome(settings, &record.data, progress, latest_plausible, rescued.contains(&position));
        match &outcome {
            Outcome::Invalid(reason) if logged < LOGGED_SAMPLES_PER_BATCH => {
                logged += 1;
                tracing::warn!(%shard, seq = %record.seq, %reason, sample = %sample(&record.data), "skipping malformed record");
            }
            Outcome::Trip { facts, reemit } => {
                aggregate.add_trip(position, settings.window.pane_of(facts.event_time), facts);
                for window in reemit {
                    plan.reemit.entry(*window).and_modify(|span| span.1 = position).or_insert((position, position));
                }
            }
            _ => {}
        }
        plan.fresh.push(Fresh { record, outcome });
    }
    plan.parts = aggregate.into_sorted();
    plan
}

/// `rescued`: the trip is past the allowed lateness, but an earlier attempt of
/// this batch already wrote some of its partials (the closer moved on between
/// the attempts), so it is applied in full and its windows emitted again:
/// a trip is either in the documents or counted as dropped, never both or neither.
fn outcome(s: &IngestSettings, data: &[u8], progress: &CloserProgress, latest_plausible: EventTime, rescued: bool) -> Outcome {
    match decode(data) {
        Err(reason) => Outcome::Invalid(reason),
        Ok(Event::Watermark(w)) if w > latest_plausible => Outcome::Invalid(InvalidReason::FutureTimestamp),
        Ok(Event::Watermark(w)) => Outcome::Watermark(w),
        Ok(Event::Trip(trip)) => match validate_trip(&trip, &s.areas, s.precision, latest_plausible) {
            Err(reason) => Outcome::Invalid(reason),
            Ok(facts) => match progress.lateness(&s.window, s.window.pane_of(facts.event_time), s.allowed_lateness_s) {
                Lateness::OnTime => Outcome::Trip { facts, reemit: Vec::new() },
                Lateness::Late { reemit } => Outcome::Trip { facts, reemit },
                Lateness::DroppedLate if rescued => {
                    Outcome::Trip { facts, reemit: progress.emitted_windows(&s.window, s.window.pane_of(facts.event_time)) }
                }
                Lateness::DroppedLate => Outcome::DroppedLate { facts },
            },
        },
    }
}

#[derive(Debug, Default)]
struct PartialWriteResult {
    attempts: u64,
    fenced: u64,
    capacity_units: f64,
    /// The first record of the contribution whose effect is not durable.
    not_durable_from: Option<usize>,
}

/// A printable, truncated view of a record for logs.
fn sample(data: &[u8]) -> String {
    let shown = &data[..data.len().min(SAMPLE_BYTES)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if data.len() > SAMPLE_BYTES {
        text.push_str(&format!("… ({} bytes)", data.len()));
    }
    text
}
