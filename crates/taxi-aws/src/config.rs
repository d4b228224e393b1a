//! Configuration of the functions from environment variables, validated at
//! start-up. The README's configuration table lists every variable.

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use taxi_core::config::{ConfigError, EnvReader};
use taxi_core::ingest::IngestSettings;

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
