//! Producer figures (docs/BENCHMARKS.md):
//! 1. CPU cost of reading + encoding: the bundled sample tiled to about a
//!    million trips through the reading side (gunzip, CSV, New York time to
//!    UTC, reorder buffer, JSON), the writer replaced by a sink that drops chunks.
//! 2. Trips per second into kinesalite at `--speedup 0`: the sample into a
//!    4-shard stream, started here on a free port.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taxi_aws::kinesis_writer::{KinesisStream, WriterConfig};
use taxi_core::replay::schedule::TimeMode;
use taxi_pipeline::args::{InputFormat, SendOrder};
use taxi_pipeline::progress::Progress;
use taxi_pipeline::replay::{feed, replay, FeedOptions, FeedStats};
use taxi_standins::StandIn;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

fn options(repeat: u32) -> FeedOptions {
    FeedOptions {
        input: workspace_root().join("data/yellow_tripdata_2015-01-10_0000-0100.csv.gz"),
        format: InputFormat::Auto,
        speedup: 0.0,
        time_mode: TimeMode::Original,
        repeat,
        horizon_s: 4 * 3600,
        order: SendOrder::Dropoff,
    }
}

fn reading_and_encoding() {
    // 31 copies of 32,615 rows: 1.01 M rows; the tiling pre-scan reads one more copy.
    let options = options(31);
    let stats = FeedStats::default();
    let (mut trips, mut bytes) = (0u64, 0usize);
    let started = Instant::now();
    feed(&options, &stats, |chunk| {
        trips += chunk.len() as u64;
        bytes += chunk.iter().map(|r| r.entry.data.len()).sum::<usize>();
        ControlFlow::Continue(())
    })
    .expect("reading the sample");
    let elapsed = started.elapsed();
    let per_million = elapsed.as_secs_f64() * 1e6 / trips as f64;
    println!(
        "reading + encoding: {trips} trips ({:.0} bytes of JSON each) in {:.2} s on one thread: {per_million:.2} s per million trips, {:.0} trips/s",
        bytes as f64 / trips as f64,
        elapsed.as_secs_f64(),
        trips as f64 / elapsed.as_secs_f64()
    );
}

async fn into_kinesalite() {
    let kinesis = StandIn::Kinesalite.start(&workspace_root()).expect("kinesalite (run `make standins`)");
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .endpoint_url(kinesis.endpoint())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new("local", "local", None, None, "bench"))
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(config);
    for max_in_flight in [1, 8] {
        let stream = format!("bench-{max_in_flight}");
        client.create_stream().stream_name(&stream).shard_count(4).send().await.expect("create stream");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let target = Arc::new(KinesisStream::new(client.clone(), &stream));
        let config = WriterConfig { max_in_flight, ..WriterConfig::default() };
        let summary = replay(options(1), target, config, Progress::hidden()).await.expect("replay");
        println!(
            "into kinesalite, 4 shards, --speedup 0, --max-in-flight {max_in_flight}: {} trips in {:.1} s, {:.0} trips/s ({} watermark events)",
            summary.writer.acknowledged,
            summary.elapsed.as_secs_f64(),
            summary.writer.acknowledged as f64 / summary.elapsed.as_secs_f64(),
            summary.writer.watermark_events,
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run the figures only for the former.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    reading_and_encoding();
    tokio::runtime::Runtime::new().expect("a runtime").block_on(into_kinesalite());
}
