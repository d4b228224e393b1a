//! The stand-ins for tests: one of each per test process, started on first
//! use on a free port (see `taxi-standins`), or the endpoint given in
//! `DYNAMODB_ENDPOINT`, `KINESIS_ENDPOINT` or `OPENSEARCH_ENDPOINT`.

use std::sync::OnceLock;

use taxi_standins::{RunningStandIn, StandIn};

/// Kept for the life of the test process: statics are never dropped, and the
/// stand-in stops when the process exits and its pipe closes.
struct Started {
    endpoint: String,
    _process: Option<RunningStandIn>,
}

fn started(service: StandIn, variable: &str, cell: &'static OnceLock<Started>) -> &'static str {
    &cell
        .get_or_init(|| match std::env::var(variable) {
            Ok(endpoint) => Started { endpoint, _process: None },
            Err(_) => {
                let running = service.start(&crate::workspace_root()).unwrap_or_else(|e| panic!("{e}"));
                Started { endpoint: running.endpoint().to_owned(), _process: Some(running) }
            }
        })
        .endpoint
}

pub fn dynamodb_endpoint() -> &'static str {
    static CELL: OnceLock<Started> = OnceLock::new();
    started(StandIn::DynamoDbLocal, "DYNAMODB_ENDPOINT", &CELL)
}

pub fn kinesis_endpoint() -> &'static str {
    static CELL: OnceLock<Started> = OnceLock::new();
    started(StandIn::Kinesalite, "KINESIS_ENDPOINT", &CELL)
}

pub fn opensearch_endpoint() -> &'static str {
    static CELL: OnceLock<Started> = OnceLock::new();
    started(StandIn::OsmemServer, "OPENSEARCH_ENDPOINT", &CELL)
}

pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    taxi_aws::config::standin_dynamodb_client(dynamodb_endpoint())
}

pub fn kinesis_client() -> aws_sdk_kinesis::Client {
    taxi_aws::config::standin_kinesis_client(kinesis_endpoint())
}

/// A resource name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
