//! Bodies stream both ways: a 1 GiB upload and a 256 MiB download pass through tracegate
//! while the whole process's peak memory stays far below the body size.
//! (Its own test binary, so no other test shares the process's memory.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use http::Request;
use http_body_util::BodyExt;
use support::*;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let client = h1_client();
    let before = peak_rss_kib();

    let req = Request::post(format!("http://{}/upload", gw.proxy_addrs[0]))
        .body(body_of(Repeat::new(GIB)))
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, GIB.to_string(), "the upstream received every byte");

    // The download is counted frame by frame, never held whole.
    let req = Request::get(format!(
        "http://{}/bytes/{}",
        gw.proxy_addrs[0],
        256u64 << 20
    ))
    .body(body_of(Repeat::new(0)))
    .unwrap();
    let resp = h2c_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, 256 << 20);
    let grown_mib = (peak_rss_kib() - before) / 1024;
    println!("peak RSS grew by {grown_mib} MiB while 1.25 GiB streamed through");
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");

    let spans = col.spans.wait_for(4).await;
    let upload = spans
        .iter()
        .find(|s| s.attr("url.path").as_deref() == Some("/upload"))
        .unwrap();
    assert_eq!(
        upload.attr("http.response.status_code").as_deref(),
        Some("200")
    );
}
