//! The two functions as the local runner calls them: in this process (the
//! same handler code the Lambda binaries run), or through the Lambda invoke
//! API of an endpoint such as `cargo lambda watch`, so the real binaries can
//! be exercised too.

use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;
use taxi_aws::aggregate_function::AggregateFunction;
use taxi_aws::close_windows_function::{close_windows, CloseAnswer, Repeat};
use taxi_aws::dynamo::DynamoStore;
use taxi_aws::kinesis::KinesisShards;
use taxi_aws::search::SearchSink;
use taxi_core::closer::Closer;
use taxi_core::time::WallTime;

/// An invocation that did not return an answer.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The function ran and failed (or the emulator made it look so).
    #[error("the function failed: {0}")]
    Function(String),
    /// The invoke endpoint could not be reached or answered nonsense.
    #[error("invoking {url}: {message}")]
    Endpoint { url: String, message: String },
}

/// The Lambda invoke API of one endpoint (`POST /2015-03-31/functions/NAME/invocations`).
pub struct LambdaInvokeApi {
    http: reqwest::Client,
    endpoint: String,
}

impl LambdaInvokeApi {
    /// A generous timeout: a function under `cargo lambda watch` may be compiled on first call.
    pub fn new(endpoint: &str) -> Result<LambdaInvokeApi, InvokeError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| InvokeError::Endpoint { url: endpoint.clone(), message: e.to_string() })?;
        Ok(LambdaInvokeApi { http, endpoint })
    }

    pub async fn invoke<In: Serialize, Out: DeserializeOwned>(&self, function: &str, payload: &In) -> Result<Out, InvokeError> {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.endpoint);
        let endpoint_error = |message: String| InvokeError::Endpoint { url: url.clone(), message };
        let response = self.http.post(&url).json(payload).send().await.map_err(|e| endpoint_error(e.to_string()))?;
        let status = response.status();
        // Lambda answers 200 with this header when the function itself failed.
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response.bytes().await.map_err(|e| endpoint_error(e.to_string()))?;
        if function_error || status.is_server_error() {
            return Err(InvokeError::Function(String::from_utf8_lossy(&body).into_owned()));
        }
        if !status.is_success() {
            return Err(endpoint_error(format!("{status}: {}", String::from_utf8_lossy(&body))));
        }
        serde_json::from_slice(&body).map_err(|e| endpoint_error(format!("an answer that is not the expected JSON: {e}")))
    }
}

/// The aggregate function, wherever it runs.
pub enum AggregateInvoker {
    InProcess(AggregateFunction<DynamoStore>),
    Remote { api: LambdaInvokeApi, function: String },
}

impl AggregateInvoker {
    pub async fn invoke(&self, event: &KinesisEvent) -> Result<KinesisEventResponse, InvokeError> {
        match self {
            AggregateInvoker::InProcess(function) => Ok(function.handle(event.clone(), WallTime::now()).await),
            AggregateInvoker::Remote { api, function } => api.invoke(function, event).await,
        }
    }
}

/// The close-windows function, in this process: one pass per scheduled
/// invocation, with the deadline a Lambda timeout would give.
pub struct CloseWindowsInvoker {
    pub closer: Closer<DynamoStore, KinesisShards, SearchSink>,
    pub timeout: Duration,
}

impl CloseWindowsInvoker {
    pub async fn invoke(&self) -> Result<CloseAnswer, InvokeError> {
        let deadline = WallTime(WallTime::now().0 + self.timeout.as_millis() as i64);
        let one_pass = Repeat { recheck_interval: Duration::from_secs(1), keep_running: Duration::ZERO };
        Ok(close_windows(&self.closer, deadline, one_pass, None).await)
    }
}
