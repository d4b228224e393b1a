//! The aggregate function's real handler against real DynamoDB Local.

use aws_sdk_dynamodb::types::AttributeValue;
use taxi_aws::aggregate_function::{AggregateFunction, MetricsOutput};
use taxi_aws::dynamo::{ensure_table, DynamoStore};
use taxi_core::aggregate::{MetricKey, PartialValue};
use taxi_core::closer::CloserStore;
use taxi_core::event::{watermark_event_json, InvalidReason, TripEvent};
use taxi_core::geo::Cell;
use taxi_core::ingest::{Aggregator, IngestSettings};
use taxi_core::pack::{merge_into, pack_batch, Partials, MAX_PART_BYTES};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{PaneLog, ShardId, ShardState};
use taxi_core::store::{Commit, CommitOutcome, LogWrite, PartialStore, Seal};
use taxi_core::testing::FaultyStore;
use taxi_core::time::{EventTime, WallTime};
use taxi_core::watermark::WatermarkMode;
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
            // Every third attempt the function dies before some operation or
            // while waiting for its answer (the loads, the commit, sometimes
            // after its last one, so it lives); every fifth, one operation fails.
            match attempt % 15 {
                0 | 6 | 12 => store.crash_at(attempt % 4),
                3 | 9 => store.crash_after(attempt % 4),
                5 | 10 => store.fail_operation(attempt % 3),
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
                // The time below the tolerated outliers among the distinct dropoffs, or the
                // producer's watermark event if that is later (bounded mode honours both).
                let mut dropoffs: Vec<i64> = batch.valid.iter().map(|t| EventTime::parse_rfc3339(&t.dropoff_datetime).unwrap().0).collect();
                dropoffs.sort_unstable();
                dropoffs.dedup();
                EventTime(dropoffs[dropoffs.len() - 1 - taxi_core::watermark::TOLERATED_OUTLIERS] - max_out_of_orderness_s)
                    .max(batch.watermark)
            }
        };
        assert_eq!(state.watermark.watermark, Some(expected_watermark), "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_commits_only_on_its_conditions_and_its_items_read_back_in_dynamodb_local() {
    let client = dynamodb_client();
    let table = unique_name("commit");
    ensure_table(&client, &table).await.unwrap();
    ensure_table(&client, &table).await.expect("creating an existing table is a no-op");
    let store = DynamoStore::new(client, &table);
    let shard = ShardId("shardId-000000000007".into());
    let seq = |n: u64| SeqNum::parse(&format!("49{n:054}")).unwrap();
    let pane = PaneStart(1_420_848_000);
    let cell = |i: u64| MetricKey::Pickups(Cell::from_bits(6, (Cell::parse("dr5").unwrap().to_bits().1 << 15) + i).unwrap());
    let partials = |n: u64, count: u64| -> Partials { (0..n).map(|i| (cell(i), PartialValue { count, sum_s: count * 10 })).collect() };
    let state_at = |n: u64, closing_through| ShardState {
        applied_seq: Some(seq(n)),
        updated_at: Some(WallTime(1)),
        closing_through,
        ..ShardState::default()
    };
    let commit = |shard: ShardId, expected: Option<u64>, state: ShardState| {
        let store = &store;
        async move { store.commit(&Commit { shard: &shard, expected: expected.map(seq).as_ref(), state: &state }).await.unwrap() }
    };
    // A batch item with these partials of `pane`, written as a commit at `n` writes it.
    let write_item = |n: u64, partials: Partials| {
        let (store, shard) = (&store, &shard);
        async move {
            let item = pack_batch(shard, &seq(n), [(pane, &partials)]);
            let log_ref = item.log_ref;
            let write = LogWrite { item: Some(item), item_expires_at: EventTime(2_000_000_000), markers: Vec::new(), seals: Vec::new() };
            store.write_log(shard, &write).await.unwrap();
            log_ref
        }
    };

    // A shard's first state checks the closer's closing_through and registers the shard.
    assert!(matches!(commit(shard.clone(), None, state_at(10, None)).await, CommitOutcome::Committed { .. }));
    assert!(store.load_closer_state().await.unwrap().known_shards.contains(&shard));
    // The same batch again, and one judged on a state that moved: refused, with the state as it is.
    match commit(shard.clone(), None, state_at(10, None)).await {
        CommitOutcome::StateMoved { current } => assert_eq!(*current, state_at(10, None)),
        other => panic!("expected the state to have moved, got {other:?}"),
    }
    assert!(matches!(commit(shard.clone(), Some(9), state_at(20, None)).await, CommitOutcome::StateMoved { .. }));

    // The closer announces a close and stamps it: a batch judged before the stamp is refused
    // with the stamped state, one judged after lands; a new shard judged before is refused too.
    let closing = EventTime(1_420_848_600);
    assert!(store.announce_closing(closing).await.unwrap().contains(&shard));
    let stamped = store.stamp_shard_states(&[shard.clone(), ShardId("shardId-000000000099".into())], closing).await.unwrap();
    assert_eq!(stamped.keys().collect::<Vec<_>>(), [&shard], "a shard without a state is left out");
    match commit(shard.clone(), Some(10), state_at(20, None)).await {
        CommitOutcome::StateMoved { current } => assert_eq!(current.closing_through, Some(closing)),
        other => panic!("expected the stamp to refuse the commit, got {other:?}"),
    }
    let newcomer = ShardId("shardId-000000000008".into());
    assert_eq!(commit(newcomer.clone(), None, state_at(5, None)).await, CommitOutcome::CloserMoved);
    assert!(matches!(commit(newcomer.clone(), None, state_at(5, Some(closing))).await, CommitOutcome::Committed { .. }));
    assert!(store.load_closer_state().await.unwrap().known_shards.contains(&newcomer));

    // Items read back through their references; an item no state refers to (an attempt that died) is never read.
    let first = write_item(20, partials(3, 1)).await;
    write_item(20, partials(3, 7)).await;
    let second = write_item(30, partials(2, 1)).await;
    let mut state = state_at(30, Some(closing));
    state.open_panes.insert(pane, PaneLog { refs: vec![first, second], compacted: 0, since: 0 });
    assert!(matches!(commit(shard.clone(), Some(10), state.clone()).await, CommitOutcome::Committed { .. }));
    let loaded = store.load_shard_state(&shard).await.unwrap().unwrap();
    assert_eq!(loaded, state);
    assert_eq!(
        PartialStore::read_pane(&store, &shard, pane, &loaded.refs_of(pane)).await.unwrap(),
        merged(&[partials(3, 1), partials(2, 1)])
    );

    // The largest pane: 2^15 cells with a partial each, an item in several parts far under 400 KB.
    let largest = partials(1 << 15, 1_000);
    let item = pack_batch(&shard, &seq(40), [(pane, &largest)]);
    assert!(item.parts.len() > 1 && item.parts.iter().all(|p| p.len() <= MAX_PART_BYTES), "{} parts", item.parts.len());
    let big = write_item(40, largest.clone()).await;
    assert_eq!(CloserStore::read_pane(&store, pane, &[(shard.clone(), vec![big])], false).await.unwrap(), largest);

    // Sealed panes are found by a re-emission's read without any state
    // reference, every shard's with one query.
    let seal = Seal { pane, sealed_at: seq(30), refs: vec![first, second], expires_at: EventTime(2_000_000_000) };
    let write = LogWrite { item: None, item_expires_at: EventTime(0), markers: Vec::new(), seals: vec![seal] };
    store.write_log(&shard, &write).await.unwrap();
    let other = ShardId("shardId-000000000009".into());
    let other_item = pack_batch(&other, &seq(5), [(pane, &partials(4, 10))]);
    let other_seal = Seal { pane, sealed_at: seq(5), refs: vec![other_item.log_ref], expires_at: EventTime(2_000_000_000) };
    let write =
        LogWrite { item: Some(other_item), item_expires_at: EventTime(2_000_000_000), markers: Vec::new(), seals: vec![other_seal] };
    store.write_log(&other, &write).await.unwrap();
    let resealed = CloserStore::read_pane(&store, pane, &[(shard.clone(), vec![second])], true).await.unwrap();
    assert_eq!(resealed, merged(&[partials(3, 1), partials(2, 1), partials(4, 10)]), "each item once, both shards");
    assert_eq!(store.load_closer_progress(&shard).await.unwrap().closing_through, Some(closing));
}

fn merged(all: &[Partials]) -> Partials {
    let mut merged = Partials::new();
    for partials in all {
        merge_into(&mut merged, partials.iter().map(|(k, v)| (*k, *v)));
    }
    merged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_first_layout_is_refused_with_the_way_out() {
    let client = dynamodb_client();
    let table = unique_name("old-layout");
    ensure_table(&client, &table).await.unwrap();
    // The first layout's shard state: no `layout`, open panes as a number set (layout 2 is refused likewise, unit-tested).
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("S#shardId-000000000000".into()))
        .item("sk", AttributeValue::S("STATE".into()))
        .item("shard_id", AttributeValue::S("shardId-000000000000".into()))
        .item("applied_seq", AttributeValue::S(format!("{:0>129}", 42)))
        .item("open_panes", AttributeValue::Ns(vec!["1420848000".into()]))
        .send()
        .await
        .unwrap();
    let store = DynamoStore::new(client, &table);
    let error = store.load_shard_state(&ShardId("shardId-000000000000".into())).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(error.to_string().contains("another layout") && error.to_string().contains("new table"), "{error}");
}
