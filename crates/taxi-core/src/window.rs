//! Event-time panes and the windows built from them.
//!
//! Windows are aligned to the Unix epoch. A sliding window of size S and slide
//! D (S a multiple of D) is the union of S / D consecutive panes of length D; a
//! tumbling window is the case S = D. Each trip is written to exactly one pane,
//! never to every window that contains it.

use serde::{Deserialize, Serialize};

use crate::time::EventTime;

/// Start of a pane (a multiple of the slide), in event-time seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaneStart(pub i64);

/// Start of a window (a multiple of the slide), in event-time seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowStart(pub i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowSpecError {
    #[error("window size and slide must be positive (size {size_s} s, slide {slide_s} s)")]
    NotPositive { size_s: i64, slide_s: i64 },
    #[error("window size {size_s} s must be a multiple of the slide {slide_s} s")]
    NotMultiple { size_s: i64, slide_s: i64 },
}

/// Window size and slide, validated: both positive, size a multiple of slide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    size_s: i64,
    slide_s: i64,
}

impl WindowSpec {
    pub fn new(size_s: i64, slide_s: i64) -> Result<WindowSpec, WindowSpecError> {
        if size_s <= 0 || slide_s <= 0 {
            return Err(WindowSpecError::NotPositive { size_s, slide_s });
        }
        if size_s % slide_s != 0 {
            return Err(WindowSpecError::NotMultiple { size_s, slide_s });
        }
        Ok(WindowSpec { size_s, slide_s })
    }

    pub fn tumbling(size_s: i64) -> Result<WindowSpec, WindowSpecError> {
        WindowSpec::new(size_s, size_s)
    }

    pub fn size_s(&self) -> i64 {
        self.size_s
    }

    pub fn slide_s(&self) -> i64 {
        self.slide_s
    }

    /// How many panes make one window.
    pub fn panes_per_window(&self) -> i64 {
        self.size_s / self.slide_s
    }

    pub fn pane_of(&self, t: EventTime) -> PaneStart {
        PaneStart(t.0.div_euclid(self.slide_s) * self.slide_s)
    }

    pub fn pane_end(&self, pane: PaneStart) -> EventTime {
        EventTime(pane.0 + self.slide_s)
    }

    pub fn window_end(&self, window: WindowStart) -> EventTime {
        EventTime(window.0 + self.size_s)
    }

    /// Every window that contains the pane, oldest first.
    pub fn windows_containing(&self, pane: PaneStart) -> impl Iterator<Item = WindowStart> + '_ {
        (0..self.panes_per_window()).rev().map(move |k| WindowStart(pane.0 - k * self.slide_s))
    }

    /// The panes that make up a window, oldest first.
    pub fn panes_of(&self, window: WindowStart) -> impl Iterator<Item = PaneStart> + '_ {
        (0..self.panes_per_window()).map(move |k| PaneStart(window.0 + k * self.slide_s))
    }

    /// The last window that contains the pane, i.e. the one that ends last.
    pub fn last_window_containing(&self, pane: PaneStart) -> WindowStart {
        WindowStart(pane.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_specs() {
        assert!(WindowSpec::new(600, 0).is_err());
        assert!(WindowSpec::new(600, 700).is_err());
        assert_eq!(WindowSpec::new(600, 250), Err(WindowSpecError::NotMultiple { size_s: 600, slide_s: 250 }));
    }

    #[test]
    fn tumbling_panes_are_windows() {
        let spec = WindowSpec::tumbling(600).unwrap();
        let pane = spec.pane_of(EventTime(1_420_866_754));
        assert_eq!(pane, PaneStart(1_420_866_600));
        assert_eq!(spec.windows_containing(pane).collect::<Vec<_>>(), vec![WindowStart(1_420_866_600)]);
        assert_eq!(spec.pane_of(EventTime(-1)), PaneStart(-600), "floor, also before the epoch");
    }

    proptest! {
        #[test]
        fn sliding_window_membership(t in -10_000_000i64..10_000_000, slide in 1i64..900, k in 1i64..6) {
            let spec = WindowSpec::new(slide * k, slide).unwrap();
            let pane = spec.pane_of(EventTime(t));
            prop_assert!(pane.0 <= t && t < spec.pane_end(pane).0);
            let windows: Vec<_> = spec.windows_containing(pane).collect();
            prop_assert_eq!(windows.len() as i64, k);
            for w in windows {
                // The window contains t, and its panes include this pane exactly once.
                prop_assert!(w.0 <= t && t < spec.window_end(w).0);
                prop_assert_eq!(spec.panes_of(w).filter(|p| *p == pane).count(), 1);
            }
        }
    }
}
