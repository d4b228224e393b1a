//! `_bulk` NDJSON encoding in bounded chunks, and the reading of its answers.

use serde::Deserialize;

use crate::documents::Document;

/// Bounds on one `_bulk` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkLimits {
    pub max_bytes: usize,
    pub max_documents: usize,
}

impl Default for BulkLimits {
    fn default() -> Self {
        BulkLimits { max_bytes: 5 * 1024 * 1024, max_documents: 1000 }
    }
}

/// One request body and the positions (in the input) of its documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkChunk {
    pub body: Vec<u8>,
    pub documents: Vec<usize>,
}

/// Encodes the documents at `positions` into chunks within `limits`; a single
/// document larger than `max_bytes` travels alone.
pub fn encode_chunks(documents: &[Document], positions: &[usize], limits: BulkLimits) -> Vec<BulkChunk> {
    let mut chunks = Vec::new();
    let mut current = BulkChunk { body: Vec::new(), documents: Vec::new() };
    for &position in positions {
        let entry = encode_entry(&documents[position]);
        let full = current.documents.len() >= limits.max_documents || current.body.len() + entry.len() > limits.max_bytes;
        if full && !current.documents.is_empty() {
            chunks.push(std::mem::replace(&mut current, BulkChunk { body: Vec::new(), documents: Vec::new() }));
        }
        current.body.extend(entry);
        current.documents.push(position);
    }
    if !current.documents.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// A document's action line and source line, written straight out (no
/// intermediate JSON values: a backfill encodes millions of them).
///
/// External versioning with `external_gte`: an equal version (the same
/// content sent again) overwrites, a lower one is refused with a 409
/// (https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-index_.html#index-versioning).
fn encode_entry(doc: &Document) -> Vec<u8> {
    let mut entry = Vec::with_capacity(512);
    // Serializing strings and JSON values into a Vec cannot fail.
    entry.extend_from_slice(b"{\"index\":{\"_id\":");
    let _ = serde_json::to_writer(&mut entry, &doc.id);
    entry.extend_from_slice(b",\"_index\":");
    let _ = serde_json::to_writer(&mut entry, &doc.index);
    entry.extend_from_slice(b",\"version\":");
    entry.extend_from_slice(doc.version.to_string().as_bytes());
    entry.extend_from_slice(b",\"version_type\":\"external_gte\"}}\n");
    let _ = serde_json::to_writer(&mut entry, &doc.source);
    entry.push(b'\n');
    entry
}

/// What became of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    Indexed,
    /// Worth retrying: 429 (queue full) or a 5xx.
    Retry {
        status: u16,
        reason: String,
    },
    /// Will fail again as it is (a mapping error, say): dead-lettered.
    Rejected {
        status: u16,
        reason: String,
    },
}

/// What became of a whole request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Read the items.
    Items(Vec<ItemOutcome>),
    /// Retry every document of the request (429, 5xx, a cut connection).
    RetryAll { status: u16, reason: String },
    /// Too large for the endpoint: split it.
    TooLarge,
    /// Authentication, authorization or a bad request as a whole: nothing will
    /// change by retrying, the configuration must be fixed.
    Fatal { status: u16, reason: String },
}

#[derive(Deserialize)]
struct BulkResponse {
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Reads a `_bulk` answer for a request of `expected` documents.
pub fn classify_response(status: u16, body: &[u8], expected: usize) -> RequestOutcome {
    let reason = || error_reason(body);
    match status {
        200..=299 => match serde_json::from_slice::<BulkResponse>(body) {
            Ok(response) if response.items.len() == expected => RequestOutcome::Items(
                response
                    .items
                    .iter()
                    .map(|item| {
                        let item = item.values().next().expect("serde gave a non-empty map");
                        match item.status {
                            // 409: a newer version of the document is already there.
                            200..=299 | 409 => ItemOutcome::Indexed,
                            429 | 500..=599 => ItemOutcome::Retry { status: item.status, reason: describe(item.error.as_ref()) },
                            other => ItemOutcome::Rejected { status: other, reason: describe(item.error.as_ref()) },
                        }
                    })
                    .collect(),
            ),
            Ok(response) => RequestOutcome::RetryAll {
                status,
                reason: format!("the answer listed {} items for {expected} documents", response.items.len()),
            },
            Err(e) => RequestOutcome::RetryAll { status, reason: format!("unreadable _bulk answer: {e}") },
        },
        413 => RequestOutcome::TooLarge,
        408 | 429 | 500..=599 => RequestOutcome::RetryAll { status, reason: reason() },
        _ => RequestOutcome::Fatal { status, reason: reason() },
    }
}

/// `type: reason` of an error object (with its first cause), for logs and dead letters.
fn describe(error: Option<&serde_json::Value>) -> String {
    let Some(error) = error else { return "no error given".into() };
    let text = |e: &serde_json::Value| match (e["type"].as_str(), e["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        (Some(t), None) => t.to_owned(),
        _ => e.to_string(),
    };
    match error.get("caused_by") {
        Some(cause) => format!("{} (caused by {})", text(error), text(cause)),
        None => text(error),
    }
}

/// The reason in an error body, or the start of the body.
fn error_reason(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.get("error").is_some() => describe(v.get("error")),
        Ok(v) if v.get("message").is_some() => v["message"].as_str().unwrap_or_default().to_owned(),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(id: &str, size: usize) -> Document {
        Document { index: "pickup_count".into(), id: id.into(), source: json!({"pad": "x".repeat(size)}), version: 1 }
    }

    #[test]
    fn ndjson_lines_pair_action_and_source() {
        let docs = [doc("a", 1)];
        let chunks = encode_chunks(&docs, &[0], BulkLimits::default());
        assert_eq!(
            String::from_utf8(chunks[0].body.clone()).unwrap(),
            "{\"index\":{\"_id\":\"a\",\"_index\":\"pickup_count\",\"version\":1,\"version_type\":\"external_gte\"}}\n{\"pad\":\"x\"}\n"
        );
    }

    #[test]
    fn chunks_respect_document_and_byte_bounds() {
        let docs: Vec<Document> = (0..10).map(|i| doc(&i.to_string(), 100)).collect();
        let all: Vec<usize> = (0..10).collect();
        let by_count = encode_chunks(&docs, &all, BulkLimits { max_bytes: 1 << 20, max_documents: 3 });
        assert_eq!(by_count.iter().map(|c| c.documents.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        let by_bytes = encode_chunks(&docs, &all, BulkLimits { max_bytes: 400, max_documents: 1000 });
        assert!(by_bytes.iter().all(|c| c.body.len() <= 400));
        assert_eq!(by_bytes.iter().flat_map(|c| c.documents.clone()).collect::<Vec<_>>(), all, "every document once, in order");
        let huge = [doc("big", 1000)];
        assert_eq!(
            encode_chunks(&huge, &[0], BulkLimits { max_bytes: 100, max_documents: 10 }).len(),
            1,
            "an oversized document travels alone"
        );
    }

    /// An Elasticsearch 7 answer with a queue-full rejection next to a success.
    const ES_PARTIAL_429: &str = r#"{"took":30,"errors":true,"items":[
        {"index":{"_index":"pickup_count","_type":"_doc","_id":"a","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
        {"index":{"_index":"pickup_count","_type":"_doc","_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of processing of [1234][indices:data/write/bulk[s][p]]: request: BulkShardRequest [[pickup_count][0]] containing [2] requests, target allocation id: x, primary term: 1 on EsThreadPoolExecutor[name = node-1/write, queue capacity = 200, org.elasticsearch.common.util.concurrent.EsThreadPoolExecutor@5e3f9a62[Running, pool size = 2, active threads = 2, queued tasks = 200, completed tasks = 12345]]"}}}]}"#;

    /// An OpenSearch answer with a mapping error (as osmem-server returns it too).
    const OPENSEARCH_MAPPER_ERROR: &str = r#"{"took":1,"errors":true,"items":[
        {"index":{"_index":"pickup_count","_id":"a","_version":2,"result":"updated","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":1,"_primary_term":1,"status":200}},
        {"index":{"_index":"pickup_count","_id":"b","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [location] of type [geo_point]","caused_by":{"type":"parse_exception","reason":"Invalid WKT format"}}}},
        {"index":{"_index":"pickup_count","_id":"c","status":503,"error":{"type":"unavailable_shards_exception","reason":"[pickup_count][0] primary shard is not active Timeout: [1m]"}}}]}"#;

    #[test]
    fn classifies_items_of_real_answers() {
        match classify_response(200, ES_PARTIAL_429.as_bytes(), 2) {
            RequestOutcome::Items(items) => {
                assert_eq!(items[0], ItemOutcome::Indexed);
                assert!(
                    matches!(&items[1], ItemOutcome::Retry { status: 429, reason } if reason.starts_with("es_rejected_execution_exception"))
                );
            }
            other => panic!("{other:?}"),
        }
        match classify_response(200, OPENSEARCH_MAPPER_ERROR.as_bytes(), 3) {
            RequestOutcome::Items(items) => {
                assert_eq!(items[0], ItemOutcome::Indexed);
                assert_eq!(
                    items[1],
                    ItemOutcome::Rejected {
                        status: 400,
                        reason: "mapper_parsing_exception: failed to parse field [location] of type [geo_point] (caused by parse_exception: Invalid WKT format)".into()
                    }
                );
                assert!(matches!(items[2], ItemOutcome::Retry { status: 503, .. }));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify_response(200, ES_PARTIAL_429.as_bytes(), 3), RequestOutcome::RetryAll { .. }), "item count mismatch");
        // An older emission landing after a newer one: the newer stays, and that is success.
        let conflict = r#"{"took":1,"errors":true,"items":[{"index":{"_index":"pickup_count","_id":"a","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[a]: version conflict, current version [7] is higher than the one provided [5]"}}}]}"#;
        assert_eq!(classify_response(200, conflict.as_bytes(), 1), RequestOutcome::Items(vec![ItemOutcome::Indexed]));
    }

    #[test]
    fn classifies_whole_request_failures() {
        let es_429 = r#"{"error":{"root_cause":[{"type":"es_rejected_execution_exception","reason":"rejected execution"}],"type":"es_rejected_execution_exception","reason":"rejected execution"},"status":429}"#;
        assert_eq!(
            classify_response(429, es_429.as_bytes(), 1),
            RequestOutcome::RetryAll { status: 429, reason: "es_rejected_execution_exception: rejected execution".into() }
        );
        let aws_403 = r#"{"message":"The security token included in the request is invalid."}"#;
        assert_eq!(
            classify_response(403, aws_403.as_bytes(), 1),
            RequestOutcome::Fatal { status: 403, reason: "The security token included in the request is invalid.".into() }
        );
        assert_eq!(classify_response(413, b"<html>Request Entity Too Large</html>", 1), RequestOutcome::TooLarge);
        assert!(matches!(classify_response(502, b"<html>Bad Gateway</html>", 1), RequestOutcome::RetryAll { status: 502, .. }));
        assert!(matches!(classify_response(200, b"{not json", 1), RequestOutcome::RetryAll { .. }));
    }
}
