//! The watermark a producer may claim: the dropoff time before which every trip
//! it has released has been acknowledged by Kinesis.

use std::collections::BTreeMap;

use crate::time::EventTime;

/// Trips are released in dropoff order (the reorder buffer guarantees it) and
/// acknowledged in any order, some only after retries.
///
/// The watermark is the earliest dropoff still unacknowledged or, with nothing
/// outstanding, the latest released dropoff: every trip released later has a
/// dropoff at or after it. So no watermark ever passes a trip in flight or
/// being retried, and it never goes backwards.
#[derive(Debug, Default)]
pub struct WatermarkTracker {
    outstanding: BTreeMap<EventTime, u64>,
    released_through: Option<EventTime>,
}

impl WatermarkTracker {
    pub fn new() -> WatermarkTracker {
        WatermarkTracker::default()
    }

    /// A trip leaves the reorder buffer for Kinesis.
    pub fn release(&mut self, dropoff: EventTime) {
        *self.outstanding.entry(dropoff).or_default() += 1;
        self.released_through = Some(self.released_through.map_or(dropoff, |r| r.max(dropoff)));
    }

    /// Kinesis has acknowledged a released trip.
    pub fn acknowledge(&mut self, dropoff: EventTime) {
        if let Some(count) = self.outstanding.get_mut(&dropoff) {
            *count -= 1;
            if *count == 0 {
                self.outstanding.remove(&dropoff);
            }
        }
    }

    /// `None` until a trip has been released.
    pub fn watermark(&self) -> Option<EventTime> {
        self.outstanding.keys().next().copied().or(self.released_through)
    }

    /// The latest dropoff released.
    pub fn released_through(&self) -> Option<EventTime> {
        self.released_through
    }

    /// Trips released and not yet acknowledged.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn holds_at_the_earliest_unacknowledged_trip() {
        let mut tracker = WatermarkTracker::new();
        assert_eq!(tracker.watermark(), None);
        for t in [10, 20, 20, 30] {
            tracker.release(EventTime(t));
        }
        assert_eq!(tracker.watermark(), Some(EventTime(10)));
        tracker.acknowledge(EventTime(20));
        tracker.acknowledge(EventTime(10));
        assert_eq!(tracker.watermark(), Some(EventTime(20)), "one trip at 20 is still out");
        tracker.acknowledge(EventTime(30));
        tracker.acknowledge(EventTime(20));
        assert_eq!(tracker.watermark(), Some(EventTime(30)));
        assert_eq!(tracker.outstanding(), 0);
    }

    /// One step of a random history: release the next trip, or Kinesis answers
    /// for one outstanding trip (picked by the index), which it may fail.
    #[derive(Clone, Debug)]
    enum Step {
        Release,
        Answer { pick: usize, fails: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![Just(Step::Release), (any::<usize>(), prop::bool::weighted(0.3)).prop_map(|(pick, fails)| Step::Answer { pick, fails })]
    }

    proptest! {
        /// Under random acknowledgement order and random entry failures (a failed
        /// trip stays outstanding until a retry succeeds), no watermark exceeds
        /// the dropoff of an unacknowledged trip, nor of any trip not yet released,
        /// and watermarks never go backwards.
        #[test]
        fn never_overtakes_an_unacknowledged_trip(
            gaps in prop::collection::vec(prop_oneof![Just(0i64), 0i64..120], 1..200),
            steps in prop::collection::vec(step(), 1..600),
        ) {
            let dropoffs: Vec<EventTime> = gaps.iter().scan(1_420_866_000i64, |t, gap| { *t += gap; Some(EventTime(*t)) }).collect();
            let mut tracker = WatermarkTracker::new();
            let mut next = 0;
            let mut unacknowledged: Vec<EventTime> = Vec::new();
            let mut last_watermark = None;
            let mut check = |tracker: &WatermarkTracker, unacknowledged: &[EventTime], next: usize| -> Result<(), TestCaseError> {
                let Some(w) = tracker.watermark() else { return Ok(()) };
                let earliest_open = unacknowledged.iter().chain(dropoffs.get(next)).min();
                prop_assert!(earliest_open.is_none_or(|t| w <= *t), "watermark {w:?} overtakes a trip at {earliest_open:?}");
                prop_assert!(last_watermark.is_none_or(|l| l <= w), "watermark went back from {last_watermark:?} to {w:?}");
                last_watermark = Some(w);
                Ok(())
            };
            for step in steps.iter().chain(std::iter::repeat_n(&Step::Answer { pick: 0, fails: false }, 2 * dropoffs.len())) {
                match step {
                    Step::Release => if let Some(&t) = dropoffs.get(next) {
                        tracker.release(t);
                        unacknowledged.push(t);
                        next += 1;
                    },
                    Step::Answer { pick, fails } => if !unacknowledged.is_empty() && !fails {
                        let t = unacknowledged.swap_remove(pick % unacknowledged.len());
                        tracker.acknowledge(t);
                    },
                }
                check(&tracker, &unacknowledged, next)?;
            }
            prop_assert!(unacknowledged.is_empty());
            if next > 0 {
                prop_assert_eq!(tracker.watermark(), Some(dropoffs[next - 1]), "with nothing outstanding, the latest released");
            }
        }
    }
}
