//! Reading back what the pipeline wrote to DynamoDB.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use taxi_aws::dynamo::DynamoStore;
use taxi_core::closer::CloserStore;
use taxi_core::shard::ShardId;
use taxi_core::window::PaneStart;

/// Every pane log in the table, read as the closer reads them and merged over
/// shards, keyed by (pane start, `<metric>#<key>`): what the closer will see.
pub async fn merged_partials(client: &Client, table: &str) -> crate::oracle::Partials {
    let mut logs = BTreeSet::new();
    let mut pages = client.scan().table_name(table).projection_expression("pk").into_paginator().items().send();
    while let Some(item) = pages.next().await {
        let item = item.expect("scan");
        let Some(AttributeValue::S(pk)) = item.get("pk") else { panic!("an item without a pk: {item:?}") };
        let Some((pane, shard)) = pk.strip_prefix("P#").and_then(|rest| rest.split_once('#')) else { continue };
        logs.insert((PaneStart(pane.parse().expect("pane in pk")), ShardId(shard.to_owned())));
    }
    let store = DynamoStore::new(client.clone(), table);
    let mut merged = crate::oracle::Partials::new();
    for (pane, shard) in logs {
        for (key, value) in store.read_partials(pane, &shard).await.expect("reading a pane log") {
            let entry = merged.entry((pane.0, key.to_string())).or_default();
            entry.0 += value.count;
            entry.1 += value.sum_s;
        }
    }
    merged
}
