//! Retry math (docs/design.md §2.3): the exact pause before each retry, with seeded randomness so a
//! replay computes the same delays.

use std::time::Duration;

use wayline_journal::duration::MAX as MAX_DURATION;
use wayline_lang::model::{Backoff, Jitter, Retry};

/// How many lost attempts (their owner or agent died) a step retries, at once and outside its
/// `max_attempts`, before the next loss fails it with class `lost` (docs/design.md §2.3).
pub const MAX_LOST: u32 = 3;

/// The pause before retry number `n` (n ≥ 1: the pause before attempt n + 1), given two uniform
/// samples in [0, 1): `pick` for `random` backoff and `jitter` for the jitter.
///
/// ```
/// use std::time::Duration;
/// use wayline_lang::model::{Backoff, Retry};
/// use wayline_core::retry::delay;
/// let policy = Retry {
///     max_attempts: 5,
///     backoff: Backoff::Exponential { factor: 2.0 },
///     delay: Duration::from_secs(1),
///     max_delay: Some(Duration::from_secs(5)),
///     ..Retry::default()
/// };
/// let delays: Vec<u64> = (1..5).map(|n| delay(&policy, n, 0.0, 0.0).as_secs()).collect();
/// assert_eq!(delays, [1, 2, 4, 5]);
/// ```
pub fn delay(policy: &Retry, n: u32, pick: f64, jitter: f64) -> Duration {
    let base = policy.delay.as_secs_f64() * 1000.0;
    let n = n.max(1);
    let mut ms = match policy.backoff {
        Backoff::Fixed => base,
        Backoff::Linear => base * f64::from(n),
        Backoff::Exponential { factor } => base * factor.powi((n - 1).min(4096) as i32),
        Backoff::Random => {
            let high = policy.max_delay.map_or(base, |max| max.as_secs_f64() * 1000.0);
            base + (high - base).max(0.0) * pick
        }
    };
    if let Some(max) = policy.max_delay {
        ms = ms.min(max.as_secs_f64() * 1000.0);
    }
    ms = match policy.jitter {
        Jitter::None => ms,
        Jitter::Full => ms * jitter,
        Jitter::Equal => ms / 2.0 + ms / 2.0 * jitter,
    };
    to_duration(ms)
}

/// The range a delay can fall in: exact (`min == max`) when nothing is random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: Duration,
    pub max: Duration,
}

/// The pause before each retry a policy allows, in order (`max_attempts - 1` entries).
///
/// ```
/// use std::time::Duration;
/// use wayline_lang::model::{Backoff, Jitter, Retry};
/// use wayline_core::retry::schedule;
/// let policy = Retry { max_attempts: 3, backoff: Backoff::Linear, jitter: Jitter::Full, ..Retry::default() };
/// let ranges = schedule(&policy);
/// assert_eq!(ranges[1].min, Duration::ZERO);
/// assert_eq!(ranges[1].max, Duration::from_secs(2));
/// ```
pub fn schedule(policy: &Retry) -> Vec<Range> {
    // Computing the endpoints with the extreme samples: every formula is monotonic in them.
    // 1 - ε stands for the supremum of [0, 1).
    let top = 1.0 - f64::EPSILON;
    (1..policy.max_attempts.min(10_001))
        .map(|n| Range { min: delay(policy, n, 0.0, 0.0), max: delay(policy, n, top, top) })
        .collect()
}

fn to_duration(ms: f64) -> Duration {
    if !ms.is_finite() || ms <= 0.0 {
        return Duration::ZERO;
    }
    let max = MAX_DURATION.as_millis() as f64;
    Duration::from_millis(ms.min(max).round() as u64)
}

/// Two uniform samples in [0, 1) derived from (execution id, step id, attempt): the same inputs
/// always give the same samples, so replaying a journal reproduces every delay.
pub fn samples(execution: &str, step: &str, attempt: u32) -> (f64, f64) {
    let mut state = fnv1a(execution.as_bytes(), 0xcbf2_9ce4_8422_2325);
    state = fnv1a(&[0xff], state);
    state = fnv1a(step.as_bytes(), state);
    state = fnv1a(&attempt.to_le_bytes(), state);
    let first = splitmix64(&mut state);
    let second = splitmix64(&mut state);
    (unit(first), unit(second))
}

fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 53 bits as a float in [0, 1).
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(backoff: Backoff, delay_ms: u64, max_ms: Option<u64>, jitter: Jitter) -> Retry {
        Retry {
            max_attempts: 6,
            backoff,
            delay: Duration::from_millis(delay_ms),
            max_delay: max_ms.map(Duration::from_millis),
            jitter,
            ..Retry::default()
        }
    }

    fn exact(policy: &Retry) -> Vec<u64> {
        schedule(policy)
            .iter()
            .map(|r| {
                assert_eq!(r.min, r.max);
                r.min.as_millis() as u64
            })
            .collect()
    }

    #[test]
    fn deterministic_policies_follow_the_formulas() {
        assert_eq!(exact(&policy(Backoff::Fixed, 500, None, Jitter::None)), [500; 5]);
        assert_eq!(
            exact(&policy(Backoff::Linear, 500, None, Jitter::None)),
            [500, 1000, 1500, 2000, 2500]
        );
        assert_eq!(
            exact(&policy(Backoff::Linear, 500, Some(1200), Jitter::None)),
            [500, 1000, 1200, 1200, 1200]
        );
        assert_eq!(
            exact(&policy(Backoff::Exponential { factor: 2.0 }, 1000, None, Jitter::None)),
            [1000, 2000, 4000, 8000, 16000]
        );
        assert_eq!(
            exact(&policy(Backoff::Exponential { factor: 1.5 }, 100, None, Jitter::None)),
            [100, 150, 225, 338, 506]
        );
    }

    #[test]
    fn random_and_jitter_give_ranges() {
        let r = schedule(&policy(Backoff::Random, 1000, Some(3000), Jitter::None));
        assert!(r.iter().all(|r| r.min.as_millis() == 1000 && r.max.as_millis() == 3000));
        let r = schedule(&policy(Backoff::Fixed, 1000, None, Jitter::Equal));
        assert!(r.iter().all(|r| r.min.as_millis() == 500 && r.max.as_millis() == 1000));
        let r =
            schedule(&policy(Backoff::Exponential { factor: 2.0 }, 1000, Some(5000), Jitter::Full));
        let max: Vec<u128> = r.iter().map(|r| r.max.as_millis()).collect();
        assert_eq!(max, [1000, 2000, 4000, 5000, 5000]);
        assert!(r.iter().all(|r| r.min.is_zero()));
    }

    #[test]
    fn samples_are_reproducible_and_vary() {
        assert_eq!(samples("ex", "step", 1), samples("ex", "step", 1));
        assert_ne!(samples("ex", "step", 1), samples("ex", "step", 2));
        assert_ne!(samples("ex", "step", 1), samples("ex", "steq", 1));
        // ("a", "bc") and ("ab", "c") must not collide.
        assert_ne!(samples("a", "bc", 1), samples("ab", "c", 1));
    }

    proptest! {
        #[test]
        fn every_delay_lies_in_its_scheduled_range(
            backoff in prop_oneof![Just(Backoff::Fixed), Just(Backoff::Linear), Just(Backoff::Random), (1.0f64..4.0).prop_map(|factor| Backoff::Exponential { factor })],
            jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)],
            delay_ms in 0u64..10_000,
            extra in proptest::option::of(0u64..20_000),
            pick in 0.0f64..1.0,
            jit in 0.0f64..1.0,
        ) {
            let max_ms = match backoff { Backoff::Random => Some(delay_ms + extra.unwrap_or(0)), _ => extra.map(|e| delay_ms + e) };
            let p = policy(backoff, delay_ms, max_ms, jitter);
            for (i, range) in schedule(&p).into_iter().enumerate() {
                let d = delay(&p, i as u32 + 1, pick, jit);
                prop_assert!(range.min <= d && d <= range.max, "{:?} not in {:?}", d, range);
                if let Some(max) = p.max_delay { prop_assert!(d <= max); }
            }
        }
    }
}
