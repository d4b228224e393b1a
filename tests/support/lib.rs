//! Shared support for the integration tests and benchmarks:
//!
//! - [`standins`]: DynamoDB Local, kinesalite and osmem-server (or the
//!   endpoints given in the environment) and clients for them.
//! - [`tables`]: reading back what the pipeline wrote to DynamoDB.
//! - [`browser`]: a real headless Chromium over the DevTools protocol.
//! - [`fault_proxy`]: a proxy that refuses bulk items with 429 for a while.
//! - [`pipeline`]: a whole deployment on the stand-ins, for the closer's tests.
//! - [`kinesis`]: the real sample turned into Lambda-shaped Kinesis batches.
//! - [`kinesis_read`]: every record of every shard of a stream, read back.
//! - [`lambda_watch`]: the real function binaries under `cargo lambda watch`.
//! - [`oracle`]: the expected aggregates, computed straight from the CSV with
//!   none of the pipeline's code.

pub mod browser;
pub mod fault_proxy;
pub mod kinesis;
pub mod kinesis_read;
pub mod lambda_watch;
pub mod oracle;
pub mod pipeline;
pub mod standins;
pub mod tables;

use std::path::PathBuf;

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The bundled real sample: one hour of January 2015 TLC trips.
pub fn sample_path() -> PathBuf {
    workspace_root().join("data/yellow_tripdata_2015-01-10_0000-0100.csv.gz")
}

/// The first 1,000 rows of the sample.
pub fn fixture_path() -> PathBuf {
    workspace_root().join("data/yellow_tripdata_2015-01-10_fixture_1000.csv")
}
