//! Capped exponential backoff with full jitter, for join steps that wait for peers: the
//! pause doubles from `base` up to `cap`, and each pause is drawn at random below it, so
//! nodes that booted together do not retry in lockstep.

use std::time::Duration;

/// The pauses between attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Pauses starting at `base`, never longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next pause, before jitter: `base × 2^attempt`, at most `cap`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next pause: at random between a quarter of the ceiling and the ceiling (a
    /// pause of zero would spin), then the ceiling grows.
    pub fn next_pause(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let mut bytes = [0u8; 4];
        // Without randomness the pause is the ceiling: slower, never wrong.
        if getrandom::fill(&mut bytes).is_err() {
            return ceiling;
        }
        let fraction = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
        ceiling.mul_f64(0.25 + 0.75 * fraction)
    }

    /// Back to the first pause (after a step finished).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(backoff.ceiling().as_secs());
            let pause = backoff.next_pause();
            assert!(pause <= Duration::from_secs(10), "{pause:?}");
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 10, 10]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn every_pause_lies_between_a_quarter_of_the_ceiling_and_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_secs(8), Duration::from_secs(8));
        for _ in 0..100 {
            let pause = backoff.next_pause();
            assert!(
                pause >= Duration::from_secs(2) && pause <= Duration::from_secs(8),
                "{pause:?}"
            );
        }
    }
}
