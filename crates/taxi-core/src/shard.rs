//! The durable state of one shard: how far it has been applied, its watermark,
//! when it last reported, and exactly-once counters of what it has seen.

use std::collections::BTreeMap;
use std::fmt;

use crate::counts::Counts;
use crate::event::InvalidReason;
use crate::pack::LogRef;
use crate::seq::SeqNum;
use crate::time::{EventTime, WallTime};
use crate::watermark::ShardWatermark;
use crate::window::PaneStart;

/// A Kinesis shard id such as `shardId-000000000003`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub String);

impl ShardId {
    /// The shard id from a Lambda Kinesis record's `eventID`
    /// (`shardId-000000000000:4954...`).
    pub fn from_event_id(event_id: &str) -> Option<ShardId> {
        let (shard, _) = event_id.split_once(':')?;
        (!shard.is_empty()).then(|| ShardId(shard.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counts of invalid records, one per [`InvalidReason`].
pub type ReasonCounts = Counts<InvalidReason, { InvalidReason::ALL.len() }>;

/// What a shard's applied records were. Every applied record is counted in
/// exactly one of `trips_aggregated`, `watermark_events`, `invalid` or
/// `dropped_late`; `late` counts the aggregated trips that make an already
/// emitted window (still within the allowed lateness) be emitted again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub records: u64,
    pub trips_aggregated: u64,
    pub watermark_events: u64,
    pub invalid: ReasonCounts,
    pub late: u64,
    pub dropped_late: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.records += other.records;
        self.trips_aggregated += other.trips_aggregated;
        self.watermark_events += other.watermark_events;
        self.invalid.add_all(&other.invalid);
        self.late += other.late;
        self.dropped_late += other.dropped_late;
    }
}

/// The durable state of one shard (item `S#<shard_id>` / `STATE`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardState {
    /// The last record whose every effect is durable.
    pub applied_seq: Option<SeqNum>,
    pub watermark: ShardWatermark,
    /// Wall time of the last advance; the closer judges idleness from it.
    pub updated_at: Option<WallTime>,
    pub counters: Counters,
    /// The closer's `closing_through` as the closer stamped it into this item
    /// (see [`crate::closer::CloserStore::stamp_shard_states`]). A commit
    /// carries it unchanged and is refused if it moved since the batch was judged.
    pub closing_through: Option<EventTime>,
    /// Panes this shard has written partials to whose windows the closer has
    /// not all closed yet: how the closer learns which windows hold data, and
    /// where each pane's partials are (the batch items its log refers to).
    pub open_panes: BTreeMap<PaneStart, PaneLog>,
    /// Panes pruned from `open_panes` by the last commit (their windows are
    /// closed), with the items that hold their partials: the next commit
    /// writes each into a seal item so that re-emission still finds them.
    pub sealing: BTreeMap<PaneStart, Vec<LogRef>>,
}

/// One open pane's log: the batch items holding its partials (oldest first;
/// the first is a compaction when `compacted` > 0), and the payload bytes of
/// the pane's section in its newest compaction and in the deltas since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaneLog {
    pub refs: Vec<LogRef>,
    pub compacted: u32,
    pub since: u32,
}

impl ShardState {
    pub fn has_applied(&self, seq: &SeqNum) -> bool {
        self.applied_seq.as_ref().is_some_and(|applied| seq <= applied)
    }

    /// The items this state says hold `pane`'s partials: its open log and a pending seal.
    pub fn refs_of(&self, pane: PaneStart) -> Vec<LogRef> {
        let open = self.open_panes.get(&pane).map(|log| log.refs.as_slice()).unwrap_or_default();
        let sealing = self.sealing.get(&pane).map(Vec::as_slice).unwrap_or_default();
        let mut refs: Vec<LogRef> = open.iter().chain(sealing).copied().collect();
        refs.sort_unstable();
        refs.dedup();
        refs
    }

    /// References to batch items the state holds (what bounds its size).
    pub fn ref_count(&self) -> usize {
        self.open_panes.values().map(|log| log.refs.len()).sum::<usize>() + self.sealing.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_id_from_event_id() {
        assert_eq!(
            ShardId::from_event_id("shardId-000000000003:49545115243490985018280067714973144582180062593244200961"),
            Some(ShardId("shardId-000000000003".into()))
        );
        assert_eq!(ShardId::from_event_id("no-colon"), None);
        assert_eq!(ShardId::from_event_id(":123"), None);
    }
}

/// A shard as Kinesis `ListShards` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamShard {
    pub id: ShardId,
    pub parent: Option<ShardId>,
    pub adjacent_parent: Option<ShardId>,
    /// The lowest hash key the shard owns (decimal), for `ExplicitHashKey`.
    pub starting_hash_key: String,
    /// A closed shard (after a split or merge) takes no more records.
    pub closed: bool,
}

impl StreamShard {
    pub fn parents(&self) -> impl Iterator<Item = &ShardId> {
        self.parent.iter().chain(self.adjacent_parent.iter())
    }
}
