//! The admin listener (default 127.0.0.1:9901): `/healthz`, `/readyz`, `/metrics`, `/config`.

use std::convert::Infallible;
use std::fmt::Write as _;
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

use crate::access_log::AccessLogStats;
use crate::export::ExportStats;
use crate::reload::ReloadStats;
use crate::sample::SamplingStats;
use arc_swap::ArcSwap;

/// What the admin endpoints read.
pub struct AdminState {
    /// True once listeners are bound and the config is loaded; false while draining.
    pub ready: AtomicBool,
    pub export: Arc<ExportStats>,
    pub sampling: Arc<SamplingStats>,
    pub access_log: Arc<AccessLogStats>,
    /// The effective config, secrets redacted (replaced on reload).
    pub config_json: Arc<ArcSwap<String>>,
    pub reloads: Arc<ReloadStats>,
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
                    async move { Ok::<_, Infallible>(route(&state, &req)) }
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

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if state.ready.load(Relaxed) {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics(state)),
        "/config" => reply(
            StatusCode::OK,
            "application/json",
            state.config_json.load().as_str().to_string(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn metrics(state: &AdminState) -> String {
    let s = &state.export;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, values: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in values {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    counter(
        "tracegate_spans_produced_total",
        "Sampled spans offered to the export queue.",
        &[("", s.produced.load(Relaxed))],
    );
    counter(
        "tracegate_spans_exported_total",
        "Spans the collector accepted.",
        &[("", s.exported.load(Relaxed))],
    );
    counter(
        "tracegate_spans_dropped_total",
        "Spans dropped, by reason.",
        &[
            (
                "{reason=\"queue_full\"}",
                s.dropped_queue_full.load(Relaxed),
            ),
            (
                "{reason=\"queue_bytes\"}",
                s.dropped_queue_bytes.load(Relaxed),
            ),
            (
                "{reason=\"export_failed\"}",
                s.dropped_export_failed.load(Relaxed),
            ),
            ("{reason=\"shutdown\"}", s.dropped_shutdown.load(Relaxed)),
        ],
    );
    counter(
        "tracegate_export_failures_total",
        "Export requests that failed after retries.",
        &[("", s.failed_batches.load(Relaxed))],
    );
    counter(
        "tracegate_export_batches_total",
        "Export requests sent.",
        &[("", s.batches.load(Relaxed))],
    );
    counter(
        "tracegate_access_log_lines_total",
        "Access log lines, written or dropped (full queue, write error).",
        &[
            (
                "{result=\"written\"}",
                state.access_log.written.load(Relaxed),
            ),
            (
                "{result=\"dropped\"}",
                state.access_log.dropped.load(Relaxed),
            ),
        ],
    );
    counter(
        "tracegate_config_reloads_total",
        "Config reloads, applied or rejected.",
        &[
            ("{result=\"ok\"}", state.reloads.ok.load(Relaxed)),
            ("{result=\"failed\"}", state.reloads.failed.load(Relaxed)),
        ],
    );
    let _ = writeln!(
        out,
        "# HELP tracegate_sampling_decisions_total Sampling decisions by outcome and reason (error and slow: kept after the head dropped them).\n# TYPE tracegate_sampling_decisions_total counter"
    );
    for (sampled, reason, n) in state.sampling.snapshot() {
        let decision = if sampled { "sampled" } else { "dropped" };
        let _ = writeln!(
            out,
            "tracegate_sampling_decisions_total{{decision=\"{decision}\",reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP tracegate_export_queue_depth Exchanges waiting to be exported.\n# TYPE tracegate_export_queue_depth gauge\ntracegate_export_queue_depth {}",
        s.queue_len.load(Relaxed)
    );
    out
}
