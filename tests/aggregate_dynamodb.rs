//! The aggregate function's real handler against real DynamoDB Local.

use taxi_aws::aggregate_function::{AggregateFunction, MetricsOutput};
use taxi_aws::dynamo::{ensure_table, DynamoStore};
use taxi_core::aggregate::{MetricKey, PartialKey, PartialValue};
use taxi_core::event::{watermark_event_json, InvalidReason, TripEvent};
use taxi_core::ingest::{Aggregator, IngestSettings};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::store::{FaultyStore, PartialStore, PartialWrite, PartialWriteOutcome, SaveOutcome};
use taxi_core::time::{EventTime, WallTime};
use taxi_core::watermark::{CloserProgress, WatermarkMode};
use taxi_core::window::PaneStart;
use taxi_integration_tests::kinesis::{kinesis_seq, lambda_event, shard_streams, trip_events, StreamRecord};
use taxi_integration_tests::standins::{dynamodb_client, unique_name};
use taxi_integration_tests::tables::merged_partials;
use taxi_integration_tests::{fixture_path, oracle, sample_path};

type TestFunction = AggregateFunction<FaultyStore<DynamoStore>>;

async fn function_on_new_table(prefix: &str, settings: IngestSettings) -> (TestFunction, String) {
    let client = dynamodb_client();
    let table = unique_name(prefix);
    ensure_table(&client, &table).await.expect("creating the table");
    let store = FaultyStore::new(DynamoStore::new(client, &table));
    (
        AggregateFunction::new(
            Aggregator::new(store, settings),
            MetricsOutput::Emf { namespace: "TaxiPipelineTest".into(), function_name: "aggregate-test".into() },
        ),
        table,
    )
}

async fn shard_state(function: &TestFunction, shard_id: &str) -> ShardState {
    let shard = ShardId(shard_id.into());
    function.aggregator().store().inner().load_shard_state(&shard).await.expect("reading the state").expect("the shard has a state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sample_over_four_shards_survives_redelivery_crashes_and_retries() {
    const BATCH_SIZE: usize = 250;
    let (function, table) = function_on_new_table("sample", IngestSettings::default()).await;
    let store = function.aggregator().store();
    let streams = shard_streams(&trip_events(&sample_path()), 4, 300);
    let now = WallTime::now();
    let (mut crashes, mut retries, mut deliveries) = (0, 0, 0);

    for stream in &streams {
        let mut checkpoint = 0;
        let mut attempt = 0usize;
        while checkpoint < stream.records.len() {
            let batch = &stream.records[checkpoint..(checkpoint + BATCH_SIZE).min(stream.records.len())];
            attempt += 1;
            // Every third attempt the function dies at some operation (sometimes
            // after its last one, so it lives); every fifth, one write fails.
            match attempt % 15 {
                0 | 3 | 6 | 9 | 12 => store.crash_at((attempt * 7) % 90),
                5 | 10 => store.fail_operation(2 + attempt % 20),
                _ => {}
            }
            let response = function.handle(lambda_event(&stream.shard_id, batch), now).await;
            deliveries += 1;
            if store.revive() {
                crashes += 1;
                continue; // The function died without answering: the batch comes again.
            }
            if let Some(failure) = response.batch_item_failures.first() {
                let seq = failure.item_identifier.as_deref().expect("an item identifier");
                let at = stream.records.iter().position(|r| r.seq == seq).expect("a record of the shard");
                assert!(at >= checkpoint && at < checkpoint + batch.len(), "retry point inside the batch");
                checkpoint = at;
                retries += 1;
                continue;
            }
            // At-least-once: the same batch, delivered a second time.
            let again = function.handle(lambda_event(&stream.shard_id, batch), now).await;
            deliveries += 1;
            assert!(again.batch_item_failures.is_empty(), "a redelivered batch succeeds");
            checkpoint += batch.len();
        }
    }
    assert!(crashes > 10 && retries > 5, "faults were exercised: {crashes} crashes, {retries} retries in {deliveries} deliveries");

    let expected = oracle::expected(&sample_path(), 600, 6);
    let actual = merged_partials(store.inner().client(), &table).await;
    let missing: Vec<_> = expected.partials.iter().filter(|(k, v)| actual.get(*k) != Some(*v)).take(5).collect();
    let extra: Vec<_> = actual.iter().filter(|(k, _)| !expected.partials.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "differs from the CSV: expected-but-not-equal {missing:?}, unexpected {extra:?}");
    assert_eq!(actual.len(), expected.partials.len());
    assert!(expected.valid_trips > 30_000, "the oracle read the whole sample");

    // The shard states account for every record exactly once.
    let mut totals = taxi_core::shard::Counters::default();
    for stream in &streams {
        let state = shard_state(&function, &stream.shard_id).await;
        assert_eq!(state.counters.records, stream.records.len() as u64, "{}", stream.shard_id);
        assert_eq!(state.applied_seq.as_ref().map(SeqNum::as_str), stream.records.last().map(|r| r.seq.as_str()));
        totals.add(&state.counters);
    }
    assert_eq!(totals.trips_aggregated, expected.valid_trips);
    assert_eq!(totals.invalid.get(InvalidReason::OutsideArea), expected.outside_area);
    assert_eq!(totals.invalid.get(InvalidReason::BadDuration), expected.bad_duration);
    assert_eq!(totals.trips_aggregated + totals.invalid.total(), expected.rows);
    assert_eq!(totals.late + totals.dropped_late, 0, "nothing was closed, so nothing is late");
}

/// A small batch of real trips, with the pieces a bad-input test needs.
struct BadInputBatch {
    records: Vec<StreamRecord>,
    valid: Vec<TripEvent>,
    /// The latest real watermark event in the batch.
    watermark: EventTime,
}

fn bad_input_batch() -> BadInputBatch {
    let trips = trip_events(&fixture_path());
    let expected = oracle::expected(&fixture_path(), 600, 6);
    assert_eq!(expected.rows, trips.len() as u64);
    // Real trips from the fixture that are valid (inside the city, sane duration).
    let in_city = |lat: f64, lon: f64| (40.4774..=40.9176).contains(&lat) && (-74.2591..=-73.7004).contains(&lon);
    let seconds = |t: &str| EventTime::parse_rfc3339(t).unwrap().0;
    let valid: Vec<TripEvent> = trips
        .iter()
        .filter(|t| in_city(t.pickup_lat, t.pickup_lon) && in_city(t.dropoff_lat, t.dropoff_lon))
        .filter(|t| (1..=14_400).contains(&(seconds(&t.dropoff_datetime) - seconds(&t.pickup_datetime))))
        .take(12)
        .cloned()
        .collect();
    let template = String::from_utf8(valid[0].to_json()).unwrap();
    let watermark = valid.iter().map(|t| EventTime(seconds(&t.dropoff_datetime))).max().unwrap();
    let far_future_trip =
        TripEvent { pickup_datetime: "2099-01-01T00:00:00Z".into(), dropoff_datetime: "2099-01-01T00:10:00Z".into(), ..valid[1].clone() };
    let bad: Vec<Vec<u8>> = vec![
        template.as_bytes()[..template.len() / 2].to_vec(), // truncated JSON
        template.replacen(&format!("{}", valid[0].pickup_lat), "\"40.7\"", 1).into_bytes(), // wrong type
        template.replace("\"dropoff_datetime\"", "\"dropoff_time\"").into_bytes(), // missing field
        template.replacen(&format!("{}", valid[0].pickup_lat), "NaN", 1).into_bytes(), // NaN
        template.replacen(&format!("{}", valid[0].pickup_lat), "123.4", 1).into_bytes(), // out-of-range
        far_future_trip.to_json(),                          // far-future trip
        watermark_event_json(EventTime::parse_rfc3339("2099-01-01T00:00:00Z").unwrap()), // far-future watermark
        Vec::new(),                                         // empty
        vec![0xff, 0xfe, b'{', 0x80],                       // not UTF-8
        br#"{"type":"fare","trip_id":1,"fare_amount":12.5}"#.to_vec(), // unknown type
    ];
    let mut datas: Vec<Vec<u8>> = Vec::new();
    for (i, trip) in valid.iter().enumerate() {
        datas.push(trip.to_json());
        if let Some(b) = bad.get(i) {
            datas.push(b.clone());
        }
    }
    datas.push(watermark_event_json(watermark));
    let records = datas
        .into_iter()
        .enumerate()
        .map(|(n, data)| StreamRecord { seq: kinesis_seq(0, n), partition_key: n.to_string(), data })
        .collect();
    BadInputBatch { records, valid, watermark }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_bad_input_is_counted_by_reason_and_never_fails() {
    let batch = bad_input_batch();
    let shard_id = "shardId-000000000000";
    for mode in [WatermarkMode::Producer, WatermarkMode::Bounded { max_out_of_orderness_s: 60 }] {
        let settings = IngestSettings { watermark_mode: mode, ..IngestSettings::default() };
        let (function, table) = function_on_new_table("bad-input", settings).await;
        let response = function.handle(lambda_event(shard_id, &batch.records), WallTime::now()).await;
        assert!(response.batch_item_failures.is_empty(), "bad input never fails the batch ({mode:?})");

        let state = shard_state(&function, shard_id).await;
        let invalid = |r| state.counters.invalid.get(r);
        assert_eq!(invalid(InvalidReason::Unparsable), 2, "truncated and NaN");
        assert_eq!(invalid(InvalidReason::WrongType), 1);
        assert_eq!(invalid(InvalidReason::MissingField), 1);
        assert_eq!(invalid(InvalidReason::OutsideArea), 1);
        assert_eq!(invalid(InvalidReason::FutureTimestamp), 2, "far-future trip and watermark");
        assert_eq!(invalid(InvalidReason::Empty), 1);
        assert_eq!(invalid(InvalidReason::NotUtf8), 1);
        assert_eq!(invalid(InvalidReason::UnknownType), 1);
        assert_eq!(state.counters.invalid.total(), 10);
        assert_eq!(state.counters.trips_aggregated, batch.valid.len() as u64);
        assert_eq!(state.counters.records, batch.records.len() as u64);

        // Exactly the valid trips are aggregated.
        let partials = merged_partials(function.aggregator().store().inner().client(), &table).await;
        let pickups: Vec<_> = partials.iter().filter(|((_, key), _)| key.starts_with("pickups#")).collect();
        let total_duration: i64 = batch
            .valid
            .iter()
            .map(|t| EventTime::parse_rfc3339(&t.dropoff_datetime).unwrap().0 - EventTime::parse_rfc3339(&t.pickup_datetime).unwrap().0)
            .sum();
        assert_eq!(pickups.iter().map(|(_, (count, _))| count).sum::<u64>(), batch.valid.len() as u64);
        assert_eq!(pickups.iter().map(|(_, (_, sum))| sum).sum::<u64>(), total_duration as u64);
        assert!(pickups.iter().all(|((pane, _), _)| *pane < 1_500_000_000), "nothing from 2099 was aggregated");

        // The far-future records moved no watermark.
        let expected_watermark = match mode {
            WatermarkMode::Producer => batch.watermark,
            WatermarkMode::Bounded { max_out_of_orderness_s } => {
                // The time below the tolerated outliers among the distinct dropoffs.
                let mut dropoffs: Vec<i64> = batch.valid.iter().map(|t| EventTime::parse_rfc3339(&t.dropoff_datetime).unwrap().0).collect();
                dropoffs.sort_unstable();
                dropoffs.dedup();
                EventTime(dropoffs[dropoffs.len() - 1 - taxi_core::watermark::TOLERATED_OUTLIERS] - max_out_of_orderness_s)
            }
        };
        assert_eq!(state.watermark.watermark, Some(expected_watermark), "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequence_fence_and_state_conditions_hold_in_dynamodb_local() {
    let client = dynamodb_client();
    let table = unique_name("fence");
    ensure_table(&client, &table).await.unwrap();
    ensure_table(&client, &table).await.expect("creating an existing table is a no-op");
    let store = DynamoStore::new(client, &table);
    let shard = ShardId("shardId-000000000007".into());
    let seq = |n: u64| SeqNum::parse(&format!("49{n:054}")).unwrap();
    let key = PartialKey { pane: PaneStart(1_420_848_000), metric: MetricKey::parse_sort_key("pickups#dr5ru7").unwrap() };
    let write = |first: u64, last: u64, count: u64| {
        let (first, last) = (seq(first), seq(last));
        let store = &store;
        let shard = &shard;
        async move {
            let w = PartialWrite {
                shard,
                key,
                value: PartialValue { count, sum_s: count * 10 },
                first_seq: &first,
                last_seq: &last,
                expires_at: EventTime(2_000_000_000),
            };
            store.write_partial(&w).await.unwrap()
        }
    };
    assert!(matches!(write(10, 20, 3).await, PartialWriteOutcome::Applied { .. }));
    // The same records again, and an overlapping range: refused, with the item's fence.
    assert!(matches!(write(10, 20, 3).await, PartialWriteOutcome::Fenced { item_seq, .. } if item_seq == seq(20)));
    assert!(matches!(write(15, 30, 4).await, PartialWriteOutcome::Fenced { item_seq, .. } if item_seq == seq(20)));
    assert!(matches!(write(21, 30, 2).await, PartialWriteOutcome::Applied { .. }));
    let merged = merged_partials(store.client(), &table).await;
    assert_eq!(merged.get(&(1_420_848_000, "pickups#dr5ru7".into())), Some(&(5, 50)));

    let state = ShardState { applied_seq: Some(seq(30)), updated_at: Some(WallTime(1)), ..ShardState::default() };
    assert!(matches!(store.save_shard_state(&shard, &state, None).await.unwrap(), SaveOutcome::Saved { .. }));
    match store.save_shard_state(&shard, &state, None).await.unwrap() {
        SaveOutcome::Conflict { current } => assert_eq!(*current, state),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(store.save_shard_state(&shard, &state, Some(&seq(29))).await.unwrap(), SaveOutcome::Conflict { .. }));
    let next = ShardState { applied_seq: Some(seq(40)), ..state.clone() };
    assert!(matches!(store.save_shard_state(&shard, &next, Some(&seq(30))).await.unwrap(), SaveOutcome::Saved { .. }));
    assert_eq!(store.load_shard_state(&shard).await.unwrap(), Some(next));
    assert_eq!(store.load_closer_progress(&ShardId("s".into())).await.unwrap(), CloserProgress::default());
}
