//! The built-in trace viewer behind `/traces` on the admin port: a bounded in-memory store of
//! recent requests (plus the slowest and the failed, kept apart), a JSON API and an HTML page
//! that works offline.
//!
//! The request path puts traced exchanges in a ring of recent ones, every one up to
//! [`RECENT_PER_SEC`] a second and a paced sample above that (one atomic increment and a
//! swap under the slot's own lock, which only a reader of the page ever contends for: no
//! task woken per request); only the ones
//! that may belong among the failed or the slowest go to the store's task, with
//! `try_send` (a full queue drops it: the viewer is best-effort, never a cost to
//! requests). The task owns those two collections and answers the admin port's questions
//! over a channel; exchanges become spans only when someone opens them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use crate::access_log::{hex, rfc3339};
use crate::sample::RateLimiter;
use crate::span::{Exchange, Key, SpanHead, SpanSink, Val, nanos_of};

/// The HTML page (vanilla JS, no external resources).
pub const PAGE: &str = include_str!("viewer.html");

/// How many of the slowest and of the failed requests are kept apart from the recent ones.
const SLOWEST: usize = 50;
const FAILED: usize = 100;

/// A stored request: the exchange itself, shared with the export queue; summarised and
/// turned into spans only when someone lists or opens it (most never are).
type Stored = Arc<Exchange>;

#[derive(Clone, Debug)]
struct Summary {
    trace_id: String,
    route: String,
    method: String,
    path: String,
    status: u16,
    start: SystemTime,
    duration: Duration,
    sampled: bool,
    error_type: Option<&'static str>,
}

impl Summary {
    fn of(e: &Exchange) -> Summary {
        Summary {
            trace_id: String::from_utf8_lossy(&crate::context::w3c::trace_id_hex(&e.ids.trace_id))
                .into_owned(),
            route: e.route.as_deref().unwrap_or("").to_string(),
            method: e.method.to_string(),
            path: match e.text.query() {
                Some(q) => format!("{}?{q}", e.text.path()),
                None => e.text.path().to_string(),
            },
            status: e.status,
            start: e.start,
            duration: e.duration,
            sampled: e.ids.sampled(),
            error_type: e.error_type,
        }
    }

    fn json(&self) -> Json {
        json!({
            "trace_id": self.trace_id,
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "start": rfc3339(self.start),
            "duration_ms": self.duration.as_secs_f64() * 1000.0,
            "sampled": self.sampled,
            "error_type": self.error_type,
        })
    }
}

/// Filters of `/traces.json`.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub route: Option<String>,
    /// `2xx`, `4xx`, `5xx`...
    pub status_class: Option<String>,
    pub min_ms: Option<f64>,
    pub trace_id: Option<String>,
    pub limit: Option<usize>,
}

impl Filter {
    /// Parses a query string (`route=/api/*&status=5xx&min_ms=100&trace_id=...&limit=50`).
    pub fn parse(query: Option<&str>) -> Filter {
        let mut f = Filter::default();
        for pair in query.unwrap_or("").split('&') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = percent_decode(v);
            if v.is_empty() {
                continue;
            }
            match k {
                "route" => f.route = Some(v),
                "status" => f.status_class = Some(v),
                "min_ms" => f.min_ms = v.parse().ok(),
                "trace_id" => f.trace_id = Some(v.to_ascii_lowercase()),
                "limit" => f.limit = v.parse().ok(),
                _ => {}
            }
        }
        f
    }

    fn keeps(&self, s: &Summary) -> bool {
        self.route.as_ref().is_none_or(|r| *r == s.route)
            && self
                .status_class
                .as_ref()
                .is_none_or(|c| c.as_bytes().first() == Some(&(b'0' + (s.status / 100) as u8)))
            && self
                .min_ms
                .is_none_or(|m| s.duration.as_secs_f64() * 1000.0 >= m)
            && self
                .trace_id
                .as_ref()
                .is_none_or(|t| s.trace_id.starts_with(t.as_str()))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let Some(h) = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(h);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn failed(status: u16, error_type: Option<&str>) -> bool {
    status >= 500 || error_type.is_some_and(|e| e != "route_not_found")
}

enum Msg {
    /// Failed, or slower than the slowest kept so far.
    Keep(Stored),
    List(Filter, oneshot::Sender<Json>),
    Trace(String, oneshot::Sender<Option<Json>>),
}

/// The request path's and the admin port's handle.
#[derive(Clone)]
pub struct Viewer {
    tx: mpsc::Sender<Msg>,
    recent: Arc<Recent>,
    /// Nanoseconds an exchange must take to enter the slowest list: 0 while it has room,
    /// then the shortest duration in it (published by the task).
    slow_bar: Arc<AtomicU64>,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("capacity", &self.recent.slots.len())
            .finish_non_exhaustive()
    }
}

/// A slot's lock is held for one swap or one clone, never across an await.
#[allow(clippy::disallowed_types)]
type Slot = std::sync::Mutex<Option<Stored>>;

/// The recent list takes every request while they come at most this many a second on
/// average, and a sample of them when more come: at 60,000 a second the last 1,000 requests
/// are the last 17 ms, all alike, while a list paced to 1,000 a second spans the last
/// second at least. Pacing also keeps the ring out of the request path's caches: each
/// exchange it held was freed ~1,000 requests later, cold, by the request that evicted it
/// (perf and callgrind's cache simulation, `benches/README.md`).
const RECENT_PER_SEC: u64 = 1_000;
/// Requests kept whole in a burst (a script's or a test's run of requests), above the pace.
const RECENT_BURST: u32 = 100;

/// The last `capacity` exchanges: slot `n % capacity` holds the `n`-th recorded.
struct Recent {
    /// A lock per slot rather than an `ArcSwap`: its store waited on the readers' debt
    /// lists (~200 instructions a request); an uncontended lock is two atomic operations.
    slots: Box<[Slot]>,
    next: AtomicUsize,
    /// Which exchanges enter: [`RECENT_PER_SEC`], bursts of [`RECENT_BURST`].
    pace: RateLimiter,
}

impl Recent {
    fn new(capacity: usize) -> Recent {
        Recent {
            slots: (0..capacity.max(1)).map(|_| Slot::new(None)).collect(),
            next: AtomicUsize::new(0),
            pace: RateLimiter::new(RECENT_PER_SEC as f64, RECENT_BURST),
        }
    }

    /// Keeps `e` when the pace allows (by when it started: no clock read here).
    fn offer(&self, e: Stored) {
        if self.pace.allow_since(e.started) {
            self.push(e);
        }
    }

    fn push(&self, e: Stored) {
        let n = self.next.fetch_add(1, Relaxed);
        let evicted = slot(&self.slots[n % self.slots.len()]).replace(e);
        // Freed after the lock is released.
        drop(evicted);
    }

    /// Oldest first. A slot overwritten while this reads it shows its newer exchange.
    fn snapshot(&self) -> Vec<Stored> {
        let (n, cap) = (self.next.load(Relaxed), self.slots.len());
        (n.saturating_sub(cap)..n)
            .filter_map(|i| slot(&self.slots[i % cap]).clone())
            .collect()
    }
}

fn slot(m: &Slot) -> std::sync::MutexGuard<'_, Option<Stored>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Viewer {
    /// Starts the store's task, keeping the last `capacity` requests.
    pub fn start(capacity: usize) -> Viewer {
        let (tx, rx) = mpsc::channel(1024);
        let recent = Arc::new(Recent::new(capacity));
        let slow_bar = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(rx, recent.clone(), slow_bar.clone()));
        Viewer {
            tx,
            recent,
            slow_bar,
        }
    }

    /// Keeps a finished exchange; never waits.
    pub fn record(&self, e: Arc<Exchange>) {
        if failed(e.status, e.error_type) || nanos_of(e.duration) > self.slow_bar.load(Relaxed) {
            let _ = self.tx.try_send(Msg::Keep(e.clone()));
        }
        self.recent.offer(e);
    }

    pub async fn list(&self, filter: Filter) -> Json {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::List(filter, tx)).await.is_err() {
            return json!({});
        }
        rx.await.unwrap_or_else(|_| json!({}))
    }

    pub async fn trace(&self, trace_id: String) -> Option<Json> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Trace(trace_id, tx)).await.ok()?;
        rx.await.ok().flatten()
    }
}

struct Store {
    recent: Arc<Recent>,
    slowest: Vec<Stored>,
    failed: VecDeque<Stored>,
    slow_bar: Arc<AtomicU64>,
}

async fn run(mut rx: mpsc::Receiver<Msg>, recent: Arc<Recent>, slow_bar: Arc<AtomicU64>) {
    let mut store = Store {
        recent,
        slowest: Vec::new(),
        failed: VecDeque::new(),
        slow_bar,
    };
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Keep(e) => store.keep(e),
            Msg::List(f, reply) => {
                let _ = reply.send(store.list(&f));
            }
            Msg::Trace(id, reply) => {
                let _ = reply.send(store.trace(&id));
            }
        }
    }
}

impl Store {
    fn keep(&mut self, e: Stored) {
        if failed(e.status, e.error_type) {
            if self.failed.len() == FAILED {
                self.failed.pop_front();
            }
            self.failed.push_back(e.clone());
        }
        let slow_enough = self.slowest.len() < SLOWEST
            || self.slowest.last().is_some_and(|s| s.duration < e.duration);
        if slow_enough {
            let at = self.slowest.partition_point(|s| s.duration >= e.duration);
            self.slowest.insert(at, e);
            self.slowest.truncate(SLOWEST);
            if self.slowest.len() == SLOWEST {
                let bar = self.slowest.last().map_or(0, |s| nanos_of(s.duration));
                self.slow_bar.store(bar, Relaxed);
            }
        }
    }

    fn list(&self, f: &Filter) -> Json {
        let limit = f.limit.unwrap_or(200);
        let pick = |it: &mut dyn Iterator<Item = &Stored>| -> Vec<Json> {
            it.map(|e| Summary::of(e))
                .filter(|s| f.keeps(s))
                .take(limit)
                .map(|s| s.json())
                .collect()
        };
        let recent = self.recent.snapshot();
        let mut routes: Vec<&str> = recent
            .iter()
            .map(|e| e.route.as_deref().unwrap_or(""))
            .collect();
        routes.sort_unstable();
        routes.dedup();
        json!({
            "recent": pick(&mut recent.iter().rev()),
            "slowest": pick(&mut self.slowest.iter()),
            "failed": pick(&mut self.failed.iter().rev()),
            "routes": routes,
            "capacity": self.recent.slots.len(),
        })
    }

    fn trace(&self, id: &str) -> Option<Json> {
        let id = id.to_ascii_lowercase();
        let recent = self.recent.snapshot();
        let found = recent
            .iter()
            .chain(self.failed.iter())
            .chain(self.slowest.iter())
            .find(|e| crate::context::w3c::trace_id_hex(&e.ids.trace_id) == id.as_bytes())?;
        let summary = Summary::of(found);
        let mut spans = JsonSpans::default();
        found.write_spans(&mut spans);
        Some(json!({
            "trace_id": summary.trace_id,
            "summary": summary.json(),
            "spans": spans.done,
        }))
    }
}

fn value_json(v: &Val<'_>) -> Json {
    match v {
        Val::Str(s) => json!(s),
        Val::Ascii(b) => json!(String::from_utf8_lossy(b)),
        Val::Parts(p) => json!(p.concat()),
        Val::Int(i) => json!(i),
        Val::Header(all, name) => json!(Val::header_values(all, name).collect::<Vec<_>>()),
    }
}

/// The spans of one exchange as the viewer's JSON.
#[derive(Default)]
struct JsonSpans {
    done: Vec<Json>,
    span: serde_json::Map<String, Json>,
    attributes: serde_json::Map<String, Json>,
    events: Vec<Json>,
}

impl SpanSink for JsonSpans {
    fn begin(&mut self, h: &SpanHead<'_>) {
        let name = match h.name {
            (first, Some(second)) => format!("{first} {second}"),
            (first, None) => first.to_string(),
        };
        let Json::Object(span) = json!({
            "span_id": hex(&h.span_id),
            "parent_span_id": h.parent.map(|(p, _)| hex(&p)),
            "kind": h.kind.as_str(),
            "name": name,
            "start_unix_nano": h.start,
            "end_unix_nano": h.end,
        }) else {
            return;
        };
        self.span = span;
    }

    fn attr(&mut self, key: Key<'_>, value: Val<'_>) {
        self.attributes
            .insert(format!("{}{}", key.0, key.1), value_json(&value));
    }

    fn event(&mut self, name: &str, at: u64, attrs: &[(&'static str, Val<'_>)]) {
        self.events.push(json!({
            "name": name,
            "time_unix_nano": at,
            "attributes": attrs.iter().map(|(k, v)| (k.to_string(), value_json(v))).collect::<serde_json::Map<_, _>>(),
        }));
    }

    fn end(&mut self, error: Option<&str>) {
        let mut span = std::mem::take(&mut self.span);
        span.insert(
            "status".into(),
            json!(if error.is_some() { "error" } else { "unset" }),
        );
        span.insert("status_message".into(), json!(error.unwrap_or("")));
        span.insert(
            "attributes".into(),
            Json::Object(std::mem::take(&mut self.attributes)),
        );
        span.insert(
            "events".into(),
            Json::Array(std::mem::take(&mut self.events)),
        );
        self.done.push(Json::Object(span));
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn the_recent_list_keeps_a_burst_whole_then_paces_to_its_rate() {
        let pace = Recent::new(3).pace;
        let (ms, spacing) = (1_000_000, 1_000_000_000 / RECENT_PER_SEC);
        let burst = u64::from(RECENT_BURST);
        // A burst at one instant: the first RECENT_BURST enter, the rest wait their turn.
        let entered = (0..150).filter(|_| pace.allow_at(5 * ms)).count() as u64;
        assert_eq!(entered, burst);
        assert!(!pace.allow_at(5 * ms + spacing - 1));
        assert!(pace.allow_at(5 * ms + spacing));
        // 100,000 requests a second for two seconds: RECENT_PER_SEC of them a second enter,
        // plus what is left of the burst allowance.
        let start = 10 * ms;
        let kept = (0..200_000u64)
            .filter(|i| pace.allow_at(start + i * 10_000))
            .count() as u64;
        assert!(
            (2 * RECENT_PER_SEC..=2 * RECENT_PER_SEC + burst).contains(&kept),
            "{kept}"
        );
        // After a quiet spell, a burst is kept whole again.
        let later = start + 10_000 * ms;
        assert_eq!(
            (0..burst).filter(|_| pace.allow_at(later)).count() as u64,
            burst
        );
        // A request that started before the viewer did counts as at its start: it does
        // not enter while the pace is ahead.
        let now = std::time::Instant::now();
        let early = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        assert!(!pace.allow_since(early));
    }

    #[test]
    fn filter_parses_query() {
        let f = Filter::parse(Some(
            "route=%2Fapi%2F*&status=5xx&min_ms=12.5&trace_id=ABC&limit=3&x=y",
        ));
        assert_eq!(f.route.as_deref(), Some("/api/*"));
        assert_eq!(f.status_class.as_deref(), Some("5xx"));
        assert_eq!(f.min_ms, Some(12.5));
        assert_eq!(f.trace_id.as_deref(), Some("abc"));
        assert_eq!(f.limit, Some(3));
    }

    #[test]
    fn filter_keeps_by_class_route_duration_and_trace_prefix() {
        let s = Summary {
            trace_id: "abcdef".into(),
            route: "/api/*".into(),
            method: "GET".into(),
            path: "/api/1".into(),
            status: 503,
            start: UNIX_EPOCH,
            duration: Duration::from_millis(20),
            sampled: true,
            error_type: None,
        };
        assert!(Filter::parse(Some("status=5xx&route=/api/*&min_ms=10&trace_id=abc")).keeps(&s));
        assert!(!Filter::parse(Some("status=2xx")).keeps(&s));
        assert!(!Filter::parse(Some("min_ms=21")).keeps(&s));
        assert!(!Filter::parse(Some("trace_id=bcd")).keeps(&s));
        assert!(failed(s.status, s.error_type));
    }
}
