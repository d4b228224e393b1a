//! Settings from environment-style variables, validated up front.
//!
//! Every variable has a documented default and range; a wrong value stops
//! start-up with a message naming the variable, the value and what is allowed.
//! The lookup is a function so that tests need no process environment.

use std::fmt::Display;
use std::str::FromStr;

use crate::closing::Idleness;
use crate::documents::DocumentSettings;
use crate::geo::{Areas, GeoBox, GeohashPrecision};
use crate::ingest::IngestSettings;
use crate::watermark::WatermarkMode;
use crate::window::WindowSpec;

/// `FUTURE_TOLERANCE_SECONDS`' default: event times later than the wall clock
/// plus this are bogus (the aggregate function rejects them, the producer skips them).
pub const DEFAULT_FUTURE_TOLERANCE_S: i64 = 900;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {}", describe(.variable, .value, .expected))]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub expected: String,
}

fn describe(variable: &str, value: &str, expected: &str) -> String {
    if value.is_empty() {
        format!("{variable} is not set: it {expected}")
    } else {
        format!("{variable}={value:?} is invalid: {expected}")
    }
}

/// Reads variables through a lookup function (`std::env::var` in production).
pub struct EnvReader<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> EnvReader<F> {
    pub fn new(lookup: F) -> EnvReader<F> {
        EnvReader { lookup }
    }

    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// A required string.
    pub fn required(&self, name: &str, what: &str) -> Result<String, ConfigError> {
        self.raw(name).ok_or_else(|| ConfigError {
            variable: name.into(),
            value: String::new(),
            expected: format!("must be set to {what}"),
        })
    }

    /// A string with a default.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_owned())
    }

    /// A number in `min..=max`, or `default` when unset.
    pub fn number<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(text) = self.raw(name) else {
            return Ok(default);
        };
        match text.parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(v),
            _ => Err(ConfigError { variable: name.into(), value: text, expected: format!("expected a whole number from {min} to {max}") }),
        }
    }

    /// One of a fixed set of words, or `default` when unset.
    pub fn choice<'c>(&self, name: &str, default: &'c str, allowed: &[&'c str]) -> Result<&'c str, ConfigError> {
        let Some(text) = self.raw(name) else {
            return Ok(default);
        };
        allowed.iter().find(|a| a.eq_ignore_ascii_case(&text)).copied().ok_or_else(|| ConfigError {
            variable: name.into(),
            value: text,
            expected: format!("expected one of {}", allowed.join(", ")),
        })
    }

    /// `WINDOW_SIZE_SECONDS` and `WINDOW_SLIDE_SECONDS`, shared by both functions.
    pub fn window_spec(&self) -> Result<WindowSpec, ConfigError> {
        let size = self.number("WINDOW_SIZE_SECONDS", 600i64, 60, 86_400)?;
        let slide = self.number("WINDOW_SLIDE_SECONDS", size, 60, 86_400)?;
        WindowSpec::new(size, slide).map_err(|e| ConfigError {
            variable: "WINDOW_SLIDE_SECONDS".into(),
            value: slide.to_string(),
            expected: e.to_string(),
        })
    }

    /// A box as `min_lat,max_lat,min_lon,max_lon` in degrees, or `default` when unset.
    pub fn geo_box(&self, name: &str, default: GeoBox) -> Result<GeoBox, ConfigError> {
        let Some(value) = self.raw(name) else { return Ok(default) };
        let numbers: Vec<f64> = value.split(',').filter_map(|n| n.trim().parse::<f64>().ok()).filter(|n| n.is_finite()).collect();
        let area = match numbers[..] {
            [min_lat, max_lat, min_lon, max_lon] => Some(GeoBox::new(min_lat, max_lat, min_lon, max_lon)),
            _ => None,
        };
        area.filter(|a| {
            (-90.0..=90.0).contains(&a.min_lat)
                && a.min_lat < a.max_lat
                && a.max_lat <= 90.0
                && (-180.0..=180.0).contains(&a.min_lon)
                && a.min_lon < a.max_lon
                && a.max_lon <= 180.0
        })
        .ok_or_else(|| ConfigError {
            variable: name.into(),
            value,
            expected:
                "expected min_lat,max_lat,min_lon,max_lon in degrees, each minimum below its maximum, such as 40.632,40.654,-73.8,-73.761"
                    .into(),
        })
    }

    /// Where trips must start and end (`CITY_AREA`) and where a dropoff is
    /// an airport's (`JFK_AREA`, `LGA_AREA`), by default the reference architecture's boxes.
    pub fn areas(&self) -> Result<Areas, ConfigError> {
        let defaults = Areas::default();
        let airports =
            defaults.airports.iter().map(|(airport, area)| Ok((*airport, self.geo_box(&format!("{}_AREA", airport.code()), *area)?)));
        Ok(Areas { city: self.geo_box("CITY_AREA", defaults.city)?, airports: airports.collect::<Result<_, ConfigError>>()? })
    }

    /// A true/false switch, or `default` when unset.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.choice(name, if default { "true" } else { "false" }, &["true", "false"])? == "true")
    }

    /// `WATERMARK_MODE` (and `MAX_OUT_OF_ORDERNESS_SECONDS` in bounded mode):
    /// read by both functions, since the closer's idleness rule follows it.
    pub fn watermark_mode(&self) -> Result<WatermarkMode, ConfigError> {
        Ok(match self.choice("WATERMARK_MODE", "producer", &["producer", "bounded"])? {
            "bounded" => WatermarkMode::Bounded { max_out_of_orderness_s: self.number("MAX_OUT_OF_ORDERNESS_SECONDS", 60i64, 0, 86_400)? },
            _ => WatermarkMode::Producer,
        })
    }

    /// When the closer leaves a silent shard out (`WATERMARK_MODE`,
    /// `IDLE_SHARD_TIMEOUT_SECONDS`, default 300, and `ADVANCE_WHEN_QUIET`,
    /// default true): read by the close-windows function and `taxi-pipeline status`.
    pub fn idleness(&self) -> Result<Idleness, ConfigError> {
        let mode = self.watermark_mode()?;
        let timeout_s = self.number("IDLE_SHARD_TIMEOUT_SECONDS", 300i64, 1, 86_400)?;
        Ok(Idleness::for_mode(mode, timeout_s * 1000, self.flag("ADVANCE_WHEN_QUIET", true)?))
    }

    /// The documents' settings (`MIN_PICKUP_COUNT`, default 2; `PICKUP_INDEX`,
    /// default `pickup_count`; `DURATION_INDEX`, default `trip_duration`;
    /// `INDEX_RETENTION_DAYS`, default 0: one index per kind kept forever, else
    /// daily indices deleted that many days after their creation).
    pub fn document_settings(&self) -> Result<DocumentSettings, ConfigError> {
        let defaults = DocumentSettings::default();
        Ok(DocumentSettings {
            min_count: self.number("MIN_PICKUP_COUNT", defaults.min_count, 1, 1_000_000)?,
            pickup_index: self.string("PICKUP_INDEX", &defaults.pickup_index),
            duration_index: self.string("DURATION_INDEX", &defaults.duration_index),
            index_retention_days: Some(self.number("INDEX_RETENTION_DAYS", 0u32, 0, 3650)?).filter(|days| *days > 0),
        })
    }

    /// `RETENTION_HOURS`, in seconds: the aggregate function sets TTL with it,
    /// and the closer refuses windows whose partials it may have removed.
    pub fn retention_s(&self) -> Result<i64, ConfigError> {
        Ok(self.number("RETENTION_HOURS", 48i64, 1, 24 * 365)? * 3600)
    }

    /// The analytics settings of the aggregate function (see the README's
    /// configuration table for each variable).
    pub fn ingest_settings(&self) -> Result<IngestSettings, ConfigError> {
        let window = self.window_spec()?;
        let precision = self.number("GEOHASH_PRECISION", 6u8, 1, GeohashPrecision::MAX)?;
        let watermark_mode = self.watermark_mode()?;
        Ok(IngestSettings {
            window,
            precision: GeohashPrecision::new(precision).expect("range checked above"),
            areas: self.areas()?,
            watermark_mode,
            allowed_lateness_s: self.number("ALLOWED_LATENESS_SECONDS", 300i64, 0, 7 * 86_400)?,
            future_tolerance_s: self.number("FUTURE_TOLERANCE_SECONDS", DEFAULT_FUTURE_TOLERANCE_S, 0, 7 * 86_400)?,
            retention_s: self.retention_s()?,
            ..IngestSettings::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Airport;
    use std::collections::HashMap;

    fn reader(pairs: &[(&str, &str)]) -> EnvReader<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EnvReader::new(move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn areas_are_read_as_boxes_in_degrees() {
        let settings = reader(&[("CITY_AREA", "40.5, 40.9,-74.3,-73.7"), ("LGA_AREA", "40.7,40.8,-73.9,-73.8")]).ingest_settings().unwrap();
        assert_eq!(settings.areas.city, GeoBox::new(40.5, 40.9, -74.3, -73.7));
        assert_eq!(settings.areas.airports, vec![Areas::default().airports[0], (Airport::Lga, GeoBox::new(40.7, 40.8, -73.9, -73.8))]);
        for bad in
            ["40.5,40.9,-74.3", "40.9,40.5,-74.3,-73.7", "40.5,40.9,-74.3,-73.7,1", "a,b,c,d", "40.5,91,-74.3,-73.7", "40.5,40.9,-74.3,NaN"]
        {
            let err = reader(&[("JFK_AREA", bad)]).ingest_settings().unwrap_err();
            assert_eq!((err.variable.as_str(), err.value.as_str()), ("JFK_AREA", bad));
            assert!(err.expected.contains("min_lat,max_lat,min_lon,max_lon"), "{err}");
        }
    }

    #[test]
    fn defaults_are_the_design_defaults() {
        let settings = reader(&[]).ingest_settings().unwrap();
        assert_eq!(settings, IngestSettings::default());
        assert_eq!(settings.window, WindowSpec::tumbling(600).unwrap());
    }

    #[test]
    fn parses_every_variable() {
        let settings = reader(&[
            ("WINDOW_SIZE_SECONDS", "900"),
            ("WINDOW_SLIDE_SECONDS", "300"),
            ("GEOHASH_PRECISION", "7"),
            ("WATERMARK_MODE", "Bounded"),
            ("MAX_OUT_OF_ORDERNESS_SECONDS", "30"),
            ("ALLOWED_LATENESS_SECONDS", "0"),
            ("FUTURE_TOLERANCE_SECONDS", "60"),
            ("RETENTION_HOURS", "2"),
        ])
        .ingest_settings()
        .unwrap();
        assert_eq!(settings.window, WindowSpec::new(900, 300).unwrap());
        assert_eq!(settings.precision.chars(), 7);
        assert_eq!(settings.watermark_mode, WatermarkMode::Bounded { max_out_of_orderness_s: 30 });
        assert_eq!((settings.allowed_lateness_s, settings.future_tolerance_s, settings.retention_s), (0, 60, 7200));
    }

    #[test]
    fn errors_name_the_variable_and_the_allowed_range() {
        let err = reader(&[("GEOHASH_PRECISION", "13")]).ingest_settings().unwrap_err();
        assert_eq!(err.to_string(), "configuration error: GEOHASH_PRECISION=\"13\" is invalid: expected a whole number from 1 to 12");
        let err = reader(&[("WINDOW_SIZE_SECONDS", "ten")]).ingest_settings().unwrap_err();
        assert_eq!(err.variable, "WINDOW_SIZE_SECONDS");
        let err = reader(&[("WINDOW_SIZE_SECONDS", "600"), ("WINDOW_SLIDE_SECONDS", "250")]).ingest_settings().unwrap_err();
        assert!(err.to_string().contains("must be a multiple of the slide"), "{err}");
        let err = reader(&[("WATERMARK_MODE", "magic")]).ingest_settings().unwrap_err();
        assert!(err.to_string().contains("expected one of producer, bounded"), "{err}");
        let err = reader(&[]).required("TABLE_NAME", "the DynamoDB table name").unwrap_err();
        assert_eq!(err.to_string(), "configuration error: TABLE_NAME is not set: it must be set to the DynamoDB table name");
    }
}
