//! The close-windows function: run by a schedule, it keeps closing windows
//! for a while (re-checking every few seconds, so a window appears soon after
//! the watermark passes it) and stops cleanly before its deadline.

use std::time::Duration;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};
use taxi_core::closer::{CloseReport, Closer, CloserSettings, CloserStore, DocumentSink, ShardSource};
use taxi_core::metrics::close_report_emf;
use taxi_core::time::{EventTime, WallTime};

use crate::config::{sdk_config, AwsClients, CloseWindowsConfig};
use crate::dynamo::DynamoStore;
use crate::kinesis::KinesisShards;
use crate::search::SearchSink;
use crate::telemetry::init_lambda_logging;

/// Time kept free before the deadline: no window is started after it.
pub const SAFETY_MARGIN_MS: i64 = 3_000;

/// How one invocation repeats its passes.
#[derive(Clone, Copy, Debug)]
pub struct Repeat {
    pub recheck_interval: Duration,
    pub keep_running: Duration,
}

/// Runs passes until `keep_running` has elapsed or the deadline nears; one
/// EMF line per pass (when `namespace` is given). Returns the summary.
pub async fn close_windows<St: CloserStore, Sh: ShardSource, Si: DocumentSink>(
    closer: &Closer<St, Sh, Si>,
    deadline: WallTime,
    repeat: Repeat,
    metrics: Option<(&str, &str)>,
) -> Value {
    let started = WallTime::now();
    let mut total = CloseReport::default();
    let mut passes = 0;
    loop {
        let report = closer.run_once(&WallTime::now, deadline).await;
        passes += 1;
        if let Some((namespace, function)) = metrics {
            println!("{}", close_report_emf(&report, namespace, function, WallTime::now().0));
        }
        total.windows_closed += report.windows_closed;
        total.windows_reemitted += report.windows_reemitted;
        total.documents_indexed += report.documents_indexed;
        total.documents_retried += report.documents_retried;
        total.dead_letters += report.dead_letters;
        total.windows_left_open = report.windows_left_open;
        total.windows_resumed += report.windows_resumed;
        total.refused_expired = report.refused_expired.clone();
        total.closed_through = report.closed_through;
        total.error = report.error.clone();
        total.global = report.global.clone();
        total.lease_held_elsewhere = report.lease_held_elsewhere;
        let now = WallTime::now();
        let interval = repeat.recheck_interval.as_millis() as i64;
        let ran = now.0 - started.0;
        if ran + interval > repeat.keep_running.as_millis() as i64 || now.0 + interval + SAFETY_MARGIN_MS >= deadline.0 {
            break;
        }
        tokio::time::sleep(repeat.recheck_interval).await;
    }
    json!({
        "passes": passes,
        "windows_closed": total.windows_closed,
        "windows_reemitted": total.windows_reemitted,
        "windows_left_open": total.windows_left_open,
        "windows_resumed": total.windows_resumed,
        "windows_refused_expired": total.refused_expired.iter().map(|w| EventTime(w.0).to_rfc3339()).collect::<Vec<_>>(),
        "documents_indexed": total.documents_indexed,
        "documents_retried": total.documents_retried,
        "dead_letters": total.dead_letters,
        "closed_through": total.closed_through.map(EventTime::to_rfc3339),
        "watermark": total.global.as_ref().and_then(|g| g.watermark).map(EventTime::to_rfc3339),
        "lease_held_elsewhere": total.lease_held_elsewhere,
        "error": total.error,
    })
}

/// Builds the closer from the configuration and the clients (of the default
/// AWS chain on Lambda; of the stand-ins in `taxi-pipeline local`).
pub fn closer_from_config(
    config: &CloseWindowsConfig,
    clients: &AwsClients,
    owner: String,
) -> Result<Closer<DynamoStore, KinesisShards, SearchSink>, String> {
    let sink = SearchSink::new(config.search.sink_config(config.documents.clone(), Some(&clients.sdk))?)
        .map_err(|e| e.to_string())?
        .with_replicas(config.index_replicas);
    Ok(Closer {
        store: DynamoStore::new(clients.dynamodb.clone(), config.table_name.clone()),
        shards: KinesisShards { client: clients.kinesis.clone(), stream: config.stream_name.clone() },
        sink,
        settings: CloserSettings {
            window: config.window,
            documents: config.documents.clone(),
            idleness: config.idleness,
            safety_margin_ms: SAFETY_MARGIN_MS,
            owner,
            chunk_documents: config.chunk_documents,
            retention_s: config.retention_s,
            close_expired: config.close_expired,
        },
    })
}

/// The invocation's deadline. Lambda's is always ahead; an emulator's may not
/// be (`cargo lambda watch` sends a fixed one in 1970), and then the function
/// runs as if its timeout were the re-check time plus the safety margin.
fn invocation_deadline(given_ms: i64, now: WallTime, repeat: Repeat) -> WallTime {
    if given_ms > now.0 {
        WallTime(given_ms)
    } else {
        WallTime(now.0 + repeat.keep_running.as_millis() as i64 + 2 * SAFETY_MARGIN_MS)
    }
}

/// The Lambda entry point.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    init_lambda_logging();
    let mut config = CloseWindowsConfig::from_env().map_err(|e| {
        tracing::error!("{e}");
        e.to_string()
    })?;
    // The execution environment's log stream is unique: a good lease owner.
    let owner = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| format!("close-windows-{}", fastrand::u64(..)));
    let clients = AwsClients::new(sdk_config(config.dynamodb_max_attempts).await);
    config.search.read_secret(&clients.sdk).await.map_err(|e| {
        tracing::error!("{e}");
        e.to_string()
    })?;
    let closer = closer_from_config(&config, &clients, owner).map_err(|e| {
        tracing::error!("{e}");
        e
    })?;
    let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "close-windows".into());
    let repeat = Repeat {
        recheck_interval: Duration::from_secs(config.recheck_interval_s),
        keep_running: Duration::from_secs(config.keep_running_s),
    };
    let (closer, config, function_name) = (&closer, &config, function_name.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = invocation_deadline(event.context.deadline as i64, WallTime::now(), repeat);
        Ok::<_, lambda_runtime::Error>(close_windows(closer, deadline, repeat, Some((&config.metrics_namespace, function_name))).await)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_in_the_past_becomes_the_run_time_plus_margins() {
        let repeat = Repeat { recheck_interval: Duration::from_secs(5), keep_running: Duration::from_secs(50) };
        let now = WallTime(1_800_000_000_000);
        assert_eq!(invocation_deadline(now.0 + 60_000, now, repeat), WallTime(now.0 + 60_000));
        assert_eq!(invocation_deadline(600_000, now, repeat), WallTime(now.0 + 50_000 + 6_000));
    }
}
