//! Counts per reason: why records (the aggregate function) or rows (the
//! producer, batch mode) did not count, one slot per reason.

use std::marker::PhantomData;

/// A closed set of reasons, each with its own slot.
pub trait Reason: Copy + 'static {
    /// Every reason, in slot order.
    const ALL: &'static [Self];
    fn index(self) -> usize;
}

/// How many times each reason of `R` was seen (`N`: how many reasons `R` has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts<R, const N: usize> {
    slots: [u64; N],
    reasons: PhantomData<R>,
}

impl<R, const N: usize> Default for Counts<R, N> {
    fn default() -> Self {
        Counts { slots: [0; N], reasons: PhantomData }
    }
}

impl<R: Reason, const N: usize> Counts<R, N> {
    pub fn add(&mut self, reason: R, n: u64) {
        self.slots[reason.index()] += n;
    }

    pub fn get(&self, reason: R) -> u64 {
        self.slots[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.slots.iter().sum()
    }

    /// Every reason with its count, zero or not.
    pub fn iter(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        R::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    /// The reasons with a non-zero count.
    pub fn nonzero(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        self.iter().filter(|(_, n)| *n > 0)
    }

    /// Adds every count of `other`.
    pub fn add_all(&mut self, other: &Counts<R, N>) {
        for (slot, n) in self.slots.iter_mut().zip(other.slots) {
            *slot += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::event::InvalidReason;
    use crate::shard::ReasonCounts;

    #[test]
    fn counts_add_up_per_reason() {
        let mut counts = ReasonCounts::default();
        counts.add(InvalidReason::OutsideArea, 3);
        counts.add(InvalidReason::Empty, 1);
        let mut more = ReasonCounts::default();
        more.add(InvalidReason::OutsideArea, 2);
        counts.add_all(&more);
        assert_eq!((counts.get(InvalidReason::OutsideArea), counts.get(InvalidReason::NotUtf8), counts.total()), (5, 0, 6));
        assert_eq!(counts.nonzero().collect::<Vec<_>>(), vec![(InvalidReason::Empty, 1), (InvalidReason::OutsideArea, 5)]);
        assert_eq!(counts.iter().count(), InvalidReason::ALL.len());
    }
}
