//! `taxi-pipeline replay`: the reading side (a blocking thread: read, tile,
//! reorder, shift, pace, encode) feeding the Kinesis writer through a bounded channel.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use taxi_aws::kinesis_writer::{KinesisWriter, OutRecord, PutEntry, RecordStream, WriterConfig, WriterReport, WriterStats};
use taxi_core::config::DEFAULT_FUTURE_TOLERANCE_S;
use taxi_core::replay::reorder::ReorderBuffer;
use taxi_core::replay::schedule::{Schedule, Stamps, Tiling, TimeMode};
use taxi_core::replay::trip::{ReplayTrip, SkipCounts, SkipReason};
use taxi_core::time::{EventTime, WallTime};

use crate::args::{InputFormat, SendOrder};
use crate::input::{read_trips, InputError};
use crate::progress::Progress;

/// Records handed to the writer at once, and chunks the channel holds.
const CHUNK: usize = 500;
const CHANNEL_CHUNKS: usize = 16;
/// Bad rows logged one by one; the rest are only counted.
const LOGGED_BAD_ROWS: u64 = 20;

/// What to read and how to pace it.
#[derive(Clone, Debug)]
pub struct FeedOptions {
    pub input: PathBuf,
    pub format: InputFormat,
    pub speedup: f64,
    pub time_mode: TimeMode,
    pub repeat: u32,
    pub horizon_s: i64,
    pub order: SendOrder,
}

/// Live counters of the reading side.
#[derive(Debug)]
pub struct FeedStats {
    pub rows: AtomicU64,
    pub released: AtomicU64,
    skipped: [AtomicU64; SkipReason::ALL.len()],
    /// Event time of the latest trip handed to the writer (seconds), `i64::MIN` before.
    pub position: AtomicI64,
    /// How far behind schedule the latest trip was handed over.
    pub lag_ms: AtomicU64,
}

impl Default for FeedStats {
    fn default() -> FeedStats {
        FeedStats {
            rows: AtomicU64::new(0),
            released: AtomicU64::new(0),
            skipped: std::array::from_fn(|_| AtomicU64::new(0)),
            position: AtomicI64::new(i64::MIN),
            lag_ms: AtomicU64::new(0),
        }
    }
}

impl FeedStats {
    fn skip(&self, reason: SkipReason) {
        self.skipped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped(&self) -> SkipCounts {
        let mut counts = SkipCounts::default();
        for reason in SkipReason::ALL {
            counts.add(reason, self.skipped[reason.index()].load(Ordering::Relaxed));
        }
        counts
    }

    pub fn position(&self) -> Option<EventTime> {
        Some(self.position.load(Ordering::Relaxed)).filter(|p| *p != i64::MIN).map(EventTime)
    }
}

/// Reads the input (`repeat` times, tiled), and hands trips in dropoff order, on
/// schedule and encoded, to `deliver` in chunks; stops early if `deliver`
/// returns `Break` (the writer is gone).
pub fn feed(
    options: &FeedOptions,
    stats: &FeedStats,
    mut deliver: impl FnMut(Vec<OutRecord>) -> ControlFlow<()>,
) -> Result<(), InputError> {
    let tiling = if options.repeat > 1 { Some(span_of(options)?) } else { None };
    let mut buffer: ReorderBuffer<ReplayTrip> = ReorderBuffer::new(options.horizon_s);
    let mut pacer = Pacer { options, stats, chunk: Vec::with_capacity(CHUNK), timing: None };
    let mut flow = ControlFlow::Continue(());
    let mut next_id = 0u64;
    for copy in 0..options.repeat {
        let shift = tiling.map_or(0, |t| t.shift(copy));
        read_trips(&options.input, options.format, |_, row| {
            next_id += 1;
            stats.rows.fetch_add(1, Ordering::Relaxed);
            match row {
                Err(bad) => {
                    stats.skip(bad.skipped.reason);
                    let skipped = stats.skipped[bad.skipped.reason.index()].load(Ordering::Relaxed);
                    if copy == 0 && skipped <= LOGGED_BAD_ROWS {
                        tracing::warn!(line = bad.line, reason = %bad.skipped.reason, "skipping row: {}", bad.skipped.message);
                    }
                }
                Ok(trip) => {
                    let trip = trip.shifted(shift, next_id);
                    let latest_plausible = WallTime::now().as_event_time().plus_seconds(DEFAULT_FUTURE_TOLERANCE_S);
                    if options.time_mode == TimeMode::Original && trip.dropoff > latest_plausible {
                        stats.skip(SkipReason::FutureTimestamp);
                    } else if options.order == SendOrder::Input {
                        flow = pacer.release(trip, &mut deliver);
                    } else if !buffer.push(trip.dropoff, trip) {
                        stats.skip(SkipReason::BehindHorizon);
                    }
                    while let Some((_, ready)) = buffer.pop_ready() {
                        flow = pacer.release(ready, &mut deliver);
                        if flow.is_break() {
                            break;
                        }
                    }
                }
            }
            flow
        })?;
        if flow.is_break() {
            return Ok(());
        }
    }
    while let Some((_, ready)) = buffer.drain() {
        if pacer.release(ready, &mut deliver).is_break() {
            return Ok(());
        }
    }
    let _ = pacer.flush(&mut deliver);
    Ok(())
}

/// The tiling span: earliest to latest dropoff of the trips that would be sent.
fn span_of(options: &FeedOptions) -> Result<Tiling, InputError> {
    let mut range: Option<(EventTime, EventTime)> = None;
    read_trips(&options.input, options.format, |_, row| {
        if let Ok(trip) = row {
            range = Some(range.map_or((trip.dropoff, trip.dropoff), |(lo, hi)| (lo.min(trip.dropoff), hi.max(trip.dropoff))));
        }
        ControlFlow::Continue(())
    })?;
    Ok(range.map_or(Tiling::new(EventTime(0), EventTime(0)), |(lo, hi)| Tiling::new(lo, hi)))
}

/// The schedule, fixed by the first trip released, and the time stamps.
struct Timing {
    schedule: Schedule,
    stamps: Stamps,
}

struct Pacer<'a> {
    options: &'a FeedOptions,
    stats: &'a FeedStats,
    chunk: Vec<OutRecord>,
    timing: Option<Timing>,
}

impl Pacer<'_> {
    fn release(&mut self, trip: ReplayTrip, deliver: &mut impl FnMut(Vec<OutRecord>) -> ControlFlow<()>) -> ControlFlow<()> {
        let (speedup, mode) = (self.options.speedup, self.options.time_mode);
        let timing = self
            .timing
            .get_or_insert_with(|| Timing { schedule: Schedule::new(speedup, trip.dropoff, WallTime::now()), stamps: Stamps::new(mode) });
        let due = timing.schedule.due(trip.dropoff);
        let ahead_ms = due.0 - WallTime::now().0;
        if ahead_ms > 0 {
            // Hand over what is due before waiting for this one.
            self.flush(deliver)?;
            std::thread::sleep(Duration::from_millis(ahead_ms as u64));
        }
        let now = WallTime::now();
        let timing = self.timing.as_mut().expect("set above");
        let id = trip.event.trip_id;
        let shift = timing.stamps.shift(trip.dropoff, now);
        let trip = trip.shifted(shift, id);
        self.stats.lag_ms.store(Schedule::lag(due, now).as_millis() as u64, Ordering::Relaxed);
        self.stats.position.store(trip.dropoff.0, Ordering::Relaxed);
        self.chunk.push(encode(&trip));
        if self.chunk.len() >= CHUNK {
            self.flush(deliver)?;
        }
        ControlFlow::Continue(())
    }

    fn flush(&mut self, deliver: &mut impl FnMut(Vec<OutRecord>) -> ControlFlow<()>) -> ControlFlow<()> {
        if self.chunk.is_empty() {
            return ControlFlow::Continue(());
        }
        self.stats.released.fetch_add(self.chunk.len() as u64, Ordering::Relaxed);
        deliver(std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK)))
    }
}

/// The trip event as written; the trip id as partition key spreads trips
/// evenly over the shards' hash ranges.
pub fn encode(trip: &ReplayTrip) -> OutRecord {
    OutRecord {
        dropoff: trip.dropoff,
        entry: PutEntry { partition_key: trip.event.trip_id.to_string(), explicit_hash_key: None, data: trip.event.to_json() },
    }
}

/// What a replay did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub rows: u64,
    pub skipped: SkipCounts,
    pub writer: WriterReport,
    pub elapsed: Duration,
}

impl Summary {
    pub fn print(&self) {
        let rate = self.writer.acknowledged as f64 / self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "replayed {} of {} rows in {:.1} s ({rate:.0} trips/s): {} entries retried ({} throttled), {} watermark events, final watermark {}",
            self.writer.acknowledged,
            self.rows,
            self.elapsed.as_secs_f64(),
            self.writer.retried,
            self.writer.throttled,
            self.writer.watermark_events,
            self.writer.final_watermark.map_or_else(|| "none (no trips)".into(), EventTime::to_rfc3339),
        );
        for (reason, count) in self.skipped.nonzero() {
            println!("skipped {count} rows: {reason}");
        }
    }
}

/// Replays `options.input` into `stream`: reading on a blocking thread, writing
/// here; the final watermark goes out only when the whole input was read.
pub async fn replay<S: RecordStream>(
    options: FeedOptions,
    stream: Arc<S>,
    config: WriterConfig,
    progress: Progress,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    // A missing file or a header without the needed columns stops before Kinesis is called.
    read_trips(&options.input, options.format, |_, _| ControlFlow::Break(()))?;
    let feed_stats = Arc::new(FeedStats::default());
    let writer_stats = Arc::new(WriterStats::default());
    let mut writer = KinesisWriter::connect(stream, config, Arc::clone(&writer_stats)).await?;

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<OutRecord>>(CHANNEL_CHUNKS);
    let reading = {
        let stats = Arc::clone(&feed_stats);
        tokio::task::spawn_blocking(move || {
            feed(&options, &stats, |chunk| match sender.blocking_send(chunk) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            })
        })
    };
    let records = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let written = progress.while_running(&feed_stats, &writer_stats, writer.write(records)).await;
    let read = reading.await.context("the reading thread panicked")?;
    written?;
    read?;
    let report = progress.while_running(&feed_stats, &writer_stats, writer.finish()).await?;
    progress.finish();
    Ok(Summary { rows: feed_stats.rows.load(Ordering::Relaxed), skipped: feed_stats.skipped(), writer: report, elapsed: started.elapsed() })
}
