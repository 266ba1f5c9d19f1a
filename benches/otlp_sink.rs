//! An OTLP/gRPC receiver for benchmarks: decodes every export request (real protobuf, real
//! tonic server) down to its spans and counts spans and requests (`--full`: every span into
//! the generated messages; see benches/common/sink.rs for why the default stops at the
//! spans); `GET /` style polling is not needed: it prints the totals to stdout once a second
//! while they change, and writes them to the file given as the second argument (read by
//! benches/quick.sh).
//!
//!     cargo bench --bench otlp_sink -- 127.0.0.1:4317 /tmp/sink-count [--full]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[path = "common/sink.rs"]
mod sink;
use sink::Counts;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let addr = args
        .first()
        .map_or("127.0.0.1:4317", String::as_str)
        .to_string();
    let out = args.get(1).cloned();
    let decode = if std::env::args().any(|a| a == "--full") {
        sink::Decode::Full
    } else {
        sink::Decode::Spans
    };
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (s, r) = (c.spans.load(Relaxed), c.requests.load(Relaxed));
            if let Some(path) = &out {
                let _ = std::fs::write(path, format!("{s} {r}\n"));
            }
            if s != last {
                println!("spans {s} requests {r}");
                last = s;
            }
        }
    });
    println!("otlp sink on {addr} ({decode:?} decoding)");
    sink::serve(listener, counts, decode).await;
}
