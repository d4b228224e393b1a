//! `taxi-pipeline batch`: the same analytics over historic files, without
//! AWS. The rows are read as `replay` reads them, judged and pre-aggregated
//! with the aggregate function's core, and the windows merged and turned into
//! documents with the closer's core, as event time advances; the documents go
//! to an NDJSON file ready for `_bulk`, or straight into an endpoint.
//!
//! - [`read`]: opening the files and cutting chunks of whole lines.
//! - [`engine`]: the reading thread, the workers and the merge in input order.
//! - [`output`]: NDJSON, or the closer's search sink.

pub mod engine;
pub mod output;
pub mod read;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use taxi_aws::config::{SearchAuthMode, SearchEndpointConfig};
use taxi_aws::search::SearchSink;
use taxi_core::batch::chunk::RowReason;
use taxi_core::batch::horizon::MAX_HORIZON_S;
use taxi_core::batch::BatchSettings;
use taxi_core::config::{ConfigError, EnvReader};
use taxi_core::documents::DocumentSettings;
use taxi_core::time::{EventTime, WallTime};

use crate::args::InputFormat;
use crate::batch::engine::{run_batch, BatchInput, BatchProgress, BatchReport};
use crate::batch::output::{Delivered, Output};

#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// A TLC yellow-taxi CSV or a JSON-lines file of trip events, plain or gzip; repeat for more files, read in this order as one input.
    #[arg(long = "input", short = 'i', value_name = "FILE", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Input format; `auto` takes JSON lines for .jsonl / .ndjson / .json (optionally .gz), else CSV.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
    /// Write the documents as `_bulk` NDJSON to this file (`-`: stdout, the default).
    #[arg(long, value_name = "FILE", conflicts_with = "es_endpoint")]
    pub output: Option<PathBuf>,
    /// Index the documents into this Elasticsearch / OpenSearch endpoint instead (backfill);
    /// ES_AUTH, ES_USERNAME, ES_PASSWORD, ES_SIGV4_SERVICE, ES_GZIP, ES_TLS_SKIP_VERIFY, BULK_MAX_BYTES and BULK_MAX_DOCUMENTS as for close-windows.
    #[arg(long, value_name = "URL")]
    pub es_endpoint: Option<String>,
    /// Window length in seconds [default: WINDOW_SIZE_SECONDS, else 600].
    #[arg(long, value_name = "SECONDS")]
    pub window_size: Option<String>,
    /// Window slide in seconds, dividing the size [default: WINDOW_SLIDE_SECONDS, else the size].
    #[arg(long, value_name = "SECONDS")]
    pub window_slide: Option<String>,
    /// Pickup cell size, 1 to 12 geohash characters [default: GEOHASH_PRECISION, else 6].
    #[arg(long, value_name = "CHARS")]
    pub geohash_precision: Option<String>,
    /// Trips a hot spot or a per-cell airport document needs [default: MIN_PICKUP_COUNT, else 2].
    #[arg(long, value_name = "TRIPS")]
    pub min_count: Option<String>,
    /// Event times later than now + this are `future_timestamp` [default: FUTURE_TOLERANCE_SECONDS, else 900].
    #[arg(long, value_name = "SECONDS")]
    pub future_tolerance: Option<String>,
    /// Where trips must start and end, min_lat,max_lat,min_lon,max_lon [default: CITY_AREA, else New York City].
    #[arg(long, value_name = "BOX")]
    pub city_area: Option<String>,
    /// Dropoffs here are JFK trips [default: JFK_AREA, else the aggregate function's box].
    #[arg(long, value_name = "BOX")]
    pub jfk_area: Option<String>,
    /// Dropoffs here are LaGuardia trips [default: LGA_AREA, else the aggregate function's box].
    #[arg(long, value_name = "BOX")]
    pub lga_area: Option<String>,
    /// Index of the hot-spot documents [default: PICKUP_INDEX, else pickup_count].
    #[arg(long, value_name = "NAME")]
    pub pickup_index: Option<String>,
    /// Index of the airport-duration documents [default: DURATION_INDEX, else trip_duration].
    #[arg(long, value_name = "NAME")]
    pub duration_index: Option<String>,
    /// How far (event time) a trip may come after a later dropoff and still count, as `replay --horizon` (at most 31 days).
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    pub horizon: Duration,
    /// Threads that read and pre-aggregate rows [default: the number of cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The flags that stand for the functions' variables.
fn flags(args: &BatchArgs) -> [(&'static str, &'static str, Option<&String>); 10] {
    [
        ("WINDOW_SIZE_SECONDS", "--window-size", args.window_size.as_ref()),
        ("WINDOW_SLIDE_SECONDS", "--window-slide", args.window_slide.as_ref()),
        ("GEOHASH_PRECISION", "--geohash-precision", args.geohash_precision.as_ref()),
        ("CITY_AREA", "--city-area", args.city_area.as_ref()),
        ("JFK_AREA", "--jfk-area", args.jfk_area.as_ref()),
        ("LGA_AREA", "--lga-area", args.lga_area.as_ref()),
        ("MIN_PICKUP_COUNT", "--min-count", args.min_count.as_ref()),
        ("FUTURE_TOLERANCE_SECONDS", "--future-tolerance", args.future_tolerance.as_ref()),
        ("PICKUP_INDEX", "--pickup-index", args.pickup_index.as_ref()),
        ("DURATION_INDEX", "--duration-index", args.duration_index.as_ref()),
    ]
}

/// The analytics settings: each flag, else its variable, else the functions'
/// default, validated with the functions' own ranges and messages.
pub fn batch_settings(args: &BatchArgs, env: impl Fn(&str) -> Option<String>, now: WallTime) -> anyhow::Result<BatchSettings> {
    let flags = flags(args);
    let lookup = |name: &str| match flags.iter().find(|(variable, _, _)| *variable == name) {
        Some((_, _, Some(value))) => Some((*value).clone()),
        _ => env(name),
    };
    let reader = EnvReader::new(lookup);
    let name_the_flag = |e: ConfigError| match flags.iter().find(|(variable, _, value)| *variable == e.variable && value.is_some()) {
        Some((_, flag, _)) => anyhow::anyhow!("{flag} {:?} is invalid: {}", e.value, e.expected),
        None => e.into(),
    };
    let ingest = reader.ingest_settings().map_err(name_the_flag)?;
    let documents = reader.document_settings().map_err(name_the_flag)?;
    let horizon_s = i64::try_from(args.horizon.as_secs()).unwrap_or(i64::MAX);
    anyhow::ensure!(
        horizon_s <= MAX_HORIZON_S,
        "--horizon {horizon_s}s is invalid: batch mode takes at most {} days (it holds a bit per second of the horizon)",
        MAX_HORIZON_S / 86_400
    );
    Ok(BatchSettings { latest_plausible: now.as_event_time().plus_seconds(ingest.future_tolerance_s), ingest, documents, horizon_s })
}

/// The search sink of `--es-endpoint`, configured from the close-windows function's variables.
pub(crate) async fn search_sink(
    endpoint: &str,
    documents: &DocumentSettings,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<SearchSink> {
    let lookup = |name: &str| if name == "ES_ENDPOINT" { Some(endpoint.to_owned()) } else { env(name) };
    let mut config = SearchEndpointConfig::from_reader(&EnvReader::new(lookup)).map_err(|e| match e.variable.as_str() {
        "ES_ENDPOINT" => anyhow::anyhow!("--es-endpoint {:?} is invalid: {}", e.value, e.expected),
        _ => e.into(),
    })?;
    let sdk = match config.auth {
        SearchAuthMode::SigV4 { .. } | SearchAuthMode::BasicFromSecret { .. } => {
            Some(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
        }
        _ => None,
    };
    if let Some(sdk) = &sdk {
        config.read_secret(sdk).await?;
    }
    Ok(SearchSink::new(config.sink_config(documents.clone(), sdk.as_ref())?)?)
}

/// What `taxi-pipeline batch` did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub report: BatchReport,
    pub delivered: Delivered,
    pub destination: String,
}

impl Summary {
    pub fn lines(&self) -> Vec<String> {
        let (report, totals) = (&self.report, &self.report.totals);
        let seconds = report.elapsed.as_secs_f64().max(1e-9);
        let memory = peak_memory_mb().map_or_else(String::new, |mb| format!(", peak memory {mb:.0} MB"));
        let mut lines = vec![format!(
            "batch: {} rows ({:.1} MB of text) in {seconds:.2} s, {:.0} rows/s{memory}: {} valid trips, {} windows, {} documents to {}",
            totals.rows,
            report.bytes as f64 / 1e6,
            totals.rows as f64 / seconds,
            totals.valid,
            totals.windows,
            self.delivered.documents,
            self.destination,
        )];
        let skipped = totals.skipped.nonzero().map(|(r, n)| (RowReason::Skipped(r), n));
        let invalid = totals.invalid.iter().filter(|(_, n)| *n > 0).map(|(r, n)| (RowReason::Invalid(r), n));
        for (reason, count) in skipped.chain(invalid) {
            let mut at: Vec<String> = Vec::new();
            for sample in report.samples.iter().filter(|s| s.reason == reason) {
                let file = sample.path.file_name().map_or_else(|| sample.path.display().to_string(), |n| n.to_string_lossy().into_owned());
                match at.last_mut() {
                    Some(last) if last.starts_with(&format!("{file} ")) => last.push_str(&format!(", {}", sample.line)),
                    _ => at.push(format!("{file} line {}", sample.line)),
                }
            }
            lines.push(format!("skipped {count} rows: {} (first at {})", reason.name(), at.join("; ")));
        }
        if self.delivered.retried > 0 {
            lines.push(format!("{} documents sent again after 429 / 5xx", self.delivered.retried));
        }
        if self.delivered.rejected > 0 {
            lines.push(format!("{} documents rejected by the endpoint (logged above)", self.delivered.rejected));
        }
        lines
    }
}

/// The process's peak resident memory (Linux `VmHWM`), in MB.
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let settings = batch_settings(&args, env, WallTime::now())?;
    // A missing or unreadable input stops before anything is written.
    for path in &args.inputs {
        read::open_file(path, args.format)?;
    }
    let (output, destination) = match &args.es_endpoint {
        Some(endpoint) => {
            let sink = search_sink(endpoint, &settings.documents, env).await?;
            (Output::search(sink, tokio::runtime::Handle::current()), endpoint.clone())
        }
        None => {
            let path = args.output.clone().unwrap_or_else(|| PathBuf::from("-"));
            (Output::ndjson(&path)?, if path.as_os_str() == "-" { "stdout".into() } else { path.display().to_string() })
        }
    };
    let to_stdout = destination == "stdout";
    let input = BatchInput {
        paths: args.inputs.clone(),
        format: args.format,
        workers: args.workers.map_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()), usize::from),
    };
    let summary = aggregate(input, settings, output, destination, !args.quiet).await?;
    for line in summary.lines() {
        // With the documents on stdout, the summary goes to stderr.
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    anyhow::ensure!(summary.delivered.rejected == 0, "{} documents were rejected by the endpoint", summary.delivered.rejected);
    Ok(())
}

/// Runs the batch on a blocking thread, with the progress bar meanwhile.
pub async fn aggregate(
    input: BatchInput,
    settings: BatchSettings,
    mut output: Output,
    destination: String,
    show_progress: bool,
) -> anyhow::Result<Summary> {
    let progress = Arc::new(BatchProgress::default());
    let bar = progress_bar(show_progress);
    let work = {
        let progress = Arc::clone(&progress);
        // The search sink blocks on the runtime, so it is finished here too, off the runtime's threads.
        tokio::task::spawn_blocking(move || {
            let report = run_batch(&input, settings, &progress, |documents| output.write(documents));
            (report, output.finish())
        })
    };
    let mut work = std::pin::pin!(work);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let (report, delivered) = loop {
        tokio::select! {
            done = &mut work => break done.context("the batch thread panicked")?,
            _ = ticker.tick() => update(&bar, &progress),
        }
    };
    update(&bar, &progress);
    bar.finish_and_clear();
    let report = report?;
    let delivered = delivered?;
    Ok(Summary { report, delivered, destination })
}

fn progress_bar(visible: bool) -> ProgressBar {
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {human_pos} rows ({per_sec}) {msg}").expect("a valid template"),
    );
    bar
}

fn update(bar: &ProgressBar, progress: &BatchProgress) {
    use std::sync::atomic::Ordering::Relaxed;
    bar.set_position(progress.rows.load(Relaxed));
    bar.set_message(format!(
        "| {:.0} MB read | windows finished through {} | {} windows, {} documents",
        progress.bytes.load(Relaxed) as f64 / 1e6,
        progress.released_through().map_or_else(|| "-".to_owned(), EventTime::to_rfc3339),
        progress.windows.load(Relaxed),
        progress.documents.load(Relaxed),
    ));
    bar.tick();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;
    use taxi_core::window::WindowSpec;

    fn args(extra: &[&str]) -> BatchArgs {
        let Command::Batch(args) = Cli::try_parse_from(["taxi-pipeline", "batch", "--input", "x.csv"].iter().chain(extra)).unwrap().command
        else {
            panic!("batch")
        };
        args
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn flags_override_the_functions_variables_which_override_the_defaults() {
        let now = WallTime(1_700_000_000_000);
        let defaults = batch_settings(&args(&[]), env(&[]), now).unwrap();
        assert_eq!(defaults.ingest, taxi_core::ingest::IngestSettings::default());
        assert_eq!(defaults.documents, DocumentSettings::default());
        assert_eq!((defaults.horizon_s, defaults.latest_plausible), (4 * 3600, EventTime(1_700_000_000 + 900)));

        let variables = env(&[
            ("WINDOW_SIZE_SECONDS", "1800"),
            ("GEOHASH_PRECISION", "7"),
            ("MIN_PICKUP_COUNT", "3"),
            ("PICKUP_INDEX", "hot"),
            ("CITY_AREA", "40,41,-75,-73"),
            ("JFK_AREA", "40.6,40.7,-73.8,-73.7"),
        ]);
        let flags = ["--window-slide", "600", "--geohash-precision", "5", "--horizon", "1h", "--jfk-area", "40.63,40.66,-73.81,-73.75"];
        let settings = batch_settings(&args(&flags), variables, now).unwrap();
        assert_eq!(settings.ingest.areas.city, taxi_core::geo::GeoBox::new(40.0, 41.0, -75.0, -73.0));
        assert_eq!(settings.ingest.areas.airports[0].1, taxi_core::geo::GeoBox::new(40.63, 40.66, -73.81, -73.75), "the flag wins");
        assert_eq!(settings.ingest.window, WindowSpec::new(1800, 600).unwrap());
        assert_eq!(settings.ingest.precision.chars(), 5, "the flag wins");
        assert_eq!((settings.documents.min_count, settings.documents.pickup_index.as_str()), (3, "hot"));
        assert_eq!(settings.horizon_s, 3600);
        let too_long = batch_settings(&args(&["--horizon", "32days"]), |_| None, now).unwrap_err().to_string();
        assert!(too_long.contains("--horizon 2764800s is invalid") && too_long.contains("at most 31 days"), "{too_long}");
    }

    #[test]
    fn a_bad_value_names_the_flag_or_the_variable_that_gave_it() {
        let error = batch_settings(&args(&["--window-size", "30"]), env(&[]), WallTime(0)).unwrap_err();
        assert_eq!(error.to_string(), "--window-size \"30\" is invalid: expected a whole number from 60 to 86400");
        let error = batch_settings(&args(&[]), env(&[("WINDOW_SLIDE_SECONDS", "250")]), WallTime(0)).unwrap_err();
        assert!(error.to_string().starts_with("configuration error: WINDOW_SLIDE_SECONDS=\"250\" is invalid"), "{error}");
        let error = batch_settings(&args(&["--lga-area", "40.78,40.76,-73.88,-73.85"]), env(&[]), WallTime(0)).unwrap_err();
        assert!(error.to_string().starts_with("--lga-area \"40.78,40.76,-73.88,-73.85\" is invalid: expected min_lat,max_lat"), "{error}");
        let error = batch_settings(&args(&["--min-count", "0"]), env(&[]), WallTime(0)).unwrap_err();
        assert!(error.to_string().starts_with("--min-count \"0\" is invalid"), "{error}");
        assert!(Cli::try_parse_from(["taxi-pipeline", "batch"]).is_err(), "an input is required");
        assert!(
            Cli::try_parse_from(["taxi-pipeline", "batch", "-i", "x", "--output", "o", "--es-endpoint", "http://e"]).is_err(),
            "one destination"
        );
    }
}
