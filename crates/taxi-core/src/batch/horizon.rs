//! The producer's reorder buffer as batch mode needs it: which dropoffs it
//! refuses, and how far it has released.

use std::collections::BTreeSet;

use crate::time::EventTime;
use crate::watermark::TopEventTimes;

/// The longest horizon batch mode takes: it holds one bit per second of it.
pub const MAX_HORIZON_S: i64 = 31 * 86_400;

/// Behaves as [`crate::replay::reorder::ReorderBuffer`] does for pushes each
/// followed by popping every ready item (what `replay` does), as far as the
/// refusals and the latest release go (the property test checks it).
///
/// Only the seconds matter then, not the trips or their order within a
/// second. Every second still held is either within one horizon below the
/// buffer's anchor (the latest dropoff but for the few highest distinct ones),
/// or above the anchor: so a ring of one bit per second of the horizon, plus
/// the few seconds above the anchor, stand in for the buffer's heap, and a
/// push costs O(1) plus the seconds it moves the anchor on.
#[derive(Debug)]
pub struct DropoffHorizon {
    horizon_s: i64,
    /// Bit `s mod (64 * len)` is set while second `s` is held at or below the
    /// anchor; those lie in `(anchor - horizon, anchor]`, so no two share a bit.
    held: Vec<u64>,
    /// Held seconds above the anchor (all of them while there is none yet).
    above: BTreeSet<i64>,
    top: TopEventTimes,
    latest: Option<EventTime>,
    released_through: Option<EventTime>,
}

impl DropoffHorizon {
    /// A horizon beyond [`MAX_HORIZON_S`] is taken as that (callers check it
    /// first, with a message).
    pub fn new(horizon_s: i64) -> DropoffHorizon {
        let horizon_s = horizon_s.clamp(0, MAX_HORIZON_S);
        let words = (horizon_s as usize).div_ceil(64).max(1);
        DropoffHorizon {
            horizon_s,
            held: vec![0; words],
            above: BTreeSet::new(),
            top: TopEventTimes::default(),
            latest: None,
            released_through: None,
        }
    }

    /// The latest dropoff taken.
    pub fn latest(&self) -> Option<EventTime> {
        self.latest
    }

    /// The latest dropoff released: no later dropoff is taken earlier than it.
    pub fn released_through(&self) -> Option<EventTime> {
        self.released_through
    }

    /// Takes a dropoff and releases what is then a horizon behind the
    /// anchor; `false` if the dropoff is refused (behind one already released).
    #[must_use]
    pub fn push(&mut self, at: EventTime) -> bool {
        if self.released_through.is_some_and(|released| at < released) {
            return false;
        }
        self.latest = self.latest.max(Some(at));
        let before = self.top.anchor();
        self.top.push(at);
        let anchor = self.top.anchor();
        let moved = anchor.filter(|a| before.is_none_or(|b| *a > b));
        // The ring's old range is emptied before anything of the new range goes in:
        // the two may share bits.
        if let (Some(before), Some(anchor)) = (before, moved) {
            self.release_held_through(before, anchor.0 - self.horizon_s);
        }
        match anchor {
            Some(anchor) if at <= anchor => self.hold_or_release(at.0, anchor),
            _ => {
                self.above.insert(at.0);
            }
        }
        if let Some(anchor) = moved {
            let reached: Vec<i64> = self.above.range(..=anchor.0).copied().collect();
            for second in reached {
                self.above.remove(&second);
                self.hold_or_release(second, anchor);
            }
        }
        true
    }

    /// A second at or below the anchor: released if a horizon behind it, else held in the ring.
    fn hold_or_release(&mut self, second: i64, anchor: EventTime) {
        if second <= anchor.0 - self.horizon_s {
            self.release(second);
        } else {
            let (word, bit) = self.position(second);
            self.held[word] |= bit;
        }
    }

    fn release(&mut self, second: i64) {
        if self.released_through.is_none_or(|r| r.0 < second) {
            self.released_through = Some(EventTime(second));
        }
    }

    /// Releases the ring's seconds up to `through`, the anchor having been
    /// `anchor` until now (so every second in the ring is after `anchor - horizon`).
    fn release_held_through(&mut self, anchor: EventTime, through: i64) {
        let first = anchor.0 - self.horizon_s + 1;
        // Past the anchor the ring holds nothing: at most one horizon of seconds to look at.
        let last = through.min(anchor.0);
        for second in (first..=last).rev() {
            let (word, bit) = self.position(second);
            if self.held[word] & bit != 0 {
                self.release(second);
                self.held[word] &= !bit;
            }
        }
    }

    fn position(&self, second: i64) -> (usize, u64) {
        let index = second.rem_euclid(self.held.len() as i64 * 64) as usize;
        (index / 64, 1 << (index % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::reorder::ReorderBuffer;
    use proptest::prelude::*;

    proptest! {
        /// Against the producer's own buffer, on dropoffs that jump about
        /// (ties, late ones, far jumps past a whole horizon), with short horizons.
        #[test]
        fn refuses_and_releases_as_the_reorder_buffer_does(
            horizon_s in 0i64..200,
            steps in proptest::collection::vec(-300i64..400, 1..300),
        ) {
            let mut buffer = ReorderBuffer::new(horizon_s);
            let mut horizon = DropoffHorizon::new(horizon_s);
            let (mut at, mut released, mut latest) = (1_420_848_000, None, None);
            for step in steps {
                at += step;
                let taken = buffer.push(EventTime(at), ());
                if taken {
                    latest = latest.max(Some(EventTime(at)));
                }
                while let Some((second, ())) = buffer.pop_ready() {
                    released = Some(second);
                }
                prop_assert_eq!(horizon.push(EventTime(at)), taken, "push of {}", at);
                prop_assert_eq!(horizon.released_through(), released);
                prop_assert_eq!(horizon.latest(), latest);
            }
        }
    }

    #[test]
    fn a_jump_past_the_horizon_releases_everything_held() {
        let mut horizon = DropoffHorizon::new(100);
        for at in [1_000, 1_050, 1_020, 1_099] {
            assert!(horizon.push(EventTime(at)));
        }
        assert_eq!(horizon.released_through(), None);
        // One dropoff far ahead is not followed; four distinct ones are.
        assert!(horizon.push(EventTime(5_000)));
        assert_eq!(horizon.released_through(), None, "one bogus dropoff releases nothing");
        for at in [5_001, 5_002, 5_003] {
            assert!(horizon.push(EventTime(at)));
        }
        assert_eq!(horizon.released_through(), Some(EventTime(1_099)));
        assert!(!horizon.push(EventTime(1_098)), "behind a released dropoff");
        assert!(horizon.push(EventTime(1_099)), "a tie with the released one is in order");
        assert_eq!(horizon.latest(), Some(EventTime(5_003)));
    }
}
