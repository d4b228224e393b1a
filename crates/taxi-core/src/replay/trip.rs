//! Input trips for the producer, and the reasons a row is not sent.

use std::fmt;

use serde::Deserialize;

use crate::counts::{Counts, Reason};
use crate::event::{TripEvent, MAX_TRIP_DURATION_S};
use crate::time::EventTime;
use crate::tlc::RowError;

/// Why an input row is counted and not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// A CSV record the CSV reader cannot read (not UTF-8, broken quoting).
    UnreadableRow,
    /// A row without one of the needed columns.
    ShortRow,
    /// A needed column with a value that is not a time or a number.
    BadValue,
    /// A JSON line that is not a trip event object.
    BadJson,
    /// A JSON line of another event type (a watermark, ...).
    NotATrip,
    /// Dropoff not after pickup, or longer than 4 h: the consumer would reject
    /// it, and a bogus dropoff far ahead would push the reorder horizon on and
    /// make every later trip fall behind it.
    BadDuration,
    /// The dropoff is more than the horizon behind the latest dropoff read, and
    /// later trips have already been released: sending it would break dropoff order.
    BehindHorizon,
    /// The dropoff is later than the wall clock plus the aggregate function's
    /// future tolerance (original time mode): it would be rejected as
    /// `future_timestamp`, and is most likely a wrong date in the file.
    FutureTimestamp,
}

impl SkipReason {
    pub const ALL: [SkipReason; 8] = [
        SkipReason::UnreadableRow,
        SkipReason::ShortRow,
        SkipReason::BadValue,
        SkipReason::BadJson,
        SkipReason::NotATrip,
        SkipReason::BadDuration,
        SkipReason::BehindHorizon,
        SkipReason::FutureTimestamp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SkipReason::UnreadableRow => "unreadable_row",
            SkipReason::ShortRow => "short_row",
            SkipReason::BadValue => "bad_value",
            SkipReason::BadJson => "bad_json",
            SkipReason::NotATrip => "not_a_trip",
            SkipReason::BadDuration => "bad_duration",
            SkipReason::BehindHorizon => "behind_horizon",
            SkipReason::FutureTimestamp => "future_timestamp",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&RowError> for SkipReason {
    fn from(error: &RowError) -> SkipReason {
        match error {
            RowError::ShortRow { .. } => SkipReason::ShortRow,
            RowError::BadValue { .. } => SkipReason::BadValue,
        }
    }
}

/// A row that is not sent: why, and a message for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Skipped {
    pub reason: SkipReason,
    pub message: String,
}

impl Skipped {
    pub fn new(reason: SkipReason, message: impl Into<String>) -> Skipped {
        Skipped { reason, message: message.into() }
    }
}

impl From<RowError> for Skipped {
    fn from(error: RowError) -> Skipped {
        Skipped::new(SkipReason::from(&error), error.to_string())
    }
}

/// A trip to replay: the event as it will be written, with its times parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayTrip {
    pub pickup: EventTime,
    pub dropoff: EventTime,
    pub event: TripEvent,
}

impl ReplayTrip {
    /// Parses the event's times and applies the duration rule (0 < d <= 4 h).
    pub fn new(event: TripEvent) -> Result<ReplayTrip, Skipped> {
        let time = |text: &str| {
            EventTime::parse_rfc3339(text).ok_or_else(|| Skipped::new(SkipReason::BadValue, format!("{text:?} is not an RFC 3339 time")))
        };
        let pickup = time(&event.pickup_datetime)?;
        let dropoff = time(&event.dropoff_datetime)?;
        let duration = dropoff.0 - pickup.0;
        if duration <= 0 || duration > MAX_TRIP_DURATION_S {
            return Err(Skipped::new(
                SkipReason::BadDuration,
                format!("pickup {} to dropoff {} is not a trip of 0 to 4 h", event.pickup_datetime, event.dropoff_datetime),
            ));
        }
        Ok(ReplayTrip { pickup, dropoff, event })
    }

    /// The same trip `seconds` later (both ends), renumbered.
    pub fn shifted(mut self, seconds: i64, trip_id: u64) -> ReplayTrip {
        self.event.trip_id = trip_id;
        if seconds != 0 {
            self.pickup = self.pickup.plus_seconds(seconds);
            self.dropoff = self.dropoff.plus_seconds(seconds);
            self.event.pickup_datetime = self.pickup.to_rfc3339();
            self.event.dropoff_datetime = self.dropoff.to_rfc3339();
        }
        self
    }
}

/// One line of the reference architecture's JSON-lines trip format (DESIGN §2);
/// `pickup_latitude`-style coordinate names are accepted.
#[derive(Deserialize)]
struct JsonTrip {
    trip_id: Option<u64>,
    pickup_datetime: String,
    dropoff_datetime: String,
    #[serde(alias = "pickup_latitude")]
    pickup_lat: f64,
    #[serde(alias = "pickup_longitude")]
    pickup_lon: f64,
    #[serde(alias = "dropoff_latitude")]
    dropoff_lat: f64,
    #[serde(alias = "dropoff_longitude")]
    dropoff_lon: f64,
    passenger_count: Option<u32>,
    trip_distance: Option<f64>,
    fare_amount: Option<f64>,
    total_amount: Option<f64>,
}

/// A trip from one JSON line; `default_id` numbers it when the line has no `trip_id`.
pub fn trip_from_json_line(line: &str, default_id: u64) -> Result<ReplayTrip, Skipped> {
    // A line of another type need not have trip fields: look at the type first.
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let kind: Kind = serde_json::from_str(line).map_err(|e| Skipped::new(SkipReason::BadJson, e.to_string()))?;
    if let Some(other) = kind.kind.filter(|k| k != "trip") {
        return Err(Skipped::new(SkipReason::NotATrip, format!("an event of type {other:?}")));
    }
    let raw: JsonTrip = serde_json::from_str(line).map_err(|e| Skipped::new(SkipReason::BadJson, e.to_string()))?;
    ReplayTrip::new(TripEvent {
        kind: "trip".into(),
        trip_id: raw.trip_id.unwrap_or(default_id),
        pickup_datetime: raw.pickup_datetime,
        dropoff_datetime: raw.dropoff_datetime,
        pickup_lat: raw.pickup_lat,
        pickup_lon: raw.pickup_lon,
        dropoff_lat: raw.dropoff_lat,
        dropoff_lon: raw.dropoff_lon,
        passenger_count: raw.passenger_count,
        trip_distance: raw.trip_distance,
        fare_amount: raw.fare_amount,
        total_amount: raw.total_amount,
    })
}

/// Skipped rows per reason.
pub type SkipCounts = Counts<SkipReason, { SkipReason::ALL.len() }>;

impl Reason for SkipReason {
    const ALL: &'static [SkipReason] = &SkipReason::ALL;

    fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, Event};

    const LINE: &str = r#"{"type":"trip","trip_id":42,"pickup_datetime":"2015-01-10T05:12:34Z","dropoff_datetime":"2015-01-10T05:31:02Z","pickup_lat":40.73,"pickup_lon":-73.99,"dropoff_lat":40.64,"dropoff_lon":-73.78,"total_amount":52.8}"#;

    #[test]
    fn json_lines_with_either_coordinate_names() {
        let trip = trip_from_json_line(LINE, 1).unwrap();
        assert_eq!(trip.event.trip_id, 42);
        assert_eq!(trip.dropoff, EventTime::parse_rfc3339("2015-01-10T05:31:02Z").unwrap());
        let reference = LINE
            .replace("pickup_lat\"", "pickup_latitude\"")
            .replace("dropoff_lon\"", "dropoff_longitude\"")
            .replace(",\"trip_id\":42", "");
        let aliased = trip_from_json_line(&reference, 9).unwrap();
        assert_eq!(aliased.event.trip_id, 9, "numbered by the caller when the line has no id");
        assert_eq!((aliased.event.pickup_lat, aliased.event.dropoff_lon), (40.73, -73.78));
        // What the producer writes is what the consumer reads.
        let Ok(Event::Trip(decoded)) = decode(&aliased.event.to_json()) else { panic!("not a trip") };
        assert_eq!((decoded.pickup_time, decoded.dropoff_time), (aliased.pickup, aliased.dropoff));
    }

    #[test]
    fn json_lines_that_are_not_trips() {
        let reason = |line: &str| trip_from_json_line(line, 1).unwrap_err().reason;
        assert_eq!(reason("not json"), SkipReason::BadJson);
        assert_eq!(reason(&LINE.replace("\"pickup_lat\":40.73,", "")), SkipReason::BadJson);
        assert_eq!(reason(r#"{"type":"watermark","watermark":"2015-01-10T05:30:00Z"}"#), SkipReason::NotATrip);
        assert_eq!(reason(&LINE.replace("2015-01-10T05:31:02Z", "05:31")), SkipReason::BadValue);
        assert_eq!(reason(&LINE.replace("2015-01-10T05:31:02Z", "2015-01-10T05:12:34Z")), SkipReason::BadDuration);
        assert_eq!(reason(&LINE.replace("2015-01-10T05:31:02Z", "2015-01-11T05:31:02Z")), SkipReason::BadDuration);
    }

    #[test]
    fn shifting_moves_both_ends_and_renumbers() {
        let trip = trip_from_json_line(LINE, 1).unwrap().shifted(3600, 7);
        assert_eq!(trip.event.trip_id, 7);
        assert_eq!(trip.event.pickup_datetime, "2015-01-10T06:12:34Z");
        assert_eq!(trip.event.dropoff_datetime, "2015-01-10T06:31:02Z");
        assert_eq!(trip.dropoff, EventTime::parse_rfc3339("2015-01-10T06:31:02Z").unwrap());
    }
}
