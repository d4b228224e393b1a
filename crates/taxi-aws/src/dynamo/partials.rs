//! The aggregate function's store: a batch's pane log items, re-emit markers
//! and shard state in one TransactWriteItems, and pane logs read newest first.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Put, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use taxi_core::pack::{LogItem, PaneLogReader, Partials};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::store::{log_items, Commit, CommitOutcome, PartialStore, StoreError};
use taxi_core::watermark::CloserProgress;
use taxi_core::window::PaneStart;

use super::{
    bad_item, capacity, decode_shard_state, encode_shard_state, item_size, marker_sk, number, number_attribute, pane_log_pk, pane_log_sk,
    shard_state_pk, store_error, transaction_write_units, DynamoStore, Item, CLOSER_PK, MARKER_PK, PK, SK, STATE_SK, TTL_ATTRIBUTE,
};

/// Items per page when reading a pane log newest first: the newest
/// compaction is usually within the first page, and a page is paid in full.
const LOG_PAGE_ITEMS: i32 = 16;

/// The transaction's first two actions: the shard state, then the closer check.
const STATE_ACTION: usize = 0;
const CLOSER_ACTION: usize = 1;

fn log_item(item: &Item) -> Result<LogItem, StoreError> {
    let sk = match item.get(SK) {
        Some(AttributeValue::S(sk)) => sk,
        _ => return Err(bad_item(SK, "missing")),
    };
    let (seq, part) = sk.split_once('#').ok_or_else(|| old_layout(sk))?;
    let seq = SeqNum::from_sort_key(seq).map_err(|_| old_layout(sk))?;
    let part = part.parse().map_err(|_| bad_item(SK, "bad part number"))?;
    let parts = number_attribute(item, "parts")?.and_then(|n| u16::try_from(n).ok()).ok_or_else(|| bad_item("parts", "missing"))?;
    let compacted = matches!(item.get("compacted"), Some(AttributeValue::Bool(true)));
    let payload = match item.get("data") {
        Some(AttributeValue::B(blob)) => blob.clone().into_inner(),
        _ => return Err(bad_item("data", "missing or not binary")),
    };
    Ok(LogItem { seq, part, parts, compacted, payload })
}

/// A partial item of the first layout (one item per metric and key) met where a pane log item should be.
fn old_layout(sk: &str) -> StoreError {
    StoreError::Rejected(format!(
        "the table holds a partial of an older layout (sort key {sk:?}): this version stores packed pane logs; \
         deploy it with a new table (TableName) or let the old stack close its windows first"
    ))
}

fn cancellation(reasons: &[CancellationReason], action: usize) -> Option<&str> {
    reasons.get(action).and_then(|r| r.code())
}

impl DynamoStore {
    /// One pane log, newest first, up to and with its newest compaction (consistent reads).
    pub(super) async fn read_log(&self, pane: PaneStart, shard: &ShardId) -> Result<Partials, StoreError> {
        let mut items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pane_log_pk(pane, shard)))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(LOG_PAGE_ITEMS)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .into_paginator()
            .send();
        let mut reader = PaneLogReader::default();
        while let Some(page) = items.next().await {
            let page = page.map_err(|e| store_error("Query", e))?;
            self.consumed.add_read(capacity(page.consumed_capacity()));
            for item in page.items() {
                reader.push(&log_item(item)?).map_err(|e| StoreError::Rejected(e.to_string()))?;
            }
            if reader.is_done() {
                break;
            }
        }
        Ok(reader.finish())
    }

    fn transact_items(&self, commit: &Commit<'_>) -> Result<Vec<TransactWriteItem>, StoreError> {
        let built = |what: &str, e: aws_sdk_dynamodb::error::BuildError| StoreError::Rejected(format!("building the {what}: {e}"));
        let mut state = Put::builder()
            .table_name(&self.table)
            .set_item(Some(encode_shard_state(commit.shard, commit.state)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        state = match commit.expected {
            None => state.condition_expression("attribute_not_exists(applied_seq)"),
            Some(seq) => state
                .condition_expression("applied_seq = :expected")
                .expression_attribute_values(":expected", AttributeValue::S(seq.to_padded())),
        };
        let mut closer = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(CLOSER_PK.into()))
            .key(SK, AttributeValue::S(STATE_SK.into()));
        closer = match commit.closing_through {
            None => closer.condition_expression("attribute_not_exists(closing_through)"),
            Some(t) => closer.condition_expression("closing_through = :closing").expression_attribute_values(":closing", number(t.0)),
        };
        let mut actions = vec![
            TransactWriteItem::builder().put(state.build().map_err(|e| built("state put", e))?).build(),
            TransactWriteItem::builder().condition_check(closer.build().map_err(|e| built("closer check", e))?).build(),
        ];
        let seq = commit.seq();
        for append in &commit.appends {
            for item in log_items(append, seq) {
                let put = Put::builder()
                    .table_name(&self.table)
                    .item(PK, AttributeValue::S(pane_log_pk(append.pane, commit.shard)))
                    .item(SK, AttributeValue::S(pane_log_sk(&item.seq, item.part)))
                    .item("parts", number(item.parts))
                    .item("data", AttributeValue::B(Blob::new(item.payload)))
                    .item(TTL_ATTRIBUTE, number(append.expires_at.0));
                let put = if item.compacted { put.item("compacted", AttributeValue::Bool(true)) } else { put };
                actions.push(TransactWriteItem::builder().put(put.build().map_err(|e| built("log item put", e))?).build());
            }
        }
        for marker in &commit.markers {
            let put = Put::builder()
                .table_name(&self.table)
                .item(PK, AttributeValue::S(MARKER_PK.into()))
                .item(SK, AttributeValue::S(marker_sk(marker.window, commit.shard)))
                .item("window_start", number(marker.window.0))
                .item("shard_id", AttributeValue::S(commit.shard.to_string()))
                .item("seq", AttributeValue::S(marker.seq.to_padded()))
                .item(TTL_ATTRIBUTE, number(marker.expires_at.0));
            actions.push(TransactWriteItem::builder().put(put.build().map_err(|e| built("marker put", e))?).build());
        }
        Ok(actions)
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
        self.consumed.closer_item_bytes.store(item_size(&item) as u64, std::sync::atomic::Ordering::Relaxed);
        let time = |name: &str| number_attribute(&item, name).map(|t| t.map(taxi_core::time::EventTime));
        Ok(CloserProgress {
            closed_through: time("closed_through")?,
            watermark: time("watermark")?,
            closing_through: time("closing_through")?,
            excluded_since: super::excluded_attribute(&item)?.remove(shard),
        })
    }

    async fn read_pane_log(&self, shard: &ShardId, pane: PaneStart) -> Result<Partials, StoreError> {
        self.read_log(pane, shard).await
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let actions = self.transact_items(commit)?;
        let closer_bytes = self.consumed.closer_item_bytes.load(std::sync::atomic::Ordering::Relaxed) as usize;
        let puts = actions.iter().filter_map(|a| a.put()).map(|put| item_size(put.item()));
        // Billed whether it lands or is cancelled.
        self.consumed.add_billed_write(transaction_write_units(puts.chain([closer_bytes])));
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
                    let old = reasons[STATE_ACTION].item().map(decode_shard_state).transpose()?;
                    let current = match old {
                        Some(state) => state,
                        None => self.load_shard_state(commit.shard).await?.unwrap_or_default(),
                    };
                    return Ok(CommitOutcome::StateMoved { current: Box::new(current) });
                }
                // The closer announced since the batch was judged, or another transaction
                // (the closer's) wrote one of the items meanwhile: judge again either way.
                let conflict = (0..reasons.len()).any(|i| cancellation(reasons, i) == Some("TransactionConflict"));
                if cancellation(reasons, CLOSER_ACTION) == Some("ConditionalCheckFailed") || conflict {
                    return Ok(CommitOutcome::CloserMoved);
                }
                let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).filter(|c| *c != "None").collect();
                let message = format!("TransactWriteItems cancelled: {}", codes.join(", "));
                Err(if codes.iter().any(|c| c.contains("Throttl")) {
                    StoreError::Throttled(message)
                } else {
                    StoreError::Rejected(message)
                })
            }
            Err(e) => Err(store_error("TransactWriteItems", e)),
        }
    }
}
