//! Watermark rules: how a shard's watermark advances, and how late a trip is
//! relative to what the closer has already emitted.

use crate::time::EventTime;
use crate::window::{PaneStart, WindowSpec, WindowStart};

/// How a shard's watermark is derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkMode {
    /// From watermark events the producer writes to every shard (default).
    Producer,
    /// The event time seen on the shard, minus a bound on out-of-orderness.
    Bounded { max_out_of_orderness_s: i64 },
}

/// How many bogus (plausible but wrong) event times a shard may carry in its
/// lifetime without its bounded watermark moving.
pub const TOLERATED_OUTLIERS: usize = 3;

/// The highest distinct event times seen, highest first; rules that must not
/// follow a few bogus times follow the lowest of them (the anchor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopEventTimes {
    pub times: [Option<EventTime>; TOLERATED_OUTLIERS + 1],
}

impl Default for TopEventTimes {
    fn default() -> Self {
        TopEventTimes { times: [None; TOLERATED_OUTLIERS + 1] }
    }
}

impl TopEventTimes {
    pub fn push(&mut self, t: EventTime) {
        let top = &mut self.times;
        if top.contains(&Some(t)) {
            return;
        }
        // Highest first, `None` (not seen) last: insert and let the lowest fall off.
        if let Some(at) = top.iter().position(|held| held.is_none_or(|h| t > h)) {
            top[at..].rotate_right(1);
            top[at] = Some(t);
        }
    }

    /// The time below the [`TOLERATED_OUTLIERS`] highest distinct ones;
    /// `None` until that many and one more have been seen.
    pub fn anchor(&self) -> Option<EventTime> {
        self.times[TOLERATED_OUTLIERS]
    }

    pub fn highest(&self) -> Option<EventTime> {
        self.times[0]
    }
}

/// A shard's watermark and what it is derived from.
///
/// In bounded mode the watermark follows the event time below the
/// [`TOLERATED_OUTLIERS`] highest *distinct* ones seen, so a few records with
/// bogus timestamps, or one of them sent twice by a producer's retry, cannot
/// drag it forward (invariant 6); records far beyond the wall clock are
/// rejected before they get here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardWatermark {
    pub watermark: Option<EventTime>,
    /// The highest distinct trip event times seen (bounded mode).
    pub top_event_times: TopEventTimes,
}

impl ShardWatermark {
    pub fn observe_trip(&mut self, t: EventTime, mode: WatermarkMode) {
        let WatermarkMode::Bounded { max_out_of_orderness_s } = mode else {
            return;
        };
        self.top_event_times.push(t);
        if let Some(supported) = self.top_event_times.anchor() {
            self.advance_to(supported.plus_seconds(-max_out_of_orderness_s));
        }
    }

    /// A watermark event counts in both modes: in bounded mode the shard's
    /// watermark is the larger of the bounded rule and the producer's promise,
    /// so a final watermark closes the last windows of a replay. A value far
    /// past the wall clock never gets here (it is an invalid record).
    pub fn observe_watermark_event(&mut self, w: EventTime) {
        self.advance_to(w);
    }

    /// Watermarks never go backwards.
    fn advance_to(&mut self, w: EventTime) {
        self.watermark = self.watermark.max(Some(w));
    }
}

/// What the aggregate function knows of the closer's progress, read once per batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloserProgress {
    /// Every window ending at or before this instant has been emitted.
    pub closed_through: Option<EventTime>,
    /// The global watermark the closer last acted on (at least `closed_through`).
    pub watermark: Option<EventTime>,
    /// Windows ending at or before this instant are being closed: the closer
    /// records it before it reads their partials, so a partial written after
    /// the read is seen by a writer that reads this afterwards.
    pub closing_through: Option<EventTime>,
    /// Bounded mode: the closer judged this shard idle and has closed windows
    /// ending after this instant without it. What the shard brings for them
    /// is emitted again whatever the allowed lateness: a shard that was stuck,
    /// not idle, loses nothing.
    pub excluded_since: Option<EventTime>,
}

/// Where a trip stands relative to the windows already emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lateness {
    /// No window containing the trip has been emitted.
    OnTime,
    /// Some of its windows were emitted; those still within the allowed
    /// lateness must be re-emitted with the trip in them.
    Late { reemit: Vec<WindowStart> },
    /// Every window containing it was emitted and is past the allowed lateness.
    DroppedLate,
}

impl CloserProgress {
    pub fn lateness(&self, spec: &WindowSpec, pane: PaneStart, allowed_lateness_s: i64) -> Lateness {
        let Some(closed_through) = self.closed_through else {
            return Lateness::OnTime;
        };
        let watermark = self.watermark.unwrap_or(closed_through).max(closed_through);
        let mut any_open = false;
        let mut reemit = Vec::new();
        for window in spec.windows_containing(pane) {
            let end = spec.window_end(window);
            if end > closed_through {
                any_open = true;
            } else if end.plus_seconds(allowed_lateness_s) > watermark || self.excluded_since.is_some_and(|since| end > since) {
                reemit.push(window);
            }
        }
        match (any_open, reemit.is_empty()) {
            (true, true) => Lateness::OnTime,
            (false, true) => Lateness::DroppedLate,
            (_, false) => Lateness::Late { reemit },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDED: WatermarkMode = WatermarkMode::Bounded { max_out_of_orderness_s: 60 };

    #[test]
    fn producer_mode_follows_watermark_events_only() {
        let mut w = ShardWatermark::default();
        w.observe_trip(EventTime(1000), WatermarkMode::Producer);
        assert_eq!(w.watermark, None);
        w.observe_watermark_event(EventTime(900));
        w.observe_watermark_event(EventTime(800));
        assert_eq!(w.watermark, Some(EventTime(900)), "never backwards");
    }

    #[test]
    fn bounded_mode_follows_the_time_below_the_tolerated_outliers() {
        let mut w = ShardWatermark::default();
        for t in [1000, 1000, 1010, 1020] {
            w.observe_trip(EventTime(t), BOUNDED);
        }
        assert_eq!(w.watermark, None, "three distinct times are not enough");
        w.observe_trip(EventTime(1100), BOUNDED);
        assert_eq!(w.watermark, Some(EventTime(940)));
        // Three bogus records, one of them twice, move nothing.
        for t in [9_000_000, 8_000_000, 9_000_000, 7_000_000] {
            w.observe_trip(EventTime(t), BOUNDED);
        }
        assert_eq!(w.watermark, Some(EventTime(1040)));
        w.observe_trip(EventTime(1200), BOUNDED);
        assert_eq!(w.watermark, Some(EventTime(1140)), "real times still move it");
        w.observe_watermark_event(EventTime(1100));
        assert_eq!(w.watermark, Some(EventTime(1140)), "an older watermark event moves nothing");
        w.observe_watermark_event(EventTime(5000));
        assert_eq!(w.watermark, Some(EventTime(5000)), "a producer's (final) watermark event is honoured in bounded mode");
        w.observe_trip(EventTime(1300), BOUNDED);
        assert_eq!(w.watermark, Some(EventTime(5000)), "never backwards");
    }

    proptest! {
        /// Up to the tolerated number of distinct outliers, each possibly sent
        /// twice, anywhere in the stream, never take the watermark past the
        /// clean records' highest time minus the bound.
        #[test]
        fn tolerated_outliers_never_move_a_bounded_watermark(
            times in proptest::collection::vec(0i64..100_000, 0..50),
            outliers in proptest::collection::vec((1_000_000i64..1_000_100, 0usize..50, any::<bool>()), 0..=TOLERATED_OUTLIERS),
        ) {
            let run = |with_outliers: bool| {
                let mut w = ShardWatermark::default();
                for i in 0..=times.len() {
                    for (outlier, _, twice) in outliers.iter().filter(|o| with_outliers && o.1.min(times.len()) == i) {
                        for _ in 0..=usize::from(*twice) {
                            w.observe_trip(EventTime(*outlier), BOUNDED);
                        }
                    }
                    if let Some(t) = times.get(i) {
                        w.observe_trip(EventTime(*t), BOUNDED);
                    }
                }
                w.watermark
            };
            let max_clean = times.iter().max().map(|t| EventTime(t - 60));
            let with = run(true);
            prop_assert!(with <= max_clean, "{with:?} > {max_clean:?}");
            prop_assert!(run(false) <= with);
        }
    }

    #[test]
    fn lateness_against_closer_progress() {
        let spec = WindowSpec::tumbling(600).unwrap();
        let progress = CloserProgress {
            closed_through: Some(EventTime(1200)),
            watermark: Some(EventTime(1500)),
            closing_through: None,
            excluded_since: None,
        };
        assert_eq!(progress.lateness(&spec, PaneStart(1200), 0), Lateness::OnTime);
        assert_eq!(progress.lateness(&spec, PaneStart(600), 0), Lateness::DroppedLate);
        // Window [600, 1200) is within 400 s of lateness of watermark 1500.
        assert_eq!(progress.lateness(&spec, PaneStart(600), 400), Lateness::Late { reemit: vec![WindowStart(600)] });
        // Windows closed while the shard was judged idle take its trips whatever the lateness.
        let excluded = CloserProgress { excluded_since: Some(EventTime(600)), ..progress };
        assert_eq!(excluded.lateness(&spec, PaneStart(600), 0), Lateness::Late { reemit: vec![WindowStart(600)] });
        assert_eq!(excluded.lateness(&spec, PaneStart(0), 0), Lateness::DroppedLate, "closed before it was excluded");
        assert_eq!(CloserProgress::default().lateness(&spec, PaneStart(0), 0), Lateness::OnTime);

        // Sliding: pane 900 is in windows [300, 900+300) = 300 and 600..; with 600/300 panes.
        let sliding = WindowSpec::new(600, 300).unwrap();
        let progress = CloserProgress {
            closed_through: Some(EventTime(1200)),
            watermark: Some(EventTime(1200)),
            closing_through: None,
            excluded_since: None,
        };
        // Pane 900 is in windows 600 (ends 1200, closed) and 900 (ends 1500, open).
        assert_eq!(progress.lateness(&sliding, PaneStart(900), 0), Lateness::OnTime);
        assert_eq!(progress.lateness(&sliding, PaneStart(900), 60), Lateness::Late { reemit: vec![WindowStart(600)] });
    }
}
