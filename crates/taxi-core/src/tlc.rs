//! TLC yellow-taxi CSV rows to trip events.
//!
//! Columns are found by header name (case-insensitive), so the 2015 and 2016
//! headers (`RateCodeID` / `RatecodeID`, ...) both work. TLC times are naive
//! New York local times; they become UTC with the real time-zone rules.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::America::New_York;
use csv::StringRecord;

use crate::event::{Trip, TripEvent};
use crate::geo::GeoPoint;
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
        let time = |column: &'static str, at: usize| -> Result<String, RowError> {
            let text = field(row.get(at), column)?;
            new_york_to_utc(text).map(EventTime::to_rfc3339).ok_or_else(|| bad_time(column, text))
        };
        let optional =
            |at: Option<usize>| at.and_then(|at| row.get(at)).and_then(|t| t.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
        Ok(TripEvent {
            kind: "trip".into(),
            trip_id,
            pickup_datetime: time(PICKUP_TIME, self.pickup_time)?,
            dropoff_datetime: time(DROPOFF_TIME, self.dropoff_time)?,
            pickup_lat: number(row.get(self.pickup_lat), PICKUP_LAT)?,
            pickup_lon: number(row.get(self.pickup_lon), PICKUP_LON)?,
            dropoff_lat: number(row.get(self.dropoff_lat), DROPOFF_LAT)?,
            dropoff_lon: number(row.get(self.dropoff_lon), DROPOFF_LON)?,
            passenger_count: optional(self.passenger_count).map(|v| v as u32),
            trip_distance: optional(self.trip_distance),
            fare_amount: optional(self.fare_amount),
            total_amount: optional(self.total_amount),
        })
    }

    /// How many leading fields of a row [`TlcColumns::trip`] reads: the rest
    /// of the row need not be split.
    pub fn fields_read_by_trip(&self) -> usize {
        [self.pickup_time, self.dropoff_time, self.pickup_lat, self.pickup_lon, self.dropoff_lat, self.dropoff_lon]
            .into_iter()
            .max()
            .unwrap_or(0)
            + 1
    }

    /// What the analytics need of one data row, given as its fields (the
    /// times in UTC and the four coordinates), without allocating: the rules
    /// and errors of [`TlcColumns::trip_event`], with the times converted through `clock`.
    pub fn trip(&self, fields: &[&str], clock: &mut NewYorkClock) -> Result<Trip, RowError> {
        let get = |at: usize| fields.get(at).copied();
        let mut time = |column: &'static str, at: usize| -> Result<EventTime, RowError> {
            let text = field(get(at), column)?;
            clock.to_utc(text).ok_or_else(|| bad_time(column, text))
        };
        let pickup_time = time(PICKUP_TIME, self.pickup_time)?;
        let dropoff_time = time(DROPOFF_TIME, self.dropoff_time)?;
        Ok(Trip {
            pickup_time,
            dropoff_time,
            pickup: GeoPoint { lat: number(get(self.pickup_lat), PICKUP_LAT)?, lon: number(get(self.pickup_lon), PICKUP_LON)? },
            dropoff: GeoPoint { lat: number(get(self.dropoff_lat), DROPOFF_LAT)?, lon: number(get(self.dropoff_lon), DROPOFF_LON)? },
        })
    }
}

fn field<'r>(value: Option<&'r str>, column: &'static str) -> Result<&'r str, RowError> {
    value.map(str::trim).ok_or(RowError::ShortRow { column })
}

fn number(value: Option<&str>, column: &'static str) -> Result<f64, RowError> {
    let text = field(value, column)?;
    text.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| RowError::BadValue {
        column,
        value: text.into(),
        expected: "a number",
    })
}

fn bad_time(column: &'static str, text: &str) -> RowError {
    RowError::BadValue { column, value: text.into(), expected: "a time like 2015-01-10 00:12:34" }
}

/// [`new_york_to_utc`] for many rows. The usual `2015-01-10 00:12:34` form is
/// read by hand and the UTC offset remembered per local hour, since New York
/// changes its offset only on the hour; any other text goes through
/// [`new_york_to_utc`] itself, so the results are the same.
#[derive(Clone, Debug)]
pub struct NewYorkClock {
    /// (local hour since the epoch, offset to UTC in seconds), by hour modulo the size.
    hours: [(i64, i64); 64],
    /// The last `YYYY-MM-DD` read and its midnight in seconds since the epoch:
    /// rows come in runs of the same day.
    last_day: Option<([u8; 10], i64)>,
}

impl Default for NewYorkClock {
    fn default() -> NewYorkClock {
        NewYorkClock { hours: [(i64::MIN, 0); 64], last_day: None }
    }
}

impl NewYorkClock {
    pub fn to_utc(&mut self, text: &str) -> Option<EventTime> {
        let Some(local) = self.canonical_local_seconds(text.as_bytes()) else {
            return new_york_to_utc(text);
        };
        let hour = local.div_euclid(3600);
        let slot = &mut self.hours[hour.rem_euclid(64) as usize];
        if slot.0 != hour {
            let (start, end) = (hour * 3600, hour * 3600 + 3599);
            let offset = |local: i64| Some(new_york_naive_to_utc(DateTime::from_timestamp(local, 0)?.naive_utc())?.0 - local);
            match (offset(start), offset(end)) {
                (Some(a), Some(b)) if a == b => *slot = (hour, a),
                // An hour with a change inside it (none in New York since 1883): no shortcut.
                _ => return new_york_naive_to_utc(DateTime::from_timestamp(local, 0)?.naive_utc()),
            }
        }
        Some(EventTime(local + slot.1))
    }

    /// `YYYY-MM-DD HH:MM:SS` read as seconds since the epoch of that naive time;
    /// `None` for anything else (including a leap second), left to chrono.
    fn canonical_local_seconds(&mut self, text: &[u8]) -> Option<i64> {
        let &[y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2, b' ', h1, h2, b':', i1, i2, b':', s1, s2] = text else {
            return None;
        };
        let digits = |ds: &[u8]| ds.iter().try_fold(0u32, |n, d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')));
        let day = [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2];
        let midnight = match self.last_day {
            Some((last, midnight)) if last == day => midnight,
            _ => {
                let date = NaiveDate::from_ymd_opt(digits(&[y1, y2, y3, y4])? as i32, digits(&[m1, m2])?, digits(&[d1, d2])?)?;
                let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
                self.last_day = Some((day, midnight));
                midnight
            }
        };
        let (hour, minute, second) = (digits(&[h1, h2])?, digits(&[i1, i2])?, digits(&[s1, s2])?);
        (hour < 24 && minute < 60 && second < 60).then_some(())?;
        Some(midnight + i64::from(hour * 3600 + minute * 60 + second))
    }
}

/// A naive New York local time (`2015-01-10 00:12:34`) as UTC.
///
/// In the autumn hour that happens twice, the first (daylight) reading is
/// taken; in the spring hour that does not exist, the meter's clock is taken
/// to be still on standard time.
pub fn new_york_to_utc(text: &str) -> Option<EventTime> {
    new_york_naive_to_utc(NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?)
}

fn new_york_naive_to_utc(naive: NaiveDateTime) -> Option<EventTime> {
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

    #[test]
    fn the_clock_agrees_with_new_york_to_utc_on_odd_texts() {
        let mut clock = NewYorkClock::default();
        for text in [
            "2015-03-08 01:59:59",
            "2015-03-08 02:30:00",
            "2015-03-08 03:00:00",
            "2015-11-01 01:30:00",
            "2015-11-01 02:00:00",
            "2015-02-30 00:00:00",
            "2015-01-10 23:59:60",
            "2015-01-10 24:00:00",
            "2015-1-10 00:00:00",
            "2015-01-10 00:00:00.5",
            "soon",
            "",
        ] {
            assert_eq!(clock.to_utc(text), new_york_to_utc(text), "{text}");
        }
    }

    #[test]
    fn the_clock_agrees_with_new_york_to_utc_across_both_changes_of_2015() {
        let mut clock = NewYorkClock::default();
        for day in ["2015-03-07 00:00:00", "2015-10-31 00:00:00"] {
            let start = NaiveDateTime::parse_from_str(day, "%Y-%m-%d %H:%M:%S").unwrap().and_utc().timestamp();
            for local in (start..start + 2 * 86_400).step_by(59) {
                let text = DateTime::from_timestamp(local, 0).unwrap().naive_utc().format("%Y-%m-%d %H:%M:%S").to_string();
                assert_eq!(clock.to_utc(&text), new_york_to_utc(&text), "{text}");
            }
        }
    }

    #[test]
    fn a_fast_row_has_the_values_and_errors_of_the_trip_event() {
        let columns = TlcColumns::from_header(&record(HEADER_2015)).unwrap();
        let mut clock = NewYorkClock::default();
        let row = record("2,2015-01-10 00:00:00,2015-01-10 00:10:00,1,2.5,-73.99,40.7,1,N,-73.78,40.64,1,20,0.5,0.5,0,0,0.3,21.3");
        let trip = columns.trip(&row.iter().collect::<Vec<_>>(), &mut clock).unwrap();
        let event = columns.trip_event(&row, 1).unwrap();
        assert_eq!(trip.pickup_time.to_rfc3339(), event.pickup_datetime);
        assert_eq!(trip.dropoff_time.to_rfc3339(), event.dropoff_datetime);
        assert_eq!((trip.pickup.lat, trip.pickup.lon, trip.dropoff.lat, trip.dropoff.lon), (40.7, -73.99, 40.64, -73.78));
        for bad in [
            "2,2015-01-10 00:00:00,soon,1,2.5,-73.99,40.7,1,N,-73.78,40.64",
            "2,2015-01-10 00:00:00,2015-01-10 00:10:00,1,2.5,-73.99,NaN",
            "2",
        ] {
            let fields: Vec<&str> = bad.split(',').collect();
            assert_eq!(columns.trip(&fields, &mut clock).unwrap_err(), columns.trip_event(&record(bad), 1).unwrap_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Runs of local times anywhere in four years (eight DST changes), through one clock.
        #[test]
        fn the_clock_agrees_with_new_york_to_utc(start in 1_388_534_400i64..1_514_764_800, steps in proptest::collection::vec(-7200i64..7200, 1..40)) {
            let mut clock = NewYorkClock::default();
            for step in steps {
                let text = DateTime::from_timestamp(start + step, 0).unwrap().naive_utc().format("%Y-%m-%d %H:%M:%S").to_string();
                proptest::prop_assert_eq!(clock.to_utc(&text), new_york_to_utc(&text), "{}", text);
            }
        }
    }
}
