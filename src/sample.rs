//! Step 4 of the request path: the head sampling decision.
//!
//! Parent-based by default: a caller's sampled flag is followed. A new trace is sampled when
//! its trace id falls under the ratio; the test uses only the trace id, so every tracegate
//! with the same ratio decides the same for the same trace.

use crate::config::SamplingSettings;
use crate::context::TraceParent;

#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    parent_based: bool,
    /// Sample when the trace id's low 56 bits are below this.
    threshold: u64,
}

const RANDOM_BITS: u32 = 56;

impl Sampler {
    pub fn new(s: &SamplingSettings) -> Self {
        let max = 1u64 << RANDOM_BITS;
        let threshold = if s.ratio >= 1.0 {
            max
        } else if s.ratio <= 0.0 {
            0
        } else {
            (s.ratio * max as f64) as u64
        };
        Sampler {
            parent_based: s.parent_based,
            threshold,
        }
    }

    /// Should this exchange be recorded and exported?
    pub fn decide(&self, parent: Option<&TraceParent>, trace_id: &[u8; 16]) -> bool {
        match parent {
            Some(p) if self.parent_based => p.sampled(),
            _ => self.ratio_says(trace_id),
        }
    }

    /// The right-most 7 bytes of a trace id are the random part (W3C Level 2).
    fn ratio_says(&self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&trace_id[9..]);
        u64::from_be_bytes(low) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ids;

    fn parent(sampled: bool) -> TraceParent {
        TraceParent {
            trace_id: [7; 16],
            parent_id: [1; 8],
            flags: u8::from(sampled),
        }
    }

    #[test]
    fn parent_based_follows_caller() {
        let s = Sampler::new(&SamplingSettings {
            ratio: 0.0,
            parent_based: true,
        });
        assert!(s.decide(Some(&parent(true)), &[7; 16]));
        let s = Sampler::new(&SamplingSettings {
            ratio: 1.0,
            parent_based: true,
        });
        assert!(!s.decide(Some(&parent(false)), &[7; 16]));
    }

    #[test]
    fn not_parent_based_uses_ratio_even_with_parent() {
        let s = Sampler::new(&SamplingSettings {
            ratio: 0.0,
            parent_based: false,
        });
        assert!(!s.decide(Some(&parent(true)), &[7; 16]));
    }

    #[test]
    fn ratio_is_consistent_per_trace_id_and_close_to_ratio() {
        let s = Sampler::new(&SamplingSettings {
            ratio: 0.25,
            parent_based: true,
        });
        let mut kept = 0;
        for _ in 0..20_000 {
            let id = ids::trace_id();
            let d = s.decide(None, &id);
            assert_eq!(d, s.decide(None, &id));
            kept += usize::from(d);
        }
        assert!(
            (4_000..6_000).contains(&kept),
            "kept {kept} of 20000 at 25%"
        );
    }

    #[test]
    fn ratio_bounds() {
        let all = Sampler::new(&SamplingSettings {
            ratio: 1.0,
            parent_based: false,
        });
        let none = Sampler::new(&SamplingSettings {
            ratio: 0.0,
            parent_based: false,
        });
        assert!(all.decide(None, &[0xff; 16]));
        assert!(!none.decide(None, &[0; 16]));
    }
}
