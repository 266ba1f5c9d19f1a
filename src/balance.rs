//! Part of step 5: which endpoint of an upstream gets a request. Round robin or least
//! outstanding requests (power of two choices), over the endpoints that are not ejected by
//! passive health (consecutive failures) nor marked down by active health checks; when
//! every endpoint is out, all of them are used (better a chance than a certain 502).
//!
//! The endpoint set is swapped whole when DNS answers change; an endpoint that stays keeps
//! its health and load.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::config::{Balance, OutlierSettings};
use crate::span::Target;
use crate::upstream::Conns;

/// Milliseconds since the process's first use of this clock (monotonic).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One endpoint: where to connect, what spans say about it, and its health and load.
#[derive(Debug)]
pub struct Endpoint {
    /// `ip:port` (resolved) or `host:port`: the connection's address.
    pub authority: Authority,
    /// Its connections (`upstream::conns`).
    pub conns: Conns,
    pub target: Arc<Target>,
    outstanding: AtomicUsize,
    /// Failures in a row.
    failures: AtomicU32,
    /// Ejected until this `now_ms`; 0: not ejected.
    ejected_until: AtomicU64,
    /// Times ejected so far (the next ejection lasts longer); reset by a success.
    ejections: AtomicU32,
    /// Marked down by the active health check.
    down: AtomicBool,
    /// Probe results in a row, for the thresholds (positive: passes, negative: failures).
    probes: std::sync::atomic::AtomicI32,
}

impl Endpoint {
    pub fn new(authority: Authority, conns: Conns, target: Arc<Target>) -> Self {
        Endpoint {
            authority,
            conns,
            target,
            outstanding: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            down: AtomicBool::new(false),
            probes: Default::default(),
        }
    }

    /// The authority of the request URIs sent to it: its address where HTTP/2 may be
    /// spoken (`:authority`), none for HTTP/1.1 only (origin-form).
    pub fn uri_authority(&self) -> Option<&Authority> {
        self.conns.absolute_uri().then_some(&self.authority)
    }

    /// Neither down nor ejected.
    fn available(&self, now: impl FnOnce() -> u64) -> bool {
        !self.down.load(Relaxed) && self.ejection(now) != Some(true)
    }

    /// `None`: never ejected, or the ejection was cleared; else whether it still holds.
    /// `now` (`now_ms`) is asked for only in the second case: most picks read no clock.
    fn ejection(&self, now: impl FnOnce() -> u64) -> Option<bool> {
        match self.ejected_until.load(Relaxed) {
            0 => None,
            until => Some(until > now()),
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Relaxed)
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejection(now_ms) == Some(true)
    }

    /// Records an active probe; returns `Some(up)` when the endpoint changed state.
    pub fn probe(&self, passed: bool, healthy_after: u32, unhealthy_after: u32) -> Option<bool> {
        let next = |r: i32| match (passed, r) {
            (true, r) if r > 0 => r.saturating_add(1),
            (true, _) => 1,
            (false, r) if r < 0 => r.saturating_sub(1),
            (false, _) => -1,
        };
        let prev = self.probes.load(Relaxed);
        let run = next(prev);
        self.probes.store(run, Relaxed);
        let down = self.down.load(Relaxed);
        if passed && down && run >= healthy_after as i32 {
            self.down.store(false, Relaxed);
            return Some(true);
        }
        if !passed && !down && -run >= unhealthy_after as i32 {
            self.down.store(true, Relaxed);
            return Some(false);
        }
        None
    }
}

/// An endpoint chosen for one attempt; counted as outstanding until dropped.
pub struct Picked(Arc<Endpoint>);

impl Picked {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// The endpoints of one upstream and how to choose among them.
pub struct Pool {
    name: Arc<str>,
    set: ArcSwap<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
    balance: Balance,
    outlier: OutlierSettings,
    /// Ejections so far (all endpoints).
    pub ejections: AtomicU64,
}

impl Pool {
    pub fn new(
        name: Arc<str>,
        endpoints: Vec<Arc<Endpoint>>,
        balance: Balance,
        outlier: OutlierSettings,
    ) -> Self {
        Pool {
            name,
            set: ArcSwap::from_pointee(endpoints),
            next: AtomicUsize::new(0),
            balance,
            outlier,
            ejections: AtomicU64::new(0),
        }
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.set.load_full()
    }

    /// Replaces the endpoint set (after a DNS answer changed it).
    pub fn replace(&self, endpoints: Vec<Arc<Endpoint>>) {
        self.set.store(Arc::new(endpoints));
    }

    /// Chooses an endpoint, avoiding `avoid` (the one that just failed) when there is a
    /// choice.
    pub fn pick(&self, avoid: Option<&Arc<Endpoint>>) -> Option<Picked> {
        let set = self.set.load();
        let n = set.len();
        if n == 0 {
            return None;
        }
        let now = std::cell::OnceCell::new();
        let usable = |e: &Arc<Endpoint>| {
            e.available(|| *now.get_or_init(now_ms))
                && avoid.is_none_or(|a| !Arc::ptr_eq(a, e) || n == 1)
        };
        let chosen = match self.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Relaxed);
                (0..n)
                    .map(|k| &set[(start + k) % n])
                    .find(|e| usable(e))
                    .or_else(|| {
                        // Everything out: spread over all but the one to avoid.
                        (0..n)
                            .map(|k| &set[(start + k) % n])
                            .find(|e| avoid.is_none_or(|a| !Arc::ptr_eq(a, e)))
                    })
                    .unwrap_or(&set[start % n])
            }
            Balance::LeastRequest => {
                // Two different endpoints at random among the usable ones (all of them when
                // none is), counted and then walked to, with no list made per request.
                let usable_count = set.iter().filter(|e| usable(e)).count();
                let m = if usable_count == 0 { n } else { usable_count };
                // Health can change between the count and the walk (another worker ejects
                // an endpoint): the walk then falls back to the i-th endpoint of all.
                let nth = |i: usize| {
                    if usable_count == 0 {
                        &set[i]
                    } else {
                        set.iter()
                            .filter(|e| usable(e))
                            .nth(i)
                            .unwrap_or(&set[i % n])
                    }
                };
                if m == 1 {
                    nth(0)
                } else {
                    let a = rand::random_range(0..m);
                    let mut b = rand::random_range(0..m - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (ea, eb) = (nth(a), nth(b));
                    if eb.outstanding() < ea.outstanding() {
                        eb
                    } else {
                        ea
                    }
                }
            }
        };
        chosen.outstanding.fetch_add(1, Relaxed);
        Some(Picked(chosen.clone()))
    }

    /// Passive health: a success resets the count; enough failures in a row eject the
    /// endpoint, unless that would eject more than `max_ejected_percent` of them.
    pub fn report(&self, e: &Endpoint, ok: bool) {
        if ok {
            if e.failures.load(Relaxed) != 0 {
                e.failures.store(0, Relaxed);
            }
            if e.ejection(now_ms) == Some(false) {
                e.ejected_until.store(0, Relaxed);
                e.ejections.store(0, Relaxed);
            }
            return;
        }
        let threshold = self.outlier.consecutive_failures;
        let failures = e.failures.fetch_add(1, Relaxed) + 1;
        if threshold == 0 || failures < threshold || e.is_ejected() {
            return;
        }
        let set = self.set.load();
        let ejected = set.iter().filter(|x| x.is_ejected()).count();
        if (ejected + 1) * 100 > usize::from(self.outlier.max_ejected_percent) * set.len() {
            return;
        }
        let times = e.ejections.fetch_add(1, Relaxed) + 1;
        let time = self.outlier.ejection_time * times.min(10);
        e.ejected_until
            .store(now_ms() + time.as_millis() as u64, Relaxed);
        e.failures.store(0, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        crate::log::warn(&format!(
            "upstream `{}`: endpoint {} ejected for {time:?} after {failures} failures in a row",
            self.name, e.authority
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn endpoint(i: u16) -> Arc<Endpoint> {
        let target = Target::new(
            Arc::from("u"),
            "127.0.0.1",
            None,
            i,
            &format!("http://127.0.0.1:{i}"),
            false,
        );
        let authority: Authority = format!("127.0.0.1:{i}").parse().unwrap();
        let conns = crate::upstream::Conns::new(
            &authority,
            false,
            crate::config::UpstreamProtocol::Http1,
            1,
        );
        Arc::new(Endpoint::new(authority, conns, Arc::new(target)))
    }

    fn pool(n: u16, balance: Balance) -> Pool {
        Pool::new(
            Arc::from("u"),
            (1..=n).map(endpoint).collect(),
            balance,
            OutlierSettings {
                consecutive_failures: 3,
                ejection_time: Duration::from_secs(30),
                max_ejected_percent: 50,
            },
        )
    }

    #[test]
    fn round_robin_visits_each_endpoint_in_turn() {
        let p = pool(3, Balance::RoundRobin);
        let ports: Vec<u16> = (0..6)
            .map(|_| p.pick(None).unwrap().endpoint().target.port)
            .collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let p = pool(2, Balance::LeastRequest);
        let busy: Vec<Picked> = (0..50)
            .map(|_| p.pick(None).unwrap())
            .filter(|k| k.endpoint().target.port == 1)
            .collect();
        assert!(!busy.is_empty());
        // With endpoint 1 loaded, every further pick goes to endpoint 2.
        let held: Vec<Picked> = (0..20).map(|_| p.pick(None).unwrap()).collect();
        let to_one = held
            .iter()
            .filter(|k| k.endpoint().target.port == 1)
            .count();
        assert!(to_one <= held.len() / 2, "{to_one} of {}", held.len());
        drop(held);
        drop(busy);
        assert!(p.endpoints().iter().all(|e| e.outstanding() == 0));
    }

    #[test]
    fn least_request_picks_only_usable_endpoints() {
        let p = pool(5, Balance::LeastRequest);
        let set = p.endpoints();
        set[0].down.store(true, Relaxed);
        for _ in 0..3 {
            p.report(&set[3], false);
        }
        assert!(set[3].is_ejected());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(p.pick(None).unwrap().endpoint().target.port);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [2, 3, 5]);
        // The one to avoid (a retry's first endpoint) is not picked while others are usable.
        let avoid = set[1].clone();
        for _ in 0..50 {
            let port = p.pick(Some(&avoid)).unwrap().endpoint().target.port;
            assert!(port == 3 || port == 5, "{port}");
        }
        // One usable endpoint left: always it.
        set[2].down.store(true, Relaxed);
        set[4].down.store(true, Relaxed);
        for _ in 0..20 {
            assert_eq!(p.pick(None).unwrap().endpoint().target.port, 2);
        }
        // None usable: any of them, rather than none.
        set[1].down.store(true, Relaxed);
        let mut all = std::collections::BTreeSet::new();
        for _ in 0..200 {
            all.insert(p.pick(None).unwrap().endpoint().target.port);
        }
        assert_eq!(all.len(), 5, "{all:?}");
    }

    #[test]
    fn consecutive_failures_eject_within_the_percent_cap() {
        let p = pool(4, Balance::RoundRobin);
        let set = p.endpoints();
        for _ in 0..3 {
            p.report(&set[0], false);
        }
        assert!(set[0].is_ejected());
        let ports: Vec<u16> = (0..6)
            .map(|_| p.pick(None).unwrap().endpoint().target.port)
            .collect();
        assert!(!ports.contains(&1), "{ports:?}");
        // A success between failures resets the count.
        p.report(&set[1], false);
        p.report(&set[1], false);
        p.report(&set[1], true);
        p.report(&set[1], false);
        assert!(!set[1].is_ejected());
        // 50% cap: a second ejection is allowed, a third is not.
        for _ in 0..3 {
            p.report(&set[1], false);
            p.report(&set[2], false);
        }
        assert!(set[1].is_ejected());
        assert!(!set[2].is_ejected());
        assert_eq!(p.ejections.load(Relaxed), 2);
    }

    #[test]
    fn all_out_means_all_in() {
        let p = pool(1, Balance::RoundRobin);
        p.endpoints()[0].down.store(true, Relaxed);
        assert_eq!(p.pick(None).unwrap().endpoint().target.port, 1);
    }

    #[test]
    fn probes_flip_state_at_the_thresholds() {
        let e = endpoint(1);
        assert_eq!(e.probe(false, 2, 3), None);
        assert_eq!(e.probe(false, 2, 3), None);
        assert_eq!(e.probe(false, 2, 3), Some(false));
        assert!(e.is_down());
        assert_eq!(e.probe(true, 2, 3), None);
        assert_eq!(e.probe(false, 2, 3), None);
        assert_eq!(e.probe(true, 2, 3), None);
        assert_eq!(e.probe(true, 2, 3), Some(true));
        assert!(!e.is_down());
    }
}
