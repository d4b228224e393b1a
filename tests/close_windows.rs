//! The closer against real kinesalite, DynamoDB Local and osmem-server,
//! after the real aggregate handler has processed real trips.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use taxi_aws::dynamo::DynamoStore;
use taxi_core::closer::{CloseCursor, CloserState, CloserStore, DeadLetter, StoredMarker};
use taxi_core::expiry::PaneObservation;
use taxi_core::pack::{LogRef, Partials};
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::store::StoreError;
use taxi_core::time::{EventTime, WallTime};
use taxi_core::window::PaneStart;
use taxi_integration_tests::kinesis::trip_events;
use taxi_integration_tests::pipeline::{assert_same, far_deadline, Deployment};
use taxi_integration_tests::standins::opensearch_endpoint;
use taxi_integration_tests::{fault_proxy, fixture_path, oracle, sample_path};
use taxi_standins::free_port;

const IDLE_TIMEOUT_MS: i64 = 300_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_the_real_sample_exactly_and_a_second_run_changes_nothing() {
    let deployment = Deployment::new("close-sample").await;
    deployment.aggregate_file(&sample_path()).await;
    let expected = deployment.expected(&oracle::expected(&sample_path(), 600, 6));

    let closer = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    assert!(report.windows_closed >= 12, "the sample spans more than two hours of dropoffs: {report:?}");
    assert_eq!(report.documents_indexed as usize, expected.len());
    assert_same(&deployment.indexed_counts().await, &expected, "every window and both metrics, exactly");
    let sources = deployment.indexed().await;
    let jfk = sources.iter().find(|(id, _)| id.ends_with("-JFK")).expect("an airport document").1;
    let avg = jfk["avg_trip_duration"].as_f64().unwrap();
    assert!((avg - jfk["sum_trip_duration"].as_f64().unwrap() / jfk["trip_count"].as_f64().unwrap()).abs() < 1e-9, "trip-weighted average");
    let hot = sources.iter().find(|(id, _)| id.contains("/pickups-")).unwrap().1;
    assert!(hot["location"]["lat"].is_f64() && hot["geohash"].is_string() && hot["timestamp"].is_string());

    let again = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!((again.windows_closed, again.documents_indexed, again.error), (0, 0, None), "nothing left to close");
    assert_same(&deployment.indexed().await, &sources, "the index is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_in_chunks_resumes_from_its_recorded_progress_and_indexes_exactly() {
    let deployment = Deployment::new("close-chunks").await;
    deployment.aggregate_file(&fixture_path()).await;
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));

    let mut normal = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    normal.settings.chunk_documents = 3;
    // Dies when it would clear the progress of a window it has fully indexed.
    let mut dying =
        deployment.closer_with_store(Scripted::dying_clearing_the_cursor(normal.store.clone()), opensearch_endpoint(), IDLE_TIMEOUT_MS);
    dying.settings.chunk_documents = 3;
    let report = dying.run_once(&WallTime::now, far_deadline()).await;
    assert!(report.error.is_some(), "{report:?}");
    let cursor = normal.store.load_closer_state().await.unwrap().close_cursor.expect("the progress within the window is stored");
    assert!(cursor.markers.is_empty() && !cursor.indexed_through.1.is_empty(), "{cursor:?}");

    let report = normal.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!((report.error, report.windows_resumed), (None, 1));
    assert_eq!(normal.store.load_closer_state().await.unwrap().close_cursor, None, "cleared once closed");
    assert_same(&deployment.indexed_counts().await, &expected, "every document, from chunks of three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closer_killed_after_indexing_leaves_no_duplicates() {
    let deployment = Deployment::new("close-killed").await;
    deployment.aggregate_file(&fixture_path()).await;
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));

    let normal = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    let dying =
        deployment.closer_with_store(Scripted::dying_before_recording(normal.store.clone()), opensearch_endpoint(), IDLE_TIMEOUT_MS);
    let report = dying.run_once(&WallTime::now, far_deadline()).await;
    assert!(report.error.is_some() && report.documents_indexed > 0, "indexed the first window, then died: {report:?}");
    assert_eq!(normal.store.load_closer_state().await.unwrap().closed_through, None, "nothing recorded as closed");

    let report = normal.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    assert_same(&deployment.indexed_counts().await, &expected, "the rerun overwrote, never duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_refused_with_429_are_retried_until_every_document_is_indexed() {
    let deployment = Deployment::new("close-429").await;
    deployment.aggregate_file(&fixture_path()).await;
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));

    let proxy = fault_proxy::start(opensearch_endpoint(), 3).await;
    let report = deployment.closer(&proxy.endpoint, IDLE_TIMEOUT_MS).run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    let refused = proxy.refused.load(Ordering::SeqCst);
    assert!(refused > 0, "the proxy refused documents");
    assert!(report.documents_retried >= refused, "{report:?}");
    assert_eq!(report.dead_letters, 0);
    assert_same(&deployment.indexed_counts().await, &expected, "every document indexed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_down_leaves_windows_open_until_it_is_back() {
    let deployment = Deployment::new("close-down").await;
    deployment.aggregate_file(&fixture_path()).await;
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));

    let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
    let closer = deployment.closer(&nowhere, IDLE_TIMEOUT_MS);
    let report = closer.run_once(&WallTime::now, WallTime(WallTime::now().0 + 4_000)).await;
    assert!(report.error.is_some(), "{report:?}");
    assert_eq!(report.windows_closed, 0);
    assert_eq!(closer.store.load_closer_state().await.unwrap().closed_through, None, "every window stays open");

    let report = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS).run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    assert_same(&deployment.indexed_counts().await, &expected, "nothing was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shard_does_not_stall_closing_past_the_timeout() {
    let deployment = Deployment::new("close-idle").await;
    let streams = deployment.streams_of(&sample_path()).await;
    // Shard 3 delivers a third of its records and falls silent; later the
    // others run to their closing watermark.
    let stalled = &streams[3];
    deployment.aggregate(&stalled.shard_id, &stalled.records[..stalled.records.len() / 3]).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let others_started = WallTime::now();
    for stream in &streams[..3] {
        deployment.aggregate(&stream.shard_id, &stream.records).await;
    }
    let report = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS).run_once(&WallTime::now, far_deadline()).await;
    let held = report.closed_through.expect("shard 3 reported watermarks");
    assert_eq!(report.error, None);

    // A timeout between "the others' last report" and "shard 3's": shard 3 is idle, the others live.
    let timeout = WallTime::now().0 - others_started.0 + 1_000;
    let report = deployment.closer(opensearch_endpoint(), timeout).run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    let global = report.global.expect("a decision");
    let idle: Vec<_> = global.verdicts.iter().filter(|(_, v)| v.name() == "idle").map(|(id, _)| id.to_string()).collect();
    assert_eq!(idle, vec![stalled.shard_id.clone()]);
    assert!(
        report.closed_through.unwrap() > held.plus_seconds(3600),
        "closing went on past the idle shard: {held:?} -> {:?}",
        report.closed_through
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_split_mid_run_closes_no_window_before_its_data_is_in() {
    let deployment = Deployment::new("close-split").await;
    let streams = deployment.streams_of(&fixture_path()).await;
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));
    // Shards 1 to 3 run to the end; shard 0 delivers its first half, then splits.
    for stream in &streams[1..] {
        deployment.aggregate(&stream.shard_id, &stream.records).await;
    }
    let first = &streams[0];
    let half = first.records.len() / 2;
    deployment.aggregate(&first.shard_id, &first.records[..half]).await;
    let middle = (u128::MAX / 8).to_string();
    deployment
        .kinesis
        .split_shard()
        .stream_name(&deployment.stream)
        .shard_to_split(&first.shard_id)
        .new_starting_hash_key(&middle)
        .send()
        .await
        .unwrap();
    deployment.wait_active().await;
    let children: Vec<String> = deployment
        .shards()
        .await
        .into_iter()
        .filter(|s| s.parent.as_ref().is_some_and(|p| p.as_str() == first.shard_id))
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(children.len(), 2);

    // The children have not reported: no window may close, whatever the other shards say.
    let closer = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!((report.windows_closed, report.closed_through, report.error.clone()), (0, None, None), "{report:?}");
    assert!(deployment.indexed().await.is_empty());

    // The rest of shard 0's data arrives on the children (one gets the trips,
    // both get the closing watermark); the drained parent leaves the minimum.
    let closing = first.records.last().unwrap().clone();
    deployment.aggregate(&children[0], &first.records[half..]).await;
    deployment.aggregate(&children[1], std::slice::from_ref(&closing)).await;
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    let verdicts = &report.global.as_ref().unwrap().verdicts;
    assert_eq!(verdicts[&ShardId(first.shard_id.clone())].name(), "retired");
    assert_same(&deployment.indexed_counts().await, &expected, "every trip, including those on the children");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_trips_within_lateness_reopen_their_window_and_later_ones_are_dropped() {
    use taxi_core::ingest::IngestSettings;
    use taxi_integration_tests::kinesis::{kinesis_seq, StreamRecord};

    let deployment = Deployment::new("close-late").await;
    let streams = deployment.streams_of(&fixture_path()).await;
    deployment.aggregate_streams(&streams).await;
    let closer = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    assert_eq!(closer.run_once(&WallTime::now, far_deadline()).await.error, None);
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));
    let before = deployment.indexed_counts().await;
    assert_same(&before, &expected, "closed once");

    // A real, valid trip again, for a hot spot that has a document: now late for its window.
    let in_city = |lat: f64, lon: f64| (40.4774..=40.9176).contains(&lat) && (-74.2591..=-73.7004).contains(&lon);
    let (late_trip, id) = trip_events(&fixture_path())
        .into_iter()
        .filter(|t| in_city(t.pickup_lat, t.pickup_lon) && in_city(t.dropoff_lat, t.dropoff_lon))
        .find_map(|trip| {
            let dropoff = EventTime::parse_rfc3339(&trip.dropoff_datetime)?.0;
            let pickup = EventTime::parse_rfc3339(&trip.pickup_datetime)?.0;
            if !(1..=14_400).contains(&(dropoff - pickup)) {
                return None;
            }
            let cell = geohash::encode(geohash::Coord { x: trip.pickup_lon, y: trip.pickup_lat }, 6).ok()?;
            let id = format!("{}/pickups-{}-600s-{cell}", deployment.documents.pickup_index, dropoff.div_euclid(600) * 600);
            before.contains_key(&id).then_some((trip, id))
        })
        .expect("a trip of a hot spot");
    let shard = &streams[1];
    let late =
        |n: usize| StreamRecord { seq: kinesis_seq(1, shard.records.len() + n), partition_key: "late".into(), data: late_trip.to_json() };

    // Beyond the allowed lateness: counted as dropped, nothing re-emitted.
    deployment.aggregate_with(IngestSettings { allowed_lateness_s: 0, ..IngestSettings::default() }, &shard.shard_id, &[late(0)]).await;
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!((report.windows_reemitted, report.error), (0, None));
    let state = closer.store.load_shard_states(&[ShardId(shard.shard_id.clone())]).await.unwrap();
    assert_eq!(state.values().next().unwrap().counters.dropped_late, 1);
    assert_same(&deployment.indexed_counts().await, &before, "a dropped trip changes nothing");

    // Within a lateness of a day: the window is emitted again, same _ids, one more trip.
    deployment
        .aggregate_with(IngestSettings { allowed_lateness_s: 86_400, ..IngestSettings::default() }, &shard.shard_id, &[late(1)])
        .await;
    assert_eq!(closer.store.list_reemit_markers().await.unwrap().len(), 1, "the late trip left a marker");
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!((report.windows_reemitted, report.error), (1, None));
    assert!(closer.store.list_reemit_markers().await.unwrap().is_empty(), "the marker is consumed");
    let after = deployment.indexed_counts().await;
    assert_eq!(after.len(), before.len(), "no document added or lost");
    assert_eq!(after[&id].0, before[&id].0 + 1, "{id} counts the late trip");
    assert!(after.iter().filter(|(k, _)| **k != id && !k.contains("/airport")).all(|(k, v)| before[k] == *v), "other hot spots unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_the_endpoint_rejects_are_kept_as_dead_letters_and_the_window_closes() {
    let deployment = Deployment::new("close-dlq").await;
    deployment.aggregate_file(&fixture_path()).await;
    // The hot-spot index exists before the closer's template, with `location` as a date:
    // every hot-spot document is a mapping error (400) for good.
    let created = reqwest::Client::new()
        .put(format!("{}/{}", opensearch_endpoint(), deployment.documents.pickup_index))
        .header("content-type", "application/json")
        .body(r#"{"mappings":{"properties":{"location":{"type":"date"}}}}"#)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());

    let closer = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None, "rejected documents do not block closing");
    assert!(report.dead_letters > 0);
    assert!(closer.store.load_closer_state().await.unwrap().closed_through.is_some(), "the windows count as closed");

    let letters = deployment
        .dynamodb
        .query()
        .table_name(&deployment.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("DLQ#{}", deployment.documents.pickup_index)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(letters.count() as u64, report.dead_letters, "every rejected document is kept");
    let letter = &letters.items()[0];
    let reason = letter["reason"].as_s().unwrap();
    assert!(reason.contains("mapper_parsing_exception") || reason.contains("parse"), "{reason}");
    assert_eq!(letter["status"].as_n().unwrap(), "400");
    let document: serde_json::Value = serde_json::from_str(letter["document"].as_s().unwrap()).unwrap();
    assert!(document["pickup_count"].as_u64().unwrap() >= 2, "the whole document is kept");
    // Exactly the hot-spot documents the oracle predicts are dead letters; nothing was indexed in their place.
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));
    let hot_spots = expected.keys().filter(|k| k.contains("/pickups-")).count() as u64;
    assert_eq!(report.dead_letters, hot_spots);
    assert_eq!(report.documents_indexed, expected.len() as u64 - hot_spots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_keeps_a_second_closer_out_but_two_at_once_still_index_each_document_once() {
    let deployment = Deployment::new("close-lease").await;
    deployment.aggregate_file(&fixture_path()).await;
    let expected = deployment.expected(&oracle::expected(&fixture_path(), 600, 6));

    // Another closer holds the lease: this one does nothing.
    let first = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    assert!(first.store.acquire_lease("someone-else", WallTime::now(), far_deadline()).await.unwrap());
    let report = first.run_once(&WallTime::now, far_deadline()).await;
    assert!(report.lease_held_elsewhere);
    assert_eq!(report.windows_closed, 0);
    first.store.release_lease("someone-else").await.unwrap();

    // Two closers at once, one of them ignoring the lease: the same documents, once each.
    let ignoring = deployment.closer_with_store(Scripted::ignoring_the_lease(first.store.clone()), opensearch_endpoint(), IDLE_TIMEOUT_MS);
    let (a, b) = tokio::join!(first.run_once(&WallTime::now, far_deadline()), ignoring.run_once(&WallTime::now, far_deadline()));
    assert_eq!((a.error, b.error), (None, None));
    assert_same(&deployment.indexed_counts().await, &expected, "each document once per _id");
}

/// The DynamoDB store with scripted misbehaviour: a lease that is always
/// granted, and a closer that dies after indexing, before recording it.
struct Scripted {
    inner: DynamoStore,
    ignore_lease: bool,
    die_before_recording: AtomicBool,
    die_clearing_cursor: AtomicBool,
}

impl Scripted {
    fn ignoring_the_lease(inner: DynamoStore) -> Scripted {
        Scripted { inner, ignore_lease: true, die_before_recording: AtomicBool::new(false), die_clearing_cursor: AtomicBool::new(false) }
    }

    fn dying_before_recording(inner: DynamoStore) -> Scripted {
        Scripted { inner, ignore_lease: false, die_before_recording: AtomicBool::new(true), die_clearing_cursor: AtomicBool::new(false) }
    }

    fn dying_clearing_the_cursor(inner: DynamoStore) -> Scripted {
        Scripted { inner, ignore_lease: false, die_before_recording: AtomicBool::new(false), die_clearing_cursor: AtomicBool::new(true) }
    }
}

impl CloserStore for Scripted {
    async fn load_shard_states(&self, shards: &[ShardId]) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
        self.inner.load_shard_states(shards).await
    }
    async fn load_closer_state(&self) -> Result<CloserState, StoreError> {
        self.inner.load_closer_state().await
    }
    async fn acquire_lease(&self, owner: &str, now: WallTime, until: WallTime) -> Result<bool, StoreError> {
        if self.ignore_lease {
            return Ok(true);
        }
        self.inner.acquire_lease(owner, now, until).await
    }
    async fn release_lease(&self, owner: &str) -> Result<(), StoreError> {
        self.inner.release_lease(owner).await
    }
    async fn read_pane(&self, pane: PaneStart, sources: &[(ShardId, Vec<LogRef>)], sealed: bool) -> Result<Partials, StoreError> {
        self.inner.read_pane(pane, sources, sealed).await
    }
    async fn list_reemit_markers(&self) -> Result<Vec<StoredMarker>, StoreError> {
        self.inner.list_reemit_markers().await
    }
    async fn delete_reemit_marker(&self, marker: &StoredMarker) -> Result<(), StoreError> {
        self.inner.delete_reemit_marker(marker).await
    }
    async fn announce_closing(&self, closing_through: EventTime) -> Result<BTreeSet<ShardId>, StoreError> {
        self.inner.announce_closing(closing_through).await
    }
    async fn stamp_shard_states(
        &self,
        shards: &[ShardId],
        closing_through: EventTime,
    ) -> Result<BTreeMap<ShardId, ShardState>, StoreError> {
        self.inner.stamp_shard_states(shards, closing_through).await
    }
    async fn save_observation(&self, observation: &PaneObservation) -> Result<(), StoreError> {
        self.inner.save_observation(observation).await
    }
    async fn save_close_cursor(&self, cursor: Option<&CloseCursor>) -> Result<(), StoreError> {
        if cursor.is_none() && self.die_clearing_cursor.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the closer died here".into()));
        }
        self.inner.save_close_cursor(cursor).await
    }
    async fn advance_closed_through(&self, closed_through: EventTime, watermark: EventTime) -> Result<(), StoreError> {
        if self.die_before_recording.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the closer died here".into()));
        }
        self.inner.advance_closed_through(closed_through, watermark).await
    }
    async fn save_excluded(&self, excluded: &BTreeMap<ShardId, EventTime>) -> Result<(), StoreError> {
        self.inner.save_excluded(excluded).await
    }
    async fn remember_shards(&self, shards: &[ShardId]) -> Result<(), StoreError> {
        self.inner.remember_shards(shards).await
    }
    async fn save_first_seen(&self, first_seen: &BTreeMap<ShardId, WallTime>) -> Result<(), StoreError> {
        self.inner.save_first_seen(first_seen).await
    }
    async fn put_dead_letters(&self, letters: &[DeadLetter], now: WallTime) -> Result<(), StoreError> {
        self.inner.put_dead_letters(letters, now).await
    }
}

/// With daily indices the index names become aliases: an index that already
/// holds one of those names (written with `INDEX_RETENTION_DAYS=0`) is refused
/// with what to do, before any document is sent.
#[tokio::test]
async fn daily_indices_refuse_an_index_that_holds_their_aliass_name() {
    use taxi_aws::search::{SearchAuth, SearchConfig, SearchSink};
    use taxi_core::closer::{DocumentSink, SinkError};
    use taxi_core::documents::{Document, DocumentSettings};

    let old = taxi_integration_tests::standins::unique_name("old-pickups");
    let created = reqwest::Client::new().put(format!("{}/{old}", opensearch_endpoint())).send().await.unwrap().status();
    assert!(created.is_success(), "creating {old}: {created}");
    let documents = DocumentSettings {
        pickup_index: old.clone(),
        duration_index: taxi_integration_tests::standins::unique_name("old-durations"),
        index_retention_days: Some(7),
        ..DocumentSettings::default()
    };
    let sink = SearchSink::new(SearchConfig {
        endpoint: opensearch_endpoint().to_owned(),
        auth: SearchAuth::None,
        documents: documents.clone(),
        limits: taxi_core::bulk::BulkLimits::default(),
        gzip: false,
        tls_skip_verify: false,
        request_timeout: std::time::Duration::from_secs(10),
    })
    .unwrap();
    let index = documents.index_for(&old, taxi_core::window::WindowStart(1_420_848_000));
    let document =
        Document { index, id: "pickups-1420848000-600s-dr5ru7".into(), source: serde_json::json!({"pickup_count": 3}), version: 3 };
    let refused = sink.index(&[document], far_deadline()).await.expect_err("an index in the alias's place");
    assert!(matches!(&refused, SinkError::Refused(m) if m.contains("INDEX_RETENTION_DAYS") && m.contains(&old)), "{refused:?}");
    let daily = reqwest::get(format!("{}/{old}-2015.01.10", opensearch_endpoint())).await.unwrap().status();
    assert_eq!(daily.as_u16(), 404, "no document was sent");
}
