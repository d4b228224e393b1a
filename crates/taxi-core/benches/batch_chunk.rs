//! Batch mode's per-row work on one core: reading, judging and
//! pre-aggregating the bundled sample's 32,615 CSV rows as one chunk
//! (`aggregate_chunk`), the part of `taxi-pipeline batch` that runs on every core.
//!
//! cargo bench -p taxi-core --bench batch_chunk

use std::hint::black_box;
use std::io::Read;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use taxi_core::batch::chunk::{aggregate_chunk, ChunkFormat};
use taxi_core::ingest::IngestSettings;
use taxi_core::time::EventTime;
use taxi_core::tlc::{NewYorkClock, TlcColumns};

fn bench(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/yellow_tripdata_2015-01-10_0000-0100.csv.gz");
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("the bundled sample")).read_to_end(&mut text).unwrap();
    let header_end = text.iter().position(|b| *b == b'\n').expect("a header line");
    let columns = TlcColumns::from_header(csv::Reader::from_reader(&text[..=header_end]).headers().unwrap()).unwrap();
    let rows = &text[header_end + 1..];
    let settings = IngestSettings::default();
    let count =
        aggregate_chunk(rows, ChunkFormat::Csv(&columns), &settings, EventTime(i64::MAX), &mut NewYorkClock::default(), |_| false).rows;

    let mut group = c.benchmark_group("batch_chunk");
    group.throughput(Throughput::Elements(count));
    group.bench_function("aggregate_chunk, sample CSV", |b| {
        let mut clock = NewYorkClock::default();
        b.iter(|| aggregate_chunk(black_box(rows), ChunkFormat::Csv(&columns), &settings, EventTime(i64::MAX), &mut clock, |_| false))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
