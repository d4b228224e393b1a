//! The aggregate function's store: a batch's item, markers and seals with
//! plain batch writes, then the shard state with one conditional PutItem (a
//! shard's first state in a transaction with the closer's registration);
//! pane partials read by key through the references the state holds.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, PutRequest, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update, WriteRequest,
};
use taxi_core::pack::{merge_into, pack_refs, unpack_refs, LogRef, Partials};
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::store::{merge_pane, Commit, CommitOutcome, LogWrite, PartialStore, StoreError};
use taxi_core::watermark::CloserProgress;
use taxi_core::window::PaneStart;

use super::{
    batch_item_pk, batch_item_sk, capacity, decode_shard_state, encode_shard_state, item_size, marker_sk, number, number_attribute,
    seal_pk, seal_sk, shard_state_pk, store_error, unprocessed_backoff, write_units, DynamoStore, Item, CLOSER_PK, MARKER_PK, PK, SK,
    STATE_SK, TTL_ATTRIBUTE, UNPROCESSED_ROUNDS,
};

/// BatchWriteItem takes at most 25 puts
/// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html).
const WRITE_BATCH: usize = 25;

fn cancellation(reasons: &[CancellationReason], action: usize) -> Option<&str> {
    reasons.get(action).and_then(|r| r.code())
}

/// A seal's references, as its binary `refs` attribute.
fn refs_value(refs: &[LogRef]) -> AttributeValue {
    AttributeValue::B(Blob::new(pack_refs(refs)))
}

pub(super) fn refs_attribute(item: &Item) -> Result<Vec<LogRef>, StoreError> {
    match item.get("refs") {
        Some(AttributeValue::B(blob)) => unpack_refs(blob.as_ref()).map_err(|e| super::bad_item("refs", &e.to_string())),
        _ => Err(super::bad_item("refs", "missing or not binary")),
    }
}

impl DynamoStore {
    /// One pane's partials from the batch items `sources` names per shard
    /// (consistent reads; BatchGetItem, 100 keys a request).
    pub(super) async fn read_items(&self, pane: PaneStart, sources: &[(ShardId, Vec<LogRef>)]) -> Result<Partials, StoreError> {
        let keys: Vec<Item> = sources
            .iter()
            .flat_map(|(shard, refs)| refs.iter().flat_map(move |r| (0..r.parts).map(move |part| (shard, r, part))))
            .map(|(shard, r, part)| {
                HashMap::from([
                    (PK.to_owned(), AttributeValue::S(batch_item_pk(shard))),
                    (SK.to_owned(), AttributeValue::S(batch_item_sk(r, part))),
                ])
            })
            .collect();
        let mut parts: HashMap<(String, String), Vec<u8>> = HashMap::new();
        for item in self.batch_get(keys, "BatchGetItem (batch items)").await? {
            let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk)), Some(AttributeValue::B(data))) =
                (item.get(PK), item.get(SK), item.get("data"))
            else {
                return Err(super::bad_item("data", "a batch item without its key or data"));
            };
            parts.insert((pk.clone(), sk.clone()), data.clone().into_inner());
        }
        let mut partials = Partials::new();
        for (shard, refs) in sources {
            let pk = batch_item_pk(shard);
            let items: HashMap<u128, Vec<Vec<u8>>> = refs
                .iter()
                .filter_map(|r| {
                    (0..r.parts)
                        .map(|part| parts.remove(&(pk.clone(), batch_item_sk(r, part))))
                        .collect::<Option<Vec<_>>>()
                        .map(|p| (r.digest, p))
                })
                .collect();
            merge_into(&mut partials, merge_pane(refs, pane, |r| items.get(&r.digest).map(Vec::as_slice))?);
        }
        Ok(partials)
    }

    /// Puts these items with BatchWriteItem, resending what is left unprocessed.
    async fn put_all(&self, items: Vec<Item>) -> Result<(), StoreError> {
        self.consumed.add_billed_write(write_units(items.iter().map(item_size), false));
        for chunk in items.chunks(WRITE_BATCH) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    let put = PutRequest::builder().set_item(Some(item.clone())).build().expect("the item is set");
                    WriteRequest::builder().put_request(put).build()
                })
                .collect();
            for round in 0.. {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(|e| store_error("BatchWriteItem (batch item, markers, seals)", e))?;
                self.consumed.add_write(out.consumed_capacity().iter().filter_map(|c| c.capacity_units()).sum());
                pending = out.unprocessed_items().and_then(|u| u.get(&self.table)).cloned().unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if round + 1 >= UNPROCESSED_ROUNDS {
                    return Err(StoreError::Throttled(format!("BatchWriteItem left {} items unprocessed", pending.len())));
                }
                tokio::time::sleep(unprocessed_backoff(round)).await;
            }
        }
        Ok(())
    }

    /// A shard's first state, in one transaction with the closer check and registration.
    async fn first_commit(&self, commit: &Commit<'_>, state: Item) -> Result<CommitOutcome, StoreError> {
        const STATE_ACTION: usize = 0;
        let built = |what: &str, e: aws_sdk_dynamodb::error::BuildError| StoreError::Rejected(format!("building the {what}: {e}"));
        let state_size = item_size(&state);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(state))
            .condition_expression("attribute_not_exists(applied_seq)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| built("state put", e))?;
        let register = Update::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(CLOSER_PK.into()))
            .key(SK, AttributeValue::S(STATE_SK.into()))
            .update_expression("ADD known_shards :shard")
            .expression_attribute_values(":shard", AttributeValue::Ss(vec![commit.shard.to_string()]));
        let register = match commit.state.closing_through {
            None => register.condition_expression("attribute_not_exists(closing_through)"),
            Some(t) => register.condition_expression("closing_through = :closing").expression_attribute_values(":closing", number(t.0)),
        };
        let actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(register.build().map_err(|e| built("closer registration", e))?).build(),
        ];
        // Billed whether it lands or is cancelled; the closer item is about 1 KB.
        self.consumed.add_billed_write(write_units([state_size, 1024], true));
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                let units = out.consumed_capacity().iter().filter_map(|c| c.capacity_units()).sum();
                self.consumed.add_write(units);
                Ok(CommitOutcome::Committed { capacity_units: units })
            }
            Err(SdkError::ServiceError(e)) if matches!(e.err(), TransactWriteItemsError::TransactionCanceledException(_)) => {
                let TransactWriteItemsError::TransactionCanceledException(cancelled) = e.into_err() else { unreachable!() };
                let reasons = cancelled.cancellation_reasons();
                if cancellation(reasons, STATE_ACTION) == Some("ConditionalCheckFailed") {
                    let current = match reasons[STATE_ACTION].item().map(decode_shard_state).transpose()? {
                        Some(state) => state,
                        None => self.load_shard_state(commit.shard).await?.unwrap_or_default(),
                    };
                    return Ok(CommitOutcome::StateMoved { current: Box::new(current) });
                }
                let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).filter(|c| *c != "None").collect();
                // The closer announced since the batch was judged, or wrote its item meanwhile: judge again either way.
                if codes.iter().all(|c| *c == "ConditionalCheckFailed" || *c == "TransactionConflict") {
                    return Ok(CommitOutcome::CloserMoved);
                }
                let message = format!("TransactWriteItems cancelled: {}", codes.join(", "));
                Err(if codes.iter().any(|c| c.contains("Throttl")) {
                    StoreError::Throttled(message)
                } else {
                    StoreError::Rejected(message)
                })
            }
            Err(e) => Err(store_error("TransactWriteItems (first shard state)", e)),
        }
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
        let time = |name: &str| number_attribute(&item, name).map(|t| t.map(taxi_core::time::EventTime));
        Ok(CloserProgress {
            closed_through: time("closed_through")?,
            watermark: time("watermark")?,
            closing_through: time("closing_through")?,
            excluded_since: super::excluded_attribute(&item)?.remove(shard),
        })
    }

    async fn read_pane(&self, shard: &ShardId, pane: PaneStart, refs: &[LogRef]) -> Result<Partials, StoreError> {
        self.read_items(pane, &[(shard.clone(), refs.to_vec())]).await
    }

    async fn write_log(&self, shard: &ShardId, write: &LogWrite) -> Result<(), StoreError> {
        let mut items: Vec<Item> = Vec::new();
        if let Some(item) = &write.item {
            for (part, data) in item.parts.iter().enumerate() {
                items.push(HashMap::from([
                    (PK.to_owned(), AttributeValue::S(batch_item_pk(shard))),
                    (SK.to_owned(), AttributeValue::S(batch_item_sk(&item.log_ref, part as u16))),
                    ("data".to_owned(), AttributeValue::B(Blob::new(data.clone()))),
                    (TTL_ATTRIBUTE.to_owned(), number(write.item_expires_at.0)),
                ]));
            }
        }
        for marker in &write.markers {
            items.push(HashMap::from([
                (PK.to_owned(), AttributeValue::S(MARKER_PK.into())),
                (SK.to_owned(), AttributeValue::S(marker_sk(marker.window, shard))),
                ("window_start".to_owned(), number(marker.window.0)),
                ("shard_id".to_owned(), AttributeValue::S(shard.to_string())),
                ("seq".to_owned(), AttributeValue::S(marker.seq.to_padded())),
                (TTL_ATTRIBUTE.to_owned(), number(marker.expires_at.0)),
            ]));
        }
        for seal in &write.seals {
            items.push(HashMap::from([
                (PK.to_owned(), AttributeValue::S(seal_pk(seal.pane))),
                (SK.to_owned(), AttributeValue::S(seal_sk(shard, &seal.sealed_at))),
                ("shard_id".to_owned(), AttributeValue::S(shard.to_string())),
                ("refs".to_owned(), refs_value(&seal.refs)),
                (TTL_ATTRIBUTE.to_owned(), number(seal.expires_at.0)),
            ]));
        }
        self.put_all(items).await
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let state = encode_shard_state(commit.shard, commit.state);
        let Some(expected) = commit.expected else {
            return self.first_commit(commit, state).await;
        };
        self.consumed.add_billed_write(write_units([item_size(&state)], false));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(state))
            .expression_attribute_values(":expected", AttributeValue::S(expected.to_padded()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        let put = match commit.state.closing_through {
            None => put.condition_expression("applied_seq = :expected AND attribute_not_exists(closing_through)"),
            Some(t) => put
                .condition_expression("applied_seq = :expected AND closing_through = :closing")
                .expression_attribute_values(":closing", number(t.0)),
        };
        match put.send().await {
            Ok(out) => {
                let units = capacity(out.consumed_capacity());
                self.consumed.add_write(units);
                Ok(CommitOutcome::Committed { capacity_units: units })
            }
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                let PutItemError::ConditionalCheckFailedException(failed) = e.into_err() else { unreachable!() };
                let current = match failed.item().map(decode_shard_state).transpose()? {
                    Some(state) => state,
                    None => self.load_shard_state(commit.shard).await?.unwrap_or_default(),
                };
                Ok(CommitOutcome::StateMoved { current: Box::new(current) })
            }
            Err(e) => Err(store_error("PutItem (shard state)", e)),
        }
    }
}
