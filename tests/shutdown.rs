//! Graceful shutdown of the real binary under a bounded load loop: /readyz turns 503 while
//! it keeps serving for the drain delay; no accepted request fails; every served request's
//! spans are flushed; exit 0. A second signal exits at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;

/// Starts the binary on a config file.
fn start(yaml: &str, name: &str) -> Process {
    let dir =
        std::env::temp_dir().join(format!("tracegate-shutdown-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tracegate.yaml");
    std::fs::write(&path, yaml).unwrap();
    spawn_tracegate(&["run", "--config", path.to_str().unwrap()], &[])
}

/// Four concurrent request loops on `url` until `stop` (or `PATIENCE`); each returns its
/// served requests, its refused connections (never accepted: the listener was closed, not a
/// failed request) and its failures.
fn load_loops(
    url: String,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64, Vec<String>)>> {
    (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let client = h1_client();
                let (mut ok, mut refused, mut failed) = (0u64, 0u64, Vec::new());
                let started = tokio::time::Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < PATIENCE {
                    let req = Request::get(&url)
                        .body(body_of(Full::new(Bytes::new())))
                        .unwrap();
                    match client.request(req).await {
                        Ok(resp) if resp.status() == 200 => {
                            resp.into_body().collect().await.unwrap();
                            ok += 1;
                        }
                        Ok(resp) => failed.push(format!("status {}", resp.status())),
                        Err(e) if e.is_connect() => {
                            refused += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (ok, refused, failed)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_accepted_request_and_flushes_spans() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\nroutes:\n  - upstream: app\nexport:\n  endpoint: \"http://{}\"\n  batch_delay: 10m\nshutdown:\n  drain_delay: 1s\n  grace_period: 10s\n",
        up.addr, col.addr
    );
    let mut tg = start(&yaml, "load");
    let (proxy, admin) = (tg.proxy.clone(), tg.admin.clone().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let loops = load_loops(format!("http://{proxy}/slow/20"), &stop);
    up.seen.wait_for(20).await;
    tg.signal("TERM");

    // During the drain delay: not ready (as soon as the signal is handled), still serving.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ready = get(&h1_client(), &format!("http://{admin}/readyz"), &[]).await;
        if ready.status == 503 {
            break;
        }
        assert_eq!(ready.status, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = get(&h1_client(), &format!("http://{proxy}/slow/1"), &[]).await;
    assert_eq!(r.status, 200, "still serving while draining");
    assert_eq!(
        r.headers["connection"], "close",
        "clients are told to leave keep-alive connections"
    );
    let during = up.seen.len();
    up.seen.wait_for(during + 10).await;
    // Like a load balancer that saw /readyz fail (Kubernetes removes the endpoint): no new
    // work from now on; what is in flight must finish. (A connection the kernel completes
    // in the instant the listener closes would be reset: that race is why the drain exists.)
    stop.store(true, Ordering::Relaxed);

    let status = tg.exit().await;
    assert!(status.success(), "{status:?}");
    let mut served = 1; // the request sent during the drain, above
    for l in loops {
        let (ok, _refused, failed) = l.await.unwrap();
        assert!(failed.is_empty(), "accepted requests failed: {failed:?}");
        served += ok;
    }
    assert!(served > 20, "{served}");
    // Only the shutdown flush could deliver these (the batch delay is 10 minutes).
    let spans = col.spans.wait_for(2 * served as usize).await;
    assert_eq!(
        spans.len() as u64,
        2 * served,
        "every served request's two spans, no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let up = upstream().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\nroutes:\n  - upstream: app\nexport:\n  protocol: none\nshutdown:\n  drain_delay: 10m\n",
        up.addr
    );
    let mut tg = start(&yaml, "second");
    tg.signal("TERM");
    // The 10-minute drain has begun; a second signal must not wait for it.
    let first_wait =
        tokio::time::timeout(std::time::Duration::from_millis(300), tg.child.wait()).await;
    assert!(first_wait.is_err(), "still draining after the first signal");
    tg.signal("INT");
    assert_eq!(tg.exit().await.code(), Some(1), "exit at once, non-zero");
}

/// SIGTERM under load while the collector is black-holed (connections accepted, never
/// answered) or refuses connections: no accepted request fails, the process exits on its
/// own schedule (drain + grace period), not the exporter's 60 s timeout, and every span is
/// counted as exported or dropped in the last log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_collector_unreachable_still_exits_within_the_grace_period() {
    for (name, collector) in [
        ("black-holed", black_hole().await),
        ("refusing", refused_addr().await),
    ] {
        let up = upstream().await;
        let yaml = format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\nroutes:\n  - upstream: app\nexport:\n  endpoint: \"http://{collector}\"\n  batch_delay: 20ms\n  timeout: 60s\nshutdown:\n  drain_delay: 200ms\n  grace_period: 2s\n",
            up.addr
        );
        let mut tg = start(&yaml, name);
        let stop = Arc::new(AtomicBool::new(false));
        let loops = load_loops(format!("http://{}/slow/5", tg.proxy), &stop);
        up.seen.wait_for(50).await;
        tg.signal("TERM");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        // `exit` gives up after 20 s: far less than the exporter's 60 s timeout.
        let status = tg.exit().await;
        assert!(status.success(), "{name}: {status:?}");
        let mut served = 0;
        for l in loops {
            let (ok, _refused, failed) = l.await.unwrap();
            assert!(
                failed.is_empty(),
                "{name}: accepted requests failed: {failed:?}"
            );
            served += ok;
        }
        // The last line accounts for every span: produced = exported (none) + dropped.
        let log = tg.log.lock().unwrap().join("\n");
        let last = log
            .lines()
            .find(|l| l.contains("shutdown complete"))
            .unwrap_or_else(|| panic!("{name}: no shutdown line in {log}"));
        let produced = 2 * served;
        assert!(
            last.contains(&format!(
                "spans produced {produced}, exported 0, dropped {produced}"
            )),
            "{name}: {last}"
        );
    }
}

/// A client's keep-alive connection that sits idle after its request (the next one not
/// begun) is closed when the drain ends, not kept open until the grace period: the process
/// exits well inside its 10-minute grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_when_the_drain_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\nroutes:\n  - upstream: app\nexport:\n  protocol: none\nshutdown:\n  drain_delay: 0s\n  grace_period: 10m\n",
        up.addr
    );
    let mut tg = start(&yaml, "idle");
    let mut conn = tokio::net::TcpStream::connect(&tg.proxy).await.unwrap();
    // Two requests on the connection, so the second waits on a connection that has already
    // served one: the idle state between requests.
    for _ in 0..2 {
        conn.write_all(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let whole = read_response(&mut conn).await;
        let head = whole.split("\r\n\r\n").next().unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    tg.signal("TERM");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the idle connection is closed without an answer: {read:?} {rest:?}"
    );
    assert_eq!(tg.exit().await.code(), Some(0));
}
