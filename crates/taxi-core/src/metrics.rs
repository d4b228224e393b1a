//! Per-batch metrics and their CloudWatch Embedded Metric Format encoding.

use serde_json::{json, Map, Value};

use crate::shard::{Counters, ShardId};
use crate::time::EventTime;

/// What one batch did. Counters cover the records applied by this
/// invocation (a retried batch reports again what it applies again: EMF
/// metrics are per invocation; the shard state's counters are exactly-once).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchMetrics {
    pub shard: Option<ShardId>,
    pub records: u64,
    /// Records at or below the shard's applied sequence number (redeliveries).
    pub redelivered: u64,
    pub applied: Counters,
    pub partial_writes: u64,
    /// Writes the sequence fence refused because the item had the records already.
    pub fenced_writes: u64,
    pub marker_writes: u64,
    pub state_writes: u64,
    pub consumed_capacity_units: f64,
    pub watermark: Option<EventTime>,
    /// A retry was requested (an infrastructure error).
    pub retry_requested: bool,
    pub duration_ms: u64,
}

impl BatchMetrics {
    /// One EMF JSON line (dimension: function name); `timestamp_ms` is wall time.
    pub fn to_emf(&self, namespace: &str, function: &str, timestamp_ms: i64) -> String {
        let mut metrics: Vec<(&str, &str, Value)> = vec![
            ("Records", "Count", json!(self.records)),
            ("RedeliveredRecords", "Count", json!(self.redelivered)),
            ("TripsAggregated", "Count", json!(self.applied.trips_aggregated)),
            ("WatermarkEvents", "Count", json!(self.applied.watermark_events)),
            ("InvalidRecords", "Count", json!(self.applied.invalid.total())),
            ("LateTrips", "Count", json!(self.applied.late)),
            ("DroppedLateTrips", "Count", json!(self.applied.dropped_late)),
            ("PartialWrites", "Count", json!(self.partial_writes)),
            ("FencedWrites", "Count", json!(self.fenced_writes)),
            ("ReemitMarkerWrites", "Count", json!(self.marker_writes)),
            ("StateWrites", "Count", json!(self.state_writes)),
            ("ConsumedWriteCapacityUnits", "Count", json!(self.consumed_capacity_units)),
            ("RetryRequested", "Count", json!(u64::from(self.retry_requested))),
            ("BatchDuration", "Milliseconds", json!(self.duration_ms)),
        ];
        let invalid_names: Vec<String> = self.applied.invalid.iter().map(|(r, _)| format!("Invalid_{}", r.name())).collect();
        for ((_, n), name) in self.applied.invalid.iter().zip(&invalid_names) {
            metrics.push((name, "Count", json!(n)));
        }
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
                }],
            }),
        );
        root.insert("FunctionName".into(), json!(function));
        for (name, _, value) in metrics {
            root.insert(name.into(), value);
        }
        // Properties for Logs Insights, not metrics.
        if let Some(shard) = &self.shard {
            root.insert("ShardId".into(), json!(shard.as_str()));
        }
        if let Some(w) = self.watermark {
            root.insert("Watermark".into(), json!(w.to_rfc3339()));
            root.insert("WatermarkEpochSeconds".into(), json!(w.seconds()));
        }
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::InvalidReason;

    #[test]
    fn emf_line_declares_every_metric_it_carries() {
        let mut m = BatchMetrics {
            records: 10,
            shard: Some(ShardId("shardId-000000000001".into())),
            watermark: Some(EventTime(1_420_867_800)),
            ..Default::default()
        };
        m.applied.invalid.add(InvalidReason::OutsideArea, 3);
        let line: Value = serde_json::from_str(&m.to_emf("TaxiPipeline", "aggregate", 1_700_000_000_000)).unwrap();
        let declared = line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap();
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "TaxiPipeline");
        for metric in declared {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} declared but not present");
        }
        assert_eq!(line["Records"], 10);
        assert_eq!(line["Invalid_outside_area"], 3);
        assert_eq!(line["FunctionName"], "aggregate");
        assert_eq!(line["Watermark"], "2015-01-10T05:30:00Z");
    }
}
