//! The close-windows function's store: shard states, the closer state with
//! its lease, partials, re-emit markers and dead letters.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure};
use futures::{StreamExt, TryStreamExt};
use taxi_core::closer::{CloseCursor, CloserState, CloserStore, DeadLetter, StoredMarker};
use taxi_core::expiry::PaneObservation;
use taxi_core::pack::{LogRef, Partials};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::store::{with_seals, StoreError};
use taxi_core::time::{EventTime, WallTime};
use taxi_core::window::{PaneStart, WindowStart};

use super::{
    capacity, decode_shard_state, number, number_attribute, seq_attribute, shard_state_pk, store_error, DynamoStore, Item, CLOSER_PK,
    MARKER_PK, PK, SK, STATE_SK,
};

fn is_conditional_failure<E>(error: &SdkError<E, impl std::fmt::Debug>, check: impl Fn(&E) -> bool) -> bool {
    error.as_service_error().is_some_and(check)
}

fn known_shards_attribute(item: &Item) -> BTreeSet<ShardId> {
    match item.get("known_shards") {
        Some(AttributeValue::Ss(ids)) => ids.iter().map(|id| ShardId(id.clone())).collect(),
        _ => BTreeSet::new(),
    }
}

/// Shard states stamped at once by a closer.
const STAMP_CONCURRENCY: usize = 16;

fn text_attribute<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

fn bad_closer_item(attribute: &str) -> StoreError {
    StoreError::Rejected(format!("the closer state has a malformed `{attribute}`"))
}

/// `close_cursor`: a map of `window`, `index`, `id` and `markers` (shard -> padded seq).
fn cursor_attribute(item: &Item) -> Result<Option<CloseCursor>, StoreError> {
    let Some(AttributeValue::M(map)) = item.get("close_cursor") else { return Ok(None) };
    let bad = || bad_closer_item("close_cursor");
    let markers = match map.get("markers") {
        Some(AttributeValue::M(markers)) => markers
            .iter()
            .map(|(shard, seq)| match seq {
                AttributeValue::S(seq) => SeqNum::parse(seq).map(|seq| (ShardId(shard.clone()), seq)).map_err(|_| bad()),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    Ok(Some(CloseCursor {
        window: WindowStart(number_attribute(map, "window")?.ok_or_else(bad)?),
        markers,
        indexed_through: (text_attribute(map, "index").ok_or_else(bad)?.to_owned(), text_attribute(map, "id").ok_or_else(bad)?.to_owned()),
    }))
}

fn cursor_value(cursor: &CloseCursor) -> AttributeValue {
    let markers = cursor.markers.iter().map(|(shard, seq)| (shard.to_string(), AttributeValue::S(seq.to_padded()))).collect();
    AttributeValue::M(
        [
            ("window".to_owned(), number(cursor.window.0)),
            ("index".to_owned(), AttributeValue::S(cursor.indexed_through.0.clone())),
            ("id".to_owned(), AttributeValue::S(cursor.indexed_through.1.clone())),
            ("markers".to_owned(), AttributeValue::M(markers)),
        ]
        .into(),
    )
}

/// `pane_since` (pane start -> wall ms), `observed_at` and `panes_pruned_through`.
fn observation_attributes(item: &Item) -> Result<PaneObservation, StoreError> {
    let since = match item.get("pane_since") {
        None => BTreeMap::new(),
        Some(AttributeValue::M(map)) => map
            .iter()
            .map(|(pane, at)| match (pane.parse(), at) {
                (Ok(pane), AttributeValue::N(at)) => {
                    at.parse().map(|at| (PaneStart(pane), WallTime(at))).map_err(|_| bad_closer_item("pane_since"))
                }
                _ => Err(bad_closer_item("pane_since")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad_closer_item("pane_since")),
    };
    Ok(PaneObservation {
        observed_at: number_attribute(item, "observed_at")?.map(WallTime),
        since,
        pruned_through: number_attribute(item, "panes_pruned_through")?.map(PaneStart),
    })
}

impl DynamoStore {
    fn closer_update(&self) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(CLOSER_PK.into()))
            .key(SK, AttributeValue::S(STATE_SK.into()))
    }

    /// All pages of a query on one partition key, consistent.
    async fn query_partition(&self, pk: String) -> Result<Vec<Item>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .into_paginator()
            .send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error("Query", e))?;
            self.consumed.add_read(capacity(page.consumed_capacity()));
            items.extend(page.items().iter().cloned());
        }
        Ok(items)
    }
}

impl DynamoStore {
    /// `closing_through` into one shard state (never back); the state after it, if it has one.
    async fn stamp_shard_state(&self, shard: ShardId, closing_through: EventTime) -> Result<Option<(ShardId, ShardState)>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(shard_state_pk(&shard)))
            .key(SK, AttributeValue::S(STATE_SK.into()))
            .update_expression("SET closing_through = :through")
            .condition_expression("attribute_exists(applied_seq) AND (attribute_not_exists(closing_through) OR closing_through < :through)")
            .expression_attribute_values(":through", number(closing_through.0))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        let item = match result {
            Ok(out) => {
                self.consumed.add_write(capacity(out.consumed_capacity()));
                out.attributes
            }
            // No state yet (its first commit checks the closer item), or stamped as far already.
            Err(SdkError::ServiceError(e)) if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {
                let UpdateItemError::ConditionalCheckFailedException(failed) = e.into_err() else { unreachable!() };
                failed.item
            }
            Err(e) => return Err(store_error("UpdateItem (closing_through stamp)", e)),
        };
        item.map(|item| decode_shard_state(&item).map(|state| (shard, state))).transpose()
    }
}

impl CloserStore for DynamoStore {
    async fn load_shard_states(&self, shards: &[ShardId]) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
        let keys = shards
            .iter()
            .map(|shard| {
                [(PK.to_owned(), AttributeValue::S(shard_state_pk(shard))), (SK.to_owned(), AttributeValue::S(STATE_SK.into()))].into()
            })
            .collect();
        self.batch_get(keys, "BatchGetItem (shard states)")
            .await?
            .iter()
            .map(|item| {
                let shard = text_attribute(item, "shard_id").ok_or_else(|| StoreError::Rejected("a shard state has no shard_id".into()))?;
                Ok((ShardId(shard.to_owned()), decode_shard_state(item)?))
            })
            .collect()
    }

    async fn load_closer_state(&self) -> Result<CloserState, StoreError> {
        let Some(item) = self.get(CLOSER_PK.into(), STATE_SK.into()).await? else {
            return Ok(CloserState::default());
        };
        let first_seen = match item.get("first_seen") {
            Some(AttributeValue::M(map)) => map
                .iter()
                .map(|(shard, t)| match t {
                    AttributeValue::N(n) => n
                        .parse()
                        .map(|ms| (ShardId(shard.clone()), WallTime(ms)))
                        .map_err(|_| StoreError::Rejected("bad first_seen".into())),
                    _ => Err(StoreError::Rejected("bad first_seen".into())),
                })
                .collect::<Result<_, _>>()?,
            _ => BTreeMap::new(),
        };
        Ok(CloserState {
            closed_through: number_attribute(&item, "closed_through")?.map(EventTime),
            closing_through: number_attribute(&item, "closing_through")?.map(EventTime),
            watermark: number_attribute(&item, "watermark")?.map(EventTime),
            first_seen,
            excluded: super::excluded_attribute(&item)?,
            known_shards: known_shards_attribute(&item),
            close_cursor: cursor_attribute(&item)?,
            observation: observation_attributes(&item)?,
        })
    }

    async fn acquire_lease(&self, owner: &str, now: WallTime, until: WallTime) -> Result<bool, StoreError> {
        let result = self
            .closer_update()
            .update_expression("SET lease_owner = :owner, lease_until = :until")
            .condition_expression("attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .expression_attribute_values(":until", number(until.0))
            .expression_attribute_values(":now", number(now.0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e, UpdateItemError::is_conditional_check_failed_exception) => Ok(false),
            Err(e) => Err(store_error("UpdateItem (lease)", e)),
        }
    }

    async fn release_lease(&self, owner: &str) -> Result<(), StoreError> {
        let result = self
            .closer_update()
            .update_expression("SET lease_until = :zero")
            .condition_expression("lease_owner = :owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .expression_attribute_values(":zero", number(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e, UpdateItemError::is_conditional_check_failed_exception) => Ok(()),
            Err(e) => Err(store_error("UpdateItem (lease)", e)),
        }
    }

    async fn read_pane(&self, pane: PaneStart, sources: &[(ShardId, Vec<LogRef>)], sealed: bool) -> Result<Partials, StoreError> {
        if !sealed {
            return self.read_items(pane, sources).await;
        }
        let mut seals = Vec::new();
        for seal in self.query_partition(super::seal_pk(pane)).await? {
            let shard = text_attribute(&seal, "shard_id").ok_or_else(|| super::bad_item("shard_id", "a seal without its shard"))?;
            seals.push((ShardId(shard.to_owned()), super::partials::refs_attribute(&seal)?));
        }
        self.read_items(pane, &with_seals(sources, seals)).await
    }

    async fn list_reemit_markers(&self) -> Result<Vec<StoredMarker>, StoreError> {
        self.query_partition(MARKER_PK.into())
            .await?
            .iter()
            .map(|item| {
                let bad = || StoreError::Rejected("a re-emit marker is malformed".into());
                Ok(StoredMarker {
                    window: WindowStart(number_attribute(item, "window_start")?.ok_or_else(bad)?),
                    shard: ShardId(text_attribute(item, "shard_id").ok_or_else(bad)?.to_owned()),
                    seq: seq_attribute(item, "seq")?.ok_or_else(bad)?,
                })
            })
            .collect()
    }

    async fn delete_reemit_marker(&self, marker: &StoredMarker) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(MARKER_PK.into()))
            .key(SK, AttributeValue::S(super::marker_sk(marker.window, &marker.shard)))
            .condition_expression("seq = :seq")
            .expression_attribute_values(":seq", AttributeValue::S(marker.seq.to_padded()))
            .send()
            .await;
        match result {
            // Touched again by newer late data: it stays, for the next run.
            Err(e) if is_conditional_failure(&e, DeleteItemError::is_conditional_check_failed_exception) => Ok(()),
            other => other.map(|_| ()).map_err(|e| store_error("DeleteItem", e)),
        }
    }

    async fn announce_closing(&self, closing_through: EventTime) -> Result<BTreeSet<ShardId>, StoreError> {
        let result = self
            .closer_update()
            .update_expression("SET closing_through = :through")
            .condition_expression("attribute_not_exists(closing_through) OR closing_through < :through")
            .expression_attribute_values(":through", number(closing_through.0))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let item = match result {
            Ok(out) => out.attributes,
            // Another closer announced as far already: never backwards.
            Err(SdkError::ServiceError(e)) if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {
                let UpdateItemError::ConditionalCheckFailedException(failed) = e.into_err() else { unreachable!() };
                failed.item
            }
            Err(e) => return Err(store_error("UpdateItem (closing_through)", e)),
        };
        Ok(item.as_ref().map(known_shards_attribute).unwrap_or_default())
    }

    async fn stamp_shard_states(
        &self,
        shards: &[ShardId],
        closing_through: EventTime,
    ) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
        let stamps = shards.iter().cloned().map(|shard| self.stamp_shard_state(shard, closing_through));
        let stamped: Vec<Option<(ShardId, ShardState)>> =
            futures::stream::iter(stamps).buffer_unordered(STAMP_CONCURRENCY).try_collect().await?;
        Ok(stamped.into_iter().flatten().collect())
    }

    async fn save_observation(&self, observation: &PaneObservation) -> Result<(), StoreError> {
        let since = observation.since.iter().map(|(pane, at)| (pane.0.to_string(), number(at.0))).collect();
        let mut update = "SET pane_since = :since".to_owned();
        let mut request = self.closer_update().expression_attribute_values(":since", AttributeValue::M(since));
        if let Some(at) = observation.observed_at {
            update.push_str(", observed_at = :observed");
            request = request.expression_attribute_values(":observed", number(at.0));
        }
        if let Some(pane) = observation.pruned_through {
            update.push_str(", panes_pruned_through = :pruned");
            request = request.expression_attribute_values(":pruned", number(pane.0));
        }
        // Never backwards: a closer whose write lands late (an invocation that died)
        // must not replace a newer observation with one that lacks panes since listed.
        if observation.observed_at.is_some() {
            request = request.condition_expression("attribute_not_exists(observed_at) OR observed_at < :observed");
        }
        match request.update_expression(update).send().await {
            Err(e) if is_conditional_failure(&e, UpdateItemError::is_conditional_check_failed_exception) => Ok(()),
            other => other.map(|_| ()).map_err(|e| store_error("UpdateItem (pane observation)", e)),
        }
    }

    async fn advance_closed_through(&self, closed_through: EventTime, watermark: EventTime) -> Result<(), StoreError> {
        let result = self
            .closer_update()
            .update_expression("SET closed_through = :through, watermark = :watermark, closed_through_iso = :iso")
            .condition_expression("attribute_not_exists(closed_through) OR closed_through < :through")
            .expression_attribute_values(":through", number(closed_through.0))
            .expression_attribute_values(":watermark", number(watermark.0))
            .expression_attribute_values(":iso", AttributeValue::S(closed_through.to_rfc3339()))
            .send()
            .await;
        match result {
            // Another closer got there first: never backwards.
            Err(e) if is_conditional_failure(&e, UpdateItemError::is_conditional_check_failed_exception) => Ok(()),
            other => other.map(|_| ()).map_err(|e| store_error("UpdateItem (closed_through)", e)),
        }
    }

    async fn save_close_cursor(&self, cursor: Option<&CloseCursor>) -> Result<(), StoreError> {
        let request = match cursor {
            Some(cursor) => self
                .closer_update()
                .update_expression("SET close_cursor = :cursor")
                .expression_attribute_values(":cursor", cursor_value(cursor)),
            None => self.closer_update().update_expression("REMOVE close_cursor"),
        };
        request.send().await.map(|_| ()).map_err(|e| store_error("UpdateItem (close_cursor)", e))
    }

    async fn save_excluded(&self, excluded: &BTreeMap<ShardId, EventTime>) -> Result<(), StoreError> {
        let map = excluded.iter().map(|(shard, t)| (shard.to_string(), number(t.0))).collect();
        self.closer_update()
            .update_expression("SET excluded = :excluded")
            .expression_attribute_values(":excluded", AttributeValue::M(map))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_error("UpdateItem (excluded)", e))
    }

    async fn remember_shards(&self, shards: &[ShardId]) -> Result<(), StoreError> {
        self.closer_update()
            .update_expression("ADD known_shards :ids")
            .expression_attribute_values(":ids", AttributeValue::Ss(shards.iter().map(ToString::to_string).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_error("UpdateItem (known_shards)", e))
    }

    async fn save_first_seen(&self, first_seen: &BTreeMap<ShardId, WallTime>) -> Result<(), StoreError> {
        let map = first_seen.iter().map(|(shard, t)| (shard.to_string(), number(t.0))).collect();
        self.closer_update()
            .update_expression("SET first_seen = :first_seen")
            .expression_attribute_values(":first_seen", AttributeValue::M(map))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_error("UpdateItem (first_seen)", e))
    }

    async fn put_dead_letters(&self, letters: &[DeadLetter], now: WallTime) -> Result<(), StoreError> {
        for letter in letters {
            self.client
                .put_item()
                .table_name(&self.table)
                .item(PK, AttributeValue::S(format!("DLQ#{}", letter.document.index)))
                .item(SK, AttributeValue::S(letter.document.id.clone()))
                .item("document", AttributeValue::S(letter.document.source.to_string()))
                .item("status", number(letter.status))
                .item("reason", AttributeValue::S(letter.reason.clone()))
                .item("failed_at", number(now.0))
                .send()
                .await
                .map_err(|e| store_error("PutItem (dead letter)", e))?;
        }
        Ok(())
    }
}
