//! DynamoDB writes and consumed write capacity per 1,000 records of the real
//! sample, at Lambda batch sizes 100, 1,000 and 10,000, measured with
//! ReturnConsumedCapacity against DynamoDB Local (4 shards, default settings).
//!
//! cargo bench -p taxi-integration-tests --bench dynamodb_writes

use std::time::Instant;

use taxi_aws::dynamo::{ensure_table, DynamoStore};
use taxi_core::ingest::{Aggregator, IngestSettings, InputRecord};
use taxi_core::seq::SeqNum;
use taxi_core::shard::ShardId;
use taxi_core::time::WallTime;
use taxi_integration_tests::kinesis::{shard_streams, trip_events};
use taxi_integration_tests::sample_path;
use taxi_integration_tests::standins::{dynamodb_client, unique_name};

#[tokio::main]
async fn main() {
    let streams = shard_streams(&trip_events(&sample_path()), 4, 300);
    let total: usize = streams.iter().map(|s| s.records.len()).sum();
    println!("{total} records of the real sample over 4 shards (trips plus watermark events)");
    println!("| batch size | batches | partial writes | fenced | state writes | writes per 1,000 records | WCU per 1,000 records | records/s (DynamoDB Local) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for batch_size in [100, 1_000, 10_000] {
        let client = dynamodb_client();
        let table = unique_name("bench-writes");
        ensure_table(&client, &table).await.expect("table");
        let aggregator = Aggregator::new(DynamoStore::new(client, &table), IngestSettings::default());
        let (mut batches, mut partial, mut fenced, mut state, mut markers, mut wcu) = (0u64, 0u64, 0u64, 0u64, 0u64, 0f64);
        let started = Instant::now();
        for stream in &streams {
            let shard = ShardId(stream.shard_id.clone());
            for chunk in stream.records.chunks(batch_size) {
                let records: Vec<InputRecord> =
                    chunk.iter().map(|r| InputRecord { seq: SeqNum::parse(&r.seq).unwrap(), data: r.data.clone() }).collect();
                let report = aggregator.process_batch(&shard, &records, WallTime::now()).await;
                assert_eq!(report.retry_from, None, "no faults here");
                batches += 1;
                partial += report.metrics.partial_writes;
                fenced += report.metrics.fenced_writes;
                state += report.metrics.state_writes;
                markers += report.metrics.marker_writes;
                wcu += report.metrics.consumed_capacity_units;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let writes = partial + state + markers;
        let per_k = |n: f64| n * 1000.0 / total as f64;
        println!(
            "| {batch_size} | {batches} | {partial} | {fenced} | {state} | {:.1} | {:.1} | {:.0} |",
            per_k(writes as f64),
            per_k(wcu),
            total as f64 / elapsed
        );
    }
}
