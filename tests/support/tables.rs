//! Reading back what the pipeline wrote to DynamoDB.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use taxi_aws::dynamo::DynamoStore;
use taxi_core::closer::CloserStore;
use taxi_core::shard::ShardId;
use taxi_core::window::PaneStart;

/// Every pane's partials in the table (open, pending a seal, or sealed), read
/// as the closer reads them for a re-emission and merged over shards, keyed
/// by (pane start, `<metric>#<key>`): what the closer will see.
pub async fn merged_partials(client: &Client, table: &str) -> crate::oracle::Partials {
    let (mut shards, mut panes) = (BTreeSet::new(), BTreeSet::new());
    let mut pages = client.scan().table_name(table).projection_expression("pk").into_paginator().items().send();
    while let Some(item) = pages.next().await {
        let item = item.expect("scan");
        let Some(AttributeValue::S(pk)) = item.get("pk") else { panic!("an item without a pk: {item:?}") };
        if let Some(shard) = pk.strip_prefix("S#") {
            shards.insert(ShardId(shard.to_owned()));
        } else if let Some(pane) = pk.strip_prefix("P#") {
            panes.insert(PaneStart(pane.parse().expect("pane in pk")));
        }
    }
    let store = DynamoStore::new(client.clone(), table);
    let states = store.load_shard_states(&shards.into_iter().collect::<Vec<_>>()).await.expect("reading the shard states");
    for state in states.values() {
        panes.extend(state.open_panes.keys().chain(state.sealing.keys()));
    }
    let mut merged = crate::oracle::Partials::new();
    for pane in panes {
        let sources: Vec<_> = states.iter().map(|(shard, state)| (shard.clone(), state.refs_of(pane))).collect();
        for (key, value) in store.read_pane(pane, &sources, true).await.expect("reading a pane") {
            let entry = merged.entry((pane.0, key.to_string())).or_default();
            entry.0 += value.count;
            entry.1 += value.sum_s;
        }
    }
    merged
}
