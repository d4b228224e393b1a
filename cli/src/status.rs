//! `taxi-pipeline status`: the answer to "why is my dashboard not updating".
//! It reads the table and the stream as the close-windows function does and
//! takes the closer's own decision ([`taxi_core::closer::decide`]: the same
//! verdicts, the quiet rule, the exclusions), read only, then says in one
//! line what holds the windows back: a shard that has not reported, a shard
//! behind the others, windows the watermark has passed that nobody closed,
//! dead letters. Below that line, per shard: its verdict, watermark, last
//! report and applied sequence; the windows open and how far they are closed.
//! `--json` prints the same as a [`Status`] for scripts.

use std::collections::BTreeSet;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use taxi_aws::config::{standin_dynamodb_client, standin_kinesis_client};
use taxi_aws::dynamo::DynamoStore;
use taxi_aws::kinesis::{list_shards, KinesisShards};
use taxi_core::closer::{decide, CloserState, CloserStore, Decision, StoredMarker};
use taxi_core::closing::{windows_to_close, Idleness, ShardVerdict};
use taxi_core::config::EnvReader;
use taxi_core::documents::DocumentSettings;
use taxi_core::shard::{ShardId, StreamShard};
use taxi_core::time::{EventTime, WallTime};
use taxi_core::window::WindowSpec;

use crate::dashboard::progress::TableProgress;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The pipeline's DynamoDB table (the stack's `TableName` output).
    #[arg(long, env = "TABLE_NAME")]
    pub table: String,
    /// The Kinesis stream (the stack's `StreamName` output).
    #[arg(long, env = "STREAM_NAME")]
    pub stream: String,
    /// AWS region (default: the SDK's, from AWS_REGION or the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// Read this DynamoDB endpoint (DynamoDB Local, as `local --dynamodb-endpoint`) instead of AWS's.
    #[arg(long)]
    pub dynamodb_endpoint: Option<String>,
    /// Read this Kinesis endpoint (kinesalite, as `local --kinesis-endpoint`) instead of AWS's.
    #[arg(long)]
    pub kinesis_endpoint: Option<String>,
    /// A close-windows variable the verdicts follow (WATERMARK_MODE, IDLE_SHARD_TIMEOUT_SECONDS,
    /// ADVANCE_WHEN_QUIET, WINDOW_SIZE_SECONDS, WINDOW_SLIDE_SECONDS, PICKUP_INDEX, DURATION_INDEX),
    /// over the environment's; the stack's `StatusCommand` output sets them as the function has them.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::local::name_value)]
    pub settings: Vec<(String, String)>,
    /// Print the status as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The closer's rules, as the close-windows function reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub window: WindowSpec,
    pub idleness: Idleness,
    pub documents: DocumentSettings,
}

impl Rules {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Rules> {
        let env = EnvReader::new(lookup);
        Ok(Rules { window: env.window_spec()?, idleness: env.idleness()?, documents: env.document_settings()? })
    }
}

/// What the table and the stream held when `status` read them.
#[derive(Clone, Debug)]
pub struct Observed {
    pub listed: Vec<StreamShard>,
    pub closer: CloserState,
    pub decision: Decision,
    pub markers: Vec<StoredMarker>,
    pub dead_letters: u64,
}

/// The status, for people (`lines`) and scripts (`--json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// One line: what holds the dashboard back, or that nothing does.
    pub headline: String,
    pub checked_at: String,
    pub table: String,
    pub stream: String,
    pub rules: RulesSeen,
    /// As the closer would decide it now (RFC 3339); none: no window may close.
    pub global_watermark: Option<String>,
    /// Wall clock less the global watermark (the `WatermarkLag` metric).
    pub event_time_lag_s: Option<i64>,
    /// The watermark the closer last acted on.
    pub recorded_watermark: Option<String>,
    pub holding_back: Option<HoldingBack>,
    pub windows: WindowsSeen,
    pub dead_letters: u64,
    pub shards: Vec<ShardSeen>,
}

/// The rules the verdicts were taken by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesSeen {
    pub window_size_s: i64,
    pub window_slide_s: i64,
    /// `producer` (a silent shard is stuck, never idle) or `bounded`.
    pub watermark_mode: String,
    pub idle_timeout_s: Option<i64>,
    pub advance_when_quiet: bool,
}

/// The shard with the lowest watermark among those that count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingBack {
    pub shard: String,
    pub verdict: String,
    /// What it holds the global watermark at (for an awaited child: its parents').
    pub watermark: Option<String>,
    /// Event time between it and the next shard that counts: how far the
    /// global watermark would move if it caught up.
    pub behind_s: Option<i64>,
    pub last_report_s_ago: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsSeen {
    /// Windows with data not closed yet.
    pub open: usize,
    pub oldest_open: Option<String>,
    pub newest_open: Option<String>,
    /// Open windows the global watermark has passed: the next pass closes them.
    pub ready_to_close: usize,
    /// Windows ending at or before this are closed.
    pub closed_through: Option<String>,
    /// What the closer last announced it is closing.
    pub closing_through: Option<String>,
    /// Windows late data marked to be emitted again.
    pub to_reemit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSeen {
    pub shard: String,
    /// The closer's verdict (live, awaiting, idle, never_reported, quiet,
    /// retired), or `unlisted`: known to the closer, no longer listed by
    /// Kinesis (past the stream's retention); its partials still serve re-emissions.
    pub verdict: String,
    pub closed: bool,
    pub parents: Vec<String>,
    pub watermark: Option<String>,
    pub last_report: Option<String>,
    pub last_report_s_ago: Option<i64>,
    pub applied_seq: Option<String>,
    /// Bounded mode: left out since windows closed through this without it.
    pub excluded_since: Option<String>,
    pub open_panes: usize,
    pub trips_aggregated: u64,
    pub invalid: u64,
    pub late: u64,
    pub dropped_late: u64,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let status = status(&args, |name: &str| std::env::var(name).ok(), WallTime::now()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        for line in status.lines() {
            println!("{line}");
        }
    }
    Ok(())
}

/// Reads the deployment and judges it as the closer would at `now`.
pub async fn status(args: &StatusArgs, env: impl Fn(&str) -> Option<String>, now: WallTime) -> anyhow::Result<Status> {
    let rules =
        Rules::from_lookup(|name: &str| args.settings.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone()).or_else(|| env(name)))?;
    let sdk = match (&args.dynamodb_endpoint, &args.kinesis_endpoint) {
        (Some(_), Some(_)) => None,
        _ => Some(crate::aws::checked_sdk_config(args.region.as_deref()).await?),
    };
    let dynamodb = match (&args.dynamodb_endpoint, &sdk) {
        (Some(endpoint), _) => standin_dynamodb_client(endpoint),
        (None, Some(sdk)) => aws_sdk_dynamodb::Client::new(sdk),
        (None, None) => unreachable!("an SDK configuration without an endpoint"),
    };
    let kinesis = match (&args.kinesis_endpoint, &sdk) {
        (Some(endpoint), _) => standin_kinesis_client(endpoint),
        (None, Some(sdk)) => aws_sdk_kinesis::Client::new(sdk),
        (None, None) => unreachable!("an SDK configuration without an endpoint"),
    };
    let store = DynamoStore::new(dynamodb, &args.table);
    let source = KinesisShards { client: kinesis, stream: args.stream.clone() };
    let listed = list_shards(&source.client, &args.stream).await?;
    let table = &args.table;
    let closer = store.load_closer_state().await.with_context(|| format!("reading the closer state from the table {table}"))?;
    let decision = decide(&store, &source, &listed, &closer, &rules.window, rules.idleness, now)
        .await
        .with_context(|| format!("reading the shard states from the table {table}"))?;
    let markers = store.list_reemit_markers().await.with_context(|| format!("reading the re-emit markers from the table {table}"))?;
    let dead_letters = TableProgress::new(store, &rules.documents).dead_letters().await.map_err(anyhow::Error::msg)?;
    let observed = Observed { listed, closer, decision, markers, dead_letters };
    Ok(summarize(&observed, &rules, now, &args.table, &args.stream))
}

/// The status of what was read (pure: the tests give it any state).
pub fn summarize(observed: &Observed, rules: &Rules, now: WallTime, table: &str, stream: &str) -> Status {
    let Observed { listed, closer, decision, markers, dead_letters } = observed;
    let global = &decision.global;
    let ago = |t: Option<WallTime>| t.map(|t| (now.0 - t.0).max(0) / 1000);
    let rfc = |t: Option<EventTime>| t.map(EventTime::to_rfc3339);

    let mut shards: Vec<ShardSeen> = Vec::new();
    for id in &decision.shard_ids {
        let state = decision.states.get(id);
        let listing = listed.iter().find(|s| s.id == *id);
        shards.push(ShardSeen {
            shard: id.to_string(),
            verdict: global.verdicts.get(id).map_or("unlisted", ShardVerdict::name).to_owned(),
            closed: listing.is_none_or(|s| s.closed),
            parents: listing.map(|s| s.parents().map(ShardId::to_string).collect()).unwrap_or_default(),
            watermark: rfc(state.and_then(|s| s.watermark.watermark)),
            last_report: state.and_then(|s| s.updated_at).map(|t| EventTime(t.0.div_euclid(1000)).to_rfc3339()),
            last_report_s_ago: ago(state.and_then(|s| s.updated_at)),
            applied_seq: state.and_then(|s| s.applied_seq.as_ref()).map(|s| s.to_string()),
            excluded_since: rfc(decision.excluded.get(id).copied()),
            open_panes: state.map_or(0, |s| s.open_panes.len()),
            trips_aggregated: state.map_or(0, |s| s.counters.trips_aggregated),
            invalid: state.map_or(0, |s| s.counters.invalid.total()),
            late: state.map_or(0, |s| s.counters.late),
            dropped_late: state.map_or(0, |s| s.counters.dropped_late),
        });
    }

    // Only the keys of the open panes: which windows hold data.
    let panes: BTreeSet<_> = decision.states.values().flat_map(|s| s.open_panes.keys().copied()).collect();
    let open = windows_to_close(&rules.window, panes.iter().copied(), closer.closed_through, EventTime(i64::MAX));
    let ready = global.watermark.map_or(0, |w| windows_to_close(&rules.window, panes.iter().copied(), closer.closed_through, w).len());
    let to_reemit: BTreeSet<_> = markers.iter().map(|m| m.window).collect();
    let windows = WindowsSeen {
        open: open.len(),
        oldest_open: open.first().map(|w| EventTime(w.0).to_rfc3339()),
        newest_open: open.last().map(|w| EventTime(w.0).to_rfc3339()),
        ready_to_close: ready,
        closed_through: rfc(closer.closed_through),
        closing_through: rfc(closer.closing_through),
        to_reemit: to_reemit.len(),
    };

    let holding_back = holding_back(decision, now);
    let lag = global.watermark.map(|w| now.as_event_time().0 - w.0);
    let headline = headline(decision, &holding_back, &windows, lag, *dead_letters, rules);
    let (watermark_mode, idle_timeout_s, advance_when_quiet) = match rules.idleness {
        Idleness::Never => ("producer", None, false),
        Idleness::After { timeout_ms, advance_when_quiet } => ("bounded", Some(timeout_ms / 1000), advance_when_quiet),
    };
    Status {
        headline,
        checked_at: now.as_event_time().to_rfc3339(),
        table: table.to_owned(),
        stream: stream.to_owned(),
        rules: RulesSeen {
            window_size_s: rules.window.size_s(),
            window_slide_s: rules.window.slide_s(),
            watermark_mode: watermark_mode.to_owned(),
            idle_timeout_s,
            advance_when_quiet,
        },
        global_watermark: rfc(global.watermark),
        event_time_lag_s: lag,
        recorded_watermark: rfc(closer.watermark),
        holding_back,
        windows,
        dead_letters: *dead_letters,
        shards,
    }
}

/// The shard that decides the global watermark: the lowest of those that
/// count (live; awaited, at their parents' watermarks; when every shard is
/// idle, the idle ones at the global watermark), a shard without any first.
fn holding_back(decision: &Decision, now: WallTime) -> Option<HoldingBack> {
    let global = &decision.global;
    let state_watermark = |id: &ShardId| decision.states.get(id).and_then(|s| s.watermark.watermark);
    let counting: Vec<(&ShardId, &ShardVerdict, Option<EventTime>)> = global
        .verdicts
        .iter()
        .filter_map(|(id, verdict)| match verdict {
            ShardVerdict::Live { watermark } => Some((id, verdict, *watermark)),
            ShardVerdict::Awaiting { inherited, .. } => Some((id, verdict, *inherited)),
            ShardVerdict::Idle if global.all_idle && state_watermark(id) == global.watermark => Some((id, verdict, state_watermark(id))),
            _ => None,
        })
        .collect();
    // `None` (nothing promised) sorts first: it holds every window back.
    let (shard, verdict, watermark) = counting.iter().min_by_key(|(id, _, w)| (*w, *id)).copied()?;
    let next = counting.iter().filter(|(id, _, _)| *id != shard).filter_map(|(_, _, w)| *w).min();
    let updated_at = decision.states.get(shard).and_then(|s| s.updated_at);
    Some(HoldingBack {
        shard: shard.to_string(),
        verdict: verdict.name().to_owned(),
        watermark: watermark.map(EventTime::to_rfc3339),
        behind_s: watermark.zip(next).map(|(w, n)| n.0 - w.0),
        last_report_s_ago: updated_at.map(|t| (now.0 - t.0).max(0) / 1000),
    })
}

/// The one line at the top: the first thing that keeps windows from closing.
fn headline(
    decision: &Decision,
    holder: &Option<HoldingBack>,
    windows: &WindowsSeen,
    lag: Option<i64>,
    dead_letters: u64,
    rules: &Rules,
) -> String {
    let global = &decision.global;
    let reported =
        |h: &HoldingBack| h.last_report_s_ago.map_or_else(|| "no report yet".to_owned(), |s| format!("last report {} ago", span(s)));
    let dead = if dead_letters > 0 {
        format!("; {dead_letters} dead letters (documents the index refused, kept in the table)")
    } else {
        String::new()
    };
    if global.verdicts.is_empty() {
        return "the stream lists no shard".to_owned();
    }
    if decision.states.is_empty() {
        return "no shard has reported yet: nothing is aggregated (is the producer writing to the stream, and the aggregate function's event source mapping enabled?)".to_owned();
    }
    let stale = |h: &HoldingBack| h.behind_s.is_some_and(|b| b >= rules.window.slide_s());
    match holder {
        Some(h) if h.watermark.is_none() && h.verdict == "awaiting" => {
            return format!(
                "global watermark held back by {}: awaiting its first report (a new shard, or a child after a reshard){dead}",
                h.shard
            )
        }
        Some(h) if h.watermark.is_none() => {
            return format!("global watermark held back by {}: no watermark from it yet, {}{dead}", h.shard, reported(h))
        }
        _ => {}
    }
    if windows.ready_to_close > 0 {
        return format!(
            "{} windows the watermark has passed are not closed yet: the next close-windows pass closes them (if this stays, see the function's log){dead}",
            windows.ready_to_close
        );
    }
    if global.verdicts.values().any(|v| *v == ShardVerdict::Quiet) {
        return format!("the stream is quiet: every shard is idle and caught up, so the watermark advances with the wall clock (ADVANCE_WHEN_QUIET){dead}");
    }
    match holder {
        Some(h) if stale(h) => {
            let behind = span(h.behind_s.unwrap_or_default());
            format!("global watermark held back by {}: {behind} behind the others, {}{dead}", h.shard, reported(h))
        }
        _ if global.all_idle => format!(
            "every shard is idle (no report for longer than IDLE_SHARD_TIMEOUT_SECONDS){}{dead}",
            if matches!(rules.idleness, Idleness::After { advance_when_quiet: true, .. }) {
                ": the last windows close once Kinesis says each shard is caught up"
            } else {
                ": the last windows close when they report again (ADVANCE_WHEN_QUIET=false)"
            }
        ),
        _ => format!(
            "up to date: global watermark {}{}, {} windows open{dead}",
            global.watermark.map_or_else(|| "-".to_owned(), EventTime::to_rfc3339),
            lag.map_or_else(String::new, |l| format!(" ({} behind the wall clock)", span(l))),
            windows.open,
        ),
    }
}

/// "45 s", "14 min", "3 h 12 min", "12 d 4 h".
pub fn span(seconds: i64) -> String {
    let (sign, s) = if seconds < 0 { ("-", -seconds) } else { ("", seconds) };
    let text = match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    };
    format!("{sign}{text}")
}

impl Status {
    /// The table printed by default.
    pub fn lines(&self) -> Vec<String> {
        let or_dash = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".to_owned());
        let w = &self.windows;
        let r = &self.rules;
        let mut lines = vec![
            self.headline.clone(),
            String::new(),
            format!("table {}, stream {}, checked at {}", self.table, self.stream, self.checked_at),
            format!(
                "global watermark  {}{} (the closer last acted on {})",
                or_dash(&self.global_watermark),
                self.event_time_lag_s.map_or_else(String::new, |l| format!(", {} behind the wall clock", span(l))),
                or_dash(&self.recorded_watermark),
            ),
            format!(
                "windows           {} open{}, {} ready to close, {} to re-emit; closed through {} (closing through {})",
                w.open,
                match (&w.oldest_open, &w.newest_open) {
                    (Some(first), Some(last)) => format!(" (starting {first} to {last})"),
                    _ => String::new(),
                },
                w.ready_to_close,
                w.to_reemit,
                or_dash(&w.closed_through),
                or_dash(&w.closing_through),
            ),
            format!("dead letters      {}", self.dead_letters),
            format!(
                "rules             WATERMARK_MODE={}{}, windows of {} s every {} s",
                r.watermark_mode,
                r.idle_timeout_s.map_or_else(
                    || " (a silent shard is stuck, never idle)".to_owned(),
                    |t| format!(", IDLE_SHARD_TIMEOUT_SECONDS={t}, ADVANCE_WHEN_QUIET={}", r.advance_when_quiet)
                ),
                r.window_size_s,
                r.window_slide_s,
            ),
            String::new(),
            format!(
                "{:<24} {:<14} {:<21} {:<12} {:>6} {:>9} {:>7} {:>6}  {}",
                "shard", "verdict", "watermark", "last report", "panes", "trips", "invalid", "late", "applied sequence"
            ),
        ];
        for s in &self.shards {
            let mut verdict = s.verdict.clone();
            if s.excluded_since.is_some() {
                verdict.push('*');
            }
            lines.push(format!(
                "{:<24} {:<14} {:<21} {:<12} {:>6} {:>9} {:>7} {:>6}  {}",
                s.shard,
                verdict,
                or_dash(&s.watermark),
                s.last_report_s_ago.map_or_else(|| "-".to_owned(), |a| format!("{} ago", span(a))),
                s.open_panes,
                s.trips_aggregated,
                s.invalid,
                s.late,
                or_dash(&s.applied_seq),
            ));
        }
        if let Some(excluded) = self.shards.iter().find(|s| s.excluded_since.is_some()) {
            lines.push(format!(
                "* excluded (bounded mode): windows closed without it since {}; what it brings for them is emitted again",
                or_dash(&excluded.excluded_since)
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use taxi_core::closing::global_watermark;
    use taxi_core::shard::ShardState;
    use taxi_core::watermark::ShardWatermark;
    use taxi_core::window::PaneStart;

    use super::*;

    const NOW: WallTime = WallTime(1_800_000_000_000);

    fn shard(n: u32) -> StreamShard {
        StreamShard {
            id: ShardId(format!("shardId-{n:012}")),
            parent: None,
            adjacent_parent: None,
            starting_hash_key: "0".into(),
            closed: false,
        }
    }

    fn state(watermark: Option<i64>, reported_s_ago: i64, panes: &[i64]) -> ShardState {
        ShardState {
            watermark: ShardWatermark { watermark: watermark.map(EventTime), ..Default::default() },
            updated_at: Some(WallTime(NOW.0 - reported_s_ago * 1000)),
            open_panes: panes.iter().map(|p| (PaneStart(*p), Default::default())).collect(),
            ..Default::default()
        }
    }

    /// The status of `states` over shards 0..n, judged by `rules` as the closer would.
    fn status_of(n: u32, states: Vec<(u32, ShardState)>, closed_through: Option<i64>, rules: &Rules) -> Status {
        let listed: Vec<StreamShard> = (0..n).map(shard).collect();
        let states: BTreeMap<ShardId, ShardState> = states.into_iter().map(|(i, s)| (shard(i).id, s)).collect();
        let global = global_watermark(&listed, &states, &BTreeMap::new(), NOW, rules.idleness);
        let closer = CloserState { closed_through: closed_through.map(EventTime), ..Default::default() };
        let decision = Decision { shard_ids: listed.iter().map(|s| s.id.clone()).collect(), states, global, excluded: BTreeMap::new() };
        let observed = Observed { listed, closer, decision, markers: Vec::new(), dead_letters: 0 };
        summarize(&observed, rules, NOW, "t", "s")
    }

    fn producer() -> Rules {
        Rules::from_lookup(|_| None).unwrap()
    }

    const T: i64 = 1_420_848_000;

    #[test]
    fn a_shard_behind_the_others_is_named_with_how_far_and_its_last_report() {
        let states = vec![
            (0, state(Some(T + 3600), 1, &[T + 3000])),
            (1, state(Some(T + 2760), 540, &[T + 2400])),
            (2, state(Some(T + 3660), 2, &[])),
        ];
        let status = status_of(3, states, Some(T + 2400), &producer());
        assert_eq!(status.headline, "global watermark held back by shardId-000000000001: 14 min behind the others, last report 9 min ago");
        let held = status.holding_back.as_ref().unwrap();
        assert_eq!((held.behind_s, held.last_report_s_ago, held.verdict.as_str()), (Some(840), Some(540), "live"));
        assert_eq!(status.global_watermark, Some(EventTime(T + 2760).to_rfc3339()));
        // Panes at T+2400 and T+3000: both windows open, none passed by T+2760.
        assert_eq!((status.windows.open, status.windows.ready_to_close), (2, 0));
        assert_eq!(status.shards[1].last_report_s_ago, Some(540));
        assert!(status.lines()[0].starts_with("global watermark held back by shardId-000000000001"), "{:?}", status.lines());
        let json: Status = serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
        assert_eq!(json, status, "the JSON round-trips");
    }

    #[test]
    fn no_watermark_awaited_shards_ready_windows_and_an_up_to_date_pipeline() {
        let silent = status_of(2, vec![(0, state(Some(T), 1, &[])), (1, state(None, 300, &[]))], None, &producer());
        assert_eq!(silent.headline, "global watermark held back by shardId-000000000001: no watermark from it yet, last report 5 min ago");
        let awaited = status_of(2, vec![(0, state(Some(T), 1, &[]))], None, &producer());
        assert!(awaited.headline.contains("shardId-000000000001: awaiting its first report"), "{}", awaited.headline);
        assert!(status_of(2, vec![], None, &producer()).headline.starts_with("no shard has reported yet"));
        // Passed by the watermark and not closed: the closer is the one to look at.
        let ready = status_of(1, vec![(0, state(Some(T + 1200), 1, &[T, T + 600]))], Some(T + 600), &producer());
        assert_eq!(ready.windows.ready_to_close, 1);
        assert!(ready.headline.starts_with("1 windows the watermark has passed are not closed yet"), "{}", ready.headline);
        // Shards a few seconds apart: nothing holds back a window.
        let fine =
            status_of(2, vec![(0, state(Some(T + 1200), 1, &[T + 1200])), (1, state(Some(T + 1205), 1, &[]))], Some(T + 1200), &producer());
        assert!(fine.headline.starts_with("up to date: global watermark 2015-01-10T00:20:00Z ("), "{}", fine.headline);
        assert_eq!(fine.event_time_lag_s, Some(NOW.0 / 1000 - T - 1200));
    }

    #[test]
    fn bounded_mode_names_idle_shards_and_the_quiet_rule() {
        let bounded = Rules::from_lookup(|name| match name {
            "WATERMARK_MODE" => Some("bounded".into()),
            "IDLE_SHARD_TIMEOUT_SECONDS" => Some("60".into()),
            _ => None,
        })
        .unwrap();
        let status = status_of(2, vec![(0, state(Some(T + 1200), 1, &[])), (1, state(Some(T), 600, &[]))], None, &bounded);
        assert_eq!(status.shards[1].verdict, "idle", "silent past the timeout: left out");
        assert!(status.holding_back.as_ref().is_some_and(|h| h.shard == "shardId-000000000000"));
        assert_eq!(status.rules.idle_timeout_s, Some(60));
        let all_idle = status_of(2, vec![(0, state(Some(T + 1200), 100, &[])), (1, state(Some(T + 1190), 90, &[]))], None, &bounded);
        assert!(all_idle.headline.starts_with("every shard is idle"), "{}", all_idle.headline);
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(
            [span(45), span(840), span(3 * 3600 + 720), span(12 * 86_400 + 4 * 3600), span(-5)],
            ["45 s", "14 min", "3 h 12 min", "12 d 4 h", "-5 s"]
        );
    }
}
