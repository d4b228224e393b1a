//! Configuration of the functions from environment variables, validated at
//! start-up. The README's configuration table lists every variable.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use taxi_core::bulk::BulkLimits;
use taxi_core::config::{ConfigError, EnvReader};
use taxi_core::documents::DocumentSettings;
use taxi_core::ingest::IngestSettings;

use crate::search::{SearchAuth, SearchConfig, SigV4Service};
use crate::secrets::Password;

/// Everything the aggregate function reads at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateConfig {
    /// `TABLE_NAME` (required): the DynamoDB table of partials and states.
    pub table_name: String,
    pub ingest: IngestSettings,
    /// `METRICS_NAMESPACE` (default `TaxiPipeline`): the CloudWatch namespace of the EMF metrics.
    pub metrics_namespace: String,
    /// `DYNAMODB_MAX_ATTEMPTS` (default 5, 1 to 10): SDK attempts per request,
    /// with exponential backoff and jitter between them.
    pub dynamodb_max_attempts: u32,
}

impl AggregateConfig {
    pub fn from_env() -> Result<AggregateConfig, ConfigError> {
        AggregateConfig::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<AggregateConfig, ConfigError> {
        let env = EnvReader::new(lookup);
        Ok(AggregateConfig {
            table_name: env.required("TABLE_NAME", "the DynamoDB table name")?,
            ingest: env.ingest_settings()?,
            metrics_namespace: env.string("METRICS_NAMESPACE", "TaxiPipeline"),
            dynamodb_max_attempts: env.number("DYNAMODB_MAX_ATTEMPTS", 5u32, 1, 10)?,
        })
    }
}

/// The SDK configuration from the default chain (credentials, region, and
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_DYNAMODB` for local stand-ins), with
/// the standard retry mode: exponential backoff with jitter, throttling honoured.
pub async fn sdk_config(max_attempts: u32) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::standard().with_max_attempts(max_attempts)).load().await
}

/// The AWS clients the functions use.
#[derive(Clone, Debug)]
pub struct AwsClients {
    /// Region and credentials, also for SigV4 to the search endpoint.
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kinesis: aws_sdk_kinesis::Client,
}

impl AwsClients {
    /// Both clients from one SDK configuration (on Lambda).
    pub fn new(sdk: aws_config::SdkConfig) -> AwsClients {
        AwsClients { dynamodb: aws_sdk_dynamodb::Client::new(&sdk), kinesis: aws_sdk_kinesis::Client::new(&sdk), sdk }
    }

    /// Clients of local stand-ins; `sdk` stays for SigV4 to a real search endpoint.
    pub fn standins(sdk: aws_config::SdkConfig, dynamodb_endpoint: &str, kinesis_endpoint: &str) -> AwsClients {
        AwsClients { dynamodb: standin_dynamodb_client(dynamodb_endpoint), kinesis: standin_kinesis_client(kinesis_endpoint), sdk }
    }
}

/// The stand-ins accept any credentials, but the SDK signs every request, so
/// fixed ones keep a machine without AWS credentials working.
fn standin_credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new("local", "local", None, None, "standins")
}

/// A DynamoDB client of a local stand-in (DynamoDB Local).
pub fn standin_dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(standin_credentials())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A Kinesis client of a local stand-in (kinesalite).
pub fn standin_kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(standin_credentials())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_name_is_required_and_the_rest_defaults() {
        let err = AggregateConfig::from_lookup(|_| None).unwrap_err();
        assert_eq!(err.variable, "TABLE_NAME");
        let config = AggregateConfig::from_lookup(|name| (name == "TABLE_NAME").then(|| "taxi".to_owned())).unwrap();
        assert_eq!(config.table_name, "taxi");
        assert_eq!(config.metrics_namespace, "TaxiPipeline");
        assert_eq!(config.dynamodb_max_attempts, 5);
        assert_eq!(config.ingest, IngestSettings::default());
    }

    #[test]
    fn out_of_range_attempts_are_refused() {
        let err = AggregateConfig::from_lookup(|name| match name {
            "TABLE_NAME" => Some("taxi".into()),
            "DYNAMODB_MAX_ATTEMPTS" => Some("0".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("DYNAMODB_MAX_ATTEMPTS=\"0\" is invalid: expected a whole number from 1 to 10"), "{err}");
    }
}

/// Why the search endpoint's authentication cannot be set up (no retry helps).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchAuthError {
    #[error("the basic-auth secret {secret_id} has not been read")]
    SecretNotRead { secret_id: String },
    #[error("SigV4 needs a region: set AWS_REGION")]
    NoRegion,
    #[error("SigV4 needs AWS credentials, and none were found")]
    NoCredentials,
}

/// How the search endpoint is authenticated (`ES_AUTH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchAuthMode {
    None,
    Basic {
        username: String,
        password: Password,
    },
    /// Basic auth with the credentials of a Secrets Manager secret, read at
    /// start-up ([`SearchEndpointConfig::read_secret`]).
    BasicFromSecret {
        secret_id: String,
    },
    SigV4 {
        service: SigV4Service,
    },
}

impl SearchAuthMode {
    /// The sink's authentication. SigV4 signs with the region and credentials
    /// of `sdk`, which only SigV4 needs (loading it looks up a region, which
    /// can take a while away from AWS).
    pub fn resolve(&self, sdk: Option<&aws_config::SdkConfig>) -> Result<SearchAuth, SearchAuthError> {
        Ok(match self {
            SearchAuthMode::None => SearchAuth::None,
            SearchAuthMode::Basic { username, password } => SearchAuth::Basic { username: username.clone(), password: password.clone() },
            SearchAuthMode::BasicFromSecret { secret_id } => return Err(SearchAuthError::SecretNotRead { secret_id: secret_id.clone() }),
            SearchAuthMode::SigV4 { service } => SearchAuth::SigV4 {
                service: *service,
                region: sdk.and_then(|sdk| sdk.region()).map(|r| r.to_string()).ok_or(SearchAuthError::NoRegion)?,
                credentials: sdk.and_then(|sdk| sdk.credentials_provider()).ok_or(SearchAuthError::NoCredentials)?,
            },
        })
    }
}

/// Where and how documents are indexed: the close-windows function's
/// variables, which `taxi-pipeline batch` reads too.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchEndpointConfig {
    /// `ES_ENDPOINT` (required): `https://host[:port]`, kept without a trailing slash.
    pub endpoint: String,
    /// `ES_AUTH` (none, basic or sigv4, default none), with `ES_BASIC_AUTH_SECRET`
    /// (a Secrets Manager secret ARN) or else `ES_USERNAME` and `ES_PASSWORD` for
    /// basic (over https:// only), `ES_SIGV4_SERVICE` (es or aoss, default es) for sigv4.
    pub auth: SearchAuthMode,
    /// `BULK_MAX_BYTES` (default 5 MiB), `BULK_MAX_DOCUMENTS` (default 1000).
    pub limits: BulkLimits,
    /// `ES_GZIP` (default true).
    pub gzip: bool,
    /// `ES_TLS_SKIP_VERIFY` (default false).
    pub tls_skip_verify: bool,
}

impl SearchEndpointConfig {
    pub fn from_reader(env: &EnvReader<impl Fn(&str) -> Option<String>>) -> Result<SearchEndpointConfig, ConfigError> {
        let endpoint =
            env.required("ES_ENDPOINT", "the Elasticsearch / OpenSearch URL, such as https://search-taxi.eu-west-1.es.amazonaws.com")?;
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(ConfigError {
                variable: "ES_ENDPOINT".into(),
                value: endpoint,
                expected: "expected a URL starting with https:// (or http:// for a local endpoint)".into(),
            });
        }
        let auth = match env.choice("ES_AUTH", "none", &["none", "basic", "sigv4"])? {
            "basic" if !endpoint.starts_with("https://") => {
                return Err(ConfigError {
                    variable: "ES_ENDPOINT".into(),
                    value: endpoint,
                    expected: "expected an https:// URL with ES_AUTH=basic (over http:// the password would travel in clear)".into(),
                })
            }
            "basic" => match Some(env.string("ES_BASIC_AUTH_SECRET", "")).filter(|s| !s.is_empty()) {
                Some(secret_id) => SearchAuthMode::BasicFromSecret { secret_id },
                None => SearchAuthMode::Basic {
                    username: env.required("ES_USERNAME", "the user name for basic auth (or set ES_BASIC_AUTH_SECRET)")?,
                    password: Password::new(env.required("ES_PASSWORD", "the password for basic auth (or set ES_BASIC_AUTH_SECRET)")?),
                },
            },
            "sigv4" => SearchAuthMode::SigV4 {
                service: match env.choice("ES_SIGV4_SERVICE", "es", &["es", "aoss"])? {
                    "aoss" => SigV4Service::Aoss,
                    _ => SigV4Service::Es,
                },
            },
            _ => SearchAuthMode::None,
        };
        Ok(SearchEndpointConfig {
            endpoint,
            auth,
            limits: BulkLimits {
                max_bytes: env.number("BULK_MAX_BYTES", 5 * 1024 * 1024usize, 1024, 100 * 1024 * 1024)?,
                max_documents: env.number("BULK_MAX_DOCUMENTS", 1000usize, 1, 100_000)?,
            },
            gzip: env.flag("ES_GZIP", true)?,
            tls_skip_verify: env.flag("ES_TLS_SKIP_VERIFY", false)?,
        })
    }

    /// With `ES_BASIC_AUTH_SECRET`, reads the secret's credentials (the region
    /// and credentials of `sdk`); other modes are left as they are.
    pub async fn read_secret(&mut self, sdk: &aws_config::SdkConfig) -> Result<(), crate::secrets::SecretError> {
        if let SearchAuthMode::BasicFromSecret { secret_id } = &self.auth {
            let basic = crate::secrets::read_basic_credentials(sdk, secret_id).await?;
            self.auth = SearchAuthMode::Basic { username: basic.username, password: basic.password };
        }
        Ok(())
    }

    /// The search sink's configuration for these documents (`sdk` as for [`SearchAuthMode::resolve`]).
    pub fn sink_config(&self, documents: DocumentSettings, sdk: Option<&aws_config::SdkConfig>) -> Result<SearchConfig, SearchAuthError> {
        Ok(SearchConfig {
            endpoint: self.endpoint.clone(),
            auth: self.auth.resolve(sdk)?,
            documents,
            limits: self.limits,
            gzip: self.gzip,
            tls_skip_verify: self.tls_skip_verify,
            request_timeout: SEARCH_REQUEST_TIMEOUT,
        })
    }
}

/// How long one request to the search endpoint may take.
const SEARCH_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the close-windows function reads at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct CloseWindowsConfig {
    /// `TABLE_NAME` (required).
    pub table_name: String,
    /// `STREAM_NAME` (required): the Kinesis stream whose shards are watched.
    pub stream_name: String,
    pub window: taxi_core::window::WindowSpec,
    pub documents: DocumentSettings,
    /// `WATERMARK_MODE` (as the aggregate function's: in producer mode a silent shard is stuck, never
    /// idle), `IDLE_SHARD_TIMEOUT_SECONDS` (default 300) and `ADVANCE_WHEN_QUIET` (default true; bounded
    /// mode only: once every shard is idle and caught up, the watermark advances with the wall clock,
    /// see [`taxi_core::closing::quiet_advance`]); [`EnvReader::idleness`].
    pub idleness: taxi_core::closing::Idleness,
    pub search: SearchEndpointConfig,
    /// `RECHECK_INTERVAL_SECONDS` (default 5): pause between passes in one invocation.
    pub recheck_interval_s: u64,
    /// `KEEP_RUNNING_SECONDS` (default 50): how long one invocation keeps re-checking; 0 = one pass.
    pub keep_running_s: u64,
    pub metrics_namespace: String,
    pub dynamodb_max_attempts: u32,
    /// `CLOSE_CHUNK_DOCUMENTS` (default 5000, 1 to 1000000): documents indexed
    /// between two durable records of a window's progress.
    pub chunk_documents: usize,
    /// `RETENTION_HOURS`, as the aggregate function's (in seconds).
    pub retention_s: i64,
    /// `CLOSE_EXPIRED_WINDOWS` (default false): close windows whose partials may have expired anyway.
    pub close_expired: bool,
    /// `INDEX_REPLICAS` (0 to 15; unset: the cluster's default): replicas of
    /// each index, set in the index templates. A one-node cluster needs 0, or
    /// the replicas are never assigned and the cluster stays yellow.
    pub index_replicas: Option<u32>,
}

impl CloseWindowsConfig {
    pub fn from_env() -> Result<CloseWindowsConfig, ConfigError> {
        CloseWindowsConfig::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<CloseWindowsConfig, ConfigError> {
        let env = EnvReader::new(lookup);
        let search = SearchEndpointConfig::from_reader(&env)?;
        Ok(CloseWindowsConfig {
            table_name: env.required("TABLE_NAME", "the DynamoDB table name")?,
            stream_name: env.required("STREAM_NAME", "the Kinesis stream name")?,
            window: env.window_spec()?,
            documents: env.document_settings()?,
            idleness: env.idleness()?,
            search,
            recheck_interval_s: env.number("RECHECK_INTERVAL_SECONDS", 5u64, 1, 600)?,
            keep_running_s: env.number("KEEP_RUNNING_SECONDS", 50u64, 0, 900)?,
            metrics_namespace: env.string("METRICS_NAMESPACE", "TaxiPipeline"),
            dynamodb_max_attempts: env.number("DYNAMODB_MAX_ATTEMPTS", 5u32, 1, 10)?,
            chunk_documents: env.number("CLOSE_CHUNK_DOCUMENTS", 5000usize, 1, 1_000_000)?,
            retention_s: env.retention_s()?,
            close_expired: env.flag("CLOSE_EXPIRED_WINDOWS", false)?,
            index_replicas: match env.string("INDEX_REPLICAS", "").as_str() {
                "" => None,
                _ => Some(env.number("INDEX_REPLICAS", 0u32, 0, 15)?),
            },
        })
    }
}

#[cfg(test)]
mod close_windows_tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn defaults_and_required_variables() {
        let config = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "http://127.0.0.1:9200/"),
        ]))
        .unwrap();
        assert_eq!(config.search.endpoint, "http://127.0.0.1:9200");
        assert_eq!(config.search.auth, SearchAuthMode::None);
        let limits = config.search.limits;
        assert_eq!((config.documents.min_count, limits.max_documents, limits.max_bytes), (2, 1000, 5 * 1024 * 1024));
        assert!(config.search.gzip && !config.search.tls_skip_verify);
        assert_eq!((config.recheck_interval_s, config.keep_running_s), (5, 50));
        assert_eq!(config.idleness, taxi_core::closing::Idleness::Never, "producer mode: a silent shard is stuck");
        assert_eq!((config.chunk_documents, config.retention_s, config.close_expired), (5000, 48 * 3600, false));
        let err = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "http://127.0.0.1:9200/"),
            ("CLOSE_CHUNK_DOCUMENTS", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("CLOSE_CHUNK_DOCUMENTS=\"0\" is invalid: expected a whole number from 1 to 1000000"), "{err}");
        let err = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "http://127.0.0.1:9200/"),
            ("ADVANCE_WHEN_QUIET", "sometimes"),
        ]))
        .unwrap_err();
        assert_eq!(err.to_string(), "configuration error: ADVANCE_WHEN_QUIET=\"sometimes\" is invalid: expected one of true, false");
        let off = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "http://127.0.0.1:9200/"),
            ("WATERMARK_MODE", "bounded"),
            ("IDLE_SHARD_TIMEOUT_SECONDS", "90"),
            ("ADVANCE_WHEN_QUIET", "False"),
        ]))
        .unwrap();
        assert_eq!(off.idleness, taxi_core::closing::Idleness::After { timeout_ms: 90_000, advance_when_quiet: false });
        let err = CloseWindowsConfig::from_lookup(lookup(&[("TABLE_NAME", "t"), ("STREAM_NAME", "s")])).unwrap_err();
        assert_eq!(err.variable, "ES_ENDPOINT");
    }

    #[test]
    fn no_configuration_dump_shows_the_password() {
        let config = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "https://x"),
            ("ES_AUTH", "basic"),
            ("ES_USERNAME", "closer"),
            ("ES_PASSWORD", "hunter2"),
        ]))
        .unwrap();
        let dump = format!("{config:?}");
        assert!(dump.contains("closer") && !dump.contains("hunter2"), "{dump}");
        let SearchAuthMode::Basic { password, .. } = &config.search.auth else { panic!("basic auth") };
        assert_eq!(password.expose(), "hunter2", "the sink still gets it");
    }

    #[test]
    fn auth_modes() {
        let config = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "https://x.aoss.amazonaws.com"),
            ("ES_AUTH", "sigv4"),
            ("ES_SIGV4_SERVICE", "aoss"),
        ]))
        .unwrap();
        assert_eq!(config.search.auth, SearchAuthMode::SigV4 { service: SigV4Service::Aoss });
        assert_eq!(config.search.auth.resolve(None).unwrap_err(), SearchAuthError::NoRegion, "SigV4 without an SDK configuration");
        let err = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "https://x"),
            ("ES_AUTH", "basic"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "ES_USERNAME");
        let secret = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "https://x"),
            ("ES_AUTH", "basic"),
            ("ES_BASIC_AUTH_SECRET", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:taxi-AbCdEf"),
        ]))
        .unwrap();
        let secret_id = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:taxi-AbCdEf".to_owned();
        assert_eq!(secret.search.auth, SearchAuthMode::BasicFromSecret { secret_id: secret_id.clone() });
        assert_eq!(
            secret.search.auth.resolve(None).unwrap_err(),
            SearchAuthError::SecretNotRead { secret_id },
            "not used before it is read"
        );
        let err = CloseWindowsConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("STREAM_NAME", "s"),
            ("ES_ENDPOINT", "http://search.example.com"),
            ("ES_AUTH", "basic"),
            ("ES_USERNAME", "u"),
            ("ES_PASSWORD", "p"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "ES_ENDPOINT");
        assert!(err.to_string().contains("in clear"), "basic auth over http:// is refused: {err}");
        let err =
            CloseWindowsConfig::from_lookup(lookup(&[("TABLE_NAME", "t"), ("STREAM_NAME", "s"), ("ES_ENDPOINT", "ftp://x")])).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }
}
