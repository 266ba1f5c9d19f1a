//! TLS through real handshakes with certificates generated per test: termination (ALPN,
//! SNI, versions, client certificates, certificate reload), `https://` upstreams (ALPN,
//! SNI override, client certificate, untrusted server), and export to a TLS collector over
//! gRPC and HTTP/protobuf.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::path::Path;
use std::sync::Arc;

use rustls::version::{TLS12, TLS13};
use support::pki::{self, Leaf, Pki};
use support::*;

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&TLS13, &TLS12];
const ONLY_12: &[&rustls::SupportedProtocolVersion] = &[&TLS12];
const ONLY_13: &[&rustls::SupportedProtocolVersion] = &[&TLS13];

fn certs_yaml(leaves: &[&Leaf]) -> String {
    leaves
        .iter()
        .map(|l| {
            format!(
                "        - cert: \"{}\"\n          key: \"{}\"\n",
                l.cert.display(),
                l.key.display()
            )
        })
        .collect()
}

/// The usual test config with its listener terminating TLS (`extra`: more `tls:` keys).
fn tls_config(
    upstream: std::net::SocketAddr,
    export: &str,
    leaves: &[&Leaf],
    extra: &str,
) -> String {
    config(upstream, export).replacen(
        "listeners:\n  - address: 127.0.0.1:0\n",
        &format!(
            "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n{}{extra}",
            certs_yaml(leaves)
        ),
        1,
    )
}

fn trace_id(h: &http::HeaderMap) -> String {
    h["x-trace-id"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_with_alpn_sni_and_both_versions() {
    let pki = Pki::new("sni");
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["b.test"]);
    let app = upstream().await;
    let collector = grpc_collector().await;
    let gw = tracegate(&tls_config(
        app.addr,
        &grpc_export(collector.addr),
        &[&a, &b],
        "",
    ))
    .await;
    let addr = gw.proxy_addrs[0].to_string();
    let client = |alpn: &[&[u8]], versions| pki::client_config(&pki.ca, alpn, versions, None);

    // SNI b.test gets b's certificate; ALPN picks h2; the request is HTTP/2 over TLS 1.3.
    let s = pki::connect(&addr, "b.test", client(&[b"h2", b"http/1.1"], BOTH))
        .await
        .unwrap();
    assert!(pki::peer_subject(&s).starts_with("CN=b.test"));
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, headers, body) = pki::request(s, true, "/api/1", &[]).await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    let span = server_span(&collector, &trace_id(&headers)).await;
    assert_eq!(span.attr("url.scheme").as_deref(), Some("https"));
    assert_eq!(span.attr("tls.protocol.version").as_deref(), Some("1.3"));
    assert_eq!(span.attr("network.protocol.version").as_deref(), Some("2"));
    assert_eq!(span.attr("server.port").as_deref(), Some("443"));
    let seen = app.seen.all();
    assert_eq!(seen.last().unwrap().headers["x-forwarded-proto"], "https");

    // SNI a.test gets a's; ALPN http/1.1 gives HTTP/1.1; TLS 1.2 is accepted by default.
    let s = pki::connect(&addr, "a.test", client(&[b"http/1.1"], ONLY_12))
        .await
        .unwrap();
    assert!(pki::peer_subject(&s).starts_with("CN=a.test"));
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (status, headers, _) = pki::request(s, false, "/api/2", &[]).await.unwrap();
    assert_eq!(status, 200);
    let span = server_span(&collector, &trace_id(&headers)).await;
    assert_eq!(span.attr("tls.protocol.version").as_deref(), Some("1.2"));
    assert_eq!(
        span.attr("network.protocol.version").as_deref(),
        Some("1.1")
    );

    // No SNI match: the first certificate is the default, which the client rejects.
    let err = pki::connect(&addr, "other.test", client(&[b"h2"], BOTH))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");

    // Cleartext on a TLS listener is not HTTP: no response, the connection is closed.
    let r = tokio::time::timeout(PATIENCE, reqwest_like_plain_get(&addr))
        .await
        .unwrap();
    assert!(
        r.is_err(),
        "a cleartext request on a TLS listener got {r:?}"
    );
}

/// A cleartext HTTP/1.1 request by hand.
async fn reqwest_like_plain_get(addr: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /api/1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    if text.starts_with("HTTP/1.1 200") {
        Ok(text)
    } else {
        Err(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls_1_2() {
    let pki = Pki::new("v13");
    let a = pki.server("a", &["a.test"]);
    let app = upstream().await;
    let gw = tracegate(&tls_config(
        app.addr,
        "export:\n  protocol: none\n",
        &[&a],
        "      min_version: \"1.3\"\n",
    ))
    .await;
    let addr = gw.proxy_addrs[0].to_string();
    let old = pki::client_config(&pki.ca, &[b"http/1.1"], ONLY_12, None);
    assert!(pki::connect(&addr, "a.test", old).await.is_err());
    let new = pki::client_config(&pki.ca, &[b"http/1.1"], ONLY_13, None);
    let s = pki::connect(&addr, "a.test", new).await.unwrap();
    assert_eq!(pki::request(s, false, "/ok", &[]).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_and_the_subject_recorded() {
    let pki = Pki::new("mtls");
    let other = Pki::new("mtls-other");
    let server = pki.server("server", &["a.test"]);
    let good = pki.client("good", "svc-a");
    let foreign = other.client("foreign", "intruder");
    let app = upstream().await;
    let collector = grpc_collector().await;
    let extra = format!(
        "      client_ca: \"{}\"\n      record_client_subject: true\n",
        pki.ca.display()
    );
    let gw = tracegate(&tls_config(
        app.addr,
        &grpc_export(collector.addr),
        &[&server],
        &extra,
    ))
    .await;
    let addr = gw.proxy_addrs[0].to_string();
    let cfg = |id: Option<&Leaf>| pki::client_config(&pki.ca, &[b"http/1.1"], BOTH, id);

    let s = pki::connect(&addr, "a.test", cfg(Some(&good)))
        .await
        .unwrap();
    let (status, headers, _) = pki::request(s, false, "/api/1", &[]).await.unwrap();
    assert_eq!(status, 200);
    let span = server_span(&collector, &trace_id(&headers)).await;
    assert_eq!(
        span.attr("tls.client.subject").as_deref(),
        Some("CN=svc-a,O=tracegate tests")
    );

    // Without a certificate, or with one from another CA: no request gets through (with
    // TLS 1.3 the server's refusal arrives after the client's side of the handshake).
    let before = app.seen.len();
    for id in [None, Some(&foreign)] {
        let outcome = match pki::connect(&addr, "a.test", cfg(id)).await {
            Err(_) => true,
            Ok(s) => pki::request(s, false, "/api/2", &[]).await.is_err(),
        };
        assert!(outcome, "a client without a valid certificate got through");
    }
    assert_eq!(app.seen.len(), before, "nothing reached the upstream");

    // `optional`: no certificate is fine, a foreign one is not.
    let extra = format!(
        "      client_ca: \"{}\"\n      client_auth: optional\n      record_client_subject: true\n",
        pki.ca.display()
    );
    let gw = tracegate(&tls_config(
        app.addr,
        &grpc_export(collector.addr),
        &[&server],
        &extra,
    ))
    .await;
    let addr = gw.proxy_addrs[0].to_string();
    let s = pki::connect(&addr, "a.test", cfg(None)).await.unwrap();
    let (status, headers, _) = pki::request(s, false, "/api/3", &[]).await.unwrap();
    assert_eq!(status, 200);
    let span = server_span(&collector, &trace_id(&headers)).await;
    assert_eq!(span.attr("tls.client.subject"), None);
    let refused = match pki::connect(&addr, "a.test", cfg(Some(&foreign))).await {
        Err(_) => true,
        Ok(s) => pki::request(s, false, "/api/4", &[]).await.is_err(),
    };
    assert!(refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_reload_without_dropping_connections() {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let pki = Pki::new("reload");
    let leaf = pki.server_cn("site", &["site.test"], "version one");
    let app = upstream().await;
    let dir = pki.dir.clone();
    let path = dir.join("tracegate.yaml");
    std::fs::write(
        &path,
        tls_config(app.addr, "export:\n  protocol: none\n", &[&leaf], ""),
    )
    .unwrap();
    let mut tg = spawn_tracegate(&["run", "--config", path.to_str().unwrap()], &[]);
    let addr = tg.proxy.clone();
    let cfg = || pki::client_config(&pki.ca, &[b"http/1.1"], BOTH, None);

    let s = pki::connect(&addr, "site.test", cfg()).await.unwrap();
    assert!(pki::peer_subject(&s).starts_with("CN=version one"));
    let (mut old, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::builder()
            .uri("/ok")
            .header("host", "site.test")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(old.send_request(get()).await.unwrap().status(), 200);

    // New files (written by rename, as cert-manager and ConfigMaps do).
    pki.server_cn("site", &["site.test"], "version two");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = pki::connect(&addr, "site.test", cfg()).await.unwrap();
        if pki::peer_subject(&s).starts_with("CN=version two") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The connection opened before still serves.
    assert_eq!(old.send_request(get()).await.unwrap().status(), 200);

    // A broken file is reported; the last good certificate stays.
    std::fs::write(&leaf.cert, "not a certificate").unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !tg
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("keeps its previous certificates"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken file was not reported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let s = pki::connect(&addr, "site.test", cfg()).await.unwrap();
    assert!(pki::peer_subject(&s).starts_with("CN=version two"));
    assert_eq!(pki::request(s, false, "/ok", &[]).await.unwrap().0, 200);

    tg.signal("TERM");
    assert!(tg.exit().await.success());
}

/// What a TLS upstream saw on a connection.
#[derive(Clone, Debug)]
struct TlsSeen {
    alpn: Option<Vec<u8>>,
    client_subject: Option<String>,
    version: http::Version,
    /// The connection's number, from 0 in the order accepted.
    connection: usize,
    /// The request target as it arrived (`:path` in HTTP/2).
    target: String,
}

/// An upstream over TLS with `leaf`, offering `h2` and `http/1.1` by ALPN (only
/// `http/1.1` when `h2` is false); requires client certificates from `client_ca` if given.
async fn tls_upstream(
    leaf: &Leaf,
    client_ca: Option<&Path>,
    h2: bool,
) -> (String, Arc<Log<TlsSeen>>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = pki::server_config(leaf, client_ca);
    if !h2 {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let log: Arc<Log<TlsSeen>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
                let client_subject = conn
                    .peer_certificates()
                    .and_then(|c| tracegate::tls::subject(&c[0]));
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    seen.push(TlsSeen {
                        alpn: alpn.clone(),
                        client_subject: client_subject.clone(),
                        version: req.version(),
                        connection,
                        target: req.uri().to_string(),
                    });
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"tls ok")),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_with_alpn_sni_override_and_client_certificate() {
    let server_pki = Pki::new("upstream");
    let client_pki = Pki::new("upstream-clients");
    let stranger = Pki::new("stranger");
    let leaf = server_pki.server("upstream", &["upstream.test"]);
    let identity = client_pki.client("tracegate", "tracegate");
    let (h2_addr, h2_seen) = tls_upstream(&leaf, Some(&client_pki.ca), true).await;
    let (h1_addr, h1_seen) = tls_upstream(&leaf, None, true).await;
    let (h1_only_addr, h1_only_seen) = tls_upstream(&leaf, None, false).await;
    let collector = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: secure\n    endpoints: [\"https://{h2_addr}\"]\n    protocol: auto\n    tls:\n      ca: \"{ca}\"\n      server_name: upstream.test\n      cert: \"{cert}\"\n      key: \"{key}\"\n  - name: h1\n    endpoints: [\"https://{h1_addr}\"]\n    tls:\n      ca: \"{ca}\"\n      server_name: upstream.test\n  - name: auto-h1\n    endpoints: [\"https://{h1_only_addr}\"]\n    protocol: auto\n    tls:\n      ca: \"{ca}\"\n      server_name: upstream.test\n  - name: untrusted\n    endpoints: [\"https://{h1_addr}\"]\n    retries: 0\n    tls:\n      ca: \"{stranger_ca}\"\n      server_name: upstream.test\n  - name: wrong-name\n    endpoints: [\"https://{h1_addr}\"]\n    retries: 0\n    tls:\n      ca: \"{ca}\"\nroutes:\n  - match: {{ path: /secure }}\n    upstream: secure\n  - match: {{ path: /h1 }}\n    upstream: h1\n  - match: {{ path: /auto-h1 }}\n    upstream: auto-h1\n  - match: {{ path: /untrusted }}\n    upstream: untrusted\n  - match: {{ path: /wrong-name }}\n    upstream: wrong-name\n{}",
        grpc_export(collector.addr),
        ca = server_pki.ca.display(),
        cert = identity.cert.display(),
        key = identity.key.display(),
        stranger_ca = stranger.ca.display(),
    );
    let gw = tracegate(&yaml).await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let client = h1_client();

    // ALPN chose h2; the upstream verified tracegate's client certificate.
    let r = get(&client, &format!("{base}/secure"), &[]).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"tls ok"[..]));
    let seen = h2_seen.all();
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen[0].version, http::Version::HTTP_2);
    assert_eq!(
        seen[0].client_subject.as_deref(),
        Some("CN=tracegate,O=tracegate tests")
    );
    let (_, client_span) = {
        server_span(&collector, &trace_id(&r.headers)).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let spans = collector.spans.all();
            let p = pair(&spans, &trace_id(&r.headers));
            if p.1.is_some() || tokio::time::Instant::now() > deadline {
                break p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let client_span = client_span.unwrap();
    assert_eq!(
        client_span.attr("url.full"),
        Some(format!("https://{h2_addr}/secure"))
    );

    // The h2 connection is shared: by the next requests, and by requests at once.
    for _ in 0..3 {
        assert_eq!(
            get(&client, &format!("{base}/secure"), &[]).await.status,
            200
        );
    }
    let mut at_once = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), format!("{base}/secure"));
        at_once.spawn(async move { get(&client, &url, &[]).await.status });
    }
    while let Some(status) = at_once.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let seen = h2_seen.all();
    assert_eq!(seen.len(), 12);
    assert!(
        seen.iter()
            .all(|s| s.connection == 0 && s.version == http::Version::HTTP_2),
        "one HTTP/2 connection for all: {seen:?}"
    );

    // protocol auto, a server that only offers http/1.1: HTTP/1.1, in origin-form, on a
    // kept connection.
    for _ in 0..3 {
        assert_eq!(
            get(&client, &format!("{base}/auto-h1?q=1"), &[])
                .await
                .status,
            200
        );
    }
    let seen = h1_only_seen.all();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(s.version, http::Version::HTTP_11);
        assert_eq!(s.target, "/auto-h1?q=1");
        assert_eq!(s.connection, 0, "the connection was kept: {seen:?}");
    }

    // protocol http1 (the default) offers no ALPN: the server's default, HTTP/1.1.
    let r = get(&client, &format!("{base}/h1"), &[]).await;
    assert_eq!(r.status, 200);
    let seen = h1_seen.all();
    assert_eq!(seen[0].alpn, None);
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(seen[0].client_subject, None);

    // An untrusted server certificate, or one for another name: 502 tls_handshake_failed.
    for path in ["/untrusted", "/wrong-name"] {
        let before = h1_seen.len();
        let r = get(&client, &format!("{base}{path}"), &[]).await;
        assert_eq!(r.status, 502, "{path}");
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(body.contains("tls_handshake_failed"), "{path}: {body}");
        assert_eq!(
            h1_seen.len(),
            before,
            "{path}: no request reached the upstream"
        );
        let span = server_span(&collector, &trace_id(&r.headers)).await;
        assert_eq!(
            span.attr("error.type").as_deref(),
            Some("tls_handshake_failed")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_to_a_tls_collector_over_grpc_and_http() {
    let pki = Pki::new("collector");
    let clients = Pki::new("collector-clients");
    let identity = pki.server("collector", &["collector.test"]);
    let ours = clients.client("exporter", "tracegate-exporter");
    let app = upstream().await;
    // Each collector requires a client certificate signed by `clients`.
    for grpc in [true, false] {
        let collector = if grpc {
            grpc_collector_tls(&identity, Some(&clients.ca)).await
        } else {
            http_collector_tls(&identity, Some(&clients.ca)).await
        };
        let export = format!(
            "export:\n  protocol: {}\n  endpoint: \"https://{}\"\n  batch_delay: 20ms\n  tls:\n    ca: \"{}\"\n    server_name: collector.test\n    cert: \"{}\"\n    key: \"{}\"\n",
            if grpc { "grpc" } else { "http/protobuf" },
            collector.addr,
            pki.ca.display(),
            ours.cert.display(),
            ours.key.display()
        );
        let gw = tracegate(&config(app.addr, &export)).await;
        let r = get(
            &h1_client(),
            &format!("http://{}/api/1", gw.proxy_addrs[0]),
            &[],
        )
        .await;
        assert_eq!(r.status, 200);
        let span = server_span(&collector, &trace_id(&r.headers)).await;
        assert_eq!(span.attr("http.route").as_deref(), Some("/api/{id}"));
        assert_eq!(gw.export_stats.dropped(), 0, "grpc: {grpc}");
    }
}
