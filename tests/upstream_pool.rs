//! The upstream connections an endpoint keeps (src/upstream/conns.rs), seen from a real
//! upstream that counts the connections it accepts and sees closed. HTTP/1.1: a free
//! connection is reused, a busy one never gets a second request, idle ones close after
//! `idle_timeout` and beyond `max_idle_per_endpoint`, and a kept connection the upstream
//! closed costs no request. HTTP/2 (h2c): one connection carries every request, at once
//! too; it closes when idle, and one the upstream ends is replaced without losing a
//! request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::Barrier;

/// An upstream (HTTP/1.1 and h2c) counting connections. `/hold` answers once `hold`
/// requests are waiting at once (over HTTP/1.1, each of them must have come on its own
/// connection).
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

async fn counting(hold: usize) -> Counting {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    let barrier = Arc::new(Barrier::new(hold.max(1)));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            a.fetch_add(1, SeqCst);
            let (c, barrier) = (c.clone(), barrier.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let barrier = barrier.clone();
                    async move {
                        if req.uri().path() == "/hold" {
                            barrier.wait().await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
                c.fetch_add(1, SeqCst);
            });
        }
    });
    Counting {
        addr,
        accepted,
        closed,
    }
}

fn pool_config(upstream: SocketAddr, pool: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\n{pool}routes:\n  - upstream: app\nexport:\n  protocol: none\n"
    )
}

/// Waits (bounded by the helpers' patience) until `counter` reaches `n`.
async fn reaches(counter: &AtomicUsize, n: usize, what: &str) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while counter.load(SeqCst) < n {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{what}: {} of {n} in time",
        counter.load(SeqCst)
    );
}

/// `n` GETs to `url` one after the other, on one client connection.
async fn in_turn(url: &str, n: usize) {
    let client = h1_client();
    for _ in 0..n {
        assert_eq!(get(&client, url, &[]).await.status, 200);
    }
}

/// `n` GETs to `url` at once.
async fn gets(url: &str, n: usize) {
    let client = h1_client();
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), url.to_string());
        all.spawn(async move { get(&client, &url, &[]).await.status });
    }
    while let Some(status) = all.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let up = counting(1).await;
    let gw = tracegate(&pool_config(up.addr, "")).await;
    in_turn(&format!("http://{}/x", gw.proxy_addrs[0]), 20).await;
    assert_eq!(
        up.accepted.load(SeqCst),
        1,
        "one connection for 20 requests"
    );
    assert_eq!(up.closed.load(SeqCst), 0, "and it stays open");
}

#[tokio::test]
async fn a_busy_connection_never_takes_a_second_request_and_free_ones_are_reused() {
    // Eight requests held at the upstream until all eight are there: eight connections.
    let up = counting(8).await;
    let gw = tracegate(&pool_config(up.addr, "")).await;
    let url = format!("http://{}/hold", gw.proxy_addrs[0]);
    gets(&url, 8).await;
    assert_eq!(up.accepted.load(SeqCst), 8);
    // The next eight find those eight free again.
    gets(&url, 8).await;
    gets(&url, 8).await;
    assert_eq!(
        up.accepted.load(SeqCst),
        8,
        "the kept connections were reused"
    );
    assert_eq!(up.closed.load(SeqCst), 0);
}

#[tokio::test]
async fn max_idle_per_endpoint_zero_closes_each_connection_after_its_request() {
    let up = counting(1).await;
    let gw = tracegate(&pool_config(up.addr, "    max_idle_per_endpoint: 0\n")).await;
    in_turn(&format!("http://{}/x", gw.proxy_addrs[0]), 5).await;
    assert_eq!(up.accepted.load(SeqCst), 5, "a new connection per request");
    reaches(&up.closed, 5, "connections closed after their request").await;
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout() {
    let up = counting(1).await;
    let gw = tracegate(&pool_config(up.addr, "    idle_timeout: 200ms\n")).await;
    let url = format!("http://{}/x", gw.proxy_addrs[0]);
    let client = h1_client();
    assert_eq!(get(&client, &url, &[]).await.status, 200);
    reaches(&up.closed, 1, "the idle connection closed").await;
    // The next request connects again.
    assert_eq!(get(&client, &url, &[]).await.status, 200);
    assert_eq!(up.accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_beyond_max_idle_per_endpoint_are_closed() {
    let up = counting(6).await;
    let gw = tracegate(&pool_config(up.addr, "    max_idle_per_endpoint: 2\n")).await;
    let url = format!("http://{}/hold", gw.proxy_addrs[0]);
    gets(&url, 6).await;
    assert_eq!(up.accepted.load(SeqCst), 6);
    // A burst over the limit right after finds all six: they are not closed as they come
    // free (the reaper closes the excess once a whole pass found it unused), so the proxy
    // does not connect again for the next requests (it did: 10 connections here).
    gets(&url, 6).await;
    assert_eq!(
        up.accepted.load(SeqCst),
        6,
        "the second burst reused the first's connections"
    );
    // Six idle, two may stay: four close (the oldest), two are reused.
    reaches(&up.closed, 4, "idle connections beyond the limit closed").await;
    in_turn(&format!("http://{}/x", gw.proxy_addrs[0]), 4).await;
    assert_eq!(up.accepted.load(SeqCst), 6, "the two kept ones serve on");
    assert_eq!(up.closed.load(SeqCst), 4);
}

/// The value of the `/metrics` line starting with `series` (labels included), 0 if none.
async fn metric(admin: SocketAddr, series: &str) -> u64 {
    let r = get(&h1_client(), &format!("http://{admin}/metrics"), &[]).await;
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// `series`' value once it is `n`, or its last value when it has not become `n` within the
/// helpers' patience (connections close on the reaper's or the idle timer's time).
async fn metric_settles(admin: SocketAddr, series: &str, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let v = metric(admin, series).await;
        if v == n || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_count_the_connections_the_upstream_sees() {
    let up = counting(6).await;
    let yaml = pool_config(
        up.addr,
        "    max_idle_per_endpoint: 2
",
    )
    .replace("address: \"off\"", "address: 127.0.0.1:0");
    let gw = tracegate(&yaml).await;
    let admin = gw.admin_addr.unwrap();
    let opened = "tracegate_upstream_connections_opened_total{upstream=\"app\"}";
    let open = "tracegate_upstream_connections_open{upstream=\"app\"}";
    assert_eq!(
        metric(admin, opened).await,
        0,
        "none before the first request"
    );
    gets(&format!("http://{}/hold", gw.proxy_addrs[0]), 6).await;
    assert_eq!(up.accepted.load(SeqCst), 6);
    assert_eq!(metric(admin, opened).await, 6);
    assert_eq!(metric(admin, open).await, 6, "all six kept, idle");
    // The reaper closes the four beyond the limit: open follows, opened stays.
    reaches(&up.closed, 4, "idle connections beyond the limit closed").await;
    assert_eq!(metric_settles(admin, open, 2).await, 2);
    in_turn(&format!("http://{}/x", gw.proxy_addrs[0]), 3).await;
    assert_eq!(
        metric(admin, opened).await,
        6,
        "the kept ones served, none opened"
    );
    assert_eq!(up.accepted.load(SeqCst), 6);
}

#[tokio::test]
async fn metrics_count_an_h2c_connection_open_until_it_closes() {
    let up = counting(4).await;
    let pool = "    protocol: http2\n    idle_timeout: 300ms\n";
    let yaml = pool_config(up.addr, pool).replace("address: \"off\"", "address: 127.0.0.1:0");
    let gw = tracegate(&yaml).await;
    let admin = gw.admin_addr.unwrap();
    let opened = "tracegate_upstream_connections_opened_total{upstream=\"app\"}";
    let open = "tracegate_upstream_connections_open{upstream=\"app\"}";
    gets(&format!("http://{}/hold", gw.proxy_addrs[0]), 4).await;
    assert_eq!(
        metric(admin, opened).await,
        1,
        "one connection for four streams"
    );
    assert_eq!(up.closed.load(SeqCst), 0);
    assert_eq!(metric(admin, open).await, 1);
    reaches(&up.closed, 1, "the idle connection closed").await;
    assert_eq!(
        metric_settles(admin, open, 0).await,
        0,
        "counted closed with it"
    );
    assert_eq!(metric(admin, opened).await, 1);
}

/// Answers one request per connection with a keep-alive response, then closes the
/// connection without saying so (as an upstream whose keep-alive timeout is shorter
/// than the proxy's does).
async fn one_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            a.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closed_costs_no_request() {
    let (addr, accepted) = one_per_connection().await;
    let gw = tracegate(&pool_config(addr, "    retries: 0\n")).await;
    let url = format!("http://{}/x", gw.proxy_addrs[0]);
    let client = h1_client();
    for _ in 0..20 {
        let r = get(&client, &url, &[]).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        // POST cannot be retried by the proxy: it must never go out on a dead connection.
        let post = Request::post(&url)
            .body(body_of(Full::new(Bytes::from_static(b"data"))))
            .unwrap();
        assert_eq!(send(&client, post).await.status, 200);
    }
    assert_eq!(accepted.load(SeqCst), 40, "one connection per request");
}

#[tokio::test]
async fn h2c_requests_share_one_connection_in_turn_and_at_once() {
    // Eight requests held at the upstream until all eight are there: all on one connection.
    let up = counting(8).await;
    let gw = tracegate(&pool_config(up.addr, "    protocol: http2\n")).await;
    gets(&format!("http://{}/hold", gw.proxy_addrs[0]), 8).await;
    in_turn(&format!("http://{}/x", gw.proxy_addrs[0]), 10).await;
    assert_eq!(up.accepted.load(SeqCst), 1, "one HTTP/2 connection for all");
    assert_eq!(up.closed.load(SeqCst), 0);
}

#[tokio::test]
async fn an_idle_h2c_connection_closes_after_idle_timeout() {
    let up = counting(1).await;
    let pool = "    protocol: http2\n    idle_timeout: 200ms\n";
    let gw = tracegate(&pool_config(up.addr, pool)).await;
    let url = format!("http://{}/x", gw.proxy_addrs[0]);
    in_turn(&url, 3).await;
    reaches(&up.closed, 1, "the idle connection closed").await;
    in_turn(&url, 3).await;
    assert_eq!(
        up.accepted.load(SeqCst),
        2,
        "the next requests connected again"
    );
}

#[tokio::test]
async fn h2c_with_max_idle_per_endpoint_zero_connects_per_request() {
    let up = counting(1).await;
    let pool = "    protocol: http2\n    max_idle_per_endpoint: 0\n";
    let gw = tracegate(&pool_config(up.addr, pool)).await;
    in_turn(&format!("http://{}/x", gw.proxy_addrs[0]), 4).await;
    assert_eq!(up.accepted.load(SeqCst), 4, "a new connection per request");
    reaches(&up.closed, 4, "connections closed after their request").await;
}

/// An h2c upstream that ends each connection (GOAWAY) once it has answered one request.
async fn h2c_one_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            a.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let answered = Arc::new(tokio::sync::Notify::new());
                let notify = answered.clone();
                let svc = service_fn(move |_: Request<Incoming>| {
                    notify.notify_one();
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    () = answered.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_h2c_connection_the_upstream_ended_is_replaced_without_losing_a_request() {
    let (addr, accepted) = h2c_one_per_connection().await;
    let pool = "    protocol: http2\n    retries: 0\n";
    let gw = tracegate(&pool_config(addr, pool)).await;
    let url = format!("http://{}/x", gw.proxy_addrs[0]);
    let client = h1_client();
    for i in 0..10 {
        // POST cannot be retried by the proxy: it must never go to an ended connection.
        let post = Request::post(&url)
            .body(body_of(Full::new(Bytes::from_static(b"data"))))
            .unwrap();
        let r = send(&client, post).await;
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
    }
    // A graceful GOAWAY first announces the end (the last stream id left open), so a
    // request may still be taken before the final one: fewer than 10 connections, but
    // the ended ones were replaced.
    let n = accepted.load(SeqCst);
    assert!((2..=10).contains(&n), "{n} connections for 10 requests");
}

#[tokio::test]
async fn requests_waiting_on_a_failed_h2_connection_attempt_fail_with_it() {
    // A TLS endpoint that accepts TCP and never answers the handshake: each attempt takes
    // the whole connect_timeout.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            a.fetch_add(1, SeqCst);
            held.push(s);
        }
    });
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"https://{addr}\"]\n    protocol: http2\n    connect_timeout: 1s\n    retries: 0\nroutes:\n  - upstream: app\nexport:\n  protocol: none\n"
    );
    let gw = tracegate(&yaml).await;
    let client = h1_client();
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, url) = (client.clone(), format!("http://{}/x", gw.proxy_addrs[0]));
        all.spawn(async move { get(&client, &url, &[]).await });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 504);
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(body.contains("connect_timeout"), "{body}");
    }
    assert_eq!(
        accepted.load(SeqCst),
        1,
        "the requests that waited on the attempt shared its failure"
    );
    // TCP was accepted, TLS never finished: no connection was opened.
    let opened = "tracegate_upstream_connections_opened_total{upstream=\"app\"}";
    assert_eq!(metric(gw.admin_addr.unwrap(), opened).await, 0);
}
