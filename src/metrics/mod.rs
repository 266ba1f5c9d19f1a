//! Prometheus / OpenMetrics metrics for `/metrics` on the admin port.
//!
//! RED: `tracegate_request_duration_seconds{route, method, status_class}` (its `_count` is
//! the request count), with the trace id of a sampled request as exemplar so a latency
//! spike links to a trace; `tracegate_upstream_errors_total{upstream, error_type}`;
//! `tracegate_active_connections`. The counters kept elsewhere as atomics (exporter,
//! sampling, access log, reloads) are read at scrape time by a collector, so the whole
//! exposition is one valid OpenMetrics document. The duration histograms are tracegate's own
//! (`histogram`): the request path records them without a lock.

mod histogram;

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::access_log::AccessLogStats;
use crate::export::ExportStats;
use crate::limits::{DownstreamStats, Rejection};
use crate::reload::ReloadStats;
use crate::sample::SamplingStats;
use crate::upstream::ConnStats;

/// A label value that shares its string (route and upstream names) instead of copying it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Shared(pub Arc<str>);

impl EncodeLabelValue for Shared {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: Shared,
    pub error_type: &'static str,
}

const DURATION: &str = "tracegate_request_duration_seconds";
const DURATION_HELP: &str =
    "Downstream request duration, by route, method and status class; _count is the request count.";

/// The request path's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub durations: histogram::Family,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    no_route: Arc<str>,
    /// The histograms of requests no route matched (`route=""`).
    unrouted: RouteHistograms,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            durations: histogram::Family::default(),
            upstream_errors: Family::default(),
            no_route: Arc::from(""),
            unrouted: RouteHistograms::default(),
        }
    }
}

/// The method labels: the methods `span::known_method` names, then `_OTHER`.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "_OTHER",
];
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn method_index(m: &Method) -> usize {
    crate::span::known_method(m)
        .and_then(|known| METHODS.iter().position(|l| *l == known))
        .unwrap_or(METHODS.len() - 1)
}

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

/// The method as a bounded label: the known ones, else `_OTHER`.
pub fn method_label(m: &Method) -> &'static str {
    METHODS[method_index(m)]
}

pub fn status_class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}

/// One route's request-duration histograms by method and status class, each taken from
/// the family (which shares it) the first time it is used. Recording is then an index
/// instead of a lookup of the labels, route name included, under the family's lock. Built
/// with the route, per config version; the family keeps the counts across reloads.
#[derive(Debug, Default)]
pub struct RouteHistograms {
    cells: [[OnceLock<Arc<histogram::Histogram>>; CLASSES.len()]; METHODS.len()],
}

impl Metrics {
    /// Records one finished exchange; `trace_id` becomes the exemplar when sampled.
    /// `cached`: the histograms of `route`, when the request matched one.
    pub fn observe(
        &self,
        route: Option<&Arc<str>>,
        cached: Option<&RouteHistograms>,
        method: &Method,
        status: u16,
        duration: Duration,
        trace_id: Option<&[u8; 16]>,
    ) {
        let (m, c) = (method_index(method), class_index(status));
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let route_name = route.unwrap_or(&self.no_route);
        let find = || self.durations.get_or_create(route_name, m, c);
        let cells = match (route, cached) {
            (_, Some(cells)) => cells,
            (None, None) => &self.unrouted,
            // A route without its cache (not one of the router's): found every time.
            (Some(_), None) => return find().observe(nanos, trace_id),
        };
        cells.cells[m][c].get_or_init(find).observe(nanos, trace_id);
    }

    pub fn upstream_error(&self, upstream: &Arc<str>, error_type: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: Shared(upstream.clone()),
                error_type,
            })
            .inc();
    }
}

/// Everything `/metrics` reads.
#[derive(Debug)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub export: Arc<ExportStats>,
    pub sampling: Arc<SamplingStats>,
    pub access_log: Arc<AccessLogStats>,
    pub reloads: Arc<ReloadStats>,
    pub downstream: Arc<DownstreamStats>,
    pub upstream_conns: Arc<ConnStats>,
    pub workers: Arc<crate::workers::Workers>,
}

/// Reads the atomics kept by other modules at scrape time.
#[derive(Debug)]
struct Counters(Arc<Sources>);

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        if labels.is_empty() {
            ConstCounter::new(*v).encode(family)?;
            return Ok(());
        }
        let labels: Vec<(&str, &str)> = labels.to_vec();
        ConstCounter::new(*v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Counters {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let e = &s.export;
        counter(
            &mut enc,
            "tracegate_spans_produced",
            "Sampled spans offered to the export queue",
            &[(&[], e.produced.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "tracegate_spans_exported",
            "Spans the collector accepted",
            &[(&[], e.exported.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "tracegate_spans_dropped",
            "Spans dropped, by reason",
            &[
                (
                    &[("reason", "queue_full")],
                    e.dropped_queue_full.load(Relaxed),
                ),
                (
                    &[("reason", "queue_bytes")],
                    e.dropped_queue_bytes.load(Relaxed),
                ),
                (
                    &[("reason", "export_failed")],
                    e.dropped_export_failed.load(Relaxed),
                ),
                (&[("reason", "shutdown")], e.dropped_shutdown.load(Relaxed)),
                (&[("reason", "rejected")], e.dropped_rejected.load(Relaxed)),
            ],
        )?;
        counter(
            &mut enc,
            "tracegate_export_failures",
            "Export requests that failed after retries",
            &[(&[], e.failed_batches.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "tracegate_export_batches",
            "Export requests sent",
            &[(&[], e.batches.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "tracegate_export_batch_duration_microseconds",
            "Total time spent in export requests, microseconds",
            &[(&[], e.export_micros.load(Relaxed))],
        )?;
        ConstGauge::new(e.queue_len.load(Relaxed) as i64).encode(enc.encode_descriptor(
            "tracegate_export_queue_depth",
            "Exchanges waiting to be exported",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some(alive) = s.workers.alive_tasks() {
            ConstGauge::new(alive as i64).encode(enc.encode_descriptor(
                "tracegate_runtime_alive_tasks",
                "Tasks alive in the runtime (connections, exports, background work)",
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstGauge::new(s.downstream.open.load(Relaxed) as i64).encode(enc.encode_descriptor(
            "tracegate_active_connections",
            "Open downstream connections",
            None,
            MetricType::Gauge,
        )?)?;
        let per_worker = s.workers.open();
        if !per_worker.is_empty() {
            let mut family = enc.encode_descriptor(
                "tracegate_worker_connections",
                "Open downstream connections, by worker (with two workers or more)",
                None,
                MetricType::Gauge,
            )?;
            for (k, open) in per_worker.iter().enumerate() {
                let k = k.to_string();
                let labels = [("worker", k.as_str())];
                ConstGauge::new(*open as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let conns = s.upstream_conns.snapshot();
        let opened: Vec<([(&str, &str); 1], u64)> = conns
            .iter()
            .map(|(name, c)| ([("upstream", &**name)], c.opened.load(Relaxed)))
            .collect();
        let refs: Vec<(&[(&str, &str)], u64)> = opened.iter().map(|(l, n)| (&l[..], *n)).collect();
        counter(
            &mut enc,
            "tracegate_upstream_connections_opened",
            "Upstream connections opened (TCP, and TLS where configured), by upstream",
            &refs,
        )?;
        let mut family = enc.encode_descriptor(
            "tracegate_upstream_connections_open",
            "Upstream connections open now, idle or in use, by upstream",
            None,
            MetricType::Gauge,
        )?;
        for (name, c) in &conns {
            let labels = [("upstream", &**name)];
            ConstGauge::new(c.open() as i64).encode(family.encode_family(&labels)?)?;
        }
        let rejected: Vec<([(&str, &str); 1], u64)> = Rejection::ALL
            .iter()
            .map(|r| ([("reason", r.as_str())], s.downstream.rejected(*r)))
            .collect();
        let refs: Vec<(&[(&str, &str)], u64)> =
            rejected.iter().map(|(l, n)| (&l[..], *n)).collect();
        counter(
            &mut enc,
            "tracegate_downstream_rejected",
            "Clients turned away by a limit or for invalid HTTP, by reason",
            &refs,
        )?;
        let snapshot = s.sampling.snapshot();
        let values: Vec<([(&str, &str); 2], u64)> = snapshot
            .iter()
            .map(|(sampled, reason, n)| {
                (
                    [
                        ("decision", if *sampled { "sampled" } else { "dropped" }),
                        ("reason", reason.as_str()),
                    ],
                    *n,
                )
            })
            .collect();
        let refs: Vec<(&[(&str, &str)], u64)> = values.iter().map(|(l, n)| (&l[..], *n)).collect();
        counter(
            &mut enc,
            "tracegate_sampling_decisions",
            "Sampling decisions by outcome and reason (error and slow: kept after the head dropped them)",
            &refs,
        )?;
        counter(
            &mut enc,
            "tracegate_access_log_lines",
            "Access log lines, written or dropped (full queue, write error)",
            &[
                (&[("result", "written")], s.access_log.written.load(Relaxed)),
                (&[("result", "dropped")], s.access_log.dropped.load(Relaxed)),
            ],
        )?;
        counter(
            &mut enc,
            "tracegate_config_reloads",
            "Config reloads, applied or rejected",
            &[
                (&[("result", "ok")], s.reloads.ok.load(Relaxed)),
                (&[("result", "failed")], s.reloads.failed.load(Relaxed)),
            ],
        )
    }
}

/// What `/metrics` writes: the duration histograms, then prometheus-client's registry (the
/// upstream errors and the counters read from other modules).
#[derive(Debug)]
pub struct Exposition {
    requests: Arc<Metrics>,
    registry: Registry,
}

/// The exposition behind `/metrics`.
pub fn exposition(sources: Arc<Sources>) -> Exposition {
    let mut r = Registry::default();
    r.register(
        "tracegate_upstream_errors",
        "Failed upstream calls, by upstream and error.type",
        sources.metrics.upstream_errors.clone(),
    );
    let requests = sources.metrics.clone();
    r.register_collector(Box::new(Counters(sources)));
    Exposition {
        requests,
        registry: r,
    }
}

fn durations(e: &Exposition, out: &mut String, exemplars: bool) {
    let label = |m: u8, c: u8| (METHODS[usize::from(m)], CLASSES[usize::from(c)]);
    e.requests
        .durations
        .write(out, DURATION, DURATION_HELP, label, exemplars);
}

/// OpenMetrics text (with exemplars and `# EOF`).
pub fn openmetrics(e: &Exposition) -> String {
    let mut out = String::new();
    durations(e, &mut out, true);
    let _ = prometheus_client::encoding::text::encode(&mut out, &e.registry);
    out
}

/// Prometheus text 0.0.4: the OpenMetrics document without exemplars, `# UNIT` and `# EOF`.
pub fn prometheus_text(e: &Exposition) -> String {
    let mut out = String::new();
    durations(e, &mut out, false);
    let mut registry = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut registry, &e.registry);
    for line in registry.lines() {
        if line == "# EOF" || line.starts_with("# UNIT") {
            continue;
        }
        let line = line.split(" # {").next().unwrap_or(line);
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Arc<Sources> {
        Arc::new(Sources {
            metrics: Arc::default(),
            export: Arc::default(),
            sampling: Arc::default(),
            access_log: Arc::default(),
            reloads: Arc::default(),
            downstream: Arc::default(),
            upstream_conns: Arc::default(),
            workers: Arc::new(crate::workers::Workers::here()),
        })
    }

    #[test]
    fn histogram_counts_buckets_and_exemplar() {
        let s = sources();
        let route: Arc<str> = Arc::from("/api/*");
        // Through the route's histograms and through the family: the same series.
        let cached = RouteHistograms::default();
        s.metrics.observe(
            Some(&route),
            Some(&cached),
            &Method::GET,
            200,
            Duration::from_millis(3),
            Some(&[0xab; 16]),
        );
        s.metrics.observe(
            Some(&route),
            None,
            &Method::GET,
            204,
            Duration::from_millis(500),
            None,
        );
        s.metrics.observe(
            None,
            None,
            &Method::from_bytes(b"PURGE").unwrap(),
            404,
            Duration::from_millis(1),
            None,
        );
        let text = openmetrics(&exposition(s));
        assert!(text.contains("tracegate_request_duration_seconds_count{route=\"/api/*\",method=\"GET\",status_class=\"2xx\"} 2"), "{text}");
        assert!(text.contains("tracegate_request_duration_seconds_bucket{le=\"0.004\",route=\"/api/*\",method=\"GET\",status_class=\"2xx\"} 1 # {trace_id=\"abababababababababababababababab\"} 0.003"), "{text}");
        assert!(
            text.contains("route=\"\",method=\"_OTHER\",status_class=\"4xx\""),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn route_histograms_keep_each_label_set_apart() {
        // Every method and status class through one route's cache, each once: every series
        // counts exactly one request, under its own labels.
        let s = sources();
        let route: Arc<str> = Arc::from("/r");
        let cached = RouteHistograms::default();
        let methods = [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "PURGE",
        ];
        for m in methods {
            for status in [101, 200, 302, 404, 503, 999] {
                let method = Method::from_bytes(m.as_bytes()).unwrap();
                s.metrics.observe(
                    Some(&route),
                    Some(&cached),
                    &method,
                    status,
                    Duration::from_millis(10),
                    None,
                );
            }
        }
        let text = openmetrics(&exposition(s));
        for m in methods {
            let label = if m == "PURGE" { "_OTHER" } else { m };
            for class in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"] {
                let series = format!(
                    "tracegate_request_duration_seconds_count{{route=\"/r\",method=\"{label}\",status_class=\"{class}\"}} 1\n"
                );
                assert!(text.contains(&series), "{series} in {text}");
            }
        }
    }

    #[test]
    fn counters_from_other_modules_and_prometheus_text() {
        let s = sources();
        s.export.exported.fetch_add(7, Relaxed);
        s.metrics
            .upstream_error(&Arc::from("app"), "connection_refused");
        s.metrics.observe(
            None,
            None,
            &Method::GET,
            200,
            Duration::from_millis(10),
            Some(&[0xcd; 16]),
        );
        let app = s.upstream_conns.of("app");
        app.opened.fetch_add(3, Relaxed);
        s.upstream_conns.of("idle");
        let r = exposition(s);
        let om = openmetrics(&r);
        assert!(om.contains("tracegate_spans_exported_total 7"), "{om}");
        for line in [
            "# TYPE tracegate_upstream_connections_opened counter",
            "tracegate_upstream_connections_opened_total{upstream=\"app\"} 3",
            "tracegate_upstream_connections_opened_total{upstream=\"idle\"} 0",
            "# TYPE tracegate_upstream_connections_open gauge",
            "tracegate_upstream_connections_open{upstream=\"app\"} 3",
            "tracegate_upstream_connections_open{upstream=\"idle\"} 0",
        ] {
            assert!(om.lines().any(|l| l == line), "{line} in {om}");
        }
        assert!(om.contains("tracegate_upstream_errors_total{upstream=\"app\",error_type=\"connection_refused\"} 1"), "{om}");
        let text = prometheus_text(&r);
        assert!(
            !text.contains("# EOF") && !text.contains("trace_id="),
            "{text}"
        );
        assert!(text.contains("tracegate_spans_exported_total 7"));
    }
}
