//! Event time: whole seconds since the Unix epoch, UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// An instant of event time in whole seconds since the Unix epoch (UTC).
///
/// Whole seconds keep every sum in state an exact integer, so merging
/// partials never rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventTime(pub i64);

impl EventTime {
    /// Parses an RFC 3339 timestamp (`2015-01-10T05:12:34Z`, any offset);
    /// fractional seconds are truncated.
    pub fn parse_rfc3339(text: &str) -> Option<EventTime> {
        DateTime::parse_from_rfc3339(text).ok().map(|t| EventTime(t.timestamp()))
    }

    pub fn seconds(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with a `Z` suffix, as on the stream and in documents.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp(self.0, 0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            None => self.0.to_string(),
        }
    }

    pub fn plus_seconds(self, seconds: i64) -> EventTime {
        EventTime(self.0.saturating_add(seconds))
    }
}

/// Wall-clock time in milliseconds since the Unix epoch, passed into the core
/// explicitly so that every rule that looks at "now" is testable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WallTime(pub i64);

impl WallTime {
    pub fn now() -> WallTime {
        WallTime(Utc::now().timestamp_millis())
    }

    pub fn as_event_time(self) -> EventTime {
        EventTime(self.0.div_euclid(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_rfc3339() {
        let t = EventTime::parse_rfc3339("2015-01-10T05:12:34Z").unwrap();
        assert_eq!(t, EventTime(1_420_866_754));
        assert_eq!(t.to_rfc3339(), "2015-01-10T05:12:34Z");
        assert_eq!(EventTime::parse_rfc3339("2015-01-10T00:12:34-05:00"), Some(t), "offsets are honoured");
        assert_eq!(EventTime::parse_rfc3339("2015-01-10 05:12:34"), None);
        assert_eq!(EventTime::parse_rfc3339("yesterday"), None);
    }
}
