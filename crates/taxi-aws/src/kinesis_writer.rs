//! The producer's Kinesis side: trips in dropoff order in, PutRecords out, with
//! bounded requests in flight, retries with backoff and jitter, and per-shard
//! watermark events that never overtake a trip Kinesis has not acknowledged.
//!
//! Kinesis is reached through [`RecordStream`], so tests can wrap the real
//! stream in one that fails entries.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use taxi_core::event::watermark_event_json;
use taxi_core::replay::schedule::FinalWatermark;
use taxi_core::replay::tracker::WatermarkTracker;
use taxi_core::retry::backoff;
use taxi_core::shard::StreamShard;
use taxi_core::time::{EventTime, WallTime};
use tokio::time::Instant;

use crate::kinesis::{list_shards, KinesisError};

/// PutRecords takes at most 500 records and 5 MiB (data plus partition keys).
pub const MAX_RECORDS_PER_PUT: usize = 500;
pub const MAX_BYTES_PER_PUT: usize = 5 * 1024 * 1024;
/// The per-entry error code of a shard over its write limit.
pub const THROTTLED: &str = "ProvisionedThroughputExceededException";
const WATERMARK_PARTITION_KEY: &str = "watermark";

/// One PutRecords entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutEntry {
    pub partition_key: String,
    /// Routes the record to the shard owning this hash key (watermarks).
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

impl PutEntry {
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Why Kinesis refused one entry of a PutRecords request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryFailure {
    pub code: String,
    pub message: String,
}

/// A trip ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRecord {
    pub dropoff: EventTime,
    pub entry: PutEntry,
}

/// The two Kinesis calls the producer makes.
pub trait RecordStream: Send + Sync + 'static {
    /// The shards that take records now.
    fn open_shards(&self) -> impl Future<Output = Result<Vec<StreamShard>, KinesisError>> + Send;
    /// One PutRecords request: an outcome per entry, in order.
    fn put_records(&self, entries: &[PutEntry]) -> impl Future<Output = Result<Vec<Result<(), EntryFailure>>, KinesisError>> + Send;
}

/// A real Kinesis stream.
#[derive(Clone, Debug)]
pub struct KinesisStream {
    client: Client,
    stream: String,
}

impl KinesisStream {
    pub fn new(client: Client, stream: impl Into<String>) -> KinesisStream {
        KinesisStream { client, stream: stream.into() }
    }
}

impl RecordStream for KinesisStream {
    async fn open_shards(&self) -> Result<Vec<StreamShard>, KinesisError> {
        Ok(list_shards(&self.client, &self.stream).await?.into_iter().filter(|s| !s.closed).collect())
    }

    async fn put_records(&self, entries: &[PutEntry]) -> Result<Vec<Result<(), EntryFailure>>, KinesisError> {
        let records = entries
            .iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(e.data.clone()))
                    .partition_key(&e.partition_key)
                    .set_explicit_hash_key(e.explicit_hash_key.clone())
                    .build()
                    .map_err(|error| KinesisError::Rejected { operation: "PutRecords", message: error.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk("PutRecords", &self.stream, e))?;
        if output.records().len() != entries.len() {
            return Err(KinesisError::Unavailable {
                operation: "PutRecords",
                message: format!("{} results for {} entries", output.records().len(), entries.len()),
            });
        }
        Ok(output
            .records()
            .iter()
            .map(|r| match r.error_code() {
                None => Ok(()),
                Some(code) => Err(EntryFailure { code: code.to_owned(), message: r.error_message().unwrap_or_default().to_owned() }),
            })
            .collect())
    }
}

/// How the writer behaves.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// PutRecords requests of trips in flight at once.
    pub max_in_flight: usize,
    pub watermark_interval: Duration,
    /// A watermark event to every shard each interval; off, only the final one
    /// (trips not sent in dropoff order, so no promise holds mid-stream).
    pub periodic_watermarks: bool,
    pub shard_refresh: Duration,
    /// Attempts per entry before the replay fails.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub final_watermark: FinalWatermark,
}

impl Default for WriterConfig {
    fn default() -> WriterConfig {
        WriterConfig {
            max_in_flight: 8,
            watermark_interval: Duration::from_secs(1),
            periodic_watermarks: true,
            shard_refresh: Duration::from_secs(5),
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            final_watermark: FinalWatermark { advance_s: 86_400, max_ahead_of_wall_s: None },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Kinesis(#[from] KinesisError),
    #[error("{count} record(s) still failed after {attempts} attempts, last with {code}: {message} (retry may help once the stream has capacity)")]
    GaveUp { count: usize, attempts: u32, code: String, message: String },
    #[error("the stream has no open shard to write to")]
    NoOpenShard,
}

/// Live counters, read by the progress display while the writer runs.
#[derive(Debug)]
pub struct WriterStats {
    pub received: AtomicU64,
    pub acknowledged: AtomicU64,
    /// Entries sent again after a failure.
    pub retried: AtomicU64,
    pub throttled: AtomicU64,
    pub watermark_events: AtomicU64,
    pub requests_in_flight: AtomicU64,
    /// The latest watermark sent (seconds), `i64::MIN` before the first.
    pub watermark: AtomicI64,
}

impl Default for WriterStats {
    fn default() -> WriterStats {
        WriterStats {
            received: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            watermark_events: AtomicU64::new(0),
            requests_in_flight: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
        }
    }
}

impl WriterStats {
    pub fn watermark(&self) -> Option<EventTime> {
        Some(self.watermark.load(Ordering::Relaxed)).filter(|w| *w != i64::MIN).map(EventTime)
    }
}

/// What the writer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterReport {
    pub acknowledged: u64,
    pub retried: u64,
    pub throttled: u64,
    pub watermark_events: u64,
    /// `None` when there was no trip to write.
    pub final_watermark: Option<EventTime>,
}

/// Writes trips (in dropoff order) and watermarks to a stream:
/// [`KinesisWriter::write`] the input, then [`KinesisWriter::finish`] with the
/// final watermark once the whole input is known to be written.
pub struct KinesisWriter<S> {
    stream: Arc<S>,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    tracker: WatermarkTracker,
    shards: Vec<StreamShard>,
    shards_listed: Instant,
    queue: VecDeque<Waiting>,
    retries: Vec<Retry>,
    in_flight: FuturesUnordered<BoxFuture<'static, Completed>>,
    trip_requests: usize,
    watermark_in_flight: bool,
    paused_until: Option<Instant>,
    throttled_in_a_row: u32,
}

/// An entry waiting to be (re)sent: trips carry their dropoff, watermarks none.
struct Waiting {
    entry: PutEntry,
    dropoff: Option<EventTime>,
    attempts: u32,
}

struct Retry {
    ready: Instant,
    waiting: Waiting,
}

struct Completed {
    batch: Vec<Waiting>,
    result: Result<Vec<Result<(), EntryFailure>>, KinesisError>,
}

impl<S: RecordStream> KinesisWriter<S> {
    /// Lists the open shards: a missing stream or refused credentials fail here.
    pub async fn connect(stream: Arc<S>, config: WriterConfig, stats: Arc<WriterStats>) -> Result<KinesisWriter<S>, WriterError> {
        let shards = stream.open_shards().await?;
        if shards.is_empty() {
            return Err(WriterError::NoOpenShard);
        }
        Ok(KinesisWriter {
            stream,
            config,
            stats,
            tracker: WatermarkTracker::new(),
            shards,
            shards_listed: Instant::now(),
            queue: VecDeque::new(),
            retries: Vec::new(),
            in_flight: FuturesUnordered::new(),
            trip_requests: 0,
            watermark_in_flight: false,
            paused_until: None,
            throttled_in_a_row: 0,
        })
    }

    /// Writes every record until the input ends and all are acknowledged,
    /// with a watermark to every open shard each interval.
    pub async fn write(&mut self, mut records: impl Stream<Item = Vec<OutRecord>> + Unpin) -> Result<(), WriterError> {
        // Enough queued to fill every request in flight twice; the input waits beyond that.
        let queue_limit = 2 * MAX_RECORDS_PER_PUT * self.config.max_in_flight.max(1);
        let mut ticker = tokio::time::interval(self.config.watermark_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut input_done = false;
        loop {
            self.dispatch_trips();
            if input_done && self.queue.is_empty() && self.retries.is_empty() && self.in_flight.is_empty() {
                return Ok(());
            }
            let wake = self.next_wake();
            tokio::select! {
                chunk = records.next(), if !input_done && self.queue.len() < queue_limit => match chunk {
                    Some(chunk) => self.accept(chunk),
                    None => input_done = true,
                },
                Some(completed) = self.in_flight.next(), if !self.in_flight.is_empty() => self.complete(completed)?,
                _ = ticker.tick() => self.tick().await?,
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
    }

    fn accept(&mut self, chunk: Vec<OutRecord>) {
        self.stats.received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        for record in chunk {
            self.tracker.release(record.dropoff);
            self.queue.push_back(Waiting { entry: record.entry, dropoff: Some(record.dropoff), attempts: 0 });
        }
    }

    /// The earliest moment something waiting becomes sendable.
    fn next_wake(&self) -> Option<Instant> {
        let retry = self.retries.iter().map(|r| r.ready).min();
        match self.paused_until {
            Some(pause) => Some(pause.max(retry.unwrap_or(pause))),
            None => retry,
        }
    }

    fn dispatch_trips(&mut self) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|p| p > now) {
            return;
        }
        self.paused_until = None;
        while self.trip_requests < self.config.max_in_flight.max(1) {
            let batch = self.next_batch(now);
            if batch.is_empty() {
                return;
            }
            self.trip_requests += 1;
            self.send(batch);
        }
    }

    /// Retries that are due first, then new trips, within the PutRecords limits.
    fn next_batch(&mut self, now: Instant) -> Vec<Waiting> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let fits = |batch: &Vec<Waiting>, bytes: usize, next: &Waiting| {
            batch.len() < MAX_RECORDS_PER_PUT && bytes + next.entry.size() <= MAX_BYTES_PER_PUT
        };
        let mut i = 0;
        while i < self.retries.len() {
            if self.retries[i].ready <= now && fits(&batch, bytes, &self.retries[i].waiting) {
                let retry = self.retries.swap_remove(i);
                bytes += retry.waiting.entry.size();
                batch.push(retry.waiting);
            } else {
                i += 1;
            }
        }
        while let Some(next) = self.queue.front() {
            if !fits(&batch, bytes, next) {
                break;
            }
            bytes += next.entry.size();
            batch.extend(self.queue.pop_front());
        }
        batch
    }

    fn send(&mut self, mut batch: Vec<Waiting>) {
        for waiting in &mut batch {
            waiting.attempts += 1;
        }
        let stream = Arc::clone(&self.stream);
        self.stats.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight.push(Box::pin(async move {
            let entries: Vec<PutEntry> = batch.iter().map(|w| w.entry.clone()).collect();
            let result = stream.put_records(&entries).await;
            Completed { batch, result }
        }));
    }

    fn complete(&mut self, Completed { batch, result }: Completed) -> Result<(), WriterError> {
        self.stats.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
        let is_watermark = batch.first().is_some_and(|w| w.dropoff.is_none());
        if is_watermark {
            self.watermark_in_flight = false;
        } else {
            self.trip_requests -= 1;
        }
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, entries = batch.len(), "PutRecords failed; retrying");
                self.pause();
                let failure = EntryFailure { code: "request".into(), message: error.to_string() };
                vec![Err(failure); batch.len()]
            }
            Err(error) => return Err(error.into()),
        };
        let mut throttled = false;
        let mut written_watermarks = 0;
        for (waiting, outcome) in batch.into_iter().zip(outcomes) {
            match (outcome, waiting.dropoff) {
                (Ok(()), Some(dropoff)) => {
                    self.tracker.acknowledge(dropoff);
                    self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                (Ok(()), None) => written_watermarks += 1,
                // A failed watermark is not retried: the next tick sends a newer one.
                (Err(_), None) => {}
                (Err(failure), Some(_)) => {
                    throttled |= failure.code == THROTTLED;
                    self.retry(waiting, failure)?;
                }
            }
        }
        self.stats.watermark_events.fetch_add(written_watermarks, Ordering::Relaxed);
        if throttled {
            self.pause();
        } else {
            self.throttled_in_a_row = 0;
        }
        Ok(())
    }

    fn retry(&mut self, waiting: Waiting, failure: EntryFailure) -> Result<(), WriterError> {
        if waiting.attempts >= self.config.max_attempts {
            return Err(WriterError::GaveUp { count: 1, attempts: waiting.attempts, code: failure.code, message: failure.message });
        }
        if failure.code == THROTTLED {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(code = failure.code, message = failure.message, attempts = waiting.attempts, "entry failed; retrying");
        let wait = backoff(waiting.attempts, self.config.backoff_base, self.config.backoff_cap, fastrand::f64());
        self.retries.push(Retry { ready: Instant::now() + wait, waiting });
        Ok(())
    }

    /// Throttling (or a failed request) holds every new request back for a
    /// backoff that grows while it lasts.
    fn pause(&mut self) {
        self.throttled_in_a_row += 1;
        let wait = backoff(self.throttled_in_a_row, self.config.backoff_base, self.config.backoff_cap, fastrand::f64());
        self.paused_until = Some(Instant::now() + wait);
    }

    async fn tick(&mut self) -> Result<(), WriterError> {
        if self.shards_listed.elapsed() >= self.config.shard_refresh {
            self.refresh_shards().await?;
        }
        let Some(watermark) = self.tracker.watermark().filter(|_| self.config.periodic_watermarks) else { return Ok(()) };
        if self.watermark_in_flight {
            return Ok(());
        }
        self.watermark_in_flight = true;
        self.stats.watermark.fetch_max(watermark.0, Ordering::Relaxed);
        let batch = self.watermark_entries(watermark);
        self.send(batch);
        Ok(())
    }

    async fn refresh_shards(&mut self) -> Result<(), WriterError> {
        match self.stream.open_shards().await {
            Ok(shards) => self.shards = shards,
            Err(error) if error.is_retryable() => tracing::warn!(%error, "ListShards failed; keeping the shards known"),
            Err(error) => return Err(error.into()),
        }
        self.shards_listed = Instant::now();
        Ok(())
    }

    fn watermark_entries(&self, watermark: EventTime) -> Vec<Waiting> {
        let data = watermark_event_json(watermark);
        self.shards
            .iter()
            .map(|shard| Waiting {
                entry: PutEntry {
                    partition_key: WATERMARK_PARTITION_KEY.into(),
                    explicit_hash_key: Some(shard.starting_hash_key.clone()),
                    data: data.clone(),
                },
                dropoff: None,
                attempts: 0,
            })
            .collect()
    }

    /// After the whole input is written: one watermark per open shard that
    /// closes every window (none if there was no trip), retried until each
    /// shard has it.
    pub async fn finish(mut self) -> Result<WriterReport, WriterError> {
        let final_watermark = match self.tracker.released_through() {
            Some(last) => Some(self.send_final_watermark(last).await?),
            None => None,
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Ok(WriterReport {
            acknowledged: load(&self.stats.acknowledged),
            retried: load(&self.stats.retried),
            throttled: load(&self.stats.throttled),
            watermark_events: load(&self.stats.watermark_events),
            final_watermark,
        })
    }

    async fn send_final_watermark(&mut self, last_dropoff: EventTime) -> Result<EventTime, WriterError> {
        debug_assert_eq!(self.tracker.outstanding(), 0, "write() returns only when every trip is acknowledged");
        self.refresh_shards().await?;
        if self.shards.is_empty() {
            return Err(WriterError::NoOpenShard);
        }
        let watermark = self.config.final_watermark.value(last_dropoff, WallTime::now());
        let mut waiting = self.watermark_entries(watermark);
        let mut attempt = 0;
        while !waiting.is_empty() {
            attempt += 1;
            let entries: Vec<PutEntry> = waiting.iter().map(|w| w.entry.clone()).collect();
            let outcomes = match self.stream.put_records(&entries).await {
                Ok(outcomes) => outcomes,
                Err(error) if error.is_retryable() => {
                    vec![Err(EntryFailure { code: "request".into(), message: error.to_string() }); entries.len()]
                }
                Err(error) => return Err(error.into()),
            };
            let mut last_failure = None;
            let mut still = Vec::new();
            for (w, outcome) in waiting.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => {
                        self.stats.watermark_events.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(failure) => {
                        last_failure = Some(failure);
                        still.push(w);
                    }
                }
            }
            waiting = still;
            if let Some(failure) = last_failure {
                if attempt >= self.config.max_attempts {
                    return Err(WriterError::GaveUp {
                        count: waiting.len(),
                        attempts: attempt,
                        code: failure.code,
                        message: failure.message,
                    });
                }
                tokio::time::sleep(backoff(attempt, self.config.backoff_base, self.config.backoff_cap, fastrand::f64())).await;
            }
        }
        self.stats.watermark.fetch_max(watermark.0, Ordering::Relaxed);
        tracing::info!(watermark = %watermark.to_rfc3339(), shards = self.shards.len(), "final watermark written");
        Ok(watermark)
    }
}
