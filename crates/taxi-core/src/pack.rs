//! Partials in packed form, and the batch items that store them.
//!
//! Each batch commit writes one *batch item*: for every pane the batch
//! touches, a section with the batch's partials of that pane (a delta), or,
//! when the pane's log has grown, everything the pane holds (a compaction).
//! The shard state lists, per open pane, the items that hold its partials
//! since its newest compaction ([`LogRef`]), so a reader fetches exactly
//! those; an item no committed state lists (an attempt that died before its
//! commit) is never read. Items are named by a digest of their content and
//! commit, so two attempts of one batch never overwrite each other's item.
//!
//! A section's payload is the partials, sorted, as varints (postcard): the
//! cells as integers, delta-coded within a group of the same metric, about
//! five bytes per partial instead of a ~60-byte DynamoDB item each. An item
//! larger than [`MAX_PART_BYTES`] is split into parts, each its own DynamoDB
//! item, so every item stays far below DynamoDB's 400 KB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::aggregate::{MetricKey, PartialValue};
use crate::geo::{Airport, Cell};
use crate::seq::SeqNum;
use crate::shard::ShardId;
use crate::window::PaneStart;

/// One pane's partials of one shard, in key order.
pub type Partials = BTreeMap<MetricKey, PartialValue>;

/// The largest payload of one stored item. DynamoDB items are at most
/// 400 KB; a batch item larger than this is split into several parts, so an
/// item stays far below the limit whatever the load.
pub const MAX_PART_BYTES: usize = 64 * 1024;

const FORMAT_VERSION: u8 = 1;
const BATCH_FORMAT_VERSION: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a packed partials payload is corrupt or of an unknown format: {0}")]
pub struct PackError(String);

#[derive(Serialize, Deserialize)]
struct Packed {
    version: u8,
    groups: Vec<Group>,
}

/// Consecutive partials of one metric (and airport, and cell length).
#[derive(Serialize, Deserialize)]
struct Group {
    metric: u8,
    airport: u8,
    cell_len: u8,
    entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    /// The cell's bits minus the previous entry's in the group.
    cell_delta: u64,
    count: u64,
    sum_s: u64,
}

const PICKUPS: u8 = 0;
const AIRPORT_CELL: u8 = 1;
const AIRPORT: u8 = 2;

/// (metric, airport, cell length) and the cell's bits.
fn group_of(key: &MetricKey) -> ((u8, u8, u8), u64) {
    let airport_index = |a: &Airport| Airport::ALL.iter().position(|x| x == a).unwrap_or(0) as u8;
    match key {
        MetricKey::Pickups(cell) => {
            let (len, bits) = cell.to_bits();
            ((PICKUPS, 0, len), bits)
        }
        MetricKey::AirportCell(airport, cell) => {
            let (len, bits) = cell.to_bits();
            ((AIRPORT_CELL, airport_index(airport), len), bits)
        }
        MetricKey::Airport(airport) => ((AIRPORT, airport_index(airport), 0), 0),
    }
}

fn key_of(group: &Group, bits: u64) -> Option<MetricKey> {
    let airport = || Airport::ALL.get(usize::from(group.airport)).copied();
    match group.metric {
        PICKUPS => Some(MetricKey::Pickups(Cell::from_bits(group.cell_len, bits)?)),
        AIRPORT_CELL => Some(MetricKey::AirportCell(airport()?, Cell::from_bits(group.cell_len, bits)?)),
        AIRPORT => Some(MetricKey::Airport(airport()?)),
        _ => None,
    }
}

/// The partials as one payload.
pub fn pack<'a>(partials: impl IntoIterator<Item = (&'a MetricKey, &'a PartialValue)>) -> Vec<u8> {
    let mut groups: Vec<Group> = Vec::new();
    let mut previous = 0;
    for (key, value) in partials {
        let ((metric, airport, cell_len), bits) = group_of(key);
        let same_group = groups.last().is_some_and(|g| (g.metric, g.airport, g.cell_len) == (metric, airport, cell_len));
        if !same_group {
            groups.push(Group { metric, airport, cell_len, entries: Vec::new() });
            previous = 0;
        }
        groups.last_mut().expect("pushed above").entries.push(Entry {
            cell_delta: bits - previous,
            count: value.count,
            sum_s: value.sum_s,
        });
        previous = bits;
    }
    encode(groups)
}

fn encode(groups: Vec<Group>) -> Vec<u8> {
    postcard::to_allocvec(&Packed { version: FORMAT_VERSION, groups }).expect("encoding into a Vec cannot fail")
}

/// The partials of one payload, in key order.
pub fn unpack(payload: &[u8]) -> Result<Vec<(MetricKey, PartialValue)>, PackError> {
    let packed: Packed = postcard::from_bytes(payload).map_err(|e| PackError(e.to_string()))?;
    if packed.version != FORMAT_VERSION {
        return Err(PackError(format!("format version {} (this build reads {FORMAT_VERSION})", packed.version)));
    }
    let mut partials = Vec::new();
    for group in &packed.groups {
        let mut bits = 0u64;
        for entry in &group.entries {
            bits = bits.checked_add(entry.cell_delta).ok_or_else(|| PackError("cell overflow".into()))?;
            let key = key_of(group, bits).ok_or_else(|| PackError(format!("bad key in group {}/{}", group.metric, group.cell_len)))?;
            partials.push((key, PartialValue { count: entry.count, sum_s: entry.sum_s }));
        }
    }
    Ok(partials)
}

/// Adds `more` into `into`.
pub fn merge_into(into: &mut Partials, more: impl IntoIterator<Item = (MetricKey, PartialValue)>) {
    for (key, value) in more {
        into.entry(key).or_default().add(value);
    }
}

/// A reference to one batch item: the digest that names it, and its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogRef {
    pub digest: u128,
    pub parts: u16,
}

impl LogRef {
    /// The digest as stored in a sort key: 32 hex digits.
    pub fn digest_hex(&self) -> String {
        format!("{:032x}", self.digest)
    }

    pub fn parse_digest(hex: &str) -> Option<u128> {
        (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok()).flatten()
    }
}

#[derive(Serialize, Deserialize)]
struct BatchPayload {
    version: u8,
    sections: Vec<Section>,
}

#[derive(Serialize, Deserialize)]
struct Section {
    pane: i64,
    /// The pane's partials, [`pack`]ed.
    partials: Vec<u8>,
}

/// One commit's batch item, packed and split into parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    pub log_ref: LogRef,
    pub parts: Vec<Vec<u8>>,
    /// Each pane's section and its payload bytes.
    pub sections: BTreeMap<PaneStart, u32>,
}

impl BatchItem {
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }
}

/// The batch item of the commit of `shard` up to `seq` that holds these panes' partials.
/// Its digest covers the shard, the commit and the content, so it names this item alone.
pub fn pack_batch<'a>(shard: &ShardId, seq: &SeqNum, panes: impl IntoIterator<Item = (PaneStart, &'a Partials)>) -> BatchItem {
    let sections: Vec<Section> = panes.into_iter().map(|(pane, partials)| Section { pane: pane.0, partials: pack(partials) }).collect();
    let sizes = sections.iter().map(|s| (PaneStart(s.pane), s.partials.len() as u32)).collect();
    let blob = postcard::to_allocvec(&BatchPayload { version: BATCH_FORMAT_VERSION, sections }).expect("encoding into a Vec cannot fail");
    let mut hasher = Sha256::new();
    hasher.update(shard.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(seq.to_sort_key().as_bytes());
    hasher.update([0]);
    hasher.update(&blob);
    let hash = hasher.finalize();
    let digest = u128::from_be_bytes(hash[..16].try_into().expect("a SHA-256 hash has 32 bytes"));
    let parts: Vec<Vec<u8>> = blob.chunks(MAX_PART_BYTES).map(<[u8]>::to_vec).collect();
    BatchItem { log_ref: LogRef { digest, parts: parts.len() as u16 }, parts, sections: sizes }
}

/// The partials of `pane` in a batch item, given its parts in order.
pub fn pane_partials(parts: &[Vec<u8>], pane: PaneStart) -> Result<Vec<(MetricKey, PartialValue)>, PackError> {
    let blob = parts.concat();
    let payload: BatchPayload = postcard::from_bytes(&blob).map_err(|e| PackError(e.to_string()))?;
    if payload.version != BATCH_FORMAT_VERSION {
        return Err(PackError(format!("batch format version {} (this build reads {BATCH_FORMAT_VERSION})", payload.version)));
    }
    match payload.sections.iter().find(|s| s.pane == pane.0) {
        Some(section) => unpack(&section.partials),
        None => Ok(Vec::new()),
    }
}

/// A seal's references, packed.
pub fn pack_refs(refs: &[LogRef]) -> Vec<u8> {
    postcard::to_allocvec(refs).expect("encoding into a Vec cannot fail")
}

pub fn unpack_refs(bytes: &[u8]) -> Result<Vec<LogRef>, PackError> {
    postcard::from_bytes(bytes).map_err(|e| PackError(e.to_string()))
}

/// The shard state's pane lists, packed: (pane, log) pairs and pending seals.
#[derive(Serialize, Deserialize)]
struct PanesPayload {
    version: u8,
    open: Vec<(i64, Vec<LogRef>, u32, u32)>,
    sealing: Vec<(i64, Vec<LogRef>)>,
}

/// A shard state's `open_panes` and `sealing`, as one binary attribute.
pub fn pack_panes(state: &crate::shard::ShardState) -> Vec<u8> {
    let open = state.open_panes.iter().map(|(pane, log)| (pane.0, log.refs.clone(), log.compacted, log.since)).collect();
    let sealing = state.sealing.iter().map(|(pane, refs)| (pane.0, refs.clone())).collect();
    postcard::to_allocvec(&PanesPayload { version: BATCH_FORMAT_VERSION, open, sealing }).expect("encoding into a Vec cannot fail")
}

/// The inverse of [`pack_panes`], into `state`.
pub fn unpack_panes(bytes: &[u8], state: &mut crate::shard::ShardState) -> Result<(), PackError> {
    let payload: PanesPayload = postcard::from_bytes(bytes).map_err(|e| PackError(e.to_string()))?;
    if payload.version != BATCH_FORMAT_VERSION {
        return Err(PackError(format!("pane list format version {} (this build reads {BATCH_FORMAT_VERSION})", payload.version)));
    }
    state.open_panes = payload
        .open
        .into_iter()
        .map(|(pane, refs, compacted, since)| (PaneStart(pane), crate::shard::PaneLog { refs, compacted, since }))
        .collect();
    state.sealing = payload.sealing.into_iter().map(|(pane, refs)| (PaneStart(pane), refs)).collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(kind: u8, cell: u64, len: u8) -> MetricKey {
        let cell = Cell::from_bits(len, cell % (1u64 << (5 * u32::from(len)))).unwrap();
        match kind % 3 {
            0 => MetricKey::Pickups(cell),
            1 => MetricKey::AirportCell(Airport::ALL[cell.to_bits().1 as usize % 2], cell),
            _ => MetricKey::Airport(Airport::ALL[cell.to_bits().1 as usize % 2]),
        }
    }

    fn partials() -> impl Strategy<Value = Partials> {
        proptest::collection::vec((0u8..3, any::<u64>(), 1u8..=12, 1u64..1_000_000, any::<u32>()), 0..300).prop_map(|entries| {
            let mut partials = Partials::new();
            for (kind, cell, len, count, sum) in entries {
                partials.insert(key(kind, cell, len), PartialValue { count, sum_s: u64::from(sum) });
            }
            partials
        })
    }

    fn shard() -> ShardId {
        ShardId("shardId-000000000001".into())
    }

    fn seq(n: u64) -> SeqNum {
        SeqNum::parse(&n.to_string()).unwrap()
    }

    proptest! {
        #[test]
        fn packing_round_trips(partials in partials()) {
            let back: Partials = unpack(&pack(&partials)).unwrap().into_iter().collect();
            prop_assert_eq!(back, partials);
        }

        #[test]
        fn a_batch_item_gives_back_each_panes_partials(panes in proptest::collection::btree_map(0i64..50, partials(), 0..6)) {
            let panes: BTreeMap<PaneStart, Partials> = panes.into_iter().map(|(p, v)| (PaneStart(p * 600), v)).collect();
            let item = pack_batch(&shard(), &seq(7), panes.iter().map(|(p, v)| (*p, v)));
            prop_assert_eq!(item.log_ref.parts as usize, item.parts.len());
            for (pane, partials) in &panes {
                let back: Partials = pane_partials(&item.parts, *pane).unwrap().into_iter().collect();
                prop_assert_eq!(&back, partials);
            }
            prop_assert!(pane_partials(&item.parts, PaneStart(-600)).unwrap().is_empty());
        }
    }

    #[test]
    fn a_city_of_partials_packs_small_and_splits_into_bounded_parts() {
        // Every geohash-6 cell of a 32 x 32 block, each with a pickup and an airport-cell partial.
        let base = Cell::parse("dr5").unwrap().to_bits().1 << 15;
        let mut partials = Partials::new();
        for i in 0..(1u64 << 15) {
            let cell = Cell::from_bits(6, base + i).unwrap();
            partials.insert(MetricKey::Pickups(cell), PartialValue { count: 3, sum_s: 2_400 });
            partials.insert(MetricKey::AirportCell(Airport::Jfk, cell), PartialValue { count: 1, sum_s: 3_000 });
        }
        let item = pack_batch(&shard(), &seq(1), [(PaneStart(0), &partials)]);
        assert!(item.parts.len() > 1 && item.parts.iter().all(|p| p.len() <= MAX_PART_BYTES), "{} parts", item.parts.len());
        assert!(item.bytes() <= partials.len() * 5, "{} bytes for {} partials", item.bytes(), partials.len());
        assert_eq!(pane_partials(&item.parts, PaneStart(0)).unwrap().len(), partials.len());
    }

    #[test]
    fn the_digest_names_one_commit_and_content() {
        let partials = Partials::from([(MetricKey::Airport(Airport::Jfk), PartialValue { count: 1, sum_s: 10 })]);
        let other = Partials::from([(MetricKey::Airport(Airport::Jfk), PartialValue { count: 2, sum_s: 10 })]);
        let digest = |shard: &ShardId, n: u64, p: &Partials| pack_batch(shard, &seq(n), [(PaneStart(0), p)]).log_ref.digest;
        let a = digest(&shard(), 5, &partials);
        assert_eq!(a, digest(&shard(), 5, &partials), "deterministic");
        assert_ne!(a, digest(&shard(), 6, &partials), "another commit");
        assert_ne!(a, digest(&shard(), 5, &other), "another content");
        assert_ne!(a, digest(&ShardId("shardId-000000000002".into()), 5, &partials), "another shard");
        let log_ref = LogRef { digest: a, parts: 1 };
        assert_eq!(LogRef::parse_digest(&log_ref.digest_hex()), Some(a));
    }

    #[test]
    fn corrupt_payloads_are_refused() {
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[9, 0]).is_err(), "unknown version");
        assert!(unpack(&[FORMAT_VERSION, 1, 7, 0, 1, 1, 0, 1, 1]).is_err(), "unknown metric");
        assert!(pane_partials(&[vec![1, 0]], PaneStart(0)).is_err(), "the first layout's payload");
        let mut state = crate::shard::ShardState::default();
        assert!(unpack_panes(&[7], &mut state).is_err());
    }

    #[test]
    fn pane_lists_round_trip() {
        let r = |d: u128| LogRef { digest: d, parts: 1 };
        let mut state = crate::shard::ShardState::default();
        state.open_panes.insert(PaneStart(600), crate::shard::PaneLog { refs: vec![r(1), r(u128::MAX)], compacted: 10, since: 3 });
        state.sealing.insert(PaneStart(0), vec![r(2)]);
        let mut back = crate::shard::ShardState::default();
        unpack_panes(&pack_panes(&state), &mut back).unwrap();
        assert_eq!(back, state);
    }
}
