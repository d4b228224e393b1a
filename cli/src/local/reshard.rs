//! The reshard fault: the producer's stream, which splits a shard once a
//! given number of trips has been written, while the replay goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use taxi_aws::kinesis::{wait_until_active, KinesisError};
use taxi_aws::kinesis_writer::{EntryFailure, KinesisStream, PutEntry, RecordStream};
use taxi_core::shard::StreamShard;
use tokio::sync::OnceCell;

/// A [`KinesisStream`] that splits its first open shard in two, in the
/// middle of its hash key range, after `split_after` accepted records.
pub struct SplittingStream {
    inner: KinesisStream,
    client: Client,
    stream: String,
    split_after: u64,
    accepted: AtomicU64,
    split: OnceCell<()>,
}

impl SplittingStream {
    pub fn new(client: Client, stream: &str, split_after: u64) -> SplittingStream {
        SplittingStream {
            inner: KinesisStream::new(client.clone(), stream),
            client,
            stream: stream.to_owned(),
            split_after,
            accepted: AtomicU64::new(0),
            split: OnceCell::new(),
        }
    }

    async fn split_first_open_shard(&self) -> Result<(), KinesisError> {
        let listed = self
            .client
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk("ListShards", &self.stream, e))?;
        let open = listed.shards().iter().find(|s| s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_none());
        let Some(shard) = open else { return Ok(()) };
        let range = shard.hash_key_range().ok_or_else(|| KinesisError::Rejected {
            operation: "SplitShard",
            message: format!("shard {} has no hash key range", shard.shard_id()),
        })?;
        let (start, end): (u128, u128) = (range.starting_hash_key().parse().unwrap_or(0), range.ending_hash_key().parse().unwrap_or(0));
        let middle = start + (end - start) / 2 + 1;
        self.client
            .split_shard()
            .stream_name(&self.stream)
            .shard_to_split(shard.shard_id())
            .new_starting_hash_key(middle.to_string())
            .send()
            .await
            .map_err(|e| KinesisError::from_sdk("SplitShard", &self.stream, e))?;
        tracing::info!(shard = shard.shard_id(), "fault injected: shard split");
        wait_until_active(&self.client, &self.stream, Duration::from_secs(60)).await.map(drop)
    }
}

impl RecordStream for SplittingStream {
    async fn open_shards(&self) -> Result<Vec<StreamShard>, KinesisError> {
        self.inner.open_shards().await
    }

    async fn put_records(&self, entries: &[PutEntry]) -> Result<Vec<Result<(), EntryFailure>>, KinesisError> {
        let outcomes = self.inner.put_records(entries).await?;
        let accepted = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
        if self.accepted.fetch_add(accepted, Ordering::Relaxed) + accepted >= self.split_after {
            self.split.get_or_try_init(|| self.split_first_open_shard()).await?;
        }
        Ok(outcomes)
    }
}
