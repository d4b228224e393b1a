//! Reading the indexed documents back over HTTP, through the search sink's
//! client so the three ways to authenticate (none, basic, SigV4) are the
//! close-windows function's. Only what every Elasticsearch and OpenSearch
//! version has: `_search` with bool/term filters, `_source` filtering, sort
//! with `search_after` paging, and a terms aggregation with a sum; the shaping
//! happens in Rust ([`super::model`]).

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use taxi_aws::search::{SearchConfig, SearchSink};
use taxi_core::geo::Airport;

use super::model::{AirportDocument, HotSpot, HotSpotWindow, WindowSummary, WindowTotal};
use super::ReportError;

/// Hits per `_search` page.
const PAGE_SIZE: usize = 1_000;
/// Cells of one window at most: geohash precision 7 over the whole NYC box
/// is about 130,000 cells, yet windows with more than a few thousand busy
/// ones do not occur; the bound only keeps a wrong index from eating memory.
pub const MAX_CELLS: usize = 200_000;
/// Windows considered for "the busiest": the busiest come first in the
/// aggregation's answer, so a few are enough to break ties.
const BUSIEST_CANDIDATES: usize = 10;

pub struct SearchReader {
    sink: SearchSink,
}

impl SearchReader {
    pub fn new(config: &SearchConfig) -> Result<SearchReader, ReportError> {
        // Search bodies are small; not every endpoint takes gzip requests.
        let config = SearchConfig { gzip: false, ..config.clone() };
        let sink = SearchSink::new(config).map_err(|e| ReportError::Client(e.to_string()))?;
        Ok(SearchReader { sink })
    }

    fn endpoint(&self) -> &str {
        &self.sink.config().endpoint
    }

    /// Makes documents indexed a moment ago searchable (the closer does not
    /// wait for a refresh). Best effort: a read-only user or OpenSearch
    /// Serverless may refuse it, and the documents show up within a second anyway.
    pub async fn refresh(&self, index: &str) {
        let _ = self.sink.send(Method::POST, &format!("/{index}/_refresh"), "application/json", Vec::new()).await;
    }

    async fn search(&self, index: &str, body: Value) -> Result<Value, ReportError> {
        self.request(Method::POST, index, "_search", body.to_string().into_bytes()).await
    }

    /// `method /index/action` with a JSON answer; 404 is a missing index.
    async fn request(&self, method: Method, index: &str, action: &str, body: Vec<u8>) -> Result<Value, ReportError> {
        let path = format!("/{index}/{action}");
        let (status, answer) = self
            .sink
            .send(method, &path, "application/json", body)
            .await
            .map_err(|reason| ReportError::Unreachable { endpoint: self.endpoint().to_owned(), reason })?;
        let text = String::from_utf8_lossy(&answer);
        match status {
            200..=299 => serde_json::from_slice(&answer)
                .map_err(|e| ReportError::BadAnswer { index: index.to_owned(), reason: format!("not JSON ({e}): {}", brief(&text)) }),
            404 => Err(ReportError::IndexMissing { index: index.to_owned(), endpoint: self.endpoint().to_owned() }),
            _ => Err(ReportError::Refused { index: index.to_owned(), status, answer: brief(&text) }),
        }
    }

    /// Pages through every hit of `query` in `sort` order, up to `max_hits`;
    /// `keep_going` sees each page's sources and may stop early. Returns the
    /// sources and whether hits were left unread.
    async fn search_all(
        &self,
        index: &str,
        query: Value,
        sort: Value,
        fields: &[&str],
        max_hits: usize,
    ) -> Result<(Vec<Value>, bool), ReportError> {
        let mut sources = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({"size": PAGE_SIZE, "query": query, "sort": sort, "_source": fields, "track_total_hits": false});
            if let Some(after) = &after {
                body["search_after"] = after.clone();
            }
            let answer = self.search(index, body).await?;
            let hits = answer["hits"]["hits"]
                .as_array()
                .ok_or_else(|| ReportError::BadAnswer { index: index.to_owned(), reason: "no hits.hits in the answer".into() })?;
            for hit in hits {
                if sources.len() == max_hits {
                    return Ok((sources, true));
                }
                sources.push(hit["_source"].clone());
            }
            match hits.last() {
                Some(last) if hits.len() == PAGE_SIZE => after = Some(last["sort"].clone()),
                _ => return Ok((sources, false)),
            }
        }
    }

    /// The windows with the most pickups (sum of `pickup_count` per
    /// `window_start`), busiest first, and how many windows the index holds.
    pub async fn busiest_windows(&self, index: &str) -> Result<(Vec<WindowTotal>, u64), ReportError> {
        let body = json!({
            "size": 0,
            "aggs": {
                "windows": {"cardinality": {"field": "window_start"}},
                "busiest": {
                    "terms": {"field": "window_start", "size": BUSIEST_CANDIDATES, "order": [{"pickups": "desc"}, {"_key": "asc"}]},
                    "aggs": {"pickups": {"sum": {"field": "pickup_count"}}}
                }
            }
        });
        let answer = self.search(index, body).await?;
        let bad = |reason: &str| ReportError::BadAnswer { index: index.to_owned(), reason: reason.to_owned() };
        let buckets = answer["aggregations"]["busiest"]["buckets"].as_array().ok_or_else(|| bad("no aggregation buckets"))?;
        let totals = buckets
            .iter()
            .map(|b| {
                Ok(WindowTotal {
                    start_ms: b["key"].as_i64().ok_or_else(|| bad("a window_start bucket without a numeric key"))?,
                    pickups: b["pickups"]["value"].as_f64().ok_or_else(|| bad("a bucket without its pickup sum"))?.round() as u64,
                })
            })
            .collect::<Result<Vec<_>, ReportError>>()?;
        let windows = answer["aggregations"]["windows"]["value"].as_u64().unwrap_or(totals.len() as u64);
        Ok((totals, windows))
    }

    /// The latest `max_windows` windows of hot spots, oldest first, with
    /// their end, pickups and cells, and whether older ones were left out.
    pub async fn windows(&self, index: &str, max_windows: usize) -> Result<(Vec<WindowSummary>, bool), ReportError> {
        let body = json!({
            "size": 0,
            "aggs": {
                "windows": {
                    "terms": {"field": "window_start", "size": max_windows, "order": {"_key": "desc"}},
                    "aggs": {"pickups": {"sum": {"field": "pickup_count"}}, "end": {"max": {"field": "window_end"}}}
                }
            }
        });
        let answer = self.search(index, body).await?;
        let bad = |reason: &str| ReportError::BadAnswer { index: index.to_owned(), reason: reason.to_owned() };
        let aggregation = &answer["aggregations"]["windows"];
        let buckets = aggregation["buckets"].as_array().ok_or_else(|| bad("no aggregation buckets"))?;
        let mut windows = buckets
            .iter()
            .map(|b| {
                Ok(WindowSummary {
                    start_ms: b["key"].as_i64().ok_or_else(|| bad("a window_start bucket without a numeric key"))?,
                    end_ms: b["end"]["value"].as_f64().ok_or_else(|| bad("a bucket without its window_end"))?.round() as i64,
                    pickups: b["pickups"]["value"].as_f64().ok_or_else(|| bad("a bucket without its pickup sum"))?.round() as u64,
                    cells: b["doc_count"].as_u64().ok_or_else(|| bad("a bucket without doc_count"))?,
                })
            })
            .collect::<Result<Vec<_>, ReportError>>()?;
        windows.reverse();
        let left_out = aggregation["sum_other_doc_count"].as_u64().unwrap_or(0) > 0;
        Ok((windows, left_out))
    }

    /// How many documents `index` holds (`_count`).
    pub async fn count(&self, index: &str) -> Result<u64, ReportError> {
        let answer = self.request(Method::GET, index, "_count", Vec::new()).await?;
        answer["count"].as_u64().ok_or_else(|| ReportError::BadAnswer { index: index.to_owned(), reason: format!("no count in {answer}") })
    }

    /// Every hot-spot document of the window starting at `start`.
    pub async fn hot_spots(&self, index: &str, start: DateTime<Utc>) -> Result<HotSpotWindow, ReportError> {
        let query = json!({"bool": {"filter": [{"term": {"window_start": start.timestamp_millis()}}]}});
        let fields = ["geohash", "pickup_count", "window_end"];
        let (sources, truncated) = self.search_all(index, query, json!([{"geohash": "asc"}]), &fields, MAX_CELLS).await?;
        let bad = |reason: String| ReportError::BadAnswer { index: index.to_owned(), reason };
        let mut end = None;
        let mut cells = Vec::with_capacity(sources.len());
        for source in &sources {
            let (Some(geohash), Some(pickups)) = (source["geohash"].as_str(), source["pickup_count"].as_u64()) else {
                return Err(bad(format!("a hot-spot document without geohash or pickup_count: {source}")));
            };
            if end.is_none() {
                end = source["window_end"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
            }
            cells.push(HotSpot { geohash: geohash.to_owned(), pickups });
        }
        let end = match end {
            Some(end) => end,
            None if cells.is_empty() => start,
            None => return Err(bad("hot-spot documents without a window_end".into())),
        };
        Ok(HotSpotWindow { start, end, cells, truncated })
    }

    /// The per-airport documents (`scope: airport`) of the latest
    /// `max_windows` windows, and whether older ones were left out.
    pub async fn airport_documents(&self, index: &str, max_windows: usize) -> Result<(Vec<AirportDocument>, bool), ReportError> {
        let query = json!({"bool": {"filter": [{"term": {"scope": "airport"}}]}});
        let sort = json!([{"window_end": "desc"}, {"airport_code": "asc"}]);
        let fields = ["window_end", "airport_code", "trip_count", "sum_trip_duration"];
        // One document per airport and window, and one more to know whether older windows exist.
        let limit = max_windows * Airport::ALL.len() + 1;
        let (sources, _) = self.search_all(index, query, sort, &fields, limit).await?;
        let mut documents = Vec::with_capacity(sources.len());
        for source in &sources {
            let end = source["window_end"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            let airport = source["airport_code"].as_str().and_then(Airport::from_code);
            let (Some(end), Some(airport), Some(trip_count), Some(sum)) =
                (end, airport, source["trip_count"].as_u64(), source["sum_trip_duration"].as_u64())
            else {
                return Err(ReportError::BadAnswer {
                    index: index.to_owned(),
                    reason: format!("an airport document missing a field: {source}"),
                });
            };
            documents.push(AirportDocument { window_end_ms: end.timestamp_millis(), airport, trip_count, sum_trip_duration_s: sum });
        }
        // Newest first: keep the documents of the first `max_windows` distinct windows.
        let mut windows = std::collections::BTreeSet::new();
        let kept: Vec<AirportDocument> = documents
            .iter()
            .copied()
            .filter(|d| {
                windows.insert(d.window_end_ms);
                windows.len() <= max_windows
            })
            .collect();
        let left_out = kept.len() < documents.len();
        Ok((kept, left_out))
    }
}

/// The start of an error answer, enough to say what went wrong.
fn brief(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}
