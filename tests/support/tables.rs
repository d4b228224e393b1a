//! Reading back what the pipeline wrote to DynamoDB.

use aws_sdk_dynamodb::Client;

/// Every partial in the table, merged over shards: what the closer will read.
pub async fn merged_partials(client: &Client, table: &str) -> crate::oracle::Partials {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut merged = crate::oracle::Partials::new();
    let mut pages = client.scan().table_name(table).into_paginator().items().send();
    while let Some(item) = pages.next().await {
        let item = item.expect("scan");
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => s.clone(),
            other => panic!("attribute {name} is {other:?}"),
        };
        let pk = text("pk");
        let Some(rest) = pk.strip_prefix("P#") else { continue };
        let pane: i64 = rest.split('#').next().and_then(|p| p.parse().ok()).expect("pane in pk");
        let entry = merged.entry((pane, text("sk"))).or_default();
        entry.0 += text("count").parse::<u64>().unwrap();
        entry.1 += text("sum_s").parse::<u64>().unwrap();
    }
    merged
}
