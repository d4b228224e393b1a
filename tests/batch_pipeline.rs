//! `taxi-pipeline batch` against the streaming pipeline (the real aggregate
//! handler and closer on the stand-ins) and against the oracle computed
//! straight from the CSV.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use taxi_core::batch::chunk::RowReason;
use taxi_core::event::InvalidReason;
use taxi_core::replay::trip::SkipReason;
use taxi_core::time::WallTime;
use taxi_integration_tests::kinesis::trip_events;
use taxi_integration_tests::oracle::{self, ExpectedDocument};
use taxi_integration_tests::pipeline::{assert_same, far_deadline, search_all, Deployment};
use taxi_integration_tests::standins::{opensearch_endpoint, unique_name};
use taxi_integration_tests::{fixture_path, sample_path};
use taxi_pipeline::args::{Cli, Command};
use taxi_pipeline::batch::engine::BatchInput;
use taxi_pipeline::batch::output::Output;
use taxi_pipeline::batch::{aggregate, batch_settings, BatchArgs, Summary};

fn batch_args(arguments: &[&str]) -> BatchArgs {
    let line = ["taxi-pipeline", "batch", "--quiet"].iter().chain(arguments);
    let Command::Batch(args) = <Cli as clap::Parser>::try_parse_from(line).expect("a valid command line").command else {
        unreachable!("a batch command line")
    };
    args
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("taxi-batch-test"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs a batch over `inputs` into NDJSON (the variables of this process are
/// not consulted) and reads the file back: `_index/_id` -> source.
async fn batch_documents(inputs: &[&Path], arguments: &[&str]) -> (Summary, BTreeMap<String, Value>) {
    let out = temp_path("documents.ndjson");
    let mut line: Vec<&str> = arguments.to_vec();
    for input in inputs {
        line.extend(["--input", input.to_str().unwrap()]);
    }
    let args = batch_args(&line);
    let settings = batch_settings(&args, |_| None, WallTime::now()).expect("valid settings");
    let input = BatchInput { paths: args.inputs.clone(), format: args.format, workers: 2 };
    let summary = aggregate(input, settings, Output::ndjson(&out).unwrap(), out.display().to_string(), false).await.expect("the batch");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 2, 0, "an action line and a source line per document");
    let mut documents = BTreeMap::new();
    for pair in lines.chunks(2) {
        let action: Value = serde_json::from_str(pair[0]).unwrap();
        let key = format!("{}/{}", action["index"]["_index"].as_str().unwrap(), action["index"]["_id"].as_str().unwrap());
        let previous = documents.insert(key.clone(), serde_json::from_str(pair[1]).unwrap());
        assert!(previous.is_none(), "{key} written twice");
    }
    assert_eq!(summary.delivered.documents as usize, documents.len());
    (summary, documents)
}

/// Every number as an f64: the search stand-in may give `1500.0` back as `1500`.
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

fn normalized(documents: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    documents.iter().map(|(id, source)| (id.clone(), numbers_as_f64(source))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writes_exactly_the_documents_the_pipeline_indexes() {
    // The streaming pipeline: the sample over 4 shards through the real
    // aggregate handler into DynamoDB Local, closed by the real closer into osmem-server.
    let deployment = Deployment::new("batch-sample").await;
    deployment.aggregate_file(&sample_path()).await;
    let report = deployment.closer(opensearch_endpoint(), 300_000).run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(report.error, None);
    let indexed = deployment.indexed().await;
    assert_eq!(indexed.len() as u64, report.documents_indexed);

    let indices = [&deployment.documents.pickup_index, &deployment.documents.duration_index];
    let (summary, batch) = batch_documents(&[&sample_path()], &["--pickup-index", indices[0], "--duration-index", indices[1]]).await;
    assert_eq!(summary.report.totals.windows, report.windows_closed, "the same windows");
    assert_same(&normalized(&batch), &normalized(&indexed), "batch documents (_index/_id -> source) against the pipeline's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_agrees_with_the_oracle_computed_from_the_csv() {
    for (size, slide) in [(600, 600), (1800, 600)] {
        let expected = oracle::expected(&sample_path(), slide, 6);
        let want: BTreeMap<String, ExpectedDocument> =
            oracle::expected_documents(&expected, slide, size, 2, ("pickup_count", "trip_duration"))
                .into_iter()
                // Hot-spot documents carry a count only.
                .map(|(id, d)| if id.contains("/pickups-") { (id, ExpectedDocument { sum_s: 0, ..d }) } else { (id, d) })
                .collect();
        let (size_text, slide_text) = (size.to_string(), slide.to_string());
        let (summary, documents) = batch_documents(&[&sample_path()], &["--window-size", &size_text, "--window-slide", &slide_text]).await;
        let got: BTreeMap<String, ExpectedDocument> = documents
            .iter()
            .map(|(id, source)| {
                let count = source["pickup_count"].as_u64().or(source["trip_count"].as_u64()).expect("a count");
                (id.clone(), ExpectedDocument { count, sum_s: source["sum_trip_duration"].as_u64().unwrap_or(0) })
            })
            .collect();
        assert_same(&got, &want, &format!("counts and sums per _id, {size} s windows sliding by {slide} s"));
        for source in documents.values().filter(|s| s["trip_count"].is_u64()) {
            let average = source["sum_trip_duration"].as_f64().unwrap() / source["trip_count"].as_f64().unwrap();
            assert!((source["avg_trip_duration"].as_f64().unwrap() - average).abs() < 1e-9, "trip-weighted average in {source}");
            assert_eq!(source["window_size_s"], size);
        }
        let totals = summary.report.totals;
        assert_eq!((totals.rows, totals.valid), (expected.rows, expected.valid_trips));
        // The producer skips bad durations before the area is looked at; the oracle looks at the area first.
        assert_eq!(
            totals.skipped.get(SkipReason::BadDuration) + totals.invalid.get(InvalidReason::OutsideArea),
            expected.bad_duration + expected.outside_area
        );
        assert_eq!(totals.rows, totals.valid + totals.skipped.total() + totals.invalid.total(), "every row counted once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_indexes_the_ndjson_documents_into_opensearch() {
    let name = unique_name("batch-backfill");
    let (pickups, durations) = (format!("pickup_count-{name}"), format!("trip_duration-{name}"));
    let indices = ["--pickup-index", pickups.as_str(), "--duration-index", durations.as_str()];
    let (_, written) = batch_documents(&[&fixture_path()], &indices).await;

    let fixture = fixture_path();
    let mut line = vec!["--input", fixture.to_str().unwrap(), "--es-endpoint", opensearch_endpoint()];
    line.extend(indices);
    for _ in 0..2 {
        taxi_pipeline::batch::run(batch_args(&line)).await.expect("the backfill");
    }
    let mut indexed = BTreeMap::new();
    for index in [&pickups, &durations] {
        indexed.extend(search_all(opensearch_endpoint(), index).await.into_iter().map(|(id, source)| (format!("{index}/{id}"), source)));
    }
    assert!(!written.is_empty());
    assert_same(&normalized(&indexed), &normalized(&written), "indexed twice, the documents of the NDJSON once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_bad_rows_give_the_same_documents_with_their_line_numbers() {
    let (_, clean) = batch_documents(&[&fixture_path()], &[]).await;

    // The fixture as trip events, one per line, with a broken line, a blank line and a watermark event among them.
    let mut lines: Vec<String> = trip_events(&fixture_path()).iter().map(|t| String::from_utf8(t.to_json()).unwrap()).collect();
    lines.insert(2, "{\"type\":\"trip\",\"pickup_datetime\":".into());
    lines.insert(9, String::new());
    lines.insert(19, r#"{"type":"watermark","watermark":"2015-01-10T05:30:00Z"}"#.into());
    let jsonl = temp_path("trips.jsonl");
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let (summary, documents) = batch_documents(&[&jsonl], &[]).await;
    assert_same(&documents, &clean, "JSON lines against CSV");
    assert_eq!(at_lines(&summary, SkipReason::BadJson), vec![3]);
    assert_eq!(at_lines(&summary, SkipReason::NotATrip), vec![20]);

    // The CSV with a short row and a bad time as lines 5 and 8, gzip.
    let text = std::fs::read_to_string(fixture_path()).unwrap();
    let mut rows: Vec<&str> = text.lines().collect();
    rows.insert(4, "2");
    rows.insert(7, "2,2015-01-10 00:00:00,later,1,1.0,-73.99,40.73,1,N,-73.98,40.74,1,5,0,0,0,0,0.3,6");
    let gz = temp_path("broken.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    encoder.write_all((rows.join("\n") + "\n").as_bytes()).unwrap();
    encoder.finish().unwrap();
    let (summary, documents) = batch_documents(&[&gz], &[]).await;
    assert_same(&documents, &clean, "a gzip CSV with two bad rows");
    assert_eq!(at_lines(&summary, SkipReason::ShortRow), vec![5]);
    assert_eq!(at_lines(&summary, SkipReason::BadValue), vec![8]);
    assert_eq!(summary.report.totals.rows, 1002);
}

fn at_lines(summary: &Summary, reason: SkipReason) -> Vec<u64> {
    summary.report.samples.iter().filter(|s| s.reason == RowReason::Skipped(reason)).map(|s| s.line).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_one_clear_error_and_writes_nothing() {
    let out = temp_path("never.ndjson");
    let sample = sample_path();
    let args = batch_args(&["--input", sample.to_str().unwrap(), "--input", "no/such/trips.csv.gz", "--output", out.to_str().unwrap()]);
    let error = taxi_pipeline::batch::run(args).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.starts_with("cannot open input no/such/trips.csv.gz: "), "{message}");
    assert!(!out.exists(), "no output before every input is known to be readable");
}
