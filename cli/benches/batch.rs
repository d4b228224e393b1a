//! Batch mode figures (docs/BENCHMARKS.md), on the bundled sample tiled in
//! event time with replay's tiling (copy k shifted by k spans) into gzip CSV
//! files of about 1 M and 4 M rows (made once, kept under target/batch-bench/):
//! 1. the serial ceiling: inflating and cutting chunks alone;
//! 2. rows per second end to end (gzip CSV in, NDJSON out) with 1 worker and
//!    with one per core, in this process;
//! 3. peak memory (VmHWM) of the real binary at both lengths, each in a
//!    process of its own.

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::NaiveDateTime;
use flate2::write::GzEncoder;
use taxi_core::replay::schedule::Tiling;
use taxi_core::time::{EventTime, WallTime};
use taxi_pipeline::args::{Cli, Command as CliCommand, InputFormat};
use taxi_pipeline::batch::batch_settings;
use taxi_pipeline::batch::engine::{run_batch, BatchInput, BatchProgress};
use taxi_pipeline::batch::output::Output;
use taxi_pipeline::batch::read::read_chunks;
use taxi_pipeline::input::{open, read_trips};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

fn sample() -> PathBuf {
    workspace_root().join("data/yellow_tripdata_2015-01-10_0000-0100.csv.gz")
}

/// The sample tiled `copies` times, as `replay --repeat` tiles it: the span is
/// the earliest to the latest dropoff of the trips replay would send, plus 1 s.
fn tiled(copies: u32) -> PathBuf {
    let dir = workspace_root().join("target/batch-bench");
    let path = dir.join(format!("sample-x{copies}.csv.gz"));
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).expect("a directory under target/");
    let mut range: Option<(EventTime, EventTime)> = None;
    read_trips(&sample(), InputFormat::Auto, |_, row| {
        if let Ok(trip) = row {
            range = Some(range.map_or((trip.dropoff, trip.dropoff), |(lo, hi)| (lo.min(trip.dropoff), hi.max(trip.dropoff))));
        }
        ControlFlow::Continue(())
    })
    .expect("reading the sample");
    let (lo, hi) = range.expect("trips in the sample");
    let tiling = Tiling::new(lo, hi);
    let lines: Vec<String> = open(&sample()).expect("the sample").lines().collect::<Result<_, _>>().expect("text");
    let partial = path.with_extension("partial");
    let mut out = GzEncoder::new(BufWriter::new(File::create(&partial).expect("a temp file")), flate2::Compression::default());
    writeln!(out, "{}", lines[0]).unwrap();
    // TLC times are New York local; the sample is in January, and so are 125
    // copies of its span, with no clock change: a local shift is a UTC shift.
    let shift = |text: &str, seconds: i64| match NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        Ok(t) => (t + chrono::Duration::seconds(seconds)).format("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => text.to_owned(),
    };
    for copy in 0..copies {
        let seconds = tiling.shift(copy);
        for line in &lines[1..] {
            let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
            for field in &mut fields[1..3] {
                *field = shift(field, seconds);
            }
            writeln!(out, "{}", fields.join(",")).unwrap();
        }
    }
    out.finish().expect("gzip").flush().unwrap();
    std::fs::rename(&partial, &path).unwrap();
    path
}

fn inflate_only(path: &Path) {
    let bytes = AtomicU64::new(0);
    let started = Instant::now();
    read_chunks(&[path.to_owned()], InputFormat::Auto, |n| _ = bytes.fetch_add(n as u64, Ordering::Relaxed), || None, |_| true)
        .expect("reading");
    let seconds = started.elapsed().as_secs_f64();
    let mb = bytes.load(Ordering::Relaxed) as f64 / 1e6;
    println!("inflate + cut chunks only, one thread: {mb:.0} MB of text in {seconds:.2} s, {:.0} MB/s", mb / seconds);
}

fn end_to_end(path: &Path, workers: usize) {
    let cli = <Cli as clap::Parser>::try_parse_from(["taxi-pipeline", "batch", "--input", "x"]).expect("arguments");
    let CliCommand::Batch(args) = cli.command else { unreachable!("a batch command line") };
    let settings = batch_settings(&args, |_| None, WallTime::now()).expect("default settings");
    let out = std::env::temp_dir().join(format!("taxi-batch-bench-{}.ndjson", std::process::id()));
    let mut output = Output::ndjson(&out).expect("a temp file");
    let input = BatchInput { paths: vec![path.to_owned()], format: InputFormat::Auto, workers };
    let report = run_batch(&input, settings, &BatchProgress::default(), |documents| output.write(documents)).expect("the batch");
    let delivered = output.finish().expect("flushing");
    let _ = std::fs::remove_file(&out);
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "end to end, {workers} worker(s): {} rows in {seconds:.2} s, {:.0} rows/s ({} windows, {} documents, at most {} panes held)",
        report.totals.rows,
        report.totals.rows as f64 / seconds,
        report.totals.windows,
        delivered.documents,
        report.peak_open_panes,
    );
}

fn peak_memory(path: &Path) {
    let out = std::env::temp_dir().join(format!("taxi-batch-bench-{}.ndjson", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_taxi-pipeline"))
        .args(["batch", "--quiet", "--input"])
        .arg(path)
        .arg("--output")
        .arg(&out)
        .env("RUST_LOG", "error")
        .output()
        .expect("running taxi-pipeline batch");
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("binary on {}: {}", path.file_name().unwrap().to_string_lossy(), stdout.lines().next().unwrap_or("(no summary)"));
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run the figures only for the former.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (short, long) = (tiled(31), tiled(123));
    inflate_only(&long);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    for workers in [1, cores] {
        end_to_end(&long, workers);
    }
    end_to_end(&short, cores);
    peak_memory(&short);
    peak_memory(&long);
}
