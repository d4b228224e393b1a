//! `taxi-pipeline`, the pipeline's command-line tool. `main.rs` only parses
//! the command line and reports errors; the work is here, so the integration
//! tests can drive a replay into a stream of their choosing.
//!
//! - [`args`]: the command line.
//! - [`input`]: reading TLC CSV or JSON-lines trips, plain or gzip.
//! - [`replay`]: the reading thread and the Kinesis writer, wired together.
//! - [`progress`]: the progress bar.
//! - [`status`]: what holds the windows back, from the table and the stream.

pub mod args;
pub mod aws;
pub mod batch;
pub mod dashboard;
pub mod input;
pub mod local;
pub mod progress;
pub mod replay;
pub mod report;
pub mod status;
pub mod verify;

use std::sync::Arc;

use taxi_aws::kinesis_writer::{KinesisStream, WriterConfig};
use taxi_core::replay::schedule::{FinalWatermark, TimeMode};

use crate::args::{Cli, Command, ReplayArgs, SendOrder};
use crate::progress::Progress;
use crate::replay::{replay, FeedOptions};

/// How far ahead of the wall clock a final watermark may go in `now` mode:
/// under the aggregate function's default `FUTURE_TOLERANCE_SECONDS` (900).
const LIVE_FINAL_WATERMARK_AHEAD_S: i64 = 600;

/// The final watermark of a replay (`replay` and `local`): `advance` past the
/// last dropoff, and in `now` mode not past the clock's future tolerance.
pub fn final_watermark(time_mode: TimeMode, advance: std::time::Duration) -> FinalWatermark {
    FinalWatermark {
        advance_s: advance.as_secs() as i64,
        max_ahead_of_wall_s: (time_mode == TimeMode::Now).then_some(LIVE_FINAL_WATERMARK_AHEAD_S),
    }
}

/// Logs to stderr, level from `RUST_LOG` (default `info`; `warn` for `local`,
/// whose in-process handlers would otherwise log every batch and bad record,
/// which its summary counts). The SDK's own warnings (a region or credentials
/// looked for on an instance metadata service, each with a debug dump) are
/// left out by default: the command says in one line what is missing. Colours
/// only on a terminal.
pub fn init_logging(command: &Command) {
    let default = if matches!(command, Command::Local(_)) {
        "warn,taxi_core::ingest=error,taxi_pipeline::replay=error,aws_config=error"
    } else if matches!(command, Command::Status(_)) {
        // Its output is the answer; the SDK's and the closer's own logs would only repeat it.
        "warn,aws_config=error"
    } else {
        "info,aws_config=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay(args) => {
            let (feed, config) = replay_settings(&args);
            let sdk = aws::checked_sdk_config(args.region.as_deref()).await?;
            let client = aws_sdk_kinesis::Client::new(&sdk);
            let stream = Arc::new(KinesisStream::new(client, &args.stream));
            let summary = replay(feed, stream, config, Progress::new(!args.quiet)).await?;
            summary.print();
            Ok(())
        }
        Command::Local(args) => local::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Batch(args) => batch::run(args).await,
        Command::Dashboard(args) => dashboard::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Status(args) => status::run(args).await,
    }
}

/// The reading and writing settings of a replay command line.
pub fn replay_settings(args: &ReplayArgs) -> (FeedOptions, WriterConfig) {
    let time_mode = TimeMode::from(args.time_mode);
    let feed = FeedOptions {
        input: args.input.clone(),
        format: args.format,
        speedup: args.speedup,
        time_mode,
        repeat: args.repeat,
        horizon_s: args.horizon.as_secs() as i64,
        order: args.order,
    };
    let config = WriterConfig {
        max_in_flight: usize::from(args.max_in_flight),
        watermark_interval: args.watermark_interval,
        periodic_watermarks: args.order == SendOrder::Dropoff,
        shard_refresh: args.shard_refresh,
        max_attempts: args.max_attempts,
        final_watermark: final_watermark(time_mode, args.final_watermark_advance),
        ..WriterConfig::default()
    };
    (feed, config)
}
