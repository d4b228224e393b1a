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
    /// Shard states committed (each one advances the shard state).
    pub commits: u64,
    /// Commits refused because the shard state or the closer's stamp in it moved.
    pub refused_commits: u64,
    /// Batch items written, counted per part.
    pub batch_item_parts: u64,
    pub compactions: u64,
    pub marker_writes: u64,
    pub consumed_capacity_units: f64,
    pub watermark: Option<EventTime>,
    /// A retry was requested (an infrastructure error).
    pub retry_requested: bool,
    pub duration_ms: u64,
}

/// One metric of an EMF line.
pub struct Metric<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub value: Value,
}

/// One CloudWatch Embedded Metric Format line (dimension: the function name);
/// `properties` ride along for Logs Insights without becoming metrics.
pub fn emf_line(namespace: &str, function: &str, timestamp_ms: i64, metrics: &[Metric<'_>], properties: Vec<(&str, Value)>) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName"]],
                "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("FunctionName".into(), json!(function));
    for m in metrics {
        root.insert(m.name.into(), m.value.clone());
    }
    for (name, value) in properties {
        root.insert(name.into(), value);
    }
    Value::Object(root).to_string()
}

fn count<'a>(name: &'a str, value: impl Into<Value>) -> Metric<'a> {
    Metric { name, unit: "Count", value: value.into() }
}

impl BatchMetrics {
    /// One EMF line for the batch; `timestamp_ms` is wall time.
    pub fn to_emf(&self, namespace: &str, function: &str, timestamp_ms: i64) -> String {
        let invalid_names: Vec<String> = self.applied.invalid.iter().map(|(r, _)| format!("Invalid_{}", r.name())).collect();
        let mut metrics = vec![
            count("Records", self.records),
            count("RedeliveredRecords", self.redelivered),
            count("TripsAggregated", self.applied.trips_aggregated),
            count("WatermarkEvents", self.applied.watermark_events),
            count("InvalidRecords", self.applied.invalid.total()),
            count("LateTrips", self.applied.late),
            count("DroppedLateTrips", self.applied.dropped_late),
            count("Commits", self.commits),
            count("RefusedCommits", self.refused_commits),
            count("BatchItemParts", self.batch_item_parts),
            count("Compactions", self.compactions),
            count("ReemitMarkerWrites", self.marker_writes),
            count("ConsumedWriteCapacityUnits", self.consumed_capacity_units),
            count("RetryRequested", u64::from(self.retry_requested)),
            Metric { name: "BatchDuration", unit: "Milliseconds", value: self.duration_ms.into() },
        ];
        for ((_, n), name) in self.applied.invalid.iter().zip(&invalid_names) {
            metrics.push(count(name, n));
        }
        let mut properties = Vec::new();
        if let Some(shard) = &self.shard {
            properties.push(("ShardId", json!(shard.as_str())));
        }
        if let Some(w) = self.watermark {
            properties.push(("Watermark", json!(w.to_rfc3339())));
            properties.push(("WatermarkEpochSeconds", json!(w.seconds())));
        }
        emf_line(namespace, function, timestamp_ms, &metrics, properties)
    }
}

/// One EMF line for a close-windows run.
pub fn close_report_emf(report: &crate::closer::CloseReport, namespace: &str, function: &str, timestamp_ms: i64) -> String {
    let now_s = timestamp_ms.div_euclid(1000);
    let watermark = report.global.as_ref().and_then(|g| g.watermark);
    let mut metrics = vec![
        count("WindowsClosed", report.windows_closed),
        count("WindowsReemitted", report.windows_reemitted),
        count("WindowsLeftOpen", report.windows_left_open),
        count("WindowsResumed", report.windows_resumed),
        count("WindowsRefusedExpired", report.refused_expired.len() as u64),
        count("DocumentsIndexed", report.documents_indexed),
        count("DocumentsRetried", report.documents_retried),
        count("DeadLetters", report.dead_letters),
        count("CloseErrors", u64::from(report.error.is_some())),
    ];
    if let Some(w) = watermark {
        metrics.push(Metric { name: "WatermarkLag", unit: "Seconds", value: (now_s - w.seconds()).into() });
    }
    let mut properties = vec![("LeaseHeldElsewhere", json!(report.lease_held_elsewhere))];
    if let Some(global) = &report.global {
        let verdicts: Map<String, Value> = global.verdicts.iter().map(|(id, v)| (id.to_string(), json!(v.name()))).collect();
        properties.push(("Shards", Value::Object(verdicts)));
    }
    if let Some(w) = watermark {
        properties.push(("GlobalWatermark", json!(w.to_rfc3339())));
    }
    if let Some(c) = report.closed_through {
        properties.push(("ClosedThrough", json!(c.to_rfc3339())));
    }
    emf_line(namespace, function, timestamp_ms, &metrics, properties)
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
