//! The closer, measured on the stand-ins (kinesalite, DynamoDB Local,
//! osmem-server):
//! - close latency: from the moment the closing watermark is durable on every
//!   shard until the last window's documents are searchable, with the
//!   function's own re-check loop (1 s interval);
//! - documents per second: one pass closing the whole real sample (reading
//!   partials from DynamoDB, merging, bulk indexing), and bulk indexing alone.
//!
//! cargo bench -p taxi-integration-tests --bench close_latency

use std::time::{Duration, Instant};

use taxi_aws::close_windows_function::{close_windows, Repeat};
use taxi_core::closer::DocumentSink;
use taxi_core::time::WallTime;
use taxi_integration_tests::kinesis::{shard_streams, trip_events};
use taxi_integration_tests::pipeline::{far_deadline, search_all, Deployment, SHARDS};
use taxi_integration_tests::standins::opensearch_endpoint;
use taxi_integration_tests::{fixture_path, sample_path};

const IDLE_TIMEOUT_MS: i64 = 300_000;

async fn deployment_with(
    path: &std::path::Path,
    hold_back_closing_watermark: bool,
) -> (Deployment, Vec<taxi_integration_tests::kinesis::ShardStream>) {
    let deployment = Deployment::new("bench-close").await;
    let mut streams = shard_streams(&trip_events(path), SHARDS, 300);
    for (stream, shard) in streams.iter_mut().zip(deployment.shards().await) {
        stream.shard_id = shard.id.to_string();
        let upto = stream.records.len() - usize::from(hold_back_closing_watermark);
        deployment.aggregate(&stream.shard_id, &stream.records[..upto]).await;
    }
    (deployment, streams)
}

#[tokio::main]
async fn main() {
    // Close latency, three times.
    let mut latencies = Vec::new();
    for _ in 0..3 {
        let (deployment, streams) = deployment_with(&fixture_path(), true).await;
        let closer = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
        // Everything but the last window is closed before the measurement.
        closer.run_once(&WallTime::now, far_deadline()).await;
        let before = deployment.indexed().await.len();
        let repeat = Repeat { recheck_interval: Duration::from_secs(1), keep_running: Duration::from_secs(60) };
        let measure = async {
            let started = Instant::now();
            for stream in &streams {
                deployment.aggregate(&stream.shard_id, &stream.records[stream.records.len() - 1..]).await;
            }
            let durable = started.elapsed();
            let docs = &deployment.documents;
            while search_all(opensearch_endpoint(), &docs.pickup_index).await.len()
                + search_all(opensearch_endpoint(), &docs.duration_index).await.len()
                <= before
            {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            started.elapsed() - durable
        };
        // The function's re-check loop runs beside the measurement, in this task.
        tokio::select! {
            latency = measure => latencies.push(latency),
            _ = close_windows(&closer, far_deadline(), repeat, None) => panic!("the last windows never appeared"),
        }
    }
    let ms: Vec<u128> = latencies.iter().map(Duration::as_millis).collect();
    println!("close latency (watermark durable on every shard -> last window searchable, re-check every 1 s): {ms:?} ms");

    // Documents per second.
    let (deployment, _) = deployment_with(&sample_path(), false).await;
    let closer = deployment.closer(opensearch_endpoint(), IDLE_TIMEOUT_MS);
    let started = Instant::now();
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.error, None);
    println!(
        "one pass over the real sample: {} windows, {} documents in {:.2} s = {:.0} documents/s (partials read from DynamoDB Local, merged, bulk-indexed)",
        report.windows_closed,
        report.documents_indexed,
        elapsed,
        report.documents_indexed as f64 / elapsed
    );
    let documents: Vec<_> = {
        let indexed = deployment.indexed().await;
        indexed
            .into_iter()
            .map(|(key, source)| {
                let (index, id) = key.split_once('/').unwrap();
                taxi_core::documents::Document { index: format!("{index}-again"), id: id.to_owned(), source, version: 1 }
            })
            .collect()
    };
    let started = Instant::now();
    let indexed = closer.sink.index(&documents, far_deadline()).await.expect("indexing");
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "bulk indexing alone: {} documents in {:.2} s = {:.0} documents/s (chunks of 200, gzip)",
        indexed.indexed,
        elapsed,
        indexed.indexed as f64 / elapsed
    );
}
