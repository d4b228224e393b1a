//! The closer's progress as the table holds it: the global watermark it
//! last acted on, how far windows are closed, and the dead letters kept per
//! index (docs/ARCHITECTURE.md, "DynamoDB layout").

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use taxi_aws::dynamo::{DynamoStore, PK};
use taxi_core::closer::CloserStore;
use taxi_core::documents::DocumentSettings;
use taxi_core::time::EventTime;

/// Reads the closer state and counts the dead letters of the two indices.
pub struct TableProgress {
    store: DynamoStore,
    indices: [String; 2],
}

/// What the table says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClosingProgress {
    pub watermark: Option<EventTime>,
    pub closed_through: Option<EventTime>,
    pub dead_letters: u64,
}

impl TableProgress {
    pub fn new(store: DynamoStore, documents: &DocumentSettings) -> TableProgress {
        TableProgress { store, indices: [documents.pickup_index.clone(), documents.duration_index.clone()] }
    }

    pub fn table(&self) -> &str {
        self.store.table()
    }

    pub async fn read(&self) -> Result<ClosingProgress, String> {
        let table = self.store.table();
        let state = self.store.load_closer_state().await.map_err(|e| format!("reading the closer state from {table}: {e}"))?;
        let dead_letters = self.dead_letters().await?;
        Ok(ClosingProgress { watermark: state.watermark, closed_through: state.closed_through, dead_letters })
    }

    /// The documents kept as dead letters, over both indices.
    pub async fn dead_letters(&self) -> Result<u64, String> {
        let mut dead_letters = 0;
        for index in &self.indices {
            dead_letters += self.count_partition(&format!("DLQ#{index}")).await?;
        }
        Ok(dead_letters)
    }

    /// Items in one partition, counted by DynamoDB (`Select: COUNT`, paged).
    async fn count_partition(&self, pk: &str) -> Result<u64, String> {
        let mut total = 0;
        let mut start = None;
        loop {
            let answer = self
                .store
                .client()
                .query()
                .table_name(self.store.table())
                .key_condition_expression(format!("{PK} = :pk"))
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| format!("counting {pk} in {}: {}", self.store.table(), taxi_aws::dynamo::store_error("Query", e)))?;
            total += u64::try_from(answer.count()).unwrap_or(0);
            match answer.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(total),
            }
        }
    }
}
