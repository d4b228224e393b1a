//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "taxi-pipeline", version, about = "The taxi pipeline's command-line tool")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay TLC taxi trips into a Kinesis stream at a speedup, in dropoff
    /// order, with a watermark event to every open shard every interval.
    Replay(ReplayArgs),
    /// Run the whole pipeline on this machine: stand-ins for Kinesis, DynamoDB
    /// and OpenSearch, the real producer and handlers, and dashboard pictures.
    Local(crate::local::LocalArgs),
    /// Render the dashboard pictures (PNG) from the indices of an Elasticsearch / OpenSearch endpoint.
    Report(crate::report::ReportArgs),
    /// Aggregate historic files with the same core, without AWS: NDJSON for `_bulk`, or straight into an endpoint.
    Batch(crate::batch::BatchArgs),
    /// Serve the live dashboard (map of hot spots, airport chart, status) from an Elasticsearch / OpenSearch endpoint.
    Dashboard(crate::dashboard::DashboardArgs),
    /// Recompute the documents of the input with batch mode and compare them with the indices at
    /// --es-endpoint, window by window; exit 0 only when they agree (batch's flags; --output does not apply).
    Verify(crate::batch::BatchArgs),
    /// Why the dashboard is not updating: per shard its verdict, watermark, last report and applied
    /// sequence, which shard holds the global watermark back and by how much, the windows open and
    /// closed, the dead letters, from the pipeline's table and stream (AWS, or the stand-ins).
    Status(crate::status::StatusArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A TLC yellow-taxi CSV or a JSON-lines file of trip events, plain or gzip.
    pub input: PathBuf,
    /// The Kinesis stream to write to.
    #[arg(long)]
    pub stream: String,
    /// AWS region (default: the SDK's, from AWS_REGION or the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// Input format; `auto` takes JSON lines for .jsonl / .ndjson / .json (optionally .gz), else CSV.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
    /// Event time runs this many times faster than wall time; 0 sends as fast as possible.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub speedup: f64,
    /// Keep the historic times, or stamp each trip at the wall time it is sent (live-looking dashboards).
    #[arg(long, value_enum, default_value_t = TimeModeArg::Original)]
    pub time_mode: TimeModeArg,
    /// Tile the input this many times in event time, each copy after the previous (load tests).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// How far (event time) a trip may come after a later dropoff and still be sent in order.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    pub horizon: Duration,
    /// Send by dropoff (with watermark events) or in the input's order (only a final watermark).
    #[arg(long, value_enum, default_value_t = SendOrder::Dropoff)]
    pub order: SendOrder,
    /// Wall time between watermark events.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub watermark_interval: Duration,
    /// Wall time between ListShards calls that refresh the open shards.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shard_refresh: Duration,
    /// How far past the last dropoff the final watermark goes (windows are at most a day).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    pub final_watermark_advance: Duration,
    /// PutRecords requests of trips in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_in_flight: u16,
    /// Attempts per record before the replay gives up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    Auto,
    Csv,
    Jsonl,
}

/// The order trips are sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SendOrder {
    /// By dropoff, through the reorder buffer (`--horizon`), with a watermark event to every shard each interval.
    Dropoff,
    /// As the input has them (a TLC file: by pickup), with no watermark event but the final one
    /// (the producer cannot promise one mid-stream): for the bounded watermark mode.
    Input,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TimeModeArg {
    Original,
    Now,
}

impl From<TimeModeArg> for taxi_core::replay::schedule::TimeMode {
    fn from(arg: TimeModeArg) -> Self {
        match arg {
            TimeModeArg::Original => Self::Original,
            TimeModeArg::Now => Self::Now,
        }
    }
}

pub(crate) fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number >= 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let cli = Cli::try_parse_from(["taxi-pipeline", "replay", "trips.csv.gz", "--stream", "taxi"]).unwrap();
        let Command::Replay(args) = cli.command else { panic!("replay") };
        assert_eq!((args.speedup, args.repeat, args.time_mode, args.format), (1.0, 1, TimeModeArg::Original, InputFormat::Auto));
        assert_eq!((args.horizon, args.watermark_interval), (Duration::from_secs(4 * 3600), Duration::from_secs(1)));
        assert_eq!(args.final_watermark_advance, Duration::from_secs(86_400));
        let parse = |extra: &[&str]| Cli::try_parse_from(["taxi-pipeline", "replay", "x.csv", "--stream", "s"].iter().chain(extra));
        assert!(parse(&["--speedup", "-1"]).is_err());
        assert!(parse(&["--repeat", "0"]).is_err());
        assert!(parse(&["--horizon", "soon"]).is_err());
        assert!(Cli::try_parse_from(["taxi-pipeline", "replay", "x.csv"]).is_err(), "the stream is required");
        let Command::Replay(fast) = parse(&["--speedup", "0", "--time-mode", "now", "--watermark-interval", "250ms"]).unwrap().command
        else {
            panic!("replay")
        };
        assert_eq!((fast.speedup, fast.time_mode, fast.watermark_interval), (0.0, TimeModeArg::Now, Duration::from_millis(250)));
    }
}
