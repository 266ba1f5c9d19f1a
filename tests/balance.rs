//! Upstream resilience through real sockets: least-outstanding balancing, passive ejection
//! of a failing endpoint, active health checks, DNS names resolved to addresses, and the
//! retry budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

fn two_endpoints(a: &str, b: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"{a}\", \"{b}\"]\n{extra}routes:\n  - upstream: app\nexport:\n  protocol: none\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    let a = upstream().await;
    let b = upstream().await;
    let gw = tracegate(&two_endpoints(
        &format!("http://{}", a.addr),
        &format!("http://{}", b.addr),
        "    balance: least_request\n",
    ))
    .await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let slow = tokio::spawn({
        let url = format!("{base}/slow/1500");
        async move { get(&h1_client(), &url, &[]).await }
    });
    // Which endpoint holds the slow request?
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let busy = loop {
        if a.seen.len() == 1 {
            break &a;
        }
        if b.seen.len() == 1 {
            break &b;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let client = h1_client();
    for _ in 0..8 {
        assert_eq!(get(&client, &format!("{base}/ok"), &[]).await.status, 200);
    }
    assert_eq!(busy.seen.len(), 1, "no request joined the busy endpoint");
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected() {
    let live = upstream().await;
    let dead = refused_addr().await;
    let gw = tracegate(&two_endpoints(
        &format!("http://{dead}"),
        &format!("http://{}", live.addr),
        "    retries: 0\n    outlier:\n      consecutive_failures: 2\n      ejection_time: 1m\n      max_ejected_percent: 50\n",
    ))
    .await;
    let url = format!("http://{}/ok", gw.proxy_addrs[0]);
    let client = h1_client();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&client, &url, &[]).await.status.as_u16());
    }
    // Round robin sends every other request to the dead endpoint until its second failure.
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses[4..].iter().all(|s| *s == 200), "{statuses:?}");
}

/// A server whose `/healthz` answers 503 until `healthy` is set; anything else gets 200
/// with `name` as the body.
async fn flappy(name: &'static str, healthy: Arc<AtomicBool>) -> (SocketAddr, Arc<Log<String>>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Log<String>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (healthy, seen) = (healthy.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    seen.push(path.clone());
                    let ok = path != "/healthz" || healthy.load(Ordering::SeqCst);
                    let mut r = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(name.as_bytes()),
                    ));
                    if !ok {
                        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_an_endpoint_out_and_back() {
    let a_ok = Arc::new(AtomicBool::new(true));
    let b_ok = Arc::new(AtomicBool::new(false));
    let (a, a_seen) = flappy("a", a_ok).await;
    let (b, b_seen) = flappy("b", b_ok.clone()).await;
    let gw = tracegate(&two_endpoints(
        &format!("http://{a}"),
        &format!("http://{b}"),
        "    health_check:\n      path: /healthz\n      interval: 50ms\n      timeout: 1s\n      unhealthy_threshold: 2\n      healthy_threshold: 2\n",
    ))
    .await;
    let url = format!("http://{}/work", gw.proxy_addrs[0]);
    let client = h1_client();
    // Both are probed; b fails its probes and is taken out.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while b_seen.all().iter().filter(|p| *p == "/healthz").count() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "b was not probed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = b_seen.all().iter().filter(|p| *p == "/work").count();
    for _ in 0..10 {
        let r = get(&client, &url, &[]).await;
        assert_eq!(&r.body[..], b"a");
    }
    assert_eq!(
        b_seen.all().iter().filter(|p| *p == "/work").count(),
        before,
        "an unhealthy endpoint got traffic"
    );
    assert!(a_seen.all().iter().any(|p| p == "/healthz"));

    // b recovers: after two passed probes it gets traffic again.
    b_ok.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = get(&client, &url, &[]).await;
        if &r.body[..] == b"b" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_names_become_addresses() {
    let app = upstream().await;
    let collector = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://localhost:{}\"]\n    dns_refresh: 100ms\nroutes:\n  - upstream: app\n{}",
        app.addr.port(),
        grpc_export(collector.addr)
    );
    let gw = tracegate(&yaml).await;
    let url = format!("http://{}/ok", gw.proxy_addrs[0]);
    let client = h1_client();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = get(&client, &url, &[]).await;
        assert_eq!(r.status, 200);
        let trace_id = r.headers["x-trace-id"].to_str().unwrap().to_string();
        let spans = loop {
            let spans = collector.spans.all();
            if spans
                .iter()
                .any(|s| s.trace_id() == trace_id && s.kind() == 3)
            {
                break spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The attempt that answered (with IPv6 `localhost`, an earlier one may have failed).
        let answered = spans
            .iter()
            .find(|s| {
                s.trace_id() == trace_id
                    && s.kind() == 3
                    && s.attr("http.response.status_code").as_deref() == Some("200")
            })
            .unwrap();
        assert_eq!(
            answered.attr("server.address").as_deref(),
            Some("localhost")
        );
        if answered.attr("network.peer.address").as_deref() == Some("127.0.0.1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "localhost was not resolved: {:?}",
            answered.attr("network.peer.address")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_retries() {
    let live = upstream().await;
    let dead = refused_addr().await;
    let no_ejection = "    outlier:\n      consecutive_failures: 0\n";
    // Default budget: the retry goes to the live endpoint, every request succeeds.
    let gw = tracegate(&two_endpoints(
        &format!("http://{dead}"),
        &format!("http://{}", live.addr),
        no_ejection,
    ))
    .await;
    let url = format!("http://{}/ok", gw.proxy_addrs[0]);
    let client = h1_client();
    for _ in 0..6 {
        assert_eq!(get(&client, &url, &[]).await.status, 200);
    }
    // An empty budget: a request whose first attempt failed is not retried.
    let gw = tracegate(&two_endpoints(
        &format!("http://{dead}"),
        &format!("http://{}", live.addr),
        &format!("{no_ejection}    retry_budget:\n      percent: 0\n      min_concurrency: 0\n"),
    ))
    .await;
    let url = format!("http://{}/ok", gw.proxy_addrs[0]);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&client, &url, &[]).await.status.as_u16());
    }
    assert_eq!(statuses, [502, 200, 502, 200, 502, 200]);
}
