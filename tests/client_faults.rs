//! Client faults against the real binary: clients that abort mid-request and mid-response
//! (HTTP/1.1 and HTTP/2), and a reader that stalls. The upstream request is cancelled, the
//! server span ends with an error, backpressure holds the upstream back instead of
//! buffering, and afterwards no task or file descriptor is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn start(upstream: std::net::SocketAddr, collector: std::net::SocketAddr) -> Process {
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\n    request_timeout: 30s\nroutes:\n  - upstream: app\nexport:\n  endpoint: \"http://{collector}\"\n  batch_delay: 20ms\n"
    );
    let dir = std::env::temp_dir().join(format!("tracegate-client-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tracegate.yaml");
    std::fs::write(&path, yaml).unwrap();
    spawn_tracegate(&["run", "--config", path.to_str().unwrap()], &[])
}

fn traceparent(n: usize) -> (String, String) {
    let trace = format!("{:032x}", 0xc11e_0000_0000 + n as u128);
    (format!("00-{trace}-00f067aa0ba902b7-01"), trace)
}

/// Waits until `f` holds (a failure after `PATIENCE`).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_and_stalling_clients_cancel_upstream_and_leak_nothing() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let tg = start(up.addr, col.addr);
    let proxy = tg.proxy.clone();

    // Warm up (one pooled upstream connection), then take the baseline.
    assert_eq!(
        get(&h1_client(), &format!("http://{proxy}/ok"), &[])
            .await
            .status,
        200
    );
    let (tasks0, fds0) = tg.tasks_and_fds().await;
    const ROUNDS: usize = 8;
    let mut errors = Vec::new();

    for round in 0..ROUNDS {
        // 1. HTTP/1.1, mid-request: the head and part of a large body, then the client goes.
        let (tp, trace) = traceparent(4 * round);
        let mut s = TcpStream::connect(&proxy).await.unwrap();
        s.write_all(
            format!(
                "POST /upload HTTP/1.1\r\nhost: app\r\ntraceparent: {tp}\r\ncontent-length: 10000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(&[b'u'; 64 * 1024]).await.unwrap();
        let broken = up.broken_bodies.load(SeqCst);
        until("the upload never reached the upstream", || {
            up.seen.all().iter().any(|r| {
                r.headers
                    .get("traceparent")
                    .is_some_and(|v| v.to_str().unwrap().contains(&trace))
            })
        })
        .await;
        drop(s);
        until("the upstream request body was not cut off", || {
            up.broken_bodies.load(SeqCst) > broken
        })
        .await;
        errors.push((trace, "mid-request"));

        // 2. HTTP/1.1, mid-response: part of a large body read, then the client goes.
        let (tp, trace) = traceparent(4 * round + 1);
        let mut s = TcpStream::connect(&proxy).await.unwrap();
        s.write_all(
            format!("GET /bytes/500000000 HTTP/1.1\r\nhost: app\r\ntraceparent: {tp}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let (h, _) = read_head(&mut s).await;
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        let mut buf = vec![0u8; 256 * 1024];
        s.read_exact(&mut buf).await.unwrap();
        let cut = up.cut_responses.load(SeqCst);
        drop(s);
        until("the upstream response was not cancelled", || {
            up.cut_responses.load(SeqCst) > cut
        })
        .await;
        errors.push((trace, "mid-response"));

        // 3. HTTP/2, the stream reset mid-response (the connection stays).
        let (tp, trace) = traceparent(4 * round + 2);
        let client = h2c_client();
        let req = http::Request::get(format!("http://{proxy}/bytes/500000000"))
            .header("traceparent", &tp)
            .body(body_of(http_body_util::Empty::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let _ = body.frame().await.unwrap().unwrap();
        let cut = up.cut_responses.load(SeqCst);
        drop(body);
        until("the upstream response was not cancelled (h2)", || {
            up.cut_responses.load(SeqCst) > cut
        })
        .await;
        errors.push((trace, "h2 reset"));
        drop(client);
    }

    // 4. A reader that stalls: backpressure holds the upstream back (nothing is buffered
    // without bound), and when it reads again everything arrives.
    const TOTAL: u64 = 400 * 1024 * 1024;
    let (tp, stalled_trace) = traceparent(1000);
    let mut s = TcpStream::connect(&proxy).await.unwrap();
    s.write_all(
        format!("GET /bytes/{TOTAL} HTTP/1.1\r\nhost: app\r\ntraceparent: {tp}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (h, early) = read_head(&mut s).await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let produced0 = up.produced.load(SeqCst);
    // Stalled: the upstream stops producing once the buffers on the way are full.
    let mut last = u64::MAX;
    let deadline = Instant::now() + PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = up.produced.load(SeqCst);
        if now == last {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "the upstream never stopped");
    }
    let ahead = last - produced0;
    assert!(
        ahead < TOTAL / 4,
        "{ahead} bytes produced for a stalled reader: buffered instead of pushed back"
    );
    let mut got = early.len() as u64;
    let mut buf = vec![0u8; 1 << 20];
    while got < TOTAL {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .expect("the body resumed")
            .unwrap();
        assert!(n > 0, "closed after {got} of {TOTAL} bytes");
        got += n as u64;
    }
    assert_eq!(got, TOTAL);
    drop(s);

    // Every aborted exchange's server span is an error; the stalled one is not.
    for (trace, what) in &errors {
        let span = server_span(&col, trace).await;
        assert_eq!(span.status_code(), 2, "{what}: span not an error");
        assert!(span.attr("error.type").is_some(), "{what}: no error.type");
    }
    let stalled = server_span(&col, &stalled_trace).await;
    assert_eq!(
        stalled.status_code(),
        0,
        "the stalled reader got everything"
    );
    assert_eq!(
        stalled.attr("http.response.status_code").as_deref(),
        Some("200")
    );

    // Nothing left behind: with a leak, tasks and fds would grow by one per abort (24).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (tasks, fds) = tg.tasks_and_fds().await;
        if tasks <= tasks0 + 2 && fds <= fds0 + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks {tasks0} -> {tasks}, fds {fds0} -> {fds}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
