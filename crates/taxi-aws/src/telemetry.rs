//! Logging and metric output.

use taxi_core::metrics::BatchMetrics;

/// `tracing` to stdout: JSON when Lambda's log format is JSON
/// (`AWS_LAMBDA_LOG_FORMAT`), level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_lambda_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// Writes one CloudWatch Embedded Metric Format line to stdout, where Lambda
/// turns it into metrics. It bypasses `tracing` because EMF must be the whole line.
pub fn emit_emf(metrics: &BatchMetrics, namespace: &str, function: &str) {
    let line = metrics.to_emf(namespace, function, chrono::Utc::now().timestamp_millis());
    println!("{line}");
}
