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
use taxi_core::documents::{index_templates, Document, DocumentSettings};
use taxi_core::retry::backoff;
use taxi_core::time::WallTime;
use tokio::sync::OnceCell;

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
        password: String,
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
                headers.push((AUTHORIZATION.as_str().to_owned(), format!("Basic {}", base64_encode(&format!("{username}:{password}")))));
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

    /// Puts the index templates once per process (idempotent: a PUT replaces).
    async fn ensure_templates(&self) -> Result<(), SinkError> {
        self.templates
            .get_or_try_init(|| async {
                for (name, mut body) in index_templates(&self.config.documents) {
                    if let Some(replicas) = self.replicas {
                        body["template"]["settings"] = serde_json::json!({"index": {"number_of_replicas": replicas}});
                    }
                    let path = format!("/_index_template/{name}");
                    match self.send(Method::PUT, &path, "application/json", body.to_string().into_bytes()).await {
                        Ok((200..=299, _)) => {}
                        Ok((status @ (401 | 403), body)) => {
                            return Err(SinkError::Refused(format!("PUT {path}: {status} {}", String::from_utf8_lossy(&body))));
                        }
                        Ok((status, body)) => {
                            return Err(SinkError::Unavailable(format!("PUT {path}: {status} {}", String::from_utf8_lossy(&body))))
                        }
                        Err(e) => return Err(SinkError::Unavailable(e)),
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }
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
        let auth = SearchAuth::Basic { username: "admin".into(), password: "hunter2".into() };
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
