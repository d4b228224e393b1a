//! The Elasticsearch / OpenSearch sink: index templates on first use, `_bulk`
//! in bounded chunks (gzip optional), per-item results, retries with
//! exponential backoff and jitter within the time left, and three ways to
//! authenticate (none, HTTP basic, SigV4).

pub mod sigv4;

use std::fmt;
use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use flate2::write::GzEncoder;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Method;
use taxi_core::bulk::{classify_response, encode_chunks, BulkLimits, ItemOutcome, RequestOutcome};
use taxi_core::closer::{DeadLetter, DocumentSink, IndexReport, SinkError};
use taxi_core::documents::{index_templates, lifecycle_policies, Document, DocumentSettings};
use taxi_core::retry::backoff;
use taxi_core::time::WallTime;
use tokio::sync::OnceCell;

use crate::secrets::Password;

pub use sigv4::SigV4Service;

/// First retry after this; doubled each round, up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How requests are authenticated.
#[derive(Clone)]
pub enum SearchAuth {
    /// A local endpoint.
    None,
    Basic {
        username: String,
        password: Password,
    },
    /// Amazon OpenSearch Service or Serverless, with the default credential chain.
    SigV4 {
        service: SigV4Service,
        region: String,
        credentials: SharedCredentialsProvider,
    },
}

impl fmt::Debug for SearchAuth {
    /// Never prints a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchAuth::None => f.write_str("None"),
            SearchAuth::Basic { username, .. } => write!(f, "Basic {{ username: {username:?}, password: <redacted> }}"),
            SearchAuth::SigV4 { service, region, .. } => write!(f, "SigV4 {{ service: {service:?}, region: {region:?} }}"),
        }
    }
}

/// Where and how documents are indexed.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// `https://host[:port]`, without a trailing slash.
    pub endpoint: String,
    pub auth: SearchAuth,
    pub documents: DocumentSettings,
    pub limits: BulkLimits,
    pub gzip: bool,
    /// Accept any certificate (a local endpoint with a self-signed one). Off by default.
    pub tls_skip_verify: bool,
    pub request_timeout: Duration,
}

/// The sink over one endpoint.
pub struct SearchSink {
    http: reqwest::Client,
    config: SearchConfig,
    templates: OnceCell<()>,
    replicas: Option<u32>,
}

impl SearchSink {
    pub fn new(config: SearchConfig) -> Result<SearchSink, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .danger_accept_invalid_certs(config.tls_skip_verify)
            .build()
            .map_err(|e| SinkError::Refused(format!("building the HTTP client: {e}")))?;
        Ok(SearchSink { http, config, templates: OnceCell::new(), replicas: None })
    }

    /// Index templates that set this many replicas (`None`: the cluster's default).
    pub fn with_replicas(mut self, replicas: Option<u32>) -> SearchSink {
        self.replicas = replicas;
        self
    }

    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// Sends one request; `Err` is a transport failure (refused, timed out).
    pub async fn send(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", self.config.endpoint);
        let compress = self.config.gzip && !body.is_empty();
        let body = if compress { gzip(&body).map_err(|e| format!("gzip: {e}"))? } else { body };
        let mut headers = vec![(CONTENT_TYPE.as_str().to_owned(), content_type.to_owned())];
        if compress {
            headers.push((CONTENT_ENCODING.as_str().to_owned(), "gzip".to_owned()));
        }
        match &self.config.auth {
            SearchAuth::None => {}
            SearchAuth::Basic { username, password } => {
                headers.push((
                    AUTHORIZATION.as_str().to_owned(),
                    format!("Basic {}", base64_encode(&format!("{username}:{}", password.expose()))),
                ));
            }
            SearchAuth::SigV4 { service, region, credentials } => {
                let credentials = credentials.provide_credentials().await.map_err(|e| format!("no AWS credentials for SigV4: {e}"))?;
                let unsigned: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let signer = sigv4::Signer { service: service.name(), region, credentials: &credentials };
                let signed = signer.headers(method.as_str(), &url, &unsigned, &body, SystemTime::now()).map_err(|e| e.to_string())?;
                headers.extend(signed);
            }
        }
        let mut header_map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            header_map.insert(name, value);
        }
        let response = self.http.request(method, &url).headers(header_map).body(body).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| format!("{url}: reading the answer: {e}"))?;
        Ok((status, bytes.to_vec()))
    }

    /// Puts the index templates and, with daily indices, their lifecycle
    /// policies, once per process (idempotent).
    async fn ensure_templates(&self) -> Result<(), SinkError> {
        self.templates
            .get_or_try_init(|| async {
                let documents = &self.config.documents;
                if documents.index_retention_days.is_some() {
                    for name in [&documents.pickup_index, &documents.duration_index] {
                        self.refuse_an_index_in_the_aliases_place(name).await?;
                    }
                }
                for (name, mut body) in index_templates(documents) {
                    if let Some(replicas) = self.replicas {
                        body["template"]["settings"] = serde_json::json!({"index": {"number_of_replicas": replicas}});
                    }
                    self.put_json(&format!("/_index_template/{name}"), &body).await?;
                }
                for (id, body) in lifecycle_policies(documents) {
                    self.put_lifecycle_policy(&id, &body).await?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// A request the endpoint must take (see [`required`]).
    async fn checked(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Vec<u8>, SinkError> {
        let what = format!("{method} {path}");
        required(&what, self.send(method, path, "application/json", body).await)
    }

    async fn put_json(&self, path: &str, body: &serde_json::Value) -> Result<(), SinkError> {
        self.checked(Method::PUT, path, body.to_string().into_bytes()).await.map(|_| ())
    }

    /// With daily indices `name` is their alias, which cannot be created over
    /// an index of that name (written before `INDEX_RETENTION_DAYS` was set):
    /// every document would be refused, so the closer stops with what to do.
    async fn refuse_an_index_in_the_aliases_place(&self, name: &str) -> Result<(), SinkError> {
        let path = format!("/{name}");
        let answer = match self.send(Method::GET, &path, "application/json", Vec::new()).await {
            Ok((404, _)) => return Ok(()),
            other => required(&format!("GET {path}"), other)?,
        };
        // The answer is keyed by the concrete indices the name resolves to.
        let indices: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        if indices.get(name).is_some() {
            return Err(SinkError::Refused(format!(
                "INDEX_RETENTION_DAYS is set, so `{name}` must be the alias of daily indices, but an index named `{name}` exists \
                 (written with INDEX_RETENTION_DAYS=0): reindex it into `{name}-yyyy.mm.dd` indices and delete it, or set INDEX_RETENTION_DAYS=0"
            )));
        }
        Ok(())
    }

    /// Creates or updates an Index State Management policy. OpenSearch refuses
    /// to overwrite a policy without its sequence number and primary term
    /// (https://docs.opensearch.org/latest/im-plugin/ism/api/#update-policy), so
    /// an existing one is read first. An endpoint without ISM (Elasticsearch,
    /// OpenSearch Serverless) gets a warning: its indices are then not deleted by themselves.
    async fn put_lifecycle_policy(&self, id: &str, body: &serde_json::Value) -> Result<(), SinkError> {
        let path = format!("/_plugins/_ism/policies/{id}");
        let bytes = body.to_string().into_bytes();
        match self.send(Method::PUT, &path, "application/json", bytes.clone()).await {
            Ok((200..=299, _)) => Ok(()),
            Ok((409, _)) => {
                let current: serde_json::Value =
                    serde_json::from_slice(&self.checked(Method::GET, &path, Vec::new()).await?).unwrap_or_default();
                let (Some(seq_no), Some(primary_term)) = (current["_seq_no"].as_u64(), current["_primary_term"].as_u64()) else {
                    return Err(SinkError::Unavailable(format!("GET {path}: no _seq_no and _primary_term in {current}")));
                };
                self.checked(Method::PUT, &format!("{path}?if_seq_no={seq_no}&if_primary_term={primary_term}"), bytes).await.map(|_| ())
            }
            Ok((status, answer)) if matches!(status, 404 | 405) || is_missing_handler(&answer) => {
                tracing::warn!(
                    policy = id,
                    status,
                    "the endpoint has no Index State Management API (_plugins/_ism): the daily indices of INDEX_RETENTION_DAYS are not deleted by themselves (on Elasticsearch, attach an ILM policy to the index template)"
                );
                Ok(())
            }
            other => required(&format!("PUT {path}"), other).map(|_| ()),
        }
    }
}

/// The answer to a request the endpoint must take: 2xx gives its body, 401/403
/// is a configuration to fix, anything else (or no answer) is worth a retry.
fn required(what: &str, answer: Result<(u16, Vec<u8>), String>) -> Result<Vec<u8>, SinkError> {
    match answer {
        Ok((200..=299, body)) => Ok(body),
        Ok((status @ (401 | 403), body)) => Err(SinkError::Refused(format!("{what}: {status} {}", String::from_utf8_lossy(&body)))),
        Ok((status, body)) => Err(SinkError::Unavailable(format!("{what}: {status} {}", String::from_utf8_lossy(&body)))),
        Err(e) => Err(SinkError::Unavailable(e)),
    }
}

/// Whether an answer says the endpoint has no handler for the path (an API it lacks).
fn is_missing_handler(answer: &[u8]) -> bool {
    String::from_utf8_lossy(answer).contains("no handler found")
}

impl DocumentSink for SearchSink {
    async fn index(&self, documents: &[Document], deadline: WallTime) -> Result<IndexReport, SinkError> {
        self.ensure_templates().await?;
        let mut report = IndexReport::default();
        let mut pending: Vec<usize> = (0..documents.len()).collect();
        let mut limits = self.config.limits;
        for round in 0u32.. {
            let mut again = Vec::new();
            let mut last_problem = String::new();
            for chunk in encode_chunks(documents, &pending, limits) {
                let answer = self.send(Method::POST, "/_bulk", "application/x-ndjson", chunk.body).await;
                let outcome = match answer {
                    Ok((status, body)) => classify_response(status, &body, chunk.documents.len()),
                    Err(e) => RequestOutcome::RetryAll { status: 0, reason: e },
                };
                match outcome {
                    RequestOutcome::Items(items) => {
                        for (position, item) in chunk.documents.iter().zip(items) {
                            match item {
                                ItemOutcome::Indexed => report.indexed += 1,
                                ItemOutcome::Retry { status, reason } => {
                                    last_problem = format!("{status} {reason}");
                                    again.push(*position);
                                }
                                ItemOutcome::Rejected { status, reason } => {
                                    report.rejected.push(DeadLetter { document: documents[*position].clone(), status, reason });
                                }
                            }
                        }
                    }
                    RequestOutcome::RetryAll { status, reason } => {
                        last_problem = format!("{status} {reason}");
                        again.extend(chunk.documents);
                    }
                    RequestOutcome::TooLarge if chunk.documents.len() > 1 => {
                        // Halve the request size until the endpoint takes it.
                        limits.max_documents = (chunk.documents.len() / 2).max(1);
                        limits.max_bytes = (limits.max_bytes / 2).max(1);
                        last_problem = "413 request too large".into();
                        again.extend(chunk.documents);
                    }
                    RequestOutcome::TooLarge => {
                        let position = chunk.documents[0];
                        report.rejected.push(DeadLetter {
                            document: documents[position].clone(),
                            status: 413,
                            reason: "larger than the endpoint accepts".into(),
                        });
                    }
                    RequestOutcome::Fatal { status, reason } => return Err(SinkError::Refused(format!("{status} {reason}"))),
                }
            }
            if again.is_empty() {
                return Ok(report);
            }
            let backoff = backoff(round + 1, BASE_BACKOFF, MAX_BACKOFF, fastrand::f64());
            if WallTime::now().0 + backoff.as_millis() as i64 >= deadline.0 {
                return Err(SinkError::Unavailable(format!(
                    "{} documents still unacknowledged at the deadline; last problem: {last_problem}",
                    again.len()
                )));
            }
            tracing::warn!(documents = again.len(), round, backoff_ms = backoff.as_millis() as u64, problem = %last_problem, "retrying documents");
            report.retried += again.len() as u64;
            tokio::time::sleep(backoff).await;
            pending = again;
        }
        unreachable!("the loop returns")
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let auth = SearchAuth::Basic { username: "admin".into(), password: Password::new("hunter2") };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzip(b"{\"a\":1}\n").unwrap()[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "{\"a\":1}\n");
    }
}
