//! The shard set as kinesalite reports it, before and after a split.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use taxi_aws::kinesis::{caught_up, list_shards, wait_until_active, KinesisError};
use taxi_core::seq::SeqNum;
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

/// The quiet rule's question to Kinesis: is there a record after the last one
/// applied? Asked of kinesalite: an empty shard, one with records after the
/// given one, one read to its end, and a split parent read to its end.
#[tokio::test]
async fn a_shard_is_caught_up_only_with_no_record_after_the_last_applied() {
    let client = kinesis_client();
    let stream = unique_name("caught-up");
    client.create_stream().stream_name(&stream).shard_count(1).send().await.expect("create stream");
    wait_active(&client, &stream).await;
    let shard = list_shards(&client, &stream).await.unwrap().remove(0).id;
    assert!(caught_up(&client, &stream, &shard, None).await.unwrap(), "an empty shard");

    let mut seqs = Vec::new();
    for i in 0..3 {
        let put = client.put_record().stream_name(&stream).partition_key("k").data(Blob::new(format!("{i}"))).send().await.unwrap();
        seqs.push(SeqNum::parse(put.sequence_number()).unwrap());
    }
    assert!(!caught_up(&client, &stream, &shard, None).await.unwrap(), "records, none applied");
    assert!(!caught_up(&client, &stream, &shard, Some(&seqs[1])).await.unwrap(), "one record after the last applied");
    assert!(caught_up(&client, &stream, &shard, Some(&seqs[2])).await.unwrap(), "every record applied");

    // A split closes the shard: read to its end, it is caught up; with a record unapplied, not.
    let middle = (u128::MAX / 2).to_string();
    client.split_shard().stream_name(&stream).shard_to_split(shard.as_str()).new_starting_hash_key(&middle).send().await.expect("split");
    wait_active(&client, &stream).await;
    assert!(caught_up(&client, &stream, &shard, Some(&seqs[2])).await.unwrap(), "a closed shard read to its end");
    assert!(!caught_up(&client, &stream, &shard, Some(&seqs[0])).await.unwrap(), "a closed shard with records unapplied");
    assert!(caught_up(&client, "no-such-stream", &shard, None).await.is_err(), "an error, which the closer takes as not caught up");
}
