//! `taxi-pipeline local` end to end, on the test stand-ins: the real producer,
//! the event source mapping emulator, the real handlers, and the documents
//! in OpenSearch checked exactly against the oracle computed from the CSV.

use std::path::Path;

use clap::Parser;
use taxi_core::documents::DocumentSettings;
use taxi_core::event::InvalidReason;
use taxi_core::time::WallTime;
use taxi_integration_tests::kinesis_read::read_all_shards;
use taxi_integration_tests::lambda_watch::{standin_env, LambdaWatch};
use taxi_integration_tests::oracle::{self, Expected, Rejected, Trip};
use taxi_integration_tests::pipeline::{assert_same, expected_documents, indexed_counts};
use taxi_integration_tests::standins::{dynamodb_endpoint, kinesis_client, kinesis_endpoint, opensearch_endpoint, unique_name};
use taxi_integration_tests::{fixture_path, sample_path};
use taxi_pipeline::args::{Cli, Command};
use taxi_pipeline::local::{run_local, LocalArgs, LocalSummary};

/// The command line of a local run on the test stand-ins, with names of its own.
fn local_args(input: &Path, name: &str, extra: &[&str]) -> (LocalArgs, DocumentSettings) {
    let documents = DocumentSettings {
        min_count: 2,
        pickup_index: format!("pickup_count-{name}"),
        duration_index: format!("trip_duration-{name}"),
        index_retention_days: None,
    };
    let mut line: Vec<String> = vec!["taxi-pipeline".into(), "local".into(), "--input".into(), input.display().to_string()];
    for (flag, value) in [
        ("--kinesis-endpoint", kinesis_endpoint().to_owned()),
        ("--dynamodb-endpoint", dynamodb_endpoint().to_owned()),
        ("--es-endpoint", opensearch_endpoint().to_owned()),
        ("--stream", name.to_owned()),
        ("--table", name.to_owned()),
        ("--set", format!("PICKUP_INDEX={}", documents.pickup_index)),
        ("--set", format!("DURATION_INDEX={}", documents.duration_index)),
        ("--close-interval", "1s".into()),
        ("--timeout", "8m".into()),
    ] {
        line.extend([flag.to_owned(), value]);
    }
    line.push("--quiet".into());
    if !extra.contains(&"--out") {
        line.push("--no-report".into());
    }
    line.extend(extra.iter().map(|s| s.to_string()));
    let Command::Local(args) = Cli::try_parse_from(line).expect("a valid command line").command else { panic!("the local command") };
    (args, documents)
}

/// Runs `local` (stream, table and indices named after `name`) and checks
/// every document and every count against the oracle.
async fn run_and_check(input: &Path, name: &str, extra: &[&str]) -> LocalSummary {
    let (args, documents) = local_args(input, name, extra);
    let summary = run_local(args).await.expect("the local run");
    let oracle: Expected = oracle::expected(input, 600, 6);
    let expected = expected_documents(&documents, &oracle);
    assert!(expected.len() > 50, "the input makes many documents");
    assert_same(&indexed_counts(opensearch_endpoint(), &documents).await, &expected, "indexed documents");

    // The counts add up: the producer skips what cannot be a trip, the function the rest.
    assert_eq!(summary.replay.rows, oracle.rows);
    let skipped: u64 = summary.replay.skipped.nonzero().map(|(_, n)| n).sum();
    assert_eq!(summary.aggregated.trips_aggregated, oracle.valid_trips);
    assert_eq!(skipped + summary.aggregated.invalid.total(), oracle.outside_area + oracle.bad_duration, "every other row is counted once");
    assert!(skipped >= oracle.bad_duration, "the producer skips every bad duration (and some rows outside the area too)");
    assert_eq!(summary.discarded_records, 0);
    assert_eq!(summary.closed.documents_indexed as usize, expected.len(), "each document indexed once");
    assert_eq!(summary.closed.windows_left_open, 0);
    summary
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fixture_end_to_end_equals_the_oracle() {
    let summary = run_and_check(&fixture_path(), &unique_name("local-fixture"), &[]).await;
    assert_eq!((summary.function_errors, summary.injected_errors), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_sample_end_to_end_equals_the_oracle_and_ends_with_both_pictures() {
    let out = std::env::temp_dir().join(unique_name("local-pictures"));
    let summary = run_and_check(&sample_path(), &unique_name("local-sample"), &["--out", &out.display().to_string()]).await;
    let paths: Vec<_> = summary.report.pictures.iter().map(|p| p.path.clone()).collect();
    assert_eq!(paths, vec![out.join("hot-spots.png"), out.join("airport-durations.png")], "{:?}", summary.report.skipped);
    for path in paths {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).expect("the picture")));
        let info = decoder.read_info().expect("a PNG").info().clone();
        assert!(info.width >= 1000 && info.height >= 600, "{}: {}x{}", path.display(), info.width, info.height);
    }
    std::fs::remove_dir_all(out).ok();
}

/// Bounded watermark mode, trips by dropoff (issue 17): the producer's final
/// watermark is honoured, so the run ends on its own with every window closed,
/// the last one included, instead of waiting for `--timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn bounded_mode_by_dropoff_ends_with_every_window_closed() {
    let summary = run_and_check(
        &sample_path(),
        &unique_name("local-bounded"),
        &["--set", "WATERMARK_MODE=bounded", "--set", "MAX_OUT_OF_ORDERNESS_SECONDS=60"],
    )
    .await;
    assert_eq!(summary.aggregated.dropped_late, 0);
    let last = summary.replay.writer.final_watermark.expect("a final watermark");
    assert!(summary.closed.watermark().is_some_and(|w| w >= last), "closed by the final watermark: {:?}", summary.closed.watermark);
}

/// Bounded mode, trips in the file's (pickup) order, with no watermark event
/// but the final one: a bound above the sample's disorder (dropoffs up to
/// 94 minutes behind the latest one sent) loses no trip, and the final
/// watermark closes the last windows.
#[tokio::test(flavor = "multi_thread")]
async fn bounded_mode_by_pickup_ends_with_every_window_closed() {
    let summary = run_and_check(
        &sample_path(),
        &unique_name("local-bounded-pickup"),
        &["--order", "input", "--set", "WATERMARK_MODE=bounded", "--set", "MAX_OUT_OF_ORDERNESS_SECONDS=6000"],
    )
    .await;
    assert_eq!((summary.aggregated.dropped_late, summary.aggregated.late), (0, 0));
    assert_eq!(summary.replay.writer.watermark_events, summary.shards as u64, "only the final watermark, one per shard");
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_errors_duplicate_deliveries_and_a_split_change_no_document() {
    let rows = oracle::expected(&sample_path(), 600, 6).rows;
    let half = (rows / 2).to_string();
    let summary = run_and_check(
        &sample_path(),
        &unique_name("local-faults"),
        &[
            "--batch-size",
            "100",
            "--fault-error-every",
            "3",
            "--fault-duplicate-deliveries",
            "--fault-split-after",
            &half,
            "--max-retry-attempts",
            "-1",
        ],
    )
    .await;
    assert_eq!(summary.shards, 6, "one of the 4 shards was split in two");
    assert!(summary.injected_errors >= 10, "errors were injected: {}", summary.injected_errors);
    assert!(summary.function_errors >= summary.injected_errors);
    assert!(summary.invocations >= 2 * 50, "every batch twice: {} invocations", summary.invocations);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_aggregate_binary_under_cargo_lambda_watch_gives_the_same_documents() {
    let name = unique_name("local-watch");
    let mut env = standin_env();
    env.push(("TABLE_NAME".into(), name.clone()));
    let watch = LambdaWatch::start(&env).unwrap_or_else(|e| panic!("{e}"));
    let summary = run_and_check(&fixture_path(), &name, &["--invoke-endpoint", watch.endpoint()]).await;
    assert!(summary.invocations > 0);
    // The binary did the work: its log has a line per batch (this process's handler was never built).
    let batches = watch.output().matches("batch processed").count() as u64;
    assert!(batches >= summary.invocations, "{batches} batches logged by the binary for {} invocations", summary.invocations);
}

/// The stack's own replay command, `--time-mode now --speedup 60`: every trip is
/// stamped at the wall time it is sent, so none is a future timestamp, the
/// watermark follows the clock, every window closes, and the documents are the
/// oracle's over the trips as they were stamped (read back from the stream).
#[tokio::test(flavor = "multi_thread")]
async fn a_live_replay_at_60x_loses_no_trip_and_closes_every_window() {
    let name = unique_name("local-live");
    let (args, documents) = local_args(&sample_path(), &name, &["--time-mode", "now", "--speedup", "60"]);
    let started = WallTime::now().as_event_time();
    let summary = run_local(args).await.expect("the local run");
    let ended = WallTime::now().as_event_time();
    assert_eq!(summary.aggregated.invalid.get(InvalidReason::FutureTimestamp), 0, "{:?}", summary.aggregated.invalid);
    assert_eq!(summary.closed.windows_left_open, 0);
    assert_eq!(summary.discarded_records, 0);

    let mut stamped = Expected::default();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for shard in read_all_shards(&kinesis_client(), &name).await {
        for data in shard.records {
            let event: serde_json::Value = serde_json::from_slice(&data).expect("a JSON event");
            if event["type"] != "trip" {
                continue;
            }
            let time =
                |field: &str| chrono::DateTime::parse_from_rfc3339(event[field].as_str().expect("a time")).expect("RFC 3339").timestamp();
            let at = |lat: &str, lon: &str| (event[lat].as_f64().expect("a latitude"), event[lon].as_f64().expect("a longitude"));
            let trip = Trip {
                pickup: time("pickup_datetime"),
                dropoff: time("dropoff_datetime"),
                pickup_at: at("pickup_lat", "pickup_lon"),
                dropoff_at: at("dropoff_lat", "dropoff_lon"),
            };
            (first, last) = (first.min(trip.dropoff), last.max(trip.dropoff));
            stamped.rows += 1;
            match oracle::add_trip(&mut stamped.partials, &trip, 600, 6) {
                Ok(()) => stamped.valid_trips += 1,
                Err(Rejected::OutsideArea) => stamped.outside_area += 1,
                Err(Rejected::BadDuration) => stamped.bad_duration += 1,
            }
        }
    }
    // Stamped on the wall clock of the run: the sample's 2.5 hours of dropoffs in about 2.5 minutes.
    assert!(started.0 <= first && last <= ended.0, "dropoffs {first}..{last} within the run {}..{}", started.0, ended.0);
    let historic = oracle::expected(&sample_path(), 600, 6);
    assert!(last - first >= 60, "paced at 60x, not sent at once: {} s", last - first);
    assert_eq!(stamped.rows, summary.replay.writer.acknowledged, "every trip sent is in the stream once");
    assert_eq!(stamped.valid_trips, historic.valid_trips, "re-stamping keeps every valid trip valid");
    assert_eq!(summary.aggregated.trips_aggregated, historic.valid_trips, "no trip lost");
    let expected = expected_documents(&documents, &stamped);
    assert!(expected.len() > 50, "the input makes many documents");
    assert_same(&indexed_counts(opensearch_endpoint(), &documents).await, &expected, "indexed documents");
}

/// Every window indexed, then pictures that fail (an endpoint refusing the
/// report's searches): a warning in the summary, not a failed run.
#[tokio::test(flavor = "multi_thread")]
async fn pictures_that_fail_after_every_window_is_indexed_are_a_warning() {
    let name = unique_name("local-no-search");
    let out = std::env::temp_dir().join(&name);
    let proxy = taxi_integration_tests::fault_proxy::start_without_search(opensearch_endpoint()).await;
    let (mut args, documents) = local_args(&fixture_path(), &name, &["--out", &out.display().to_string()]);
    args.es_endpoint = Some(proxy.endpoint.clone());
    let summary = run_local(args).await.expect("the run succeeds");
    assert_eq!(summary.closed.windows_left_open, 0);
    assert!(summary.report.pictures.is_empty());
    assert!(summary.report.skipped.iter().any(|s| s.starts_with("the pictures failed")), "{:?}", summary.report.skipped);
    let expected = expected_documents(&documents, &oracle::expected(&fixture_path(), 600, 6));
    assert_same(&indexed_counts(opensearch_endpoint(), &documents).await, &expected, "indexed documents");
    std::fs::remove_dir_all(out).ok();
}

/// `verify` agrees with the index after a local run, and reports what changes
/// behind its back: a document deleted (missing), one edited (different), one
/// added in a window the input has none of (extra).
#[tokio::test(flavor = "multi_thread")]
async fn verify_agrees_after_a_local_run_and_finds_an_index_changed_behind_its_back() {
    let name = unique_name("local-verify");
    let (args, documents) = local_args(&fixture_path(), &name, &["--set", "INDEX_REPLICAS=0"]);
    run_local(args).await.expect("the local run");
    // The closer's index templates carry the replica count (a one-node cluster needs 0);
    // the fixture has hot spots but no airport trip, so only the pickup index exists.
    let index = &documents.pickup_index;
    let settings: serde_json::Value =
        reqwest::get(format!("{}/{index}/_settings", opensearch_endpoint())).await.unwrap().json().await.unwrap();
    let replicas = &settings[index.as_str()]["settings"]["index"]["number_of_replicas"];
    assert!(replicas == "0" || replicas == 0, "{index}: {settings}");
    let verify_args = verify_args(&documents);
    let no_env = |_: &str| None;
    let clean = taxi_pipeline::verify::verify(&verify_args, no_env).await.expect("verify runs");
    assert!(clean.agrees(), "{:?}", clean.lines());
    let expected = expected_documents(&documents, &oracle::expected(&fixture_path(), 600, 6));
    assert_eq!(clean.matching, expected.len(), "every document compared");
    assert!(clean.windows >= 2);

    let http = reqwest::Client::new();
    let es = opensearch_endpoint();
    let pickups = &documents.pickup_index;
    let ids: Vec<&String> = expected.keys().filter(|k| k.starts_with(&format!("{pickups}/"))).take(2).collect();
    let (deleted, edited) = (ids[0].split_once('/').unwrap().1, ids[1].split_once('/').unwrap().1);
    let status = http.delete(format!("{es}/{pickups}/_doc/{deleted}")).send().await.unwrap().status();
    assert!(status.is_success(), "deleting: {status}");
    let mut source = taxi_integration_tests::pipeline::search_all(es, pickups).await.remove(edited).expect("the edited document");
    source["pickup_count"] = serde_json::json!(source["pickup_count"].as_u64().unwrap() + 1);
    let mut extra = source.clone();
    extra["window_start"] = serde_json::json!("2015-01-01T00:00:00Z");
    for (id, body) in [(edited, &source), ("behind-its-back", &extra)] {
        let status = http.put(format!("{es}/{pickups}/_doc/{id}")).json(body).send().await.unwrap().status();
        assert!(status.is_success(), "writing {id}: {status}");
    }
    let changed = taxi_pipeline::verify::verify(&verify_args, no_env).await.expect("verify runs");
    assert!(!changed.agrees());
    assert_eq!(changed.missing, vec![ids[0].clone()]);
    assert_eq!(changed.extra, vec![format!("{pickups}/behind-its-back")]);
    assert_eq!(changed.different.len(), 1);
    assert_eq!(&changed.different[0].0, ids[1]);
    assert!(changed.different[0].1.iter().any(|d| d.starts_with("pickup_count: ")), "{:?}", changed.different);
    assert_eq!(changed.matching, expected.len() - 2);
    assert!(changed.lines()[0].contains("1 missing, 1 extra, 1 different"), "{:?}", changed.lines());
}

/// `taxi-pipeline verify` of the fixture against the indices of `documents`.
fn verify_args(documents: &DocumentSettings) -> taxi_pipeline::batch::BatchArgs {
    let line = [
        "taxi-pipeline",
        "verify",
        "--input",
        &fixture_path().display().to_string(),
        "--es-endpoint",
        opensearch_endpoint(),
        "--pickup-index",
        &documents.pickup_index,
        "--duration-index",
        &documents.duration_index,
        "--quiet",
    ]
    .map(str::to_owned);
    let Command::Verify(args) = Cli::try_parse_from(line).expect("a valid command line").command else { panic!("verify") };
    args
}

/// With `INDEX_RETENTION_DAYS`, documents go to daily indices (the UTC day of
/// their window start) behind the readers' alias, which holds exactly the
/// oracle's documents, and `verify` agrees through it.
#[tokio::test(flavor = "multi_thread")]
async fn daily_indices_hold_the_oracles_documents_behind_their_alias() {
    let name = unique_name("local-daily");
    let (args, documents) = local_args(&fixture_path(), &name, &["--set", "INDEX_RETENTION_DAYS=30"]);
    run_local(args).await.expect("the local run");
    let expected = expected_documents(&documents, &oracle::expected(&fixture_path(), 600, 6));
    assert_same(&indexed_counts(opensearch_endpoint(), &documents).await, &expected, "documents read through the alias");

    let pickups = &documents.pickup_index;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/{pickups}/_search", opensearch_endpoint()))
        .json(&serde_json::json!({"size": 10_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hits = answer["hits"]["hits"].as_array().expect("hits");
    assert!(!hits.is_empty());
    for hit in hits {
        let day = hit["_source"]["window_start"].as_str().unwrap()[..10].replace('-', ".");
        assert_eq!(hit["_index"].as_str(), Some(format!("{pickups}-{day}").as_str()), "{hit}");
    }
    let verified = taxi_pipeline::verify::verify(&verify_args(&documents), |_: &str| None).await.expect("verify runs");
    assert!(verified.agrees(), "{:?}", verified.lines());
    assert_eq!(verified.matching, expected.len());
}
