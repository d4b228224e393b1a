//! `taxi-pipeline replay` against kinesalite: the real sample into a
//! 4-shard stream, read back shard by shard, with and without PutRecords
//! entries failing at the client boundary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use taxi_aws::kinesis::{wait_until_active, KinesisError};
use taxi_aws::kinesis_writer::{EntryFailure, KinesisStream, PutEntry, RecordStream, WriterConfig, THROTTLED};
use taxi_core::event::MAX_TRIP_DURATION_S;
use taxi_core::replay::schedule::TimeMode;
use taxi_core::replay::trip::SkipReason;
use taxi_core::shard::StreamShard;
use taxi_core::time::EventTime;
use taxi_integration_tests::kinesis::trip_events;
use taxi_integration_tests::kinesis_read::read_all_shards;
use taxi_integration_tests::sample_path;
use taxi_integration_tests::standins::{kinesis_client, unique_name};
use taxi_pipeline::args::{InputFormat, SendOrder};
use taxi_pipeline::progress::Progress;
use taxi_pipeline::replay::{replay, FeedOptions, Summary};

async fn create_stream(client: &aws_sdk_kinesis::Client, shards: i32) -> String {
    let stream = unique_name("producer");
    client.create_stream().stream_name(&stream).shard_count(shards).send().await.expect("create stream");
    wait_until_active(client, &stream, Duration::from_secs(10)).await.expect("the stream becomes active");
    stream
}

fn sample_replay() -> FeedOptions {
    FeedOptions {
        input: sample_path(),
        format: InputFormat::Auto,
        speedup: 0.0,
        time_mode: TimeMode::Original,
        repeat: 1,
        horizon_s: 4 * 3600,
        order: SendOrder::Dropoff,
    }
}

fn writer_config() -> WriterConfig {
    // Frequent watermarks, so many land between the trips of each shard.
    WriterConfig { watermark_interval: Duration::from_millis(200), backoff_base: Duration::from_millis(5), ..WriterConfig::default() }
}

/// The trips of the sample that must arrive (id -> dropoff): every row whose
/// duration is within 0 to 4 h.
fn expected_trips() -> BTreeMap<u64, EventTime> {
    trip_events(&sample_path())
        .into_iter()
        .filter_map(|t| {
            let pickup = EventTime::parse_rfc3339(&t.pickup_datetime)?;
            let dropoff = EventTime::parse_rfc3339(&t.dropoff_datetime)?;
            let duration = dropoff.0 - pickup.0;
            (duration > 0 && duration <= MAX_TRIP_DURATION_S).then_some((t.trip_id, dropoff))
        })
        .collect()
}

/// Reads the stream back and checks: each expected trip exactly once; on every
/// shard no trip after a watermark later than its dropoff; every shard ends
/// with the final watermark.
async fn check_stream(client: &aws_sdk_kinesis::Client, stream: &str, summary: &Summary) {
    let expected = expected_trips();
    assert_eq!(summary.writer.acknowledged, expected.len() as u64);
    assert_eq!(summary.skipped.get(SkipReason::BadDuration), summary.rows - expected.len() as u64);
    assert_eq!(summary.skipped.total(), summary.skipped.get(SkipReason::BadDuration), "the sample has no other bad rows");
    let final_watermark = summary.writer.final_watermark.expect("a final watermark");

    let shards = read_all_shards(client, stream).await;
    assert_eq!(shards.len(), 4);
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut watermarks_between_trips = 0;
    for shard in &shards {
        let mut watermark: Option<EventTime> = None;
        let mut trips_after_last_watermark = 0;
        for data in &shard.records {
            let event: serde_json::Value = serde_json::from_slice(data).expect("JSON records");
            let time = |field: &str| EventTime::parse_rfc3339(event[field].as_str().expect("a time")).expect("RFC 3339");
            match event["type"].as_str() {
                Some("trip") => {
                    let id = event["trip_id"].as_u64().expect("a trip id");
                    let dropoff = time("dropoff_datetime");
                    assert_eq!(expected.get(&id), Some(&dropoff), "trip {id} on {}", shard.shard_id);
                    assert!(
                        watermark.is_none_or(|w| w <= dropoff),
                        "on {} trip {id} (dropoff {dropoff:?}) follows watermark {watermark:?}",
                        shard.shard_id
                    );
                    *seen.entry(id).or_default() += 1;
                    trips_after_last_watermark += 1;
                }
                Some("watermark") => {
                    let w = time("watermark");
                    if trips_after_last_watermark > 0 && w < final_watermark {
                        watermarks_between_trips += 1;
                    }
                    trips_after_last_watermark = 0;
                    watermark = Some(watermark.map_or(w, |m| m.max(w)));
                }
                other => panic!("unexpected record type {other:?}"),
            }
        }
        assert_eq!(watermark, Some(final_watermark), "{} ends with the final watermark", shard.shard_id);
        assert_eq!(trips_after_last_watermark, 0, "no trip after the final watermark on {}", shard.shard_id);
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(duplicated.is_empty(), "trips not exactly once: {duplicated:?}");
    assert_eq!(seen.len(), expected.len(), "every expected trip arrived");
    assert!(watermarks_between_trips > 0, "watermarks interleave with trips, so the order check means something");
}

#[tokio::test]
async fn replays_the_sample_with_watermarks_that_never_overtake_a_trip() {
    let client = kinesis_client();
    let stream = create_stream(&client, 4).await;
    let target = Arc::new(KinesisStream::new(client.clone(), &stream));
    let summary = replay(sample_replay(), target, writer_config(), Progress::hidden()).await.expect("replay");
    check_stream(&client, &stream, &summary).await;
}

/// Fails a share of the entries of every PutRecords request before they reach
/// Kinesis, alternating throttling and internal failures.
struct FailingStream<S> {
    inner: S,
    failures_per_thousand: u64,
    entries: AtomicU64,
}

impl<S: RecordStream> RecordStream for FailingStream<S> {
    async fn open_shards(&self) -> Result<Vec<StreamShard>, KinesisError> {
        self.inner.open_shards().await
    }

    async fn put_records(&self, entries: &[PutEntry]) -> Result<Vec<Result<(), EntryFailure>>, KinesisError> {
        let fails: Vec<Option<EntryFailure>> = entries
            .iter()
            .map(|_| {
                let n = self.entries.fetch_add(1, Ordering::Relaxed);
                (splitmix(n) % 1000 < self.failures_per_thousand).then(|| EntryFailure {
                    code: if n % 2 == 0 { THROTTLED.into() } else { "InternalFailure".into() },
                    message: "injected".into(),
                })
            })
            .collect();
        let passed: Vec<PutEntry> = entries.iter().zip(&fails).filter(|(_, f)| f.is_none()).map(|(e, _)| e.clone()).collect();
        let mut outcomes = if passed.is_empty() { Vec::new() } else { self.inner.put_records(&passed).await? }.into_iter();
        Ok(fails.into_iter().map(|f| f.map_or_else(|| outcomes.next().expect("an outcome per entry passed"), Err)).collect())
    }
}

fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[tokio::test]
async fn the_same_holds_when_a_fifth_of_the_entries_fail() {
    let client = kinesis_client();
    let stream = create_stream(&client, 4).await;
    let target = Arc::new(FailingStream {
        inner: KinesisStream::new(client.clone(), &stream),
        failures_per_thousand: 200,
        entries: AtomicU64::new(0),
    });
    let summary = replay(sample_replay(), target, writer_config(), Progress::hidden()).await.expect("replay");
    assert!(summary.writer.retried > 5_000, "about a fifth of 32,615 trips retried: {}", summary.writer.retried);
    assert!(summary.writer.throttled > 0);
    check_stream(&client, &stream, &summary).await;
}

#[tokio::test]
async fn a_missing_stream_stops_with_a_clear_error() {
    let target = Arc::new(KinesisStream::new(kinesis_client(), "no-such-stream"));
    let error = replay(sample_replay(), target, writer_config(), Progress::hidden()).await.unwrap_err();
    assert!(error.to_string().contains("no-such-stream does not exist"), "{error}");
}
