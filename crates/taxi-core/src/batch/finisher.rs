//! The streaming window finisher: partials of the open panes in, merged
//! windows out as soon as no later trip can fall into them.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::aggregate::{MetricKey, PartialKey, PartialValue};
use crate::closing::{closable_through, merge, windows_to_close};
use crate::time::EventTime;
use crate::window::{PaneStart, WindowSpec, WindowStart};

/// Holds the partials of the panes some unfinished window still needs, so
/// memory follows the window size, not the input's length.
#[derive(Debug)]
pub struct WindowFinisher {
    spec: WindowSpec,
    panes: BTreeMap<PaneStart, FxHashMap<MetricKey, PartialValue>>,
    /// Every window ending at or before this is finished (the closer's `closed_through`).
    closed_through: Option<EventTime>,
}

/// A finished window and its partials merged over its panes.
pub type FinishedWindow = (WindowStart, BTreeMap<MetricKey, PartialValue>);

impl WindowFinisher {
    pub fn new(spec: WindowSpec) -> WindowFinisher {
        WindowFinisher { spec, panes: BTreeMap::new(), closed_through: None }
    }

    /// Adds to a pane's partial. The pane must not belong to a finished
    /// window: the caller only advances to a time no later trip is before.
    pub fn add(&mut self, key: PartialKey, value: PartialValue) {
        debug_assert!(
            self.closed_through.is_none_or(|c| self.spec.pane_end(key.pane) > c),
            "a partial for pane {:?}, finished through {:?}",
            key.pane,
            self.closed_through
        );
        self.panes.entry(key.pane).or_default().entry(key.metric).or_default().add(value);
    }

    /// Panes held now.
    pub fn open_panes(&self) -> usize {
        self.panes.len()
    }

    /// Finishes the windows with data that end at or before `watermark` (no
    /// later trip has an earlier event time), oldest first, as the closer
    /// would: the same choice of windows, the same merge.
    pub fn advance(&mut self, watermark: EventTime) -> Vec<FinishedWindow> {
        let windows = windows_to_close(&self.spec, self.panes.keys().copied(), self.closed_through, watermark);
        let finished = windows.into_iter().map(|window| (window, self.merged(window))).collect();
        let through = closable_through(&self.spec, watermark);
        if self.closed_through.is_none_or(|c| through > c) {
            self.closed_through = Some(through);
        }
        // A pane is done once the last window that reads it is finished.
        let spec = self.spec;
        self.panes.retain(|pane, _| spec.window_end(spec.last_window_containing(*pane)) > through);
        finished
    }

    /// Finishes every window left (the end of the input).
    pub fn finish(mut self) -> Vec<FinishedWindow> {
        match self.panes.keys().next_back() {
            Some(&last) => {
                let end = self.spec.window_end(self.spec.last_window_containing(last));
                self.advance(end)
            }
            None => Vec::new(),
        }
    }

    fn merged(&self, window: WindowStart) -> BTreeMap<MetricKey, PartialValue> {
        let panes = self.spec.panes_of(window).filter_map(|pane| self.panes.get(&pane));
        merge(panes.flat_map(|partials| partials.iter().map(|(key, value)| (*key, *value))))
    }
}
