//! Step 4 of the request path: the head sampling decision, and the tail rule that keeps
//! errors and slow requests the head sampler dropped.
//!
//! Parent-based by default: a caller's sampled flag is followed. A new trace is sampled when
//! its trace id falls under the route's (or the global) ratio; the test uses only the trace
//! id, so every tracegate with the same ratio decides the same for the same trace. New
//! sampled traces then pass a per-process rate limit (GCRA on one atomic, no lock).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::SamplingSettings;
use crate::context::TraceParent;

/// Why an exchange is (or is not) recorded. Recorded on spans as `tracegate.sampling.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The caller's sampled flag was followed.
    Parent,
    /// The trace-id ratio decided.
    Ratio,
    /// The ratio said yes but the rate limit said no.
    RateLimited,
    /// Kept after the fact: 5xx or a failed exchange.
    Error,
    /// Kept after the fact: slower than the route's `slow_threshold`.
    Slow,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Parent,
        Reason::Ratio,
        Reason::RateLimited,
        Reason::Error,
        Reason::Slow,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Parent => "parent",
            Reason::Ratio => "ratio",
            Reason::RateLimited => "rate_limited",
            Reason::Error => "error",
            Reason::Slow => "slow",
        }
    }
}

/// A head decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    pub reason: Reason,
}

/// Trace-id ratio as a threshold on the random low 56 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio(u64);

const RANDOM_BITS: u32 = 56;

impl Ratio {
    pub fn new(ratio: f64) -> Self {
        let max = 1u64 << RANDOM_BITS;
        Ratio(if ratio >= 1.0 {
            max
        } else if ratio <= 0.0 {
            0
        } else {
            (ratio * max as f64) as u64
        })
    }

    /// The right-most 7 bytes of a trace id are the random part (W3C Level 2).
    pub fn says(self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&trace_id[9..]);
        u64::from_be_bytes(low) < self.0
    }
}

/// At most `rate` events per second with bursts of `burst`, decided on one atomic
/// (the generic cell rate algorithm: the "theoretical arrival time" advances per event).
#[derive(Debug)]
pub struct RateLimiter {
    /// Nanoseconds between events.
    interval: u64,
    /// How far the arrival time may run ahead of now.
    tolerance: u64,
    tat: AtomicU64,
    epoch: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let interval = (1e9 / per_second.max(1e-9)).min(u64::MAX as f64 / 4.0) as u64;
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1)) - 1),
            tat: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn allow(&self) -> bool {
        self.allow_at(self.epoch.elapsed().as_nanos() as u64)
    }

    /// For an event that happened at `at` (a time stamp the caller has: no clock read).
    /// Events from before the limiter's epoch count as at its epoch.
    pub fn allow_since(&self, at: Instant) -> bool {
        self.allow_at(at.saturating_duration_since(self.epoch).as_nanos() as u64)
    }

    /// `now` in nanoseconds since the limiter's epoch (tests pass their own clock).
    pub fn allow_at(&self, now: u64) -> bool {
        let mut tat = self.tat.load(Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, start + self.interval, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

/// A route's sampling: its ratio and its tail rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoutePolicy {
    pub ratio: Ratio,
    pub tail: TailRule,
}

/// What makes an exchange the head sampler dropped worth keeping after all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailRule {
    /// Keep 5xx and failed exchanges.
    pub keep_errors: bool,
    /// Keep exchanges slower than this; `None`: never for slowness.
    pub slow: Option<Duration>,
}

impl TailRule {
    /// `failed`: the exchange has an `error.type` (upstream error, aborted, ...).
    pub fn keep(&self, status: u16, failed: bool, took: Duration) -> Option<Reason> {
        if self.keep_errors && (status >= 500 || failed) {
            Some(Reason::Error)
        } else if self.slow.is_some_and(|t| took > t) {
            Some(Reason::Slow)
        } else {
            None
        }
    }
}

/// Decisions by outcome and reason, for `/metrics`.
#[derive(Debug, Default)]
pub struct SamplingStats {
    sampled: [AtomicU64; 5],
    dropped: [AtomicU64; 5],
}

impl SamplingStats {
    pub fn count(&self, sampled: bool, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        let table = if sampled {
            &self.sampled
        } else {
            &self.dropped
        };
        table[i].fetch_add(1, Relaxed);
    }

    /// (sampled, reason, count) for every pair.
    pub fn snapshot(&self) -> Vec<(bool, Reason, u64)> {
        let mut out = Vec::with_capacity(10);
        for (i, r) in Reason::ALL.iter().enumerate() {
            out.push((true, *r, self.sampled[i].load(Relaxed)));
            out.push((false, *r, self.dropped[i].load(Relaxed)));
        }
        out
    }
}

#[derive(Debug)]
pub struct Sampler {
    parent_based: bool,
    pub keep_errors: bool,
    limiter: Option<RateLimiter>,
}

impl Sampler {
    pub fn new(s: &SamplingSettings) -> Self {
        Sampler {
            parent_based: s.parent_based,
            keep_errors: s.keep_errors,
            limiter: s
                .rate_limit
                .map(|r| RateLimiter::new(r, r.ceil().max(1.0) as u32)),
        }
    }

    /// Should this exchange be recorded and exported? `ratio` is the route's.
    pub fn decide(
        &self,
        parent: Option<&TraceParent>,
        trace_id: &[u8; 16],
        ratio: Ratio,
    ) -> Decision {
        match parent {
            Some(p) if self.parent_based => Decision {
                sampled: p.sampled(),
                reason: Reason::Parent,
            },
            _ if !ratio.says(trace_id) => Decision {
                sampled: false,
                reason: Reason::Ratio,
            },
            _ => match &self.limiter {
                Some(l) if !l.allow() => Decision {
                    sampled: false,
                    reason: Reason::RateLimited,
                },
                _ => Decision {
                    sampled: true,
                    reason: Reason::Ratio,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ids;

    fn settings(ratio: f64, parent_based: bool) -> SamplingSettings {
        SamplingSettings {
            ratio,
            parent_based,
            ..SamplingSettings::default()
        }
    }

    fn parent(sampled: bool) -> TraceParent {
        TraceParent {
            trace_id: [7; 16],
            parent_id: [1; 8],
            flags: u8::from(sampled),
        }
    }

    #[test]
    fn parent_based_follows_caller() {
        let s = Sampler::new(&settings(0.0, true));
        let d = s.decide(Some(&parent(true)), &[7; 16], Ratio::new(0.0));
        assert_eq!(
            d,
            Decision {
                sampled: true,
                reason: Reason::Parent
            }
        );
        let d = s.decide(Some(&parent(false)), &[7; 16], Ratio::new(1.0));
        assert!(!d.sampled);
    }

    #[test]
    fn not_parent_based_uses_ratio_even_with_parent() {
        let s = Sampler::new(&settings(0.0, false));
        assert!(
            !s.decide(Some(&parent(true)), &[7; 16], Ratio::new(0.0))
                .sampled
        );
    }

    #[test]
    fn ratio_is_consistent_per_trace_id_and_close_to_ratio() {
        let s = Sampler::new(&settings(0.25, true));
        let r = Ratio::new(0.25);
        let mut kept = 0;
        for _ in 0..20_000 {
            let id = ids::trace_id();
            let d = s.decide(None, &id, r);
            assert_eq!(d, s.decide(None, &id, r));
            kept += usize::from(d.sampled);
        }
        assert!(
            (4_000..6_000).contains(&kept),
            "kept {kept} of 20000 at 25%"
        );
    }

    #[test]
    fn ratio_bounds() {
        assert!(Ratio::new(1.0).says(&[0xff; 16]));
        assert!(!Ratio::new(0.0).says(&[0; 16]));
    }

    #[test]
    fn rate_limiter_allows_burst_then_rate() {
        let l = RateLimiter::new(10.0, 5);
        let allowed = (0..100).filter(|_| l.allow_at(0)).count();
        assert_eq!(allowed, 5, "the burst at t=0");
        // One second later the bucket has refilled, but only up to its capacity.
        let allowed = (0..100).filter(|_| l.allow_at(1_000_000_000)).count();
        assert_eq!(allowed, 5);
        // 0.2 s after that: two intervals' worth.
        let allowed = (0..100).filter(|_| l.allow_at(1_200_000_000)).count();
        assert_eq!(allowed, 2);
        // Over 10 simulated seconds at one attempt per millisecond: about 10 per second.
        let l = RateLimiter::new(10.0, 1);
        let allowed = (0..10_000u64)
            .filter(|ms| l.allow_at(ms * 1_000_000))
            .count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn rate_limit_applies_to_new_traces_only() {
        let mut s = settings(1.0, true);
        s.rate_limit = Some(1.0);
        let s = Sampler::new(&s);
        let r = Ratio::new(1.0);
        assert!(s.decide(None, &[1; 16], r).sampled);
        assert_eq!(
            s.decide(None, &[2; 16], r),
            Decision {
                sampled: false,
                reason: Reason::RateLimited
            }
        );
        assert!(
            s.decide(Some(&parent(true)), &[3; 16], r).sampled,
            "continued traces are not limited"
        );
    }

    #[test]
    fn errors_and_slow_are_kept_after_the_fact() {
        let t = TailRule {
            keep_errors: true,
            slow: Some(Duration::from_millis(100)),
        };
        assert_eq!(t.keep(502, false, Duration::ZERO), Some(Reason::Error));
        assert_eq!(t.keep(200, true, Duration::ZERO), Some(Reason::Error));
        assert_eq!(
            t.keep(200, false, Duration::from_millis(150)),
            Some(Reason::Slow)
        );
        assert_eq!(
            t.keep(404, false, Duration::from_millis(50)),
            None,
            "4xx is not an error"
        );
        let off = TailRule {
            keep_errors: false,
            slow: None,
        };
        assert_eq!(off.keep(503, true, Duration::from_secs(9)), None);
    }

    #[test]
    fn stats_count_by_outcome_and_reason() {
        let s = SamplingStats::default();
        s.count(true, Reason::Slow);
        s.count(false, Reason::Ratio);
        s.count(false, Reason::Ratio);
        let snap = s.snapshot();
        assert!(snap.contains(&(true, Reason::Slow, 1)));
        assert!(snap.contains(&(false, Reason::Ratio, 2)));
        assert!(snap.contains(&(true, Reason::Ratio, 0)));
    }
}
