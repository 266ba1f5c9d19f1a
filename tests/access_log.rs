//! The access log through real sockets: one JSON line per request, with trace ids, redacted
//! query, body sizes and errors, flushed on shutdown; secrets never written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn one_json_line_per_request_flushed_on_shutdown() {
    let up = upstream().await;
    let dir = std::env::temp_dir().join(format!("tracegate-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    // Export is off: the access log does not depend on it.
    let yaml = config(
        up.addr,
        &format!(
            "export:\n  protocol: none\naccess_log:\n  format: json\n  path: \"{}\"\n",
            path.display()
        ),
    );
    let gw = tracegate(&yaml).await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let client = h1_client();

    let ok = get(
        &client,
        &format!("{base}/api/1?sig=s3cret&x=1"),
        &[
            ("authorization", "Bearer topsecret"),
            ("x-request-id", "rid-1"),
        ],
    )
    .await;
    let upload = send(
        &client,
        Request::post(format!("{base}/upload"))
            .body(body_of(Full::new(Bytes::from(vec![b'a'; 1000]))))
            .unwrap(),
    )
    .await;
    assert_eq!(upload.body, "1000");
    let missing = get(&client, &format!("{base}/nowhere"), &[]).await;
    let health = get(&client, &format!("{base}/healthz"), &[]).await;
    assert_eq!(
        (missing.status.as_u16(), health.status.as_u16()),
        (404, 404)
    );

    let admin = gw.admin_addr.unwrap();
    gw.shutdown();
    // The admin port serves until the shutdown sequence ends; read the counters first.
    let metrics = get(&client, &format!("http://{admin}/metrics"), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        metrics.contains("tracegate_access_log_lines_total{result=\"dropped\"} 0"),
        "{metrics}"
    );
    gw.wait().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("topsecret") && !text.contains("s3cret"),
        "{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    let by_path = |p: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().unwrap().starts_with(p))
            .unwrap()
            .clone()
    };

    let l = by_path("/api/1");
    assert_eq!(l["path"], "/api/1?sig=REDACTED&x=1");
    assert_eq!(l["trace_id"], ok.headers["x-trace-id"].to_str().unwrap());
    assert_eq!(l["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(l["request_id"], "rid-1");
    assert_eq!(l["route"], "/api/{id}");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_out"], 2);
    assert_eq!(l["upstream"], format!("http://{}", up.addr));
    assert_eq!(l["sampled"], true);
    assert!(l["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(l["time"].as_str().unwrap().ends_with('Z'));

    let l = by_path("/upload");
    assert_eq!(
        (l["bytes_in"].as_u64(), l["bytes_out"].as_u64()),
        (Some(1000), Some(4))
    );

    let l = by_path("/nowhere");
    assert_eq!(l["error_type"], "route_not_found");
    assert!(l["upstream"].is_null());

    let l = by_path("/healthz");
    assert!(
        l["trace_id"].is_null(),
        "excluded paths are logged but not traced"
    );
    assert_eq!(l["sampled"], false);
}
