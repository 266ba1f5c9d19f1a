//! Span content through real sockets: header capture with redaction, query redaction, and
//! static attributes, checked on what the OTLP receiver decoded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use support::*;

#[tokio::test]
async fn secrets_never_reach_the_collector_even_when_all_headers_are_captured() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let dir = std::env::temp_dir().join(format!("tracegate-redaction-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let access_log = dir.join("access.log");
    let _ = std::fs::remove_file(&access_log);
    let yaml = format!(
        "access_log:\n  format: json\n  path: \"{}\"\nlisteners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\nroutes:\n  - name: checkout\n    match: {{ path_prefix: /checkout }}\n    upstream: app\n    attributes: {{ team: payments, tier: gold }}\n  - upstream: app\ntracing:\n  capture:\n    request_headers: [\"*\"]\n    response_headers: [x-request-id, content-length, x-trace-id]\n  attributes: {{ tier: bronze, deployment.environment.name: test }}\nexport:\n  endpoint: \"http://{}\"\n  batch_delay: 20ms\n",
        access_log.display(),
        up.addr,
        col.addr
    );
    let gw = tracegate(&yaml).await;
    let r = get(
        &h1_client(),
        &format!(
            "http://{}/checkout/1?order=7&X-Goog-Signature=s3cr3tsig&sig=abc123",
            gw.proxy_addrs[0]
        ),
        &[
            ("authorization", "Bearer topsecret-token"),
            ("proxy-authorization", "Basic cHJveHk6cGFzcw=="),
            ("cookie", "session=cookie-secret"),
            ("x-tenant", "blue"),
            ("x-tenant", "green"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    // The upstream still gets everything: redaction is about telemetry only.
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(seen.headers["authorization"], "Bearer topsecret-token");

    let spans = col.spans.wait_for(2).await;
    let secrets = [
        "topsecret-token",
        "cHJveHk6cGFzcw==",
        "cookie-secret",
        "s3cr3tsig",
        "abc123",
    ];
    let everything = format!("{spans:?}");
    for secret in secrets {
        assert!(
            !everything.contains(secret),
            "`{secret}` reached the collector"
        );
    }
    // Nor the trace viewer (list and trace, where captured headers are shown) ...
    let admin = gw.admin_addr.unwrap();
    let trace_id = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let viewer = loop {
        let t = get(
            &h1_client(),
            &format!("http://{admin}/traces/{trace_id}.json"),
            &[],
        )
        .await;
        if t.status == 200 {
            let list = get(&h1_client(), &format!("http://{admin}/traces.json"), &[]).await;
            break format!(
                "{}{}",
                String::from_utf8_lossy(&t.body),
                String::from_utf8_lossy(&list.body)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace never reached the viewer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        viewer.contains("http.request.header.authorization") && viewer.contains("REDACTED"),
        "{viewer}"
    );
    for secret in secrets {
        assert!(!viewer.contains(secret), "`{secret}` reached the viewer");
    }
    let (server, client) = pair(&spans, r.headers["x-trace-id"].to_str().unwrap());
    let client = client.unwrap();
    let array = |s: &Received, key: &str| -> Vec<String> {
        let kv = s
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .unwrap_or_else(|| panic!("no {key}"));
        let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::ArrayValue(a)) =
            kv.value.as_ref().unwrap().value.as_ref()
        else {
            panic!("{key} is not an array")
        };
        a.values
            .iter()
            .map(|v| match v.value.as_ref().unwrap() {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                    s.clone()
                }
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(
        array(&server, "http.request.header.authorization"),
        ["REDACTED"]
    );
    assert_eq!(array(&server, "http.request.header.cookie"), ["REDACTED"]);
    assert_eq!(
        array(&server, "http.request.header.x-tenant"),
        ["blue", "green"]
    );
    assert_eq!(array(&server, "http.response.header.content-length"), ["2"]);
    assert_eq!(
        server.attr("url.query").as_deref(),
        Some("order=7&X-Goog-Signature=REDACTED&sig=REDACTED")
    );
    assert!(
        client
            .attr("url.full")
            .unwrap()
            .ends_with("/checkout/1?order=7&X-Goog-Signature=REDACTED&sig=REDACTED")
    );
    // Static attributes: the route's win over the process-wide ones, on both spans.
    for s in [&server, &client] {
        assert_eq!(s.attr("team").as_deref(), Some("payments"));
        assert_eq!(s.attr("tier").as_deref(), Some("gold"));
        assert_eq!(
            s.attr("deployment.environment.name").as_deref(),
            Some("test")
        );
    }
    // Another route gets only the process-wide ones.
    let r = get(
        &h1_client(),
        &format!("http://{}/other", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    let spans = col.spans.wait_for(4).await;
    let (server, _) = pair(&spans, r.headers["x-trace-id"].to_str().unwrap());
    assert_eq!(server.attr("tier").as_deref(), Some("bronze"));
    assert_eq!(server.attr("team"), None);
    let mut response_keys: Vec<&str> = server
        .span
        .attributes
        .iter()
        .filter_map(|kv| kv.key.strip_prefix("http.response.header."))
        .collect();
    response_keys.sort_unstable();
    assert_eq!(
        response_keys,
        ["content-length", "x-request-id", "x-trace-id"],
        "only the listed response headers"
    );
    // The ones tracegate adds are recorded as the client gets them.
    assert_eq!(
        array(&server, "http.response.header.x-trace-id"),
        [r.headers["x-trace-id"].to_str().unwrap()]
    );
    // ... nor the access log, flushed on shutdown.
    gw.shutdown();
    gw.wait().await;
    let log = std::fs::read_to_string(&access_log).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "`{secret}` reached the access log");
    }
}

#[tokio::test]
async fn client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    let app = upstream().await;
    let collector = grpc_collector().await;
    let client = h1_client();
    for (trusted, expected) in [(true, "203.0.113.7"), (false, "127.0.0.1")] {
        let mut yaml = config(app.addr, &grpc_export(collector.addr));
        if trusted {
            yaml = yaml.replace("tracing:\n", "tracing:\n  trusted_proxies: [127.0.0.0/8]\n");
        }
        let gw = tracegate(&yaml).await;
        let r = get(
            &client,
            &format!("http://{}/ok", gw.proxy_addrs[0]),
            &[("x-forwarded-for", "203.0.113.7")],
        )
        .await;
        let trace_id = r.headers["x-trace-id"].to_str().unwrap().to_string();
        let server = server_span(&collector, &trace_id).await;
        assert_eq!(server.attr("client.address").as_deref(), Some(expected));
        assert_eq!(
            server.attr("network.peer.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_each_key_once(&server);
        // The upstream sees the chain with the peer appended, trusted or not.
        let seen = app.seen.all();
        assert_eq!(
            seen.last().unwrap().headers["x-forwarded-for"],
            "203.0.113.7, 127.0.0.1"
        );
        // The next request (the client's pooled connection) names no client: the peer is
        // the client again, and the attributes the connection's requests share are the same.
        let r = get(&client, &format!("http://{}/ok", gw.proxy_addrs[0]), &[]).await;
        let trace_id = r.headers["x-trace-id"].to_str().unwrap().to_string();
        let next = server_span(&collector, &trace_id).await;
        assert_eq!(next.attr("client.address").as_deref(), Some("127.0.0.1"));
        for key in ["network.peer.address", "network.peer.port", "url.scheme"] {
            assert_eq!(next.attr(key), server.attr(key), "{key}");
        }
        assert_each_key_once(&next);
    }
}

/// No attribute key is written twice in one span.
fn assert_each_key_once(span: &Received) {
    let mut keys: Vec<&str> = span
        .span
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    let all = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        all,
        "a key written twice: {:?}",
        span.span.attributes
    );
}

#[tokio::test]
async fn opt_in_attributes_are_recorded_only_when_asked_for() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = upstream().await;
    let collector = grpc_collector().await;
    const OPT_IN: [&str; 6] = [
        "client.port",
        "network.local.address",
        "network.local.port",
        "network.transport",
        "http.request.body.size",
        "http.response.body.size",
    ];
    for asked in [false, true] {
        let mut yaml = config(app.addr, &grpc_export(collector.addr));
        if asked {
            yaml = yaml.replace(
                "tracing:\n",
                &format!("tracing:\n  opt_in_attributes: [{}]\n", OPT_IN.join(", ")),
            );
        }
        let gw = tracegate(&yaml).await;
        let proxy = gw.proxy_addrs[0];
        // A raw client, so the test knows its own port.
        let mut conn = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let client_port = conn.local_addr().unwrap().port();
        conn.write_all(
            b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 11\r\nconnection: close\r\n\r\nhello world",
        )
        .await
        .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.unwrap();
        assert!(reply.ends_with("\r\n\r\n11"), "{reply}");
        let trace_id = reply
            .lines()
            .find_map(|l| l.strip_prefix("x-trace-id: "))
            .expect("x-trace-id")
            .to_string();
        let server = server_span(&collector, &trace_id).await;
        // Never recorded: `http` is the default protocol name, so it is left out.
        assert_eq!(server.attr("network.protocol.name"), None);
        assert_eq!(
            server.attr("network.peer.port"),
            Some(client_port.to_string())
        );
        if !asked {
            for key in OPT_IN {
                assert_eq!(server.attr(key), None, "{key} recorded by default");
            }
            continue;
        }
        assert_eq!(server.attr("client.port"), Some(client_port.to_string()));
        assert_eq!(
            server.attr("network.local.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            server.attr("network.local.port"),
            Some(proxy.port().to_string())
        );
        assert_eq!(server.attr("network.transport").as_deref(), Some("tcp"));
        assert_eq!(server.attr("http.request.body.size").as_deref(), Some("11"));
        assert_eq!(server.attr("http.response.body.size").as_deref(), Some("2"));
    }
}
