//! Models of DynamoDB, Kinesis `ListShards` and the search endpoint behind the
//! core's own traits, so the real aggregate and closer algorithms run on them.
//!
//! DynamoDB, as documented:
//! - conditional writes are atomic per item and a refused condition changes
//!   nothing (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html);
//!   with `ReturnValuesOnConditionCheckFailure = ALL_OLD` the refusal carries the item;
//! - strongly consistent reads see every write acknowledged before them;
//! - an item is at most 400 KB, larger writes fail with a ValidationException
//!   (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html);
//! - TTL deletes an item at some time after its `expires_at` (epoch seconds)
//!   has passed on the wall clock, typically within days, never before
//!   (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/howitworks-ttl.html);
//! - throttling refuses a request without applying it.
//!
//! The search endpoint keeps documents by `_id`; with external versioning an
//! index request whose version is lower than the stored one is refused with a
//! 409 (https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-index_.html#index-versioning).

use std::collections::BTreeMap;
use std::sync::Arc;

use taxi_core::closer::{
    CloseCursor, CloserState, CloserStore, DeadLetter, DocumentSink, IndexReport, ShardSource, SinkError, SourceError, StoredMarker,
};
use taxi_core::documents::Document;
use taxi_core::expiry::PaneObservation;
use taxi_core::pack::{merge_into, pack_panes, LogRef, Partials, MAX_PART_BYTES};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState, StreamShard};
use taxi_core::store::{merge_pane, with_seals, Commit, CommitOutcome, LogWrite, PartialStore, StoreError};
use taxi_core::time::{EventTime, WallTime};
use taxi_core::watermark::CloserProgress;
use taxi_core::window::PaneStart;

use super::world::{IndexedDocument, ItemEntry, MarkerItem, SealEntry, Service, Shared, Sleep};

/// The search client's request timeout.
const REQUEST_TIMEOUT_MS: i64 = 10_000;
/// Keys a BatchGetItem request takes
/// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html).
const BATCH_GET_KEYS: usize = 100;

/// DynamoDB's item size limit.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// The size of a shard state item as stored: fixed attributes plus the packed pane lists.
fn shard_state_bytes(state: &ShardState) -> usize {
    600 + pack_panes(state).len()
}

/// One actor's handle on the simulated table.
#[derive(Clone)]
pub struct SimStore {
    pub shared: Arc<Shared>,
    pub actor: u64,
}

impl SimStore {
    fn dynamo<T: Send + 'static>(
        &self,
        label: &'static str,
        f: impl FnOnce(&mut super::world::Env<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> super::world::Reply<'_, T> {
        self.shared.call(self.actor, Service::Dynamo, label, 0, f)
    }
}

impl PartialStore for SimStore {
    async fn load_shard_state(&self, shard: &ShardId) -> Result<Option<ShardState>, StoreError> {
        let shard = shard.clone();
        self.dynamo("GetItem shard state", move |env| Ok(env.tables.shard_states.get(&shard).cloned())).await
    }

    async fn load_closer_progress(&self, shard: &ShardId) -> Result<CloserProgress, StoreError> {
        let shard = shard.clone();
        self.dynamo("GetItem closer progress", move |env| {
            let state = &env.tables.closer.state;
            Ok(CloserProgress {
                closed_through: state.closed_through,
                watermark: state.watermark,
                closing_through: state.closing_through,
                excluded_since: state.excluded.get(&shard).copied(),
            })
        })
        .await
    }

    async fn read_pane(&self, shard: &ShardId, pane: PaneStart, refs: &[LogRef]) -> Result<Partials, StoreError> {
        let (shard, refs) = (shard.clone(), refs.to_vec());
        self.dynamo("BatchGetItem batch items (compaction)", move |env| read_items(env.tables, &shard, pane, &refs)).await
    }

    async fn write_log(&self, shard: &ShardId, write: &LogWrite) -> Result<(), StoreError> {
        // Plain puts, each landing on its own, in any order (BatchWriteItem applies items one by one).
        let mut puts = Vec::new();
        if let Some(item) = &write.item {
            let (key, parts, expires_at) = ((shard.clone(), item.log_ref.digest), item.parts.clone(), write.item_expires_at.0);
            if parts.iter().any(|p| p.len() > MAX_PART_BYTES) {
                return Err(StoreError::Rejected("ValidationException: a batch item part over the limit".into()));
            }
            puts.push(self.dynamo("PutItem batch item", move |env| {
                env.tables.batch_items.insert(key, ItemEntry { parts, expires_at });
                Ok(())
            }));
        }
        for marker in &write.markers {
            let (key, item) = ((marker.window, shard.clone()), MarkerItem { seq: marker.seq.clone(), expires_at: marker.expires_at.0 });
            puts.push(self.dynamo("PutItem marker", move |env| {
                env.tables.markers.insert(key, item);
                Ok(())
            }));
        }
        for seal in &write.seals {
            let (key, sealed_at) = ((seal.pane, shard.clone()), seal.sealed_at.clone());
            let entry = SealEntry { refs: seal.refs.clone(), expires_at: seal.expires_at.0 };
            puts.push(self.dynamo("PutItem seal", move |env| {
                env.tables.seals.entry(key).or_default().insert(sealed_at, entry);
                Ok(())
            }));
        }
        futures::future::try_join_all(puts).await.map(|_| ())
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let (shard, expected, state) = (commit.shard.clone(), commit.expected.cloned(), commit.state.clone());
        let label = if expected.is_none() { "TransactWriteItems first state" } else { "PutItem shard state" };
        self.dynamo(label, move |env| {
            if shard_state_bytes(&state) > MAX_ITEM_BYTES {
                return Err(StoreError::Rejected(format!("ValidationException: a shard state of {} bytes", shard_state_bytes(&state))));
            }
            let current = env.tables.shard_states.get(&shard);
            // `applied_seq = :expected AND closing_through = :stamp` (or `attribute_not_exists(applied_seq)`).
            let moved = match current {
                None => expected.is_some(),
                Some(current) => current.applied_seq != expected || current.closing_through != state.closing_through,
            };
            if moved {
                return Ok(CommitOutcome::StateMoved { current: Box::new(current.cloned().unwrap_or_default()) });
            }
            if expected.is_none() {
                // The first commit's transaction: the closer's closing_through unchanged, and the shard registered.
                let closer = &mut env.tables.closer.state;
                if closer.closing_through != state.closing_through {
                    return Ok(CommitOutcome::CloserMoved);
                }
                closer.known_shards.insert(shard.clone());
            }
            env.tables.shard_states.insert(shard, state);
            Ok(CommitOutcome::Committed { capacity_units: 1.0 })
        })
        .await
    }
}

/// One pane's partials from the batch items named, as BatchGetItem reads them.
fn read_items(tables: &super::world::Tables, shard: &ShardId, pane: PaneStart, refs: &[LogRef]) -> Result<Partials, StoreError> {
    merge_pane(refs, pane, |r| tables.batch_items.get(&(shard.clone(), r.digest)).map(|entry| entry.parts.as_slice()))
}

impl CloserStore for SimStore {
    async fn load_shard_states(&self, shards: &[ShardId]) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
        let shards = shards.to_vec();
        self.dynamo("BatchGetItem shard states", move |env| {
            Ok(shards.iter().filter_map(|s| env.tables.shard_states.get(s).map(|state| (s.clone(), state.clone()))).collect())
        })
        .await
    }

    async fn load_closer_state(&self) -> Result<CloserState, StoreError> {
        self.dynamo("GetItem closer state", |env| Ok(env.tables.closer.state.clone())).await
    }

    async fn acquire_lease(&self, owner: &str, now: WallTime, until: WallTime) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.dynamo("UpdateItem lease", move |env| {
            let free = match &env.tables.closer.lease {
                None => true,
                Some((holder, lease_until)) => *lease_until < now || *holder == owner,
            };
            if free {
                env.tables.closer.lease = Some((owner, until));
            }
            Ok(free)
        })
        .await
    }

    async fn release_lease(&self, owner: &str) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.dynamo("UpdateItem release lease", move |env| {
            if let Some((holder, until)) = &mut env.tables.closer.lease {
                if *holder == owner {
                    *until = WallTime(0);
                }
            }
            Ok(())
        })
        .await
    }

    async fn read_pane(&self, pane: PaneStart, sources: &[(ShardId, Vec<LogRef>)], sealed: bool) -> Result<Partials, StoreError> {
        let sources = if sealed {
            // One Query of the pane's partition finds every shard's seals.
            let seals = self.dynamo("Query seals", move |env| {
                Ok(env
                    .tables
                    .seals
                    .iter()
                    .filter(|((p, _), _)| *p == pane)
                    .map(|((_, shard), seals)| (shard.clone(), seals.values().flat_map(|s| s.refs.clone()).collect::<Vec<_>>()))
                    .collect::<Vec<_>>())
            });
            with_seals(sources, seals.await?)
        } else {
            sources.to_vec()
        };
        // BatchGetItem takes 100 keys (parts) a request; items are never
        // rewritten, so reading them in several requests reads the same.
        let mut requests: Vec<Vec<(ShardId, Vec<LogRef>)>> = vec![Vec::new()];
        let mut keys = 0;
        for (shard, refs) in sources {
            for log_ref in refs {
                if keys + usize::from(log_ref.parts) > BATCH_GET_KEYS {
                    requests.push(Vec::new());
                    keys = 0;
                }
                keys += usize::from(log_ref.parts);
                let request = requests.last_mut().expect("one request at least");
                match request.last_mut() {
                    Some((last, refs)) if *last == shard => refs.push(log_ref),
                    _ => request.push((shard.clone(), vec![log_ref])),
                }
            }
        }
        let mut partials = Partials::new();
        for request in requests.into_iter().filter(|r| !r.is_empty()) {
            let read = self.dynamo("BatchGetItem batch items (closer)", move |env| {
                let mut read = Partials::new();
                for (shard, refs) in &request {
                    merge_into(&mut read, read_items(env.tables, shard, pane, refs)?);
                }
                Ok(read)
            });
            merge_into(&mut partials, read.await?);
        }
        Ok(partials)
    }

    async fn list_reemit_markers(&self) -> Result<Vec<StoredMarker>, StoreError> {
        self.dynamo("Query markers", |env| {
            Ok(env
                .tables
                .markers
                .iter()
                .map(|((window, shard), item)| StoredMarker { window: *window, shard: shard.clone(), seq: item.seq.clone() })
                .collect())
        })
        .await
    }

    async fn delete_reemit_marker(&self, marker: &StoredMarker) -> Result<(), StoreError> {
        let marker = marker.clone();
        self.dynamo("DeleteItem marker", move |env| {
            let id = (marker.window, marker.shard.clone());
            if env.tables.markers.get(&id).is_some_and(|item| item.seq == marker.seq) {
                env.tables.markers.remove(&id);
            }
            Ok(())
        })
        .await
    }

    async fn announce_closing(&self, closing_through: EventTime) -> Result<std::collections::BTreeSet<ShardId>, StoreError> {
        self.dynamo("UpdateItem closing_through", move |env| {
            let state = &mut env.tables.closer.state;
            if state.closing_through.is_none_or(|c| c < closing_through) {
                state.closing_through = Some(closing_through);
            }
            Ok(state.known_shards.clone())
        })
        .await
    }

    async fn stamp_shard_states(
        &self,
        shards: &[ShardId],
        closing_through: EventTime,
    ) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
        // One conditional UpdateItem per shard (ReturnValues ALL_NEW), landing independently.
        let stamps = shards.iter().cloned().map(|shard| {
            self.dynamo("UpdateItem stamp", move |env| {
                let Some(state) = env.tables.shard_states.get_mut(&shard) else { return Ok(None) };
                state.closing_through = state.closing_through.max(Some(closing_through));
                Ok(Some((shard, state.clone())))
            })
        });
        Ok(futures::future::try_join_all(stamps).await?.into_iter().flatten().collect())
    }

    async fn save_observation(&self, observation: &PaneObservation) -> Result<(), StoreError> {
        let observation = observation.clone();
        self.dynamo("UpdateItem pane observation", move |env| {
            // The condition `observed_at < :observed`: a late write never goes backwards.
            let stored = &mut env.tables.closer.state.observation;
            if stored.observed_at.is_none_or(|at| observation.observed_at.is_some_and(|new| new > at)) {
                *stored = observation;
            }
            Ok(())
        })
        .await
    }

    async fn save_close_cursor(&self, cursor: Option<&CloseCursor>) -> Result<(), StoreError> {
        let cursor = cursor.cloned();
        self.dynamo("UpdateItem close_cursor", move |env| {
            env.tables.closer.state.close_cursor = cursor;
            Ok(())
        })
        .await
    }

    async fn advance_closed_through(&self, closed_through: EventTime, watermark: EventTime) -> Result<(), StoreError> {
        self.dynamo("UpdateItem closed_through", move |env| {
            let state = &mut env.tables.closer.state;
            if state.closed_through.is_none_or(|c| c < closed_through) {
                state.closed_through = Some(closed_through);
                state.watermark = Some(watermark);
            }
            Ok(())
        })
        .await
    }

    async fn save_excluded(&self, excluded: &BTreeMap<ShardId, EventTime>) -> Result<(), StoreError> {
        let excluded = excluded.clone();
        self.dynamo("UpdateItem excluded", move |env| {
            env.tables.closer.state.excluded = excluded;
            Ok(())
        })
        .await
    }

    async fn remember_shards(&self, shards: &[ShardId]) -> Result<(), StoreError> {
        let shards = shards.to_vec();
        self.dynamo("UpdateItem known_shards", move |env| {
            env.tables.closer.state.known_shards.extend(shards);
            Ok(())
        })
        .await
    }

    async fn save_first_seen(&self, first_seen: &BTreeMap<ShardId, WallTime>) -> Result<(), StoreError> {
        let first_seen = first_seen.clone();
        self.dynamo("UpdateItem first_seen", move |env| {
            env.tables.closer.state.first_seen = first_seen;
            Ok(())
        })
        .await
    }

    async fn put_dead_letters(&self, letters: &[DeadLetter], _now: WallTime) -> Result<(), StoreError> {
        let letters = letters.to_vec();
        self.dynamo("PutItem dead letters", move |env| {
            env.tables.dead_letters.extend(letters);
            Ok(())
        })
        .await
    }
}

/// `ListShards`: every shard of the stream, as it is at the call.
#[derive(Clone)]
pub struct SimShards {
    pub shared: Arc<Shared>,
}

impl ShardSource for SimShards {
    async fn list_shards(&self) -> Result<Vec<StreamShard>, SourceError> {
        Ok(self.shared.stream_shards.lock().unwrap().clone())
    }

    /// `GetRecords` after `applied` at this moment: caught up if no record lies beyond it.
    async fn caught_up(&self, shard: &ShardId, applied: Option<&SeqNum>) -> Result<bool, SourceError> {
        let tips = self.shared.stream_tips.lock().unwrap();
        Ok(tips.get(shard).is_none_or(|tip| applied.is_some_and(|a| tip <= a)))
    }
}

/// Search faults of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct SearchFaults {
    /// Chance in 1/1000 that one item of a `_bulk` is answered 429 or 503.
    pub item_retry_per_mille: u64,
    /// Documents whose `_id` hashes to 0 modulo this are refused with a mapping error (0: none).
    pub mapping_error_modulus: u64,
    /// The endpoint refuses every request in this span of wall time.
    pub outage: Option<(WallTime, WallTime)>,
    /// Chance in 1/1000 that a `_bulk` is held up for 30 to 120 s before it lands.
    pub slow_bulk_per_mille: u64,
    /// Time the endpoint takes per document of a `_bulk` (0: none).
    pub document_ms: i64,
}

/// The search endpoint behind the sink's trait: one `_bulk` per attempt,
/// retried for what was answered 429 / 5xx until the deadline.
#[derive(Clone)]
pub struct SimSink {
    pub shared: Arc<Shared>,
    pub actor: u64,
    pub faults: SearchFaults,
}

fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[derive(Debug)]
enum ItemAnswer {
    Indexed,
    Retry,
    Rejected(u16, String),
}

impl DocumentSink for SimSink {
    async fn index(&self, documents: &[Document], deadline: WallTime) -> Result<IndexReport, SinkError> {
        let mut report = IndexReport::default();
        let mut waiting: Vec<Document> = documents.to_vec();
        let mut attempt = 0u64;
        while !waiting.is_empty() {
            attempt += 1;
            let faults = self.faults;
            let batch = waiting.clone();
            // A `_bulk` held up in a queue: the client gives up, the server applies it later.
            let delay_ms = if self.shared.chance_roll() % 1000 < faults.slow_bulk_per_mille {
                30_000 + (self.shared.chance_roll() % 90_000) as i64
            } else {
                0
            };
            let delay_ms = delay_ms + faults.document_ms * batch.len() as i64;
            let answers = self.shared.call(self.actor, Service::Search, "_bulk", delay_ms, move |env| {
                if faults.outage.is_some_and(|(from, to)| env.now >= from && env.now < to) {
                    return Err(StoreError::Unavailable("503 from the search endpoint".into()));
                }
                let mut answers = Vec::new();
                for (i, document) in batch.iter().enumerate() {
                    let h = id_hash(&document.id);
                    if faults.mapping_error_modulus > 0 && h % faults.mapping_error_modulus == 0 {
                        answers.push(ItemAnswer::Rejected(400, "mapper_parsing_exception".into()));
                        continue;
                    }
                    let roll = (env.roll ^ h.rotate_left(i as u32 % 64)) % 1000;
                    if roll < faults.item_retry_per_mille {
                        answers.push(ItemAnswer::Retry);
                        continue;
                    }
                    let id = (document.index.clone(), document.id.clone());
                    let version = document_version(document);
                    let stored = env.index.documents.get(&id);
                    if let (Some(stored), Some(new)) = (stored, version) {
                        if stored.version.is_some_and(|old| old > new) {
                            // 409 version_conflict_engine_exception: a newer document is there.
                            answers.push(ItemAnswer::Indexed);
                            continue;
                        }
                    }
                    env.index.documents.insert(id, IndexedDocument { source: document.source.clone(), version });
                    answers.push(ItemAnswer::Indexed);
                }
                Ok(answers)
            });
            // The client's request timeout (taxi_aws::search): it stops waiting, the request may still land.
            let timeout = Sleep { shared: self.shared.clone(), until: WallTime(self.shared.now().0 + REQUEST_TIMEOUT_MS) };
            let answers = match futures::future::select(answers, timeout).await {
                futures::future::Either::Left((answers, _)) => answers,
                futures::future::Either::Right(((), _)) => Err(StoreError::Unavailable("the _bulk request timed out".into())),
            };
            let answers = match answers {
                Ok(answers) => answers,
                Err(e) => {
                    if self.shared.now().0 + 1000 >= deadline.0 {
                        return Err(SinkError::Unavailable(e.to_string()));
                    }
                    Sleep { shared: self.shared.clone(), until: WallTime(self.shared.now().0 + 200 * attempt as i64) }.await;
                    continue;
                }
            };
            let mut retry = Vec::new();
            for (document, answer) in waiting.into_iter().zip(answers) {
                match answer {
                    ItemAnswer::Indexed => report.indexed += 1,
                    ItemAnswer::Retry => retry.push(document),
                    ItemAnswer::Rejected(status, reason) => report.rejected.push(DeadLetter { document, status, reason }),
                }
            }
            report.retried += retry.len() as u64;
            waiting = retry;
            if !waiting.is_empty() {
                if self.shared.now().0 + 1000 >= deadline.0 {
                    return Err(SinkError::Unavailable(format!("{} documents still answered 429 at the deadline", waiting.len())));
                }
                Sleep { shared: self.shared.clone(), until: WallTime(self.shared.now().0 + 100 * attempt as i64) }.await;
            }
        }
        Ok(report)
    }
}

/// The external version a document is indexed with, if the closer sets one.
pub fn document_version(document: &Document) -> Option<u64> {
    Some(document.version)
}
