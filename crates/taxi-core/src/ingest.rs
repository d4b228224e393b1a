//! The exactly-once batch algorithm of the aggregate function.
//!
//! Per batch of one shard:
//! 1. load the shard state and the closer's progress;
//! 2. skip records at or below the shard's applied sequence number;
//! 3. decode, validate, judge the lateness of and pre-aggregate the rest by
//!    (pane, metric, key), and name the windows their trips make late or that
//!    the closer has announced it is closing;
//! 4. write the batch item (each touched pane's packed delta or, when its log
//!    has grown, a compaction of it), the re-emit markers and the seals of the
//!    panes the previous commit pruned, with plain puts;
//! 5. commit: write the shard state (watermark, applied sequence, counters,
//!    and per open pane the items that hold it, now with this one) on the
//!    condition that nobody moved it, nor the closer's `closing_through`
//!    stamp in it, since step 1;
//! 6. on a refused condition, reload and judge again; on a store error,
//!    report a retry from the first record not committed.
//!
//! Only a committed state makes an item count, and the state lands whole or
//! not at all, so whatever the delivery history (duplicates, retries, re-cut
//! batches, a crash anywhere, a timed-out invocation's request landing late)
//! every record's effect is applied once: see docs/ARCHITECTURE.md for the
//! argument, and the property tests and the whole-pipeline simulation for
//! the check.

use std::collections::{BTreeMap, BTreeSet};

use crate::aggregate::BatchAggregate;
use crate::event::{decode, validate_trip, Event, InvalidReason, TripFacts};
use crate::geo::{Areas, GeohashPrecision};
use crate::metrics::BatchMetrics;
use crate::pack::{merge_into, pack_batch, Partials};
use crate::seq::SeqNum;
use crate::shard::{Counters, PaneLog, ShardId, ShardState};
use crate::store::{Commit, CommitOutcome, LogWrite, PartialStore, ReemitMarker, Seal, StoreError};
use crate::time::{EventTime, WallTime};
use crate::watermark::{CloserProgress, Lateness, WatermarkMode};
use crate::window::{PaneStart, WindowSpec, WindowStart};

/// How many malformed records per batch are logged with a sample; the rest are only counted.
const LOGGED_SAMPLES_PER_BATCH: usize = 5;
/// Bytes of a malformed record shown in its log line.
const SAMPLE_BYTES: usize = 160;
/// Refused commits in a row ("the state or the closer moved, judge again")
/// before giving up and asking for a retry.
const MAX_CONFLICT_ROUNDS: usize = 3;
/// Open panes a shard state may list (about 12 bytes each in the item, plus
/// their references). A batch that would open more waits, with an error in
/// the log, until the closer closes windows: only a closer that has not
/// advanced for weeks of event time, or a flood of bogus timestamps, gets
/// here, and the shard's growing iterator age pages someone.
pub const MAX_OPEN_PANES: usize = 4096;
/// Items one open pane's log may refer to before a batch touching it
/// compacts it: a reader fetches at most this many items per pane.
pub const MAX_PANE_REFS: usize = 8;
/// References to items the open panes may hold in all (about 20 bytes
/// each); past it a commit also compacts untouched panes, those with the
/// most references first. With [`MAX_OPEN_PANES`] and the pending seals this
/// keeps the state item under about 280 KB, below DynamoDB's 400 KB
/// (tested in `the_largest_state_stays_far_under_the_item_limit`).
pub const MAX_STATE_REFS: usize = 4096;

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
    /// A pane log is compacted when its deltas since the last compaction would
    /// outgrow the compaction and this many bytes: a reader then reads at most
    /// about twice what the pane holds, and each partial is rewritten a
    /// logarithmic number of times over the pane's life. Not a deployment
    /// knob; tests lower it to compact all the time.
    pub compaction_min_bytes: u32,
    /// Panes plus re-emitted windows one commit may touch; a batch that
    /// touches more is committed in several commits. It bounds the references
    /// and markers one commit adds. Not a deployment knob; tests lower it to
    /// split batches.
    pub max_touched_per_commit: usize,
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
            compaction_min_bytes: 16 * 1024,
            max_touched_per_commit: 64,
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

/// What one commit attempt came to.
enum Attempt {
    Committed(ShardState),
    StateMoved(ShardState),
    CloserMoved,
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
        let (mut state, mut progress) = match loaded {
            Ok((state, progress)) => (state.unwrap_or_default(), progress),
            Err(e) => return self.retry(metrics, &first.seq, "loading the shard state", &e),
        };
        metrics.redelivered = records.iter().filter(|r| state.has_applied(&r.seq)).count() as u64;
        metrics.watermark = state.watermark.watermark;

        let mut rest = records;
        let mut refused = 0;
        loop {
            // The closer's stamp in the state may be newer than the closer item read: judge against the later.
            let judged = CloserProgress { closing_through: progress.closing_through.max(state.closing_through), ..progress };
            let plan = plan_batch(&self.settings, shard, rest, &state, &judged, now);
            if plan.fresh.is_empty() {
                let retry_from = plan.held_back.then(|| rest[plan.consumed].seq.clone());
                if let Some(seq) = &retry_from {
                    tracing::error!(%shard, retry_from = %seq, open_panes = state.open_panes.len(), max = MAX_OPEN_PANES,
                        "the shard state lists the most open panes it may: waiting for the closer to close windows (is it running? is another shard stuck?)");
                }
                metrics.retry_requested = retry_from.is_some();
                return BatchReport { retry_from, metrics };
            }
            let attempt = match self.commit(shard, &state, &judged, &plan, now, &mut metrics).await {
                Ok(attempt) => attempt,
                Err(e) => return self.retry(metrics, &plan.fresh[0].record.seq, "committing the batch", &e),
            };
            match attempt {
                Attempt::Committed(next) => {
                    state = next;
                    rest = &rest[plan.consumed..];
                    refused = 0;
                    if rest.is_empty() {
                        return BatchReport { retry_from: None, metrics };
                    }
                    continue;
                }
                Attempt::StateMoved(current) => {
                    tracing::warn!(%shard, "shard state moved by another writer; judging the batch again");
                    state = current;
                }
                Attempt::CloserMoved => match self.store.load_closer_progress(shard).await {
                    Ok(current) => progress = current,
                    Err(e) => return self.retry(metrics, &plan.fresh[0].record.seq, "re-reading the closer's progress", &e),
                },
            }
            refused += 1;
            metrics.refused_commits += 1;
            if refused >= MAX_CONFLICT_ROUNDS {
                let e = StoreError::Unavailable(format!("the commit of {shard} was refused {refused} times in a row"));
                return self.retry(metrics, &plan.fresh[0].record.seq, "committing the batch", &e);
            }
        }
    }

    fn retry(&self, mut metrics: BatchMetrics, from: &SeqNum, doing: &str, error: &StoreError) -> BatchReport {
        tracing::error!(shard = ?metrics.shard, retry_from = %from, retryable = error.is_retryable(), "{doing} failed: {error}");
        metrics.retry_requested = true;
        BatchReport { retry_from: Some(from.clone()), metrics }
    }

    /// Commits one plan against `state` and `progress`, the state and closer announcement it was judged on.
    async fn commit(
        &self,
        shard: &ShardId,
        state: &ShardState,
        progress: &CloserProgress,
        plan: &BatchPlan<'_>,
        now: WallTime,
        metrics: &mut BatchMetrics,
    ) -> Result<Attempt, StoreError> {
        let spec = &self.settings.window;
        let mut next = state.clone();
        let applied = self.fold(&mut next, &plan.fresh, now);
        let seq = next.applied_seq.clone().expect("the plan has fresh records");
        if state.applied_seq.is_none() {
            // A first commit carries the closer's value it was judged against (and checks it).
            next.closing_through = progress.closing_through;
        }
        let sections = self.sections(shard, state, plan).await?;
        let item = (!sections.is_empty()).then(|| pack_batch(shard, &seq, sections.iter().map(|(pane, (partials, _))| (*pane, partials))));
        let mut item_expires_at = now.as_event_time();
        if let Some(item) = &item {
            for (pane, (_, compacted)) in &sections {
                let bytes = item.sections[pane];
                let log = next.open_panes.entry(*pane).or_default();
                *log = if *compacted {
                    PaneLog { refs: vec![item.log_ref], compacted: bytes, since: 0 }
                } else {
                    let mut refs = std::mem::take(&mut log.refs);
                    refs.push(item.log_ref);
                    PaneLog { refs, since: log.since + bytes, ..*log }
                };
                item_expires_at = item_expires_at.max(self.pane_expires_at(*pane, now));
            }
        }
        // The previous commit's prunes are sealed by this one; this one's, by the next.
        let seals: Vec<Seal> = match &state.applied_seq {
            Some(sealed_at) => state
                .sealing
                .iter()
                .map(|(pane, refs)| Seal {
                    pane: *pane,
                    sealed_at: sealed_at.clone(),
                    refs: refs.clone(),
                    expires_at: self.pane_expires_at(*pane, now),
                })
                .collect(),
            None => Vec::new(),
        };
        next.sealing.clear();
        // Panes whose every window the closer has emitted need no tracking: late data
        // for them travels by re-emit markers, and re-emission finds them by their seal.
        if progress.closed_through.is_some() {
            let closed: Vec<_> = next.open_panes.keys().copied().filter(|pane| every_window_closed(spec, *pane, progress)).collect();
            for pane in closed {
                let log = next.open_panes.remove(&pane).expect("listed above");
                next.sealing.insert(pane, log.refs);
            }
        }
        let markers = plan
            .reemit
            .iter()
            // A marker outlives the partials it points to by one more retention, so
            // that a closer kept from them that long still finds it, and refuses
            // the window as expired instead of losing it without a trace.
            .map(|w| {
                let expires_at = self.expires_at(spec.window_end(*w), now).plus_seconds(self.settings.retention_s);
                ReemitMarker { window: *w, seq: seq.clone(), expires_at }
            })
            .collect();
        let write = LogWrite { item, item_expires_at, markers, seals };
        self.store.write_log(shard, &write).await?;
        let commit = Commit { shard, expected: state.applied_seq.as_ref(), state: &next };
        match self.store.commit(&commit).await? {
            CommitOutcome::Committed { capacity_units } => {
                metrics.commits += 1;
                metrics.batch_item_parts += write.item.as_ref().map_or(0, |item| item.parts.len() as u64);
                metrics.compactions += sections.values().filter(|(_, compacted)| *compacted).count() as u64;
                metrics.marker_writes += write.markers.len() as u64;
                metrics.consumed_capacity_units += capacity_units;
                metrics.applied.add(&applied);
                metrics.watermark = next.watermark.watermark;
                Ok(Attempt::Committed(next))
            }
            CommitOutcome::StateMoved { current } => Ok(Attempt::StateMoved(*current)),
            CommitOutcome::CloserMoved => Ok(Attempt::CloserMoved),
        }
    }

    /// The batch item's sections: each touched pane's delta, or a compaction
    /// of its log where the log has outgrown its last compaction or refers
    /// to too many items; and compactions of untouched panes while the state
    /// refers to too many items in all. `true` marks a compaction.
    async fn sections(
        &self,
        shard: &ShardId,
        state: &ShardState,
        plan: &BatchPlan<'_>,
    ) -> Result<BTreeMap<PaneStart, (Partials, bool)>, StoreError> {
        let mut sections = BTreeMap::new();
        for (pane, delta) in &plan.panes {
            let log = state.open_panes.get(pane);
            let bytes = crate::pack::pack(delta).len() as u32;
            let outgrown = log.is_some_and(|log| {
                log.refs.len() + 1 > MAX_PANE_REFS || log.since + bytes > log.compacted.max(self.settings.compaction_min_bytes)
            });
            if !outgrown {
                sections.insert(*pane, (delta.clone(), false));
                continue;
            }
            let mut whole = self.read_log(shard, *pane, state).await?;
            merge_into(&mut whole, delta.iter().map(|(k, v)| (*k, *v)));
            sections.insert(*pane, (whole, true));
        }
        let mut refs = state.open_panes.values().map(|log| log.refs.len()).sum::<usize>() + plan.panes.len();
        refs -= sections.iter().filter(|(_, (_, compacted))| *compacted).map(|(pane, _)| state.open_panes[pane].refs.len()).sum::<usize>();
        let mut untouched: Vec<(&PaneStart, &PaneLog)> =
            state.open_panes.iter().filter(|(pane, log)| !plan.panes.contains_key(pane) && log.refs.len() > 1).collect();
        untouched.sort_by_key(|(pane, log)| (std::cmp::Reverse(log.refs.len()), **pane));
        for (pane, log) in untouched {
            if refs <= MAX_STATE_REFS {
                break;
            }
            sections.insert(*pane, (self.read_log(shard, *pane, state).await?, true));
            refs -= log.refs.len() - 1;
        }
        Ok(sections)
    }

    async fn read_log(&self, shard: &ShardId, pane: PaneStart, state: &ShardState) -> Result<Partials, StoreError> {
        let refs = state.open_panes.get(&pane).map(|log| log.refs.as_slice()).unwrap_or_default();
        self.store.read_pane(shard, pane, refs).await
    }

    /// The shard state after `records`, and the counters they add.
    fn fold(&self, state: &mut ShardState, records: &[Fresh<'_>], now: WallTime) -> Counters {
        let mode = self.settings.watermark_mode;
        let mut added = Counters { records: records.len() as u64, ..Counters::default() };
        for f in records {
            match &f.outcome {
                Outcome::Trip { facts, reemit } => {
                    added.trips_aggregated += 1;
                    added.late += u64::from(!reemit.is_empty());
                    state.watermark.observe_trip(facts.event_time, mode);
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
        state.updated_at = Some(now);
        state.counters.add(&added);
        added
    }

    /// When the items holding `pane`'s partials may expire.
    fn pane_expires_at(&self, pane: PaneStart, now: WallTime) -> EventTime {
        let spec = &self.settings.window;
        self.expires_at(spec.window_end(spec.last_window_containing(pane)), now)
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

/// What (a prefix of) a batch means, decided without I/O: the records the
/// shard has not applied yet with what each turned out to be, their partials
/// by pane, and the windows to emit again.
pub struct BatchPlan<'a> {
    fresh: Vec<Fresh<'a>>,
    panes: BTreeMap<PaneStart, Partials>,
    /// Windows already emitted (or being closed) that this plan's trips must be emitted again for.
    reemit: BTreeSet<WindowStart>,
    /// Records of the batch the plan covers, from its start; the rest go to a later commit.
    consumed: usize,
    /// The plan stopped short because the shard state lists [`MAX_OPEN_PANES`].
    held_back: bool,
}

impl BatchPlan<'_> {
    /// The partials by pane.
    pub fn panes(&self) -> &BTreeMap<PaneStart, Partials> {
        &self.panes
    }

    /// Distinct (pane, metric, key) partials.
    pub fn partials(&self) -> usize {
        self.panes.values().map(BTreeMap::len).sum()
    }
}

/// Whether the closer has emitted every window containing `pane`.
fn every_window_closed(spec: &WindowSpec, pane: PaneStart, progress: &CloserProgress) -> bool {
    progress.closed_through.is_some_and(|closed| spec.window_end(spec.last_window_containing(pane)) <= closed)
}

/// Decodes, validates, judges the lateness of and pre-aggregates the records
/// the shard has not applied yet, in order, as far as one commit can take
/// them. Records not above everything seen before (redeliveries) are left out.
/// A trip in a window the closer has announced it is closing (but not yet
/// closed) names that window for re-emission: the closer may have read the
/// window's partials already.
pub fn plan_batch<'a>(
    settings: &IngestSettings,
    shard: &ShardId,
    records: &'a [InputRecord],
    state: &ShardState,
    progress: &CloserProgress,
    now: WallTime,
) -> BatchPlan<'a> {
    let spec = &settings.window;
    let latest_plausible = now.as_event_time().plus_seconds(settings.future_tolerance_s);
    let mut highest = state.applied_seq.as_ref();
    let mut plan = BatchPlan {
        fresh: Vec::with_capacity(records.len()),
        panes: BTreeMap::new(),
        reemit: BTreeSet::new(),
        consumed: 0,
        held_back: false,
    };
    let mut aggregate = BatchAggregate::default();
    let mut touched_panes: BTreeSet<PaneStart> = BTreeSet::new();
    // The panes the commit keeps open: it prunes those the closer is done with,
    // so a state at the cap makes room as soon as the closer closes windows.
    let still_open = state.open_panes.keys().filter(|pane| !every_window_closed(spec, **pane, progress)).count();
    let mut new_panes = 0;
    let mut logged = 0;
    for record in records {
        if highest.is_some_and(|h| record.seq <= *h) {
            plan.consumed += 1;
            continue;
        }
        let outcome = outcome(settings, &record.data, progress, latest_plausible);
        match &outcome {
            Outcome::Invalid(reason) if logged < LOGGED_SAMPLES_PER_BATCH => {
                logged += 1;
                tracing::warn!(%shard, seq = %record.seq, %reason, sample = %sample(&record.data), "skipping malformed record");
            }
            Outcome::Trip { facts, reemit } => {
                let pane = spec.pane_of(facts.event_time);
                let windows: Vec<WindowStart> = reemit.iter().copied().chain(closing_windows(spec, pane, progress)).collect();
                let opens = !touched_panes.contains(&pane);
                let opens_in_state = opens && !state.open_panes.contains_key(&pane);
                let touched = touched_panes.len()
                    + plan.reemit.len()
                    + usize::from(opens)
                    + windows.iter().filter(|w| !plan.reemit.contains(w)).count();
                if !plan.fresh.is_empty() && touched > settings.max_touched_per_commit {
                    break;
                }
                if opens_in_state && still_open + new_panes >= MAX_OPEN_PANES {
                    plan.held_back = true;
                    break;
                }
                new_panes += usize::from(opens_in_state);
                touched_panes.insert(pane);
                plan.reemit.extend(windows);
                aggregate.add_trip(pane, facts);
            }
            _ => {}
        }
        highest = Some(&record.seq);
        plan.consumed += 1;
        plan.fresh.push(Fresh { record, outcome });
    }
    plan.panes = aggregate.into_panes();
    plan
}

/// The windows of `pane` the closer has announced it is closing and has not closed yet.
fn closing_windows<'a>(spec: &'a WindowSpec, pane: PaneStart, progress: &CloserProgress) -> impl Iterator<Item = WindowStart> + 'a {
    let closing = progress.closing_through;
    let closed = progress.closed_through;
    spec.windows_containing(pane).filter(move |w| {
        let end = spec.window_end(*w);
        closing.is_some_and(|c| end <= c) && closed.is_none_or(|c| end > c)
    })
}

fn outcome(s: &IngestSettings, data: &[u8], progress: &CloserProgress, latest_plausible: EventTime) -> Outcome {
    match decode(data) {
        Err(reason) => Outcome::Invalid(reason),
        Ok(Event::Watermark(w)) if w > latest_plausible => Outcome::Invalid(InvalidReason::FutureTimestamp),
        Ok(Event::Watermark(w)) => Outcome::Watermark(w),
        Ok(Event::Trip(trip)) => match validate_trip(&trip, &s.areas, s.precision, latest_plausible) {
            Err(reason) => Outcome::Invalid(reason),
            Ok(facts) => match progress.lateness(&s.window, s.window.pane_of(facts.event_time), s.allowed_lateness_s) {
                Lateness::OnTime => Outcome::Trip { facts, reemit: Vec::new() },
                Lateness::Late { reemit } => Outcome::Trip { facts, reemit },
                Lateness::DroppedLate => Outcome::DroppedLate { facts },
            },
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{pack_panes, LogRef};

    #[test]
    fn the_largest_state_stays_far_under_the_item_limit() {
        // Every bound at once: the most open panes, the most references plus a commit's
        // worth, as many pending seals, and digests that take the most bytes.
        let log_ref = |i: usize| LogRef { digest: u128::MAX - i as u128, parts: u16::MAX };
        let refs_in_all = MAX_STATE_REFS + IngestSettings::default().max_touched_per_commit;
        let mut state = ShardState::default();
        for p in 0..MAX_OPEN_PANES {
            let per_pane = refs_in_all / MAX_OPEN_PANES + usize::from(p < refs_in_all % MAX_OPEN_PANES);
            let refs: Vec<LogRef> = (0..per_pane).map(|r| log_ref(2 * p + r)).collect();
            state
                .open_panes
                .insert(PaneStart(2_000_000_000 + 600 * p as i64), PaneLog { refs: refs.clone(), compacted: u32::MAX, since: u32::MAX });
            state.sealing.insert(PaneStart(1_000_000_000 + 600 * p as i64), refs);
        }
        assert_eq!(state.ref_count(), 2 * refs_in_all);
        // The rest of the item (keys, counters, watermark, sequence number) is under 2 KB.
        let bytes = pack_panes(&state).len() + 2048;
        assert!(bytes < 320 * 1024, "{bytes} bytes, against DynamoDB's 400 KB");
    }
}
