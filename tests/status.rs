//! `taxi-pipeline status` against the stand-ins: a deployment whose one shard
//! holds the global watermark back (its verdict, by how much, its last
//! report, the windows left open), then the same shard caught up; and a
//! whole `taxi-pipeline local` run, after which everything is closed.

use std::collections::BTreeSet;

use clap::Parser;
use taxi_core::closing::closable_through;
use taxi_core::event::{watermark_event_json, TripEvent};
use taxi_core::time::{EventTime, WallTime};
use taxi_core::window::WindowSpec;
use taxi_integration_tests::fixture_path;
use taxi_integration_tests::kinesis::StreamRecord;
use taxi_integration_tests::oracle::{self, Trip};
use taxi_integration_tests::pipeline::{far_deadline, Deployment, SHARDS};
use taxi_integration_tests::standins::{dynamodb_endpoint, kinesis_endpoint, opensearch_endpoint, unique_name};
use taxi_pipeline::args::{Cli, Command};
use taxi_pipeline::status::{status, Status, StatusArgs};

/// `taxi-pipeline status` on the test stand-ins, as a user would type it.
fn status_args(table: &str, stream: &str, extra: &[&str]) -> StatusArgs {
    let line = ["taxi-pipeline", "status", "--table", table, "--stream", stream, "--dynamodb-endpoint", dynamodb_endpoint()]
        .into_iter()
        .chain(["--kinesis-endpoint", kinesis_endpoint()])
        .chain(extra.iter().copied());
    let Command::Status(args) = Cli::try_parse_from(line).expect("a valid command line").command else { panic!("status") };
    args
}

fn time(text: &str) -> EventTime {
    EventTime::parse_rfc3339(text).expect("an RFC 3339 time")
}

/// The panes (pane = window: 10-minute tumbling windows) the oracle's rules give these trips data in.
fn panes_of<'a>(trips: impl Iterator<Item = &'a TripEvent>) -> BTreeSet<i64> {
    let mut partials = oracle::Partials::default();
    for t in trips {
        let trip = Trip {
            pickup: time(&t.pickup_datetime).0,
            dropoff: time(&t.dropoff_datetime).0,
            pickup_at: (t.pickup_lat, t.pickup_lon),
            dropoff_at: (t.dropoff_lat, t.dropoff_lon),
        };
        let _ = oracle::add_trip(&mut partials, &trip, 600, 6);
    }
    partials.keys().map(|(pane, _)| *pane).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_names_the_shard_that_holds_the_watermark_back_then_sees_it_catch_up() {
    let deployment = Deployment::new("status-held").await;
    let streams = deployment.streams_of(&fixture_path()).await;
    let held = &streams[1];
    // The held-back shard applies its first half and a watermark at its last dropoff
    // (its records are in dropoff order), sequenced between two of its records.
    let trip_at: Vec<usize> = (0..held.records.len()).filter(|i| held.records[*i].partition_key != "watermark").collect();
    let half = trip_at[trip_at.len() / 2];
    let last_fed: TripEvent = serde_json::from_slice(&held.records[trip_at[trip_at.len() / 2 - 1]].data).expect("a trip");
    let promised = time(&last_fed.dropoff_datetime);
    let mut first_part = held.records[..half].to_vec();
    first_part.push(StreamRecord {
        seq: format!("49{:03}{:051}", 1, 1_000 + (half - 1) * 7 + 3),
        partition_key: "watermark".into(),
        data: watermark_event_json(promised),
    });
    for (i, stream) in streams.iter().enumerate() {
        let records = if i == 1 { &first_part[..] } else { &stream.records[..] };
        deployment.aggregate(&stream.shard_id, records).await;
    }
    let closer = deployment.closer(opensearch_endpoint(), 3_600_000);
    let pass = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(pass.error, None);
    let closed_through = closable_through(&WindowSpec::tumbling(600).unwrap(), promised);
    assert_eq!(pass.closed_through, Some(closed_through));

    // Nine minutes later, nothing has moved (the producer-mode rules: every shard counts).
    let indices =
        [format!("PICKUP_INDEX={}", deployment.documents.pickup_index), format!("DURATION_INDEX={}", deployment.documents.duration_index)];
    let args = status_args(&deployment.table, &deployment.stream, &["--set", &indices[0], "--set", &indices[1]]);
    let later = WallTime(WallTime::now().0 + 9 * 60_000);
    let seen = status(&args, |_| None, later).await.expect("status");
    let others = streams.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, s)| s).collect::<Vec<_>>();
    let closing: EventTime = others
        .iter()
        .flat_map(|s| s.records.iter())
        .filter(|r| r.partition_key == "watermark")
        .map(|r| time(serde_json::from_slice::<serde_json::Value>(&r.data).unwrap()["watermark"].as_str().unwrap()))
        .max()
        .expect("the closing watermark");
    let holder = seen.holding_back.clone().expect("a shard holds the watermark back");
    assert_eq!(holder.shard, held.shard_id);
    assert_eq!(holder.watermark, Some(promised.to_rfc3339()));
    assert_eq!(holder.behind_s, Some(closing.0 - promised.0), "behind the next shard by exactly the watermarks' difference");
    let ago = holder.last_report_s_ago.expect("it reported");
    assert!((540..600).contains(&ago), "reported 9 minutes before `later`: {ago} s");
    let behind = taxi_pipeline::status::span(closing.0 - promised.0);
    assert_eq!(
        seen.headline,
        format!("global watermark held back by {}: {behind} behind the others, last report 9 min ago", held.shard_id)
    );
    assert_eq!(seen.global_watermark, Some(promised.to_rfc3339()));
    assert_eq!(seen.recorded_watermark, Some(promised.to_rfc3339()), "the closer acted on the same watermark");
    assert_eq!(seen.shards.len(), SHARDS);
    assert!(seen.shards.iter().all(|s| s.verdict == "live"), "{:?}", seen.shards);
    let held_row = seen.shards.iter().find(|s| s.shard == held.shard_id).unwrap();
    assert_eq!(held_row.applied_seq.as_deref(), Some(first_part.last().unwrap().seq.as_str()));
    // The windows open: every window with data the aggregated trips give after closed_through.
    let fed = others
        .iter()
        .flat_map(|s| s.records.iter())
        .chain(first_part.iter())
        .filter_map(|r| serde_json::from_slice::<TripEvent>(&r.data).ok())
        .collect::<Vec<_>>();
    let open: Vec<i64> = panes_of(fed.iter()).into_iter().filter(|p| *p >= closed_through.0).collect();
    assert!(!open.is_empty());
    assert_eq!(seen.windows.open, open.len());
    assert_eq!(seen.windows.oldest_open, Some(EventTime(open[0]).to_rfc3339()));
    assert_eq!((seen.windows.ready_to_close, seen.windows.to_reemit, seen.dead_letters), (0, 0, 0));
    assert_eq!(seen.windows.closed_through, Some(closed_through.to_rfc3339()));
    let summed: u64 = seen.shards.iter().map(|s| s.trips_aggregated).sum();
    assert_eq!(summed as usize, fed.iter().filter(|t| panes_of(std::iter::once(*t)).len() == 1).count(), "every valid trip fed");
    let table = seen.lines();
    assert_eq!(table[0], seen.headline);
    assert!(table.iter().any(|l| l.starts_with(&held.shard_id) && l.contains("live") && l.contains("9 min ago")), "{table:#?}");
    let json: Status = serde_json::from_str(&serde_json::to_string(&seen).unwrap()).expect("the JSON is a Status");
    assert_eq!(json, seen);

    // It catches up: the rest of its records, a pass, and nothing holds back any more.
    deployment.aggregate(&held.shard_id, &held.records[half..]).await;
    let pass = closer.run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(pass.error, None);
    let now = status(&args, |_| None, WallTime::now()).await.expect("status");
    assert!(now.headline.starts_with(&format!("up to date: global watermark {} (", closing.to_rfc3339())), "{}", now.headline);
    assert_eq!(now.holding_back.and_then(|h| h.behind_s), Some(0), "every shard at the closing watermark");
    assert_eq!((now.windows.open, now.windows.ready_to_close), (0, 0));
    assert_eq!(now.windows.closed_through, Some(closable_through(&WindowSpec::tumbling(600).unwrap(), closing).to_rfc3339()));
}

/// After a whole local run: every shard live at the final watermark, nothing open, every trip counted.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_local_run_status_says_up_to_date() {
    let name = unique_name("status-local");
    let line = [
        "taxi-pipeline",
        "local",
        "--input",
        &fixture_path().display().to_string(),
        "--kinesis-endpoint",
        kinesis_endpoint(),
        "--dynamodb-endpoint",
        dynamodb_endpoint(),
        "--es-endpoint",
        opensearch_endpoint(),
        "--stream",
        &name,
        "--table",
        &name,
        "--set",
        &format!("PICKUP_INDEX=pickup_count-{name}"),
        "--set",
        &format!("DURATION_INDEX=trip_duration-{name}"),
        "--close-interval",
        "1s",
        "--quiet",
        "--no-report",
        "--no-dashboard",
    ]
    .map(str::to_owned);
    let Command::Local(local) = Cli::try_parse_from(line).expect("a valid command line").command else { panic!("local") };
    let summary = taxi_pipeline::local::run_local(local).await.expect("the local run");
    let seen = status(&status_args(&name, &name, &["--json"]), |_| None, WallTime::now()).await.expect("status");
    let last = summary.replay.writer.final_watermark.expect("a final watermark");
    assert!(seen.headline.starts_with("up to date: "), "{}", seen.headline);
    assert_eq!(seen.global_watermark, Some(last.to_rfc3339()));
    assert_eq!(seen.shards.len(), summary.shards);
    assert!(seen.shards.iter().all(|s| s.verdict == "live" && s.watermark == Some(last.to_rfc3339())), "{:?}", seen.shards);
    assert_eq!(seen.shards.iter().map(|s| s.trips_aggregated).sum::<u64>(), oracle::expected(&fixture_path(), 600, 6).valid_trips);
    assert_eq!((seen.windows.open, seen.windows.ready_to_close, seen.dead_letters), (0, 0, 0));
    assert!(seen.event_time_lag_s.is_some_and(|lag| lag > 365 * 86_400), "a replay of 2015: years behind the wall clock");
}
