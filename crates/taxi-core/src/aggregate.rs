//! Pre-aggregation of one batch, keyed by (pane, metric, key): what a batch
//! writes grows with the distinct keys it touches, not with its records.

use std::collections::BTreeMap;
use std::fmt;

use rustc_hash::FxHashMap;

use crate::event::TripFacts;
use crate::geo::{Airport, Cell};
use crate::pack::Partials;
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
    /// `<metric>#<key>`, as logs show it.
    pub fn label(&self) -> String {
        match self {
            MetricKey::Pickups(cell) => format!("pickups#{cell}"),
            MetricKey::AirportCell(airport, cell) => format!("airport_cell#{}#{cell}", airport.code()),
            MetricKey::Airport(airport) => format!("airport#{}", airport.code()),
        }
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
        f.write_str(&self.label())
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

/// All partials of (part of) one batch of one shard.
#[derive(Clone, Debug, Default)]
pub struct BatchAggregate {
    parts: FxHashMap<PartialKey, PartialValue>,
}

impl BatchAggregate {
    pub fn add_trip(&mut self, pane: PaneStart, facts: &TripFacts) {
        let trip = PartialValue { count: 1, sum_s: u64::from(facts.duration_s) };
        for metric in MetricKey::of_trip(facts) {
            self.parts.entry(PartialKey { pane, metric }).or_default().add(trip);
        }
    }

    /// Distinct (pane, metric, key) partials.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The partials by pane, in key order.
    pub fn into_panes(self) -> BTreeMap<PaneStart, Partials> {
        let mut panes: BTreeMap<PaneStart, Partials> = BTreeMap::new();
        for (key, value) in self.parts {
            panes.entry(key.pane).or_default().insert(key.metric, value);
        }
        panes
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
    fn labels_name_the_metric_and_key() {
        let cell = Cell::parse("dr5ru7").unwrap();
        assert_eq!(MetricKey::Pickups(cell).to_string(), "pickups#dr5ru7");
        assert_eq!(MetricKey::AirportCell(Airport::Lga, cell).to_string(), "airport_cell#LGA#dr5ru7");
        assert_eq!(MetricKey::Airport(Airport::Jfk).to_string(), "airport#JFK");
    }

    #[test]
    fn airport_trip_feeds_three_keys() {
        let mut batch = BatchAggregate::default();
        let pane = PaneStart(600);
        batch.add_trip(pane, &facts(40.75, Some(Airport::Jfk), 100));
        batch.add_trip(pane, &facts(40.75, None, 50));
        batch.add_trip(PaneStart(1200), &facts(40.75, Some(Airport::Jfk), 200));
        assert_eq!(batch.len(), 6);
        let panes = batch.into_panes();
        let first = &panes[&pane];
        assert_eq!(first.len(), 3);
        let pickups = first.iter().find(|(k, _)| matches!(k, MetricKey::Pickups(_))).unwrap().1;
        assert_eq!(*pickups, PartialValue { count: 2, sum_s: 150 });
        assert_eq!(first[&MetricKey::Airport(Airport::Jfk)], PartialValue { count: 1, sum_s: 100 });
        assert_eq!(panes[&PaneStart(1200)][&MetricKey::Airport(Airport::Jfk)], PartialValue { count: 1, sum_s: 200 });
    }
}
