//! What a Kinesis event source mapping does with one shard's records, as a
//! pure state machine (no I/O): which records make the next batch, and what a
//! success, a reported item failure or a function error does to them.
//!
//! Lambda's documented behaviour, followed here: batches of at most
//! `BatchSize` records in shard order, one batch in flight per shard; a batch
//! item failure retries from the reported record; a function error retries
//! the batch, first halved when `BisectBatchOnFunctionError` is on; once a
//! batch has failed more than `MaximumRetryAttempts` times it goes to the
//! on-failure destination and the shard moves on.

use std::collections::VecDeque;

/// The mapping's settings that shape batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliverySettings {
    /// `BatchSize`: records per invocation at most.
    pub batch_size: usize,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: bool,
    /// `MaximumRetryAttempts`; `None` retries until the records expire (Lambda's -1).
    pub max_retry_attempts: Option<u32>,
}

/// How an invocation of a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No batch item failure.
    Success,
    /// The function reported this record (an index into the batch) as the
    /// first to deliver again; the ones before it are done.
    RetryFrom(usize),
    /// The function failed (an error, a timeout, an unknown item identifier).
    FunctionError,
}

/// What happened to the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<R> {
    /// Every record of the batch is done.
    Delivered,
    /// Some records are left to deliver again (the first `done` were delivered).
    Retry { done: usize },
    /// The retries ran out: these records go to the on-failure destination.
    Discarded { done: usize, records: Vec<R> },
}

/// One shard's records waiting for the function, and the retry state of the
/// batch at their head.
#[derive(Debug)]
pub struct ShardDelivery<R> {
    settings: DeliverySettings,
    pending: VecDeque<R>,
    /// The next batch's size limit: the batch size, or less after a bisect.
    limit: usize,
    /// Failed invocations of the batch at the head since it last made progress.
    attempts: u32,
}

impl<R: Clone> ShardDelivery<R> {
    pub fn new(settings: DeliverySettings) -> ShardDelivery<R> {
        let settings = DeliverySettings { batch_size: settings.batch_size.max(1), ..settings };
        ShardDelivery { settings, pending: VecDeque::new(), limit: settings.batch_size, attempts: 0 }
    }

    /// Records read from the shard, in order.
    pub fn push(&mut self, records: impl IntoIterator<Item = R>) {
        self.pending.extend(records);
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A full batch is waiting (no reason to wait for the batching window).
    pub fn has_full_batch(&self) -> bool {
        self.pending.len() >= self.limit
    }

    /// The next batch: the oldest pending records, at most the current limit.
    pub fn next_batch(&self) -> Vec<R> {
        self.pending.iter().take(self.limit).cloned().collect()
    }

    /// Applies the outcome of invoking the function with a batch of `batch_len`
    /// records taken from [`ShardDelivery::next_batch`].
    pub fn complete(&mut self, batch_len: usize, outcome: Outcome) -> Step<R> {
        let batch_len = batch_len.min(self.pending.len());
        let done = match outcome {
            Outcome::Success => {
                self.pending.drain(..batch_len);
                self.limit = self.settings.batch_size;
                self.attempts = 0;
                return Step::Delivered;
            }
            Outcome::RetryFrom(index) if index < batch_len => index,
            // An identifier outside the batch fails the whole batch, as on Lambda.
            Outcome::RetryFrom(_) | Outcome::FunctionError => 0,
        };
        self.pending.drain(..done);
        self.attempts += 1;
        let failed = batch_len - done;
        if self.settings.max_retry_attempts.is_some_and(|max| self.attempts > max) {
            let records = self.pending.drain(..failed).collect();
            self.limit = self.settings.batch_size;
            self.attempts = 0;
            return Step::Discarded { done, records };
        }
        if outcome == Outcome::FunctionError && self.settings.bisect_on_error && failed > 1 {
            self.limit = failed / 2;
        }
        Step::Retry { done }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn settings(batch_size: usize, bisect_on_error: bool, max_retry_attempts: Option<u32>) -> DeliverySettings {
        DeliverySettings { batch_size, bisect_on_error, max_retry_attempts }
    }

    #[test]
    fn batches_are_bounded_and_in_order() {
        let mut delivery = ShardDelivery::new(settings(3, false, None));
        delivery.push(1..=7);
        assert!(delivery.has_full_batch());
        assert_eq!(delivery.next_batch(), vec![1, 2, 3]);
        assert_eq!(delivery.complete(3, Outcome::Success), Step::Delivered);
        assert_eq!(delivery.next_batch(), vec![4, 5, 6]);
    }

    #[test]
    fn an_item_failure_retries_from_that_record() {
        let mut delivery = ShardDelivery::new(settings(4, false, None));
        delivery.push(1..=6);
        assert_eq!(delivery.complete(4, Outcome::RetryFrom(2)), Step::Retry { done: 2 });
        assert_eq!(delivery.next_batch(), vec![3, 4, 5, 6]);
        // An identifier that is not in the batch fails all of it.
        assert_eq!(delivery.complete(4, Outcome::RetryFrom(9)), Step::Retry { done: 0 });
        assert_eq!(delivery.next_batch(), vec![3, 4, 5, 6]);
    }

    #[test]
    fn a_function_error_bisects_until_the_bad_record_is_alone() {
        let mut delivery = ShardDelivery::new(settings(8, true, None));
        delivery.push(0..8);
        let poison = 5;
        let mut delivered = Vec::new();
        for _ in 0..20 {
            let batch = delivery.next_batch();
            if batch.contains(&poison) {
                if batch == vec![poison] {
                    break;
                }
                delivery.complete(batch.len(), Outcome::FunctionError);
            } else {
                delivery.complete(batch.len(), Outcome::Success);
                delivered.extend(batch);
            }
        }
        assert_eq!(delivered, vec![0, 1, 2, 3, 4]);
        assert_eq!(delivery.next_batch(), vec![poison]);
    }

    #[test]
    fn retries_run_out_into_the_on_failure_destination() {
        let mut delivery = ShardDelivery::new(settings(2, false, Some(2)));
        delivery.push(1..=3);
        assert_eq!(delivery.complete(2, Outcome::FunctionError), Step::Retry { done: 0 });
        assert_eq!(delivery.complete(2, Outcome::RetryFrom(1)), Step::Retry { done: 1 });
        assert_eq!(delivery.complete(2, Outcome::FunctionError), Step::Discarded { done: 0, records: vec![2, 3] });
        assert_eq!(delivery.pending(), 0);
    }

    proptest! {
        /// Whatever the function answers, every record is delivered or
        /// discarded exactly once, in shard order.
        #[test]
        fn every_record_is_delivered_or_discarded_once_in_order(
            records in 1usize..60,
            batch_size in 1usize..10,
            bisect in any::<bool>(),
            max_retry_attempts in proptest::option::of(0u32..4),
            answers in proptest::collection::vec((0u8..4, 0usize..12), 1..200),
        ) {
            let mut delivery = ShardDelivery::new(settings(batch_size, bisect, max_retry_attempts));
            delivery.push(0..records);
            let mut out = Vec::new();
            let mut answers = answers.into_iter().cycle();
            let mut invocations = 0;
            while delivery.pending() > 0 {
                let batch = delivery.next_batch();
                prop_assert!(!batch.is_empty() && batch.len() <= batch_size);
                // Always succeed eventually, so the loop ends even without a retry limit.
                invocations += 1;
                let (kind, index) = answers.next().unwrap();
                let outcome = match (kind, invocations > 400) {
                    (_, true) | (0, _) => Outcome::Success,
                    (1, _) => Outcome::RetryFrom(index),
                    _ => Outcome::FunctionError,
                };
                match delivery.complete(batch.len(), outcome) {
                    Step::Delivered => out.extend(batch),
                    Step::Retry { done } => out.extend(&batch[..done]),
                    Step::Discarded { done, records } => {
                        out.extend(&batch[..done]);
                        prop_assert_eq!(&records[..], &batch[done..]);
                        out.extend(records);
                    }
                }
            }
            prop_assert_eq!(out, (0..records).collect::<Vec<_>>());
        }
    }
}
