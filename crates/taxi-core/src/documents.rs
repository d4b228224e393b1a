//! The documents of a closed window, as indexed in Elasticsearch / OpenSearch.
//!
//! Field names stay compatible with the reference dashboard (`location`,
//! `pickup_count`, `timestamp`, `airport_code`, `sum_trip_duration`,
//! `avg_trip_duration`). Durations are in seconds. `_id`s are deterministic
//! (metric, window start, window size, key), so re-closing or re-emitting a
//! window overwrites its documents instead of adding new ones.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::aggregate::{MetricKey, PartialValue};
use crate::geo::{Airport, Cell};
use crate::window::{WindowSpec, WindowStart};

/// What to emit and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentSettings {
    /// Hot spots and per-cell airport durations need at least this many trips.
    pub min_count: u64,
    /// The name readers use: the index itself, or with daily indices their alias.
    pub pickup_index: String,
    pub duration_index: String,
    /// `None`: one index per kind, kept forever. `Some(days)`: one index per
    /// kind and UTC day of the window start (`<name>-yyyy.mm.dd`, so a
    /// re-emission lands in the index of its first emission), all behind the
    /// alias `<name>`, each deleted by a lifecycle policy `days` after its creation.
    pub index_retention_days: Option<u32>,
}

impl Default for DocumentSettings {
    fn default() -> Self {
        DocumentSettings {
            min_count: 2,
            pickup_index: "pickup_count".into(),
            duration_index: "trip_duration".into(),
            index_retention_days: None,
        }
    }
}

impl DocumentSettings {
    /// The index a document of `window` goes to, for the readers' name `name`.
    pub fn index_for(&self, name: &str, window: WindowStart) -> String {
        match self.index_retention_days {
            None => name.to_owned(),
            Some(_) => {
                let day = crate::time::EventTime(window.0).to_rfc3339();
                format!("{name}-{}", day.get(..10).unwrap_or(&day).replace('-', "."))
            }
        }
    }

    /// The index pattern the index template (and the lifecycle policy) of `name` applies to.
    fn index_pattern(&self, name: &str) -> String {
        match self.index_retention_days {
            None => format!("{name}*"),
            Some(_) => format!("{name}-*"),
        }
    }
}

/// One document to index.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub index: String,
    pub id: String,
    pub source: Value,
    /// The external version it is indexed with: the sum of the counts of every
    /// partial of its window. Partials only grow, so an emission that read
    /// more of them is strictly newer, and the complete one is the newest; an
    /// older document landing late (a closer killed with a `_bulk` in flight,
    /// two closers, a re-emission) cannot overwrite a newer one.
    pub version: u64,
}

/// Every document of one window from its merged partials: hot spots per cell
/// (count >= min), airport durations per pickup cell (count >= min), and per
/// airport overall (any count) with the trip-weighted average.
pub fn window_documents(
    spec: &WindowSpec,
    window: WindowStart,
    merged: &BTreeMap<MetricKey, PartialValue>,
    settings: &DocumentSettings,
) -> Vec<Document> {
    let start = crate::time::EventTime(window.0);
    let end = spec.window_end(window);
    let times = json!({
        "timestamp": end.to_rfc3339(),
        "window_start": start.to_rfc3339(),
        "window_end": end.to_rfc3339(),
        "window_size_s": spec.size_s(),
    });
    let id_prefix = |metric: &str| format!("{metric}-{}-{}s", window.0, spec.size_s());
    let with_times = |mut source: Value| {
        if let (Some(source), Some(times)) = (source.as_object_mut(), times.as_object()) {
            source.extend(times.clone());
        }
        source
    };
    let durations = |airport: Airport, v: &PartialValue| {
        json!({
            "airport_code": airport.code(),
            "trip_count": v.count,
            "sum_trip_duration": v.sum_s,
            "avg_trip_duration": v.sum_s as f64 / v.count as f64,
        })
    };
    let version = merged.values().map(|v| v.count).sum();
    let mut documents = Vec::new();
    for (key, value) in merged {
        let document = match *key {
            MetricKey::Pickups(cell) if value.count >= settings.min_count => Document {
                index: settings.index_for(&settings.pickup_index, window),
                id: format!("{}-{cell}", id_prefix("pickups")),
                source: with_times(cell_fields(cell, json!({ "pickup_count": value.count }))),
                version,
            },
            MetricKey::AirportCell(airport, cell) if value.count >= settings.min_count => {
                let mut source = cell_fields(cell, durations(airport, value));
                source["scope"] = json!("pickup_cell");
                Document {
                    index: settings.index_for(&settings.duration_index, window),
                    id: format!("{}-{}-{cell}", id_prefix("airport"), airport.code()),
                    source: with_times(source),
                    version,
                }
            }
            MetricKey::Airport(airport) if value.count > 0 => {
                let mut source = durations(airport, value);
                source["scope"] = json!("airport");
                Document {
                    index: settings.index_for(&settings.duration_index, window),
                    id: format!("{}-{}", id_prefix("airport"), airport.code()),
                    source: with_times(source),
                    version,
                }
            }
            _ => continue,
        };
        documents.push(document);
    }
    documents
}

/// Adds the cell's `geohash` and its centre as `location` (a geo_point).
fn cell_fields(cell: Cell, mut source: Value) -> Value {
    let centre = cell.centre();
    source["geohash"] = json!(cell.as_str());
    source["location"] = json!({ "lat": centre.lat, "lon": centre.lon });
    source
}

/// Index templates for the two indices: `location` a geo_point, the times
/// dates, codes and cells keywords; with daily indices, each joins its alias.
pub fn index_templates(settings: &DocumentSettings) -> Vec<(String, Value)> {
    let dates = json!({"timestamp": {"type": "date"}, "window_start": {"type": "date"}, "window_end": {"type": "date"}, "window_size_s": {"type": "integer"}});
    let mut pickups = json!({"geohash": {"type": "keyword"}, "location": {"type": "geo_point"}, "pickup_count": {"type": "long"}});
    let mut durations = json!({
        "geohash": {"type": "keyword"}, "location": {"type": "geo_point"}, "airport_code": {"type": "keyword"}, "scope": {"type": "keyword"},
        "trip_count": {"type": "long"}, "sum_trip_duration": {"type": "long"}, "avg_trip_duration": {"type": "double"}
    });
    for properties in [&mut pickups, &mut durations] {
        if let (Some(p), Some(d)) = (properties.as_object_mut(), dates.as_object()) {
            p.extend(d.clone());
        }
    }
    [(&settings.pickup_index, pickups), (&settings.duration_index, durations)]
        .into_iter()
        .map(|(index, properties)| {
            let mut body = json!({
                "index_patterns": [settings.index_pattern(index)],
                "template": {"mappings": {"properties": properties}},
            });
            if settings.index_retention_days.is_some() {
                body["template"]["aliases"] = json!({ index.as_str(): {} });
            }
            (format!("taxi-{index}"), body)
        })
        .collect()
}

/// The OpenSearch Index State Management policies that delete each daily
/// index `days` after its creation, applied to new indices by their
/// `ism_template` (none without daily indices). Policy ids match the templates'
/// names. See https://docs.opensearch.org/latest/im-plugin/ism/policies/.
pub fn lifecycle_policies(settings: &DocumentSettings) -> Vec<(String, Value)> {
    let Some(days) = settings.index_retention_days else { return Vec::new() };
    [&settings.pickup_index, &settings.duration_index]
        .into_iter()
        .map(|index| {
            let body = json!({"policy": {
                "description": format!("Deletes the taxi pipeline's daily {index} indices {days} days after their creation"),
                "default_state": "open",
                "states": [
                    {"name": "open", "actions": [], "transitions": [{"state_name": "delete", "conditions": {"min_index_age": format!("{days}d")}}]},
                    {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
                ],
                "ism_template": [{"index_patterns": [settings.index_pattern(index)], "priority": 100}],
            }});
            (format!("taxi-{index}"), body)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_documents_of_one_window() {
        let spec = WindowSpec::tumbling(600).unwrap();
        let cell = Cell::parse("dr5ru7").unwrap();
        let quiet = Cell::parse("dr5rsq").unwrap();
        let merged: BTreeMap<MetricKey, PartialValue> = [
            (MetricKey::Pickups(cell), PartialValue { count: 3, sum_s: 900 }),
            (MetricKey::Pickups(quiet), PartialValue { count: 1, sum_s: 300 }),
            (MetricKey::AirportCell(Airport::Jfk, cell), PartialValue { count: 2, sum_s: 3000 }),
            (MetricKey::AirportCell(Airport::Jfk, quiet), PartialValue { count: 1, sum_s: 1000 }),
            (MetricKey::Airport(Airport::Jfk), PartialValue { count: 3, sum_s: 4000 }),
        ]
        .into();
        let docs = window_documents(&spec, WindowStart(1_420_866_000), &merged, &DocumentSettings::default());
        let centre = cell.centre();
        let times = |mut v: Value| {
            v["timestamp"] = json!("2015-01-10T05:10:00Z");
            v["window_start"] = json!("2015-01-10T05:00:00Z");
            v["window_end"] = json!("2015-01-10T05:10:00Z");
            v["window_size_s"] = json!(600);
            v
        };
        let expected = vec![
            Document {
                index: "pickup_count".into(),
                id: "pickups-1420866000-600s-dr5ru7".into(),
                source: times(json!({"geohash": "dr5ru7", "location": {"lat": centre.lat, "lon": centre.lon}, "pickup_count": 3})),
                version: 10,
            },
            Document {
                index: "trip_duration".into(),
                id: "airport-1420866000-600s-JFK-dr5ru7".into(),
                source: times(json!({
                    "airport_code": "JFK", "geohash": "dr5ru7", "location": {"lat": centre.lat, "lon": centre.lon}, "scope": "pickup_cell",
                    "trip_count": 2, "sum_trip_duration": 3000, "avg_trip_duration": 1500.0
                })),
                version: 10,
            },
            Document {
                index: "trip_duration".into(),
                id: "airport-1420866000-600s-JFK".into(),
                source: times(json!({
                    "airport_code": "JFK", "scope": "airport", "trip_count": 3, "sum_trip_duration": 4000, "avg_trip_duration": 4000.0 / 3.0
                })),
                version: 10,
            },
        ];
        assert_eq!(
            docs, expected,
            "cells below the minimum count are left out; the overall average is trip-weighted; the version sums every count of the window"
        );
        assert!((centre.lat - 40.758).abs() < 0.01 && (centre.lon + 73.985).abs() < 0.01);
    }

    #[test]
    fn templates_map_location_as_geo_point() {
        let templates = index_templates(&DocumentSettings::default());
        assert_eq!(templates.len(), 2);
        let (name, body) = &templates[0];
        assert_eq!(name, "taxi-pickup_count");
        assert_eq!(body["index_patterns"][0], "pickup_count*");
        assert_eq!(body["template"]["mappings"]["properties"]["location"]["type"], "geo_point");
        assert_eq!(templates[1].1["template"]["mappings"]["properties"]["timestamp"]["type"], "date");
        assert_eq!(templates[0].1["template"].get("aliases"), None, "one index per kind needs no alias");
        assert!(lifecycle_policies(&DocumentSettings::default()).is_empty(), "nor a policy");
    }

    #[test]
    fn daily_indices_follow_the_window_start_and_join_their_alias() {
        let settings = DocumentSettings { index_retention_days: Some(30), ..DocumentSettings::default() };
        let spec = WindowSpec::tumbling(600).unwrap();
        let merged = [(MetricKey::Pickups(Cell::parse("dr5ru7").unwrap()), PartialValue { count: 3, sum_s: 900 })].into();
        // The last window of 2015-01-10 goes to that day's index, though it ends on the next day.
        let last = window_documents(&spec, WindowStart(1_420_934_400 - 600), &merged, &settings);
        let next = window_documents(&spec, WindowStart(1_420_934_400), &merged, &settings);
        assert_eq!((last[0].index.as_str(), next[0].index.as_str()), ("pickup_count-2015.01.10", "pickup_count-2015.01.11"));

        let templates = index_templates(&settings);
        assert_eq!(templates[0].1["index_patterns"], json!(["pickup_count-*"]));
        assert_eq!(templates[0].1["template"]["aliases"], json!({"pickup_count": {}}));
        assert_eq!(templates[1].1["template"]["aliases"], json!({"trip_duration": {}}));

        let policies = lifecycle_policies(&settings);
        let names: Vec<&str> = policies.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["taxi-pickup_count", "taxi-trip_duration"]);
        let policy = &policies[1].1["policy"];
        assert_eq!(policy["ism_template"][0]["index_patterns"], json!(["trip_duration-*"]));
        assert_eq!(policy["states"][0]["transitions"][0], json!({"state_name": "delete", "conditions": {"min_index_age": "30d"}}));
        assert_eq!(policy["states"][1]["actions"], json!([{"delete": {}}]));
        assert_eq!(policy["default_state"], policy["states"][0]["name"]);
    }
}

#[cfg(test)]
mod shipped_templates {
    use super::*;

    /// `dashboards/index-templates/` holds what the closer puts, for users who
    /// create the indices themselves; they must not drift apart.
    #[test]
    fn shipped_templates_are_the_ones_the_closer_puts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards/index-templates");
        for (name, body) in index_templates(&DocumentSettings::default()) {
            let path = dir.join(format!("{name}.json"));
            if std::env::var_os("WRITE_TEMPLATES").is_some() {
                std::fs::write(&path, serde_json::to_string_pretty(&body).unwrap() + "\n").unwrap();
            }
            let shipped: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap();
            assert_eq!(shipped, body, "{} differs from documents::index_templates (WRITE_TEMPLATES=1 rewrites it)", path.display());
        }
    }
}
