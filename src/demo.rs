//! `tracegate demo`: a built-in echo upstream and tracegate in front of it, with no
//! collector needed. Exports over OTLP as well when `OTEL_EXPORTER_OTLP_*` is set.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{ConfigErrors, Env, Settings, load};

/// Headers the echo never shows back.
const HIDDEN: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Answers every request with JSON describing what arrived: method, path, headers (so the
/// `traceparent` tracegate sent is visible) and the body size. Query parameters shape the
/// answer, to try errors and slow requests: `status=503` (100-599), `delay_ms=300` (at most
/// 60 s).
pub async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let param = |name: &str| {
        parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
        })
    };
    let status = param("status")
        .filter(|s| (100..=599).contains(s))
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::OK);
    if let Some(ms) = param("delay_ms") {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let size = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            let shown = if HIDDEN.contains(&k.as_str()) {
                "REDACTED".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_string(), serde_json::Value::String(shown))
        })
        .collect();
    let body = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": size,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The answer of the echo's `--fixed` mode.
pub const FIXED_BODY: &str = "{\"status\":\"ok\"}\n";

/// The same small JSON body for every request, whatever arrived: an upstream for load
/// tests whose cost per request does not depend on the headers a proxy adds. [`echo`]
/// serialises every header it receives, so behind a proxy that adds five (`traceparent`,
/// `x-request-id`, `x-forwarded-*`) it works ~2.5x as hard and answers 2.5x the bytes as
/// behind one that adds none, and the load generator sharing its core pays for it.
pub async fn fixed(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the request's body (if any) so that the connection stays usable.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(FIXED_BODY.as_bytes())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Serves the echo upstream on `listener` until the process ends: [`echo`], or [`fixed`]
/// when `fixed` is set.
pub async fn serve_echo(listener: TcpListener, fixed: bool) {
    let builder = auto::Builder::new(TokioExecutor::new());
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let service = service_fn(move |req| async move {
            if fixed {
                self::fixed(req).await
            } else {
                echo(req).await
            }
        });
        let c = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = c.await;
        });
    }
}

/// The demo's config: everything to the echo upstream; exports only when OTEL_* says so.
pub fn settings(
    listen: &str,
    admin: &str,
    echo: SocketAddr,
    env: &Env,
) -> Result<Settings, ConfigErrors> {
    let export_set = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| env.get(v).is_some());
    let yaml = format!(
        "listeners:\n  - address: \"{listen}\"\nadmin:\n  address: \"{admin}\"\nupstreams:\n  - name: echo\n    endpoints: [\"http://{echo}\"]\nroutes:\n  - name: /api/*\n    match: {{ path_prefix: /api }}\n    upstream: echo\n  - name: /*\n    upstream: echo\ntracing:\n  service_name: tracegate-demo\n{}",
        if export_set {
            ""
        } else {
            "export:\n  protocol: none\n"
        }
    );
    load(&yaml, "demo", env)
}
