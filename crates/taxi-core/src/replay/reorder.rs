//! The reorder buffer: input roughly ordered by pickup in, trips in dropoff
//! order out, holding only the trips within the horizon of the latest dropoff
//! (the latest but for a few bogus ones).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::time::EventTime;
use crate::watermark::TopEventTimes;

/// Releases items in event-time order once they are `horizon_s` behind the
/// anchor (or at the end, with [`ReorderBuffer::drain`]): the latest event time
/// pushed but for the [`crate::watermark::TOLERATED_OUTLIERS`] highest distinct ones, so that a
/// few bogus dropoffs far ahead (a wrong year in a file) neither release
/// everything early nor make every later trip fall behind the horizon. They
/// wait in the buffer and go out at the end.
///
/// An item earlier than one already released is refused: sending it would break
/// the order. That can only happen to an item more than the horizon behind the
/// anchor, so every item within the horizon of the latest comes out.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    horizon_s: i64,
    heap: BinaryHeap<Reverse<Held<T>>>,
    top: TopEventTimes,
    released_through: Option<EventTime>,
    arrivals: u64,
}

/// Ordered by event time, then arrival, so equal times keep input order.
#[derive(Debug)]
struct Held<T> {
    at: EventTime,
    arrival: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.arrival) == (other.at, other.arrival)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.arrival).cmp(&(other.at, other.arrival))
    }
}

impl<T> ReorderBuffer<T> {
    pub fn new(horizon_s: i64) -> ReorderBuffer<T> {
        ReorderBuffer {
            horizon_s: horizon_s.max(0),
            heap: BinaryHeap::new(),
            top: TopEventTimes::default(),
            released_through: None,
            arrivals: 0,
        }
    }

    /// Takes an item; `false` (and the item dropped) if it is behind an item
    /// already released.
    #[must_use]
    pub fn push(&mut self, at: EventTime, item: T) -> bool {
        if self.released_through.is_some_and(|released| at < released) {
            return false;
        }
        self.top.push(at);
        self.heap.push(Reverse(Held { at, arrival: self.arrivals, item }));
        self.arrivals += 1;
        true
    }

    /// The earliest item, if it is at least the horizon behind the anchor.
    pub fn pop_ready(&mut self) -> Option<(EventTime, T)> {
        let anchor = self.top.anchor()?;
        let Reverse(earliest) = self.heap.peek()?;
        if earliest.at.plus_seconds(self.horizon_s) > anchor {
            return None;
        }
        self.pop()
    }

    /// The earliest item, ready or not (at the end of the input).
    pub fn drain(&mut self) -> Option<(EventTime, T)> {
        self.pop()
    }

    fn pop(&mut self) -> Option<(EventTime, T)> {
        let Reverse(held) = self.heap.pop()?;
        self.released_through = Some(held.at);
        Some((held.at, held.item))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watermark::TOLERATED_OUTLIERS;
    use proptest::prelude::*;

    /// Pushes the anchor to `at` with distinct seconds just below it (as real
    /// data has), so the horizon follows `at`.
    fn anchor_at(buffer: &mut ReorderBuffer<&'static str>, at: i64) {
        for t in at..=at + TOLERATED_OUTLIERS as i64 {
            assert!(buffer.push(EventTime(t), "pad"));
        }
    }

    #[test]
    fn a_few_bogus_dropoffs_far_ahead_move_nothing() {
        let mut buffer = ReorderBuffer::new(10);
        anchor_at(&mut buffer, 100);
        for bogus in [9_000, 8_000, 9_000, 7_000] {
            assert!(buffer.push(EventTime(bogus), "bogus"));
        }
        assert_eq!(buffer.pop_ready(), None, "nothing is released early");
        assert!(buffer.push(EventTime(95), "late but within the horizon"), "later trips are not refused");
        anchor_at(&mut buffer, 106);
        assert_eq!(buffer.pop_ready(), Some((EventTime(95), "late but within the horizon")));
        let mut rest = Vec::new();
        while let Some((at, _)) = buffer.drain() {
            rest.push(at.0);
        }
        assert_eq!(rest.last(), Some(&9_000), "the bogus ones go out at the end, in order");
    }

    #[test]
    fn releases_in_dropoff_order_after_the_horizon() {
        let mut buffer = ReorderBuffer::new(10);
        // Three distinct times at the top are never followed: 0, 1, 2 stand in for them.
        for t in [2_000_000, 2_000_001, 2_000_002] {
            assert!(buffer.push(EventTime(t), "top"));
        }
        assert!(buffer.push(EventTime(100), "a"));
        assert!(buffer.push(EventTime(95), "b"));
        assert_eq!(buffer.pop_ready(), None, "nothing is 10 s behind 100 yet");
        assert!(buffer.push(EventTime(106), "c"));
        assert_eq!(buffer.pop_ready(), Some((EventTime(95), "b")));
        assert_eq!(buffer.pop_ready(), None);
        assert!(buffer.push(EventTime(96), "d"), "behind the horizon but not behind a released trip");
        assert!(buffer.push(EventTime(125), "e"));
        assert_eq!(buffer.pop_ready(), Some((EventTime(96), "d")));
        assert_eq!(buffer.pop_ready(), Some((EventTime(100), "a")));
        assert_eq!(buffer.pop_ready(), Some((EventTime(106), "c")));
        assert!(!buffer.push(EventTime(105), "f"), "earlier than a released trip");
        assert!(buffer.push(EventTime(106), "g"), "a tie with the released trip keeps the order");
        assert_eq!(buffer.drain(), Some((EventTime(106), "g")));
        assert_eq!(buffer.drain(), Some((EventTime(125), "e")));
        assert_eq!(buffer.drain().map(|(_, item)| item), Some("top"));
    }

    proptest! {
        /// Out in non-decreasing order; every item within the horizon of the
        /// latest time before it comes out; the others are refused, none lost;
        /// the buffer never holds an item a horizon behind the latest.
        #[test]
        fn dropoff_order_within_the_horizon(
            horizon in 0i64..600,
            steps in prop::collection::vec((-900i64..300, any::<bool>()), 1..400),
        ) {
            let mut buffer = ReorderBuffer::new(horizon);
            let mut out: Vec<(EventTime, usize)> = Vec::new();
            let mut refused = Vec::new();
            let mut latest: Option<i64> = None;
            let mut distinct = std::collections::BTreeSet::new();
            let mut base = 0i64;
            for (i, (jitter, ahead)) in steps.iter().enumerate() {
                if *ahead { base += 60; }
                let at = base + jitter;
                let within = latest.is_none_or(|l| at >= l - horizon);
                if buffer.push(EventTime(at), i) {
                    latest = Some(latest.map_or(at, |l| l.max(at)));
                    distinct.insert(at);
                } else {
                    prop_assert!(!within, "item {i} at {at} within the horizon of {latest:?} was refused");
                    refused.push(i);
                }
                while let Some(released) = buffer.pop_ready() {
                    out.push(released);
                }
                if let Some(&anchor) = distinct.iter().rev().nth(TOLERATED_OUTLIERS) {
                    prop_assert!(buffer.heap.iter().all(|h| h.0.at.0 > anchor - horizon), "holds only the horizon");
                }
            }
            while let Some(released) = buffer.drain() {
                out.push(released);
            }
            prop_assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "released out of order");
            prop_assert_eq!(out.len() + refused.len(), steps.len());
            let mut ids: Vec<usize> = out.iter().map(|(_, i)| *i).chain(refused).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, (0..steps.len()).collect::<Vec<_>>());
        }
    }
}
