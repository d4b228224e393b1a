//! The stand-ins for tests: one of each per test process, started on first
//! use on a free port (see `taxi-standins`), or the endpoint given in
//! `DYNAMODB_ENDPOINT`, `KINESIS_ENDPOINT` or `OPENSEARCH_ENDPOINT`.

use std::sync::OnceLock;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
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
    started(StandIn::KinesisLocal, "KINESIS_ENDPOINT", &CELL)
}

pub fn opensearch_endpoint() -> &'static str {
    static CELL: OnceLock<Started> = OnceLock::new();
    started(StandIn::OsmemServer, "OPENSEARCH_ENDPOINT", &CELL)
}

/// Test credentials: the stand-ins accept any, and the SDK still signs.
fn credentials() -> Credentials {
    Credentials::new("local", "local", None, None, "standins")
}

pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(dynamodb_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

pub fn kinesis_client() -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .endpoint_url(kinesis_endpoint())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(credentials())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// A resource name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
