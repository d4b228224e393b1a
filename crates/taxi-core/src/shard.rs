//! The durable state of one shard: how far it has been applied, its watermark,
//! when it last reported, and exactly-once counters of what it has seen.

use std::collections::BTreeMap;
use std::fmt;

use crate::counts::Counts;
use crate::event::InvalidReason;
use crate::seq::SeqNum;
use crate::time::WallTime;
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
    /// Panes this shard has written partials to whose windows the closer has
    /// not all closed yet: how the closer learns which windows hold data;
    /// with each, the size of its pane log, which decides when to compact it.
    pub open_panes: BTreeMap<PaneStart, PaneLogSize>,
}

/// Payload bytes of a pane log: of its newest compaction, and of the deltas since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaneLogSize {
    pub compacted: u32,
    pub since: u32,
}

impl ShardState {
    pub fn has_applied(&self, seq: &SeqNum) -> bool {
        self.applied_seq.as_ref().is_some_and(|applied| seq <= applied)
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
