//! Sampling through real sockets: consistency across chained tracegates, the rate limit,
//! per-route ratios, excluded paths, and errors/slow requests kept after the head said no.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// One catch-all route and an `/api` route, with the given tracing and route extras.
fn sampling_config(
    upstream: SocketAddr,
    collector: SocketAddr,
    tracing: &str,
    api_route: &str,
) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: app\n{api_route}  - upstream: app\ntracing:\n{tracing}export:\n  endpoint: \"http://{collector}\"\n  batch_delay: 20ms\n"
    )
}

fn flags_seen(seen: &Seen) -> String {
    seen.headers["traceparent"].to_str().unwrap()[53..55].to_string()
}

async fn metrics(admin: SocketAddr) -> String {
    let r = get(&h1_client(), &format!("http://{admin}/metrics"), &[]).await;
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[tokio::test]
async fn ratio_is_consistent_across_chained_tracegates() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let tracing = |name: &str| {
        format!("  service_name: {name}\n  sampling:\n    ratio: 0.5\n    parent_based: false\n")
    };
    let b = tracegate(&sampling_config(up.addr, col.addr, &tracing("b"), "")).await;
    let a = tracegate(&sampling_config(
        b.proxy_addrs[0],
        col.addr,
        &tracing("a"),
        "",
    ))
    .await;
    let client = h1_client();
    let mut traces = Vec::new();
    for _ in 0..200 {
        let r = get(&client, &format!("http://{}/x", a.proxy_addrs[0]), &[]).await;
        assert_eq!(r.status, 200);
        traces.push(r.headers["x-trace-id"].to_str().unwrap().to_string());
    }
    let produced = a.export_stats.produced.load(Relaxed) + b.export_stats.produced.load(Relaxed);
    let spans = col.spans.wait_for(produced as usize).await;
    let kept_by = |svc: &str| -> HashSet<String> {
        spans
            .iter()
            .filter(|s| s.resource_attr("service.name").as_deref() == Some(svc))
            .map(|s| s.trace_id())
            .collect()
    };
    let (kept_a, kept_b) = (kept_by("a"), kept_by("b"));
    assert_eq!(kept_a, kept_b, "every trace kept by both or by neither");
    assert!(
        (40..160).contains(&kept_a.len()),
        "about half of 200 kept: {}",
        kept_a.len()
    );
    for t in &traces {
        let upstream_flags: Vec<String> = up
            .seen
            .all()
            .iter()
            .filter(|s| s.headers["traceparent"].to_str().unwrap()[3..35] == *t)
            .map(flags_seen)
            .collect();
        let sampled = if kept_a.contains(t) { "03" } else { "02" };
        assert_eq!(
            upstream_flags,
            [sampled],
            "the upstream is told the same decision"
        );
    }
}

#[tokio::test]
async fn rate_limit_bounds_new_sampled_traces_but_not_continued_ones() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let cfg = sampling_config(
        up.addr,
        col.addr,
        "  sampling:\n    rate_limit: 5\n    keep_errors: false\n    slow_threshold: \"off\"\n",
        "",
    );
    let gw = tracegate(&cfg).await;
    let client = h1_client();
    let started = Instant::now();
    for _ in 0..100 {
        get(&client, &format!("http://{}/x", gw.proxy_addrs[0]), &[]).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sampled = up
        .seen
        .all()
        .iter()
        .filter(|s| flags_seen(s) == "03")
        .count();
    // Burst of 5, then 5 per second of the time the loop actually took.
    let allowed = 5.0 + 5.0 * elapsed;
    assert!(sampled >= 5, "the burst is allowed: {sampled}");
    assert!(
        sampled as f64 <= allowed + 1.0,
        "{sampled} sampled in {elapsed:.2}s at 5/s"
    );
    let text = metrics(gw.admin_addr.unwrap()).await;
    let limited = format!(
        "tracegate_sampling_decisions_total{{decision=\"dropped\",reason=\"rate_limited\"}} {}",
        100 - sampled
    );
    assert!(text.contains(&limited), "{text}");
    // Continued sampled traces are never limited.
    for i in 0..20 {
        let tp = format!("00-{}{i:02x}-{CALLER}-01", &TRACE[..30]);
        get(
            &client,
            &format!("http://{}/x", gw.proxy_addrs[0]),
            &[("traceparent", &tp)],
        )
        .await;
    }
    let continued = up.seen.all()[100..]
        .iter()
        .filter(|s| flags_seen(s) == "01")
        .count();
    assert_eq!(continued, 20);
}

#[tokio::test]
async fn errors_and_slow_requests_are_kept_when_the_head_dropped_them() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let cfg = sampling_config(
        up.addr,
        col.addr,
        "  sampling:\n    ratio: 0\n    slow_threshold: 200ms\n",
        "",
    );
    let gw = tracegate(&cfg).await;
    let client = h1_client();
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let fast = get(&client, &format!("{base}/fast"), &[]).await;
    let failed = get(&client, &format!("{base}/status/502"), &[]).await;
    let slow = get(&client, &format!("{base}/slow/400"), &[]).await;
    let not_found = get(&client, &format!("{base}/status/404"), &[]).await;
    for r in [&fast, &failed, &slow, &not_found] {
        assert!(r.headers.contains_key("x-trace-id"));
    }
    for s in up.seen.all() {
        assert_eq!(flags_seen(&s), "02", "the upstream was told: not sampled");
    }
    let id = |r: &Reply| r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(4).await;
    let (server, client_span) = pair(&spans, &id(&failed));
    assert_eq!(
        server.attr("tracegate.sampling.reason").as_deref(),
        Some("error")
    );
    assert_eq!(
        client_span
            .unwrap()
            .attr("tracegate.sampling.reason")
            .as_deref(),
        Some("error")
    );
    assert_eq!(
        server.span.flags & 1,
        1,
        "exported spans are marked sampled"
    );
    let (server, _) = pair(&spans, &id(&slow));
    assert_eq!(
        server.attr("tracegate.sampling.reason").as_deref(),
        Some("slow")
    );
    // Metrics are read after the spans arrived, so the fast requests' ends are counted too.
    let text = metrics(gw.admin_addr.unwrap()).await;
    assert!(
        text.contains(
            "tracegate_sampling_decisions_total{decision=\"sampled\",reason=\"error\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("tracegate_sampling_decisions_total{decision=\"sampled\",reason=\"slow\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "tracegate_sampling_decisions_total{decision=\"dropped\",reason=\"ratio\"} 4"
        ),
        "{text}"
    );
    // Fast 2xx and 4xx stay dropped: only the two kept exchanges' spans were exported.
    assert_eq!(gw.export_stats.produced.load(Relaxed), 4);
    let kept: HashSet<String> = col.spans.all().iter().map(Received::trace_id).collect();
    assert_eq!(kept, HashSet::from([id(&failed), id(&slow)]));
}

#[tokio::test]
async fn per_route_ratio_overrides_the_global_one() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let cfg = sampling_config(
        up.addr,
        col.addr,
        "  sampling:\n    ratio: 0\n    keep_errors: false\n",
        "    sampling: { ratio: 1.0 }\n",
    );
    let gw = tracegate(&cfg).await;
    let client = h1_client();
    let api = get(
        &client,
        &format!("http://{}/api/pay", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    get(&client, &format!("http://{}/other", gw.proxy_addrs[0]), &[]).await;
    let seen = up.seen.wait_for(2).await;
    assert_eq!(flags_seen(&seen[0]), "03");
    assert_eq!(flags_seen(&seen[1]), "02");
    let spans = col.spans.wait_for(2).await;
    let (server, _) = pair(&spans, api.headers["x-trace-id"].to_str().unwrap());
    assert_eq!(
        server.attr("tracegate.sampling.reason").as_deref(),
        Some("ratio")
    );
    assert_eq!(
        gw.export_stats.produced.load(Relaxed),
        2,
        "only the /api exchange"
    );
}

#[tokio::test]
async fn excluded_paths_and_routes_pass_trace_headers_untouched() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let cfg = sampling_config(
        up.addr,
        col.addr,
        "  service_name: x\n",
        "    sampling: { exclude: true }\n",
    );
    let gw = tracegate(&cfg).await;
    let client = h1_client();
    let tp = format!("00-{TRACE}-{CALLER}-01");
    for (i, path) in ["/healthz", "/metrics", "/api/excluded"].iter().enumerate() {
        let r = get(
            &client,
            &format!("http://{}{path}", gw.proxy_addrs[0]),
            &[
                ("traceparent", &tp),
                ("tracestate", "a=1 , b=2"),
                ("x-request-id", "rid"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.headers.get("x-trace-id").is_none(),
            "{path}: no trace, no X-Trace-Id"
        );
        assert_eq!(
            r.headers["x-request-id"], "rid",
            "{path}: correlation ids still work"
        );
        let seen = up.seen.wait_for(i + 1).await.remove(i);
        assert_eq!(
            seen.headers["traceparent"],
            tp.as_str(),
            "{path}: untouched"
        );
        assert_eq!(seen.headers["tracestate"], "a=1 , b=2", "{path}: untouched");
    }
    // A traced request afterwards is the only thing exported.
    let r = get(
        &client,
        &format!("http://{}/traced", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    let spans = col.spans.wait_for(2).await;
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id() == r.headers["x-trace-id"].to_str().unwrap())
    );
    let text = metrics(gw.admin_addr.unwrap()).await;
    assert!(
        text.contains(
            "tracegate_sampling_decisions_total{decision=\"sampled\",reason=\"ratio\"} 1"
        ),
        "{text}"
    );
}
