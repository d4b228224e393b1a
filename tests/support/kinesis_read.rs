//! Reading a Kinesis stream back, shard by shard, from its oldest record.

use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;

/// One shard's records (their data), in sequence order.
#[derive(Clone, Debug)]
pub struct ShardRecords {
    pub shard_id: String,
    pub records: Vec<Vec<u8>>,
}

/// Every record of every shard (GetShardIterator TRIM_HORIZON + GetRecords,
/// until a shard is caught up).
pub async fn read_all_shards(client: &Client, stream: &str) -> Vec<ShardRecords> {
    let mut shards = Vec::new();
    let listed = client.list_shards().stream_name(stream).send().await.expect("ListShards");
    for shard in listed.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator
            .expect("a shard iterator");
        let mut records = Vec::new();
        loop {
            let page = client.get_records().shard_iterator(&iterator).limit(10_000).send().await.expect("GetRecords");
            records.extend(page.records().iter().map(|r| r.data().as_ref().to_vec()));
            let caught_up = page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0;
            match page.next_shard_iterator() {
                Some(next) if !caught_up => iterator = next.to_owned(),
                _ => break,
            }
        }
        shards.push(ShardRecords { shard_id: shard.shard_id().to_owned(), records });
    }
    shards
}
