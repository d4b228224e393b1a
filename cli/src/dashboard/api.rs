//! The JSON API the page reads, and the page's files.
//!
//! | endpoint | parameters | answer |
//! |---|---|---|
//! | `GET /api/status` | | windows with hot spots, the last one, documents indexed, and from the table (with `--table`) the global watermark, its lag behind the wall clock and the dead letters |
//! | `GET /api/windows` | | the windows of the hot-spot index, oldest first (the latest [`MAX_WINDOWS`]) |
//! | `GET /api/hotspots` | `window`: start, RFC 3339 or epoch seconds (required) | the window's cells with their geohash boxes and colours, and the colour scale |
//! | `GET /api/airports` | `windows`: how many of the latest (default 1000) | per airport, the trip-weighted average duration and the trips per window |
//! | `GET /api/areas` | | the city and airport boxes |
//!
//! Bad parameters are answered 400, a window without hot spots 404, an
//! endpoint that cannot be reached or refuses 502, each as
//! `{"error": "..."}` with the reason. A missing index is no error for the
//! lists: nothing is indexed yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use taxi_core::geo::GeoBox;

use super::assets::ASSETS;
use super::Dashboard;
use crate::report::model::{self, new_york, utc, ColourScale, HotSpotWindow, WindowSummary};
use crate::report::{window_start, ReportError, DEFAULT_CHART_WINDOWS};

/// Windows listed at most: 2,000 ten-minute windows are two weeks.
pub const MAX_WINDOWS: usize = 2_000;
/// The chart's `windows` parameter at most.
pub const MAX_CHART_WINDOWS: usize = 100_000;
/// Colours of the legend's gradient, evenly spaced from the smallest count to the largest.
const GRADIENT_STOPS: usize = 9;

pub fn router(dashboard: Arc<Dashboard>) -> Router {
    let mut router = Router::new()
        .route("/api/status", get(status))
        .route("/api/windows", get(windows))
        .route("/api/hotspots", get(hot_spots))
        .route("/api/airports", get(airports))
        .route("/api/areas", get(areas));
    for asset in &ASSETS {
        router = router
            .route(asset.path, get(move || async move { ([(CONTENT_TYPE, asset.content_type), (CACHE_CONTROL, "no-cache")], asset.body) }));
    }
    router.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page or API endpoint") }).with_state(dashboard)
}

/// An error answer: its status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ReportError> for ApiError {
    fn from(error: ReportError) -> ApiError {
        let status = match &error {
            ReportError::Config(_) => StatusCode::BAD_REQUEST,
            ReportError::IndexMissing { .. } | ReportError::NoDocuments { .. } | ReportError::WindowNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ReportError::Unreachable { .. } | ReportError::Refused { .. } | ReportError::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
            ReportError::Client(_) | ReportError::Write { .. } | ReportError::SigV4(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, [(CACHE_CONTROL, "no-store")], Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

type Answer<T> = Result<Json<T>, ApiError>;
type Params = Query<BTreeMap<String, String>>;

/// Refuses parameters the endpoint does not take (a typo would otherwise be ignored).
fn only(params: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|name| !allowed.contains(&name.as_str())) {
        None => Ok(()),
        Some(name) if allowed.is_empty() => Err(ApiError::bad_parameter(format!("unknown parameter {name:?}: this endpoint takes none"))),
        Some(name) => Err(ApiError::bad_parameter(format!("unknown parameter {name:?}: expected {}", allowed.join(", ")))),
    }
}

/// Empty lists before anything is indexed, rather than an error.
fn or_empty<T: Default>(result: Result<T, ReportError>) -> Result<T, ApiError> {
    match result {
        Err(ReportError::IndexMissing { .. }) => Ok(T::default()),
        other => Ok(other?),
    }
}

/// One window, with its times in words for New York and UTC.
#[derive(Clone, Debug, Serialize)]
pub struct WindowJson {
    pub start: String,
    pub end: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub pickups: u64,
    pub cells: u64,
    /// "Sat 10 Jan 2015 00:10 to 00:20 EST"
    pub new_york: String,
    /// "05:10 to 05:20 UTC"
    pub utc: String,
}

impl WindowJson {
    fn new(start: DateTime<Utc>, end: DateTime<Utc>, pickups: u64, cells: u64) -> WindowJson {
        let (local_start, local_end) = (new_york(start), new_york(end));
        WindowJson {
            start: start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            end: end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            start_ms: start.timestamp_millis(),
            end_ms: end.timestamp_millis(),
            pickups,
            cells,
            new_york: format!("{} to {} {}", local_start.format("%a %-d %b %Y %H:%M"), local_end.format("%H:%M"), local_start.format("%Z")),
            utc: format!("{} to {} UTC", start.format("%H:%M"), end.format("%H:%M")),
        }
    }

    fn of_summary(w: &WindowSummary) -> WindowJson {
        WindowJson::new(utc(w.start_ms.div_euclid(1000)), utc(w.end_ms.div_euclid(1000)), w.pickups, w.cells)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct WindowsJson {
    pub windows: Vec<WindowJson>,
    /// Older windows exist than those listed.
    pub older_left_out: bool,
}

async fn windows(State(dashboard): State<Arc<Dashboard>>, Query(params): Params) -> Answer<WindowsJson> {
    only(&params, &[])?;
    let (windows, older_left_out) = or_empty(dashboard.reader.windows(&dashboard.search.documents.pickup_index, MAX_WINDOWS).await)?;
    Ok(Json(WindowsJson { windows: windows.iter().map(WindowJson::of_summary).collect(), older_left_out }))
}

#[derive(Debug, Serialize)]
pub struct CellJson {
    pub geohash: String,
    pub pickups: u64,
    /// `#rrggbb` on the window's scale.
    pub colour: String,
    pub south: f64,
    pub west: f64,
    pub north: f64,
    pub east: f64,
}

#[derive(Debug, Serialize)]
pub struct TickJson {
    pub count: u64,
    /// 0 to 1 along the legend.
    pub position: f64,
}

#[derive(Debug, Serialize)]
pub struct ScaleJson {
    pub log: bool,
    pub min: u64,
    pub max: u64,
    pub ticks: Vec<TickJson>,
    /// Evenly spaced colours from `min` to `max`.
    pub gradient: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HotSpotsJson {
    pub window: WindowJson,
    pub cells: Vec<CellJson>,
    pub scale: ScaleJson,
    /// Hot spots need this many pickups (the closer's `MIN_PICKUP_COUNT`).
    pub min_count: u64,
    /// The cells stopped at the bound before the window's last one.
    pub truncated: bool,
}

fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

async fn hot_spots(State(dashboard): State<Arc<Dashboard>>, Query(params): Params) -> Answer<HotSpotsJson> {
    only(&params, &["window"])?;
    let text = params.get("window").ok_or_else(|| {
        ApiError::bad_parameter("the parameter window is required: the window's start, RFC 3339 (2015-01-10T05:00:00Z) or epoch seconds")
    })?;
    let start = window_start(text).map_err(|e| ApiError::bad_parameter(format!("window: {e}")))?;
    let index = &dashboard.search.documents.pickup_index;
    let window = match dashboard.reader.hot_spots(index, start).await {
        Err(ReportError::IndexMissing { .. }) => HotSpotWindow { start, end: start, cells: Vec::new(), truncated: false },
        other => other?,
    };
    if window.cells.is_empty() {
        return Err(ReportError::WindowNotFound {
            index: index.clone(),
            start: start.to_rfc3339(),
            local: new_york(start).format("%Y-%m-%d %H:%M %Z").to_string(),
        }
        .into());
    }
    Ok(Json(hot_spots_json(&window, dashboard.search.documents.min_count)))
}

fn hot_spots_json(window: &HotSpotWindow, min_count: u64) -> HotSpotsJson {
    let (min, max) = window.count_range().unwrap_or((1, 1));
    let scale = ColourScale::for_counts(min, max);
    let cells = window
        .cells
        .iter()
        .filter_map(|cell| {
            let bounds = geohash::decode_bbox(&cell.geohash).ok()?;
            Some(CellJson {
                geohash: cell.geohash.clone(),
                pickups: cell.pickups,
                colour: hex(scale.colour(cell.pickups as f64)),
                south: bounds.min().y,
                west: bounds.min().x,
                north: bounds.max().y,
                east: bounds.max().x,
            })
        })
        .collect();
    HotSpotsJson {
        window: WindowJson::new(window.start, window.end, window.pickups(), window.cells.len() as u64),
        cells,
        scale: ScaleJson {
            log: scale.log,
            min: scale.min(),
            max: scale.max(),
            ticks: scale.ticks().into_iter().map(|count| TickJson { count, position: scale.position(count as f64) }).collect(),
            gradient: (0..GRADIENT_STOPS).map(|i| hex(model::colour_at(i as f64 / (GRADIENT_STOPS - 1) as f64))).collect(),
        },
        min_count,
        truncated: window.truncated,
    }
}

#[derive(Debug, Serialize)]
pub struct PointJson {
    pub window_end_ms: i64,
    pub trips: u64,
    pub average_minutes: f64,
}

#[derive(Debug, Serialize)]
pub struct SeriesJson {
    pub airport: &'static str,
    pub trips: u64,
    pub average_minutes: f64,
    /// One per window with trips to this airport, oldest first.
    pub points: Vec<PointJson>,
}

#[derive(Debug, Default, Serialize)]
pub struct AirportsJson {
    /// Every window with trips to either airport, oldest first.
    pub window_ends_ms: Vec<i64>,
    pub series: Vec<SeriesJson>,
    pub older_left_out: bool,
}

async fn airports(State(dashboard): State<Arc<Dashboard>>, Query(params): Params) -> Answer<AirportsJson> {
    only(&params, &["windows"])?;
    let max_windows = match params.get("windows") {
        None => DEFAULT_CHART_WINDOWS,
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=MAX_CHART_WINDOWS).contains(n)).ok_or_else(|| {
            ApiError::bad_parameter(format!("windows={text:?} is invalid: expected a whole number from 1 to {MAX_CHART_WINDOWS}"))
        })?,
    };
    let (documents, older_left_out) =
        or_empty(dashboard.reader.airport_documents(&dashboard.search.documents.duration_index, max_windows).await)?;
    let chart = model::airport_chart(&documents);
    let series = chart
        .series
        .iter()
        .map(|s| SeriesJson {
            airport: s.airport.code(),
            trips: s.trips,
            average_minutes: s.average_minutes,
            points: chart
                .window_ends_ms
                .iter()
                .zip(&s.points)
                .filter_map(|(end, point)| {
                    point.map(|p| PointJson { window_end_ms: *end, trips: p.trips, average_minutes: p.average_minutes })
                })
                .collect(),
        })
        .collect();
    Ok(Json(AirportsJson { window_ends_ms: chart.window_ends_ms, series, older_left_out }))
}

#[derive(Debug, Serialize)]
pub struct AirportAreaJson {
    pub airport: &'static str,
    #[serde(flatten)]
    pub area: GeoBox,
}

#[derive(Debug, Serialize)]
pub struct AreasJson {
    pub city: GeoBox,
    pub airports: Vec<AirportAreaJson>,
}

async fn areas(State(dashboard): State<Arc<Dashboard>>, Query(params): Params) -> Answer<AreasJson> {
    only(&params, &[])?;
    let areas = &dashboard.areas;
    Ok(Json(AreasJson {
        city: areas.city,
        airports: areas.airports.iter().map(|(airport, area)| AirportAreaJson { airport: airport.code(), area: *area }).collect(),
    }))
}

#[derive(Debug, Serialize)]
pub struct ProgressJson {
    pub table: String,
    pub watermark: Option<String>,
    /// Wall clock minus the watermark, in seconds.
    pub watermark_lag_s: Option<i64>,
    pub closed_through: Option<String>,
    pub dead_letters: u64,
}

#[derive(Debug, Serialize)]
pub struct StatusJson {
    pub now: String,
    pub endpoint: String,
    /// Windows with hot spots.
    pub windows: usize,
    pub last_window: Option<WindowJson>,
    /// In both indices.
    pub documents: u64,
    /// From the table; `None` without one (or when it cannot be read: see `progress_error`).
    pub progress: Option<ProgressJson>,
    pub progress_error: Option<String>,
}

async fn status(State(dashboard): State<Arc<Dashboard>>, Query(params): Params) -> Answer<StatusJson> {
    only(&params, &[])?;
    let documents = &dashboard.search.documents;
    let (windows, _) = or_empty(dashboard.reader.windows(&documents.pickup_index, MAX_WINDOWS).await)?;
    let mut indexed = 0;
    for index in [&documents.pickup_index, &documents.duration_index] {
        indexed += or_empty(dashboard.reader.count(index).await)?;
    }
    let now = Utc::now();
    let iso = |t: taxi_core::time::EventTime| t.to_rfc3339();
    let (progress, progress_error) = match &dashboard.progress {
        None => (None, None),
        Some(source) => match source.read().await {
            Ok(p) => (
                Some(ProgressJson {
                    table: source.table().to_owned(),
                    watermark: p.watermark.map(iso),
                    watermark_lag_s: p.watermark.map(|w| now.timestamp() - w.0),
                    closed_through: p.closed_through.map(iso),
                    dead_letters: p.dead_letters,
                }),
                None,
            ),
            Err(error) => (None, Some(error)),
        },
    };
    Ok(Json(StatusJson {
        now: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        endpoint: dashboard.search.endpoint.clone(),
        windows: windows.len(),
        last_window: windows.last().map(WindowJson::of_summary),
        documents: indexed,
        progress,
        progress_error,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::HotSpot;

    #[test]
    fn cells_get_their_geohash_box_and_the_colour_of_their_count() {
        let window = HotSpotWindow {
            start: utc(1_420_866_000),
            end: utc(1_420_866_600),
            cells: vec![HotSpot { geohash: "dr5ru7".into(), pickups: 2 }, HotSpot { geohash: "dr5rsp".into(), pickups: 200 }],
            truncated: false,
        };
        let json = hot_spots_json(&window, 2);
        let [quiet, busy] = &json.cells[..] else { panic!("two cells") };
        assert_eq!((quiet.colour.as_str(), busy.colour.as_str()), ("#ffeda0", "#800026"), "palest and darkest of the palette");
        assert!(json.scale.log, "2 to 200 spans two orders of magnitude");
        let (lat, lon) = (quiet.south..quiet.north, quiet.west..quiet.east);
        let centre = geohash::decode("dr5ru7").unwrap().0;
        assert!(lat.contains(&centre.y) && lon.contains(&centre.x) && quiet.north - quiet.south < 0.01);
        assert_eq!(json.window.utc, "05:00 to 05:10 UTC");
        assert_eq!(json.window.new_york, "Sat 10 Jan 2015 00:00 to 00:10 EST");
        assert_eq!((json.window.pickups, json.window.cells), (202, 2));
        assert_eq!(json.scale.gradient.len(), GRADIENT_STOPS);
    }

    #[test]
    fn unknown_parameters_are_refused_by_name() {
        let params: BTreeMap<String, String> = [("windw".to_owned(), "1".to_owned())].into();
        let error = only(&params, &["window"]).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.message.contains("\"windw\"") && error.message.contains("expected window"), "{}", error.message);
        assert!(only(&BTreeMap::new(), &[]).is_ok());
    }
}
