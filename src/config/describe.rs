//! The effective config as JSON (for `tracegate check` and `/config`), secrets redacted.

use http::Method;
use http::header::HeaderName;

use super::*;

impl Settings {
    /// The effective config as JSON, secrets (exporter header values) redacted.
    pub fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        let upstreams: Vec<_> = self
            .upstreams
            .iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "protocol": u.protocol.as_str(),
                    "retries": u.retries,
                    "endpoints": u.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
                    "request_timeout_ms": u.request_timeout.as_millis() as u64,
                    "total_timeout_ms": u.total_timeout.map(|t| t.as_millis() as u64),
                    "max_idle_per_endpoint": u.max_idle_per_endpoint,
                    "idle_timeout_ms": u.idle_timeout.as_millis() as u64,
                    "tls": u.tls.as_ref().map(client_tls),
                    "balance": match u.balance { Balance::RoundRobin => "round_robin", Balance::LeastRequest => "least_request" },
                    "dns_refresh_ms": u.dns_refresh.as_millis() as u64,
                    "outlier": {
                        "consecutive_failures": u.outlier.consecutive_failures,
                        "ejection_time_ms": u.outlier.ejection_time.as_millis() as u64,
                        "max_ejected_percent": u.outlier.max_ejected_percent,
                    },
                    "health_check": u.health_check.as_ref().map(|h| json!({
                        "path": h.path.as_str(),
                        "interval_ms": h.interval.as_millis() as u64,
                        "timeout_ms": h.timeout.as_millis() as u64,
                        "unhealthy_threshold": h.unhealthy_threshold,
                        "healthy_threshold": h.healthy_threshold,
                    })),
                    "retry_budget": { "percent": u.retry_budget.percent, "min_concurrency": u.retry_budget.min_concurrency },
                })
            })
            .collect();
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| {
                let path = match &r.path {
                    PathMatch::Any => json!("any"),
                    PathMatch::Exact(p) => json!({ "path": p }),
                    PathMatch::Prefix(p) => json!({ "path_prefix": if p.is_empty() { "/" } else { p } }),
                    PathMatch::Regex(re) => json!({ "path_regex": re.as_str() }),
                };
                let host = r.host.as_ref().map(|h| match h {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Suffix(s) => format!("*{s}"),
                });
                json!({
                    "name": r.name,
                    "path": path,
                    "host": host,
                    "methods": r.methods.iter().map(Method::as_str).collect::<Vec<_>>(),
                    "headers": r.headers.iter().map(|(n, v)| json!({"name": n.as_str(), "value": v.as_ref().and_then(|v| v.to_str().ok())})).collect::<Vec<_>>(),
                    "upstream": self.upstreams.get(r.upstream).map(|u| u.name.as_str()),
                    "attributes": r.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "sampling": {
                        "ratio": r.ratio,
                        "slow_threshold_ms": r.slow_threshold.map(|d| d.as_millis() as u64),
                        "exclude": r.excluded,
                    },
                })
            })
            .collect();
        let export = match &self.export {
            ExportSettings::Disabled => json!({ "protocol": "none" }),
            ExportSettings::Otlp(o) => json!({
                "protocol": o.protocol.as_str(),
                "endpoint": o.endpoint,
                "headers": o.headers.iter().map(|(k, _)| (k.clone(), json!("REDACTED"))).collect::<serde_json::Map<_, _>>(),
                "timeout_ms": o.timeout.as_millis() as u64,
                "compression": if o.gzip { "gzip" } else { "none" },
                "batch_size": o.batch_size,
                "batch_delay_ms": o.batch_delay.as_millis() as u64,
                "queue_limit": o.queue_limit,
                "queue_max_bytes": o.queue_max_bytes,
                "max_concurrent_exports": o.max_concurrent_exports,
                "tls": o.tls.as_ref().map(client_tls),
            }),
        };
        let t = &self.tracing;
        json!({
            "source": self.source,
            "listeners": self.listeners.iter().map(|l| json!({
                "address": l.address.to_string(),
                "tls": l.tls.as_ref().map(|t| json!({
                    "certificates": t.certificates.iter().map(cert_files).collect::<Vec<_>>(),
                    "min_version": match t.min_version { TlsVersion::Tls12 => "1.2", TlsVersion::Tls13 => "1.3" },
                    "client_ca": t.client_ca.as_ref().map(|p| p.display().to_string()),
                    "client_auth": match t.client_auth { ClientAuth::Required => "required", ClientAuth::Optional => "optional" },
                    "record_client_subject": t.record_client_subject,
                })),
            })).collect::<Vec<_>>(),
            "admin": self.admin.map(|a| a.to_string()),
            "traces": self.viewer_capacity,
            "trace_link": self.trace_link,
            "upstreams": upstreams,
            "routes": routes,
            "tracing": {
                "service_name": t.service_name,
                "service_version": t.service_version,
                "resource_attributes": t.resource_attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "trace_id_header": t.trace_id_header.as_ref().map(HeaderName::as_str),
                "trusted_proxies": t.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "correlation_headers": t.correlation_headers.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
                "client_spans": t.client_spans,
                "propagation": t.propagation.formats().iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "baggage_attributes": t.baggage_attributes,
                "opt_in_attributes": t.opt_in.names().collect::<Vec<_>>(),
                "capture": {
                    "request_headers": header_list(&t.capture.request),
                    "response_headers": header_list(&t.capture.response),
                    "reveal": t.capture.reveal.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
                },
                "redact_query": t.redact_query,
                "attributes": t.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "sampling": {
                    "ratio": t.sampling.ratio,
                    "parent_based": t.sampling.parent_based,
                    "rate_limit": t.sampling.rate_limit,
                    "keep_errors": t.sampling.keep_errors,
                    "slow_threshold_ms": t.sampling.slow_threshold.map(|d| d.as_millis() as u64),
                    "exclude_paths": t.sampling.exclude_paths,
                },
            },
            "export": export,
            "access_log": match &self.access_log {
                AccessLogSettings::Off => json!({ "format": "off" }),
                AccessLogSettings::On { format, target, buffer } => json!({
                    "format": match format { AccessLogFormat::Json => "json", AccessLogFormat::Text => "text" },
                    "path": match target {
                        AccessLogTarget::Stdout => "stdout".to_string(),
                        AccessLogTarget::Stderr => "stderr".to_string(),
                        AccessLogTarget::File(p) => p.display().to_string(),
                    },
                    "buffer": buffer,
                }),
            },
            "limits": {
                "max_connections": self.limits.max_connections,
                "max_request_headers": self.limits.max_request_headers,
                "max_request_header_bytes": self.limits.max_request_header_bytes,
                "max_uri_length": self.limits.max_uri_length,
                "header_read_timeout_ms": self.limits.header_read_timeout.as_millis() as u64,
                "request_body_timeout_ms": self.limits.request_body_timeout.as_millis() as u64,
                "idle_timeout_ms": self.limits.idle_timeout.as_millis() as u64,
                "http2_max_concurrent_streams": self.limits.http2_max_concurrent_streams,
                "http2_server": self.limits.http2_server.as_str(),
            },
            "shutdown": {
                "drain_delay_ms": self.shutdown.drain_delay.as_millis() as u64,
                "grace_period_ms": self.shutdown.grace_period.as_millis() as u64,
            },
        })
    }
}

/// Key files are named, never read into the config.
fn cert_files(c: &CertFiles) -> serde_json::Value {
    serde_json::json!({ "cert": c.cert.display().to_string(), "key": c.key.display().to_string() })
}

fn client_tls(t: &ClientTlsSettings) -> serde_json::Value {
    serde_json::json!({
        "ca": t.ca.as_ref().map_or("system roots".to_string(), |p| p.display().to_string()),
        "server_name": t.server_name,
        "client_certificate": t.identity.as_ref().map(cert_files),
    })
}

fn header_list(l: &HeaderList) -> serde_json::Value {
    match l {
        HeaderList::None => serde_json::json!([]),
        HeaderList::All => serde_json::json!(["*"]),
        HeaderList::Some(names) => {
            serde_json::json!(names.iter().map(HeaderName::as_str).collect::<Vec<_>>())
        }
    }
}
