//! Upstream faults during a bounded, concurrent load loop against the real binary: an
//! upstream that closes keep-alive connections at random, resets mid-response, hangs, and
//! one that refuses. Every request gets the right answer (200, or 502 / 504 with an error
//! span), and afterwards no task, connection or file descriptor is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A raw HTTP/1.1 upstream that misbehaves by path: `/ok` answers and then closes the
/// connection one time in four without saying so; `/reset` sends a head and part of the
/// body, then resets the connection; `/hang` reads the request and never answers.
/// `open` counts its connections still open.
async fn chaos_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok((s, _)) = l.accept().await {
            n += 1;
            let count = count.clone();
            count.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                serve_chaos(s, n).await;
                count.fetch_sub(1, SeqCst);
            });
        }
    });
    (addr, open)
}

async fn serve_chaos(mut s: TcpStream, seed: u64) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut served = seed;
    loop {
        // One request head (the proxy sends GETs without bodies here).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        served += 1;
        if path.starts_with("/hang") {
            // Hold the connection until the proxy gives up on it.
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    return;
                }
            }
            return;
        } else if path.starts_with("/reset") {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                .await;
            let _ = s.write_all(&[b'r'; 1000]).await;
            // Linger 0 only makes the close a reset; it never blocks.
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            return; // dropped with linger 0: RST
        } else {
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
            if served % 4 == 0 {
                return; // closed without `Connection: close`
            }
        }
    }
}

/// What one request got: status (0: the connection closed before a response head), whether
/// its body arrived whole, and the trace id the request carried.
struct Outcome {
    path: &'static str,
    status: u16,
    body_ok: bool,
    trace_id: String,
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>,
>;

async fn one(client: &Client, proxy: &str, path: &'static str, n: u128) -> Outcome {
    let trace_id = format!("{:032x}", 0xfa17_0000_0000_u128 + n);
    let req = http::Request::get(format!("http://{proxy}{path}"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(body_of(http_body_util::Empty::new()))
        .unwrap();
    match tokio::time::timeout(PATIENCE, client.request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            assert_eq!(resp.headers()["x-trace-id"].to_str().unwrap(), trace_id);
            let body_ok = resp.into_body().collect().await.is_ok();
            Outcome {
                path,
                status,
                body_ok,
                trace_id,
            }
        }
        Ok(Err(_)) => Outcome {
            path,
            status: 0,
            body_ok: false,
            trace_id,
        },
        Err(_) => panic!("{path}: no answer in {PATIENCE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_upstreams_get_the_right_answers_and_leak_nothing() {
    let (chaos, chaos_open) = chaos_upstream().await;
    let dead = refused_addr().await;
    let col = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: chaos\n    endpoints: [\"http://{chaos}\"]\n    request_timeout: 300ms\n  - name: dead\n    endpoints: [\"http://{dead}\"]\nroutes:\n  - match: {{ path_prefix: /refused }}\n    upstream: dead\n  - upstream: chaos\nexport:\n  endpoint: \"http://{}\"\n  batch_delay: 20ms\n",
        col.addr
    );
    let dir =
        std::env::temp_dir().join(format!("tracegate-upstream-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tracegate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let tg = spawn_tracegate(&["run", "--config", path.to_str().unwrap()], &[]);
    let proxy = tg.proxy.clone();

    // Warm up with the same concurrency (the pool holds a few idle connections), baseline.
    let mut warm = Vec::new();
    for _ in 0..4 {
        let proxy = proxy.clone();
        warm.push(tokio::spawn(async move {
            let client = h1_client();
            for _ in 0..3 {
                one(&client, &proxy, "/ok", 0).await;
            }
        }));
    }
    for w in warm {
        w.await.unwrap();
    }
    let (tasks0, fds0) = tg.tasks_and_fds().await;

    // The load loop: four clients, each cycling through every fault.
    const MIX: [&str; 6] = ["/ok", "/reset", "/ok", "/hang", "/ok", "/refused"];
    let mut loops = Vec::new();
    for i in 0..4 {
        let proxy = proxy.clone();
        loops.push(tokio::spawn(async move {
            let client = h1_client();
            let mut out = Vec::new();
            for n in 0..30 {
                let id = (i * 1000 + n + 1) as u128;
                out.push(one(&client, &proxy, MIX[(i + n) % MIX.len()], id).await);
            }
            out
        }));
    }
    let mut outcomes = Vec::new();
    for l in loops {
        outcomes.extend(l.await.unwrap());
    }

    let mut failed_traces = Vec::new();
    let (mut ok_200, mut ok_502) = (0, 0);
    for o in &outcomes {
        match o.path {
            // A connection closed under a request is retried (a GET without a body) or,
            // if the close raced the answer, a 502; never anything else.
            "/ok" => match o.status {
                200 => {
                    assert!(o.body_ok);
                    ok_200 += 1
                }
                502 => ok_502 += 1,
                s => panic!("/ok answered {s}"),
            },
            "/hang" => assert_eq!(o.status, 504, "a hung upstream is a gateway timeout"),
            "/refused" => assert_eq!(o.status, 502, "a refused connection is a bad gateway"),
            // Reset before the proxy read the head: 502. After: the answer is cut short,
            // and the client sees an error (mid-body, or the connection closing before the
            // head was flushed), never a truncated 200 passed off as whole.
            "/reset" => assert!(
                (o.status == 200 && !o.body_ok) || o.status == 502 || o.status == 0,
                "/reset: status {} body whole {}",
                o.status,
                o.body_ok
            ),
            _ => unreachable!(),
        }
        if o.status != 200 || !o.body_ok {
            failed_traces.push((o.path, o.trace_id.clone()));
        }
    }
    assert!(ok_200 > ok_502, "{ok_200} ok, {ok_502} 502");

    // Every failed exchange has an error SERVER span with its reason.
    for (path, trace) in &failed_traces {
        let span = server_span(&col, trace).await;
        assert_eq!(span.status_code(), 2, "{path}: span not an error");
        assert!(span.attr("error.type").is_some(), "{path}: no error.type");
    }

    // Nothing left behind: hung and reset upstream connections are closed, tasks and fds
    // are back to the baseline (a leak would add one per fault: 80 of them).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (tasks, fds) = tg.tasks_and_fds().await;
        if tasks <= tasks0 + 4 && fds <= fds0 + 4 && chaos_open.load(SeqCst) <= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks {tasks0} -> {tasks}, fds {fds0} -> {fds}, upstream connections open {}",
            chaos_open.load(SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
