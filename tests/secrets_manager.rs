//! The close-windows function's basic-auth credentials come from Secrets
//! Manager at start-up (`ES_BASIC_AUTH_SECRET`), not from its environment.
//! AWS cannot be reached here, so a stand-in answers GetSecretValue as the API
//! reference documents it (JSON 1.1 protocol, `X-Amz-Target`, SigV4 for
//! service `secretsmanager`, errors as `__type` and `Message`):
//! <https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html>,
//! <https://docs.aws.amazon.com/secretsmanager/latest/apireference/CommonErrors.html>.

use std::sync::{Arc, Mutex};

use aws_credential_types::Credentials;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use taxi_aws::secrets::{get_basic_credentials, SecretError};

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:taxi/search-AbCdEf";

/// A Secrets Manager with one secret; records the requests' headers.
async fn secrets_manager(secret_string: &'static str) -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: String| async move {
            log.lock().unwrap().push(headers.clone());
            let request: Value = serde_json::from_str(&body).unwrap_or_default();
            let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
            if target != Some("secretsmanager.GetSecretValue") || request["SecretId"].is_null() {
                return (StatusCode::BAD_REQUEST, json!({"__type": "InvalidRequestException", "Message": "bad request"}).to_string());
            }
            if request["SecretId"] != ARN {
                let message = "Secrets Manager can't find the specified secret.";
                return (StatusCode::BAD_REQUEST, json!({"__type": "ResourceNotFoundException", "Message": message}).to_string());
            }
            (StatusCode::OK, json!({"ARN": ARN, "Name": "taxi/search", "SecretString": secret_string}).to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn credentials() -> Credentials {
    Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Some("session".into()), None, "test")
}

#[tokio::test]
async fn the_secret_is_read_with_a_signed_get_secret_value_on_its_arn() {
    let (url, seen) = secrets_manager(r#"{"username":"taxi","password":"s3cret"}"#).await;
    let basic = get_basic_credentials(&url, "eu-west-1", &credentials(), ARN).await.expect("the secret");
    assert_eq!((basic.username.as_str(), basic.password.expose()), ("taxi", "s3cret"));
    assert!(!format!("{basic:?}").contains("s3cret"), "the password is never printed");
    let headers = seen.lock().unwrap()[0].clone();
    let authorization = headers["authorization"].to_str().unwrap();
    assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{authorization}");
    assert!(authorization.contains("/eu-west-1/secretsmanager/aws4_request"), "{authorization}");
    assert!(authorization.contains("x-amz-target"), "the target is signed: {authorization}");
    assert_eq!(headers["x-amz-security-token"], "session");
    assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
}

#[tokio::test]
async fn a_missing_secret_or_one_without_the_keys_is_one_clear_error() {
    let (url, _) = secrets_manager(r#"{"user":"taxi"}"#).await;
    let other = ARN.replace("AbCdEf", "XyZxYz");
    let error = get_basic_credentials(&url, "eu-west-1", &credentials(), &other).await.unwrap_err();
    assert!(matches!(&error, SecretError::Refused { status: 400, kind, .. } if kind == "ResourceNotFoundException"), "{error:?}");
    assert!(error.to_string().contains(&other), "names the secret: {error}");
    let error = get_basic_credentials(&url, "eu-west-1", &credentials(), ARN).await.unwrap_err();
    assert!(matches!(error, SecretError::NotBasicAuth { .. }), "{error:?}");
    let error = get_basic_credentials("http://127.0.0.1:9", "eu-west-1", &credentials(), ARN).await.unwrap_err();
    assert!(matches!(error, SecretError::Unreachable { .. }) && error.to_string().contains("retry may help"), "{error}");
}
