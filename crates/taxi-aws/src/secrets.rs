//! Basic-auth credentials read from AWS Secrets Manager when the close-windows
//! function starts, so the password is in neither the template's nor the
//! function's configuration: `GetSecretValue` on the secret's ARN, the one
//! action the function's role is granted on it.
//!
//! The request is the documented JSON protocol, signed with SigV4 (service
//! `secretsmanager`), over the search sink's HTTP client rather than the SDK
//! crate, which would add a long compile for one call:
//! <https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html>,
//! <https://docs.aws.amazon.com/secretsmanager/latest/apireference/CommonErrors.html>.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use serde::Deserialize;

use crate::search::sigv4::Signer;

/// How long the request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading the secret {secret} needs a region: set AWS_REGION")]
    NoRegion { secret: String },
    #[error("reading the secret {secret} needs AWS credentials: {reason}")]
    NoCredentials { secret: String, reason: String },
    /// The service could not be reached; a later start may succeed.
    #[error("reading the secret {secret} from {url} failed (retry may help): {reason}")]
    Unreachable { secret: String, url: String, reason: String },
    /// Secrets Manager answered with an error (no such secret, access denied, ...).
    #[error("Secrets Manager refused GetSecretValue on {secret}: {status} {kind}: {message}")]
    Refused { secret: String, status: u16, kind: String, message: String },
    #[error("the secret {secret} is not a JSON object with string \"username\" and \"password\" keys")]
    NotBasicAuth { secret: String },
}

/// A password: cloned and compared like a string, never printed (its
/// `Debug` says `<redacted>`, so no configuration dump or log shows it).
/// Hand-written rather than `secrecy::SecretString`, which has no `PartialEq`:
/// the configurations that hold it are compared whole in tests.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and password from the secret's `username` and `password` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicCredentials {
    pub username: String,
    pub password: Password,
}

/// Reads the secret `secret_id` (an ARN) with the region and credentials of
/// `sdk`, from its Secrets Manager endpoint (`AWS_ENDPOINT_URL_SECRETS_MANAGER`
/// or `AWS_ENDPOINT_URL` when set, as the SDKs do; otherwise the region's).
pub async fn read_basic_credentials(sdk: &aws_config::SdkConfig, secret_id: &str) -> Result<BasicCredentials, SecretError> {
    let secret = || secret_id.to_owned();
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| SecretError::NoRegion { secret: secret() })?;
    let provider =
        sdk.credentials_provider().ok_or_else(|| SecretError::NoCredentials { secret: secret(), reason: "none found".into() })?;
    let credentials =
        provider.provide_credentials().await.map_err(|e| SecretError::NoCredentials { secret: secret(), reason: e.to_string() })?;
    let url = std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|_| format!("https://secretsmanager.{region}.amazonaws.com"));
    get_basic_credentials(&url, &region, &credentials, secret_id).await
}

/// `GetSecretValue` of `secret_id` at the Secrets Manager endpoint `url`.
pub async fn get_basic_credentials(
    url: &str,
    region: &str,
    credentials: &aws_credential_types::Credentials,
    secret_id: &str,
) -> Result<BasicCredentials, SecretError> {
    let secret = secret_id.to_owned();
    let url = format!("{}/", url.trim_end_matches('/'));
    let body = serde_json::json!({ "SecretId": secret_id }).to_string().into_bytes();
    let unsigned = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "secretsmanager.GetSecretValue")];
    let signer = Signer { service: "secretsmanager", region, credentials };
    let unreachable = |reason: String| SecretError::Unreachable { secret: secret.clone(), url: url.clone(), reason };
    let signed = signer.headers("POST", &url, &unsigned, &body, SystemTime::now()).map_err(|e| unreachable(e.to_string()))?;
    let http = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| unreachable(e.to_string()))?;
    let mut request = http.post(&url).body(body);
    for (name, value) in unsigned.iter().map(|(n, v)| (n.to_string(), v.to_string())).chain(signed) {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let answer = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if !(200..300).contains(&status) {
        #[derive(Deserialize, Default)]
        struct ErrorAnswer {
            #[serde(rename = "__type", default)]
            kind: String,
            #[serde(alias = "Message", default)]
            message: String,
        }
        let error: ErrorAnswer = serde_json::from_slice(&answer).unwrap_or_default();
        let kind = error.kind.rsplit('#').next().unwrap_or_default().to_owned();
        return Err(SecretError::Refused { secret, status, kind, message: error.message });
    }
    #[derive(Deserialize)]
    struct SecretValue {
        #[serde(rename = "SecretString")]
        secret_string: Option<String>,
    }
    #[derive(Deserialize)]
    struct Basic {
        username: String,
        password: String,
    }
    let not_basic = || SecretError::NotBasicAuth { secret: secret.clone() };
    let value: SecretValue = serde_json::from_slice(&answer).map_err(|_| not_basic())?;
    let basic: Basic = serde_json::from_str(&value.secret_string.ok_or_else(not_basic)?).map_err(|_| not_basic())?;
    Ok(BasicCredentials { username: basic.username, password: Password::new(basic.password) })
}
