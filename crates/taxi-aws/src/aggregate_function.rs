//! The aggregate function: a Kinesis batch in, batch item failures out.

use std::time::Instant;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use lambda_runtime::{service_fn, LambdaEvent};
use taxi_core::ingest::{Aggregator, InputRecord};
use taxi_core::seq::SeqNum;
use taxi_core::shard::ShardId;
use taxi_core::store::PartialStore;
use taxi_core::time::WallTime;

use crate::config::{sdk_config, AggregateConfig};
use crate::dynamo::DynamoStore;
use crate::telemetry::{emit_emf, init_lambda_logging};

/// Where per-batch metrics go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsOutput {
    /// One CloudWatch EMF line per batch on stdout (on Lambda).
    Emf { namespace: String, function_name: String },
    /// Nowhere (local tools that print their own summary).
    Off,
}

/// The handler, over any store.
pub struct AggregateFunction<S> {
    aggregator: Aggregator<S>,
    metrics: MetricsOutput,
}

impl<S: PartialStore> AggregateFunction<S> {
    pub fn new(aggregator: Aggregator<S>, metrics: MetricsOutput) -> AggregateFunction<S> {
        AggregateFunction { aggregator, metrics }
    }

    pub fn aggregator(&self) -> &Aggregator<S> {
        &self.aggregator
    }

    /// Processes the batch (one shard's, as an event source mapping sends it;
    /// several shards are handled one after the other) and answers with the
    /// first record to deliver again, if any.
    pub async fn handle(&self, event: KinesisEvent, now: WallTime) -> KinesisEventResponse {
        let mut response = KinesisEventResponse::default();
        for (shard, records) in split_by_shard(event) {
            let started = Instant::now();
            let mut report = self.aggregator.process_batch(&shard, &records, now).await;
            report.metrics.duration_ms = started.elapsed().as_millis() as u64;
            if let MetricsOutput::Emf { namespace, function_name } = &self.metrics {
                emit_emf(&report.metrics, namespace, function_name);
            }
            tracing::info!(
                %shard,
                records = report.metrics.records,
                trips = report.metrics.applied.trips_aggregated,
                invalid = report.metrics.applied.invalid.total(),
                redelivered = report.metrics.redelivered,
                retry_from = ?report.retry_from.as_ref().map(SeqNum::as_str),
                "batch processed"
            );
            if let Some(seq) = report.retry_from {
                let mut failure = KinesisBatchItemFailure::default();
                failure.item_identifier = Some(seq.as_str().to_owned());
                response.batch_item_failures.push(failure);
            }
        }
        response
    }
}

/// Groups the records by shard, in order. A record without a shard id or a
/// valid sequence number cannot come from Kinesis and cannot be fenced: it
/// is logged and skipped, so it never blocks the shard.
fn split_by_shard(event: KinesisEvent) -> Vec<(ShardId, Vec<InputRecord>)> {
    let mut batches: Vec<(ShardId, Vec<InputRecord>)> = Vec::new();
    for record in event.records {
        let shard = record.event_id.as_deref().and_then(ShardId::from_event_id);
        let seq = SeqNum::from_string(record.kinesis.sequence_number);
        let (shard, seq) = match (shard, seq) {
            (Some(shard), Ok(seq)) => (shard, seq),
            (shard, seq) => {
                tracing::error!(event_id = ?record.event_id, shard = ?shard, seq = ?seq, "skipping a record without a shard id or sequence number");
                continue;
            }
        };
        let input = InputRecord { seq, data: record.kinesis.data.0 };
        match batches.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, records)) => records.push(input),
            None => batches.push((shard, vec![input])),
        }
    }
    batches
}

/// The Lambda entry point: configuration from the environment (a wrong value
/// stops the function at start-up with a message naming the variable), the
/// DynamoDB store, and the runtime loop.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    init_lambda_logging();
    let config = AggregateConfig::from_env().map_err(|e| {
        tracing::error!("{e}");
        e.to_string()
    })?;
    let sdk = sdk_config(config.dynamodb_max_attempts).await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.table_name.clone());
    let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "aggregate".into());
    let metrics = MetricsOutput::Emf { namespace: config.metrics_namespace, function_name };
    let function = AggregateFunction::new(Aggregator::new(store, config.ingest), metrics);
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| async move {
        Ok::<_, lambda_runtime::Error>(function.handle(event.payload, WallTime::now()).await)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_lambda_event_by_shard_and_skips_unaddressable_records() {
        let event: KinesisEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"eventID": "shardId-000000000001:100", "kinesis": {"data": "eyJ0eXBlIjoidHJpcCJ9", "sequenceNumber": "100", "partitionKey": "a", "approximateArrivalTimestamp": 1.5e9}},
            {"eventID": "no-shard", "kinesis": {"data": "", "sequenceNumber": "101", "partitionKey": "a", "approximateArrivalTimestamp": 1.5e9}},
            {"eventID": "shardId-000000000002:7", "kinesis": {"data": "", "sequenceNumber": "x7", "partitionKey": "a", "approximateArrivalTimestamp": 1.5e9}},
            {"eventID": "shardId-000000000001:102", "kinesis": {"data": "", "sequenceNumber": "102", "partitionKey": "a", "approximateArrivalTimestamp": 1.5e9}}
        ]}))
        .unwrap();
        let batches = split_by_shard(event);
        assert_eq!(batches.len(), 1);
        let (shard, records) = &batches[0];
        assert_eq!(shard.as_str(), "shardId-000000000001");
        assert_eq!(records.iter().map(|r| r.seq.as_str()).collect::<Vec<_>>(), vec!["100", "102"]);
        assert_eq!(records[0].data, br#"{"type":"trip"}"#);
    }
}
