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

/// Whether event times stay historic or follow the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeMode {
    Original,
    /// Live-looking replays: each trip is stamped at the wall time it is sent.
    Now,
}

/// The time shift of each trip released, by the [`TimeMode`].
///
/// In `Now` mode a trip's dropoff becomes the wall-clock second it is handed
/// to the writer (its pickup keeps the trip's duration), never earlier than
/// the trip before it: dropoff order is kept, and neither a trip nor a
/// watermark (the tracker's, from these dropoffs) is ever later than the wall
/// clock, at any speedup. A constant shift would not do: at a speedup of 60,
/// event time would run an hour ahead of the clock every minute, past the
/// aggregate function's future tolerance within seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    mode: TimeMode,
    last: Option<EventTime>,
}

impl Stamps {
    pub fn new(mode: TimeMode) -> Stamps {
        Stamps { mode, last: None }
    }

    /// Seconds to add to a trip with this dropoff, released at `now`.
    pub fn shift(&mut self, dropoff: EventTime, now: WallTime) -> i64 {
        match self.mode {
            TimeMode::Original => 0,
            TimeMode::Now => {
                let stamp = self.last.map_or(now.as_event_time(), |last| last.max(now.as_event_time()));
                self.last = Some(stamp);
                stamp.0 - dropoff.0
            }
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
        assert_eq!(Stamps::new(TimeMode::Original).shift(T0, now), 0);
        let mut live = Stamps::new(TimeMode::Now);
        assert_eq!(T0.plus_seconds(live.shift(T0, now)), EventTime(1_700_000_000), "stamped at the second it is sent");
        // An hour of event time later, but sent one second later: stamped one second later.
        let later = T0.plus_seconds(3600);
        assert_eq!(later.plus_seconds(live.shift(later, WallTime(now.0 + 1000))), EventTime(1_700_000_001));
        // A clock that steps back does not break dropoff order.
        assert_eq!(later.plus_seconds(live.shift(later, WallTime(now.0 - 5000))), EventTime(1_700_000_001));
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
