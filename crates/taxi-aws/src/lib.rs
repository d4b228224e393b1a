//! The AWS edges of the pipeline, kept thin over `taxi-core`:
//!
//! - [`dynamo`]: the DynamoDB table layout and the `PartialStore` on it.
//! - [`kinesis`]: the shard set of a stream.
//! - [`config`]: the functions' configuration from environment variables.
//! - [`aggregate_function`]: the Kinesis-fed Lambda handler.
//! - [`telemetry`]: logging set-up and metric output.

pub mod aggregate_function;
pub mod config;
pub mod dynamo;
pub mod kinesis;
pub mod telemetry;
