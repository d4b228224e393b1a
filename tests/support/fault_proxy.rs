//! An HTTP proxy in front of a real search endpoint that injects the failures
//! Elasticsearch shows under load: in the first `failing_requests` `_bulk`
//! requests, every other document is refused with a per-item 429 (and not
//! forwarded); everything else passes through unchanged. Or, as an endpoint
//! without aggregations, one that refuses every `_search` ([`start_without_search`]).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    failing_requests: u64,
    refuse_search: bool,
    bulk_requests: AtomicU64,
    refused: Arc<AtomicU64>,
}

pub struct FaultProxy {
    pub endpoint: String,
    /// Documents refused so far.
    pub refused: Arc<AtomicU64>,
}

pub async fn start(upstream: &str, failing_requests: u64) -> FaultProxy {
    serve(upstream, failing_requests, false).await
}

/// Indexing passes through; every `_search` is refused with a 400, as by an
/// endpoint that does not support the aggregations asked for.
pub async fn start_without_search(upstream: &str) -> FaultProxy {
    serve(upstream, 0, true).await
}

async fn serve(upstream: &str, failing_requests: u64, refuse_search: bool) -> FaultProxy {
    let refused = Arc::new(AtomicU64::new(0));
    let state = Arc::new(ProxyState {
        upstream: upstream.to_owned(),
        http: reqwest::Client::new(),
        failing_requests,
        refuse_search,
        bulk_requests: AtomicU64::new(0),
        refused: refused.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(handle).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    FaultProxy { endpoint, refused }
}

async fn handle(State(state): State<Arc<ProxyState>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut body = body.to_vec();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain).expect("a gzip body");
        body = plain;
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_owned();
    let is_bulk = uri.path() == "/_bulk";
    if state.refuse_search && uri.path().ends_with("/_search") {
        let error = json!({"error": {"type": "illegal_argument_exception", "reason": "aggregations are not supported (injected by the test proxy)"}, "status": 400});
        return (StatusCode::BAD_REQUEST, [("content-type", "application/json")], error.to_string()).into_response();
    }
    if is_bulk && state.bulk_requests.fetch_add(1, Ordering::SeqCst) < state.failing_requests {
        return refuse_half(&state, body).await;
    }
    let (status, answer) = forward(&state, method.as_str(), &uri.to_string(), &content_type, body).await;
    (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], answer).into_response()
}

async fn forward(state: &ProxyState, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = state
        .http
        .request(method, format!("{}{path}", state.upstream))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the upstream answers");
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

/// Forwards the even documents, refuses the odd ones with 429, and answers
/// for all of them in the original order.
async fn refuse_half(state: &ProxyState, body: Vec<u8>) -> Response {
    let text = String::from_utf8(body).expect("NDJSON");
    let lines: Vec<&str> = text.lines().collect();
    let pairs: Vec<(&str, &str)> = lines.chunks(2).map(|pair| (pair[0], pair[1])).collect();
    let mut forwarded = String::new();
    for (action, source) in pairs.iter().step_by(2) {
        forwarded.push_str(&format!("{action}\n{source}\n"));
    }
    let (_, answer) = forward(state, "POST", "/_bulk", "application/x-ndjson", forwarded.into_bytes()).await;
    let answer: Value = serde_json::from_slice(&answer).expect("a bulk answer");
    let mut upstream_items = answer["items"].as_array().cloned().unwrap_or_default().into_iter();
    let items: Vec<Value> = pairs
        .iter()
        .enumerate()
        .map(|(i, (action, _))| {
            if i % 2 == 0 {
                upstream_items.next().expect("one answer per forwarded document")
            } else {
                state.refused.fetch_add(1, Ordering::SeqCst);
                let action: Value = serde_json::from_str(action).unwrap();
                json!({"index": {"_index": action["index"]["_index"], "_id": action["index"]["_id"], "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of bulk item (injected by the test proxy)"}}})
            }
        })
        .collect();
    let body = json!({"took": 1, "errors": true, "items": items}).to_string();
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}
