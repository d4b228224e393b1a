//! Decode + validate + pre-aggregate (`plan_batch`) on 10,000-record batches
//! of real trip JSON from the bundled sample, on one core; plus allocations
//! per record, counted by a global allocator wrapper.
//!
//! cargo bench -p taxi-core --bench preaggregate

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use taxi_core::event::decode;
use taxi_core::ingest::{plan_batch, IngestSettings, InputRecord};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::time::WallTime;
use taxi_core::tlc::TlcColumns;
use taxi_core::watermark::CloserProgress;

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const BATCH: usize = 10_000;

/// The first 10,000 rows of the real sample, as the producer encodes them.
fn batch() -> Vec<InputRecord> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/yellow_tripdata_2015-01-10_0000-0100.csv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("the bundled sample")).read_to_string(&mut text).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let columns = TlcColumns::from_header(reader.headers().unwrap()).unwrap();
    reader
        .records()
        .take(BATCH)
        .enumerate()
        .map(|(i, row)| InputRecord {
            seq: SeqNum::parse(&format!("49{:054}", 1_000 + i * 3)).unwrap(),
            data: columns.trip_event(&row.unwrap(), i as u64).unwrap().to_json(),
        })
        .collect()
}

fn preaggregate(c: &mut Criterion) {
    let records = batch();
    let settings = IngestSettings::default();
    let shard = ShardId("shardId-000000000000".into());
    let (state, progress, now) = (ShardState::default(), CloserProgress::default(), WallTime::now());
    let plan = || plan_batch(&settings, &shard, &records, &state, &progress, now);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let p = plan();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    println!(
        "plan_batch over {BATCH} real trips ({} bytes of JSON each on average): {} partials, {:.3} allocations per record",
        bytes / BATCH,
        p.partials(),
        allocations as f64 / BATCH as f64
    );
    drop(p);

    let mut group = c.benchmark_group("aggregate_batch_10k");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode", |b| b.iter(|| records.iter().filter(|r| decode(black_box(&r.data)).is_ok()).count()));
    group.bench_function("decode_validate_preaggregate", |b| b.iter(|| black_box(plan()).partials()));
    group.finish();
}

criterion_group!(benches, preaggregate);
criterion_main!(benches);
