//! The aggregate function's store: partials behind their sequence fence,
//! re-emit markers and shard states.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure};
use taxi_core::aggregate::PartialKey;
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::store::{PartialStore, PartialWrite, PartialWriteOutcome, ReemitMarker, SaveOutcome, StoreError};
use taxi_core::time::EventTime;
use taxi_core::watermark::CloserProgress;

use super::{
    capacity, decode_shard_state, encode_shard_state, marker_sk, number, number_attribute, partial_pk, seq_attribute, shard_state_pk,
    store_error, DynamoStore, CLOSER_PK, MARKER_PK, PK, SK, STATE_SK, TTL_ATTRIBUTE,
};

impl DynamoStore {
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

    async fn load_closer_progress(&self, shard: &ShardId) -> Result<CloserProgress, StoreError> {
        let Some(item) = self.get(CLOSER_PK.into(), STATE_SK.into()).await? else {
            return Ok(CloserProgress::default());
        };
        Ok(CloserProgress {
            closed_through: number_attribute(&item, "closed_through")?.map(EventTime),
            watermark: number_attribute(&item, "watermark")?.map(EventTime),
            closing_through: number_attribute(&item, "closing_through")?.map(EventTime),
            excluded_since: super::excluded_attribute(&item)?.remove(shard),
        })
    }

    async fn partial_seq(&self, shard: &ShardId, key: PartialKey) -> Result<Option<SeqNum>, StoreError> {
        let item = self.get(partial_pk(key.pane, shard), key.metric.sort_key()).await?;
        Ok(item.map(|item| seq_attribute(&item, "seq")).transpose()?.flatten())
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
            .item(PK, AttributeValue::S(MARKER_PK.into()))
            .item(SK, AttributeValue::S(marker_sk(marker.window, marker.shard)))
            .item("window_start", number(marker.window.0))
            .item("shard_id", AttributeValue::S(marker.shard.to_string()))
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
                Ok(SaveOutcome::Conflict { current: Box::new(current) })
            }
            Err(e) => Err(store_error("PutItem", e)),
        }
    }
}
