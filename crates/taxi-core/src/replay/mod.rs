//! The producer's pure logic: what `taxi-pipeline replay` sends, in which
//! order, when, and which watermark it may claim.
//!
//! - [`trip`]: input trips (TLC CSV rows or JSON lines) with parsed times, and
//!   why a row is skipped.
//! - [`reorder`]: the reorder buffer that turns pickup-ordered input into
//!   dropoff order with bounded memory.
//! - [`tracker`]: the watermark a producer may send, given which trips Kinesis
//!   has acknowledged.
//! - [`schedule`]: pacing, time shifting and tiling arithmetic, retry backoff.

pub mod reorder;
pub mod schedule;
pub mod tracker;
pub mod trip;
