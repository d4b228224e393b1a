//! Pre-aggregation of one batch, keyed by (pane, metric, key).
//!
//! DynamoDB writes per batch equal the number of distinct keys, not records.
//! Each contribution remembers which records (by position in the batch) it
//! covers, so that when the store reports that an item already holds some of
//! them, exactly the rest can be applied.

use std::fmt;

use rustc_hash::FxHashMap;

use crate::event::TripFacts;
use crate::geo::{Airport, Cell};
use crate::window::PaneStart;

/// What is counted, and for which key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricKey {
    /// Pickups per pickup cell (hot spots).
    Pickups(Cell),
    /// Trips to an airport, per pickup cell.
    AirportCell(Airport, Cell),
    /// Trips to an airport, overall.
    Airport(Airport),
}

impl MetricKey {
    /// The DynamoDB sort key: `<metric>#<key>`.
    pub fn sort_key(&self) -> String {
        match self {
            MetricKey::Pickups(cell) => format!("pickups#{cell}"),
            MetricKey::AirportCell(airport, cell) => format!("airport_cell#{}#{cell}", airport.code()),
            MetricKey::Airport(airport) => format!("airport#{}", airport.code()),
        }
    }

    pub fn parse_sort_key(text: &str) -> Option<MetricKey> {
        let mut parts = text.split('#');
        let key = match (parts.next()?, parts.next(), parts.next()) {
            ("pickups", Some(cell), None) => MetricKey::Pickups(Cell::parse(cell)?),
            ("airport_cell", Some(code), Some(cell)) => MetricKey::AirportCell(Airport::from_code(code)?, Cell::parse(cell)?),
            ("airport", Some(code), None) => MetricKey::Airport(Airport::from_code(code)?),
            _ => return None,
        };
        parts.next().is_none().then_some(key)
    }

    /// The keys one valid trip contributes to.
    pub fn of_trip(facts: &TripFacts) -> impl Iterator<Item = MetricKey> {
        let airport = facts.dropoff_airport;
        std::iter::once(MetricKey::Pickups(facts.pickup_cell))
            .chain(airport.map(|a| MetricKey::AirportCell(a, facts.pickup_cell)))
            .chain(airport.map(MetricKey::Airport))
    }
}

impl fmt::Display for MetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sort_key())
    }
}

/// One partial aggregate's identity within a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartialKey {
    pub pane: PaneStart,
    pub metric: MetricKey,
}

/// Trip count and integer sum of durations; merging is exact addition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartialValue {
    pub count: u64,
    pub sum_s: u64,
}

impl PartialValue {
    pub fn add(&mut self, other: PartialValue) {
        self.count += other.count;
        self.sum_s += other.sum_s;
    }
}

/// A record's share of one partial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    position: u32,
    duration_s: u32,
}

/// The part of a batch that goes to one partial, with the records it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contribution {
    pub value: PartialValue,
    /// Ascending positions, since records are added in batch order.
    members: Vec<Member>,
}

impl Contribution {
    fn push(&mut self, position: usize, duration_s: u32) {
        self.value.add(PartialValue { count: 1, sum_s: u64::from(duration_s) });
        self.members.push(Member { position: position as u32, duration_s });
    }

    /// Position of the earliest record covered.
    pub fn first_position(&self) -> usize {
        self.members.first().map_or(0, |m| m.position as usize)
    }

    /// Position of the latest record covered.
    pub fn last_position(&self) -> usize {
        self.members.last().map_or(0, |m| m.position as usize)
    }

    /// The contribution of the covered records for which `already_applied` is
    /// false; since positions ascend and so do sequence numbers, those form a
    /// suffix. `None` when every record was already applied.
    pub fn remainder(&self, already_applied: impl Fn(usize) -> bool) -> Option<Contribution> {
        let split = self.members.partition_point(|m| already_applied(m.position as usize));
        let rest = &self.members[split..];
        if rest.is_empty() {
            return None;
        }
        let mut remainder = Contribution::default();
        for m in rest {
            remainder.push(m.position as usize, m.duration_s);
        }
        Some(remainder)
    }
}

/// All contributions of one batch (of one shard).
#[derive(Clone, Debug, Default)]
pub struct BatchAggregate {
    parts: FxHashMap<PartialKey, Contribution>,
}

impl BatchAggregate {
    pub fn add_trip(&mut self, position: usize, pane: PaneStart, facts: &TripFacts) {
        for metric in MetricKey::of_trip(facts) {
            self.parts.entry(PartialKey { pane, metric }).or_default().push(position, facts.duration_s);
        }
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Contributions in key order, so that writes happen in a deterministic order.
    pub fn into_sorted(self) -> Vec<(PartialKey, Contribution)> {
        let mut parts: Vec<_> = self.parts.into_iter().collect();
        parts.sort_unstable_by_key(|(key, _)| *key);
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{GeoPoint, GeohashPrecision};
    use crate::time::EventTime;

    fn facts(lat: f64, airport: Option<Airport>, duration_s: u32) -> TripFacts {
        TripFacts {
            event_time: EventTime(0),
            pickup_cell: Cell::containing(GeoPoint { lat, lon: -73.98 }, GeohashPrecision::default()).unwrap(),
            dropoff_airport: airport,
            duration_s,
        }
    }

    #[test]
    fn sort_keys_round_trip() {
        let cell = Cell::parse("dr5ru7").unwrap();
        for key in [MetricKey::Pickups(cell), MetricKey::AirportCell(Airport::Lga, cell), MetricKey::Airport(Airport::Jfk)] {
            assert_eq!(MetricKey::parse_sort_key(&key.sort_key()), Some(key));
        }
        assert_eq!(MetricKey::Airport(Airport::Jfk).sort_key(), "airport#JFK");
        assert_eq!(MetricKey::parse_sort_key("pickups#dr5ru7#x"), None);
        assert_eq!(MetricKey::parse_sort_key("airport#SFO"), None);
    }

    #[test]
    fn airport_trip_feeds_three_keys_and_remainder_is_a_suffix() {
        let mut batch = BatchAggregate::default();
        let pane = PaneStart(600);
        batch.add_trip(0, pane, &facts(40.75, Some(Airport::Jfk), 100));
        batch.add_trip(3, pane, &facts(40.75, None, 50));
        batch.add_trip(5, pane, &facts(40.75, Some(Airport::Jfk), 200));
        let parts = batch.into_sorted();
        assert_eq!(parts.len(), 3);
        let pickups = &parts.iter().find(|(k, _)| matches!(k.metric, MetricKey::Pickups(_))).unwrap().1;
        assert_eq!(pickups.value, PartialValue { count: 3, sum_s: 350 });
        assert_eq!((pickups.first_position(), pickups.last_position()), (0, 5));
        let rest = pickups.remainder(|p| p <= 3).unwrap();
        assert_eq!(rest.value, PartialValue { count: 1, sum_s: 200 });
        assert_eq!(rest.first_position(), 5);
        assert!(pickups.remainder(|p| p <= 5).is_none());
        let airport = &parts.iter().find(|(k, _)| k.metric == MetricKey::Airport(Airport::Jfk)).unwrap().1;
        assert_eq!(airport.value, PartialValue { count: 2, sum_s: 300 });
    }
}
