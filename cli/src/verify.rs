//! `taxi-pipeline verify`: proves on a deployment that the streaming result is
//! exact. It recomputes the documents of the input with batch mode (the same
//! core, so the same `_index`, `_id` and source the closer indexes) and
//! compares them with the indices, window by window: documents matching,
//! missing from the index, extra in it, and different (with their first
//! differing fields). It agrees, and exits 0, only when every document matches.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use taxi_aws::search::SearchSink;
use taxi_core::time::WallTime;

use crate::batch::engine::{run_batch, BatchInput, BatchProgress};
use crate::batch::{batch_settings, search_sink, BatchArgs};

/// Most documents of one window read at once (OpenSearch's default result window).
const WINDOW_PAGE: usize = 10_000;
/// Differences shown per kind.
const SHOWN: usize = 5;

/// The comparison.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verification {
    pub windows: usize,
    pub matching: usize,
    /// `_index/_id` of expected documents the index lacks.
    pub missing: Vec<String>,
    /// `_index/_id` of documents in the index that the input does not make.
    pub extra: Vec<String>,
    /// `_index/_id` and the first differing fields (`field: expected != indexed`).
    pub different: Vec<(String, Vec<String>)>,
    /// Windows with a missing, extra or different document.
    pub windows_disagreeing: BTreeSet<String>,
}

impl Verification {
    pub fn agrees(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }

    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "verify: {} windows, {} documents expected: {} matching, {} missing, {} extra, {} different",
            self.windows,
            self.matching + self.missing.len() + self.different.len(),
            self.matching,
            self.missing.len(),
            self.extra.len(),
            self.different.len()
        )];
        if !self.windows_disagreeing.is_empty() {
            let shown: Vec<&str> = self.windows_disagreeing.iter().take(SHOWN).map(String::as_str).collect();
            lines.push(format!("  windows that disagree: {} ({})", self.windows_disagreeing.len(), shown.join(", ")));
        }
        lines.extend(self.missing.iter().take(SHOWN).map(|id| format!("  missing:   {id}")));
        lines.extend(self.extra.iter().take(SHOWN).map(|id| format!("  extra:     {id}")));
        lines.extend(self.different.iter().take(SHOWN).map(|(id, fields)| format!("  different: {id}: {}", fields.join("; "))));
        lines
    }
}

pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let verification = verify(&args, |name: &str| std::env::var(name).ok()).await?;
    for line in verification.lines() {
        println!("{line}");
    }
    anyhow::ensure!(verification.agrees(), "the index does not hold exactly the documents of the input");
    Ok(())
}

/// Recomputes the documents of `args.inputs` and compares them with the indices at `args.es_endpoint`.
pub async fn verify(args: &BatchArgs, env: impl Fn(&str) -> Option<String> + Copy) -> anyhow::Result<Verification> {
    let endpoint = args.es_endpoint.as_deref().context("verify needs --es-endpoint, the endpoint whose indices are checked")?;
    anyhow::ensure!(args.output.is_none(), "verify writes no documents: --output does not apply");
    let mut settings = batch_settings(args, env, WallTime::now())?;
    // Compared through the readers' names (with daily indices, their aliases),
    // whatever INDEX_RETENTION_DAYS the deployment has: verify checks what is indexed.
    settings.documents.index_retention_days = None;
    let documents = settings.documents.clone();
    let sink = search_sink(endpoint, &documents, env).await?;
    let input = BatchInput {
        paths: args.inputs.clone(),
        format: args.format,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    // window_start -> `_index/_id` -> source
    let expected: Arc<Mutex<BTreeMap<String, BTreeMap<String, Value>>>> = Arc::default();
    let collected = Arc::clone(&expected);
    tokio::task::spawn_blocking(move || {
        run_batch(&input, settings, &BatchProgress::default(), |batch| {
            let mut windows = collected.lock().expect("not poisoned");
            for document in batch {
                let window = document.source["window_start"].as_str().unwrap_or_default().to_owned();
                windows.entry(window).or_default().insert(format!("{}/{}", document.index, document.id), document.source);
            }
            Ok::<(), Infallible>(())
        })
    })
    .await
    .context("the batch thread panicked")??;
    let expected = std::mem::take(&mut *expected.lock().expect("not poisoned"));
    let indices = [documents.pickup_index.as_str(), documents.duration_index.as_str()];
    for index in indices {
        let _ = sink.send(Method::POST, &format!("/{index}/_refresh"), "application/json", Vec::new()).await;
    }

    let mut verification = Verification { windows: expected.len(), ..Verification::default() };
    for (window, documents) in &expected {
        let mut indexed = BTreeMap::new();
        for index in indices {
            indexed.extend(search(&sink, index, json!({"term": {"window_start": window}}), WINDOW_PAGE).await?);
        }
        let before = (verification.missing.len(), verification.extra.len(), verification.different.len());
        for (id, source) in documents {
            match indexed.remove(id) {
                None => verification.missing.push(id.clone()),
                Some(found) if found == *source => verification.matching += 1,
                Some(found) => verification.different.push((id.clone(), differences(source, &found))),
            }
        }
        verification.extra.extend(indexed.into_keys());
        if before != (verification.missing.len(), verification.extra.len(), verification.different.len()) {
            verification.windows_disagreeing.insert(window.clone());
        }
    }
    // Documents of windows the input has none of.
    let windows: Vec<&String> = expected.keys().collect();
    for index in indices {
        let others = search(&sink, index, json!({"bool": {"must_not": [{"terms": {"window_start": windows}}]}}), WINDOW_PAGE).await?;
        for (id, source) in others {
            verification.windows_disagreeing.insert(source["window_start"].as_str().unwrap_or("?").to_owned());
            verification.extra.push(id);
        }
    }
    Ok(verification)
}

/// The hits of `query` in `index` as `_index/_id` -> source; an index that
/// does not exist has none. More than `limit` hits is an error (a window that
/// large cannot be checked in one page).
async fn search(sink: &SearchSink, index: &str, query: Value, limit: usize) -> anyhow::Result<BTreeMap<String, Value>> {
    let body = json!({"size": limit, "query": query, "track_total_hits": true});
    let (status, answer) = sink
        .send(Method::POST, &format!("/{index}/_search"), "application/json", body.to_string().into_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("searching {index}: {e}"))?;
    if status == 404 {
        return Ok(BTreeMap::new());
    }
    let text = String::from_utf8_lossy(&answer);
    anyhow::ensure!((200..300).contains(&status), "searching {index}: {status} {}", text.chars().take(300).collect::<String>());
    let answer: Value = serde_json::from_slice(&answer).with_context(|| format!("searching {index}: not JSON"))?;
    let hits = answer["hits"]["hits"].as_array().with_context(|| format!("searching {index}: no hits in the answer"))?;
    let total = answer["hits"]["total"]["value"].as_u64().unwrap_or(hits.len() as u64);
    anyhow::ensure!(total as usize <= hits.len(), "{index}: {total} documents for one query, more than the {limit} verify reads at once");
    Ok(hits.iter().map(|hit| (format!("{index}/{}", hit["_id"].as_str().unwrap_or_default()), hit["_source"].clone())).collect())
}

/// The fields whose values differ, as `field: expected != indexed`.
fn differences(expected: &Value, indexed: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (e, i) = (expected.as_object().unwrap_or(&empty), indexed.as_object().unwrap_or(&empty));
    let fields: BTreeSet<&String> = e.keys().chain(i.keys()).collect();
    fields
        .into_iter()
        .filter(|f| e.get(*f) != i.get(*f))
        .take(SHOWN)
        .map(|f| format!("{f}: {} != {}", e.get(f).unwrap_or(&Value::Null), i.get(f).unwrap_or(&Value::Null)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field() {
        let expected = json!({"pickup_count": 3, "geohash": "dr5ru7"});
        let indexed = json!({"pickup_count": 4, "geohash": "dr5ru7", "note": "x"});
        assert_eq!(differences(&expected, &indexed), vec!["note: null != \"x\"".to_owned(), "pickup_count: 3 != 4".to_owned()]);
    }
}
