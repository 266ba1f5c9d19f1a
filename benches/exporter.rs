//! Exporter capacity: how many spans per second tracegate's exporter turns from finished
//! exchanges into OTLP/gRPC batches and sends, per core. The real exporter (its own thread
//! and runtime, tracegate's OTLP encoder and gRPC client) sends to a real tonic receiver on
//! another thread that decodes every request; the queue is kept full for the whole run.
//! The export thread's CPU time comes from /proc, so the figure is spans per CPU-second of
//! that one thread, whatever else the machine runs.
//!
//!     cargo bench --bench exporter [-- seconds [batch_size [answer_ms [concurrent]]]]
//!
//! `batch_size` (512, the default, as in the OpenTelemetry SDKs) shows what a batch costs
//! on top of its spans: the per-span figure falls as batches grow. `answer_ms` (default 0)
//! makes the receiver answer each call that long after it came, as a collector a round
//! trip away does, and `concurrent` sets `export.max_concurrent_exports` (default 4): then
//! the spans a second of wall time are what to read, at most `concurrent` batches a round
//! trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
#[path = "common/exporter.rs"]
mod exporter;
#[path = "common/sink.rs"]
mod sink;

/// CPU seconds (user + system) of this process's thread named `name`.
fn thread_cpu(name: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
            // Fields after the parenthesised name: state is #3; utime #14, stime #15.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            let (u, s): (f64, f64) = (f[11].parse().unwrap(), f[12].parse().unwrap());
            return (u + s) / tick;
        }
    }
    panic!("no thread named {name}");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let batch: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let answer_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let concurrent: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4);
    // The receiver: a tonic server on a thread and runtime of its own.
    let received = Arc::new(sink::Counts::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = received.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            sink::serve_answering_after(
                tokio::net::TcpListener::from_std(listener).unwrap(),
                counts,
                sink::Decode::Full,
                Duration::from_millis(answer_ms),
            )
            .await;
        });
    });

    let exporter::Started {
        rt,
        exporters,
        handle,
    } = exporter::start(&format!(
        "  endpoint: \"http://{addr}\"\n  batch_size: {batch}\n  batch_delay: 50ms\n  queue_limit: 8192\n  queue_max_bytes: 268435456\n  max_concurrent_exports: {concurrent}\n"
    ));
    let stats = exporters.stats();
    let target = common::target();
    let template = common::exchange(&target);

    // Keep the queue topped up (never full: nothing dropped) for `secs`.
    let cpu0 = thread_cpu("tracegate-expor");
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    while Instant::now() < until {
        if stats.queue_len.load(Relaxed) < 6000 {
            for _ in 0..256 {
                handle.submit(Arc::new(template.clone()));
            }
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert!(
        rt.block_on(exporters.flush(Duration::from_secs(30))),
        "the queue was not exported within 30 s"
    );
    let wall = started.elapsed().as_secs_f64();
    let cpu = thread_cpu("tracegate-expor") - cpu0;
    let exported = stats.exported.load(Relaxed);
    let dropped = stats.dropped();
    while received.spans.load(Relaxed) < exported {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "exporter capacity, OTLP/gRPC, batches of {batch}, {secs} s, answers after {answer_ms} ms, {concurrent} call(s) at once"
    );
    println!(
        "  spans exported {exported} (received and decoded {}), dropped {dropped}",
        received.spans.load(Relaxed)
    );
    println!(
        "  {:.0} spans/s wall; export thread {:.2} CPU s: {:.0} spans per CPU-second, {:.2} us per span",
        exported as f64 / wall,
        cpu,
        exported as f64 / cpu,
        cpu * 1e6 / exported as f64
    );
    println!(
        "  batches {}, mean export call {:.2} ms",
        stats.batches.load(Relaxed),
        stats.export_micros.load(Relaxed) as f64 / 1000.0 / stats.batches.load(Relaxed) as f64
    );
}
