//! Two workers (src/workers.rs): each accepted connection goes to the worker with the fewest
//! open and is served there to its end, with upstream connections of that worker's own.
//! Seen from a real client (a connection per client), a real upstream counting the
//! connections it accepts, the admin port's per-worker gauge, and the OTLP receiver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::sync::atomic::Ordering::SeqCst;

use support::*;
use tracegate::config::{Env, load};
use tracegate::gateway::Gateway;
use tracegate::workers::Workers;

async fn two_workers(yaml: &str) -> Gateway {
    let settings = load(yaml, "test.yaml", &Env::default()).unwrap_or_else(|e| panic!("{e}"));
    Gateway::start_on(settings, Workers::start(2).unwrap())
        .await
        .unwrap()
}

/// The per-worker gauge's value for `worker`.
async fn open_on(admin: std::net::SocketAddr, worker: usize) -> Option<i64> {
    metric(
        admin,
        &format!("tracegate_worker_connections{{worker=\"{worker}\"}}"),
    )
    .await
}

#[tokio::test]
async fn each_worker_serves_its_connections_with_upstream_connections_of_its_own() {
    let up = upstream().await;
    let collector = grpc_collector().await;
    let gw = two_workers(&config(up.addr, &grpc_export(collector.addr))).await;
    let admin = gw.admin_addr.unwrap();
    let url = format!("http://{}/ok", gw.proxy_addrs[0]);
    // Two clients, a connection each: the first goes to worker 0, the second to worker 1
    // (the one with fewer open).
    let (a, b) = (h1_client(), h1_client());
    let mut traces = Vec::new();
    for client in [&a, &b] {
        let r = get(client, &url, &[]).await;
        assert_eq!(r.status, 200);
        traces.push(r.headers["x-trace-id"].to_str().unwrap().to_string());
    }
    assert_eq!(
        open_on(admin, 0).await,
        Some(1),
        "one connection on worker 0"
    );
    assert_eq!(
        open_on(admin, 1).await,
        Some(1),
        "one connection on worker 1"
    );
    assert_eq!(
        up.accepted.load(SeqCst),
        2,
        "the second worker's request found no idle connection of its own and opened one"
    );
    // In turn, many more on both: each worker reuses its own upstream connection.
    for _ in 0..10 {
        for client in [&a, &b] {
            let r = get(client, &url, &[]).await;
            assert_eq!(r.status, 200);
            assert_eq!(&r.body[..], b"ok");
        }
    }
    assert_eq!(up.accepted.load(SeqCst), 2, "no upstream connection more");
    assert_eq!(
        metric(
            admin,
            "tracegate_upstream_connections_open{upstream=\"app\"}"
        )
        .await,
        Some(2)
    );
    // Both workers' exchanges are exported.
    for t in &traces {
        let server = server_span(&collector, t).await;
        assert_eq!(
            server.attr("http.response.status_code").as_deref(),
            Some("200")
        );
    }
    // A connection that ends leaves its worker's count.
    drop(a);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while open_on(admin, 0).await != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker 0's count fell"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(open_on(admin, 1).await, Some(1));
    assert_eq!(metric(admin, "tracegate_active_connections").await, Some(1));
}

#[tokio::test]
async fn http2_connections_are_handed_to_workers_too() {
    let up = upstream().await;
    let gw = two_workers(&config(up.addr, "export:\n  protocol: none\n")).await;
    let admin = gw.admin_addr.unwrap();
    let url = format!("http://{}/api/7", gw.proxy_addrs[0]);
    let (a, b) = (h2c_client(), h2c_client());
    // Requests at once on both connections, each several streams at a time.
    let mut all = tokio::task::JoinSet::new();
    for client in [&a, &b] {
        for _ in 0..8 {
            let (client, url) = (client.clone(), url.clone());
            all.spawn(async move { get(&client, &url, &[]).await });
        }
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.headers.contains_key("x-trace-id"));
    }
    assert_eq!(open_on(admin, 0).await, Some(1));
    assert_eq!(open_on(admin, 1).await, Some(1));
    assert_eq!(up.seen.len(), 16, "every request reached the upstream");
}

#[tokio::test]
async fn a_request_in_flight_on_the_second_worker_finishes_before_shutdown_completes() {
    let up = upstream().await;
    let yaml = config(up.addr, "export:\n  protocol: none\n")
        + "shutdown:\n  drain_delay: 0s\n  grace_period: 10s\n";
    let gw = two_workers(&yaml).await;
    let admin = gw.admin_addr.unwrap();
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let a = h1_client();
    assert_eq!(get(&a, &format!("{base}/ok"), &[]).await.status, 200);
    // The second connection, on worker 1, asks for an answer 300 ms late.
    let slow = tokio::spawn(async move {
        let b = h1_client();
        get(&b, &format!("{base}/slow/300"), &[]).await
    });
    let seen = up.seen.wait_for(2).await;
    assert_eq!(seen[1].path, "/slow/300");
    assert_eq!(
        open_on(admin, 1).await,
        Some(1),
        "the slow request is on worker 1"
    );
    gw.shutdown();
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"slow ok");
    tokio::time::timeout(PATIENCE, gw.wait())
        .await
        .expect("shutdown completed once the request had its answer");
}

#[tokio::test]
async fn tls_connections_are_handshaken_and_served_on_the_worker_they_are_handed_to() {
    let pki = pki::Pki::new("workers");
    let leaf = pki.server("a", &["a.test"]);
    let up = upstream().await;
    let yaml = config(up.addr, "export:\n  protocol: none\n").replacen(
        "listeners:\n  - address: 127.0.0.1:0\n",
        &format!(
            "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: \"{}\"\n          key: \"{}\"\n",
            leaf.cert.display(),
            leaf.key.display()
        ),
        1,
    );
    let gw = two_workers(&yaml).await;
    let admin = gw.admin_addr.unwrap();
    let addr = gw.proxy_addrs[0].to_string();
    let versions = &[&rustls::version::TLS13];
    let config = |alpn: &[u8]| pki::client_config(&pki.ca, &[alpn], versions, None);
    // Both handshakes done before either request: one connection on each worker.
    let first = pki::connect(&addr, "a.test", config(b"http/1.1"))
        .await
        .unwrap();
    let second = pki::connect(&addr, "a.test", config(b"h2")).await.unwrap();
    assert_eq!(second.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(open_on(admin, 0).await, Some(1));
    assert_eq!(open_on(admin, 1).await, Some(1));
    let (one, two) = tokio::join!(
        pki::request(first, false, "/api/1", &[]),
        pki::request(second, true, "/api/2", &[]),
    );
    for (status, headers, body) in [one.unwrap(), two.unwrap()] {
        assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
        assert!(headers.contains_key("x-trace-id"));
    }
    assert_eq!(up.seen.len(), 2);
}

/// One request on a connection of its own, closed after the answer; the answer's status.
async fn closing_request(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut answer))
        .await
        .expect("the answer and the close in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn connections_one_after_the_other_go_round_the_workers() {
    let up = upstream().await;
    let gw = two_workers(&config(up.addr, "export:\n  protocol: none\n")).await;
    let admin = gw.admin_addr.unwrap();
    for _ in 0..4 {
        assert_eq!(closing_request(gw.proxy_addrs[0]).await, "HTTP/1.1 200 OK");
        // The connection is over on tracegate's side too before the next one comes.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while metric(admin, "tracegate_active_connections").await != Some(0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    // Each worker served two of the four, each on its own upstream connection (with every
    // connection on worker 0, the upstream would have accepted one).
    assert_eq!(up.accepted.load(SeqCst), 2);
    assert_eq!(up.seen.len(), 4);
}
