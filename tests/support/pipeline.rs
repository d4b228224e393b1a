//! A whole deployment on the stand-ins, for the closer's tests: a DynamoDB
//! table, a 4-shard kinesalite stream and index names of its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use taxi_aws::aggregate_function::{AggregateFunction, MetricsOutput};
use taxi_aws::dynamo::{ensure_table, DynamoStore};
use taxi_aws::kinesis::{list_shards, wait_until_active, KinesisShards};
use taxi_aws::search::{SearchAuth, SearchConfig, SearchSink};
use taxi_core::bulk::BulkLimits;
use taxi_core::closer::{Closer, CloserSettings, CloserStore};
use taxi_core::closing::Idleness;
use taxi_core::documents::DocumentSettings;
use taxi_core::ingest::{Aggregator, IngestSettings};
use taxi_core::shard::StreamShard;
use taxi_core::time::WallTime;
use taxi_core::window::WindowSpec;

use crate::kinesis::{lambda_event, shard_streams, trip_events, ShardStream, StreamRecord};
use crate::oracle::Expected;
use crate::standins::{dynamodb_client, kinesis_client, opensearch_endpoint, unique_name};

pub const SHARDS: usize = 4;

pub struct Deployment {
    pub table: String,
    pub stream: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub documents: DocumentSettings,
}

pub type TestCloser = Closer<DynamoStore, KinesisShards, SearchSink>;

impl Deployment {
    pub async fn new(prefix: &str) -> Deployment {
        let name = unique_name(prefix);
        let (dynamodb, kinesis) = (dynamodb_client(), kinesis_client());
        ensure_table(&dynamodb, &name).await.expect("creating the table");
        kinesis.create_stream().stream_name(&name).shard_count(SHARDS as i32).send().await.expect("creating the stream");
        let deployment = Deployment {
            documents: DocumentSettings {
                min_count: 2,
                pickup_index: format!("pickup_count-{name}"),
                duration_index: format!("trip_duration-{name}"),
                index_retention_days: None,
            },
            table: name.clone(),
            stream: name,
            dynamodb,
            kinesis,
        };
        deployment.wait_active().await;
        deployment
    }

    pub async fn wait_active(&self) {
        wait_until_active(&self.kinesis, &self.stream, Duration::from_secs(20)).await.expect("the stream becomes active");
    }

    pub async fn shards(&self) -> Vec<StreamShard> {
        list_shards(&self.kinesis, &self.stream).await.expect("listing shards")
    }

    /// A TLC file as this deployment's shards would hold it (see [`shard_streams`]),
    /// named after the stream's real shard ids.
    pub async fn streams_of(&self, path: &Path) -> Vec<ShardStream> {
        let mut streams = shard_streams(&trip_events(path), SHARDS, 300);
        for (stream, shard) in streams.iter_mut().zip(self.shards().await) {
            stream.shard_id = shard.id.to_string();
        }
        streams
    }

    /// Feeds every shard's records through the real aggregate handler.
    pub async fn aggregate_streams(&self, streams: &[ShardStream]) {
        for stream in streams {
            self.aggregate(&stream.shard_id, &stream.records).await;
        }
    }

    /// [`Deployment::streams_of`] the file, through the aggregate handler.
    pub async fn aggregate_file(&self, path: &Path) {
        self.aggregate_streams(&self.streams_of(path).await).await;
    }

    /// Feeds records of one shard through the real aggregate handler.
    pub async fn aggregate(&self, shard_id: &str, records: &[StreamRecord]) {
        self.aggregate_with(IngestSettings::default(), shard_id, records).await;
    }

    pub async fn aggregate_with(&self, settings: IngestSettings, shard_id: &str, records: &[StreamRecord]) {
        let function =
            AggregateFunction::new(Aggregator::new(DynamoStore::new(self.dynamodb.clone(), &self.table), settings), MetricsOutput::Off);
        for batch in records.chunks(500) {
            let response = function.handle(lambda_event(shard_id, batch), WallTime::now()).await;
            assert!(response.batch_item_failures.is_empty(), "the aggregate function failed a batch");
        }
    }

    /// A closer over this deployment's table and stream, indexing into `endpoint`.
    pub fn closer(&self, endpoint: &str, idle_timeout_ms: i64) -> TestCloser {
        self.closer_with_store(DynamoStore::new(self.dynamodb.clone(), &self.table), endpoint, idle_timeout_ms)
    }

    /// The same, over another store (one that misbehaves on purpose).
    pub fn closer_with_store<S: CloserStore>(
        &self,
        store: S,
        endpoint: &str,
        idle_timeout_ms: i64,
    ) -> Closer<S, KinesisShards, SearchSink> {
        let sink = SearchSink::new(SearchConfig {
            endpoint: endpoint.to_owned(),
            auth: SearchAuth::None,
            documents: self.documents.clone(),
            limits: BulkLimits { max_bytes: 256 * 1024, max_documents: 200 },
            gzip: true,
            tls_skip_verify: false,
            request_timeout: Duration::from_secs(10),
        })
        .expect("an HTTP client");
        Closer {
            store,
            shards: KinesisShards { client: self.kinesis.clone(), stream: self.stream.clone() },
            sink,
            settings: CloserSettings {
                window: WindowSpec::tumbling(600).unwrap(),
                documents: self.documents.clone(),
                idleness: Idleness::After { timeout_ms: idle_timeout_ms, advance_when_quiet: false },
                safety_margin_ms: 1_000,
                owner: unique_name("closer"),
                chunk_documents: 5000,
                retention_s: 48 * 3600,
                close_expired: false,
            },
        }
    }

    /// Every document of both indices on the bundled OpenSearch stand-in: `_index/_id` -> source.
    pub async fn indexed(&self) -> BTreeMap<String, Value> {
        indexed(opensearch_endpoint(), &self.documents).await
    }

    /// The documents the oracle's partials call for, as `_index/_id` -> (count, sum of durations).
    pub fn expected(&self, oracle: &Expected) -> BTreeMap<String, (u64, u64)> {
        expected_documents(&self.documents, oracle)
    }

    /// Indexed documents reduced to (count, sum), for comparison with [`Deployment::expected`].
    pub async fn indexed_counts(&self) -> BTreeMap<String, (u64, u64)> {
        indexed_counts(opensearch_endpoint(), &self.documents).await
    }
}

/// Every document of both indices at `endpoint`: `_index/_id` -> source.
pub async fn indexed(endpoint: &str, documents: &DocumentSettings) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for index in [&documents.pickup_index, &documents.duration_index] {
        all.extend(search_all(endpoint, index).await.into_iter().map(|(id, source)| (format!("{index}/{id}"), source)));
    }
    all
}

/// The documents the oracle's partials call for (10-minute tumbling windows,
/// at least 2 trips per cell), as `_index/_id` -> (count, sum of durations).
pub fn expected_documents(documents: &DocumentSettings, oracle: &Expected) -> BTreeMap<String, (u64, u64)> {
    let (pickups, durations) = (&documents.pickup_index, &documents.duration_index);
    let mut expected = BTreeMap::new();
    for ((pane, key), (count, sum)) in &oracle.partials {
        let parts: Vec<&str> = key.split('#').collect();
        let id = match parts.as_slice() {
            // Hot-spot documents carry no durations.
            ["pickups", cell] if *count >= 2 => {
                expected.insert(format!("{pickups}/pickups-{pane}-600s-{cell}"), (*count, 0));
                continue;
            }
            ["airport_cell", code, cell] if *count >= 2 => format!("{durations}/airport-{pane}-600s-{code}-{cell}"),
            ["airport", code] => format!("{durations}/airport-{pane}-600s-{code}"),
            _ => continue,
        };
        expected.insert(id, (*count, *sum));
    }
    expected
}

/// Indexed documents reduced to (count, sum), for comparison with [`expected_documents`].
pub async fn indexed_counts(endpoint: &str, documents: &DocumentSettings) -> BTreeMap<String, (u64, u64)> {
    indexed(endpoint, documents)
        .await
        .into_iter()
        .map(|(id, source)| {
            let count = source["pickup_count"].as_u64().or(source["trip_count"].as_u64()).expect("a count");
            (id, (count, source["sum_trip_duration"].as_u64().unwrap_or(0)))
        })
        .collect()
}

/// Asserts two maps are equal, printing only the differing entries.
pub fn assert_same<V: PartialEq + std::fmt::Debug>(actual: &BTreeMap<String, V>, expected: &BTreeMap<String, V>, what: &str) {
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| actual.get(*k) != Some(*v)).take(5).map(|(k, v)| (k, v, actual.get(k))).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(wrong.is_empty() && extra.is_empty(), "{what}: (key, expected, actual) {wrong:?}; unexpected keys {extra:?}");
    assert_eq!(actual.len(), expected.len(), "{what}");
}

/// Every document of an index (refreshed first): `_id` -> source.
pub async fn search_all(endpoint: &str, index: &str) -> BTreeMap<String, Value> {
    let http = reqwest::Client::new();
    let _ = http.post(format!("{endpoint}/{index}/_refresh")).send().await;
    let response = http
        .post(format!("{endpoint}/{index}/_search"))
        .header("content-type", "application/json")
        .body(r#"{"size":10000,"query":{"match_all":{}}}"#)
        .send()
        .await
        .expect("searching");
    if response.status() == 404 {
        return BTreeMap::new();
    }
    let body: Value = response.json().await.expect("a search answer");
    let hits = body["hits"]["hits"].as_array().cloned().unwrap_or_default();
    assert_eq!(body["hits"]["total"]["value"].as_u64(), Some(hits.len() as u64), "every hit fits in one page");
    hits.into_iter().map(|hit| (hit["_id"].as_str().unwrap().to_owned(), hit["_source"].clone())).collect()
}

/// A deadline far enough away for any test run.
pub fn far_deadline() -> WallTime {
    WallTime(WallTime::now().0 + 600_000)
}
