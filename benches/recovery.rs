//! Export recovery: how long after the collector comes back the first span reaches it, next
//! to the batch delay, and whether anything is lost once it is back.
//!
//! The real exporter (its own thread, tracegate's OTLP encoder and tonic client) exports a
//! steady stream of exchanges (2,000 per second, two spans each) to a real tonic receiver
//! that decodes every request. Each trial takes the collector away for a while, then brings
//! a fresh one up on the same port and measures the time from its listening socket being
//! bound to the first span it decodes. Two ways of going away:
//! - `refused`: the collector process is gone (connections reset, the port refuses);
//! - `black-holed`: something accepts the connections and never reads or answers, until it
//!   goes away and the real collector takes the port back.
//!
//! At the end the books must balance: spans exported = spans the receivers decoded, and
//! exported + dropped = produced.
//!
//!     cargo bench --bench recovery [-- batch_delay_ms [trials]] 2>/dev/null
//!
//! (stderr carries tracegate's own warning for every failed batch.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
#[path = "common/exporter.rs"]
mod exporter;
#[path = "common/sink.rs"]
mod sink;

/// Exchanges submitted per second, two spans each.
const RATE: u64 = 2_000;
/// How long the collector stays away in each trial: long enough for several failed
/// attempts and for the exporter's retries to back off.
const DOWN: Duration = Duration::from_millis(2_500);
/// How long it stays up after the first span arrives.
const UP: Duration = Duration::from_millis(1_500);

/// Something listening on `addr` on a runtime of its own; dropping it is a crash: the
/// listener and every connection close at once.
struct Peer(Option<tokio::runtime::Runtime>);

impl Peer {
    fn start<F>(addr: SocketAddr, serve: impl FnOnce(tokio::net::TcpListener) -> F) -> Peer
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Bound before this returns: the recovery clock starts when the port answers.
        let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        rt.spawn(serve(listener));
        Peer(Some(rt))
    }

    /// The real receiver.
    fn collector(addr: SocketAddr, counts: Arc<sink::Counts>) -> Peer {
        Peer::start(addr, |l| sink::serve(l, counts, sink::Decode::Full))
    }

    /// Accepts connections and holds them without reading a byte.
    fn black_hole(addr: SocketAddr) -> Peer {
        Peer::start(addr, |l| async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Waits until the listener and the connections are closed.
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let delay_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let trials: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let batch_delay = Duration::from_millis(delay_ms);

    // A free port for the collector to come and go on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let exporter::Started {
        rt,
        exporters,
        handle,
    } = exporter::start(&format!(
        "  endpoint: \"http://{addr}\"\n  batch_size: 512\n  batch_delay: {delay_ms}ms\n  timeout: 1s\n  queue_limit: 8192\n"
    ));
    let stats = exporters.stats();
    let received = Arc::new(sink::Counts::default());

    // The steady stream of exchanges, like a proxy under moderate load.
    let stop = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicU64::new(0));
    let producer = {
        let (stop, submitted) = (stop.clone(), submitted.clone());
        std::thread::spawn(move || {
            let target = common::target();
            let template = common::exchange(&target);
            let started = Instant::now();
            while !stop.load(Relaxed) {
                let due = started.elapsed().as_micros() as u64 * RATE / 1_000_000;
                while submitted.load(Relaxed) < due {
                    handle.submit(std::sync::Arc::new(template.clone()));
                    submitted.fetch_add(1, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    println!(
        "export recovery: batch delay {delay_ms} ms, exporter timeout 1 s, {RATE} exchanges/s \
         (2 spans each), collector away {} ms per trial",
        DOWN.as_millis()
    );
    let mut collector = Some(Peer::collector(addr, received.clone()));
    std::thread::sleep(Duration::from_secs(1));
    let mut results: Vec<(&str, Vec<f64>)> = Vec::new();
    for (kind, away) in [
        ("refused", (|_| None) as fn(SocketAddr) -> Option<Peer>),
        ("black-holed", |a| Some(Peer::black_hole(a))),
    ] {
        let mut ms = Vec::new();
        for trial in 1..=trials {
            drop(collector.take());
            let hole = away(addr);
            std::thread::sleep(DOWN);
            drop(hole);
            let before = received.spans.load(Relaxed);
            let queued = stats.queue_len.load(Relaxed);
            let back = Instant::now();
            collector = Some(Peer::collector(addr, received.clone()));
            while received.spans.load(Relaxed) == before {
                assert!(
                    back.elapsed() < Duration::from_secs(30),
                    "no span 30 s after the collector came back"
                );
                std::thread::sleep(Duration::from_micros(500));
            }
            let recovery = back.elapsed();
            let dropped_then = stats.dropped();
            std::thread::sleep(UP);
            let dropped_after = stats.dropped() - dropped_then;
            println!(
                "  {kind:<12} trial {trial}: first span {:>6.1} ms after the collector was back \
                 ({:.2} batch delays); {queued} exchanges were queued then; \
                 dropped in the {} ms after: {dropped_after}",
                recovery.as_secs_f64() * 1e3,
                recovery.as_secs_f64() / batch_delay.as_secs_f64(),
                UP.as_millis()
            );
            ms.push(recovery.as_secs_f64() * 1e3);
        }
        results.push((kind, ms));
    }
    stop.store(true, Relaxed);
    producer.join().unwrap();
    assert!(
        rt.block_on(exporters.flush(Duration::from_secs(30))),
        "the queue was not exported within 30 s"
    );
    let produced = 2 * submitted.load(Relaxed);
    let exported = stats.exported.load(Relaxed);
    let dropped = stats.dropped();
    while received.spans.load(Relaxed) < exported {
        std::thread::sleep(Duration::from_millis(10));
    }
    for (kind, mut ms) in results {
        ms.sort_by(f64::total_cmp);
        println!(
            "{kind:<12} recovery median {:.1} ms (min {:.1}, max {:.1}) = {:.2} batch delays (max {:.2})",
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1],
            ms[ms.len() / 2] / delay_ms as f64,
            ms[ms.len() - 1] / delay_ms as f64
        );
    }
    println!(
        "spans produced {produced}, exported {exported} (decoded by the receivers {}), \
         dropped {dropped}",
        received.spans.load(Relaxed)
    );
    assert_eq!(
        exported,
        received.spans.load(Relaxed),
        "exported != received"
    );
    assert_eq!(
        exported + dropped,
        produced,
        "exported + dropped != produced"
    );
}
