//! `taxi-pipeline local`: the whole pipeline on one machine. The real
//! producer, the real aggregate and close-windows handlers and the real AWS
//! SDK calls, against stand-ins for Kinesis, DynamoDB and OpenSearch (or
//! endpoints given), with the parts of AWS no stand-in provides emulated:
//!
//! - [`services`]: the endpoints, and the stand-ins started for them.
//! - [`event_source`]: the Kinesis event source mapping (batches, retries,
//!   bisect, resharding order), over [`taxi_core::delivery`], its pure state machine.
//! - [`functions`]: the handlers in this process, or through the Lambda
//!   invoke API (`--invoke-endpoint`, e.g. `cargo lambda watch`).
//! - [`reshard`]: the shard-split fault.
//! - [`crate::report`]: the dashboard pictures drawn at the end.
//! - [`crate::dashboard`]: the live dashboard, served during the run.
//! - this module: the schedule of the close-windows function, the run until
//!   the final watermark has closed every window, and the summary.

pub mod event_source;
pub mod functions;
pub mod reshard;
pub mod services;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_config::{BehaviorVersion, Region};
use taxi_aws::aggregate_function::{AggregateFunction, MetricsOutput};
use taxi_aws::close_windows_function::{closer_from_config, CloseAnswer};
use taxi_aws::config::{AggregateConfig, AwsClients, CloseWindowsConfig};
use taxi_aws::dynamo::{ensure_table, DynamoStore};
use taxi_aws::kinesis::list_shards;
use taxi_aws::kinesis_writer::{KinesisStream, WriterConfig};
use taxi_core::closer::CloserStore;
use taxi_core::ingest::Aggregator;
use taxi_core::replay::schedule::TimeMode;
use taxi_core::shard::{Counters, ShardId};
use taxi_core::time::EventTime;
use tokio::task::JoinSet;

use self::event_source::{EventSourceMapping, Faults, MappingSettings, MappingStats};
use self::functions::{AggregateInvoker, CloseWindowsInvoker, LambdaInvokeApi};
use self::services::{GivenEndpoints, Services};
use crate::args::InputFormat;
use crate::dashboard::progress::TableProgress;
use crate::dashboard::{bind_given_or_default, Dashboard};
use crate::progress::Progress;
use crate::replay::{replay, FeedOptions, Summary as ReplaySummary};
use crate::report::{render_report, ReportOptions, ReportOutput};
use taxi_core::delivery::DeliverySettings;

/// The bundled real sample: the first hour of 2015-01-10, 32,615 rows of TLC yellow-cab trips.
pub const SAMPLE: &str = "data/yellow_tripdata_2015-01-10_0000-0100.csv.gz";

/// The close-windows function's timeout, as its deadline.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// A TLC yellow-taxi CSV or a JSON-lines file of trip events, plain or gzip.
    #[arg(long, default_value = SAMPLE)]
    pub input: PathBuf,
    /// Input format; `auto` takes JSON lines for .jsonl / .ndjson / .json (optionally .gz), else CSV.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
    /// Event time runs this many times faster than wall time; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0, value_parser = crate::args::non_negative)]
    pub speedup: f64,
    /// Keep the historic times, or stamp each trip at the wall time it is sent (as `replay --time-mode`).
    #[arg(long, value_enum, default_value_t = crate::args::TimeModeArg::Original)]
    pub time_mode: crate::args::TimeModeArg,
    /// Send by dropoff (with watermark events) or in the input's order (a TLC file's: by pickup;
    /// only a final watermark, for `--set WATERMARK_MODE=bounded`).
    #[arg(long, value_enum, default_value_t = crate::args::SendOrder::Dropoff)]
    pub order: crate::args::SendOrder,
    /// Shards of the stream created for the run.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub shards: u16,
    /// Use this Kinesis endpoint instead of starting kinesalite.
    #[arg(long)]
    pub kinesis_endpoint: Option<String>,
    /// Use this DynamoDB endpoint instead of starting DynamoDB Local.
    #[arg(long)]
    pub dynamodb_endpoint: Option<String>,
    /// Index into this Elasticsearch / OpenSearch endpoint instead of starting osmem-server
    /// (auth and index names from the close-windows variables, e.g. `--set ES_AUTH=basic`).
    #[arg(long)]
    pub es_endpoint: Option<String>,
    /// The stream to create (default: `taxi-local-<run id>`).
    #[arg(long)]
    pub stream: Option<String>,
    /// The DynamoDB table to use, created if missing (default: `taxi-local-<run id>`).
    #[arg(long)]
    pub table: Option<String>,
    /// A function configuration variable (see the README's table), over the environment's.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = name_value)]
    pub settings: Vec<(String, String)>,
    /// Event source mapping: records per invocation at most (BatchSize; the template's default).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Event source mapping: how long records may wait for a fuller batch (MaximumBatchingWindowInSeconds).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub batching_window: Duration,
    /// Event source mapping: retries of a failing batch before it is discarded (MaximumRetryAttempts; -1: no limit).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..=10_000))]
    pub max_retry_attempts: i64,
    /// Event source mapping: halve a batch the function failed on before retrying it (BisectBatchOnFunctionError).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub bisect_on_error: bool,
    /// Call the aggregate function through this Lambda invoke API (e.g. `cargo lambda watch`'s
    /// http://127.0.0.1:9000) instead of in this process; it must use the same table.
    #[arg(long)]
    pub invoke_endpoint: Option<String>,
    /// The aggregate function's name at the invoke endpoint.
    #[arg(long, default_value = "aggregate")]
    pub function_name: String,
    /// The close-windows schedule.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub close_interval: Duration,
    /// Give up if the windows have not all closed this long after the start.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The producer's wall time between watermark events.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub watermark_interval: Duration,
    /// Fault: the function's answer is replaced by an error after every Nth invocation.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub fault_error_every: Option<u64>,
    /// Fault: every batch is delivered twice.
    #[arg(long)]
    pub fault_duplicate_deliveries: bool,
    /// Fault: a shard is split once this many trips have been written.
    #[arg(long)]
    pub fault_split_after: Option<u64>,
    /// Where the dashboard pictures go.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// No pictures at the end.
    #[arg(long)]
    pub no_report: bool,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
    /// Serve the live dashboard here during the run (default: 127.0.0.1:8080, or any free port if that one is taken).
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub listen: Option<SocketAddr>,
    /// No live dashboard.
    #[arg(long, conflicts_with_all = ["listen", "keep_serving"])]
    pub no_dashboard: bool,
    /// After the run, keep the dashboard and the stand-ins up until Ctrl-C, for exploring.
    #[arg(long)]
    pub keep_serving: bool,
}

pub(crate) fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// What a local run did.
#[derive(Debug)]
pub struct LocalSummary {
    pub input: PathBuf,
    pub started_standins: Vec<&'static str>,
    pub search_endpoint: String,
    pub pickup_index: String,
    pub duration_index: String,
    pub replay: ReplaySummary,
    /// Summed over every shard's state in the table.
    pub aggregated: Counters,
    /// The stream's shards at the end, closed ones included.
    pub shards: usize,
    pub invocations: u64,
    pub function_errors: u64,
    pub injected_errors: u64,
    pub discarded_records: u64,
    pub close_passes: u64,
    pub closed: CloseAnswer,
    /// The dashboard pictures (none with `--no-report`).
    pub report: ReportOutput,
    /// From the first trip sent to the last window closed.
    pub pipeline_time: Duration,
    /// Everything, stand-ins included.
    pub wall_time: Duration,
    /// The live dashboard's address (none with `--no-dashboard`).
    pub dashboard_url: Option<String>,
    /// With `--keep-serving`: the dashboard and the stand-ins, up until this is dropped.
    pub kept_serving: Option<KeptServing>,
}

/// What `--keep-serving` keeps up after the run.
pub struct KeptServing {
    _services: Services,
    /// Dropping the set stops the server.
    _dashboard: JoinSet<std::io::Result<()>>,
}

impl std::fmt::Debug for KeptServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeptServing")
    }
}

impl LocalSummary {
    pub fn print(&self) {
        let trips = self.replay.writer.acknowledged;
        println!(
            "local pipeline: {} rows of {} in {:.1} s ({:.0} trips/s from the first trip sent to the last window closed, {:.1} s in all)",
            self.replay.rows,
            self.input.display(),
            self.pipeline_time.as_secs_f64(),
            trips as f64 / self.pipeline_time.as_secs_f64().max(1e-9),
            self.wall_time.as_secs_f64(),
        );
        let skipped: Vec<String> = self.replay.skipped.nonzero().map(|(reason, n)| format!("{reason} {n}")).collect();
        println!(
            "  producer:      {trips} trips sent in {:.1} s, {} rows skipped{}, {} watermark events",
            self.replay.elapsed.as_secs_f64(),
            self.replay.skipped.nonzero().map(|(_, n)| n).sum::<u64>(),
            if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join(", ")) },
            self.replay.writer.watermark_events,
        );
        let invalid: Vec<String> = self.aggregated.invalid.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "  aggregate:     {} trips aggregated, {} invalid{}, {} late; {} shards, {} invocations, {} failed ({} injected), {} records discarded",
            self.aggregated.trips_aggregated,
            self.aggregated.invalid.total(),
            if invalid.is_empty() { String::new() } else { format!(" ({})", invalid.join(", ")) },
            self.aggregated.late,
            self.shards,
            self.invocations,
            self.function_errors,
            self.injected_errors,
            self.discarded_records,
        );
        println!(
            "  close-windows: {} passes, {} windows closed, {} documents indexed, {} dead letters, watermark {}",
            self.close_passes,
            self.closed.windows_closed,
            self.closed.documents_indexed,
            self.closed.dead_letters,
            self.closed.watermark.as_deref().unwrap_or("-"),
        );
        println!("  output:        {} indices {} and {}", self.search_endpoint, self.pickup_index, self.duration_index);
        for picture in &self.report.pictures {
            println!("  picture:       {}", picture.description);
        }
        for skipped in &self.report.skipped {
            println!("  no picture:    {skipped}");
        }
        if let Some(url) = &self.dashboard_url {
            println!("  dashboard:     {url}");
        }
    }
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    tokio::select! {
        summary = run_local(args) => {
            let summary = summary?;
            summary.print();
            if let (Some(_kept), Some(url)) = (&summary.kept_serving, &summary.dashboard_url) {
                eprintln!("still serving the dashboard at {url} and the stand-ins; Ctrl-C stops them");
                tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            }
        }
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the stand-ins started for the run were stopped"),
    }
    Ok(())
}

/// Runs the pipeline over the input until every window is closed.
pub async fn run_local(args: LocalArgs) -> anyhow::Result<LocalSummary> {
    let started = Instant::now();
    // A missing file or a header without the needed columns stops before anything starts.
    crate::input::read_trips(&args.input, args.format, |_, _| ControlFlow::Break(()))?;
    let root = std::env::current_dir().context("the current directory")?;
    let given = GivenEndpoints {
        kinesis: args.kinesis_endpoint.clone(),
        dynamodb: args.dynamodb_endpoint.clone(),
        search: args.es_endpoint.clone(),
    };
    let services = tokio::task::spawn_blocking(move || Services::start(given, &root)).await??;
    if !args.quiet && !services.started().is_empty() {
        eprintln!("started {}", services.started().join(", "));
    }

    let run_id = format!("taxi-local-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let stream = args.stream.clone().unwrap_or_else(|| run_id.clone());
    let table = args.table.clone().unwrap_or_else(|| run_id.clone());
    let mut overrides: BTreeMap<String, String> = args.settings.iter().cloned().collect();
    overrides.insert("TABLE_NAME".into(), table.clone());
    overrides.insert("STREAM_NAME".into(), stream.clone());
    overrides.insert("ES_ENDPOINT".into(), services.search.clone());
    let lookup = |name: &str| overrides.get(name).cloned().or_else(|| std::env::var(name).ok());
    let aggregate_config = AggregateConfig::from_lookup(lookup)?;
    let close_config = CloseWindowsConfig::from_lookup(lookup)?;

    // The region is set so the SDK does not look for one (slowly) on an instance
    // metadata service; credentials are only looked up for SigV4 to a real domain.
    let region = lookup("AWS_REGION").unwrap_or_else(|| "us-east-1".into());
    let sdk = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.clone())).load().await;
    let clients = AwsClients::standins(sdk, &services.dynamodb, &services.kinesis);
    let stream_arn = create_stream(&clients.kinesis, &stream, args.shards).await?;
    ensure_table(&clients.dynamodb, &table).await.with_context(|| format!("creating the table {table} at {}", services.dynamodb))?;

    let function = match &args.invoke_endpoint {
        None => AggregateInvoker::InProcess(AggregateFunction::new(
            Aggregator::new(DynamoStore::new(clients.dynamodb.clone(), &table), aggregate_config.ingest.clone()),
            MetricsOutput::Off,
        )),
        Some(endpoint) => AggregateInvoker::Remote { api: LambdaInvokeApi::new(endpoint)?, function: args.function_name.clone() },
    };
    let mapping = Arc::new(EventSourceMapping {
        kinesis: clients.kinesis.clone(),
        stream: stream.clone(),
        stream_arn,
        region,
        function,
        settings: MappingSettings {
            delivery: DeliverySettings {
                batch_size: args.batch_size as usize,
                bisect_on_error: args.bisect_on_error,
                max_retry_attempts: u32::try_from(args.max_retry_attempts).ok(),
            },
            batching_window: args.batching_window,
            poll_interval: Duration::from_millis(100),
            shard_discovery_interval: Duration::from_millis(500),
        },
        faults: Faults { error_every: args.fault_error_every, duplicate_deliveries: args.fault_duplicate_deliveries },
        stats: MappingStats::default(),
    });
    let closer = CloseWindowsInvoker { closer: closer_from_config(&close_config, &clients, run_id.clone())?, timeout: CLOSE_TIMEOUT };

    // Dropping a JoinSet aborts its tasks: nothing outlives the run, also on an error.
    let mut dashboard_task = JoinSet::new();
    let dashboard_url = if args.no_dashboard {
        None
    } else {
        let progress = TableProgress::new(DynamoStore::new(clients.dynamodb.clone(), &table), &close_config.documents);
        let dashboard = Dashboard::new(closer.closer.sink.config().clone(), aggregate_config.ingest.areas.clone(), Some(progress))?;
        let server = bind_given_or_default(args.listen, dashboard).await?;
        let url = server.url();
        eprintln!("dashboard: {url} (windows appear as they close)");
        dashboard_task.spawn(server.serve());
        Some(url)
    };
    let mut mapping_task = JoinSet::new();
    mapping_task.spawn(Arc::clone(&mapping).run());
    let pipeline_started = Instant::now();
    let mut replay_task = JoinSet::new();
    let (feed, writer_config) = replay_settings(&args);
    let progress = Progress::new(!args.quiet);
    match args.fault_split_after {
        Some(n) => replay_task.spawn(replay(
            feed,
            Arc::new(reshard::SplittingStream::new(clients.kinesis.clone(), &stream, n)),
            writer_config,
            progress,
        )),
        None => replay_task.spawn(replay(feed, Arc::new(KinesisStream::new(clients.kinesis.clone(), &stream)), writer_config, progress)),
    };

    let mut replayed: Option<ReplaySummary> = None;
    let mut closed = CloseAnswer::default();
    let mut close_passes = 0;
    let mut schedule = tokio::time::interval(args.close_interval);
    let give_up = tokio::time::sleep_until((started + args.timeout).into());
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            done = replay_task.join_next(), if replayed.is_none() => {
                let summary = done.expect("one replay task").context("the replay task panicked")??;
                let no_trips = summary.writer.final_watermark.is_none();
                replayed = Some(summary);
                if no_trips {
                    break;
                }
            }
            _ = schedule.tick() => {
                let answer = closer.invoke().await?;
                close_passes += 1;
                if let Some(error) = &answer.error {
                    tracing::warn!(%error, "the close-windows pass stopped early; the next one carries on");
                }
                let done = replayed.as_ref().and_then(|r| r.writer.final_watermark).is_some_and(|last| {
                    answer.watermark().is_some_and(|w| w >= last) && answer.windows_left_open == 0 && answer.error.is_none()
                });
                if !args.quiet && answer.windows_closed > 0 {
                    eprintln!("closed {} windows, {} documents indexed, watermark {}", answer.windows_closed, answer.documents_indexed, answer.watermark.as_deref().unwrap_or("-"));
                }
                closed = closed.then(answer);
                if done {
                    break;
                }
            }
            _ = &mut give_up => bail!(
                "the windows did not all close within {}: watermark {} (final {}), {} records discarded, {} function errors; see the log",
                humantime::format_duration(args.timeout),
                closed.watermark.as_deref().unwrap_or("none yet"),
                replayed.as_ref().and_then(|r| r.writer.final_watermark).map_or_else(|| "not sent yet".into(), EventTime::to_rfc3339),
                mapping.stats.discarded_records.load(Ordering::Relaxed),
                mapping.stats.function_errors.load(Ordering::Relaxed),
            ),
        }
    }
    let pipeline_time = pipeline_started.elapsed();
    mapping_task.abort_all();
    let replay = replayed.expect("the loop ends after the replay");
    let (shards, aggregated) = aggregated_counters(&clients, &stream, &table).await?;

    let report = if args.no_report {
        ReportOutput::default()
    } else {
        let options = ReportOptions {
            areas: aggregate_config.ingest.areas.clone(),
            ..ReportOptions::new(closer.closer.sink.config().clone(), &args.out)
        };
        // Every window is indexed by now: pictures that fail (an endpoint
        // without the aggregations they need, say) do not fail the run.
        render_report(&options).await.unwrap_or_else(|error| {
            tracing::warn!(error = %format!("{error:#}"), "no pictures");
            ReportOutput { pictures: Vec::new(), skipped: vec![format!("the pictures failed: {error:#}")] }
        })
    };
    Ok(LocalSummary {
        input: args.input.clone(),
        started_standins: services.started(),
        search_endpoint: services.search.clone(),
        pickup_index: close_config.documents.pickup_index.clone(),
        duration_index: close_config.documents.duration_index.clone(),
        replay,
        aggregated,
        shards,
        invocations: mapping.stats.invocations.load(Ordering::Relaxed),
        function_errors: mapping.stats.function_errors.load(Ordering::Relaxed),
        injected_errors: mapping.stats.injected_errors.load(Ordering::Relaxed),
        discarded_records: mapping.stats.discarded_records.load(Ordering::Relaxed),
        close_passes,
        closed,
        report,
        pipeline_time,
        wall_time: started.elapsed(),
        dashboard_url,
        kept_serving: args.keep_serving.then(|| KeptServing { _services: services, _dashboard: dashboard_task }),
    })
}

/// The producer's settings for a local run.
fn replay_settings(args: &LocalArgs) -> (FeedOptions, WriterConfig) {
    let feed = FeedOptions {
        input: args.input.clone(),
        format: args.format,
        speedup: args.speedup,
        time_mode: TimeMode::from(args.time_mode),
        repeat: 1,
        horizon_s: 4 * 3600,
        order: args.order,
    };
    let config = WriterConfig {
        watermark_interval: args.watermark_interval,
        periodic_watermarks: args.order == crate::args::SendOrder::Dropoff,
        shard_refresh: Duration::from_secs(1),
        final_watermark: crate::final_watermark(TimeMode::from(args.time_mode), Duration::from_secs(86_400)),
        ..WriterConfig::default()
    };
    (feed, config)
}

/// Creates the stream and waits until it is active; returns its ARN.
async fn create_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str, shards: u16) -> anyhow::Result<String> {
    kinesis
        .create_stream()
        .stream_name(stream)
        .shard_count(i32::from(shards))
        .send()
        .await
        .map_err(|e| taxi_aws::kinesis::KinesisError::from_sdk("CreateStream", stream, e))
        .with_context(|| format!("creating the stream {stream}"))?;
    Ok(taxi_aws::kinesis::wait_until_active(kinesis, stream, Duration::from_secs(60)).await?)
}

/// The stream's shards, and the counters of their states summed.
async fn aggregated_counters(clients: &AwsClients, stream: &str, table: &str) -> anyhow::Result<(usize, Counters)> {
    let shards: Vec<ShardId> = list_shards(&clients.kinesis, stream).await?.into_iter().map(|s| s.id).collect();
    let states = DynamoStore::new(clients.dynamodb.clone(), table).load_shard_states(&shards).await?;
    let mut total = Counters::default();
    for state in states.values() {
        total.add(&state.counters);
    }
    Ok((shards.len(), total))
}
