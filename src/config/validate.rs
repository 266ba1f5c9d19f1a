//! Validation: turns the deserialized file and the environment into [`Settings`], collecting
//! every problem with its line and key.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue};
use regex::Regex;
use serde_saphyr::Location;

use super::schema::{self, FileConfig, Text};
use super::*;
use crate::span::OptIn;

/// The most export requests `export.max_concurrent_exports` may keep in flight: each holds
/// a batch's bytes until answered.
const MAX_CONCURRENT_EXPORTS: usize = 64;

pub(super) struct Validator<'a> {
    source: &'a str,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(source: &'a str) -> Self {
        Validator {
            source,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, at: &Location, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            source: self.source.to_string(),
            line: at.line(),
            column: at.column(),
            key: key.into(),
            message: message.into(),
        });
    }

    fn env_error(&mut self, var: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            source: "environment".into(),
            line: 0,
            column: 0,
            key: var.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, t: &Option<Text>, key: &str, default: Duration) -> Duration {
        match t {
            None => default,
            Some(t) => duration::parse(&t.value).unwrap_or_else(|m| {
                self.error(&t.referenced, key, m);
                default
            }),
        }
    }

    fn socket_addr(&mut self, t: &Text, key: &str) -> Option<SocketAddr> {
        match t.value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    &t.referenced,
                    key,
                    format!(
                        "invalid address `{}`: expected ip:port, e.g. 0.0.0.0:8080",
                        t.value
                    ),
                );
                None
            }
        }
    }

    pub(super) fn settings(&mut self, f: FileConfig, env: &Env) -> Settings {
        let listeners = if f.listeners.is_empty() {
            vec![ListenerSettings::plain(DEFAULT_LISTENER)]
        } else {
            let mut out: Vec<ListenerSettings> = Vec::new();
            for (i, l) in f.listeners.iter().enumerate() {
                let key = format!("listeners[{i}]");
                let Some(address) = self.socket_addr(&l.address, &format!("{key}.address")) else {
                    continue;
                };
                if address.port() != 0 && out.iter().any(|o| o.address == address) {
                    self.error(
                        &l.address.referenced,
                        format!("{key}.address"),
                        format!("`{address}` is listed twice"),
                    );
                }
                let tls = l
                    .tls
                    .as_ref()
                    .and_then(|t| self.server_tls(t, &format!("{key}.tls"), &l.address));
                out.push(ListenerSettings { address, tls });
            }
            out
        };
        let admin = match &f.admin.address {
            None => Some(DEFAULT_ADMIN),
            Some(t) if t.value == "off" => None,
            Some(t) => self.socket_addr(t, "admin.address"),
        };
        let upstreams = self.upstreams(&f);
        let mut routes = self.routes(&f, &upstreams);
        let tracing = self.tracing(&f.tracing, env);
        // Routes without their own sampling values take the global ones.
        for (r, rc) in routes.iter_mut().zip(&f.routes) {
            if rc.sampling.ratio.is_none() {
                r.ratio = tracing.sampling.ratio;
            }
            if rc.sampling.slow_threshold.is_none() {
                r.slow_threshold = tracing.sampling.slow_threshold;
            }
        }
        let export = self.export(&f.export, env);
        let shutdown = ShutdownSettings {
            drain_delay: self.duration(
                &f.shutdown.drain_delay,
                "shutdown.drain_delay",
                Duration::ZERO,
            ),
            grace_period: self.duration(
                &f.shutdown.grace_period,
                "shutdown.grace_period",
                Duration::from_secs(25),
            ),
        };
        let access_log = self.access_log(&f.access_log);
        let limits = self.limits(&f.limits);
        Settings {
            limits,
            viewer_capacity: f.admin.traces.unwrap_or(1000),
            trace_link: f.admin.trace_link.clone(),
            source: self.source.to_string(),
            access_log,
            listeners,
            admin,
            upstreams,
            routes,
            tracing,
            export,
            shutdown,
        }
    }

    fn outlier(&mut self, o: Option<&schema::OutlierConfig>, key: &str) -> OutlierSettings {
        let d = OutlierSettings::default();
        let Some(o) = o else { return d };
        OutlierSettings {
            consecutive_failures: o.consecutive_failures.unwrap_or(d.consecutive_failures),
            ejection_time: self.duration(
                &o.ejection_time,
                &format!("{key}.outlier.ejection_time"),
                d.ejection_time,
            ),
            max_ejected_percent: o
                .max_ejected_percent
                .unwrap_or(d.max_ejected_percent)
                .min(100),
        }
    }

    fn health_check(
        &mut self,
        h: &schema::HealthCheckConfig,
        key: &str,
    ) -> Option<HealthCheckSettings> {
        let path = match h.path.value.parse::<http::uri::PathAndQuery>() {
            Ok(p) if h.path.value.starts_with('/') => Some(p),
            _ => {
                self.error(
                    &h.path.referenced,
                    format!("{key}.health_check.path"),
                    format!("`{}` is not a path (it starts with /)", h.path.value),
                );
                None
            }
        };
        let interval = self.duration(
            &h.interval,
            &format!("{key}.health_check.interval"),
            Duration::from_secs(5),
        );
        let timeout = self.duration(
            &h.timeout,
            &format!("{key}.health_check.timeout"),
            Duration::from_secs(2),
        );
        Some(HealthCheckSettings {
            path: path?,
            interval: interval.max(Duration::from_millis(10)),
            timeout: timeout.max(Duration::from_millis(1)),
            unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
            healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
        })
    }

    fn limits(&mut self, l: &schema::LimitsConfig) -> LimitSettings {
        let d = LimitSettings::default();
        let header_bytes = match &l.max_request_header_bytes {
            None => d.max_request_header_bytes,
            Some(b) if b.value < 8192 => {
                self.error(
                    &b.referenced,
                    "limits.max_request_header_bytes",
                    "must be at least 8192",
                );
                d.max_request_header_bytes
            }
            Some(b) => b.value,
        };
        let http2_server = match l.http2_server.as_ref().map(|v| (v, v.value.as_str())) {
            None | Some((_, "native")) => Http2Server::Native,
            Some((_, "hyper")) => Http2Server::Hyper,
            Some((v, other)) => {
                self.error(
                    &v.referenced,
                    "limits.http2_server",
                    format!("unsupported `{other}` (native, hyper)"),
                );
                Http2Server::Native
            }
        };
        LimitSettings {
            http2_server,
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            max_request_headers: l
                .max_request_headers
                .unwrap_or(d.max_request_headers)
                .max(1),
            max_request_header_bytes: header_bytes,
            max_uri_length: l.max_uri_length.unwrap_or(d.max_uri_length).max(1),
            header_read_timeout: self.duration(
                &l.header_read_timeout,
                "limits.header_read_timeout",
                d.header_read_timeout,
            ),
            request_body_timeout: self.duration(
                &l.request_body_timeout,
                "limits.request_body_timeout",
                d.request_body_timeout,
            ),
            idle_timeout: self.duration(&l.idle_timeout, "limits.idle_timeout", d.idle_timeout),
            http2_max_concurrent_streams: l
                .http2_max_concurrent_streams
                .unwrap_or(d.http2_max_concurrent_streams)
                .max(1),
        }
    }

    /// TLS termination settings; the files are loaded to check them now.
    fn server_tls(
        &mut self,
        t: &schema::ServerTlsConfig,
        key: &str,
        at: &Text,
    ) -> Option<ServerTlsSettings> {
        if t.certificates.is_empty() {
            self.error(
                &at.referenced,
                format!("{key}.certificates"),
                "needs at least one certificate",
            );
            return None;
        }
        let mut certificates = Vec::new();
        for (i, c) in t.certificates.iter().enumerate() {
            let files = CertFiles {
                cert: c.cert.value.clone().into(),
                key: c.key.value.clone().into(),
            };
            if let Err(m) = crate::tls::certified_key(&files) {
                self.error(&c.cert.referenced, format!("{key}.certificates[{i}]"), m);
            }
            certificates.push(files);
        }
        let min_version = match t.min_version.as_ref().map(|v| (v, v.value.as_str())) {
            None | Some((_, "1.2")) => TlsVersion::Tls12,
            Some((_, "1.3")) => TlsVersion::Tls13,
            Some((v, other)) => {
                self.error(
                    &v.referenced,
                    format!("{key}.min_version"),
                    format!("unsupported `{other}` (1.2, 1.3)"),
                );
                TlsVersion::Tls12
            }
        };
        let client_ca = t.client_ca.as_ref().map(|ca| {
            let path = std::path::PathBuf::from(&ca.value);
            if let Err(m) = crate::tls::roots(Some(&path)) {
                self.error(&ca.referenced, format!("{key}.client_ca"), m);
            }
            path
        });
        let client_auth = match t.client_auth.as_ref().map(|v| (v, v.value.as_str())) {
            None | Some((_, "required")) => ClientAuth::Required,
            Some((_, "optional")) => ClientAuth::Optional,
            Some((v, other)) => {
                self.error(
                    &v.referenced,
                    format!("{key}.client_auth"),
                    format!("unsupported `{other}` (required, optional)"),
                );
                ClientAuth::Required
            }
        };
        if let (Some(v), None) = (&t.client_auth, &client_ca) {
            self.error(
                &v.referenced,
                format!("{key}.client_auth"),
                "needs `client_ca` to verify client certificates against",
            );
        }
        Some(ServerTlsSettings {
            certificates,
            min_version,
            client_ca,
            client_auth,
            record_client_subject: t.record_client_subject.unwrap_or(false),
        })
    }

    /// TLS towards a server; the files are loaded to check them now.
    fn client_tls(&mut self, t: &schema::ClientTlsConfig, key: &str) -> ClientTlsSettings {
        let ca = t.ca.as_ref().map(|ca| {
            let path = std::path::PathBuf::from(&ca.value);
            if let Err(m) = crate::tls::roots(Some(&path)) {
                self.error(&ca.referenced, format!("{key}.ca"), m);
            }
            path
        });
        let server_name = t.server_name.as_ref().and_then(|n| {
            match rustls::pki_types::ServerName::try_from(n.value.as_str()) {
                Ok(_) => Some(n.value.clone()),
                Err(_) => {
                    self.error(
                        &n.referenced,
                        format!("{key}.server_name"),
                        format!("`{}` is not a DNS name or IP address", n.value),
                    );
                    None
                }
            }
        });
        let identity = match (&t.cert, &t.key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let files = CertFiles {
                    cert: c.value.clone().into(),
                    key: k.value.clone().into(),
                };
                if let Err(m) = crate::tls::certified_key(&files) {
                    self.error(&c.referenced, format!("{key}.cert"), m);
                }
                Some(files)
            }
            (Some(t), None) | (None, Some(t)) => {
                self.error(&t.referenced, key, "`cert` and `key` go together");
                None
            }
        };
        ClientTlsSettings {
            ca,
            server_name,
            identity,
        }
    }

    fn upstreams(&mut self, f: &FileConfig) -> Vec<UpstreamSettings> {
        let mut out: Vec<UpstreamSettings> = Vec::new();
        for (i, u) in f.upstreams.iter().enumerate() {
            let key = format!("upstreams[{i}]");
            if out.iter().any(|o| o.name == u.name.value) {
                self.error(
                    &u.name.referenced,
                    format!("{key}.name"),
                    format!("duplicate upstream name `{}`", u.name.value),
                );
            }
            if u.endpoints.is_empty() {
                self.error(
                    &u.name.referenced,
                    format!("{key}.endpoints"),
                    "needs at least one endpoint",
                );
            }
            let endpoints = u
                .endpoints
                .iter()
                .enumerate()
                .filter_map(|(j, e)| match parse_endpoint(&e.value) {
                    Ok(ep) => Some(ep),
                    Err(m) => {
                        self.error(&e.referenced, format!("{key}.endpoints[{j}]"), m);
                        None
                    }
                })
                .collect();
            let endpoints: Vec<Endpoint> = endpoints;
            let any_tls = endpoints.iter().any(|e| e.tls);
            let protocol = match u.protocol.as_ref().map(|t| (t, t.value.as_str())) {
                None | Some((_, "http1")) => UpstreamProtocol::Http1,
                Some((_, "http2" | "h2c")) => UpstreamProtocol::Http2,
                Some((t, "auto")) => {
                    if !any_tls {
                        self.error(
                            &t.referenced,
                            format!("{key}.protocol"),
                            "`auto` chooses by ALPN and needs https:// endpoints (use http1 or http2)",
                        );
                    }
                    UpstreamProtocol::Auto
                }
                Some((t, other)) => {
                    self.error(
                        &t.referenced,
                        format!("{key}.protocol"),
                        format!(
                            "unsupported protocol `{other}` (supported: http1, http2, h2c, auto)"
                        ),
                    );
                    UpstreamProtocol::Http1
                }
            };
            let tls = match &u.tls {
                Some(t) => {
                    let settings = self.client_tls(t, &format!("{key}.tls"));
                    if !any_tls {
                        self.error(
                            &u.name.referenced,
                            format!("{key}.tls"),
                            "applies to https:// endpoints, and this upstream has none",
                        );
                    }
                    Some(settings)
                }
                None => any_tls.then(ClientTlsSettings::default),
            };
            out.push(UpstreamSettings {
                name: u.name.value.clone(),
                protocol,
                tls,
                retries: u.retries.unwrap_or(1),
                endpoints,
                connect_timeout: self.duration(
                    &u.connect_timeout,
                    &format!("{key}.connect_timeout"),
                    Duration::from_secs(5),
                ),
                total_timeout: self
                    .threshold(&u.total_timeout, &format!("{key}.total_timeout"))
                    .flatten(),
                request_timeout: self.duration(
                    &u.request_timeout,
                    &format!("{key}.request_timeout"),
                    Duration::from_secs(30),
                ),
                max_idle_per_endpoint: u.max_idle_per_endpoint.unwrap_or(256),
                idle_timeout: self.duration(
                    &u.idle_timeout,
                    &format!("{key}.idle_timeout"),
                    Duration::from_secs(90),
                ),
                balance: match u.balance.as_ref().map(|b| (b, b.value.as_str())) {
                    None | Some((_, "round_robin")) => Balance::RoundRobin,
                    Some((_, "least_request")) => Balance::LeastRequest,
                    Some((b, other)) => {
                        self.error(
                            &b.referenced,
                            format!("{key}.balance"),
                            format!("unsupported `{other}` (round_robin, least_request)"),
                        );
                        Balance::RoundRobin
                    }
                },
                dns_refresh: self.duration(
                    &u.dns_refresh,
                    &format!("{key}.dns_refresh"),
                    Duration::from_secs(5),
                ),
                outlier: self.outlier(u.outlier.as_ref(), &key),
                health_check: u
                    .health_check
                    .as_ref()
                    .and_then(|h| self.health_check(h, &key)),
                retry_budget: RetryBudget {
                    percent: u
                        .retry_budget
                        .as_ref()
                        .and_then(|b| b.percent)
                        .unwrap_or(20),
                    min_concurrency: u
                        .retry_budget
                        .as_ref()
                        .and_then(|b| b.min_concurrency)
                        .unwrap_or(3),
                },
            });
        }
        out
    }

    fn routes(&mut self, f: &FileConfig, upstreams: &[UpstreamSettings]) -> Vec<RouteSettings> {
        let mut out = Vec::new();
        for (i, r) in f.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let m = &r.matcher;
            let given = [&m.path, &m.path_prefix, &m.path_regex]
                .iter()
                .filter(|p| p.is_some())
                .count();
            if given > 1 {
                self.error(
                    &r.upstream.referenced,
                    format!("{key}.match"),
                    "give at most one of path, path_prefix, path_regex",
                );
            }
            let path = if let Some(p) = &m.path {
                if !p.value.starts_with('/') {
                    self.error(
                        &p.referenced,
                        format!("{key}.match.path"),
                        "must start with `/`",
                    );
                }
                PathMatch::Exact(p.value.clone())
            } else if let Some(p) = &m.path_prefix {
                if !p.value.starts_with('/') {
                    self.error(
                        &p.referenced,
                        format!("{key}.match.path_prefix"),
                        "must start with `/`",
                    );
                }
                PathMatch::Prefix(p.value.trim_end_matches('/').to_string())
            } else if let Some(p) = &m.path_regex {
                match Regex::new(&format!("^(?:{})$", p.value)) {
                    Ok(re) => PathMatch::Regex(re),
                    Err(e) => {
                        let first = e.to_string();
                        let detail = first.lines().last().unwrap_or("invalid");
                        self.error(
                            &p.referenced,
                            format!("{key}.match.path_regex"),
                            format!("invalid regex `{}`: {}", p.value, detail.trim()),
                        );
                        PathMatch::Any
                    }
                }
            } else {
                PathMatch::Any
            };
            let host = m.host.as_ref().map(|h| {
                let v = h.value.to_ascii_lowercase();
                match v.strip_prefix('*') {
                    Some(rest) if rest.starts_with('.') => HostMatch::Suffix(rest.to_string()),
                    _ => HostMatch::Exact(v),
                }
            });
            let mut methods = Vec::new();
            for (j, t) in m.methods.iter().flatten().enumerate() {
                match Method::from_bytes(t.value.to_ascii_uppercase().as_bytes()) {
                    Ok(meth) => methods.push(meth),
                    Err(_) => self.error(
                        &t.referenced,
                        format!("{key}.match.methods[{j}]"),
                        format!("invalid method `{}`", t.value),
                    ),
                }
            }
            let mut headers = Vec::new();
            for (j, h) in m.headers.iter().enumerate() {
                let hkey = format!("{key}.match.headers[{j}]");
                let name = HeaderName::from_bytes(h.name.value.as_bytes());
                let value = h
                    .value
                    .as_ref()
                    .map(|v| (HeaderValue::from_str(&v.value), v));
                match (name, value) {
                    (Err(_), _) => self.error(
                        &h.name.referenced,
                        format!("{hkey}.name"),
                        format!("invalid header name `{}`", h.name.value),
                    ),
                    (Ok(_), Some((Err(_), v))) => self.error(
                        &v.referenced,
                        format!("{hkey}.value"),
                        format!("invalid header value `{}`", v.value),
                    ),
                    (Ok(n), Some((Ok(v), _))) => headers.push((n, Some(v))),
                    (Ok(n), None) => headers.push((n, None)),
                }
            }
            let upstream = match upstreams.iter().position(|u| u.name == r.upstream.value) {
                Some(idx) => idx,
                None => {
                    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                    self.error(
                        &r.upstream.referenced,
                        format!("{key}.upstream"),
                        format!(
                            "unknown upstream `{}` (defined: {})",
                            r.upstream.value,
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    0
                }
            };
            let name = match (&r.name, &path) {
                (Some(n), _) => n.value.clone(),
                (None, PathMatch::Any) => "/*".to_string(),
                (None, PathMatch::Exact(p)) => p.clone(),
                (None, PathMatch::Prefix(p)) => format!("{p}/*"),
                (None, PathMatch::Regex(_)) => m
                    .path_regex
                    .as_ref()
                    .map(|t| t.value.clone())
                    .unwrap_or_default(),
            };
            let ratio = self.ratio(&r.sampling.ratio, &format!("{key}.sampling.ratio"));
            let slow_threshold = self.threshold(
                &r.sampling.slow_threshold,
                &format!("{key}.sampling.slow_threshold"),
            );
            out.push(RouteSettings {
                name,
                path,
                host,
                methods,
                headers,
                upstream,
                // Replaced by the global values in `settings` when the route gives none.
                ratio: ratio.unwrap_or(1.0),
                slow_threshold: slow_threshold.flatten(),
                excluded: r.sampling.exclude.unwrap_or(false),
                attributes: r
                    .attributes
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
        }
        out
    }

    fn header_names(&mut self, list: &[Text], key: &str) -> Vec<HeaderName> {
        let mut out = Vec::new();
        for (i, t) in list.iter().enumerate() {
            match HeaderName::from_bytes(t.value.as_bytes()) {
                Ok(n) => out.push(n),
                Err(_) => self.error(
                    &t.referenced,
                    format!("{key}[{i}]"),
                    format!("invalid header name `{}`", t.value),
                ),
            }
        }
        out
    }

    fn tracing(&mut self, t: &schema::TracingConfig, env: &Env) -> TracingSettings {
        // Kubernetes downward-API variables, then OTEL_RESOURCE_ATTRIBUTES, then the YAML:
        // each later source wins per key.
        let mut resource: Vec<(String, String)> = K8S_ENV
            .iter()
            .filter_map(|(var, key)| {
                env.get(var)
                    .filter(|v| !v.is_empty())
                    .map(|v| (key.to_string(), v))
            })
            .collect();
        if let Some(raw) = env.get("OTEL_RESOURCE_ATTRIBUTES") {
            match env::parse_key_values(&raw) {
                Ok(kvs) => {
                    for (k, v) in kvs {
                        resource.retain(|(rk, _)| *rk != k);
                        resource.push((k, v));
                    }
                }
                Err(m) => self.env_error("OTEL_RESOURCE_ATTRIBUTES", m),
            }
        }
        for (k, v) in &t.resource_attributes {
            resource.retain(|(rk, _)| rk != k);
            resource.push((k.clone(), v.clone()));
        }
        let take = |resource: &mut Vec<(String, String)>, key: &str| {
            let pos = resource.iter().position(|(k, _)| k == key)?;
            Some(resource.remove(pos).1)
        };
        let attr_name = take(&mut resource, "service.name");
        let attr_version = take(&mut resource, "service.version");
        let service_name = t
            .service_name
            .clone()
            .or_else(|| env.get("OTEL_SERVICE_NAME").filter(|s| !s.is_empty()))
            .or(attr_name)
            .unwrap_or_else(|| "tracegate".to_string());
        let service_version = t
            .service_version
            .clone()
            .or(attr_version)
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        let trace_id_header = match &t.trace_id_header {
            None => Some(HeaderName::from_static("x-trace-id")),
            Some(h) if h.value == "off" => None,
            Some(h) => self
                .header_names(std::slice::from_ref(h), "tracing.trace_id_header")
                .pop(),
        };
        let correlation_headers = match &t.correlation_headers {
            None => DEFAULT_CORRELATION_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            Some(list) => self.header_names(list, "tracing.correlation_headers"),
        };
        let sampling = self.sampling(&t.sampling, env);
        let propagation = self.propagation(&t.propagation, env);
        let opt_in = self.opt_in(t.opt_in_attributes.as_deref().unwrap_or_default());
        let trusted_proxies = t
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| {
                let net = IpNet::parse(&p.value);
                if net.is_none() {
                    self.error(
                        &p.referenced,
                        format!("tracing.trusted_proxies[{i}]"),
                        format!("`{}` is not an IP address or CIDR range", p.value),
                    );
                }
                net
            })
            .collect();
        TracingSettings {
            trusted_proxies,
            service_name,
            service_version,
            resource_attributes: resource,
            trace_id_header,
            correlation_headers,
            client_spans: t.client_spans.unwrap_or(true),
            sampling,
            propagation,
            baggage_attributes: t.baggage_attributes.clone().unwrap_or_default(),
            opt_in,
            capture: CaptureSettings {
                request: self.header_list(
                    &t.capture.request_headers,
                    "tracing.capture.request_headers",
                ),
                response: self.header_list(
                    &t.capture.response_headers,
                    "tracing.capture.response_headers",
                ),
                reveal: self.header_names(
                    t.capture.reveal.as_deref().unwrap_or_default(),
                    "tracing.capture.reveal",
                ),
            },
            redact_query: t
                .redact_query
                .clone()
                .unwrap_or_else(|| DEFAULT_REDACT_QUERY.iter().map(|q| q.to_string()).collect()),
            attributes: t
                .attributes
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn sampling(&mut self, s: &schema::SamplingConfig, env: &Env) -> SamplingSettings {
        let mut out = SamplingSettings::default();
        if let Some(name) = env.get("OTEL_TRACES_SAMPLER") {
            let arg = env.get("OTEL_TRACES_SAMPLER_ARG");
            let ratio_arg = |v: &mut Self| match arg.as_deref().map(str::parse::<f64>) {
                None => 1.0,
                Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
                Some(_) => {
                    v.env_error("OTEL_TRACES_SAMPLER_ARG", "expected a number from 0 to 1");
                    1.0
                }
            };
            let (ratio, parent_based) = match name.as_str() {
                "always_on" => (1.0, false),
                "always_off" => (0.0, false),
                "traceidratio" => (ratio_arg(self), false),
                "parentbased_always_on" => (1.0, true),
                "parentbased_always_off" => (0.0, true),
                "parentbased_traceidratio" => (ratio_arg(self), true),
                other => {
                    self.env_error(
                        "OTEL_TRACES_SAMPLER",
                        format!("unsupported sampler `{other}` (supported: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"),
                    );
                    (out.ratio, out.parent_based)
                }
            };
            out.ratio = ratio;
            out.parent_based = parent_based;
        }
        if let Some(r) = self.ratio(&s.ratio, "tracing.sampling.ratio") {
            out.ratio = r;
        }
        if let Some(pb) = s.parent_based {
            out.parent_based = pb;
        }
        if let Some(r) = &s.rate_limit {
            if r.value > 0.0 && r.value.is_finite() {
                out.rate_limit = Some(r.value);
            } else {
                self.error(
                    &r.referenced,
                    "tracing.sampling.rate_limit",
                    format!("{} is not a positive number of traces per second", r.value),
                );
            }
        }
        if let Some(k) = s.keep_errors {
            out.keep_errors = k;
        }
        if let Some(t) = self.threshold(&s.slow_threshold, "tracing.sampling.slow_threshold") {
            out.slow_threshold = t;
        }
        if let Some(list) = &s.exclude_paths {
            out.exclude_paths = list
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    if p.value.starts_with('/') {
                        Some(p.value.clone())
                    } else {
                        self.error(
                            &p.referenced,
                            format!("tracing.sampling.exclude_paths[{i}]"),
                            "must start with `/`",
                        );
                        None
                    }
                })
                .collect();
        }
        out
    }

    fn access_log(&mut self, a: &schema::AccessLogConfig) -> AccessLogSettings {
        let format = match a.format.as_ref().map(|t| (t, t.value.as_str())) {
            None | Some((_, "off")) => return AccessLogSettings::Off,
            Some((_, "json")) => AccessLogFormat::Json,
            Some((_, "text")) => AccessLogFormat::Text,
            Some((t, other)) => {
                self.error(
                    &t.referenced,
                    "access_log.format",
                    format!("unsupported format `{other}` (json, text, off)"),
                );
                return AccessLogSettings::Off;
            }
        };
        let target = match a.path.as_deref() {
            None | Some("stdout") => AccessLogTarget::Stdout,
            Some("stderr") => AccessLogTarget::Stderr,
            Some(p) => AccessLogTarget::File(p.into()),
        };
        let buffer = match &a.buffer {
            Some(b) if b.value == 0 => {
                self.error(&b.referenced, "access_log.buffer", "must be at least 1");
                1
            }
            Some(b) => b.value,
            None => 8192,
        };
        AccessLogSettings::On {
            format,
            target,
            buffer,
        }
    }

    /// A header allow-list: absent or empty records none, `"*"` records all.
    fn header_list(&mut self, list: &Option<Vec<Text>>, key: &str) -> HeaderList {
        match list {
            None => HeaderList::None,
            Some(l) if l.iter().any(|t| t.value == "*") => HeaderList::All,
            Some(l) if l.is_empty() => HeaderList::None,
            Some(l) => HeaderList::Some(self.header_names(l, key)),
        }
    }

    /// `tracing.opt_in_attributes`: names from the supported Opt-In set.
    fn opt_in(&mut self, list: &[Text]) -> OptIn {
        let mut set = OptIn::default();
        for (i, t) in list.iter().enumerate() {
            match OptIn::parse(&t.value) {
                Some(flag) => set = set.with(flag),
                None => self.error(
                    &t.referenced,
                    format!("tracing.opt_in_attributes[{i}]"),
                    format!(
                        "unsupported attribute `{}` (supported: {})",
                        t.value,
                        OptIn::ALL.map(|(n, _)| n).join(", ")
                    ),
                ),
            }
        }
        set
    }

    /// `tracing.propagation`, else `OTEL_PROPAGATORS` (`none` for no format), else the default.
    fn propagation(&mut self, list: &Option<Vec<Text>>, env: &Env) -> Propagation {
        let unsupported = |name: &str| {
            format!(
                "unsupported propagator `{name}` (supported: {})",
                Format::NAMES
            )
        };
        if let Some(list) = list {
            let mut formats = Vec::new();
            for (i, t) in list.iter().enumerate() {
                match Format::parse(&t.value) {
                    Some(f) => formats.push(f),
                    None => self.error(
                        &t.referenced,
                        format!("tracing.propagation[{i}]"),
                        unsupported(&t.value),
                    ),
                }
            }
            return Propagation::new(formats);
        }
        match env.get("OTEL_PROPAGATORS").filter(|v| !v.trim().is_empty()) {
            None => Propagation::default(),
            Some(v) => {
                let mut formats = Vec::new();
                for name in v
                    .split(',')
                    .map(str::trim)
                    .filter(|n| *n != "none" && !n.is_empty())
                {
                    match Format::parse(name) {
                        Some(f) => formats.push(f),
                        None => self.env_error("OTEL_PROPAGATORS", unsupported(name)),
                    }
                }
                Propagation::new(formats)
            }
        }
    }

    /// A ratio between 0 and 1, when given.
    fn ratio(&mut self, r: &Option<serde_saphyr::Spanned<f64>>, key: &str) -> Option<f64> {
        let r = r.as_ref()?;
        if (0.0..=1.0).contains(&r.value) {
            Some(r.value)
        } else {
            self.error(
                &r.referenced,
                key,
                format!("{} is not between 0 and 1", r.value),
            );
            None
        }
    }

    /// A duration or `off`, when given: `Some(None)` is off.
    fn threshold(&mut self, t: &Option<Text>, key: &str) -> Option<Option<Duration>> {
        let t = t.as_ref()?;
        if t.value == "off" {
            return Some(None);
        }
        match duration::parse(&t.value) {
            Ok(d) => Some(Some(d)),
            Err(m) => {
                self.error(&t.referenced, key, m);
                None
            }
        }
    }

    fn export(&mut self, e: &schema::ExportConfig, env: &Env) -> ExportSettings {
        let env_pick = |name: &str| {
            env.get(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .or_else(|| env.get(&format!("OTEL_EXPORTER_OTLP_{name}")))
                .filter(|v| !v.is_empty())
        };
        let protocol = match &e.protocol {
            Some(p) => {
                match p.value.as_str() {
                    "grpc" => Some(Protocol::Grpc),
                    "http/protobuf" => Some(Protocol::HttpProtobuf),
                    "none" => None,
                    other => {
                        self.error(
                        &p.referenced,
                        "export.protocol",
                        format!("unsupported protocol `{other}` (supported: grpc, http/protobuf, none)"),
                    );
                        Some(Protocol::Grpc)
                    }
                }
            }
            None => {
                if env
                    .get("OTEL_SDK_DISABLED")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                {
                    None
                } else {
                    match env_pick("PROTOCOL").as_deref() {
                        None | Some("grpc") => Some(Protocol::Grpc),
                        Some("http/protobuf") => Some(Protocol::HttpProtobuf),
                        Some(other) => {
                            self.env_error(
                                "OTEL_EXPORTER_OTLP_PROTOCOL",
                                format!("unsupported protocol `{other}` (supported: grpc, http/protobuf)"),
                            );
                            Some(Protocol::Grpc)
                        }
                    }
                }
            }
        };
        let endpoint = match (&e.endpoint, protocol) {
            // Like the Collector's otlphttp exporter: a bare `http://host:4318` means the
            // standard traces path.
            (Some(t), Some(Protocol::HttpProtobuf))
                if t.value
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.scheme().is_some() && matches!(u.path(), "" | "/")) =>
            {
                format!("{}/v1/traces", t.value.trim_end_matches('/'))
            }
            (Some(t), _) => t.value.clone(),
            (None, p) => match env
                .get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .filter(|v| !v.is_empty())
            {
                Some(v) => v,
                None => match (
                    env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                        .filter(|v| !v.is_empty()),
                    p,
                ) {
                    (Some(base), Some(Protocol::HttpProtobuf)) => {
                        format!("{}/v1/traces", base.trim_end_matches('/'))
                    }
                    (Some(base), _) => base,
                    (None, Some(Protocol::HttpProtobuf)) => {
                        "http://localhost:4318/v1/traces".into()
                    }
                    (None, _) => "http://localhost:4317".into(),
                },
            },
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.parse::<http::Uri>().is_err()
        {
            match &e.endpoint {
                Some(t) => self.error(
                    &t.referenced,
                    "export.endpoint",
                    format!("invalid URL `{endpoint}`"),
                ),
                None => self.env_error(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("invalid URL `{endpoint}`"),
                ),
            }
        }
        let mut headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(raw) = env.get(var) {
                match env::parse_key_values(&raw) {
                    Ok(kvs) => {
                        for (k, v) in kvs {
                            headers
                                .retain(|(hk, _): &(String, String)| !hk.eq_ignore_ascii_case(&k));
                            headers.push((k, v));
                        }
                    }
                    Err(m) => self.env_error(var, m),
                }
            }
        }
        for (k, t) in e.headers.iter().flatten() {
            let value = match env::substitute(&t.value, env) {
                Ok(v) => v,
                Err(m) => {
                    self.error(&t.referenced, format!("export.headers.{k}"), m);
                    continue;
                }
            };
            if HeaderName::from_bytes(k.as_bytes()).is_err()
                || HeaderValue::from_str(&value).is_err()
            {
                self.error(
                    &t.referenced,
                    format!("export.headers.{k}"),
                    "invalid header name or value",
                );
                continue;
            }
            headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
            headers.push((k.clone(), value));
        }
        let timeout = match (&e.timeout, env_pick("TIMEOUT")) {
            (None, Some(ms)) => match ms.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    self.env_error("OTEL_EXPORTER_OTLP_TIMEOUT", "expected milliseconds");
                    Duration::from_secs(10)
                }
            },
            (t, _) => self.duration(t, "export.timeout", Duration::from_secs(10)),
        };
        let gzip = match (&e.compression, env_pick("COMPRESSION")) {
            (Some(t), _) => match t.value.as_str() {
                "gzip" => true,
                "none" => false,
                other => {
                    self.error(
                        &t.referenced,
                        "export.compression",
                        format!("unsupported `{other}` (gzip, none)"),
                    );
                    false
                }
            },
            (None, Some(v)) => match v.as_str() {
                "gzip" => true,
                "none" => false,
                other => {
                    self.env_error(
                        "OTEL_EXPORTER_OTLP_COMPRESSION",
                        format!("unsupported `{other}` (gzip, none)"),
                    );
                    false
                }
            },
            (None, None) => false,
        };
        let env_num = |v: &mut Self, var: &str, default: usize| match env.get(var) {
            None => default,
            Some(s) => s.parse().unwrap_or_else(|_| {
                v.env_error(var, "expected a whole number");
                default
            }),
        };
        let batch_size = match &e.batch_size {
            Some(s) => s.value,
            None => env_num(self, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        };
        let queue_limit = match &e.queue_limit {
            Some(s) => s.value,
            None => env_num(self, "OTEL_BSP_MAX_QUEUE_SIZE", 4096),
        };
        let batch_delay = match (&e.batch_delay, env.get("OTEL_BSP_SCHEDULE_DELAY")) {
            (None, Some(_)) => {
                Duration::from_millis(env_num(self, "OTEL_BSP_SCHEDULE_DELAY", 1000) as u64)
            }
            (t, _) => self.duration(t, "export.batch_delay", Duration::from_secs(1)),
        };
        for (value, key, t) in [
            (batch_size, "export.batch_size", &e.batch_size),
            (queue_limit, "export.queue_limit", &e.queue_limit),
        ] {
            if value == 0 {
                match t {
                    Some(t) => self.error(&t.referenced, key, "must be at least 1"),
                    None => self.env_error(key, "must be at least 1"),
                }
            }
        }
        let queue_max_bytes = e.queue_max_bytes.as_ref().map_or(16 << 20, |s| s.value);
        let max_concurrent_exports = match &e.max_concurrent_exports {
            Some(s) if !(1..=MAX_CONCURRENT_EXPORTS).contains(&s.value) => {
                self.error(
                    &s.referenced,
                    "export.max_concurrent_exports",
                    format!("must be 1 to {MAX_CONCURRENT_EXPORTS}"),
                );
                1
            }
            Some(s) => s.value,
            None => 4,
        };
        match protocol {
            None => ExportSettings::Disabled,
            Some(protocol) => ExportSettings::Otlp(Box::new(OtlpSettings {
                tls: self.export_tls(e, &endpoint, env),
                protocol,
                endpoint,
                headers,
                timeout,
                gzip,
                batch_size: batch_size.max(1),
                batch_delay,
                queue_limit: queue_limit.max(1),
                queue_max_bytes,
                max_concurrent_exports,
            })),
        }
    }
}

/// Parses `http://host:port` (port defaults to 80).
impl Validator<'_> {
    /// TLS to the collector: the YAML `tls`, else the standard variables; only for https.
    fn export_tls(
        &mut self,
        e: &schema::ExportConfig,
        endpoint: &str,
        env: &Env,
    ) -> Option<ClientTlsSettings> {
        let https = endpoint.starts_with("https://");
        if let Some(t) = &e.tls {
            let settings = self.client_tls(t, "export.tls");
            if !https {
                let at = [&t.ca, &t.server_name, &t.cert, &t.key]
                    .into_iter()
                    .flatten()
                    .next()
                    .map(|t| t.referenced);
                if let Some(at) = at {
                    self.error(&at, "export.tls", "applies to an https:// endpoint");
                }
            }
            return https.then_some(settings);
        }
        if !https {
            return None;
        }
        let pick = |name: &str| {
            [
                format!("OTEL_EXPORTER_OTLP_TRACES_{name}"),
                format!("OTEL_EXPORTER_OTLP_{name}"),
            ]
            .into_iter()
            .find_map(|var| env.get(&var).filter(|v| !v.is_empty()).map(|v| (var, v)))
        };
        let mut settings = ClientTlsSettings::default();
        if let Some((var, ca)) = pick("CERTIFICATE") {
            let path = std::path::PathBuf::from(ca);
            if let Err(m) = crate::tls::roots(Some(&path)) {
                self.env_error(&var, m);
            }
            settings.ca = Some(path);
        }
        match (pick("CLIENT_CERTIFICATE"), pick("CLIENT_KEY")) {
            (None, None) => {}
            (Some((_, cert)), Some((_, key))) => {
                let files = CertFiles {
                    cert: cert.into(),
                    key: key.into(),
                };
                if let Err(m) = crate::tls::certified_key(&files) {
                    self.env_error("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", m);
                }
                settings.identity = Some(files);
            }
            (Some((var, _)), None) | (None, Some((var, _))) => {
                self.env_error(&var, "client certificate and key go together");
            }
        }
        Some(settings)
    }
}

pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let bad = || format!("invalid endpoint `{s}`: expected http://host:port or https://host:port");
    let (tls, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(bad()),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(bad());
    }
    let authority: http::uri::Authority = rest.parse().map_err(|_| bad())?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad());
    }
    let default_port = if tls { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let authority = if authority.port().is_some() {
        authority
    } else {
        format!("{}:{default_port}", authority.host())
            .parse()
            .map_err(|_| bad())?
    };
    Ok(Endpoint {
        tls,
        host,
        port,
        authority,
    })
}
