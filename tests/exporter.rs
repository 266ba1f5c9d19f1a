//! tracegate's exporter driven directly (its own thread and runtime, a real OTLP/gRPC
//! receiver): its accounting holds when the batcher takes spans the moment they are queued.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

use support::*;
use tracegate::config::{Env, load};
use tracegate::export::Exporters;

/// A retired exporter (replaced by a reload) takes each exchange as soon as it is queued
/// and exports it at once. Submitting threads that lose their core between queueing and
/// counting (here: two spinning threads keep both cores busy) must not see the batcher's
/// subtraction before their own addition: that underflow panicked the request's task in
/// debug builds (found by `reload_moves_exporter_and_listeners` on CI).
#[test]
fn spans_taken_as_soon_as_queued_are_counted_once() {
    const PER_THREAD: u64 = 400;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = rt.block_on(grpc_collector());
    let yaml = format!(
        "upstreams:\n  - name: app\n    endpoints: [\"http://127.0.0.1:9\"]\nroutes:\n  - upstream: app\nexport:\n  endpoint: \"http://{}\"\n  batch_delay: 5ms\n  queue_limit: 4096\n",
        collector.addr
    );
    let settings = load(&yaml, "exporter.yaml", &Env::default()).unwrap();
    let (exporters, old) = rt.block_on(async {
        let e = Exporters::start(&settings.export, &settings.tracing).unwrap();
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
