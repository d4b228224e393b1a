//! The progress bar: trips acknowledged per second, replay position in event
//! time, the watermark, and the lag behind schedule.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use taxi_aws::kinesis_writer::WriterStats;
use taxi_core::time::EventTime;

use crate::replay::FeedStats;

const REFRESH: Duration = Duration::from_millis(200);

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// On stderr (drawn only when it is a terminal), or nowhere.
    pub fn new(visible: bool) -> Progress {
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} {human_pos} trips acknowledged ({per_sec}) {msg}")
            .expect("a valid template");
        bar.set_style(style);
        Progress { bar }
    }

    pub fn hidden() -> Progress {
        Progress::new(false)
    }

    /// Runs `work`, refreshing the bar from the counters meanwhile.
    pub async fn while_running<T>(&self, feed: &FeedStats, writer: &WriterStats, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        let mut ticker = tokio::time::interval(REFRESH);
        loop {
            tokio::select! {
                done = &mut work => {
                    self.update(feed, writer);
                    return done;
                }
                _ = ticker.tick() => self.update(feed, writer),
            }
        }
    }

    fn update(&self, feed: &FeedStats, writer: &WriterStats) {
        let time = |t: Option<EventTime>| t.map_or_else(|| "-".to_owned(), EventTime::to_rfc3339);
        self.bar.set_position(writer.acknowledged.load(Ordering::Relaxed));
        self.bar.set_message(format!(
            "| at {} | watermark {} | lag {:.1} s | {} requests in flight, {} retried",
            time(feed.position()),
            time(writer.watermark()),
            feed.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            writer.requests_in_flight.load(Ordering::Relaxed),
            writer.retried.load(Ordering::Relaxed),
        ));
        self.bar.tick();
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}
