//! Partials in packed form, and the pane log that stores them.
//!
//! One shard's partials of one pane live in a *pane log*: an append-only list
//! of items keyed by the sequence number of the batch commit that wrote them.
//! Each commit that touches the pane appends its delta; now and then a commit
//! appends a *compaction* instead, which holds everything before it plus its
//! own delta. A reader therefore needs only the newest compaction and the
//! deltas after it: [`PaneLogReader`] takes the items newest first and says
//! when it has enough, so a read costs what the pane holds, not how many
//! batches fed it.
//!
//! An item's payload is the partials, sorted, as varints (postcard): the
//! cells as integers, delta-coded within a group of the same metric, about
//! five bytes per partial instead of a ~60-byte DynamoDB item each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::{MetricKey, PartialValue};
use crate::geo::{Airport, Cell};
use crate::seq::SeqNum;

/// One pane's partials of one shard, in key order.
pub type Partials = BTreeMap<MetricKey, PartialValue>;

/// The largest payload of one item. DynamoDB items are at most 400 KB; a
/// pane's partials larger than this are split into several parts, so an item
/// stays far below the limit whatever the load.
pub const MAX_PART_BYTES: usize = 64 * 1024;

const FORMAT_VERSION: u8 = 1;

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

fn varint_len(n: u64) -> usize {
    (64 - n.leading_zeros() as usize).max(1).div_ceil(7)
}

/// The partials as one or more payloads of at most [`MAX_PART_BYTES`] each
/// (none for no partials). Parts are independent: each decodes alone.
pub fn pack<'a>(partials: impl IntoIterator<Item = (&'a MetricKey, &'a PartialValue)>) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut bytes = 0;
    let mut previous = 0;
    for (key, value) in partials {
        let ((metric, airport, cell_len), bits) = group_of(key);
        let same_group = groups.last().is_some_and(|g| (g.metric, g.airport, g.cell_len) == (metric, airport, cell_len));
        if !same_group {
            groups.push(Group { metric, airport, cell_len, entries: Vec::new() });
            previous = 0;
            bytes += 8;
        }
        let entry = Entry { cell_delta: bits - previous, count: value.count, sum_s: value.sum_s };
        previous = bits;
        bytes += varint_len(entry.cell_delta) + varint_len(entry.count) + varint_len(entry.sum_s);
        groups.last_mut().expect("pushed above").entries.push(entry);
        if bytes + 64 >= MAX_PART_BYTES {
            parts.push(encode(std::mem::take(&mut groups)));
            bytes = 0;
        }
    }
    if !groups.is_empty() {
        parts.push(encode(groups));
    }
    parts
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

/// One item of a pane log as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogItem {
    /// The commit that wrote it.
    pub seq: SeqNum,
    /// This item's part number among `parts` (one commit's payload may span several items).
    pub part: u16,
    pub parts: u16,
    /// A compaction: holds every earlier item of the log too.
    pub compacted: bool,
    pub payload: Vec<u8>,
}

/// Reads a pane log newest item first, and stops at the newest compaction.
#[derive(Debug, Default)]
pub struct PaneLogReader {
    partials: Partials,
    /// The compaction found: its commit, and how many of its parts are still unread.
    compaction: Option<(SeqNum, u16)>,
    done: bool,
    items: usize,
    bytes: usize,
}

impl PaneLogReader {
    /// Takes the next older item; items after the reader is done are ignored.
    pub fn push(&mut self, item: &LogItem) -> Result<(), PackError> {
        if self.done {
            return Ok(());
        }
        match &mut self.compaction {
            Some((seq, _)) if *seq != item.seq => {
                self.done = true;
                return Ok(());
            }
            Some((_, unread)) => *unread = unread.saturating_sub(1),
            None if item.compacted => self.compaction = Some((item.seq.clone(), item.parts.saturating_sub(1))),
            None => {}
        }
        merge_into(&mut self.partials, unpack(&item.payload)?);
        self.items += 1;
        self.bytes += item.payload.len();
        self.done = self.compaction.as_ref().is_some_and(|(_, unread)| *unread == 0);
        Ok(())
    }

    /// True once the newest compaction has been read whole: older items add nothing.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Items and payload bytes merged so far.
    pub fn read(&self) -> (usize, usize) {
        (self.items, self.bytes)
    }

    pub fn finish(self) -> Partials {
        self.partials
    }
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

    proptest! {
        #[test]
        fn packing_round_trips(partials in partials()) {
            let parts = pack(&partials);
            prop_assert_eq!(parts.is_empty(), partials.is_empty());
            let mut back = Partials::new();
            for part in &parts {
                merge_into(&mut back, unpack(part).unwrap());
            }
            prop_assert_eq!(back, partials);
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
        let parts = pack(&partials);
        let bytes: usize = parts.iter().map(Vec::len).sum();
        assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= MAX_PART_BYTES), "{} parts", parts.len());
        assert!(bytes <= partials.len() * 5, "{bytes} bytes for {} partials", partials.len());
        let back: usize = parts.iter().map(|p| unpack(p).unwrap().len()).sum();
        assert_eq!(back, partials.len());
    }

    #[test]
    fn corrupt_payloads_are_refused() {
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[9, 0]).is_err(), "unknown version");
        assert!(unpack(&[FORMAT_VERSION, 1, 7, 0, 1, 1, 0, 1, 1]).is_err(), "unknown metric");
    }

    fn item(seq: u64, part: u16, parts: u16, compacted: bool, count: u64) -> LogItem {
        let partials = Partials::from([(MetricKey::Airport(Airport::Jfk), PartialValue { count, sum_s: count * 10 })]);
        LogItem { seq: SeqNum::parse(&seq.to_string()).unwrap(), part, parts, compacted, payload: pack(&partials).remove(0) }
    }

    #[test]
    fn the_reader_stops_after_the_newest_compaction_whole() {
        let mut reader = PaneLogReader::default();
        // Newest first: two deltas, a compaction of two parts, then what it already holds.
        let items =
            [item(9, 0, 1, false, 1), item(8, 0, 1, false, 2), item(7, 1, 2, true, 4), item(7, 0, 2, true, 8), item(5, 0, 1, false, 100)];
        for (i, item) in items.iter().enumerate() {
            assert_eq!(reader.is_done(), i == 4, "done once the compaction is read whole");
            reader.push(item).unwrap();
        }
        assert_eq!(reader.read().0, 4);
        assert_eq!(reader.finish()[&MetricKey::Airport(Airport::Jfk)], PartialValue { count: 15, sum_s: 150 });
    }

    #[test]
    fn a_log_without_compaction_is_read_to_its_start() {
        let mut reader = PaneLogReader::default();
        for item in [item(3, 0, 1, false, 1), item(2, 0, 1, false, 2), item(1, 0, 1, false, 4)] {
            reader.push(&item).unwrap();
        }
        assert!(!reader.is_done());
        assert_eq!(reader.finish()[&MetricKey::Airport(Airport::Jfk)].count, 7);
    }
}
