//! The AWS edges of the pipeline, kept thin over `taxi-core`:
//!
//! - [`dynamo`]: the DynamoDB table layout and the `PartialStore` on it.
//! - [`kinesis`]: the shard set of a stream.
//! - [`sdk`]: brief messages for AWS SDK errors.
//! - [`search`]: the Elasticsearch / OpenSearch sink (bulk, retries, SigV4).
//! - [`secrets`]: basic-auth credentials from Secrets Manager, read at start-up.
//! - [`kinesis_writer`]: the producer's PutRecords writer with per-shard watermarks.
//! - [`config`]: the functions' configuration from environment variables.
//! - [`aggregate_function`]: the Kinesis-fed Lambda handler.
//! - [`close_windows_function`]: the scheduled Lambda that closes windows.
//! - [`telemetry`]: logging set-up and metric output.

pub mod aggregate_function;
pub mod close_windows_function;
pub mod config;
pub mod dynamo;
pub mod kinesis;
pub mod kinesis_writer;
pub mod sdk;
pub mod search;
pub mod secrets;
pub mod telemetry;
