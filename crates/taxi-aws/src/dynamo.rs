//! The DynamoDB table: layout, creation, and the [`PartialStore`] over it.
//!
//! | item            | pk                           | sk                | attributes |
//! |-----------------|------------------------------|-------------------|------------|
//! | partial         | `P#<pane_start>#<shard_id>`  | `<metric>#<key>`  | count, sum_s, seq, expires_at |
//! | shard state     | `S#<shard_id>`               | `STATE`           | applied_seq, watermark, top_event_time_1/2, updated_at, counters |
//! | closer state    | `C`                          | `STATE`           | closed_through, watermark |
//! | re-emit marker  | `R#<window_start>`           | `<shard_id>`      | seq, expires_at |
//!
//! Sequence numbers are stored zero-padded to 129 digits so that the fence
//! `attribute_not_exists(seq) OR seq < :first` compares them numerically.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConsumedCapacity, KeySchemaElement, KeyType, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, SseSpecification, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use taxi_core::aggregate::PartialKey;
use taxi_core::event::InvalidReason;
use taxi_core::seq::SeqNum;
use taxi_core::shard::{Counters, ShardId, ShardState};
use taxi_core::store::{PartialStore, PartialWrite, PartialWriteOutcome, ReemitMarker, SaveOutcome, StoreError};
use taxi_core::time::{EventTime, WallTime};
use taxi_core::watermark::{CloserProgress, ShardWatermark};
use taxi_core::window::{PaneStart, WindowStart};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
const STATE_SK: &str = "STATE";
const CLOSER_PK: &str = "C";

type Item = HashMap<String, AttributeValue>;

pub fn partial_pk(pane: PaneStart, shard: &ShardId) -> String {
    format!("P#{}#{}", pane.0, shard)
}

pub fn shard_state_pk(shard: &ShardId) -> String {
    format!("S#{shard}")
}

pub fn marker_pk(window: WindowStart) -> String {
    format!("R#{}", window.0)
}

/// Creates the table (on demand, encrypted, TTL on `expires_at`) unless it exists.
pub async fn ensure_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().expect("name and type are set")
    };
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("name and type are set");
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(attribute(PK))
        .attribute_definitions(attribute(SK))
        .key_schema(key(PK, KeyType::Hash))
        .key_schema(key(SK, KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .sse_specification(SseSpecification::builder().enabled(true).build())
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => return Ok(()),
        Err(e) => return Err(store_error("CreateTable", e)),
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().attribute_name(TTL_ATTRIBUTE).enabled(true).build().expect("fields are set"),
        )
        .send()
        .await
        .map_err(|e| store_error("UpdateTimeToLive", e))?;
    Ok(())
}

/// The [`PartialStore`] on one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore { client, table: table.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item)
    }

    /// The item's sequence fence, read when a refused write did not return the old item.
    async fn fence_of(&self, write: &PartialWrite<'_>) -> Result<SeqNum, StoreError> {
        let item = self.get(partial_pk(write.key.pane, write.shard), write.key.metric.sort_key()).await?;
        item.as_ref()
            .map(|item| seq_attribute(item, "seq"))
            .transpose()?
            .flatten()
            .ok_or_else(|| StoreError::Unavailable("a fenced partial had no sequence number on re-read".into()))
    }
}

impl PartialStore for DynamoStore {
    async fn load_shard_state(&self, shard: &ShardId) -> Result<Option<ShardState>, StoreError> {
        self.get(shard_state_pk(shard), STATE_SK.into()).await?.map(|item| decode_shard_state(&item)).transpose()
    }

    async fn load_closer_progress(&self) -> Result<CloserProgress, StoreError> {
        let Some(item) = self.get(CLOSER_PK.into(), STATE_SK.into()).await? else {
            return Ok(CloserProgress::default());
        };
        Ok(CloserProgress {
            closed_through: number_attribute(&item, "closed_through")?.map(EventTime),
            watermark: number_attribute(&item, "watermark")?.map(EventTime),
        })
    }

    async fn write_partial(&self, write: &PartialWrite<'_>) -> Result<PartialWriteOutcome, StoreError> {
        let PartialKey { pane, metric } = write.key;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(partial_pk(pane, write.shard)))
            .key(SK, AttributeValue::S(metric.sort_key()))
            .update_expression("ADD #count :count, sum_s :sum_s SET seq = :last, expires_at = :expires_at")
            .condition_expression("attribute_not_exists(seq) OR seq < :first")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":count", number(write.value.count))
            .expression_attribute_values(":sum_s", number(write.value.sum_s))
            .expression_attribute_values(":first", AttributeValue::S(write.first_seq.to_padded()))
            .expression_attribute_values(":last", AttributeValue::S(write.last_seq.to_padded()))
            .expression_attribute_values(":expires_at", number(write.expires_at.0))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => Ok(PartialWriteOutcome::Applied { capacity_units: capacity(out.consumed_capacity()) }),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {
                let UpdateItemError::ConditionalCheckFailedException(refused) = e.into_err() else { unreachable!() };
                let item_seq = match refused.item().map(|item| seq_attribute(item, "seq")).transpose()?.flatten() {
                    Some(seq) => seq,
                    None => self.fence_of(write).await?,
                };
                // A refused write still costs one write unit.
                Ok(PartialWriteOutcome::Fenced { item_seq, capacity_units: 1.0 })
            }
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }

    async fn put_reemit_marker(&self, marker: &ReemitMarker<'_>) -> Result<f64, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(marker_pk(marker.window)))
            .item(SK, AttributeValue::S(marker.shard.to_string()))
            .item("window_start", number(marker.window.0))
            .item("seq", AttributeValue::S(marker.seq.to_padded()))
            .item(TTL_ATTRIBUTE, number(marker.expires_at.0))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(capacity(out.consumed_capacity()))
    }

    async fn save_shard_state(&self, shard: &ShardId, state: &ShardState, expected: Option<&SeqNum>) -> Result<SaveOutcome, StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode_shard_state(shard, state)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(seq) => put
                .condition_expression("applied_seq = :expected")
                .expression_attribute_values(":expected", AttributeValue::S(seq.to_padded())),
        };
        match put.send().await {
            Ok(out) => Ok(SaveOutcome::Saved { capacity_units: capacity(out.consumed_capacity()) }),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                let current = self.load_shard_state(shard).await?.unwrap_or_default();
                Ok(SaveOutcome::Conflict { current })
            }
            Err(e) => Err(store_error("PutItem", e)),
        }
    }
}

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn capacity(consumed: Option<&ConsumedCapacity>) -> f64 {
    consumed.and_then(|c| c.capacity_units()).unwrap_or(0.0)
}

fn bad_item(attribute: &str, why: &str) -> StoreError {
    StoreError::Rejected(format!("stored item has a bad `{attribute}` attribute: {why}"))
}

fn number_attribute(item: &Item, name: &str) -> Result<Option<i64>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(n)) => n.parse().map(Some).map_err(|_| bad_item(name, "not an integer")),
        Some(_) => Err(bad_item(name, "not a number")),
    }
}

fn counter_attribute(item: &Item, name: &str) -> Result<u64, StoreError> {
    Ok(number_attribute(item, name)?.unwrap_or(0).max(0) as u64)
}

fn seq_attribute(item: &Item, name: &str) -> Result<Option<SeqNum>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(s)) => SeqNum::parse(s).map(Some).map_err(|e| bad_item(name, &e.to_string())),
        Some(_) => Err(bad_item(name, "not a string")),
    }
}

fn invalid_attribute(reason: InvalidReason) -> String {
    format!("invalid_{}", reason.name())
}

fn encode_shard_state(shard: &ShardId, state: &ShardState) -> Item {
    let c = &state.counters;
    let mut item: Item = [
        (PK.to_owned(), AttributeValue::S(shard_state_pk(shard))),
        (SK.to_owned(), AttributeValue::S(STATE_SK.into())),
        ("shard_id".to_owned(), AttributeValue::S(shard.to_string())),
        ("records".to_owned(), number(c.records)),
        ("trips_aggregated".to_owned(), number(c.trips_aggregated)),
        ("watermark_events".to_owned(), number(c.watermark_events)),
        ("late".to_owned(), number(c.late)),
        ("dropped_late".to_owned(), number(c.dropped_late)),
    ]
    .into_iter()
    .collect();
    for (reason, n) in c.invalid.iter() {
        item.insert(invalid_attribute(reason), number(n));
    }
    let optional = [
        ("applied_seq", state.applied_seq.as_ref().map(|s| AttributeValue::S(s.to_padded()))),
        ("watermark", state.watermark.watermark.map(|w| number(w.0))),
        ("watermark_iso", state.watermark.watermark.map(|w| AttributeValue::S(w.to_rfc3339()))),
        ("top_event_time_1", state.watermark.top_event_times[0].map(|t| number(t.0))),
        ("top_event_time_2", state.watermark.top_event_times[1].map(|t| number(t.0))),
        ("updated_at", state.updated_at.map(|t| number(t.0))),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.to_owned(), value);
        }
    }
    item
}

fn decode_shard_state(item: &Item) -> Result<ShardState, StoreError> {
    let mut counters = Counters {
        records: counter_attribute(item, "records")?,
        trips_aggregated: counter_attribute(item, "trips_aggregated")?,
        watermark_events: counter_attribute(item, "watermark_events")?,
        late: counter_attribute(item, "late")?,
        dropped_late: counter_attribute(item, "dropped_late")?,
        ..Counters::default()
    };
    for reason in InvalidReason::ALL {
        counters.invalid.add(reason, counter_attribute(item, &invalid_attribute(reason))?);
    }
    let time = |name: &str| number_attribute(item, name).map(|t| t.map(EventTime));
    Ok(ShardState {
        applied_seq: seq_attribute(item, "applied_seq")?,
        watermark: ShardWatermark {
            watermark: time("watermark")?,
            top_event_times: [time("top_event_time_1")?, time("top_event_time_2")?],
        },
        updated_at: number_attribute(item, "updated_at")?.map(WallTime),
        counters,
    })
}

/// Maps an SDK error to a [`StoreError`] that says whether retrying can help.
/// The SDK has already retried throttling and transient errors with backoff.
pub fn store_error<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or_default().to_owned();
    let message = format!("{operation}: {}", DisplayErrorContext(&error));
    match code.as_str() {
        "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded" => StoreError::Throttled(message),
        "ResourceNotFoundException"
        | "AccessDeniedException"
        | "ValidationException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException" => StoreError::Rejected(message),
        _ => StoreError::Unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_state_round_trips_through_an_item() {
        let mut state = ShardState {
            applied_seq: Some(SeqNum::parse("49545115243490985018280067714973144582180062593244200961").unwrap()),
            watermark: ShardWatermark { watermark: Some(EventTime(1_420_867_800)), top_event_times: [Some(EventTime(5)), None] },
            updated_at: Some(WallTime(1_700_000_000_123)),
            ..ShardState::default()
        };
        state.counters.records = 10;
        state.counters.invalid.add(InvalidReason::NotUtf8, 2);
        let item = encode_shard_state(&ShardId("shardId-000000000001".into()), &state);
        assert_eq!(item["pk"], AttributeValue::S("S#shardId-000000000001".into()));
        assert_eq!(decode_shard_state(&item).unwrap(), state);
    }

    #[test]
    fn keys_follow_the_layout() {
        let shard = ShardId("shardId-000000000002".into());
        assert_eq!(partial_pk(PaneStart(1_420_867_200), &shard), "P#1420867200#shardId-000000000002");
        assert_eq!(marker_pk(WindowStart(600)), "R#600");
    }
}
