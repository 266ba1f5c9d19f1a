//! The YAML schema: plain data, every field documented, unknown keys rejected.
//!
//! Fields whose value can be invalid beyond its type carry a `Spanned` wrapper so that
//! validation can name the line. Options that the standard `OTEL_*` variables can also set
//! are `Option`: `None` means "not in the YAML", and the environment or the default applies.
//! The README's reference documents every key; a test checks that it names each one.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A YAML string with the line it came from.
pub type Text = Spanned<String>;

/// A section written with no keys (`tracing:` followed only by comments) is YAML `null`:
/// it means "all defaults", like an absent section.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Addresses that accept proxied traffic (HTTP/1.1 and h2c). Default: `127.0.0.1:8080`.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener (health, readiness, metrics).
    #[serde(default, deserialize_with = "null_is_default")]
    pub admin: AdminConfig,
    /// Named groups of upstream endpoints.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, tried in order: the first that matches wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Trace context, correlation ids, resource and sampling.
    #[serde(default, deserialize_with = "null_is_default")]
    pub tracing: TracingConfig,
    /// OTLP export of finished spans.
    #[serde(default, deserialize_with = "null_is_default")]
    pub export: ExportConfig,
    /// Graceful shutdown on SIGTERM/SIGINT.
    #[serde(default, deserialize_with = "null_is_default")]
    pub shutdown: ShutdownConfig,
    /// One line per request.
    #[serde(default, deserialize_with = "null_is_default")]
    pub access_log: AccessLogConfig,
    /// Limits on what clients may send, and how slowly.
    #[serde(default, deserialize_with = "null_is_default")]
    pub limits: LimitsConfig,
}

/// Limits on downstream clients. Each one answers with its status and is counted in
/// `tracegate_downstream_rejected_total{reason}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open client connections per process; beyond, new ones get 503 and are closed. 0: no
    /// limit. Default 10000.
    pub max_connections: Option<usize>,
    /// Request header fields per request; beyond: 431. Default 100.
    pub max_request_headers: Option<usize>,
    /// Bytes of the HTTP/1 request line and headers; beyond: 431. At least 8192. Default 65536.
    pub max_request_header_bytes: Option<Spanned<usize>>,
    /// Bytes of the request target (path and query); beyond: 414. Default 8192.
    pub max_uri_length: Option<usize>,
    /// Time a client has to send a request's headers once it started one; beyond: 408 and
    /// the connection closes (slowloris). Default `10s`.
    pub header_read_timeout: Option<Text>,
    /// Longest pause between two pieces of a request body; beyond: 408 (504 semantics are for
    /// the upstream). Default `60s`.
    pub request_body_timeout: Option<Text>,
    /// An HTTP/1 connection with no request in flight is closed after this. Default `60s`.
    pub idle_timeout: Option<Text>,
    /// Concurrent streams per HTTP/2 connection. Default 256.
    pub http2_max_concurrent_streams: Option<u32>,
    /// Which HTTP/2 server serves clients: `hyper` (hyper's) or `native` (tracegate's own,
    /// `listen::http2`; no WebSocket over HTTP/2 yet). Default `hyper`.
    pub http2_server: Option<Text>,
}

/// The access log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `json`, `text` or `off`. Default `off`.
    pub format: Option<Text>,
    /// `stdout`, `stderr` or a file path (appended to). Default `stdout`.
    pub path: Option<String>,
    /// Lines queued for the writer before new ones are dropped (and counted). Default 8192.
    pub buffer: Option<Spanned<usize>>,
}

/// One proxy listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind, e.g. `0.0.0.0:8080`. Port 0 picks a free port.
    pub address: Text,
    /// Terminate TLS here (HTTP/1.1 and HTTP/2 by ALPN). Default: cleartext.
    pub tls: Option<ServerTlsConfig>,
}

/// TLS termination on a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Certificate chains with their keys. The one whose names (SAN) cover the client's SNI
    /// is used; the first is the default. Files are re-read when they change.
    pub certificates: Vec<CertificateConfig>,
    /// Lowest TLS version accepted: `1.2` or `1.3`. Default `1.2`.
    pub min_version: Option<Text>,
    /// CA bundle (PEM) client certificates are verified against (mTLS). Default: none asked.
    pub client_ca: Option<Text>,
    /// With `client_ca`: `required` (no valid certificate, no handshake) or `optional`.
    /// Default `required`.
    pub client_auth: Option<Text>,
    /// Record the verified client certificate's subject as `tls.client.subject`. Default false.
    pub record_client_subject: Option<bool>,
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Certificate chain file.
    pub cert: Text,
    /// Private key file (PKCS#8, PKCS#1 or SEC1).
    pub key: Text,
}

/// TLS towards an upstream or the collector (used for `https://` URLs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA bundle (PEM) the server certificate must chain to. Default: the system's roots.
    pub ca: Option<Text>,
    /// Name sent as SNI and expected in the server certificate. Default: the URL's host.
    pub server_name: Option<Text>,
    /// Client certificate chain (PEM) for mTLS, with `key`.
    pub cert: Option<Text>,
    /// The client certificate's private key (PEM), with `cert`.
    pub key: Option<Text>,
}

/// The admin listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port`, or `off`. Default `127.0.0.1:9901` (loopback only).
    pub address: Option<Text>,
    /// Recent requests kept for the trace viewer at `/traces` (plus the 50 slowest and the
    /// 100 latest failed, kept apart); 0 turns the viewer off. Default 1000. Above 1,000
    /// requests a second the recent list keeps a sample of them.
    pub traces: Option<usize>,
    /// Link from the viewer to a tracing UI, `{trace_id}` replaced, e.g.
    /// `http://localhost:16686/trace/{trace_id}` (Jaeger). Default none.
    pub trace_link: Option<String>,
}

/// A named upstream service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name that routes refer to; recorded as `tracegate.upstream`.
    pub name: Text,
    /// One or more `http://host:port` endpoints, used round-robin.
    pub endpoints: Vec<Text>,
    /// Time allowed to open a TCP connection. Default `5s`.
    pub connect_timeout: Option<Text>,
    /// Time allowed from the end of the request body to the response headers. Default `30s`.
    pub request_timeout: Option<Text>,
    /// Longest a whole exchange may take, from the request's arrival to the last byte of the
    /// response, retries included; or `off`. Before the response headers its expiry answers
    /// 504; after, the response is cut short. Default `off`.
    pub total_timeout: Option<Text>,
    /// Idle keep-alive connections kept per endpoint. Default 256.
    pub max_idle_per_endpoint: Option<usize>,
    /// How long an idle pooled connection is kept. Default `90s`.
    pub idle_timeout: Option<Text>,
    /// `http1`, `http2` (h2c with prior knowledge for `http://`, ALPN `h2` for `https://`;
    /// needed for gRPC; `h2c` is the same) or `auto` (`https://` only: ALPN chooses).
    /// Default `http1`.
    pub protocol: Option<Text>,
    /// TLS for `https://` endpoints. Default: system roots, no client certificate.
    pub tls: Option<ClientTlsConfig>,
    /// Extra attempts, each to the next endpoint, for a request without a body whose
    /// connection failed (any method) or was reset before a response (idempotent methods).
    /// Default 1.
    pub retries: Option<u32>,
    /// `round_robin` or `least_request` (the fewer outstanding requests of two endpoints
    /// picked at random). Default `round_robin`.
    pub balance: Option<Text>,
    /// How often `http://` endpoints named by DNS are resolved again; each address becomes
    /// an endpoint. `0s`: resolve per connection only. Default `5s`.
    pub dns_refresh: Option<Text>,
    /// Passive health: eject an endpoint after consecutive failures.
    pub outlier: Option<OutlierConfig>,
    /// Active health: probe each endpoint over HTTP. Default: none.
    pub health_check: Option<HealthCheckConfig>,
    /// Limits retries to a share of the requests in flight to this upstream.
    pub retry_budget: Option<RetryBudgetConfig>,
}

/// Passive health (outlier detection).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failures in a row (connect errors, resets, timeouts, 502/503/504) that eject an
    /// endpoint; 0 turns ejection off. Default 5.
    pub consecutive_failures: Option<u32>,
    /// First ejection time; each further ejection of the same endpoint is longer by this,
    /// up to 10 times. Default `30s`.
    pub ejection_time: Option<Text>,
    /// At most this share of the endpoints ejected at once. Default 50.
    pub max_ejected_percent: Option<u8>,
}

/// Active health checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path probed with GET; a 2xx answer is healthy.
    pub path: Text,
    /// Time between probes. Default `5s`.
    pub interval: Option<Text>,
    /// Time a probe may take. Default `2s`.
    pub timeout: Option<Text>,
    /// Failed probes in a row that mark an endpoint unhealthy. Default 3.
    pub unhealthy_threshold: Option<u32>,
    /// Passed probes in a row that mark it healthy again. Default 2.
    pub healthy_threshold: Option<u32>,
}

/// The retry budget.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries in flight may be at most this percent of the requests in flight. Default 20.
    pub percent: Option<u32>,
    /// ... but this many are always allowed. Default 3.
    pub min_concurrency: Option<u32>,
}

/// A route: conditions (all must hold) and where matching requests go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Used as `http.route` and in the span name. Default: the path, prefix (`/api/*`) or regex.
    pub name: Option<Text>,
    /// Conditions; an empty or absent `match` matches every request.
    #[serde(rename = "match", default, deserialize_with = "null_is_default")]
    pub matcher: MatchConfig,
    /// Name of an entry in `upstreams`.
    pub upstream: Text,
    /// Sampling overrides for this route.
    #[serde(default, deserialize_with = "null_is_default")]
    pub sampling: RouteSamplingConfig,
    /// Static attributes added to this route's spans.
    pub attributes: Option<BTreeMap<String, String>>,
}

/// Per-route sampling: each key overrides `tracing.sampling` for this route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSamplingConfig {
    /// Fraction of new traces to sample on this route, 0.0 to 1.0.
    pub ratio: Option<Spanned<f64>>,
    /// Keep head-dropped exchanges slower than this, or `off`.
    pub slow_threshold: Option<Text>,
    /// Never trace this route: no span, the caller's trace headers pass through untouched.
    pub exclude: Option<bool>,
}

/// Route conditions. All given conditions must hold. At most one of `path`, `path_prefix`,
/// `path_regex`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact path (no query), e.g. `/login`.
    pub path: Option<Text>,
    /// Path prefix on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
    pub path_prefix: Option<Text>,
    /// Regular expression that must match the whole path.
    pub path_regex: Option<Text>,
    /// Host (port ignored, case-insensitive); `*.example.com` matches any subdomain.
    pub host: Option<Text>,
    /// Methods, e.g. `[GET, HEAD]`.
    pub methods: Option<Vec<Text>>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// A header condition: present, or equal to `value`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Header name (case-insensitive).
    pub name: Text,
    /// Exact value; when absent the header only has to be present.
    pub value: Option<Text>,
}

/// Trace settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// `service.name`. Else `OTEL_SERVICE_NAME`, else `tracegate`.
    pub service_name: Option<String>,
    /// `service.version`. Else from `OTEL_RESOURCE_ATTRIBUTES`, else tracegate's version.
    pub service_version: Option<String>,
    /// Extra resource attributes; they win over `OTEL_RESOURCE_ATTRIBUTES`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Response header that returns the trace id to the client, or `off`. Default `X-Trace-Id`.
    pub trace_id_header: Option<Text>,
    /// Peers (IP addresses or CIDR ranges, e.g. a load balancer's) whose `X-Forwarded-For`
    /// is believed for `client.address`. Default none: `client.address` is the peer.
    pub trusted_proxies: Option<Vec<Text>>,
    /// Correlation id headers, in order of preference; `[]` turns correlation ids off.
    /// Default `[X-Request-ID, X-Correlation-ID]`.
    pub correlation_headers: Option<Vec<Text>>,
    /// Record a CLIENT span per upstream call. Default true.
    pub client_spans: Option<bool>,
    /// Propagation formats, in extraction order: `tracecontext`, `baggage`, `b3`, `b3multi`,
    /// `jaeger`. Else `OTEL_PROPAGATORS`, else `[tracecontext, baggage]`.
    pub propagation: Option<Vec<Text>>,
    /// Baggage members copied into span attributes as `baggage.<key>`. Default none.
    pub baggage_attributes: Option<Vec<String>>,
    /// The semantic conventions' Opt-In SERVER span attributes to record: `client.port`,
    /// `network.local.address`, `network.local.port`, `network.transport`,
    /// `http.request.body.size`, `http.response.body.size`. Default none.
    pub opt_in_attributes: Option<Vec<Text>>,
    /// Headers recorded as span attributes.
    #[serde(default, deserialize_with = "null_is_default")]
    pub capture: CaptureConfig,
    /// Query parameters whose values are replaced by `REDACTED` in `url.query` and `url.full`.
    /// Default `[AWSAccessKeyId, Signature, sig, X-Goog-Signature]`.
    pub redact_query: Option<Vec<String>>,
    /// Static attributes added to every span.
    pub attributes: Option<BTreeMap<String, String>>,
    /// Head sampling.
    #[serde(default, deserialize_with = "null_is_default")]
    pub sampling: SamplingConfig,
}

/// Header capture: `http.request.header.<name>` / `http.response.header.<name>` (lowercase,
/// string arrays). `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie` are
/// recorded as `REDACTED` even when listed, unless also listed in `reveal`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Request headers to record; `"*"` records all.
    pub request_headers: Option<Vec<Text>>,
    /// Response headers to record; `"*"` records all.
    pub response_headers: Option<Vec<Text>>,
    /// Sensitive headers whose real values are recorded anyway (explicit opt-in).
    pub reveal: Option<Vec<Text>>,
}

/// Head sampling: parent-based; new traces are kept with probability `ratio`, at most
/// `rate_limit` per second; errors and slow exchanges are kept even when the head said no.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Fraction of new traces to sample, 0.0 to 1.0. Else `OTEL_TRACES_SAMPLER[_ARG]`, else 1.0.
    pub ratio: Option<Spanned<f64>>,
    /// Follow the caller's sampled flag. Default true.
    pub parent_based: Option<bool>,
    /// At most this many new sampled traces per second per process. Default: no limit.
    pub rate_limit: Option<Spanned<f64>>,
    /// Keep exchanges the head dropped when they end in a 5xx or an error. Default true.
    pub keep_errors: Option<bool>,
    /// Keep exchanges the head dropped when slower than this, or `off`. Default `1s`.
    pub slow_threshold: Option<Text>,
    /// Exact paths never traced (health checks, scrapes): no span, trace headers untouched.
    /// Default `[/healthz, /readyz, /livez, /metrics]`.
    pub exclude_paths: Option<Vec<Text>>,
}

/// OTLP export.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// `grpc`, `http/protobuf` or `none`. Else `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, else `grpc`.
    pub protocol: Option<Text>,
    /// Collector URL. Else `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, else
    /// `http://localhost:4317` (grpc) or `http://localhost:4318/v1/traces` (http/protobuf).
    /// For http/protobuf, a URL without a path gets `/v1/traces`.
    pub endpoint: Option<Text>,
    /// TLS for an `https://` endpoint. Else `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`,
    /// `..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`; else system roots.
    pub tls: Option<ClientTlsConfig>,
    /// Extra request headers (gRPC metadata), e.g. an auth token. Merged over
    /// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`. Values of the form `${VAR}` are read from the
    /// environment.
    pub headers: Option<BTreeMap<String, Text>>,
    /// Deadline of one export, retries included. Default `10s`.
    pub timeout: Option<Text>,
    /// `gzip` or `none`. Default `none`.
    pub compression: Option<Text>,
    /// Spans per export request. Default 512.
    pub batch_size: Option<Spanned<usize>>,
    /// Longest a span waits before its batch is sent. Default `1s`.
    pub batch_delay: Option<Text>,
    /// Exchanges (one SERVER span plus its CLIENT spans) the queue holds before it drops.
    /// Default 4096.
    pub queue_limit: Option<Spanned<usize>>,
    /// Bytes of span data the queue holds before it drops. Default 16 MiB.
    pub queue_max_bytes: Option<Spanned<usize>>,
    /// Export requests waiting on the collector at once: the next full batch is sent
    /// before the last one is answered (one at a time after a failed call, until one
    /// succeeds). Default 4, at most 64.
    pub max_concurrent_exports: Option<Spanned<usize>>,
}

/// Graceful shutdown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, keep accepting this long with `/readyz` at 503. Default `0s`.
    pub drain_delay: Option<Text>,
    /// Then wait at most this long for in-flight requests and the final span flush.
    /// Default `25s`.
    pub grace_period: Option<Text>,
}
