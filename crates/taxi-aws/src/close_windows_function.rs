//! The close-windows function: run by a schedule, it keeps closing windows
//! for a while (re-checking every few seconds, so a window appears soon after
//! the watermark passes it) and stops cleanly before its deadline.

use std::time::Duration;

use lambda_runtime::{service_fn, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taxi_core::closer::{CloseReport, Closer, CloserSettings, CloserStore, DocumentSink, ShardSource, SinkError};
use taxi_core::metrics::close_report_emf;
use taxi_core::time::{EventTime, WallTime};

use crate::config::{sdk_config, AwsClients, CloseWindowsConfig, SearchAuthError};
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

/// The function's answer: what its passes did, counts summed and the rest as
/// of the last pass. `taxi-pipeline local` folds its invocations' answers the same way.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CloseAnswer {
    pub passes: u64,
    pub windows_closed: u64,
    pub windows_reemitted: u64,
    pub windows_left_open: u64,
    pub windows_resumed: u64,
    /// Window starts (RFC 3339) refused because their partials may have expired.
    pub windows_refused_expired: Vec<String>,
    pub documents_indexed: u64,
    pub documents_retried: u64,
    pub dead_letters: u64,
    pub closed_through: Option<String>,
    pub watermark: Option<String>,
    pub lease_held_elsewhere: bool,
    pub error: Option<String>,
}

impl CloseAnswer {
    /// One pass's answer.
    pub fn of_pass(report: &CloseReport) -> CloseAnswer {
        CloseAnswer {
            passes: 1,
            windows_closed: report.windows_closed,
            windows_reemitted: report.windows_reemitted,
            windows_left_open: report.windows_left_open,
            windows_resumed: report.windows_resumed,
            windows_refused_expired: report.refused_expired.iter().map(|w| EventTime(w.0).to_rfc3339()).collect(),
            documents_indexed: report.documents_indexed,
            documents_retried: report.documents_retried,
            dead_letters: report.dead_letters,
            closed_through: report.closed_through.map(EventTime::to_rfc3339),
            watermark: report.global.as_ref().and_then(|g| g.watermark).map(EventTime::to_rfc3339),
            lease_held_elsewhere: report.lease_held_elsewhere,
            error: report.error.clone(),
        }
    }

    /// This answer followed by a later one: counts add up, the rest is the later one's.
    pub fn then(self, later: CloseAnswer) -> CloseAnswer {
        CloseAnswer {
            passes: self.passes + later.passes,
            windows_closed: self.windows_closed + later.windows_closed,
            windows_reemitted: self.windows_reemitted + later.windows_reemitted,
            windows_resumed: self.windows_resumed + later.windows_resumed,
            documents_indexed: self.documents_indexed + later.documents_indexed,
            documents_retried: self.documents_retried + later.documents_retried,
            dead_letters: self.dead_letters + later.dead_letters,
            ..later
        }
    }

    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark.as_deref().and_then(EventTime::parse_rfc3339)
    }
}

/// Runs passes until `keep_running` has elapsed or the deadline nears; one
/// EMF line per pass (when `namespace` is given). Returns the summary.
pub async fn close_windows<St: CloserStore, Sh: ShardSource, Si: DocumentSink>(
    closer: &Closer<St, Sh, Si>,
    deadline: WallTime,
    repeat: Repeat,
    metrics: Option<(&str, &str)>,
) -> CloseAnswer {
    let started = WallTime::now();
    let mut answer = CloseAnswer::default();
    loop {
        let report = closer.run_once(&WallTime::now, deadline).await;
        if let Some((namespace, function)) = metrics {
            println!("{}", close_report_emf(&report, namespace, function, WallTime::now().0));
        }
        answer = answer.then(CloseAnswer::of_pass(&report));
        let now = WallTime::now();
        let interval = repeat.recheck_interval.as_millis() as i64;
        let ran = now.0 - started.0;
        if ran + interval > repeat.keep_running.as_millis() as i64 || now.0 + interval + SAFETY_MARGIN_MS >= deadline.0 {
            break;
        }
        tokio::time::sleep(repeat.recheck_interval).await;
    }
    answer
}

/// Why the closer cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum CloserSetupError {
    #[error(transparent)]
    Auth(#[from] SearchAuthError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Builds the closer from the configuration and the clients (of the default
/// AWS chain on Lambda; of the stand-ins in `taxi-pipeline local`).
pub fn closer_from_config(
    config: &CloseWindowsConfig,
    clients: &AwsClients,
    owner: String,
) -> Result<Closer<DynamoStore, KinesisShards, SearchSink>, CloserSetupError> {
    let sink =
        SearchSink::new(config.search.sink_config(config.documents.clone(), Some(&clients.sdk))?)?.with_replicas(config.index_replicas);
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
        e.to_string()
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

    #[test]
    fn passes_add_up_counts_and_keep_the_last_state() {
        let first = CloseReport {
            windows_closed: 2,
            documents_indexed: 30,
            windows_left_open: 4,
            error: Some("503".into()),
            ..CloseReport::default()
        };
        let second = CloseReport { windows_closed: 1, documents_indexed: 5, windows_resumed: 1, ..CloseReport::default() };
        let answer = CloseAnswer::of_pass(&first).then(CloseAnswer::of_pass(&second));
        assert_eq!((answer.passes, answer.windows_closed, answer.documents_indexed, answer.windows_resumed), (2, 3, 35, 1));
        assert_eq!((answer.windows_left_open, answer.error.as_deref()), (0, None), "the last pass's state");
        // The Lambda answer's field names, as scripts read them.
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(json["windows_closed"], 3);
        assert_eq!(serde_json::from_value::<CloseAnswer>(json).unwrap(), answer);
    }
}
