//! The pure core of the taxi pipeline: everything that decides *what* the
//! results are, with no I/O of its own.
//!
//! - [`event`]: decoding of trip and watermark events, validity rules.
//! - [`geo`]: the city and airport areas and geohash pickup cells.
//! - [`window`]: event-time panes and the tumbling / sliding windows built from them.
//! - [`seq`]: Kinesis sequence numbers, ordered and stored fixed-width.
//! - [`aggregate`]: per-batch pre-aggregation keyed by (pane, metric, key).
//! - [`closing`]: the global watermark over live shards, windows to close, merging.
//! - [`closer`]: the close-windows algorithm over its store, shard source and sink.
//! - [`documents`]: the documents of a closed window, and the index templates.
//! - [`bulk`]: `_bulk` NDJSON chunks and the classification of the answers.
//! - [`watermark`]: per-shard watermark rules (producer and bounded modes).
//! - [`shard`]: the durable per-shard state and its counters.
//! - [`delivery`]: a Kinesis event source mapping's batching and retries, as a pure state machine.
//! - [`ingest`]: the exactly-once batch algorithm over a [`store::PartialStore`].
//! - [`pack`]: partials in packed form, and the pane log that holds them.
//! - [`store`]: the store trait, plus an in-memory store with fault injection.
//! - [`metrics`]: per-batch metrics and their CloudWatch EMF encoding.
//! - [`config`]: analytics settings parsed from environment-style lookups.
//! - [`tlc`]: TLC CSV rows to trip events (New York local time to UTC).
//! - [`replay`]: the producer's reorder buffer, watermark tracker and pacing.
//! - [`retry`]: exponential backoff with jitter, shared by every retrying client.
//! - [`batch`]: batch mode's chunk pre-aggregation and streaming window finisher.

pub mod aggregate;
pub mod batch;
pub mod bulk;
pub mod closer;
pub mod closing;
pub mod config;
pub mod counts;
pub mod delivery;
pub mod documents;
pub mod event;
pub mod expiry;
pub mod geo;
pub mod ingest;
pub mod metrics;
pub mod pack;
pub mod replay;
pub mod retry;
pub mod seq;
pub mod shard;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod tlc;
pub mod watermark;
pub mod window;
