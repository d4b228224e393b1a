//! The DynamoDB table: layout, creation, and the [`PartialStore`] over it.
//!
//! | item            | pk                           | sk                | attributes |
//! |-----------------|------------------------------|-------------------|------------|
//! | batch item      | `B#<shard_id>`               | `<digest>#<part>` | data (a part of the packed sections), expires_at |
//! | seal            | `P#<pane_start>#<shard_id>`  | `<seq sort key>`  | refs (packed), expires_at |
//! | shard state     | `S#<shard_id>`               | `STATE`           | layout, applied_seq, closing_through, watermark, top_event_time_1..4, updated_at, panes (packed), counters |
//! | closer state    | `C`                          | `STATE`           | closed_through, closing_through, watermark, lease, first_seen, known_shards, excluded, observation, close_cursor |
//! | re-emit marker  | `R`                          | `<window_start>#<shard_id>` | window_start, shard_id, seq, expires_at |
//! | dead letter     | `DLQ#<index>`                | `<document _id>`  | document, error, failed_at |
//!
//! A batch item (see `taxi_core::pack`) is written once per commit and read
//! by key (BatchGetItem) through the references in the shard state's packed
//! `panes`; a seal keeps the references of a pane pruned from the state, in
//! one partition per pane and shard, sorted by the sealing commit's sequence
//! number (length-prefixed, so string order is numeric order). Markers share
//! one partition so that the closer finds them all with one query; they are
//! written only for late data, so that partition stays cold.
//!
//! The shard state's `applied_seq` is stored zero-padded to 129 digits so that
//! the condition `applied_seq = :expected` compares canonical forms.

mod closer;
mod partials;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConsumedCapacity, KeySchemaElement, KeyType, KeysAndAttributes, ScalarAttributeType,
    SseSpecification, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use taxi_core::event::InvalidReason;
use taxi_core::pack::{pack_panes, unpack_panes, LogRef};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{Counters, ShardId, ShardState};
use taxi_core::store::StoreError;
use taxi_core::time::{EventTime, WallTime};
use taxi_core::watermark::{ShardWatermark, TopEventTimes};
use taxi_core::window::{PaneStart, WindowStart};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
const STATE_SK: &str = "STATE";
const CLOSER_PK: &str = "C";

type Item = HashMap<String, AttributeValue>;

pub fn batch_item_pk(shard: &ShardId) -> String {
    format!("B#{shard}")
}

pub fn batch_item_sk(log_ref: &LogRef, part: u16) -> String {
    format!("{}#{part:05}", log_ref.digest_hex())
}

/// Seals share their pane's partition, so a re-emission finds every shard's with one query.
pub fn seal_pk(pane: PaneStart) -> String {
    format!("P#{}", pane.0)
}

pub fn seal_sk(shard: &ShardId, sealed_at: &SeqNum) -> String {
    format!("{shard}#{}", sealed_at.to_sort_key())
}

/// The shard state's `layout`: 3 is batch items referred to by the state. A
/// state without it (the first layout, one item per partial) or with 2
/// (pane logs committed by transactions) was written by an older version and
/// is refused.
const LAYOUT: i64 = 3;

pub fn shard_state_pk(shard: &ShardId) -> String {
    format!("S#{shard}")
}

pub const MARKER_PK: &str = "R";

pub fn marker_sk(window: WindowStart, shard: &ShardId) -> String {
    format!("{}#{shard}", window.0)
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

/// Capacity units DynamoDB reported as consumed, in thousandths.
#[derive(Debug, Default)]
pub struct Consumed {
    read: AtomicU64,
    write: AtomicU64,
    billed_write: AtomicU64,
}

impl Consumed {
    /// Write units as DynamoDB bills them, computed from the items' sizes: DynamoDB
    /// Local reports a flat figure per transaction and per batch write, so the
    /// documented rule is applied here.
    fn add_billed_write(&self, units: f64) {
        self.billed_write.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    /// Write units by DynamoDB's rules for what was written so far (see [`write_units`]).
    pub fn billed_write_units(&self) -> f64 {
        self.billed_write.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn add_read(&self, units: f64) {
        self.read.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    fn add_write(&self, units: f64) {
        self.write.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    /// (read units, write units) so far.
    pub fn units(&self) -> (f64, f64) {
        (self.read.load(Ordering::Relaxed) as f64 / 1000.0, self.write.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}

/// The [`PartialStore`] on one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    consumed: Arc<Consumed>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore { client, table: table.into(), consumed: Arc::default() }
    }

    /// The read and write capacity this store's requests consumed (for benchmarks and tests).
    pub fn consumed(&self) -> &Consumed {
        &self.consumed
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Every item of these keys that exists (consistent reads), resending what DynamoDB left unprocessed.
    async fn batch_get(&self, keys: Vec<Item>, operation: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut pending = chunk.to_vec();
            for round in 0.. {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Rejected(format!("building a {operation}: {e}")))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(|e| store_error(operation, e))?;
                self.consumed.add_read(out.consumed_capacity().iter().filter_map(|c| c.capacity_units()).sum());
                items.extend(out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten().cloned());
                pending = out.unprocessed_keys().and_then(|u| u.get(&self.table)).map(|k| k.keys().to_vec()).unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if round + 1 >= UNPROCESSED_ROUNDS {
                    return Err(StoreError::Throttled(format!("{operation} left {} keys unprocessed", pending.len())));
                }
                tokio::time::sleep(unprocessed_backoff(round)).await;
            }
        }
        Ok(items)
    }

    async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk))
            .consistent_read(true)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        self.consumed.add_read(capacity(out.consumed_capacity()));
        Ok(out.item)
    }
}

/// BatchGetItem takes at most 100 keys
/// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html).
const BATCH_GET_KEYS: usize = 100;
/// Rounds of resending what a batch request left unprocessed (throttling) before giving up.
const UNPROCESSED_ROUNDS: u32 = 8;

/// The wait before resending what round `round` (from 0) left unprocessed.
fn unprocessed_backoff(round: u32) -> std::time::Duration {
    use std::time::Duration;
    taxi_core::retry::backoff(round + 1, Duration::from_millis(50), Duration::from_secs(2), fastrand::f64())
}

/// An item's size as DynamoDB counts it: each attribute's name plus its value
/// (strings and binaries their bytes, numbers about one byte per two digits
/// plus one, lists and maps 3 bytes plus one per element plus the elements)
/// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum::<usize>(),
        _ => 1,
    }
}

/// Writes of items of these sizes, as billed: one write unit per started
/// kilobyte of each item (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html),
/// two in a transaction, condition checks included
/// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-capacity-handling).
pub fn write_units(item_sizes: impl IntoIterator<Item = usize>, transactional: bool) -> f64 {
    let per_kb = if transactional { 2 } else { 1 };
    item_sizes.into_iter().map(|bytes| per_kb * bytes.max(1).div_ceil(1024)).sum::<usize>() as f64
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
        ("layout".to_owned(), number(LAYOUT)),
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
        ("updated_at", state.updated_at.map(|t| number(t.0))),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.to_owned(), value);
        }
    }
    for (i, t) in state.watermark.top_event_times.times.iter().enumerate() {
        if let Some(t) = t {
            item.insert(top_event_time_attribute(i), number(t.0));
        }
    }
    if let Some(t) = state.closing_through {
        item.insert(CLOSING_THROUGH.to_owned(), number(t.0));
    }
    item.insert(PANES.to_owned(), AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(pack_panes(state))));
    item
}

/// `top_event_time_1` (the highest) to `top_event_time_4`.
fn top_event_time_attribute(i: usize) -> String {
    format!("top_event_time_{}", i + 1)
}

/// The closer item's `excluded` map: shard -> the `closed_through` when it was judged idle.
fn excluded_attribute(item: &Item) -> Result<BTreeMap<ShardId, EventTime>, StoreError> {
    match item.get("excluded") {
        None => Ok(BTreeMap::new()),
        Some(AttributeValue::M(map)) => map
            .iter()
            .map(|(shard, t)| match t {
                AttributeValue::N(n) => {
                    n.parse().map(|t| (ShardId(shard.clone()), EventTime(t))).map_err(|_| bad_item("excluded", "not an integer"))
                }
                _ => Err(bad_item("excluded", "not a number")),
            })
            .collect(),
        Some(_) => Err(bad_item("excluded", "not a map")),
    }
}

/// The shard state's stamp of the closer's `closing_through`, and its packed pane lists.
const CLOSING_THROUGH: &str = "closing_through";
const PANES: &str = "panes";

fn decode_shard_state(item: &Item) -> Result<ShardState, StoreError> {
    if number_attribute(item, "layout")? != Some(LAYOUT) {
        return Err(StoreError::Rejected(format!(
            "the shard state {:?} was written by another layout of the table (this version writes layout {LAYOUT}, batch items): \
             deploy it with a new table (TableName), or let the old stack close its windows first",
            item.get(PK).and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("?")
        )));
    }
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
    let mut state = ShardState {
        applied_seq: seq_attribute(item, "applied_seq")?,
        watermark: ShardWatermark {
            watermark: time("watermark")?,
            top_event_times: {
                let mut top = TopEventTimes::default();
                for (i, t) in top.times.iter_mut().enumerate() {
                    *t = time(&top_event_time_attribute(i))?;
                }
                top
            },
        },
        updated_at: number_attribute(item, "updated_at")?.map(WallTime),
        counters,
        closing_through: time(CLOSING_THROUGH)?,
        ..ShardState::default()
    };
    match item.get(PANES) {
        Some(AttributeValue::B(blob)) => unpack_panes(blob.as_ref(), &mut state).map_err(|e| bad_item(PANES, &e.to_string()))?,
        _ => return Err(bad_item(PANES, "missing or not binary")),
    }
    Ok(state)
}

/// Maps an SDK error to a [`StoreError`] that says whether retrying can help.
/// The SDK has already retried throttling and transient errors with backoff.
pub fn store_error<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or_default().to_owned();
    let message = format!("{operation}: {}", crate::sdk::error_message(&error));
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
    use taxi_core::shard::PaneLog;

    #[test]
    fn shard_state_round_trips_through_an_item() {
        let mut state = ShardState {
            applied_seq: Some(SeqNum::parse("49545115243490985018280067714973144582180062593244200961").unwrap()),
            watermark: ShardWatermark {
                watermark: Some(EventTime(1_420_867_800)),
                top_event_times: TopEventTimes { times: [Some(EventTime(9)), Some(EventTime(5)), None, None] },
            },
            updated_at: Some(WallTime(1_700_000_000_123)),
            ..ShardState::default()
        };
        state.counters.records = 10;
        state.counters.invalid.add(InvalidReason::NotUtf8, 2);
        let r = |digest| LogRef { digest, parts: 1 };
        state.open_panes = [
            (PaneStart(600), PaneLog { refs: vec![r(1), r(2)], compacted: 0, since: 812 }),
            (PaneStart(1200), PaneLog { refs: vec![r(3)], compacted: 20_000, since: 3 }),
        ]
        .into();
        state.sealing = [(PaneStart(0), vec![r(u128::MAX)])].into();
        state.closing_through = Some(EventTime(1_420_867_200));
        let mut item = encode_shard_state(&ShardId("shardId-000000000001".into()), &state);
        assert_eq!(item["pk"], AttributeValue::S("S#shardId-000000000001".into()));
        assert_eq!(decode_shard_state(&item).unwrap(), state);
        // Older layouts' states (none: one item per partial; 2: transactional pane logs) are refused, with the way out.
        for older in [None, Some(2)] {
            match older {
                None => item.remove("layout"),
                Some(layout) => item.insert("layout".into(), number(layout)),
            };
            let refused = decode_shard_state(&item).unwrap_err();
            assert!(matches!(&refused, StoreError::Rejected(m) if m.contains("another layout") && m.contains("new table")), "{refused}");
        }
    }

    #[test]
    fn item_sizes_and_transaction_units_follow_dynamodbs_rules() {
        let item: Item = [
            ("pk".to_owned(), AttributeValue::S("P#1".into())),
            ("parts".to_owned(), number(12345)),
            ("data".to_owned(), AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0; 1000]))),
            ("panes".to_owned(), AttributeValue::L(vec![number(7), number(70)])),
        ]
        .into();
        // 2+3, 5+(3+1), 4+1000, 5+3+(1+2)+(1+2)
        assert_eq!(item_size(&item), 5 + 9 + 1004 + 14);
        assert_eq!(write_units([item_size(&item), 1024, 1, 1025], true), 4.0 + 2.0 + 2.0 + 4.0);
        assert_eq!(write_units([item_size(&item), 1024, 1, 1025], false), 2.0 + 1.0 + 1.0 + 2.0);
    }

    #[test]
    fn keys_follow_the_layout() {
        let shard = ShardId("shardId-000000000002".into());
        assert_eq!(seal_pk(PaneStart(1_420_867_200)), "P#1420867200");
        let sealed_at = SeqNum::parse("49545115243490985018280067714973144582180062593244200961").unwrap();
        assert_eq!(seal_sk(&shard, &sealed_at), format!("shardId-000000000002#{}", sealed_at.to_sort_key()));
        assert_eq!(batch_item_pk(&shard), "B#shardId-000000000002");
        assert_eq!(batch_item_sk(&LogRef { digest: 255, parts: 2 }, 1), "000000000000000000000000000000ff#00001");
        assert_eq!(marker_sk(WindowStart(600), &shard), "600#shardId-000000000002");
    }
}
