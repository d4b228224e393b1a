//! Kinesis: the shard set of a stream.

use std::time::Duration;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use aws_sdk_kinesis::Client;
use taxi_core::closer::{ShardSource, SourceError};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, StreamShard};

#[derive(Debug, thiserror::Error)]
pub enum KinesisError {
    #[error("Kinesis stream {stream} does not exist (or this role may not describe it): {message}")]
    StreamNotFound { stream: String, message: String },
    #[error("Kinesis {operation} failed (retry may help): {message}")]
    Unavailable { operation: &'static str, message: String },
    #[error("Kinesis {operation} was refused (retry will not help until the configuration is fixed): {message}")]
    Rejected { operation: &'static str, message: String },
}

impl KinesisError {
    pub fn from_sdk<E, R>(operation: &'static str, stream: &str, error: SdkError<E, R>) -> KinesisError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = crate::sdk::error_message(&error);
        match error.code().unwrap_or_default() {
            "ResourceNotFoundException" => KinesisError::StreamNotFound { stream: stream.to_owned(), message },
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ValidationException"
            | "InvalidArgumentException" => KinesisError::Rejected { operation, message },
            _ => KinesisError::Unavailable { operation, message },
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, KinesisError::Unavailable { .. })
    }
}

/// Every shard of the stream, open and closed, with parent links (all pages).
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<StreamShard>, KinesisError> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // The API takes either the stream name or a token, never both.
        let request = match &next_token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request.send().await.map_err(|e| KinesisError::from_sdk("ListShards", stream, e))?;
        for shard in page.shards() {
            shards.push(StreamShard {
                id: ShardId(shard.shard_id().to_owned()),
                parent: shard.parent_shard_id().map(|p| ShardId(p.to_owned())),
                adjacent_parent: shard.adjacent_parent_shard_id().map(|p| ShardId(p.to_owned())),
                starting_hash_key: shard.hash_key_range().map(|r| r.starting_hash_key().to_owned()).unwrap_or_default(),
                closed: shard.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some(),
            });
        }
        match page.next_token() {
            Some(token) => next_token = Some(token.to_owned()),
            None => return Ok(shards),
        }
    }
}

/// Whether the shard holds no record after `applied` (none from its trim
/// horizon if `None`): one `GetRecords` of at most one record from there.
/// Kinesis may answer no record while some lie further on (an iterator in a
/// stretch without data) and then says so with `MillisBehindLatest` above
/// zero; zero means "caught up, no new records to process at this moment"
/// (<https://docs.aws.amazon.com/kinesis/latest/APIReference/API_GetRecords.html>).
/// A closed shard read to its end has no next iterator.
pub async fn caught_up(client: &Client, stream: &str, shard: &ShardId, applied: Option<&SeqNum>) -> Result<bool, KinesisError> {
    let request = client.get_shard_iterator().stream_name(stream).shard_id(shard.as_str());
    let request = match applied {
        Some(seq) => request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq.to_string()),
        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let iterator = request.send().await.map_err(|e| KinesisError::from_sdk("GetShardIterator", stream, e))?;
    let Some(iterator) = iterator.shard_iterator() else { return Ok(true) };
    let page =
        client.get_records().shard_iterator(iterator).limit(1).send().await.map_err(|e| KinesisError::from_sdk("GetRecords", stream, e))?;
    Ok(page.records().is_empty() && (page.millis_behind_latest() == Some(0) || page.next_shard_iterator().is_none()))
}

/// Waits until the stream is ACTIVE (after CreateStream or a reshard),
/// asking DescribeStreamSummary every 100 ms; returns the stream's ARN. A
/// failed call counts as "not yet"; after `timeout` the last answer is the error.
pub async fn wait_until_active(client: &Client, stream: &str, timeout: Duration) -> Result<String, KinesisError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match client.describe_stream_summary().stream_name(stream).send().await {
            Ok(answer) => match answer.stream_description_summary() {
                Some(summary) if summary.stream_status() == &StreamStatus::Active => return Ok(summary.stream_arn().to_owned()),
                Some(summary) => format!("it is {}", summary.stream_status().as_str()),
                None => "no stream description".to_owned(),
            },
            Err(e) => KinesisError::from_sdk("DescribeStreamSummary", stream, e).to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(KinesisError::Unavailable {
                operation: "DescribeStreamSummary",
                message: format!("stream {stream} is not active after {timeout:?}: {last}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream's shard set, for the closer.
pub struct KinesisShards {
    pub client: Client,
    pub stream: String,
}

impl ShardSource for KinesisShards {
    async fn list_shards(&self) -> Result<Vec<StreamShard>, SourceError> {
        list_shards(&self.client, &self.stream).await.map_err(|e| SourceError { request: "ListShards", source: Box::new(e) })
    }

    async fn caught_up(&self, shard: &ShardId, applied: Option<&SeqNum>) -> Result<bool, SourceError> {
        caught_up(&self.client, &self.stream, shard, applied)
            .await
            .map_err(|e| SourceError { request: "GetShardIterator and GetRecords", source: Box::new(e) })
    }
}
