//! The event source mapping emulator: what Lambda does between a Kinesis
//! stream and the aggregate function, since no stand-in does it. Per shard,
//! from TRIM_HORIZON, one batch in flight at a time, in the exact Lambda
//! `KinesisEvent` shape; a shard's children start only once it has been read
//! to its end and every record of it is done (as Lambda orders a reshard).
//! Batching and retries follow [`taxi_core::delivery`].
//!
//! Faults can be injected for tests: a function error after every Nth
//! invocation (the handler has run, its answer is thrown away, as when a
//! function times out after its writes) and a second delivery of every batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::encodings::SecondTimestamp;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord, KinesisRecord};
use aws_lambda_events::event::streams::KinesisEventResponse;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use aws_sdk_kinesis::Client;
use taxi_aws::kinesis::{list_shards, KinesisError};
use taxi_core::retry::backoff;
use taxi_core::shard::{ShardId, StreamShard};
use tokio::task::JoinSet;

use super::functions::{AggregateInvoker, InvokeError};
use taxi_core::delivery::{DeliverySettings, Outcome, ShardDelivery, Step};

/// Records asked for per GetRecords call (the API's maximum).
const GET_RECORDS_LIMIT: i32 = 10_000;

/// The mapping's settings (the names of Lambda's own in brackets).
#[derive(Clone, Copy, Debug)]
pub struct MappingSettings {
    pub delivery: DeliverySettings,
    /// `MaximumBatchingWindowInSeconds`: how long records may wait for a fuller batch.
    pub batching_window: Duration,
    /// The pause after a GetRecords call that found nothing new.
    pub poll_interval: Duration,
    /// How often the shard list is read to find new shards.
    pub shard_discovery_interval: Duration,
}

/// Faults the emulator injects.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// After every Nth invocation the answer is replaced by a function error.
    pub error_every: Option<u64>,
    /// Every batch is delivered twice; the second answer counts.
    pub duplicate_deliveries: bool,
}

/// Live counters of the mapping.
#[derive(Debug, Default)]
pub struct MappingStats {
    pub invocations: AtomicU64,
    pub records_read: AtomicU64,
    pub function_errors: AtomicU64,
    pub injected_errors: AtomicU64,
    pub item_failures: AtomicU64,
    pub discarded_records: AtomicU64,
    pub shards_finished: AtomicU64,
}

/// Where the mapping reads and what it calls.
pub struct EventSourceMapping {
    pub kinesis: Client,
    pub stream: String,
    /// For the records' `eventSourceARN` and `awsRegion`, as Lambda fills them.
    pub stream_arn: String,
    pub region: String,
    pub function: AggregateInvoker,
    pub settings: MappingSettings,
    pub faults: Faults,
    pub stats: MappingStats,
}

impl EventSourceMapping {
    /// Runs until the task is dropped or aborted: finds shards, and polls
    /// each one whose parents are done.
    pub async fn run(self: Arc<Self>) {
        let mut pollers = JoinSet::new();
        let mut started = BTreeSet::new();
        let mut finished = BTreeSet::new();
        let mut discovery = tokio::time::interval(self.settings.shard_discovery_interval);
        loop {
            tokio::select! {
                _ = discovery.tick() => {
                    let shards = match list_shards(&self.kinesis, &self.stream).await {
                        Ok(shards) => shards,
                        Err(error) => {
                            tracing::warn!(%error, "listing the shards failed; trying again");
                            continue;
                        }
                    };
                    for shard in ready_to_start(&shards, &started, &finished) {
                        started.insert(shard.clone());
                        pollers.spawn(Arc::clone(&self).poll_shard(shard));
                    }
                }
                Some(done) = pollers.join_next() => match done {
                    Ok(shard) => {
                        self.stats.shards_finished.fetch_add(1, Ordering::Relaxed);
                        finished.insert(shard);
                    }
                    Err(error) => tracing::error!(%error, "a shard poller stopped"),
                },
            }
        }
    }

    /// Reads one shard to its end (a closed shard) or forever (an open one),
    /// handing its records to the function. Returns the shard once done.
    async fn poll_shard(self: Arc<Self>, shard: ShardId) -> ShardId {
        let mut delivery = ShardDelivery::new(self.settings.delivery);
        let mut iterator = self.shard_iterator(&shard, None).await;
        let mut last_seq: Option<String> = None;
        let mut waiting_since: Option<Instant> = None;
        loop {
            let mut caught_up = iterator.is_none();
            if let Some(current) = iterator.clone().filter(|_| !delivery.has_full_batch()) {
                match self.kinesis.get_records().shard_iterator(&current).limit(GET_RECORDS_LIMIT).send().await {
                    Ok(page) => {
                        let records = page.records();
                        self.stats.records_read.fetch_add(records.len() as u64, Ordering::Relaxed);
                        if let Some(last) = records.last() {
                            last_seq = Some(last.sequence_number().to_owned());
                            waiting_since.get_or_insert_with(Instant::now);
                        }
                        caught_up = records.is_empty() || page.millis_behind_latest() == Some(0);
                        delivery.push(records.iter().map(|r| self.event_record(&shard, r)));
                        iterator = page.next_shard_iterator().map(str::to_owned);
                    }
                    Err(error) => {
                        let error = KinesisError::from_sdk("GetRecords", &self.stream, error);
                        tracing::warn!(%shard, %error, "GetRecords failed; reading on from the last record seen");
                        tokio::time::sleep(self.settings.poll_interval).await;
                        iterator = self.shard_iterator(&shard, last_seq.as_deref()).await;
                        continue;
                    }
                }
            }
            let window_passed = waiting_since.is_some_and(|since| since.elapsed() >= self.settings.batching_window);
            if delivery.pending() > 0 && (delivery.has_full_batch() || iterator.is_none() || window_passed) {
                self.deliver_one_batch(&shard, &mut delivery).await;
                waiting_since = (delivery.pending() > 0).then(Instant::now);
            } else if iterator.is_none() {
                return shard;
            } else if caught_up {
                tokio::time::sleep(self.settings.poll_interval).await;
            }
        }
    }

    /// A shard iterator at TRIM_HORIZON, or after `after` (retried until Kinesis answers).
    async fn shard_iterator(&self, shard: &ShardId, after: Option<&str>) -> Option<String> {
        for attempt in 0.. {
            let request = self.kinesis.get_shard_iterator().stream_name(&self.stream).shard_id(shard.as_str());
            let request = match after {
                Some(seq) => request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq),
                None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            match request.send().await {
                Ok(answer) => return answer.shard_iterator().map(str::to_owned),
                Err(error) => {
                    let error = KinesisError::from_sdk("GetShardIterator", &self.stream, error);
                    tracing::warn!(%shard, %error, "GetShardIterator failed; trying again");
                    let pause = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5), fastrand::f64());
                    tokio::time::sleep(pause).await;
                }
            }
        }
        unreachable!("the loop only ends by returning")
    }

    /// Invokes the function with the next batch and applies the outcome.
    async fn deliver_one_batch(&self, shard: &ShardId, delivery: &mut ShardDelivery<KinesisEventRecord>) {
        let records = delivery.next_batch();
        let mut event = KinesisEvent::default();
        event.records = records;
        let outcome = match self.invoke_with_faults(&event).await {
            Ok(response) => outcome_of(&event, &response),
            Err(error) => {
                self.stats.function_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%shard, %error, records = event.records.len(), "the function failed; the batch will be retried");
                Outcome::FunctionError
            }
        };
        if let Outcome::RetryFrom(_) = outcome {
            self.stats.item_failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Step::Discarded { records, .. } = delivery.complete(event.records.len(), outcome) {
            self.stats.discarded_records.fetch_add(records.len() as u64, Ordering::Relaxed);
            let first = records.first().map(|r| r.kinesis.sequence_number.clone());
            let last = records.last().map(|r| r.kinesis.sequence_number.clone());
            tracing::error!(%shard, count = records.len(), ?first, ?last, "retries exhausted: records sent to the on-failure destination");
        }
    }

    async fn invoke_with_faults(&self, event: &KinesisEvent) -> Result<KinesisEventResponse, InvokeError> {
        if self.faults.duplicate_deliveries {
            self.stats.invocations.fetch_add(1, Ordering::Relaxed);
            self.function.invoke(event).await?;
        }
        let invocation = self.stats.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let response = self.function.invoke(event).await?;
        if self.faults.error_every.is_some_and(|n| invocation % n == 0) {
            self.stats.injected_errors.fetch_add(1, Ordering::Relaxed);
            return Err(InvokeError::Function(format!("injected after invocation {invocation} had run")));
        }
        Ok(response)
    }

    fn event_record(&self, shard: &ShardId, record: &Record) -> KinesisEventRecord {
        let arrival = record.approximate_arrival_timestamp();
        let arrival = arrival.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())).unwrap_or_default();
        let mut kinesis = KinesisRecord::default();
        kinesis.approximate_arrival_timestamp = SecondTimestamp(arrival);
        *kinesis.data = record.data().as_ref().to_vec();
        kinesis.partition_key = record.partition_key().unwrap_or_default().to_owned();
        kinesis.sequence_number = record.sequence_number().to_owned();
        kinesis.kinesis_schema_version = Some("1.0".into());
        let mut event_record = KinesisEventRecord::default();
        event_record.aws_region = Some(self.region.clone());
        event_record.event_id = Some(format!("{shard}:{}", kinesis.sequence_number));
        event_record.event_name = Some("aws:kinesis:record".into());
        event_record.event_source = Some("aws:kinesis".into());
        event_record.event_source_arn = Some(self.stream_arn.clone());
        event_record.event_version = Some("1.0".into());
        event_record.invoke_identity_arn = Some("arn:aws:iam::000000000000:role/taxi-local-aggregate".into());
        event_record.kinesis = kinesis;
        event_record
    }
}

/// The shards that may start now: not started yet, and every parent still
/// listed has been finished (a parent no longer listed has expired).
fn ready_to_start(shards: &[StreamShard], started: &BTreeSet<ShardId>, finished: &BTreeSet<ShardId>) -> Vec<ShardId> {
    let listed: BTreeMap<&ShardId, &StreamShard> = shards.iter().map(|s| (&s.id, s)).collect();
    shards
        .iter()
        .filter(|shard| !started.contains(&shard.id))
        .filter(|shard| {
            [&shard.parent, &shard.adjacent_parent]
                .into_iter()
                .flatten()
                .all(|parent| finished.contains(parent) || !listed.contains_key(parent))
        })
        .map(|shard| shard.id.clone())
        .collect()
}

/// A response's batch item failure as a position in the batch.
fn outcome_of(event: &KinesisEvent, response: &KinesisEventResponse) -> Outcome {
    let Some(failure) = response.batch_item_failures.first() else {
        return Outcome::Success;
    };
    let position = failure.item_identifier.as_deref().and_then(|id| event.records.iter().position(|r| r.kinesis.sequence_number == id));
    // Lambda takes an identifier it cannot find as a failure of the whole batch.
    position.map_or(Outcome::FunctionError, Outcome::RetryFrom)
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::streams::KinesisBatchItemFailure;

    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> StreamShard {
        StreamShard {
            id: ShardId(id.into()),
            parent: parent.map(|p| ShardId(p.into())),
            adjacent_parent: adjacent.map(|p| ShardId(p.into())),
            starting_hash_key: String::new(),
            closed: false,
        }
    }

    fn ids(names: &[&str]) -> BTreeSet<ShardId> {
        names.iter().map(|n| ShardId((*n).into())).collect()
    }

    #[test]
    fn children_wait_for_their_parents() {
        let shards = [shard("a", None, None), shard("b", None, None), shard("c", Some("a"), None), shard("d", Some("a"), Some("b"))];
        let start = |started: &[&str], finished: &[&str]| {
            ready_to_start(&shards, &ids(started), &ids(finished)).into_iter().map(|s| s.0).collect::<Vec<_>>()
        };
        assert_eq!(start(&[], &[]), vec!["a", "b"]);
        assert_eq!(start(&["a", "b"], &["a"]), vec!["c"]);
        assert_eq!(start(&["a", "b", "c"], &["a", "b"]), vec!["d"]);
        // A parent past the retention period is no longer listed.
        assert_eq!(ready_to_start(&shards[2..], &BTreeSet::new(), &BTreeSet::new()).len(), 2);
    }

    #[test]
    fn item_failures_become_positions() {
        let mut event = KinesisEvent::default();
        for seq in ["10", "20", "30"] {
            let mut record = KinesisEventRecord::default();
            record.kinesis.sequence_number = seq.into();
            event.records.push(record);
        }
        let answer = |id: Option<&str>| {
            let mut response = KinesisEventResponse::default();
            if let Some(id) = id {
                let mut failure = KinesisBatchItemFailure::default();
                failure.item_identifier = Some(id.into());
                response.batch_item_failures.push(failure);
            }
            response
        };
        assert_eq!(outcome_of(&event, &answer(None)), Outcome::Success);
        assert_eq!(outcome_of(&event, &answer(Some("20"))), Outcome::RetryFrom(1));
        assert_eq!(outcome_of(&event, &answer(Some("99"))), Outcome::FunctionError);
    }
}
