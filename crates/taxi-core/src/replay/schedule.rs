//! Pacing, time shifting and tiling arithmetic, and the final watermark.

use std::time::Duration;

use crate::time::{EventTime, WallTime};

/// When a trip is due: event time runs `speedup` times faster than wall time
/// from the first trip on; a speedup of 0 sends everything at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    speedup: f64,
    origin: EventTime,
    start: WallTime,
}

impl Schedule {
    pub fn new(speedup: f64, origin: EventTime, start: WallTime) -> Schedule {
        Schedule { speedup, origin, start }
    }

    /// The wall time a trip with this event time is due (`start` for speedup 0).
    pub fn due(&self, at: EventTime) -> WallTime {
        if self.speedup <= 0.0 {
            return self.start;
        }
        let ahead_ms = (at.0 - self.origin.0) as f64 * 1000.0 / self.speedup;
        WallTime(self.start.0 + ahead_ms.round() as i64)
    }

    /// How far behind schedule a trip due at `due` is when sent at `now` (0 if on time).
    pub fn lag(due: WallTime, now: WallTime) -> Duration {
        Duration::from_millis(now.0.saturating_sub(due.0).max(0) as u64)
    }
}

/// Whether event times stay historic or move so the replay starts now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeMode {
    Original,
    Now,
}

impl TimeMode {
    /// Seconds to add to every event time, decided by the first trip released.
    pub fn shift(self, first_dropoff: EventTime, now: WallTime) -> i64 {
        match self {
            TimeMode::Original => 0,
            TimeMode::Now => now.as_event_time().0 - first_dropoff.0,
        }
    }
}

/// Copies of the input laid end to end in event time (`--repeat`): copy `k` is
/// shifted by `k` spans, where the span runs from the earliest to one second past
/// the latest dropoff, so each copy starts after the previous one ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    span_s: i64,
}

impl Tiling {
    pub fn new(earliest_dropoff: EventTime, latest_dropoff: EventTime) -> Tiling {
        Tiling { span_s: (latest_dropoff.0 - earliest_dropoff.0).max(0) + 1 }
    }

    pub fn span_s(&self) -> i64 {
        self.span_s
    }

    pub fn shift(&self, copy: u32) -> i64 {
        self.span_s * i64::from(copy)
    }
}

/// The watermark sent at the end of the input, when every trip is acknowledged:
/// far enough past the last dropoff to close every window (windows are at most
/// a day), but, for live-looking replays, not so far past the wall clock that
/// the aggregate function rejects it as a future timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalWatermark {
    pub advance_s: i64,
    pub max_ahead_of_wall_s: Option<i64>,
}

impl FinalWatermark {
    pub fn value(&self, last_dropoff: EventTime, now: WallTime) -> EventTime {
        let advanced = last_dropoff.plus_seconds(self.advance_s);
        match self.max_ahead_of_wall_s {
            Some(ahead) => advanced.min(now.as_event_time().plus_seconds(ahead)).max(last_dropoff),
            None => advanced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: EventTime = EventTime(1_420_866_000);

    #[test]
    fn pacing_follows_the_speedup() {
        let start = WallTime(1_000_000);
        let schedule = Schedule::new(60.0, T0, start);
        assert_eq!(schedule.due(T0), start);
        assert_eq!(schedule.due(T0.plus_seconds(3600)), WallTime(1_060_000), "an hour at 60x is a minute");
        assert_eq!(Schedule::new(0.0, T0, start).due(T0.plus_seconds(3600)), start, "0 = as fast as possible");
        assert_eq!(Schedule::lag(WallTime(10), WallTime(250)), Duration::from_millis(240));
        assert_eq!(Schedule::lag(WallTime(250), WallTime(10)), Duration::ZERO);
    }

    #[test]
    fn time_modes_and_tiling() {
        let now = WallTime(1_700_000_000_500);
        assert_eq!(TimeMode::Original.shift(T0, now), 0);
        assert_eq!(T0.plus_seconds(TimeMode::Now.shift(T0, now)), EventTime(1_700_000_000));
        let tiling = Tiling::new(T0, T0.plus_seconds(3599));
        assert_eq!(tiling.span_s(), 3600);
        assert_eq!(tiling.shift(0), 0);
        assert_eq!(tiling.shift(2), 7200);
        // The last trip of copy 0 and the first of copy 1 do not overlap.
        assert!(T0.plus_seconds(3599) < T0.plus_seconds(tiling.shift(1)));
    }

    #[test]
    fn final_watermark_closes_windows_without_running_ahead_of_the_clock() {
        let historic = FinalWatermark { advance_s: 86_400, max_ahead_of_wall_s: None };
        assert_eq!(historic.value(T0, WallTime(0)), T0.plus_seconds(86_400));
        let live = FinalWatermark { advance_s: 86_400, max_ahead_of_wall_s: Some(600) };
        let now = WallTime(T0.0 * 1000);
        assert_eq!(live.value(T0, now), T0.plus_seconds(600));
        assert_eq!(live.value(T0, WallTime(0)), T0, "never before the last dropoff");
    }
}
