//! The request-duration histograms: counts, sum and exemplars in atomics, so recording a
//! request takes no lock (prometheus-client's histogram took an `RwLock` and a `Mutex` and
//! hashed the bucket into a map for its exemplar: ~270 instructions a traced request, and a
//! lock every worker shares per series). The family of series, keyed by route, method and
//! status class, is written as OpenMetrics text at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, fence};
use std::sync::{Arc, PoisonError};

/// Finite buckets: 1 ms doubling to 16.384 s; one more for `+Inf`.
const FINITE: usize = 15;
/// Their `le` labels, seconds, then `+Inf`.
const LE: [&str; FINITE + 1] = [
    "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
    "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf",
];

/// The bucket a duration falls in: the first whose bound it does not exceed
/// (`le="0.004"` holds (2 ms, 4 ms]).
fn bucket_of(nanos: u64) -> usize {
    let whole_ms_above = nanos.saturating_sub(1) / 1_000_000;
    ((u64::BITS - whole_ms_above.leading_zeros()) as usize).min(FINITE)
}

/// One series: a count per bucket (not cumulative: each request adds to one), the sum, and
/// the latest traced request of each bucket as its exemplar.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; FINITE + 1],
    sum_nanos: AtomicU64,
    exemplars: [Exemplar; FINITE + 1],
}

impl Histogram {
    /// Records one request of `nanos`; `trace_id` becomes its bucket's exemplar.
    pub fn observe(&self, nanos: u64, trace_id: Option<&[u8; 16]>) {
        let b = bucket_of(nanos);
        self.counts[b].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
        if let Some(id) = trace_id {
            self.exemplars[b].store(id, nanos);
        }
    }

    /// The `_sum`, `_count` and `_bucket` lines of this series; `labels` is its label set,
    /// already written (`route="..",method="..",status_class=".."`).
    fn write(&self, out: &mut String, name: &str, labels: &str, exemplars: bool) {
        let counts: [u64; FINITE + 1] = std::array::from_fn(|i| self.counts[i].load(Relaxed));
        let total: u64 = counts.iter().sum();
        let sum = seconds(self.sum_nanos.load(Relaxed));
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum:?}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
        let mut cumulative = 0;
        for (b, n) in counts.iter().enumerate() {
            cumulative += n;
            let _ = write!(
                out,
                "{name}_bucket{{le=\"{}\",{labels}}} {cumulative}",
                LE[b]
            );
            if let Some((id, nanos)) = exemplars.then(|| self.exemplars[b].load()).flatten() {
                let id = crate::context::w3c::trace_id_hex(&id);
                let id = std::str::from_utf8(&id).unwrap_or_default();
                let _ = write!(out, " # {{trace_id=\"{id}\"}} {:?}", seconds(nanos));
            }
            out.push('\n');
        }
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// A bucket's exemplar: a trace id and the duration that put it there. A sequence lock over
/// atomics: `seq` is odd while a writer is in the middle, and a reader that sees it change
/// reads again. Writers do not wait for each other: one that finds another writing leaves
/// the slot to it (the exemplar is any recent traced request, not each one).
#[derive(Debug, Default)]
struct Exemplar {
    seq: AtomicU64,
    id: [AtomicU64; 2],
    nanos: AtomicU64,
}

impl Exemplar {
    fn store(&self, id: &[u8; 16], nanos: u64) {
        let s = self.seq.load(Relaxed);
        if s & 1 == 1
            || self
                .seq
                .compare_exchange(s, s + 1, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        // The odd `seq` is seen before any of the fields below (paired with `load`'s fence).
        fence(Release);
        let id = u128::from_be_bytes(*id);
        self.id[0].store((id >> 64) as u64, Relaxed);
        self.id[1].store(id as u64, Relaxed);
        self.nanos.store(nanos, Relaxed);
        self.seq.store(s + 2, Release);
    }

    /// The trace id and duration, `None` before the first traced request (or when writers
    /// kept it changing for every read).
    fn load(&self) -> Option<([u8; 16], u64)> {
        for _ in 0..8 {
            let before = self.seq.load(Acquire);
            let (hi, lo, nanos) = (
                self.id[0].load(Relaxed),
                self.id[1].load(Relaxed),
                self.nanos.load(Relaxed),
            );
            fence(Acquire);
            if before & 1 == 1 || self.seq.load(Relaxed) != before {
                std::hint::spin_loop();
                continue;
            }
            if before == 0 {
                return None;
            }
            let id = (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes();
            return Some((id, nanos));
        }
        None
    }
}

/// A series' labels: route name, and indexes into the method and status class labels.
type SeriesKey = (Arc<str>, u8, u8);

/// Every series recorded so far, by label set, kept across config reloads. Requests find
/// their series here once per route and config version (`RouteHistograms`), then record
/// without it.
#[derive(Debug, Default)]
pub struct Family {
    /// Held to add a series or to list them at scrape time, never across an await.
    #[allow(clippy::disallowed_types)]
    series: std::sync::Mutex<BTreeMap<SeriesKey, Arc<Histogram>>>,
}

impl Family {
    /// The series of this label set, made the first time it is asked for.
    pub fn get_or_create(&self, route: &Arc<str>, method: usize, class: usize) -> Arc<Histogram> {
        let key = (route.clone(), method as u8, class as u8);
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.entry(key).or_default().clone()
    }

    /// The family as OpenMetrics text: `# HELP`, `# TYPE`, then each series (by route,
    /// method, status class). `label` turns a key's indexes into label values.
    pub fn write(
        &self,
        out: &mut String,
        name: &str,
        help: &str,
        label: impl Fn(u8, u8) -> (&'static str, &'static str),
        exemplars: bool,
    ) {
        let series: Vec<(SeriesKey, Arc<Histogram>)> = self
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut labels = String::new();
        for ((route, m, c), h) in &series {
            let (method, class) = label(*m, *c);
            labels.clear();
            labels.push_str("route=\"");
            escape_label(&mut labels, route);
            let _ = write!(labels, "\",method=\"{method}\",status_class=\"{class}\"");
            h.write(out, name, &labels, exemplars);
        }
    }
}

/// A label value as OpenMetrics writes it: `\`, `"` and newlines escaped.
fn escape_label(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_lands_in_the_first_bucket_it_does_not_exceed() {
        let ms = 1_000_000;
        for (nanos, le) in [
            (0, "0.001"),
            (ms, "0.001"),
            (ms + 1, "0.002"),
            (2 * ms, "0.002"),
            (3 * ms, "0.004"),
            (4 * ms, "0.004"),
            (4 * ms + 1, "0.008"),
            (1_000 * ms, "1.024"),
            (16_384 * ms, "16.384"),
            (16_384 * ms + 1, "+Inf"),
            (u64::MAX, "+Inf"),
        ] {
            assert_eq!(LE[bucket_of(nanos)], le, "{nanos} ns");
        }
    }

    #[test]
    fn series_write_cumulative_buckets_sum_count_and_exemplars() {
        let family = Family::default();
        let h = family.get_or_create(&Arc::from("a \"b\"\\"), 0, 1);
        h.observe(3_000_000, Some(&[0xab; 16]));
        h.observe(503_000_000, None);
        h.observe(100_000_000_000, Some(&[0xcd; 16]));
        // The same label set is the same series.
        family
            .get_or_create(&Arc::from("a \"b\"\\"), 0, 1)
            .observe(3_500_000, None);
        let mut out = String::new();
        family.write(&mut out, "d", "help", |_, _| ("GET", "2xx"), true);
        let labels = r#"route="a \"b\"\\",method="GET",status_class="2xx""#;
        assert!(
            out.starts_with("# HELP d help\n# TYPE d histogram\n"),
            "{out}"
        );
        assert!(
            out.contains(&format!("d_sum{{{labels}}} 100.5095\n")),
            "{out}"
        );
        assert!(out.contains(&format!("d_count{{{labels}}} 4\n")), "{out}");
        assert!(
            out.contains(&format!("d_bucket{{le=\"0.002\",{labels}}} 0\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "d_bucket{{le=\"0.004\",{labels}}} 2 # {{trace_id=\"{}\"}} 0.003\n",
                "ab".repeat(16)
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("d_bucket{{le=\"0.512\",{labels}}} 3\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "d_bucket{{le=\"+Inf\",{labels}}} 4 # {{trace_id=\"{}\"}} 100.0\n",
                "cd".repeat(16)
            )),
            "{out}"
        );
        let mut plain = String::new();
        family.write(&mut plain, "d", "help", |_, _| ("GET", "2xx"), false);
        assert!(!plain.contains("trace_id"), "{plain}");
    }

    #[test]
    fn an_exemplar_is_never_torn_between_two_writers() {
        // Two threads write exemplars whose halves and duration agree; a reader must only
        // ever see one write's whole exemplar.
        let e = Arc::new(Exemplar::default());
        assert_eq!(e.load(), None);
        e.store(&[0x11; 16], 0x11);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Each writer alternates between two exemplars of its own.
        let writers: Vec<_> = [[0x11u8, 0x33], [0x22, 0x44]]
            .into_iter()
            .map(|values| {
                let (e, stop) = (e.clone(), stop.clone());
                std::thread::spawn(move || {
                    for b in values.into_iter().cycle() {
                        if stop.load(Relaxed) {
                            break;
                        }
                        e.store(&[b; 16], u64::from(b));
                        // Room for the reader's reads to succeed between writes.
                        for _ in 0..64 {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        // Reads until the exemplar has been seen to change many times, so reads overlapped
        // writes.
        let (mut last, mut changes) = (0x11, 0u32);
        for _ in 0..100_000_000 {
            if let Some((id, nanos)) = e.load() {
                assert!(id.iter().all(|x| *x == id[0]), "{id:?}");
                assert_eq!(u64::from(id[0]), nanos);
                if id[0] != last {
                    (last, changes) = (id[0], changes + 1);
                    if changes == 5_000 {
                        break;
                    }
                }
            }
        }
        stop.store(true, Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(changes, 5_000);
        assert!(e.load().is_some());
    }
}
