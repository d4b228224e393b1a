//! The threads of a batch: one reads the files and cuts chunks of whole lines
//! (inflating gzip, which is serial), workers read the rows of a chunk and
//! pre-aggregate it (every core), and the calling thread merges the chunks in
//! input order, finishes windows as event time advances and hands their
//! documents over. Channels are bounded, so memory is a few chunks per
//! thread plus the open panes, whatever the input's length.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use taxi_core::batch::chunk::{aggregate_chunk, ChunkAggregate, ChunkFormat, RowReason, SAMPLES_PER_REASON};
use taxi_core::batch::{Backfill, BatchSettings, Totals};
use taxi_core::documents::Document;
use taxi_core::ingest::IngestSettings;
use taxi_core::time::EventTime;
use taxi_core::tlc::NewYorkClock;

use crate::args::InputFormat;
use crate::batch::read::{open_file, read_chunks, Chunk, FileFormat};
use crate::input::InputError;

/// Chunks queued per worker, between the reader and the workers and between
/// the workers and the merge.
const QUEUED_PER_WORKER: usize = 2;

/// What to read, and with how many workers.
#[derive(Clone, Debug)]
pub struct BatchInput {
    /// Read in this order, as one input.
    pub paths: Vec<PathBuf>,
    pub format: InputFormat,
    pub workers: usize,
}

/// Live counters, for the progress bar.
#[derive(Debug)]
pub struct BatchProgress {
    pub rows: AtomicU64,
    /// Bytes of text read (after gzip).
    pub bytes: AtomicU64,
    pub windows: AtomicU64,
    pub documents: AtomicU64,
    /// Event time every finished window ends by (seconds), `i64::MIN` before.
    pub released_through: AtomicI64,
}

impl Default for BatchProgress {
    fn default() -> BatchProgress {
        BatchProgress {
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            windows: AtomicU64::new(0),
            documents: AtomicU64::new(0),
            released_through: AtomicI64::new(i64::MIN),
        }
    }
}

impl BatchProgress {
    pub fn released_through(&self) -> Option<EventTime> {
        Some(self.released_through.load(Ordering::Relaxed)).filter(|t| *t != i64::MIN).map(EventTime)
    }
}

/// A row that did not count, where it is and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub line: u64,
    pub reason: RowReason,
    pub message: String,
}

/// What a batch did.
#[derive(Clone, Debug)]
pub struct BatchReport {
    pub totals: Totals,
    /// The first rejected rows of each reason, in input order.
    pub samples: Vec<Sample>,
    /// Bytes of text read (after gzip).
    pub bytes: u64,
    /// The most panes held at once: flat for a longer input of the same density.
    pub peak_open_panes: usize,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("writing the documents failed")]
    Output(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a batch thread panicked")]
    Panicked,
}

/// Runs the batch over `input`, calling `emit` with the documents of each
/// group of finished windows, in window order. A missing or unreadable file,
/// or a header without the needed columns, is an error before any work; bad
/// rows are counted.
pub fn run_batch<E>(
    input: &BatchInput,
    settings: BatchSettings,
    progress: &BatchProgress,
    mut emit: impl FnMut(Vec<Document>) -> Result<(), E>,
) -> Result<BatchReport, BatchError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let first_lines = input.paths.iter().map(|path| open_file(path, input.format).map(|f| f.first_line)).collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let workers = input.workers.max(1);
    let (chunk_sender, chunk_receiver) = sync_channel::<Chunk>(workers * QUEUED_PER_WORKER);
    let chunk_receiver = Mutex::new(chunk_receiver);
    let (done_sender, done_receiver) = sync_channel::<(Chunk, ChunkAggregate)>(workers * QUEUED_PER_WORKER);
    // Buffers of merged chunks go back to the reader; there are never more
    // than the chunks in flight, since the reader only allocates when none is spare.
    let (spare_sender, spare_receiver) = channel::<Vec<u8>>();
    let stop = AtomicBool::new(false);
    let ingest = &settings.ingest;
    let latest_plausible = settings.latest_plausible;

    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let spare_receiver = spare_receiver;
            let send = |chunk| !stop.load(Ordering::Relaxed) && chunk_sender.send(chunk).is_ok();
            let bytes_read = |n| _ = progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
            let result = read_chunks(&input.paths, input.format, bytes_read, || spare_receiver.try_recv().ok(), send);
            drop(chunk_sender);
            result
        });
        for _ in 0..workers {
            let done_sender = done_sender.clone();
            let (chunk_receiver, stop) = (&chunk_receiver, &stop);
            scope.spawn(move || {
                let mut clock = NewYorkClock::default();
                loop {
                    let Ok(chunk) = chunk_receiver.lock().map_err(drop).and_then(|r| r.recv().map_err(drop)) else { return };
                    // After a failure, drain the queue so that the reader sees the stop.
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let aggregate = pre_aggregate(&chunk, ingest, latest_plausible, &mut clock, &|_| false);
                    if done_sender.send((chunk, aggregate)).is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
        drop(done_sender);

        let mut merge =
            Merge { input, backfill: Backfill::new(settings.clone()), lines: first_lines, samples: Vec::new(), peak_open_panes: 0 };
        let mut pending = BTreeMap::new();
        let mut next = 0;
        let mut clock = NewYorkClock::default();
        let mut failure = None;
        'receive: for (chunk, aggregate) in done_receiver.iter() {
            pending.insert(chunk.seq, (chunk, aggregate));
            while let Some((chunk, first_reading)) = pending.remove(&next) {
                next += 1;
                let documents =
                    merge.apply(&chunk, first_reading, |refused| pre_aggregate(&chunk, ingest, latest_plausible, &mut clock, refused));
                // The reader may be done already; then the buffer is simply dropped.
                let _ = spare_sender.send(chunk.into_buffer());
                progress.rows.store(merge.backfill.totals().rows, Ordering::Relaxed);
                progress.windows.store(merge.backfill.totals().windows, Ordering::Relaxed);
                progress.documents.store(merge.backfill.totals().documents, Ordering::Relaxed);
                if let Some(t) = merge.backfill.released_through() {
                    progress.released_through.store(t.0, Ordering::Relaxed);
                }
                if !documents.is_empty() {
                    if let Err(e) = emit(documents) {
                        failure = Some(BatchError::Output(e.into()));
                        stop.store(true, Ordering::Relaxed);
                        break 'receive;
                    }
                }
            }
        }
        drop(done_receiver);
        let read = reader.join().map_err(|_| BatchError::Panicked)?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        read?;
        let Merge { backfill, samples, peak_open_panes, .. } = merge;
        let (totals, documents) = backfill.finish();
        progress.windows.store(totals.windows, Ordering::Relaxed);
        progress.documents.store(totals.documents, Ordering::Relaxed);
        if !documents.is_empty() {
            emit(documents).map_err(|e| BatchError::Output(e.into()))?;
        }
        Ok(BatchReport { totals, samples, bytes: progress.bytes.load(Ordering::Relaxed), peak_open_panes, elapsed: started.elapsed() })
    })
}

/// The merging side's state besides the core's [`Backfill`].
struct Merge<'a> {
    input: &'a BatchInput,
    backfill: Backfill,
    /// Per file, the line number the next chunk starts at.
    lines: Vec<u64>,
    samples: Vec<Sample>,
    peak_open_panes: usize,
}

impl Merge<'_> {
    fn apply(
        &mut self,
        chunk: &Chunk,
        aggregate: ChunkAggregate,
        reread: impl FnOnce(&dyn Fn(usize) -> bool) -> ChunkAggregate,
    ) -> Vec<Document> {
        let lines = aggregate.lines;
        let (rejected, documents) = self.backfill.apply(aggregate, reread);
        let path = &self.input.paths[chunk.file];
        for row in rejected {
            let line = self.lines[chunk.file] + row.line - 1;
            if self.samples.iter().filter(|s| s.reason == row.reason).count() < SAMPLES_PER_REASON {
                tracing::warn!(path = %path.display(), line, reason = row.reason.name(), "skipping row: {}", row.message);
                self.samples.push(Sample { path: path.clone(), line, reason: row.reason, message: row.message });
            }
        }
        self.lines[chunk.file] += lines;
        self.peak_open_panes = self.peak_open_panes.max(self.backfill.open_panes());
        documents
    }
}

fn pre_aggregate(
    chunk: &Chunk,
    ingest: &IngestSettings,
    latest_plausible: EventTime,
    clock: &mut NewYorkClock,
    refused: &dyn Fn(usize) -> bool,
) -> ChunkAggregate {
    let format = match &chunk.format {
        FileFormat::Csv(columns) => ChunkFormat::Csv(columns),
        FileFormat::JsonLines => ChunkFormat::JsonLines,
    };
    aggregate_chunk(chunk.text(), format, ingest, latest_plausible, clock, refused)
}
