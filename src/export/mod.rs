//! Step 7: finished exchanges leave the request path through a bounded queue.
//!
//! `submit` never waits: a full queue (by count or by bytes) drops the exchange and counts
//! it. A batcher on a thread of its own encodes exchanges straight into OTLP protobuf
//! ([`otlp`]) and sends batches over gRPC or HTTP/protobuf ([`client`]) by size or by age,
//! with up to `export.max_concurrent_exports` calls waiting on the collector at once.
//! It is woken every [`ENCODE_EVERY`] spans, or with more connections open every as many
//! spans as a worker has connections ([`Pace`]), to encode what came in (short runs of
//! work, soon after the exchanges were written, instead of one long run per batch), sends
//! when a batch is full, and sends what is left on its batch-delay tick; never woken once
//! per request: that cost a context switch each. Export attempts are bounded by the exporter timeout (the client retries
//! retryable errors with exponential backoff and jitter inside it, no wait longer than half
//! the batch delay, so a collector that comes back is used within one); a failed batch is
//! counted as dropped. On shutdown the queue is drained and flushed within the grace
//! period. Encoded exchanges go back to the request path to be reused
//! ([`spare`](crate::span::spare)).

mod client;
mod gather;
mod grpc;
pub mod otlp;

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::{ExportSettings, TracingSettings};
use crate::limits::DownstreamStats;
use crate::span::Exchange;
use client::{Client, Payload};
use otlp::{Preamble, Spans};

/// Counters, in spans unless named otherwise. Read by `/metrics` and by tests.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans finished and sampled (offered to the queue).
    pub produced: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_queue_bytes: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub dropped_shutdown: AtomicU64,
    /// Spans the collector said it rejected (OTLP partial success).
    pub dropped_rejected: AtomicU64,
    /// Export requests that failed (after the exporter's own retries).
    pub failed_batches: AtomicU64,
    pub batches: AtomicU64,
    /// Exchanges and bytes waiting in the queue now.
    pub queue_len: AtomicUsize,
    pub queue_bytes: AtomicUsize,
    /// Sum of batch export durations, microseconds.
    pub export_micros: AtomicU64,
}

impl ExportStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Relaxed)
            + self.dropped_queue_bytes.load(Relaxed)
            + self.dropped_export_failed.load(Relaxed)
            + self.dropped_shutdown.load(Relaxed)
            + self.dropped_rejected.load(Relaxed)
    }
}

struct Queued {
    exchange: Arc<Exchange>,
    size: usize,
}

enum Control {
    /// Drain the queue, export everything, then answer.
    Flush(oneshot::Sender<()>),
}

/// The request path's handle: cheap to clone, never blocks.
///
/// The queue is bounded by its own counts (`Wake::queued`, `ExportStats::queue_bytes`)
/// rather than by a bounded channel's: the bounded channel gave back each exchange's slot
/// under a lock when the batcher took it (`Semaphore::add_permits_locked`, ~70
/// instructions a request), and the counts are kept anyway.
#[derive(Clone)]
pub struct ExportHandle {
    tx: Option<mpsc::UnboundedSender<Queued>>,
    /// The most exchanges queued (`export.queue_limit`).
    max_len: usize,
    max_bytes: usize,
    wake: Arc<Wake>,
    pub stats: Arc<ExportStats>,
}

/// Spans between two wake-ups of the batcher, below a full batch: the export work comes in
/// short runs (~50 µs) instead of one per batch (~0.5 ms for 512 spans on a shared core).
/// A/B against waking once per batch (`benches/ab.sh`, one worker, c=32, the usable pairs
/// of 2026-12-02): less CPU per request in five of six, a lower p99 in all six; the VM's
/// noise keeps this from being more than suggestive (benches/README.md).
/// The least: with more connections open a wake-up comes less often ([`Pace`]).
pub const ENCODE_EVERY: usize = 64;

/// Paces the batcher's wake-ups by load: a wake-up every [`ENCODE_EVERY`] spans, or every
/// as many spans as a worker has client connections open when that is more, up to a batch.
///
/// Each wake-up is two context switches and a preemption of the worker, whatever it
/// encodes; a run of encoding delays the requests in flight behind it. Waking every 256
/// spans instead of 64 (`benches/ab.sh`, one worker, benches/README.md 2026-12-07): at 32
/// connections (~1 ms p99) p99 1.094 [0.963, 1.244] and the same rate; at 256 (~5 ms p99)
/// req/s 1.027 [1.007, 1.047] over HTTP/1.1 and 1.027 [1.012, 1.042] over HTTP/2, p99 0.97
/// and 0.94. A run as long as a worker has connections keeps its share of their wait
/// about the same at any load.
#[derive(Clone, Default)]
pub struct Pace {
    /// Client connections open, all listeners.
    downstream: Arc<DownstreamStats>,
    workers: usize,
}

impl Pace {
    pub fn new(downstream: Arc<DownstreamStats>, workers: usize) -> Pace {
        Pace {
            downstream,
            workers,
        }
    }

    /// Spans between two wake-ups now: at least `least`, at most `batch` (a default `Pace`
    /// counts no connections and one worker).
    fn every(&self, least: isize, batch: isize) -> isize {
        let open = self.downstream.open.load(Relaxed) / self.workers.max(1);
        isize::try_from(open)
            .unwrap_or(isize::MAX)
            .clamp(least, batch.max(least))
    }
}

/// When to wake the batcher: each time the spans queued and not yet sent pass a multiple of
/// `every` ([`Pace`]), up to as many batches as may be in flight at once
/// (`export.max_concurrent_exports`: past that it has every call it may make waiting on the
/// collector, and starts the next when one is answered). Each full batch always wakes it,
/// whatever `every` was when the counts before were made.
///
/// Each submitter counts its spans after its exchange is in the queue, so the wake-up that
/// a count sends always finds that exchange there. They used to be counted before it was
/// queued: with two workers, one could count its exchange and lose its core before queueing
/// it, and the other's count reaching a full batch woke the batcher, which found a batch
/// less that exchange, sent nothing and slept; from then on every submitter saw a full
/// batch counted and woke nobody until the batch-delay tick. At 72k req/s with a 200 ms
/// delay that dropped 13,948 spans (queue full) in one round of `run.sh ... 2 256`, and
/// 665,096 with a 5 s delay (benches/README.md, 2026-12-06). Counting late, the batcher may
/// send and subtract spans a submitter has not added yet: the count is signed and dips
/// below zero for that moment.
#[derive(Default)]
struct Wake {
    notify: tokio::sync::Notify,
    /// Spans queued to this exporter and not yet sent or dropped (as counted so far).
    unsent: AtomicIsize,
    /// Exchanges in this exporter's queue (the batcher has not taken them yet).
    queued: AtomicUsize,
    batch_size: isize,
    /// Spans in as many full batches as may be in flight at once.
    room: isize,
    /// [`ENCODE_EVERY`], or the batch size when smaller: the least `every` ([`Pace`]).
    every: isize,
    pace: Pace,
}

impl ExportHandle {
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Offers a finished, sampled exchange. Drops and counts when the queue is full.
    pub fn submit(&self, exchange: Arc<Exchange>) {
        if let Some(place) = self.reserve(exchange) {
            place.send();
        }
    }

    /// The first half of [`submit`](Self::submit): counts the exchange as produced and
    /// takes its place in the queue, or drops and counts it when the queue is full (by
    /// count or by bytes). The place is the exchange's until [`Reserved::send`] queues it;
    /// dropping the place gives it back uncounted. Two halves so that tests can stop a
    /// submitter between them, where a worker can lose its core.
    pub fn reserve(&self, exchange: Arc<Exchange>) -> Option<Reserved<'_>> {
        let tx = self.tx.as_ref()?;
        let spans = exchange.span_count() as u64;
        let stats = &self.stats;
        stats.produced.fetch_add(spans, Relaxed);
        let size = exchange.approx_size();
        if stats.queue_bytes.fetch_add(size, Relaxed) + size > self.max_bytes {
            stats.queue_bytes.fetch_sub(size, Relaxed);
            stats.dropped_queue_bytes.fetch_add(spans, Relaxed);
            return None;
        }
        if self.wake.queued.fetch_add(1, Relaxed) >= self.max_len {
            self.wake.queued.fetch_sub(1, Relaxed);
            stats.queue_bytes.fetch_sub(size, Relaxed);
            stats.dropped_queue_full.fetch_add(spans, Relaxed);
            return None;
        }
        // Counted before the send: once sent, the batcher may take the exchange (and
        // subtract it) before this thread runs again.
        stats.queue_len.fetch_add(1, Relaxed);
        Some(Reserved {
            handle: self,
            tx,
            queued: Some(Queued { exchange, size }),
            spans,
        })
    }
}

/// An exchange's place in the export queue ([`ExportHandle::reserve`]).
pub struct Reserved<'a> {
    handle: &'a ExportHandle,
    tx: &'a mpsc::UnboundedSender<Queued>,
    /// `None` once sent.
    queued: Option<Queued>,
    spans: u64,
}

impl Reserved<'_> {
    /// Queues the exchange, then wakes the batcher if its spans crossed a multiple of
    /// [`ENCODE_EVERY`] (see [`Wake`]).
    pub fn send(mut self) {
        let Some(queued) = self.queued.take() else {
            return;
        };
        let (wake, stats, spans) = (&self.handle.wake, &self.handle.stats, self.spans);
        let size = queued.size;
        match self.tx.send(queued) {
            Ok(()) => {
                let n = spans as isize;
                let before = wake.unsent.fetch_add(n, Relaxed);
                let batch = wake.batch_size.max(1);
                let (after, every) = (before + n, wake.pace.every(wake.every.max(1), batch));
                if before < wake.room
                    && (after.div_euclid(batch) > before.div_euclid(batch)
                        || after.div_euclid(every) > before.div_euclid(every))
                {
                    // A permit is stored if the batcher is busy: no wake-up is lost.
                    wake.notify.notify_one();
                }
            }
            // The batcher has ended (shutdown).
            Err(_) => {
                self.give_back(size);
                stats.dropped_shutdown.fetch_add(spans, Relaxed);
            }
        }
    }

    fn give_back(&self, size: usize) {
        let stats = &self.handle.stats;
        self.handle.wake.queued.fetch_sub(1, Relaxed);
        stats.queue_len.fetch_sub(1, Relaxed);
        stats.queue_bytes.fetch_sub(size, Relaxed);
    }
}

impl Drop for Reserved<'_> {
    /// A place never sent: given back, and the exchange no longer counted as produced.
    fn drop(&mut self) {
        if let Some(q) = self.queued.take() {
            self.give_back(q.size);
            self.handle.stats.produced.fetch_sub(self.spans, Relaxed);
        }
    }
}

/// The exporter in use, and the ones a reload replaced that still export what was queued
/// to them. Counters are shared, so `/metrics` counts across reloads.
pub struct Exporters {
    stats: Arc<ExportStats>,
    pace: Pace,
    inner: tokio::sync::Mutex<ExportersInner>,
}

struct ExportersInner {
    current: Exporter,
    /// Batchers of replaced exporters: each ends once the last request holding its
    /// handle has finished and its queue is exported.
    retired: Vec<oneshot::Receiver<()>>,
}

impl Exporters {
    /// Starts the exporter `export` describes (must run inside the tokio runtime), its
    /// wake-ups paced by `pace`.
    pub fn start(
        export: &ExportSettings,
        tracing: &TracingSettings,
        pace: Pace,
    ) -> Result<Exporters, String> {
        let stats = Arc::new(ExportStats::default());
        let current = Exporter::start(export, tracing, stats.clone(), &pace)?;
        Ok(Exporters {
            stats,
            pace,
            inner: tokio::sync::Mutex::new(ExportersInner {
                current,
                retired: Vec::new(),
            }),
        })
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    /// The handle requests submit to.
    pub async fn handle(&self) -> ExportHandle {
        self.inner.lock().await.current.handle.clone()
    }

    /// Starts a new exporter for `export` and retires the current one, which keeps
    /// exporting what requests still in flight submit to it. Returns the new handle.
    pub async fn replace(
        &self,
        export: &ExportSettings,
        tracing: &TracingSettings,
    ) -> Result<ExportHandle, String> {
        let next = Exporter::start(export, tracing, self.stats.clone(), &self.pace)?;
        let handle = next.handle.clone();
        let mut inner = self.inner.lock().await;
        let old = std::mem::replace(&mut inner.current, next);
        inner
            .retired
            .retain_mut(|t| matches!(t.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        if let Some(task) = old.task {
            inner.retired.push(task);
        }
        Ok(handle)
    }

    /// Exports everything queued so far, by this exporter and the retired ones; returns
    /// whether all of it was done before `deadline` passed.
    pub async fn flush(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let (control, retired) = {
            let mut inner = self.inner.lock().await;
            (
                inner.current.control.clone(),
                std::mem::take(&mut inner.retired),
            )
        };
        let mut done = match control {
            Some(ctl) => {
                let (tx, rx) = oneshot::channel();
                ctl.send(Control::Flush(tx)).await.is_ok()
                    && tokio::time::timeout_at(until, rx)
                        .await
                        .is_ok_and(|r| r.is_ok())
            }
            None => true,
        };
        for task in retired {
            done &= tokio::time::timeout_at(until, task).await.is_ok();
        }
        done
    }
}

/// One running exporter: its handle, and its batcher task.
struct Exporter {
    handle: ExportHandle,
    control: Option<mpsc::Sender<Control>>,
    /// Resolves when the export thread has exported what it had and ended.
    task: Option<oneshot::Receiver<()>>,
}

impl Exporter {
    fn start(
        export: &ExportSettings,
        tracing: &TracingSettings,
        stats: Arc<ExportStats>,
        pace: &Pace,
    ) -> Result<Exporter, String> {
        let ExportSettings::Otlp(o) = export else {
            return Ok(Exporter {
                handle: ExportHandle {
                    tx: None,
                    max_len: 0,
                    max_bytes: 0,
                    wake: Arc::default(),
                    stats,
                },
                control: None,
                task: None,
            });
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctl_tx, ctl_rx) = mpsc::channel(1);
        let (built_tx, built_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (settings, resource, batch_stats) = ((**o).clone(), resource(tracing), stats.clone());
        let wake = Arc::new(Wake {
            batch_size: isize::try_from(o.batch_size).unwrap_or(isize::MAX),
            room: isize::try_from(o.batch_size.saturating_mul(o.max_concurrent_exports))
                .unwrap_or(isize::MAX),
            every: ENCODE_EVERY.min(o.batch_size) as isize,
            pace: pace.clone(),
            ..Wake::default()
        });
        let batch_wake = wake.clone();
        // The batcher gets a thread and a runtime of its own: on the request path's runtime
        // it was one task among thousands of connections and fell behind under load (queue
        // full at 256 connections on one worker). The OS shares the core fairly instead.
        std::thread::Builder::new()
            .name("tracegate-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = built_tx.send(Err(format!("cannot start the export runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let client = match Client::new(&settings) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = built_tx.send(Ok(()));
                    Batcher {
                        client: Arc::new(client),
                        preamble: Preamble::new(&resource, "tracegate", env!("CARGO_PKG_VERSION")),
                        rx,
                        control: ctl_rx,
                        stats: batch_stats,
                        wake: batch_wake,
                        batch_size: settings.batch_size,
                        batch_delay: settings.batch_delay,
                        timeout: settings.timeout,
                        pending: Spans::default(),
                        done: Vec::new(),
                        calls: Vec::new(),
                        max_calls: settings.max_concurrent_exports.max(1),
                        due: false,
                        failing: false,
                    }
                    .run()
                    .await;
                });
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        // Waits the few milliseconds the exporter takes to build (startup and reload only).
        built_rx
            .recv()
            .map_err(|_| "the export thread ended while starting".to_string())??;
        let task = done_rx;
        Ok(Exporter {
            handle: ExportHandle {
                tx: Some(tx),
                max_len: o.queue_limit,
                max_bytes: o.queue_max_bytes,
                wake,
                stats,
            },
            control: Some(ctl_tx),
            task: Some(task),
        })
    }
}

/// The resource: `service.name`, the resource attributes (OTEL_RESOURCE_ATTRIBUTES and the
/// YAML's, each key once: the configuration merged them), `service.version`, and
/// `telemetry.sdk.*` / `telemetry.distro.*`.
pub fn resource(t: &TracingSettings) -> Vec<(String, String)> {
    let version = env!("CARGO_PKG_VERSION");
    let fixed = [
        ("service.version", t.service_version.as_str()),
        ("telemetry.sdk.name", "tracegate"),
        ("telemetry.sdk.language", "rust"),
        ("telemetry.sdk.version", version),
        ("telemetry.distro.name", "tracegate"),
        ("telemetry.distro.version", version),
    ];
    let mut attrs = vec![("service.name".to_string(), t.service_name.clone())];
    attrs.extend(
        t.resource_attributes
            .iter()
            .filter(|(k, _)| fixed.iter().all(|(f, _)| f != k))
            .cloned(),
    );
    attrs.extend(fixed.map(|(k, v)| (k.to_string(), v.to_string())));
    attrs
}

struct Batcher {
    client: Arc<Client>,
    preamble: Preamble,
    rx: mpsc::UnboundedReceiver<Queued>,
    control: mpsc::Receiver<Control>,
    stats: Arc<ExportStats>,
    wake: Arc<Wake>,
    batch_size: usize,
    batch_delay: Duration,
    timeout: Duration,
    /// Spans taken from the queue, encoded, not yet sent.
    pending: Spans,
    /// Exchanges encoded since the last `fill`, given back to the request path
    /// ([`spare`](crate::span::spare)).
    done: Vec<Arc<Exchange>>,
    /// Export calls waiting on the collector, at most `max_calls`.
    calls: Vec<Call>,
    /// `export.max_concurrent_exports`: a batch is sent while earlier ones wait for their
    /// answer, so a collector far away (or slow to answer) is not a limit of one batch a
    /// round trip.
    max_calls: usize,
    /// The batch-delay tick found spans it had no call left to send them with: what is
    /// pending goes as calls are answered, full batch or not, until nothing is.
    due: bool,
    /// The last call answered failed: one call at a time until one succeeds. While the
    /// collector is away, calls side by side would only take batches out of the queue to
    /// fail them, where the queue keeps them for its return (`benches/recovery.rs -- 200
    /// 15`: 62% of the spans exported with four calls failing at a time, 80% with this
    /// rule, 86% with one call ever; benches/README.md, 2026-12-08).
    failing: bool,
}

/// An export call in flight.
type Call = std::pin::Pin<Box<dyn Future<Output = Sent>>>;

/// An export call's outcome: its spans, and how it went.
struct Sent {
    spans: usize,
    result: Result<Result<u64, String>, tokio::time::error::Elapsed>,
    took: Duration,
}

/// Resolves with the first of `calls` answered, removed from them (pending while there are
/// none).
fn answered(calls: &mut Vec<Call>) -> impl Future<Output = Sent> + '_ {
    std::future::poll_fn(move |cx| {
        for i in 0..calls.len() {
            if let std::task::Poll::Ready(sent) = calls[i].as_mut().poll(cx) {
                drop(calls.swap_remove(i));
                return std::task::Poll::Ready(sent);
            }
        }
        std::task::Poll::Pending
    })
}

impl Batcher {
    async fn run(mut self) {
        // Every span waits at most about one tick: the tick sends whatever is pending.
        let mut tick = tokio::time::interval(self.batch_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            tokio::select! {
                biased;
                ctl = self.control.recv() => match ctl {
                    Some(Control::Flush(done)) => {
                        self.drain().await;
                        let _ = done.send(());
                    }
                    // Retired by a reload: export what requests still submit until the last
                    // handle is gone.
                    None => return self.retired().await,
                },
                sent = answered(&mut self.calls), if !self.calls.is_empty() => {
                    self.finish(sent);
                    self.start_calls(self.due);
                }
                () = self.wake.notify.notified() => self.start_calls(self.due),
                _ = tick.tick() => {
                    self.due = true;
                    self.start_calls(true);
                }
            }
        }
    }

    async fn retired(mut self) {
        self.drain().await;
        while let Some(q) = self.rx.recv().await {
            self.take(q);
            self.drain().await;
        }
    }

    /// Sends everything queued and pending, and waits for every call's answer.
    async fn drain(&mut self) {
        loop {
            self.start_calls(true);
            if self.calls.is_empty() {
                return;
            }
            let sent = answered(&mut self.calls).await;
            self.finish(sent);
        }
    }

    /// Takes queued exchanges until a batch is pending. The rest stays in the bounded
    /// queue: taking everything would move the bound's job onto an unbounded vector.
    fn fill(&mut self) {
        while self.pending.len() < self.batch_size {
            match self.rx.try_recv() {
                Ok(q) => self.take(q),
                Err(_) => break,
            }
        }
        crate::span::spare::give_back(&mut self.done);
    }

    fn take(&mut self, q: Queued) {
        self.wake.queued.fetch_sub(1, Relaxed);
        self.stats.queue_len.fetch_sub(1, Relaxed);
        self.stats.queue_bytes.fetch_sub(q.size, Relaxed);
        q.exchange.write_spans(&mut self.pending);
        self.done.push(q.exchange);
    }

    /// Starts a call for each full batch pending (or for what is pending at all when
    /// `partial`) while fewer than `max_calls` are in flight (one while `failing`); a
    /// partial batch otherwise waits for the tick.
    fn start_calls(&mut self, partial: bool) {
        let most = if self.failing { 1 } else { self.max_calls };
        loop {
            self.fill();
            let n = self.pending.len().min(self.batch_size);
            if n == 0 {
                self.due = false;
                return;
            }
            if self.calls.len() >= most || (n < self.batch_size && !partial) {
                return;
            }
            self.start(n);
        }
    }

    /// Starts a call with `n` pending spans (at most a batch).
    fn start(&mut self, n: usize) {
        let spans = self.pending.take(n);
        let payload = Payload {
            head: self.preamble.head(&spans),
            spans,
        };
        let client = self.client.clone();
        // Retry waits are capped at half a batch delay: a collector that comes back is
        // tried again soon enough for its first batch to land within one batch delay.
        let max_wait = (self.batch_delay / 2).min(Duration::from_millis(1600));
        // The client bounds its own retries by `timeout`; this guard also covers a
        // collector that accepts the connection and never answers.
        let limit = self.timeout + Duration::from_millis(500);
        self.calls.push(Box::pin(async move {
            let started = Instant::now();
            let result = tokio::time::timeout(limit, client.export(&payload, max_wait)).await;
            // The batch's bytes go back before the answer is counted: `Spans::rewind`.
            drop(payload);
            Sent {
                spans: n,
                result,
                took: started.elapsed(),
            }
        }));
    }

    /// Counts an answered call.
    fn finish(&mut self, sent: Sent) {
        let Sent {
            spans: n,
            result,
            took,
        } = sent;
        self.pending.rewind();
        self.wake.unsent.fetch_sub(n as isize, Relaxed);
        self.stats
            .export_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        self.stats.batches.fetch_add(1, Relaxed);
        self.failing = !matches!(result, Ok(Ok(_)));
        match result {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(n as u64);
                self.stats.exported.fetch_add(n as u64 - rejected, Relaxed);
                if rejected > 0 {
                    self.stats.dropped_rejected.fetch_add(rejected, Relaxed);
                    crate::log::warn(&format!(
                        "the collector rejected {rejected} of {n} spans (partial success)"
                    ));
                }
            }
            Ok(Err(e)) => self.failed(n, &e),
            Err(_) => self.failed(n, "timed out"),
        }
    }

    fn failed(&self, n: usize, why: &str) {
        self.stats.failed_batches.fetch_add(1, Relaxed);
        self.stats
            .dropped_export_failed
            .fetch_add(n as u64, Relaxed);
        crate::log::warn(&format!("span export failed, {n} spans dropped: {why}"));
    }
}
