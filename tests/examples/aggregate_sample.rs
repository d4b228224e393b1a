//! The main job until the full local pipeline lands: the bundled real sample
//! (or `--input FILE`) replayed as Kinesis batches over 4 shards through the
//! real aggregate handler into DynamoDB Local, then read back and summarised
//! per 10-minute window.
//!
//! cargo run --release -p taxi-integration-tests --example aggregate_sample [-- --input FILE]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use taxi_aws::aggregate_function::{AggregateFunction, MetricsOutput};
use taxi_aws::dynamo::{ensure_table, DynamoStore};
use taxi_core::event::InvalidReason;
use taxi_core::ingest::{Aggregator, IngestSettings};
use taxi_core::shard::{Counters, ShardId};
use taxi_core::store::PartialStore;
use taxi_core::time::{EventTime, WallTime};
use taxi_integration_tests::kinesis::{lambda_event, shard_streams, trip_events};
use taxi_integration_tests::sample_path;
use taxi_integration_tests::standins::{dynamodb_client, dynamodb_endpoint, unique_name};
use taxi_integration_tests::tables::merged_partials;

const SHARDS: usize = 4;
const BATCH_SIZE: usize = 100;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let input = match args.iter().position(|a| a == "--input") {
        Some(i) => PathBuf::from(args.get(i + 1).expect("--input needs a file")),
        None => sample_path(),
    };
    if !input.is_file() {
        eprintln!("error: input file {} does not exist", input.display());
        std::process::exit(2);
    }
    println!("DynamoDB Local at {}", dynamodb_endpoint());
    let client = dynamodb_client();
    let table = unique_name("taxi-demo");
    ensure_table(&client, &table).await.expect("creating the table");
    let settings = IngestSettings::default();
    let function = AggregateFunction::new(Aggregator::new(DynamoStore::new(client.clone(), &table), settings), MetricsOutput::Off);

    let streams = shard_streams(&trip_events(&input), SHARDS, 300);
    let records: usize = streams.iter().map(|s| s.records.len()).sum();
    println!("replaying {records} records of {} over {SHARDS} shards in Lambda batches of {BATCH_SIZE}", input.display());
    let started = Instant::now();
    for stream in &streams {
        for batch in stream.records.chunks(BATCH_SIZE) {
            let response = function.handle(lambda_event(&stream.shard_id, batch), WallTime::now()).await;
            assert!(response.batch_item_failures.is_empty(), "DynamoDB Local failed a batch");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let mut totals = Counters::default();
    for stream in &streams {
        let state = function.aggregator().store().load_shard_state(&ShardId(stream.shard_id.clone())).await.unwrap().unwrap_or_default();
        let watermark = state.watermark.watermark.map_or("none".into(), EventTime::to_rfc3339);
        println!("  {}: {} records, watermark {watermark}", stream.shard_id, state.counters.records);
        totals.add(&state.counters);
    }
    println!(
        "aggregated {} trips; invalid: {}; {:.1} s, {:.0} records/s",
        totals.trips_aggregated,
        InvalidReason::ALL
            .iter()
            .filter(|r| totals.invalid.get(**r) > 0)
            .map(|r| format!("{} {}", totals.invalid.get(*r), r))
            .collect::<Vec<_>>()
            .join(", "),
        elapsed,
        records as f64 / elapsed
    );

    // Per 10-minute window (tumbling: one pane per window), merged over shards.
    let mut windows: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for ((pane, key), value) in merged_partials(&client, &table).await {
        windows.entry(pane).or_default().push((key, value));
    }
    println!("\n{:<22} {:>6}  {:<34} {:>18} {:>18}", "window (UTC)", "trips", "busiest pickup cells", "JFK trips / avg", "LGA trips / avg");
    for (start, keys) in &windows {
        let mut cells: Vec<_> = keys.iter().filter_map(|(k, (n, _))| k.strip_prefix("pickups#").map(|c| (*n, c))).collect();
        let trips: u64 = cells.iter().map(|(n, _)| n).sum();
        if trips < 20 {
            continue;
        }
        cells.sort_unstable_by(|a, b| b.cmp(a));
        let top: Vec<String> = cells.iter().take(3).map(|(n, c)| format!("{c} {n}")).collect();
        let airport = |code: &str| {
            keys.iter()
                .find(|(k, _)| k == &format!("airport#{code}"))
                .map_or("-".into(), |(_, (n, s))| format!("{n} / {:.1} min", *s as f64 / *n as f64 / 60.0))
        };
        println!(
            "{:<22} {:>6}  {:<34} {:>18} {:>18}",
            EventTime(*start).to_rfc3339(),
            trips,
            top.join(", "),
            airport("JFK"),
            airport("LGA")
        );
    }
    println!("\n(windows with fewer than 20 trips are not shown)");
}
