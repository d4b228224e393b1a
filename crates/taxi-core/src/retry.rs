//! The retry policy shared by every client that retries (Kinesis writes,
//! bulk indexing): exponential backoff with jitter, capped.

use std::time::Duration;

/// Exponential backoff with jitter: attempt `n` (from 1) waits between half and
/// all of `base * 2^(n-1)`, capped; `jitter` in [0, 1) picks the point.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(cap);
    exponential.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        assert_eq!(backoff(1, base, cap, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(4, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert!(backoff(30, base, cap, 0.3) >= cap / 2);
    }
}
