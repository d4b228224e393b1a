//! TLC yellow-taxi CSV rows to trip events.
//!
//! Columns are found by header name (case-insensitive), so the 2015 and 2016
//! headers (`RateCodeID` / `RatecodeID`, ...) both work. TLC times are naive
//! New York local times; they become UTC with the real time-zone rules.

use chrono::{LocalResult, NaiveDateTime, TimeZone};
use chrono_tz::America::New_York;
use csv::StringRecord;

use crate::event::TripEvent;
use crate::time::EventTime;

const PICKUP_TIME: &str = "tpep_pickup_datetime";
const DROPOFF_TIME: &str = "tpep_dropoff_datetime";
const PICKUP_LAT: &str = "pickup_latitude";
const PICKUP_LON: &str = "pickup_longitude";
const DROPOFF_LAT: &str = "dropoff_latitude";
const DROPOFF_LON: &str = "dropoff_longitude";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CSV header lacks the column(s) {missing:?} (a TLC yellow-taxi file with coordinates has them)")]
pub struct MissingColumns {
    pub missing: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("column {column} is missing from this row")]
    ShortRow { column: &'static str },
    #[error("column {column} has {value:?}, expected {expected}")]
    BadValue { column: &'static str, value: String, expected: &'static str },
}

/// Column positions of a TLC header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlcColumns {
    pickup_time: usize,
    dropoff_time: usize,
    pickup_lat: usize,
    pickup_lon: usize,
    dropoff_lat: usize,
    dropoff_lon: usize,
    passenger_count: Option<usize>,
    trip_distance: Option<usize>,
    fare_amount: Option<usize>,
    total_amount: Option<usize>,
}

impl TlcColumns {
    pub fn from_header(header: &StringRecord) -> Result<TlcColumns, MissingColumns> {
        let find = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
        let mut missing = Vec::new();
        let mut required = |name: &'static str| {
            find(name).unwrap_or_else(|| {
                missing.push(name);
                0
            })
        };
        let columns = TlcColumns {
            pickup_time: required(PICKUP_TIME),
            dropoff_time: required(DROPOFF_TIME),
            pickup_lat: required(PICKUP_LAT),
            pickup_lon: required(PICKUP_LON),
            dropoff_lat: required(DROPOFF_LAT),
            dropoff_lon: required(DROPOFF_LON),
            passenger_count: find("passenger_count"),
            trip_distance: find("trip_distance"),
            fare_amount: find("fare_amount"),
            total_amount: find("total_amount"),
        };
        if missing.is_empty() {
            Ok(columns)
        } else {
            Err(MissingColumns { missing })
        }
    }

    /// The trip event of one data row; `trip_id` is the caller's numbering.
    pub fn trip_event(&self, row: &StringRecord, trip_id: u64) -> Result<TripEvent, RowError> {
        let field = |column: &'static str, at: usize| row.get(at).map(str::trim).ok_or(RowError::ShortRow { column });
        let time = |column: &'static str, at: usize| -> Result<String, RowError> {
            let text = field(column, at)?;
            new_york_to_utc(text).map(EventTime::to_rfc3339).ok_or_else(|| RowError::BadValue {
                column,
                value: text.into(),
                expected: "a time like 2015-01-10 00:12:34",
            })
        };
        let number = |column: &'static str, at: usize| -> Result<f64, RowError> {
            let text = field(column, at)?;
            text.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| RowError::BadValue {
                column,
                value: text.into(),
                expected: "a number",
            })
        };
        let optional =
            |at: Option<usize>| at.and_then(|at| row.get(at)).and_then(|t| t.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
        Ok(TripEvent {
            kind: "trip".into(),
            trip_id,
            pickup_datetime: time(PICKUP_TIME, self.pickup_time)?,
            dropoff_datetime: time(DROPOFF_TIME, self.dropoff_time)?,
            pickup_lat: number(PICKUP_LAT, self.pickup_lat)?,
            pickup_lon: number(PICKUP_LON, self.pickup_lon)?,
            dropoff_lat: number(DROPOFF_LAT, self.dropoff_lat)?,
            dropoff_lon: number(DROPOFF_LON, self.dropoff_lon)?,
            passenger_count: optional(self.passenger_count).map(|v| v as u32),
            trip_distance: optional(self.trip_distance),
            fare_amount: optional(self.fare_amount),
            total_amount: optional(self.total_amount),
        })
    }
}

/// A naive New York local time (`2015-01-10 00:12:34`) as UTC.
///
/// In the autumn hour that happens twice, the first (daylight) reading is
/// taken; in the spring hour that does not exist, the meter's clock is taken
/// to be still on standard time.
pub fn new_york_to_utc(text: &str) -> Option<EventTime> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
    match New_York.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(EventTime(t.timestamp())),
        LocalResult::None => {
            let standard = New_York.from_local_datetime(&(naive - chrono::Duration::hours(1))).earliest()?;
            Some(EventTime(standard.timestamp() + 3600))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER_2015: &str = "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,pickup_longitude,pickup_latitude,RateCodeID,store_and_fwd_flag,dropoff_longitude,dropoff_latitude,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount";

    fn record(line: &str) -> StringRecord {
        StringRecord::from(line.split(',').collect::<Vec<_>>())
    }

    #[test]
    fn converts_a_2015_row() {
        let columns = TlcColumns::from_header(&record(HEADER_2015)).unwrap();
        let row =
            record("2,2015-01-10 00:00:00,2015-01-10 00:10:00,1,2.5,-73.99365997314453,40.7,1,N,-73.78,40.64,1,20,0.5,0.5,0,0,0.3,21.3");
        let trip = columns.trip_event(&row, 7).unwrap();
        assert_eq!(trip.pickup_datetime, "2015-01-10T05:00:00Z", "EST is UTC-5 in January");
        assert_eq!(trip.dropoff_datetime, "2015-01-10T05:10:00Z");
        assert_eq!((trip.pickup_lat, trip.pickup_lon), (40.7, -73.99365997314453));
        assert_eq!(trip.passenger_count, Some(1));
        assert_eq!(trip.total_amount, Some(21.3));
        let bad = record("2,2015-01-10 00:00:00,soon,1,2.5,-73.9,40.7,1,N,-73.78,40.64,1,20,0.5,0.5,0,0,0.3,21.3");
        assert!(matches!(columns.trip_event(&bad, 8), Err(RowError::BadValue { column: DROPOFF_TIME, .. })));
        assert!(matches!(columns.trip_event(&record("2,2015-01-10 00:00:00"), 9), Err(RowError::ShortRow { .. })));
    }

    #[test]
    fn both_headers_and_missing_columns() {
        let header_2016 = HEADER_2015.replace("RateCodeID", "RatecodeID");
        assert!(TlcColumns::from_header(&record(&header_2016)).is_ok());
        let err = TlcColumns::from_header(&record("VendorID,tpep_pickup_datetime,tpep_dropoff_datetime")).unwrap_err();
        assert_eq!(err.missing, vec![PICKUP_LAT, PICKUP_LON, DROPOFF_LAT, DROPOFF_LON]);
    }

    #[test]
    fn daylight_saving_changes() {
        let utc = |t: &str| new_york_to_utc(t).unwrap().to_rfc3339();
        assert_eq!(utc("2015-07-01 12:00:00"), "2015-07-01T16:00:00Z", "EDT is UTC-4");
        // 2015-03-08 02:30 does not exist; taken as standard time.
        assert_eq!(utc("2015-03-08 01:59:59"), "2015-03-08T06:59:59Z");
        assert_eq!(utc("2015-03-08 02:30:00"), "2015-03-08T07:30:00Z");
        assert_eq!(utc("2015-03-08 03:00:00"), "2015-03-08T07:00:00Z");
        // 2015-11-01 01:30 happens twice; the first (EDT) is taken.
        assert_eq!(utc("2015-11-01 01:30:00"), "2015-11-01T05:30:00Z");
        assert_eq!(utc("2015-11-01 02:00:00"), "2015-11-01T07:00:00Z");
        assert_eq!(new_york_to_utc("2015-11-01T01:30:00"), None);
    }
}
