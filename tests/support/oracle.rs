//! The expected partial aggregates, computed straight from a TLC CSV.
//!
//! Deliberately independent of the pipeline: its own column lookup, time
//! conversion, validity rules, cells (the geohash crate directly) and panes,
//! written from DESIGN §3. Only the storage key format is shared, since that
//! is the contract being checked.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::America::New_York;

/// (pane start, sort key) -> (count, sum of durations in seconds)
pub type Partials = BTreeMap<(i64, String), (u64, u64)>;

#[derive(Debug, Default)]
pub struct Expected {
    pub rows: u64,
    pub valid_trips: u64,
    pub outside_area: u64,
    pub bad_duration: u64,
    pub partials: Partials,
    pub last_dropoff: i64,
}

fn inside(lat: f64, lon: f64, (min_lat, max_lat, min_lon, max_lon): (f64, f64, f64, f64)) -> bool {
    (min_lat..=max_lat).contains(&lat) && (min_lon..=max_lon).contains(&lon)
}

const NYC: (f64, f64, f64, f64) = (40.4774, 40.9176, -74.2591, -73.7004);
const JFK: (f64, f64, f64, f64) = (40.632, 40.654, -73.800, -73.761);
const LGA: (f64, f64, f64, f64) = (40.766, 40.778, -73.881, -73.859);

pub fn expected(path: &Path, pane_s: i64, precision: usize) -> Expected {
    let mut reader = csv::Reader::from_reader(crate::kinesis::open(path));
    let header = reader.headers().expect("header").clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (pt, dt) = (col("tpep_pickup_datetime"), col("tpep_dropoff_datetime"));
    let (plat, plon, dlat, dlon) = (col("pickup_latitude"), col("pickup_longitude"), col("dropoff_latitude"), col("dropoff_longitude"));
    let utc = |text: &str| {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").expect("TLC time");
        New_York.from_local_datetime(&naive).earliest().expect("a New York time").timestamp()
    };
    let mut out = Expected::default();
    for row in reader.records() {
        let row = row.expect("row");
        out.rows += 1;
        let num = |i: usize| row[i].parse::<f64>().expect("number");
        let (pickup, dropoff) = (utc(&row[pt]), utc(&row[dt]));
        let trip = Trip { pickup, dropoff, pickup_at: (num(plat), num(plon)), dropoff_at: (num(dlat), num(dlon)) };
        match add_trip(&mut out.partials, &trip, pane_s, precision) {
            Err(Rejected::OutsideArea) => out.outside_area += 1,
            Err(Rejected::BadDuration) => out.bad_duration += 1,
            Ok(()) => {
                out.valid_trips += 1;
                out.last_dropoff = out.last_dropoff.max(dropoff);
            }
        }
    }
    out
}

/// A trip as the oracle reads it: times in UTC seconds, places as (lat, lon).
pub struct Trip {
    pub pickup: i64,
    pub dropoff: i64,
    pub pickup_at: (f64, f64),
    pub dropoff_at: (f64, f64),
}

/// Why the oracle does not count a trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    OutsideArea,
    BadDuration,
}

/// Adds a trip to the partials of its pane by DESIGN §3's rules (both ends
/// in the city, 0 < duration <= 4 h; pickups per cell, airport trips per
/// cell and per airport), or says why it does not count.
pub fn add_trip(partials: &mut Partials, trip: &Trip, pane_s: i64, precision: usize) -> Result<(), Rejected> {
    let ((p_lat, p_lon), (d_lat, d_lon)) = (trip.pickup_at, trip.dropoff_at);
    if !inside(p_lat, p_lon, NYC) || !inside(d_lat, d_lon, NYC) {
        return Err(Rejected::OutsideArea);
    }
    let duration = trip.dropoff - trip.pickup;
    if duration <= 0 || duration > 4 * 3600 {
        return Err(Rejected::BadDuration);
    }
    let cell = geohash::encode(geohash::Coord { x: p_lon, y: p_lat }, precision).expect("geohash");
    let pane = trip.dropoff.div_euclid(pane_s) * pane_s;
    let mut add = |key: String| {
        let entry = partials.entry((pane, key)).or_default();
        entry.0 += 1;
        entry.1 += duration as u64;
    };
    add(format!("pickups#{cell}"));
    for (code, area) in [("JFK", JFK), ("LGA", LGA)] {
        if inside(d_lat, d_lon, area) {
            add(format!("airport_cell#{code}#{cell}"));
            add(format!("airport#{code}"));
        }
    }
    Ok(())
}

/// One document as the oracle expects it: trips and the sum of their durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedDocument {
    pub count: u64,
    pub sum_s: u64,
}

/// The documents of windows of `size_s` sliding by the oracle's pane length
/// (`pane_s` of [`expected`]), keyed `_index/_id`, built from the oracle's
/// partials by summing the panes of each window: hot spots and per-cell
/// airport documents with at least `min_count` trips, per-airport documents
/// with any. Written from the documented `_id` format, not from the pipeline's code.
pub fn expected_documents(
    expected: &Expected,
    pane_s: i64,
    size_s: i64,
    min_count: u64,
    (pickup_index, duration_index): (&str, &str),
) -> BTreeMap<String, ExpectedDocument> {
    let mut windows: BTreeMap<(i64, &str), ExpectedDocument> = BTreeMap::new();
    for ((pane, key), (count, sum)) in &expected.partials {
        // The windows containing the pane start at the pane and the panes before it.
        for k in 0..size_s / pane_s {
            let window = windows.entry((pane - k * pane_s, key.as_str())).or_insert(ExpectedDocument { count: 0, sum_s: 0 });
            window.count += count;
            window.sum_s += sum;
        }
    }
    let mut documents = BTreeMap::new();
    for ((start, key), document) in windows {
        let parts: Vec<&str> = key.split('#').collect();
        let id = match parts.as_slice() {
            ["pickups", cell] if document.count >= min_count => format!("{pickup_index}/pickups-{start}-{size_s}s-{cell}"),
            ["airport_cell", code, cell] if document.count >= min_count => {
                format!("{duration_index}/airport-{start}-{size_s}s-{code}-{cell}")
            }
            ["airport", code] => format!("{duration_index}/airport-{start}-{size_s}s-{code}"),
            _ => continue,
        };
        documents.insert(id, document);
    }
    documents
}
