//! The real function binaries under `cargo lambda watch`, against DynamoDB
//! Local, the Kinesis stand-in and osmem-server, invoked with every file in `events/`
//! as Lambda would invoke them. The expected outcome is computed here from the
//! event files themselves (decoded, validated and aggregated with none of the
//! pipeline's code), then compared with the functions' answers, the table and
//! the indexed documents.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use serde_json::Value;
use taxi_integration_tests::lambda_watch::{standin_env, LambdaWatch};
use taxi_integration_tests::oracle::{add_trip, Partials, Rejected, Trip};
use taxi_integration_tests::pipeline::{assert_same, search_all};
use taxi_integration_tests::standins::{self, unique_name};
use taxi_integration_tests::tables::merged_partials;
use taxi_integration_tests::workspace_root;

const WINDOW_S: i64 = 600;
const SHARD: &str = "shardId-000000000000";
/// The order the test invokes them in: trips, then more trips with watermark
/// events, then malformed records (all on one shard), then the closer.
const KINESIS_EVENTS: [&str; 3] = ["kinesis-trips.json", "kinesis-watermarks.json", "kinesis-malformed.json"];
const SCHEDULED_EVENTS: [&str; 1] = ["scheduled.json"];

fn events_dir() -> PathBuf {
    workspace_root().join("events")
}

fn read_event(name: &str) -> Value {
    let path = events_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

/// What the three Kinesis batches must leave behind, from DESIGN §3 directly.
#[derive(Debug, Default)]
struct Expected {
    records: u64,
    trips: u64,
    watermark_events: u64,
    /// reason -> records; malformed records name their reason in the partition key.
    invalid: BTreeMap<String, u64>,
    partials: Partials,
    last_seq: String,
    last_watermark: i64,
}

fn rfc3339(value: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time string")).expect("an RFC 3339 time").timestamp()
}

fn expected_from_events() -> Expected {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Expected::default();
    for name in KINESIS_EVENTS {
        for record in read_event(name)["Records"].as_array().expect("Records") {
            out.records += 1;
            let kinesis = &record["kinesis"];
            out.last_seq = kinesis["sequenceNumber"].as_str().expect("sequenceNumber").to_owned();
            assert_eq!(record["eventID"].as_str().unwrap(), format!("{SHARD}:{}", out.last_seq), "{name}: one shard, eventID = shard:seq");
            let data = b64.decode(kinesis["data"].as_str().expect("data")).expect("base64");
            if let Some(reason) = kinesis["partitionKey"].as_str().and_then(|k| k.strip_prefix("malformed-")) {
                *out.invalid.entry(reason.to_owned()).or_default() += 1;
                continue;
            }
            let event: Value =
                serde_json::from_slice(&data).unwrap_or_else(|e| panic!("{name}: a record that is not marked malformed: {e}"));
            match event["type"].as_str() {
                Some("watermark") => {
                    out.watermark_events += 1;
                    out.last_watermark = out.last_watermark.max(rfc3339(&event["watermark"]));
                }
                Some("trip") => {
                    let (pickup, dropoff) = (rfc3339(&event["pickup_datetime"]), rfc3339(&event["dropoff_datetime"]));
                    let coordinate = |field: &str| event[field].as_f64().expect("a coordinate");
                    let trip = Trip {
                        pickup,
                        dropoff,
                        pickup_at: (coordinate("pickup_lat"), coordinate("pickup_lon")),
                        dropoff_at: (coordinate("dropoff_lat"), coordinate("dropoff_lon")),
                    };
                    match add_trip(&mut out.partials, &trip, WINDOW_S, 6) {
                        Ok(()) => out.trips += 1,
                        Err(Rejected::OutsideArea) => *out.invalid.entry("outside_area".into()).or_default() += 1,
                        Err(Rejected::BadDuration) => *out.invalid.entry("bad_duration".into()).or_default() += 1,
                    }
                }
                other => panic!("{name}: unexpected event type {other:?}"),
            }
        }
    }
    out
}

/// The documents of every window the watermark has passed: `_id` -> (count, sum of durations).
fn expected_documents(partials: &Partials, watermark: i64) -> BTreeMap<String, (u64, u64)> {
    let mut documents = BTreeMap::new();
    for ((window, key), &(count, sum)) in partials {
        if window + WINDOW_S > watermark {
            continue;
        }
        let prefix = |metric: &str| format!("{metric}-{window}-{WINDOW_S}s");
        let parts: Vec<&str> = key.split('#').collect();
        let document = match parts.as_slice() {
            ["pickups", cell] if count >= 2 => Some((format!("{}-{cell}", prefix("pickups")), (count, 0))),
            ["airport_cell", code, cell] if count >= 2 => Some((format!("{}-{code}-{cell}", prefix("airport")), (count, sum))),
            ["airport", code] => Some((format!("{}-{code}", prefix("airport")), (count, sum))),
            _ => None,
        };
        documents.extend(document);
    }
    documents
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().unwrap_or_else(|_| panic!("{name} = {n}")),
        None => 0,
        other => panic!("{name} is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_file_through_the_real_binaries_under_cargo_lambda_watch() {
    // Every file in events/ is exercised here: a new one must be added to the lists above.
    let mut files: Vec<String> = std::fs::read_dir(events_dir())
        .expect("events/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let mut known: Vec<String> = KINESIS_EVENTS.iter().chain(SCHEDULED_EVENTS.iter()).map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(files, known, "every event file is invoked by this test");

    let expected = expected_from_events();
    assert!(expected.trips > 250 && expected.watermark_events >= 2, "the events hold real trips and watermarks: {expected:?}");
    assert_eq!(expected.invalid.len(), 10, "a malformed record for every reason: {:?}", expected.invalid);

    // The stand-ins: a table, a one-shard stream (the closer lists its shards), indices of our own.
    let dynamodb = standins::dynamodb_client();
    let table = unique_name("watch");
    taxi_aws::dynamo::ensure_table(&dynamodb, &table).await.expect("table");
    let kinesis = standins::kinesis_client();
    let stream = unique_name("watch");
    kinesis.create_stream().stream_name(&stream).shard_count(1).send().await.expect("stream");
    for _ in 0..100 {
        let summary = kinesis.describe_stream_summary().stream_name(&stream).send().await.expect("describe");
        if summary.stream_description_summary().map(|s| s.stream_status().as_str() == "ACTIVE").unwrap_or(false) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let search = standins::opensearch_endpoint().to_owned();
    let (pickup_index, duration_index) = (unique_name("watch-pickups"), unique_name("watch-durations"));

    let mut env = standin_env();
    for (key, value) in [
        ("TABLE_NAME", table.as_str()),
        ("STREAM_NAME", stream.as_str()),
        ("ES_ENDPOINT", search.as_str()),
        ("ES_AUTH", "none"),
        ("PICKUP_INDEX", pickup_index.as_str()),
        ("DURATION_INDEX", duration_index.as_str()),
        ("KEEP_RUNNING_SECONDS", "0"),
    ] {
        env.push((key.to_owned(), value.to_owned()));
    }
    let watch = tokio::task::spawn_blocking(move || LambdaWatch::start(&env)).await.expect("join").unwrap_or_else(|e| panic!("{e}"));

    for name in KINESIS_EVENTS {
        let answer = watch.invoke_file("aggregate", &events_dir().join(name)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            answer["batchItemFailures"],
            serde_json::json!([]),
            "{name}: a good batch (malformed records included) asks for no retry"
        );
    }

    // The table: exactly the partials of the valid trips, and the shard's account.
    assert_same(
        &merged_partials(&dynamodb, &table).await.into_iter().map(|((pane, sk), v)| (format!("{pane}#{sk}"), v)).collect(),
        &expected.partials.iter().map(|((pane, sk), v)| (format!("{pane}#{sk}"), *v)).collect(),
        "partials after the three batches",
    );
    let state = dynamodb
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("S#{SHARD}")))
        .key("sk", AttributeValue::S("STATE".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("shard state")
        .item
        .expect("the shard state exists");
    assert_eq!(number(&state, "records"), expected.records, "records");
    assert_eq!(number(&state, "trips_aggregated"), expected.trips, "trips aggregated");
    assert_eq!(number(&state, "watermark_events"), expected.watermark_events, "watermark events");
    for (reason, count) in &expected.invalid {
        assert_eq!(number(&state, &format!("invalid_{reason}")), *count, "records counted as {reason}");
    }
    assert_eq!(number(&state, "watermark") as i64, expected.last_watermark, "the shard's watermark");
    match state.get("applied_seq") {
        Some(AttributeValue::S(seq)) => assert_eq!(seq.trim_start_matches('0'), expected.last_seq.trim_start_matches('0'), "applied_seq"),
        other => panic!("applied_seq is {other:?}"),
    }
    // The EMF line of the malformed batch counts each reason.
    let output = watch.output();
    for reason in ["empty", "not_utf8", "unparsable", "wrong_type", "missing_field", "unknown_type", "bad_timestamp", "future_timestamp"] {
        assert!(output.contains(&format!("\"Invalid_{reason}\":1")), "an EMF count for {reason} in the function output:\n{output}");
    }

    // The closer: one pass, over the shard Kinesis lists and its state in the table.
    for name in SCHEDULED_EVENTS {
        let answer = watch.invoke_file("close-windows", &events_dir().join(name)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let documents = expected_documents(&expected.partials, expected.last_watermark);
        let windows: std::collections::BTreeSet<i64> =
            expected.partials.keys().map(|(pane, _)| *pane).filter(|w| w + WINDOW_S <= expected.last_watermark).collect();
        assert_eq!(windows.len(), 3, "the final watermark passes three windows of trips");
        let final_watermark =
            chrono::DateTime::from_timestamp(expected.last_watermark, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        assert_eq!((&answer["error"], answer["passes"].as_u64()), (&Value::Null, Some(1)), "{answer}");
        assert_eq!(answer["watermark"], final_watermark, "the global watermark is the shard's: {answer}");
        let mut indexed = search_all(&search, &pickup_index).await;
        indexed.extend(search_all(&search, &duration_index).await);
        // Every window closed (cargo lambda watch's fixed 1970 deadline is taken as none given), and exactly its documents indexed.
        assert_eq!(answer["windows_closed"], windows.len(), "{answer}");
        assert_eq!(answer["documents_indexed"], documents.len(), "{answer}");
        assert_eq!(answer["closed_through"], final_watermark, "{answer}");
        let counts = indexed
            .into_iter()
            .map(|(id, source)| {
                let count = source["pickup_count"].as_u64().or(source["trip_count"].as_u64()).expect("a count");
                (id, (count, source["sum_trip_duration"].as_u64().unwrap_or(0)))
            })
            .collect();
        assert_same(&counts, &documents, "the documents of every closed window");
    }
}
