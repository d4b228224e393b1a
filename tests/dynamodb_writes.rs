//! DynamoDB capacity per 1,000 records of the real sample over 4 shards, the
//! first layout against today's in one run, measured from DynamoDB Local's
//! own ReturnConsumedCapacity:
//! - the first layout (re-enacted below): one conditional UpdateItem per
//!   (pane, metric, key) per batch, then the shard state's PutItem;
//! - batch items: per batch one packed item (every touched pane's delta or
//!   compaction) and any markers with BatchWriteItem, then the shard state
//!   with one conditional PutItem (a shard's first state in a transaction
//!   with the closer's registration). DynamoDB Local reports flat figures for
//!   batch writes and transactions, so the bill is computed from the items'
//!   sizes by DynamoDB's documented rule (1 unit per started KB of each item,
//!   2 in a transaction).
//!
//! At Lambda batch sizes 100, 1,000 and the largest whose event fits Lambda's
//! 6 MB payload, with the defaults (10-minute tumbling windows, geohash 6),
//! plus sliding 30/10-minute windows; then one closer pass over what the
//! packed layout wrote: read units per closed window and per pass.
//!
//! cargo bench -p taxi-integration-tests --bench dynamodb_writes (under taxi-standins)

use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use futures::stream::{self, StreamExt};
use taxi_aws::dynamo::{ensure_table, DynamoStore};
use taxi_core::ingest::{plan_batch, Aggregator, IngestSettings, InputRecord};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::time::WallTime;
use taxi_core::watermark::CloserProgress;
use taxi_core::window::WindowSpec;
use taxi_integration_tests::kinesis::{lambda_event_json, shard_streams, trip_events, ShardStream, StreamRecord};
use taxi_integration_tests::pipeline::{far_deadline, Deployment, SHARDS};
use taxi_integration_tests::sample_path;
use taxi_integration_tests::standins::{dynamodb_client, opensearch_endpoint, unique_name};

/// Lambda's synchronous invocation payload limit, which caps an event source mapping's batch
/// (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); Kinesis batches are at most 10,000 records.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
const MAX_BATCH_SIZE: usize = 10_000;

/// The largest batch of the first shard whose Lambda event fits the payload limit.
fn largest_batch(stream: &ShardStream) -> usize {
    let fits = |n: usize| lambda_event_json(&stream.shard_id, &stream.records[..n]).to_string().len() <= MAX_PAYLOAD_BYTES;
    let (mut low, mut high) = (1, MAX_BATCH_SIZE.min(stream.records.len()));
    while low < high {
        let mid = (low + high).div_ceil(2);
        if fits(mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low
}

fn input(records: &[StreamRecord]) -> Vec<InputRecord> {
    records.iter().map(|r| InputRecord { seq: SeqNum::parse(&r.seq).unwrap(), data: r.data.clone() }).collect()
}

struct Run {
    batches: u64,
    write_units: f64,
    /// As DynamoDB Local reports them (the state and closer reads, compactions' reads); the first layout's are not counted.
    read_units: f64,
    seconds: f64,
}

/// The first layout's writes for one batch: each partial behind its sequence fence, 16 in flight, then the state.
async fn first_layout_batch(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shard: &ShardId,
    records: &[InputRecord],
    now: WallTime,
) -> f64 {
    let plan = plan_batch(&IngestSettings::default(), shard, records, &ShardState::default(), &CloserProgress::default(), now);
    let (first, last) = (records[0].seq.to_padded(), records[records.len() - 1].seq.to_padded());
    let writes = plan.panes().iter().flat_map(|(pane, partials)| partials.iter().map(move |(key, value)| (*pane, *key, *value)));
    let writes: Vec<_> = writes
        .map(|(pane, key, value)| {
            client
                .update_item()
                .table_name(table)
                .key("pk", AttributeValue::S(format!("P#{}#{shard}", pane.0)))
                .key("sk", AttributeValue::S(key.to_string()))
                .update_expression("ADD #count :count, sum_s :sum_s SET seq = :last, expires_at = :expires_at")
                .condition_expression("attribute_not_exists(seq) OR seq < :first")
                .expression_attribute_names("#count", "count")
                .expression_attribute_values(":count", AttributeValue::N(value.count.to_string()))
                .expression_attribute_values(":sum_s", AttributeValue::N(value.sum_s.to_string()))
                .expression_attribute_values(":first", AttributeValue::S(first.clone()))
                .expression_attribute_values(":last", AttributeValue::S(last.clone()))
                .expression_attribute_values(":expires_at", AttributeValue::N("2000000000".into()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
        })
        .collect();
    let results: Vec<_> = stream::iter(writes).buffer_unordered(16).collect().await;
    let mut units: f64 =
        results.into_iter().map(|r| r.expect("a partial write").consumed_capacity().and_then(|c| c.capacity_units()).unwrap_or(0.0)).sum();
    let mut state = client
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(format!("S#{shard}")))
        .item("sk", AttributeValue::S("STATE".into()))
        .item("applied_seq", AttributeValue::S(last))
        .item("open_panes", AttributeValue::Ns(plan.panes().keys().map(|p| p.0.to_string()).collect()));
    for counter in
        ["records", "trips_aggregated", "watermark_events", "late", "dropped_late", "watermark", "updated_at", "top_event_time_1"]
    {
        state = state.item(counter, AttributeValue::N("1420848000".into()));
    }
    let out = state.return_consumed_capacity(ReturnConsumedCapacity::Total).send().await.expect("the state write");
    units += out.consumed_capacity().and_then(|c| c.capacity_units()).unwrap_or(0.0);
    units
}

async fn first_layout(streams: &[ShardStream], batch_size: usize) -> Run {
    let client = dynamodb_client();
    let table = unique_name("bench-first-layout");
    ensure_table(&client, &table).await.expect("table");
    let (mut batches, mut write_units) = (0, 0.0);
    let started = Instant::now();
    for stream in streams {
        let shard = ShardId(stream.shard_id.clone());
        for chunk in stream.records.chunks(batch_size) {
            write_units += first_layout_batch(&client, &table, &shard, &input(chunk), WallTime::now()).await;
            batches += 1;
        }
    }
    Run { batches, write_units, read_units: 0.0, seconds: started.elapsed().as_secs_f64() }
}

async fn packed_layout(
    deployment: &Deployment,
    streams: &[ShardStream],
    batch_size: usize,
    settings: IngestSettings,
) -> (Run, DynamoStore) {
    let store = DynamoStore::new(deployment.dynamodb.clone(), &deployment.table);
    let aggregator = Aggregator::new(store.clone(), settings);
    let mut batches = 0;
    let started = Instant::now();
    for (stream, shard) in streams.iter().zip(deployment.shards().await) {
        for chunk in stream.records.chunks(batch_size) {
            let report = aggregator.process_batch(&shard.id, &input(chunk), WallTime::now()).await;
            assert_eq!(report.retry_from, None, "no faults here");
            assert_eq!(report.metrics.refused_commits, 0, "one writer per shard, no closer running");
            batches += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let reported = store.consumed().units().1;
    println!("  (DynamoDB Local reported {reported:.0} write units for {batches} batches; the table shows the bill by DynamoDB's documented rule)");
    (Run { batches, write_units: store.consumed().billed_write_units(), read_units: store.consumed().units().0, seconds }, store)
}

#[tokio::main]
async fn main() {
    let streams = shard_streams(&trip_events(&sample_path()), SHARDS, 300);
    let total: usize = streams.iter().map(|s| s.records.len()).sum();
    let largest = largest_batch(&streams[0]);
    println!("{total} records of the real sample over {SHARDS} shards (trips plus watermark events); the largest batch within 6 MB: {largest} records");
    println!();
    println!("| windows | batch size | batches | first layout: WCU per 1,000 records | batch items: WCU per 1,000 records | ratio | batch items: RCU per 1,000 records | first layout: ms per batch | batch items: ms per batch |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per_k = |units: f64| units * 1000.0 / total as f64;
    let sliding = IngestSettings { window: WindowSpec::new(1800, 600).unwrap(), ..IngestSettings::default() };
    let runs = [
        ("10 min tumbling", 100, IngestSettings::default()),
        ("10 min tumbling", 1_000, IngestSettings::default()),
        ("10 min tumbling", largest, IngestSettings::default()),
        ("30/10 min sliding", 1_000, sliding),
    ];
    let mut closer_input = None;
    for (windows, batch_size, settings) in runs {
        let first = if settings.window == IngestSettings::default().window { Some(first_layout(&streams, batch_size).await) } else { None };
        let deployment = Deployment::new("bench-packed").await;
        let (packed, store) = packed_layout(&deployment, &streams, batch_size, settings).await;
        let ms = |run: &Run| run.seconds * 1000.0 / run.batches as f64;
        let (first_units, first_ms, ratio) = match &first {
            Some(first) => (
                format!("{:.1}", per_k(first.write_units)),
                format!("{:.1}", ms(first)),
                format!("{:.1}x", first.write_units / packed.write_units),
            ),
            None => ("(same as tumbling)".into(), "".into(), "".into()),
        };
        println!(
            "| {windows} | {batch_size} | {} | {first_units} | {:.2} | {ratio} | {:.2} | {first_ms} | {:.1} |",
            packed.batches,
            per_k(packed.write_units),
            per_k(packed.read_units),
            ms(&packed)
        );
        if batch_size == 1_000 && closer_input.is_none() {
            closer_input = Some((deployment, store));
        }
    }

    // One closer pass over what the batch items layout wrote at batch size 1,000.
    let (deployment, store) = closer_input.expect("the 1,000-record run");
    let before = store.consumed().units().0;
    let closer = deployment.closer_with_store(store.clone(), opensearch_endpoint(), 300_000);
    let report = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    let read = store.consumed().units().0 - before;
    println!();
    println!(
        "closer, one pass over the whole sample: {} windows closed, {:.1} read units in all, {:.2} per closed window (strongly consistent reads)",
        report.windows_closed,
        read,
        read / report.windows_closed.max(1) as f64
    );
    let before = store.consumed().units().0;
    closer.run_once(&WallTime::now, far_deadline()).await;
    println!("closer, a pass with nothing to close: {:.1} read units", store.consumed().units().0 - before);
}
