//! `taxi-pipeline report`: the dashboard pictures, as PNG files, from the
//! indices of an Elasticsearch / OpenSearch endpoint.
//!
//! - `hot-spots.png`: a map of New York with every hot-spot cell of one window
//!   (the busiest by total pickups, or the one asked for) drawn as its geohash
//!   box and coloured by its pickups, with a colour legend, latitude /
//!   longitude axes, the JFK and LaGuardia boxes and a few landmarks.
//! - `airport-durations.png`: the trip-weighted average duration of the trips
//!   to JFK and to LaGuardia per window, one line each, with trip counts.
//!
//! `taxi-pipeline local` calls [`render_report`] at the end of its run:
//!
//! ```no_run
//! # async fn example(search: taxi_aws::search::SearchConfig) -> Result<(), taxi_pipeline::report::ReportError> {
//! use taxi_pipeline::report::{render_report, ReportOptions};
//! // `search` is the closer's: endpoint, auth and index names.
//! let output = render_report(&ReportOptions::new(search, "out")).await?;
//! for picture in &output.pictures {
//!     println!("{}", picture.description);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`query`] reads the documents (HTTP, paged and bounded),
//! [`model`] shapes them (pure), [`render`] draws them.

pub mod boroughs;
pub mod model;
pub mod query;
pub mod render;

use std::path::{Path, PathBuf};

use aws_config::{BehaviorVersion, Region};
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use taxi_aws::config::{SearchAuthError, SearchAuthMode, SearchEndpointConfig};
use taxi_aws::search::{SearchConfig, SigV4Service};
use taxi_aws::secrets::Password;
use taxi_core::bulk::BulkLimits;
use taxi_core::config::EnvReader;
use taxi_core::documents::DocumentSettings;
use taxi_core::geo::Areas;

use self::model::{new_york, thousands, utc, window_length, HotSpotWindow};
use self::query::SearchReader;

pub const HOT_SPOTS_FILE: &str = "hot-spots.png";
pub const AIRPORT_DURATIONS_FILE: &str = "airport-durations.png";

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A flag or variable that cannot be used as it is.
    #[error("{0}")]
    Config(String),
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("cannot reach the search endpoint {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("index {index} does not exist on {endpoint} (has the close-windows function indexed anything yet?)")]
    IndexMissing { index: String, endpoint: String },
    #[error("searching {index} was refused with HTTP {status}: {answer}")]
    Refused { index: String, status: u16, answer: String },
    #[error("unexpected answer when searching {index}: {reason}")]
    BadAnswer { index: String, reason: String },
    #[error("index {index} holds no hot-spot documents yet")]
    NoDocuments { index: String },
    #[error("index {index} holds no hot spots for a window starting at {start} (New York {local}); omit --window for the busiest one")]
    WindowNotFound { index: String, start: String, local: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// SigV4 asked for, without a region or credentials.
    #[error("{0}")]
    SigV4(String),
}

/// Everything [`render_report`] needs.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Endpoint, authentication and index names (`documents`), as the
    /// close-windows function has them; bulk limits and gzip are not used.
    pub search: SearchConfig,
    /// Written into, created if missing.
    pub out_dir: PathBuf,
    /// The start of the window to map; `None` maps the busiest.
    pub window: Option<DateTime<Utc>>,
    pub map_size: (u32, u32),
    pub chart_size: (u32, u32),
    /// The chart shows the latest this many windows.
    pub chart_windows: usize,
    /// The city and airport boxes to draw (the analytics' own).
    pub areas: Areas,
}

pub const DEFAULT_MAP_SIZE: (u32, u32) = (1400, 1150);
pub const DEFAULT_CHART_SIZE: (u32, u32) = (1400, 720);
pub const DEFAULT_CHART_WINDOWS: usize = 1_000;
/// Trip counts are written by the points up to this many windows.
const MAX_LABELLED_WINDOWS: usize = 36;

impl ReportOptions {
    /// The busiest window, default sizes, into `out_dir`.
    pub fn new(search: SearchConfig, out_dir: impl Into<PathBuf>) -> ReportOptions {
        ReportOptions {
            search,
            out_dir: out_dir.into(),
            window: None,
            map_size: DEFAULT_MAP_SIZE,
            chart_size: DEFAULT_CHART_SIZE,
            chart_windows: DEFAULT_CHART_WINDOWS,
            areas: Areas::default(),
        }
    }
}

/// One written picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    pub path: PathBuf,
    /// One line: what it shows (which window, how many cells or trips).
    pub description: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportOutput {
    /// The hot-spot map, then the airport chart when there is one.
    pub pictures: Vec<Picture>,
    /// Pictures not drawn, and why (no trip to either airport yet, say).
    pub skipped: Vec<String>,
}

/// Reads the indices and writes the pictures into `options.out_dir`.
///
/// The hot-spot map needs hot-spot documents (an error without them); the
/// airport chart is skipped, with the reason in [`ReportOutput::skipped`],
/// when no trip to either airport has been indexed.
pub async fn render_report(options: &ReportOptions) -> Result<ReportOutput, ReportError> {
    let reader = SearchReader::new(&options.search)?;
    let documents = &options.search.documents;
    reader.refresh(&documents.pickup_index).await;
    reader.refresh(&documents.duration_index).await;
    std::fs::create_dir_all(&options.out_dir).map_err(|e| ReportError::Write { path: options.out_dir.clone(), reason: e.to_string() })?;

    let mut output = ReportOutput::default();
    output.pictures.push(hot_spot_map(&reader, options).await?);
    match airport_chart(&reader, options).await {
        Ok(picture) => output.pictures.push(picture),
        Err(ReportError::IndexMissing { index, .. }) => output.skipped.push(format!("no airport chart: index {index} does not exist yet")),
        Err(ReportError::NoDocuments { index }) => {
            output.skipped.push(format!("no airport chart: {index} holds no trip to JFK or LaGuardia yet"))
        }
        Err(e) => return Err(e),
    }
    Ok(output)
}

async fn hot_spot_map(reader: &SearchReader, options: &ReportOptions) -> Result<Picture, ReportError> {
    let index = &options.search.documents.pickup_index;
    let (chosen, windows) = match options.window {
        Some(start) => (start, None),
        None => {
            let (totals, windows) = reader.busiest_windows(index).await?;
            let busiest = model::busiest_window(&totals).ok_or_else(|| ReportError::NoDocuments { index: index.clone() })?;
            (utc(busiest.start_ms.div_euclid(1000)), Some(windows))
        }
    };
    let window = reader.hot_spots(index, chosen).await?;
    if window.cells.is_empty() {
        return Err(match options.window {
            Some(start) => ReportError::WindowNotFound {
                index: index.clone(),
                start: start.to_rfc3339(),
                local: new_york(start).format("%Y-%m-%d %H:%M %Z").to_string(),
            },
            None => ReportError::NoDocuments { index: index.clone() },
        });
    }
    let path = options.out_dir.join(HOT_SPOTS_FILE);
    let map = render::HotSpotMap {
        window: &window,
        areas: &options.areas,
        title: hot_spot_title(&window, windows, options.search.documents.min_count),
        min_count: options.search.documents.min_count,
    };
    render::picture(&path, options.map_size, |root| map.draw(root))
        .map_err(|e| ReportError::Write { path: path.clone(), reason: e.to_string() })?;
    let which = match windows {
        Some(n) => format!("the busiest of {n} windows"),
        None => "the window asked for".to_owned(),
    };
    let description = format!(
        "{}: hot spots of {} ({}), {} New York / {} UTC: {} pickups in {} cells{}",
        path.display(),
        which,
        window_length((window.end - window.start).num_seconds()),
        new_york(window.start).format("%a %-d %b %Y %H:%M"),
        window.start.format("%H:%M"),
        thousands(window.pickups()),
        thousands(window.cells.len() as u64),
        if window.truncated { " (cells cut at the bound)" } else { "" },
    );
    Ok(Picture { path, description })
}

fn hot_spot_title(window: &HotSpotWindow, windows: Option<u64>, min_count: u64) -> Vec<String> {
    let (start, end) = (new_york(window.start), new_york(window.end));
    let cell_size = window.cells.first().and_then(|c| geohash::decode_bbox(&c.geohash).ok()).map(|r| {
        let lat = (r.min().y + r.max().y) / 2.0;
        let km_across = (r.max().x - r.min().x) * 111.32 * lat.to_radians().cos();
        let km_up = (r.max().y - r.min().y) * 110.57;
        format!("cells of {km_across:.1} × {km_up:.1} km (geohash length {})", window.cells[0].geohash.len())
    });
    let which = match windows {
        Some(n) => format!("the busiest of {n} windows"),
        None => "the window asked for".to_owned(),
    };
    vec![
        "Taxi pickup hot spots in New York City".to_owned(),
        format!(
            "{} window {} to {} New York time ({}), {} to {} UTC; {which}",
            window_length((window.end - window.start).num_seconds()),
            start.format("%a %-d %b %Y, %H:%M"),
            end.format("%H:%M"),
            start.format("%Z"),
            window.start.format("%H:%M"),
            window.end.format("%H:%M"),
        ),
        format!(
            "{} pickups in the {} cells with at least {min_count}{}",
            thousands(window.pickups()),
            thousands(window.cells.len() as u64),
            cell_size.map(|s| format!("; {s}")).unwrap_or_default(),
        ),
    ]
}

async fn airport_chart(reader: &SearchReader, options: &ReportOptions) -> Result<Picture, ReportError> {
    let index = &options.search.documents.duration_index;
    let (documents, older_left_out) = reader.airport_documents(index, options.chart_windows).await?;
    let chart = model::airport_chart(&documents);
    let (Some(first), Some(last)) = (chart.window_ends_ms.first(), chart.window_ends_ms.last()) else {
        return Err(ReportError::NoDocuments { index: index.clone() });
    };
    let (first, last) = (utc(first.div_euclid(1000)), utc(last.div_euclid(1000)));
    // The smallest gap between windows is the slide, which is the window length for tumbling windows.
    let window_s = chart.window_ends_ms.windows(2).map(|w| (w[1] - w[0]) / 1000).min().unwrap_or(600);
    let windows = chart.window_ends_ms.len();
    let mut title = vec![
        "Average taxi trip duration to JFK and LaGuardia (LGA) airports".to_owned(),
        format!(
            "Per {} window, over every trip dropped off at the airport in it (weighted by trips); {windows} windows ending {}{}",
            window_length(window_s),
            span_in_new_york(first, last),
            if older_left_out { " (the latest only)" } else { "" },
        ),
    ];
    let breaks = "a line breaks where a window had no trip to that airport";
    title.push(if windows <= MAX_LABELLED_WINDOWS {
        format!("The number by each point is the trips in that window; {breaks}.")
    } else {
        format!("Each point is one window; {breaks}.")
    });
    let path = options.out_dir.join(AIRPORT_DURATIONS_FILE);
    let drawing = render::AirportDurations { chart: &chart, title, window_s, max_labelled_points: MAX_LABELLED_WINDOWS };
    render::picture(&path, options.chart_size, |root| drawing.draw(root))
        .map_err(|e| ReportError::Write { path: path.clone(), reason: e.to_string() })?;
    let lines: Vec<String> = chart
        .series
        .iter()
        .map(|s| format!("{} {} trips, {:.1} min on average", s.airport.code(), thousands(s.trips), s.average_minutes))
        .collect();
    let description = format!(
        "{}: average trip duration to the airports over {windows} windows ending {}: {}",
        path.display(),
        span_in_new_york(first, last),
        lines.join("; ")
    );
    Ok(Picture { path, description })
}

/// "19:10 to 21:40 New York time, Sat 10 Jan 2015", or with both dates when they differ.
fn span_in_new_york(first: DateTime<Utc>, last: DateTime<Utc>) -> String {
    let (first, last) = (new_york(first), new_york(last));
    if first.date_naive() == last.date_naive() {
        format!("{} to {} New York time, {}", first.format("%H:%M"), last.format("%H:%M"), first.format("%a %-d %b %Y"))
    } else {
        format!("{} to {} New York time", first.format("%a %-d %b %Y %H:%M"), last.format("%a %-d %b %Y %H:%M"))
    }
}

/// How `report` authenticates: the close-windows function's `ES_AUTH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    None,
    Basic,
    Sigv4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SigV4ServiceArg {
    Es,
    Aoss,
}

/// Where and how to read the indices: each option falls back on the
/// close-windows function's variable of the same meaning, so one environment
/// serves the function, `report` and `dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// The Elasticsearch / OpenSearch endpoint.
    #[arg(long, env = "ES_ENDPOINT", default_value = "http://127.0.0.1:9200")]
    pub es_endpoint: String,
    /// How requests are authenticated.
    #[arg(long, env = "ES_AUTH", value_enum, default_value_t = AuthArg::None)]
    pub es_auth: AuthArg,
    /// For `--es-auth sigv4`: Amazon OpenSearch Service (`es`) or Serverless (`aoss`).
    #[arg(long, env = "ES_SIGV4_SERVICE", value_enum, default_value_t = SigV4ServiceArg::Es)]
    pub es_sigv4_service: SigV4ServiceArg,
    /// For `--es-auth basic`.
    #[arg(long, env = "ES_USERNAME")]
    pub es_username: Option<String>,
    /// For `--es-auth basic` (better from the environment than the command line).
    #[arg(long, env = "ES_PASSWORD", hide_env_values = true)]
    pub es_password: Option<String>,
    /// Accept any certificate (a local endpoint with a self-signed one).
    #[arg(long, env = "ES_TLS_SKIP_VERIFY")]
    pub es_tls_skip_verify: bool,
    /// AWS region for SigV4 (default: the SDK's, from AWS_REGION or the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// The index of hot spots.
    #[arg(long, env = "PICKUP_INDEX", default_value = "pickup_count")]
    pub pickup_index: String,
    /// The index of airport trip durations.
    #[arg(long, env = "DURATION_INDEX", default_value = "trip_duration")]
    pub duration_index: String,
    /// The closer's minimum count of a hot spot (only said in the map's legend).
    #[arg(long, env = "MIN_PICKUP_COUNT", default_value_t = 2)]
    pub min_pickup_count: u64,
}

/// The command line of `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub search: SearchArgs,
    /// The directory the pictures are written to (created if missing).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// The start of the window to map, RFC 3339 (2015-01-10T00:00:00Z) or epoch seconds; default: the busiest window.
    #[arg(long, value_parser = window_start)]
    pub window: Option<DateTime<Utc>>,
    /// Size of the hot-spot map in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1400x1150", value_parser = picture_size)]
    pub map_size: (u32, u32),
    /// Size of the airport chart in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1400x720", value_parser = picture_size)]
    pub chart_size: (u32, u32),
    /// The airport chart shows the latest this many windows.
    #[arg(long, default_value_t = DEFAULT_CHART_WINDOWS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub chart_windows: usize,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let options = options_from_args(&args).await?;
    let output = render_report(&options).await?;
    for picture in &output.pictures {
        println!("{}", picture.description);
    }
    for skipped in &output.skipped {
        println!("{skipped}");
    }
    Ok(())
}

async fn options_from_args(args: &ReportArgs) -> Result<ReportOptions, ReportError> {
    let (search, areas) = args.search.search_config().await?;
    Ok(ReportOptions {
        window: args.window,
        map_size: args.map_size,
        chart_size: args.chart_size,
        chart_windows: args.chart_windows,
        areas,
        ..ReportOptions::new(search, Path::new(&args.out))
    })
}

impl SearchArgs {
    /// The search sink's configuration (endpoint, auth, index names), and the
    /// areas the aggregate function uses (`CITY_AREA`, `JFK_AREA`, `LGA_AREA`).
    pub async fn search_config(&self) -> Result<(SearchConfig, Areas), ReportError> {
        let auth = match self.es_auth {
            AuthArg::None => SearchAuthMode::None,
            AuthArg::Basic => match (&self.es_username, &self.es_password) {
                (Some(username), Some(password)) => {
                    SearchAuthMode::Basic { username: username.clone(), password: Password::new(password.clone()) }
                }
                _ => return Err(ReportError::Config("--es-auth basic needs --es-username and ES_PASSWORD (or --es-password)".into())),
            },
            AuthArg::Sigv4 => SearchAuthMode::SigV4 {
                service: match self.es_sigv4_service {
                    SigV4ServiceArg::Es => SigV4Service::Es,
                    SigV4ServiceArg::Aoss => SigV4Service::Aoss,
                },
            },
        };
        let sdk = match auth {
            SearchAuthMode::SigV4 { .. } => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                Some(loader.load().await)
            }
            _ => None,
        };
        // Reading only: no bulk requests, so the limits and gzip do not matter.
        let endpoint = SearchEndpointConfig {
            endpoint: self.es_endpoint.trim_end_matches('/').to_owned(),
            auth,
            limits: BulkLimits::default(),
            gzip: false,
            tls_skip_verify: self.es_tls_skip_verify,
        };
        let documents = DocumentSettings {
            min_count: self.min_pickup_count,
            pickup_index: self.pickup_index.clone(),
            duration_index: self.duration_index.clone(),
            // The report reads through the names alone (the alias, with daily indices).
            index_retention_days: None,
        };
        // The boxes drawn are the aggregate function's (CITY_AREA, JFK_AREA, LGA_AREA).
        let areas = EnvReader::new(|name: &str| std::env::var(name).ok()).areas().map_err(|e| ReportError::Config(e.to_string()))?;
        let search = endpoint.sink_config(documents, sdk.as_ref()).map_err(|e| {
            ReportError::SigV4(match e {
                SearchAuthError::NoRegion => format!("{e} or --region"),
                other => other.to_string(),
            })
        })?;
        Ok((search, areas))
    }
}

/// RFC 3339, or whole epoch seconds.
pub(crate) fn window_start(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return chrono::TimeZone::timestamp_opt(&Utc, seconds, 0).single().ok_or_else(|| format!("{seconds} is out of range"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is neither RFC 3339 (2015-01-10T00:00:00Z) nor epoch seconds: {e}"))
}

/// `1400x1100`: each side from 300 to 8000 pixels.
fn picture_size(text: &str) -> Result<(u32, u32), String> {
    let parse = |side: &str| side.trim().parse::<u32>().ok().filter(|n| (300..=8000).contains(n));
    match text.split_once(['x', 'X']).map(|(w, h)| (parse(w), parse(h))) {
        Some((Some(w), Some(h))) => Ok((w, h)),
        _ => Err(format!("{text:?} is not WIDTHxHEIGHT with each side from 300 to 8000 pixels")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(extra: &[&str]) -> Result<ReportArgs, clap::Error> {
        let cli = Cli::try_parse_from(["taxi-pipeline", "report"].iter().chain(extra))?;
        let Command::Report(args) = cli.command else { panic!("report") };
        Ok(args)
    }

    #[test]
    fn arguments_and_their_checks() {
        let args = parse(&["--window", "2015-01-10T00:10:00Z", "--map-size", "800x600", "--out", "pictures"]).unwrap();
        assert_eq!(args.window, Some(utc(1_420_848_600)));
        assert_eq!((args.map_size, args.chart_size, args.out), ((800, 600), DEFAULT_CHART_SIZE, PathBuf::from("pictures")));
        assert_eq!(parse(&["--window", "1420848600"]).unwrap().window, Some(utc(1_420_848_600)));
        assert!(parse(&["--window", "yesterday"]).is_err());
        assert!(parse(&["--map-size", "100x100"]).is_err(), "too small to read");
        assert!(parse(&["--chart-size", "1400"]).is_err());
        assert!(parse(&["--chart-windows", "0"]).is_err());
    }
}
