//! /metrics through real sockets: RED counts after known traffic, upstream errors by type,
//! exemplars naming traces the OTLP receiver received, and content negotiation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use support::*;

#[tokio::test]
async fn red_metrics_match_traffic_and_exemplars_name_exported_traces() {
    let up = upstream().await;
    let dead = refused_addr().await;
    let col = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\n  - name: dead\n    endpoints: [\"http://{dead}\"]\nroutes:\n  - name: /api/{{id}}\n    match: {{ path_prefix: /api }}\n    upstream: app\n  - name: /status/{{code}}\n    match: {{ path_prefix: /status }}\n    upstream: app\n  - name: /dead\n    match: {{ path: /dead }}\n    upstream: dead\nexport:\n  endpoint: \"http://{}\"\n  batch_delay: 20ms\n",
        up.addr, col.addr
    );
    let gw = tracegate(&yaml).await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let client = h1_client();
    for i in 0..3 {
        assert_eq!(
            get(&client, &format!("{base}/api/{i}"), &[]).await.status,
            200
        );
    }
    assert_eq!(
        get(&client, &format!("{base}/status/503"), &[])
            .await
            .status,
        503
    );
    assert_eq!(get(&client, &format!("{base}/dead"), &[]).await.status, 502);
    // Excluded paths make no metrics noise.
    get(&client, &format!("{base}/healthz"), &[]).await;

    // 3 x 2 + 2 + (1 SERVER + 2 CLIENT for /dead: the default single retry) = 11.
    let spans = col.spans.wait_for(11).await;
    let admin = gw.admin_addr.unwrap();
    // The receiver has the spans; the exporter counts them once its call has returned.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let r = loop {
        let r = get(
            &client,
            &format!("http://{admin}/metrics"),
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
        if String::from_utf8_lossy(&r.body)
            .lines()
            .any(|l| l == "tracegate_spans_exported_total 11")
            || tokio::time::Instant::now() > deadline
        {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = String::from_utf8(r.body.to_vec()).unwrap();
    let has = |line: &str| {
        assert!(
            om.lines().any(|l| l.starts_with(line)),
            "missing `{line}` in\n{om}"
        )
    };
    has(
        "tracegate_request_duration_seconds_count{route=\"/api/{id}\",method=\"GET\",status_class=\"2xx\"} 3",
    );
    has(
        "tracegate_request_duration_seconds_count{route=\"/status/{code}\",method=\"GET\",status_class=\"5xx\"} 1",
    );
    has(
        "tracegate_request_duration_seconds_count{route=\"/dead\",method=\"GET\",status_class=\"5xx\"} 1",
    );
    has(
        "tracegate_request_duration_seconds_bucket{le=\"+Inf\",route=\"/api/{id}\",method=\"GET\",status_class=\"2xx\"} 3",
    );
    // The default single retry makes two failed attempts.
    has("tracegate_upstream_errors_total{upstream=\"dead\",error_type=\"connection_refused\"} 2");
    has("tracegate_spans_exported_total 11");
    assert!(!om.contains("healthz"), "excluded paths are not counted");
    let total: u64 = om
        .lines()
        .filter(|l| l.starts_with("tracegate_request_duration_seconds_count"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 5, "every traced request counted once");
    let active: i64 = om
        .lines()
        .find_map(|l| l.strip_prefix("tracegate_active_connections "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(active >= 1, "the client's keep-alive connection is open");

    // Exemplars carry trace ids of exported traces.
    let exported: std::collections::HashSet<String> =
        spans.iter().map(Received::trace_id).collect();
    let exemplars: Vec<&str> = om
        .lines()
        .filter_map(|l| l.split("# {trace_id=\"").nth(1))
        .map(|s| &s[..32])
        .collect();
    assert!(!exemplars.is_empty(), "{om}");
    for t in exemplars {
        assert!(exported.contains(t), "exemplar {t} names no exported trace");
    }
    assert!(om.trim_end().ends_with("# EOF"));

    // Without asking for OpenMetrics: Prometheus text, no exemplars.
    let r = get(&client, &format!("http://{admin}/metrics"), &[]).await;
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(!text.contains("trace_id=") && !text.contains("# EOF"));
    assert!(text.contains("tracegate_request_duration_seconds_count{route=\"/api/{id}\",method=\"GET\",status_class=\"2xx\"} 3"));
}
