//! tracegate's exporter driven directly (its own thread and runtime, a real OTLP/gRPC
//! receiver): its accounting holds when the batcher takes spans the moment they are queued.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use support::*;
use tracegate::config::{Env, Settings, load};
use tracegate::export::{Exporters, Pace};

/// A runtime with one worker, a real OTLP/gRPC receiver on it, and settings that export to
/// it with `export_keys` (YAML lines under `export:`) added.
fn exporter_setup(export_keys: &str) -> (tokio::runtime::Runtime, Collector, Settings) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = rt.block_on(grpc_collector());
    let yaml = format!(
        "upstreams:\n  - name: app\n    endpoints: [\"http://127.0.0.1:9\"]\nroutes:\n  - upstream: app\nexport:\n  endpoint: \"http://{}\"\n{export_keys}",
        collector.addr
    );
    let settings = load(&yaml, "exporter.yaml", &Env::default()).unwrap();
    (rt, collector, settings)
}

/// A retired exporter (replaced by a reload) takes each exchange as soon as it is queued
/// and exports it at once. Submitting threads that lose their core between queueing and
/// counting (here: two spinning threads keep both cores busy) must not see the batcher's
/// subtraction before their own addition: that underflow panicked the request's task in
/// debug builds (found by `reload_moves_exporter_and_listeners` on CI).
#[test]
fn spans_taken_as_soon_as_queued_are_counted_once() {
    const PER_THREAD: u64 = 400;
    let (rt, collector, settings) = exporter_setup("  batch_delay: 5ms\n  queue_limit: 4096\n");
    let (exporters, old) = rt.block_on(async {
        let e = Exporters::start(&settings.export, &settings.tracing, Pace::default()).unwrap();
        let first = e.handle().await;
        e.replace(&settings.export, &settings.tracing)
            .await
            .unwrap();
        (e, first)
    });
    let stats = exporters.stats();

    let done = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Relaxed) {
                    n = n.wrapping_add(1);
                    std::hint::black_box(n);
                }
            })
        })
        .collect();
    let submitted = Arc::new(AtomicU64::new(0));
    let submitters: Vec<_> = (0..2)
        .map(|_| {
            let (old, stats, submitted) = (old.clone(), stats.clone(), submitted.clone());
            std::thread::spawn(move || {
                let target = common::target();
                let template = common::exchange(&target);
                for _ in 0..PER_THREAD {
                    let before = stats.exported.load(Relaxed);
                    old.submit(Arc::new(template.clone()));
                    submitted.fetch_add(1, Relaxed);
                    // Wait for the export (bounded), so the next submit finds the batcher
                    // idle in its receive and wakes it.
                    for _ in 0..20_000 {
                        if stats.exported.load(Relaxed) > before {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let results: Vec<_> = submitters.into_iter().map(|t| t.join()).collect();
    done.store(true, Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    for r in results {
        r.unwrap();
    }
    drop(old);
    assert!(rt.block_on(exporters.flush(PATIENCE)));
    let spans = 2 * submitted.load(Relaxed);
    assert_eq!(submitted.load(Relaxed), 2 * PER_THREAD);
    assert_eq!(stats.produced.load(Relaxed), spans);
    assert_eq!(stats.exported.load(Relaxed), spans, "every span exported");
    assert_eq!(stats.dropped(), 0);
    assert_eq!(stats.queue_len.load(Relaxed), 0);
    rt.block_on(collector.spans.wait_for(spans as usize));
    assert_eq!(collector.spans.all().len() as u64, spans);
}

/// A worker that loses its core between taking an exchange's place in the queue and queueing
/// it, while the other worker goes on submitting. Full batches must leave without waiting for
/// the batch-delay tick (an hour here), both while that exchange is held and after. Spans
/// used to be counted for the batcher's wake-ups at the place, before their exchange was
/// queued: the batcher, woken by the other worker's count reaching a full batch, found a
/// batch short by the held exchange, sent nothing and slept, and from then on every
/// submitter saw a full batch counted and woke nobody until the tick (spans dropped, queue
/// full, with two workers at 256 connections in `benches/proxy/run.sh`).
#[test]
fn a_submitter_stopped_before_queueing_holds_up_no_batch() {
    // Batches of 4 spans: two exchanges (a server and a client span each) fill one.
    let (rt, collector, settings) = exporter_setup("  batch_size: 4\n  batch_delay: 1h\n");
    let exporters = rt.block_on(async {
        Exporters::start(&settings.export, &settings.tracing, Pace::default()).unwrap()
    });
    let handle = rt.block_on(exporters.handle());
    let stats = exporters.stats();
    let target = common::target();
    let template = common::exchange(&target);
    let exported_reach = |n: u64| {
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while stats.exported.load(Relaxed) < n && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            stats.exported.load(Relaxed)
        })
    };

    // The stopped worker: its exchange has a place, not yet queued.
    let held = handle.reserve(Arc::new(template.clone())).unwrap();
    assert_eq!(stats.queue_len.load(Relaxed), 1);
    // The other worker: three exchanges, six spans; one full batch of them leaves now.
    for _ in 0..3 {
        handle.submit(Arc::new(template.clone()));
    }
    assert_eq!(exported_reach(4), 4, "a full batch waited for the tick");
    // The stopped worker queues its exchange: with the third, a second full batch.
    held.send();
    assert_eq!(exported_reach(8), 8, "a full batch waited for the tick");
    rt.block_on(collector.spans.wait_for(8));
    assert_eq!(collector.spans.all().len(), 8);
    assert_eq!(stats.produced.load(Relaxed), 8);
    assert_eq!(stats.queue_len.load(Relaxed), 0);

    // A place given up is given back, and its exchange no longer counted as produced.
    drop(handle.reserve(Arc::new(template.clone())).unwrap());
    assert_eq!(stats.queue_len.load(Relaxed), 0);
    assert_eq!(stats.queue_bytes.load(Relaxed), 0);
    assert_eq!(stats.produced.load(Relaxed), 8);
    assert_eq!(stats.dropped(), 0);
    drop(handle);
    assert!(rt.block_on(exporters.flush(PATIENCE)));
    assert_eq!(stats.exported.load(Relaxed), 8);
}

/// The batcher is woken every 64 spans while few connections are open, and every as many
/// spans as a worker has connections open when that is more (`export::Pace`): the longer
/// run of encoding is hidden in the longer wait of more requests in flight, and each
/// wake-up saved is a preemption of the worker saved.
#[test]
fn the_batcher_is_woken_less_often_with_more_connections_open() {
    let (rt, collector, settings) = exporter_setup("  batch_size: 512\n  batch_delay: 1h\n");
    let downstream = Arc::new(tracegate::limits::DownstreamStats::default());
    // Two workers: the connections are counted per worker.
    let exporters = rt.block_on(async {
        Exporters::start(
            &settings.export,
            &settings.tracing,
            Pace::new(downstream.clone(), 2),
        )
        .unwrap()
    });
    let handle = rt.block_on(exporters.handle());
    let stats = exporters.stats();
    let target = common::target();
    let template = common::exchange(&target);
    let submit = |exchanges: usize| {
        for _ in 0..exchanges {
            handle.submit(Arc::new(template.clone()));
        }
    };
    // The batcher takes what is queued once woken.
    let queue_empties = || {
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while stats.queue_len.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            stats.queue_len.load(Relaxed)
        })
    };

    // 10 connections a worker: woken at 64 spans (32 exchanges of two spans).
    downstream.open.store(20, Relaxed);
    submit(32);
    assert_eq!(queue_empties(), 0, "not woken at 64 spans");
    // 256 connections a worker: 64 more spans (128 pending) wake nobody...
    downstream.open.store(512, Relaxed);
    submit(32);
    // (A wake-up takes the batcher a few milliseconds at most: it runs on its own thread.)
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        stats.queue_len.load(Relaxed),
        32,
        "woken at 128 spans with 256 connections a worker"
    );
    // ...and the 128 after them (256 pending) do.
    submit(64);
    assert_eq!(queue_empties(), 0, "not woken at 256 spans");
    assert_eq!(stats.exported.load(Relaxed), 0, "a batch is 512 spans");
    drop(handle);
    assert!(rt.block_on(exporters.flush(PATIENCE)));
    assert_eq!(stats.exported.load(Relaxed), 256);
    rt.block_on(collector.spans.wait_for(256));
    assert_eq!(stats.dropped(), 0);
}

/// An OTLP/gRPC receiver that answers each export call once the test releases one (a
/// permit), and counts the calls waiting on it at once. The first `fail` calls are answered
/// at once with INVALID_ARGUMENT (not retried).
#[derive(Clone)]
struct Held {
    /// Calls received so far.
    calls: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
    fail: Arc<AtomicUsize>,
    spans: Arc<Log<Received>>,
}

impl Held {
    async fn start() -> (Held, std::net::SocketAddr) {
        let held = Held {
            calls: Arc::default(),
            waiting: Arc::default(),
            most: Arc::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
            fail: Arc::default(),
            spans: Arc::default(),
        };
        let addr = serve_trace_service(held.clone()).await;
        (held, addr)
    }
}

#[tonic::async_trait]
impl TraceService for Held {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.calls.fetch_add(1, Relaxed);
        if self
            .fail
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(tonic::Status::invalid_argument("scripted failure"));
        }
        let now = self.waiting.fetch_add(1, Relaxed) + 1;
        self.most.fetch_max(now, Relaxed);
        self.release.acquire().await.unwrap().forget();
        self.waiting.fetch_sub(1, Relaxed);
        flatten(request.into_inner(), &self.spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The exporter sending to a [`Held`] receiver, batches of 4 spans (two exchanges: a
/// server and a client span each), `max_concurrent_exports: calls`, no tick.
struct HeldExporter {
    rt: tokio::runtime::Runtime,
    held: Held,
    exporters: Exporters,
    handle: tracegate::export::ExportHandle,
    stats: Arc<tracegate::export::ExportStats>,
    template: tracegate::span::Exchange,
}

impl HeldExporter {
    fn start(calls: usize, fail: usize) -> HeldExporter {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (held, addr) = rt.block_on(Held::start());
        held.fail.store(fail, Relaxed);
        let yaml = format!(
            "upstreams:\n  - name: app\n    endpoints: [\"http://127.0.0.1:9\"]\nroutes:\n  - upstream: app\nexport:\n  endpoint: \"http://{addr}\"\n  batch_size: 4\n  batch_delay: 1h\n  timeout: 60s\n  max_concurrent_exports: {calls}\n"
        );
        let settings = load(&yaml, "exporter.yaml", &Env::default()).unwrap();
        let exporters = rt.block_on(async {
            Exporters::start(&settings.export, &settings.tracing, Pace::default()).unwrap()
        });
        let handle = rt.block_on(exporters.handle());
        let stats = exporters.stats();
        let template = common::exchange(&common::target());
        HeldExporter {
            rt,
            held,
            exporters,
            handle,
            stats,
            template,
        }
    }

    fn submit(&self, exchanges: usize) {
        for _ in 0..exchanges {
            self.handle.submit(Arc::new(self.template.clone()));
        }
    }

    /// Waits until `what` holds (at most [`PATIENCE`]).
    fn wait_until(&self, what: impl Fn() -> bool) {
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while !what() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    }

    /// Drops the handle and flushes: every span sent and answered.
    fn finish(self) {
        drop(self.handle);
        assert!(self.rt.block_on(self.exporters.flush(PATIENCE)));
    }
}

/// A collector slow to answer (or far away) is not a limit of one batch a round trip: up
/// to `export.max_concurrent_exports` calls wait on it at once, and the next full batch
/// waits for one of them to be answered. Every span is counted once.
#[test]
fn export_calls_wait_on_the_collector_side_by_side() {
    let t = HeldExporter::start(3, 0);
    let (held, stats) = (t.held.clone(), t.stats.clone());

    // Eight exchanges: four full batches.
    t.submit(8);
    t.wait_until(|| held.waiting.load(Relaxed) == 3);
    assert_eq!(
        held.waiting.load(Relaxed),
        3,
        "three batches were to wait on the collector at once"
    );
    // The fourth waits for an answer (given time to go wrong, if it were to).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(held.most.load(Relaxed), 3, "more calls than allowed");
    assert_eq!(held.calls.load(Relaxed), 3, "the fourth batch was sent");
    assert_eq!(stats.exported.load(Relaxed), 0);

    held.release.add_permits(4);
    t.wait_until(|| stats.exported.load(Relaxed) == 16);
    assert_eq!(stats.exported.load(Relaxed), 16);
    t.rt.block_on(held.spans.wait_for(16));
    t.finish();
    assert_eq!(held.most.load(Relaxed), 3);
    assert_eq!(held.calls.load(Relaxed), 4);
    assert_eq!(stats.batches.load(Relaxed), 4);
    assert_eq!(stats.produced.load(Relaxed), 16);
    assert_eq!(stats.dropped(), 0);
    assert_eq!(stats.queue_len.load(Relaxed), 0);
    assert_eq!(held.spans.all().len(), 16);
}

/// After a failed call the batcher sends one call at a time until one succeeds: while the
/// collector is away, calls side by side would only take batches out of the queue to fail
/// them, where the queue keeps them for its return.
#[test]
fn after_a_failed_call_one_waits_at_a_time_until_one_succeeds() {
    let t = HeldExporter::start(3, 1);
    let (held, stats) = (t.held.clone(), t.stats.clone());

    // One batch, refused: its spans are dropped and counted.
    t.submit(2);
    t.wait_until(|| stats.failed_batches.load(Relaxed) == 1);
    assert_eq!(stats.dropped_export_failed.load(Relaxed), 4);
    // Four batches: one call waits, the others wait for its answer.
    t.submit(8);
    t.wait_until(|| held.waiting.load(Relaxed) == 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        held.most.load(Relaxed),
        1,
        "calls side by side after a failure"
    );
    assert_eq!(held.calls.load(Relaxed), 2);
    // It succeeds: the three batches left go side by side.
    held.release.add_permits(1);
    t.wait_until(|| held.waiting.load(Relaxed) == 3);
    assert_eq!(
        held.waiting.load(Relaxed),
        3,
        "one call at a time after a success"
    );
    held.release.add_permits(3);
    t.wait_until(|| stats.exported.load(Relaxed) == 16);
    t.rt.block_on(held.spans.wait_for(16));
    t.finish();
    assert_eq!(stats.exported.load(Relaxed), 16);
    assert_eq!(stats.produced.load(Relaxed), 20);
    assert_eq!(stats.dropped(), 4);
    assert_eq!(held.calls.load(Relaxed), 5);
}
