//! The event format on the stream (DESIGN §2): decoding, validation, encoding.
//!
//! One JSON object per Kinesis record, either a trip
//! (`{"type":"trip","pickup_datetime":...,"dropoff_datetime":...,"pickup_lat":...}`)
//! or a watermark (`{"type":"watermark","watermark":"2015-01-10T05:30:00Z"}`).
//! Unknown fields are ignored. Every record that cannot be used yields an
//! [`InvalidReason`]; decoding never panics and never fails a batch.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::counts::Reason;
use crate::geo::{Airport, Areas, Cell, GeoPoint, GeohashPrecision};
use crate::time::EventTime;

/// The longest trip that counts as valid (DESIGN §3: 0 < duration <= 4 h).
pub const MAX_TRIP_DURATION_S: i64 = 4 * 3600;

/// Why a record was counted and skipped instead of aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InvalidReason {
    /// No bytes at all.
    Empty,
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// Not JSON, or truncated JSON.
    Unparsable,
    /// JSON whose fields have the wrong types (a string where a number belongs).
    WrongType,
    /// A field the analytics need is absent or null.
    MissingField,
    /// A `type` other than `trip` or `watermark`.
    UnknownType,
    /// A timestamp that is not RFC 3339.
    BadTimestamp,
    /// Pickup or dropoff outside the city box (includes 0,0 and out-of-range coordinates).
    OutsideArea,
    /// Dropoff not after pickup, or a trip longer than four hours.
    BadDuration,
    /// An event time too far ahead of the wall clock to be real; it must not
    /// drag a watermark forward (invariant 6).
    FutureTimestamp,
}

impl InvalidReason {
    pub const ALL: [InvalidReason; 10] = [
        InvalidReason::Empty,
        InvalidReason::NotUtf8,
        InvalidReason::Unparsable,
        InvalidReason::WrongType,
        InvalidReason::MissingField,
        InvalidReason::UnknownType,
        InvalidReason::BadTimestamp,
        InvalidReason::OutsideArea,
        InvalidReason::BadDuration,
        InvalidReason::FutureTimestamp,
    ];

    /// Snake-case name used in metrics, logs and stored counters.
    pub fn name(self) -> &'static str {
        match self {
            InvalidReason::Empty => "empty",
            InvalidReason::NotUtf8 => "not_utf8",
            InvalidReason::Unparsable => "unparsable",
            InvalidReason::WrongType => "wrong_type",
            InvalidReason::MissingField => "missing_field",
            InvalidReason::UnknownType => "unknown_type",
            InvalidReason::BadTimestamp => "bad_timestamp",
            InvalidReason::OutsideArea => "outside_area",
            InvalidReason::BadDuration => "bad_duration",
            InvalidReason::FutureTimestamp => "future_timestamp",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl Reason for InvalidReason {
    const ALL: &'static [InvalidReason] = &InvalidReason::ALL;

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded trip, before validation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trip {
    pub pickup_time: EventTime,
    pub dropoff_time: EventTime,
    pub pickup: GeoPoint,
    pub dropoff: GeoPoint,
}

impl Trip {
    /// Event time of a trip is its dropoff: the moment the trip event happens.
    pub fn event_time(&self) -> EventTime {
        self.dropoff_time
    }

    pub fn duration_s(&self) -> i64 {
        self.dropoff_time.0 - self.pickup_time.0
    }
}

/// A decoded event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    Trip(Trip),
    /// Every trip on this shard with dropoff before this instant has been written.
    Watermark(EventTime),
}

/// A timestamp field, parsed while deserializing so no string is kept
/// (escaped or not); `None` when the text is not RFC 3339.
struct RawTime(Option<EventTime>);

impl<'de> Deserialize<'de> for RawTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl serde::de::Visitor<'_> for TimeVisitor {
            type Value = RawTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawTime, E> {
                Ok(RawTime(EventTime::parse_rfc3339(text)))
            }
        }
        deserializer.deserialize_str(TimeVisitor)
    }
}

/// The `type` field.
enum RawKind {
    Trip,
    Watermark,
    Other,
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl serde::de::Visitor<'_> for KindVisitor {
            type Value = RawKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event type")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawKind, E> {
                Ok(match text {
                    "trip" => RawKind::Trip,
                    "watermark" => RawKind::Watermark,
                    _ => RawKind::Other,
                })
            }
        }
        deserializer.deserialize_str(KindVisitor)
    }
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: Option<RawKind>,
    pickup_datetime: Option<RawTime>,
    dropoff_datetime: Option<RawTime>,
    #[serde(alias = "pickup_latitude")]
    pickup_lat: Option<f64>,
    #[serde(alias = "pickup_longitude")]
    pickup_lon: Option<f64>,
    #[serde(alias = "dropoff_latitude")]
    dropoff_lat: Option<f64>,
    #[serde(alias = "dropoff_longitude")]
    dropoff_lon: Option<f64>,
    watermark: Option<RawTime>,
}

/// Decodes one record's bytes without allocating. Coordinates of the
/// reference architecture's stream (`pickup_latitude`, ...) are accepted as aliases.
pub fn decode(data: &[u8]) -> Result<Event, InvalidReason> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(InvalidReason::Empty);
    }
    let text = std::str::from_utf8(data).map_err(|_| InvalidReason::NotUtf8)?;
    let raw: RawEvent = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => InvalidReason::WrongType,
        _ => InvalidReason::Unparsable,
    })?;
    let time = |field: Option<RawTime>| -> Result<EventTime, InvalidReason> {
        field.ok_or(InvalidReason::MissingField)?.0.ok_or(InvalidReason::BadTimestamp)
    };
    match raw.kind {
        Some(RawKind::Trip) => {
            let point = |lat: Option<f64>, lon: Option<f64>| -> Result<GeoPoint, InvalidReason> {
                Ok(GeoPoint { lat: lat.ok_or(InvalidReason::MissingField)?, lon: lon.ok_or(InvalidReason::MissingField)? })
            };
            Ok(Event::Trip(Trip {
                pickup: point(raw.pickup_lat, raw.pickup_lon)?,
                dropoff: point(raw.dropoff_lat, raw.dropoff_lon)?,
                pickup_time: time(raw.pickup_datetime)?,
                dropoff_time: time(raw.dropoff_datetime)?,
            }))
        }
        Some(RawKind::Watermark) => time(raw.watermark).map(Event::Watermark),
        Some(RawKind::Other) => Err(InvalidReason::UnknownType),
        None => Err(InvalidReason::MissingField),
    }
}

/// What the analytics need of a valid trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TripFacts {
    pub event_time: EventTime,
    pub pickup_cell: Cell,
    pub dropoff_airport: Option<Airport>,
    pub duration_s: u32,
}

/// The validity rules of DESIGN §3, plus the far-future guard: a trip whose
/// event time is later than `latest_plausible` is not real.
pub fn validate_trip(
    trip: &Trip,
    areas: &Areas,
    precision: GeohashPrecision,
    latest_plausible: EventTime,
) -> Result<TripFacts, InvalidReason> {
    if !areas.city.contains(trip.pickup) || !areas.city.contains(trip.dropoff) {
        return Err(InvalidReason::OutsideArea);
    }
    let duration = trip.duration_s();
    if duration <= 0 || duration > MAX_TRIP_DURATION_S {
        return Err(InvalidReason::BadDuration);
    }
    if trip.event_time() > latest_plausible {
        return Err(InvalidReason::FutureTimestamp);
    }
    let pickup_cell = Cell::containing(trip.pickup, precision).ok_or(InvalidReason::OutsideArea)?;
    Ok(TripFacts {
        event_time: trip.event_time(),
        pickup_cell,
        dropoff_airport: areas.airport_of(trip.dropoff),
        duration_s: duration as u32,
    })
}

/// A trip event as the producer writes it. Optional TLC columns follow the
/// fields the analytics need; consumers ignore what they do not know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TripEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub trip_id: u64,
    pub pickup_datetime: String,
    pub dropoff_datetime: String,
    pub pickup_lat: f64,
    pub pickup_lon: f64,
    pub dropoff_lat: f64,
    pub dropoff_lon: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub passenger_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trip_distance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fare_amount: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total_amount: Option<f64>,
}

impl TripEvent {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain numbers and strings cannot fail, but non-finite
        // floats become null rather than a panic.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The JSON of a watermark event.
pub fn watermark_event_json(watermark: EventTime) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"type": "watermark", "watermark": watermark.to_rfc3339()})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIP: &str = r#"{"type":"trip","trip_id":42,"pickup_datetime":"2015-01-10T05:12:34Z","dropoff_datetime":"2015-01-10T05:31:02Z","pickup_lat":40.73,"pickup_lon":-73.99,"dropoff_lat":40.64,"dropoff_lon":-73.78,"total_amount":52.8,"passenger_count":1,"extra":{"nested":[1,2]}}"#;
    const FAR_FUTURE: EventTime = EventTime(4_000_000_000);

    fn reason(data: &[u8]) -> InvalidReason {
        decode(data).unwrap_err()
    }

    #[test]
    fn decodes_trip_and_ignores_unknown_fields() {
        let Event::Trip(trip) = decode(TRIP.as_bytes()).unwrap() else { panic!("not a trip") };
        assert_eq!(trip.duration_s(), 18 * 60 + 28);
        assert_eq!(trip.event_time(), EventTime::parse_rfc3339("2015-01-10T05:31:02Z").unwrap());
        let facts = validate_trip(&trip, &Areas::default(), GeohashPrecision::default(), FAR_FUTURE).unwrap();
        assert_eq!(facts.dropoff_airport, Some(Airport::Jfk));
        assert_eq!(facts.pickup_cell.as_str().len(), 6);
    }

    #[test]
    fn accepts_reference_architecture_field_names() {
        let json = TRIP.replace("pickup_lat\"", "pickup_latitude\"").replace("dropoff_lon\"", "dropoff_longitude\"");
        assert_eq!(decode(json.as_bytes()), decode(TRIP.as_bytes()));
    }

    #[test]
    fn escaped_strings_decode_too() {
        let escaped = TRIP.replace("\"trip\"", "\"tr\\u0069p\"").replace("05:12:34Z", "05:12:34\\u005A");
        assert!(escaped.contains("\\u005A"));
        assert_eq!(decode(escaped.as_bytes()), decode(TRIP.as_bytes()));
    }

    #[test]
    fn decodes_watermark() {
        assert_eq!(decode(br#"{"type":"watermark","watermark":"2015-01-10T05:30:00Z"}"#), Ok(Event::Watermark(EventTime(1_420_867_800))));
    }

    #[test]
    fn every_malformed_record_has_its_reason() {
        assert_eq!(reason(b""), InvalidReason::Empty);
        assert_eq!(reason(b"  \n"), InvalidReason::Empty);
        assert_eq!(reason(b"{\"type\":\"trip\",\"pickup_lat\":\xff}"), InvalidReason::NotUtf8);
        assert_eq!(reason(&TRIP.as_bytes()[..40]), InvalidReason::Unparsable);
        assert_eq!(reason(TRIP.replace("40.73", "NaN").as_bytes()), InvalidReason::Unparsable);
        assert_eq!(reason(TRIP.replace("40.73", "\"40.73\"").as_bytes()), InvalidReason::WrongType);
        assert_eq!(reason(b"[1,2,3]"), InvalidReason::WrongType);
        assert_eq!(reason(TRIP.replace("\"pickup_lat\":40.73,", "").as_bytes()), InvalidReason::MissingField);
        assert_eq!(reason(TRIP.replace("40.73", "null").as_bytes()), InvalidReason::MissingField);
        assert_eq!(reason(br#"{"trip_id":1}"#), InvalidReason::MissingField);
        assert_eq!(reason(br#"{"type":"fare","trip_id":1}"#), InvalidReason::UnknownType);
        assert_eq!(reason(TRIP.replace("2015-01-10T05:12:34Z", "2015-01-10 05:12").as_bytes()), InvalidReason::BadTimestamp);
        assert_eq!(reason(br#"{"type":"watermark"}"#), InvalidReason::MissingField);
    }

    #[test]
    fn validity_rules() {
        let Event::Trip(trip) = decode(TRIP.as_bytes()).unwrap() else { panic!() };
        let check = |t: Trip, latest: EventTime| validate_trip(&t, &Areas::default(), GeohashPrecision::default(), latest);
        assert_eq!(check(Trip { pickup: GeoPoint { lat: 0.0, lon: 0.0 }, ..trip }, FAR_FUTURE), Err(InvalidReason::OutsideArea));
        assert_eq!(check(Trip { dropoff: GeoPoint { lat: 95.0, lon: -73.9 }, ..trip }, FAR_FUTURE), Err(InvalidReason::OutsideArea));
        assert_eq!(check(Trip { dropoff_time: trip.pickup_time, ..trip }, FAR_FUTURE), Err(InvalidReason::BadDuration));
        let four_hours = Trip { dropoff_time: trip.pickup_time.plus_seconds(MAX_TRIP_DURATION_S), ..trip };
        assert!(check(four_hours, FAR_FUTURE).is_ok(), "exactly 4 h is valid");
        let longer = Trip { dropoff_time: trip.pickup_time.plus_seconds(MAX_TRIP_DURATION_S + 1), ..trip };
        assert_eq!(check(longer, FAR_FUTURE), Err(InvalidReason::BadDuration));
        assert_eq!(check(trip, trip.dropoff_time.plus_seconds(-1)), Err(InvalidReason::FutureTimestamp));
        assert!(check(trip, trip.dropoff_time).is_ok());
    }

    #[test]
    fn encoded_events_decode_back() {
        let event = TripEvent {
            kind: "trip".into(),
            trip_id: 7,
            pickup_datetime: "2015-01-10T05:12:34Z".into(),
            dropoff_datetime: "2015-01-10T05:31:02Z".into(),
            pickup_lat: 40.73,
            pickup_lon: -73.99,
            dropoff_lat: 40.64,
            dropoff_lon: -73.78,
            passenger_count: Some(2),
            trip_distance: None,
            fare_amount: None,
            total_amount: Some(52.8),
        };
        assert_eq!(decode(&event.to_json()), decode(TRIP.as_bytes()));
        assert_eq!(decode(&watermark_event_json(EventTime(1_420_867_800))), Ok(Event::Watermark(EventTime(1_420_867_800))));
    }
}
