//! The shard set as kinesalite reports it, before and after a split.

use std::time::Duration;

use taxi_aws::kinesis::{list_shards, wait_until_active, KinesisError};
use taxi_integration_tests::standins::{kinesis_client, unique_name};

async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    wait_until_active(client, stream, Duration::from_secs(10)).await.expect("the stream becomes active");
}

#[tokio::test]
async fn lists_open_and_closed_shards_with_parents() {
    let client = kinesis_client();
    let stream = unique_name("shards");
    client.create_stream().stream_name(&stream).shard_count(4).send().await.expect("create stream");
    wait_active(&client, &stream).await;

    let shards = list_shards(&client, &stream).await.unwrap();
    assert_eq!(shards.len(), 4);
    assert!(shards.iter().all(|s| !s.closed && s.parent.is_none()));
    assert_eq!(shards[0].starting_hash_key, "0");

    // Split the first shard in the middle of its hash range.
    let first = &shards[0];
    let middle = (u128::MAX / 8).to_string();
    client.split_shard().stream_name(&stream).shard_to_split(first.id.as_str()).new_starting_hash_key(&middle).send().await.expect("split");
    wait_active(&client, &stream).await;

    let after = list_shards(&client, &stream).await.unwrap();
    assert_eq!(after.len(), 6);
    let parent = after.iter().find(|s| s.id == first.id).unwrap();
    assert!(parent.closed, "the split shard is closed");
    let children: Vec<_> = after.iter().filter(|s| s.parent.as_ref() == Some(&first.id)).collect();
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|c| !c.closed));
    assert!(children.iter().any(|c| c.starting_hash_key == middle));

    match list_shards(&client, "no-such-stream").await {
        Err(KinesisError::StreamNotFound { stream, .. }) => assert_eq!(stream, "no-such-stream"),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn waiting_for_a_missing_stream_ends_with_the_reason() {
    let client = kinesis_client();
    let stream = unique_name("missing");
    let error = wait_until_active(&client, &stream, Duration::from_millis(300)).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, KinesisError::Unavailable { .. }), "{message}");
    assert!(message.contains("not active after 300ms") && message.contains("does not exist"), "{message}");
}
