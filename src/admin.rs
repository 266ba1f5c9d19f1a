//! The admin listener (default 127.0.0.1:9901): `/healthz`, `/readyz`, `/metrics`, `/config`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gateway::stopped;

use arc_swap::ArcSwap;

use crate::metrics;
use crate::viewer::{self, Filter, Viewer};

/// What the admin endpoints read.
pub struct AdminState {
    /// True once listeners are bound and the config is loaded; false while draining.
    pub ready: AtomicBool,
    pub exposition: crate::metrics::Exposition,
    /// The effective config, secrets redacted (replaced on reload).
    pub config_json: Arc<ArcSwap<String>>,
    pub viewer: Option<Viewer>,
    pub trace_link: Option<String>,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, &req).await) }
                });
                let c = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                tokio::spawn(async move {
                    let _ = c.await;
                });
            }
            () = stopped(&mut stop) => return,
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

async fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(viewer) = &state.viewer {
        if path == "/traces" || path == "/traces/" {
            return reply(StatusCode::OK, "text/html; charset=utf-8", viewer::PAGE);
        }
        if path == "/traces.json" {
            let mut list = viewer.list(Filter::parse(req.uri().query())).await;
            list["trace_link"] = serde_json::json!(state.trace_link);
            return reply(StatusCode::OK, "application/json", list.to_string());
        }
        if let Some(id) = path
            .strip_prefix("/traces/")
            .and_then(|p| p.strip_suffix(".json"))
        {
            return match viewer.trace(id.to_string()).await {
                Some(t) => reply(StatusCode::OK, "application/json", t.to_string()),
                None => reply(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    "{\"error\":\"trace not in the store\"}",
                ),
            };
        }
    }
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if state.ready.load(Relaxed) {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/metrics" => {
            // Prometheus asks for OpenMetrics (which carries the exemplars); others get text.
            let openmetrics = req
                .headers()
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            if openmetrics {
                reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics::openmetrics(&state.exposition),
                )
            } else {
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics::prometheus_text(&state.exposition),
                )
            }
        }
        "/config" => reply(
            StatusCode::OK,
            "application/json",
            state.config_json.load().as_str().to_string(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
