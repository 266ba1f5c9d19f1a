//! Configuration: YAML schema (`schema`), the standard `OTEL_*` variables, and validation
//! that turns both into [`Settings`], the checked plain data the rest of tracegate builds
//! running objects from.
//!
//! Loading takes `(text, source_name, env)`, so tests cover bad configs with no files and no
//! process environment. Every problem is reported at once, each naming file, line and key.

mod describe;
pub mod duration;
mod env;
mod parse;
pub mod schema;
mod validate;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue};
use regex::Regex;

pub use env::{Env, process_env};

use crate::context::{Format, Propagation};
pub use validate::parse_endpoint;

/// One problem in a config, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// File name, `command line` or `environment`.
    pub source: String,
    /// 1-based line; 0 when the problem has no line (environment variables).
    pub line: u64,
    pub column: u64,
    /// Key path, e.g. `routes[2].upstream`, or the variable name.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.source, self.line, self.column, self.key, self.message
            )
        }
    }
}

/// Every problem found in one config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A proxy listener: where it binds, and TLS when it terminates TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub tls: Option<ServerTlsSettings>,
}

impl ListenerSettings {
    pub fn plain(address: SocketAddr) -> Self {
        ListenerSettings { address, tls: None }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a valid certificate fails the handshake.
    Required,
    /// A client may present none; one it presents must be valid.
    Optional,
}

/// TLS termination on a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsSettings {
    /// Chosen by the client's SNI; the first is the default.
    pub certificates: Vec<CertFiles>,
    pub min_version: TlsVersion,
    /// CA bundle that verifies client certificates (mTLS); `None`: no client certificates.
    pub client_ca: Option<std::path::PathBuf>,
    pub client_auth: ClientAuth,
    /// Record the verified client certificate's subject as `tls.client.subject`.
    pub record_client_subject: bool,
}

/// TLS towards an upstream or the collector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsSettings {
    /// CA bundle; `None`: the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// Name sent as SNI and verified in the server certificate, instead of the URL's host.
    pub server_name: Option<String>,
    /// Client certificate (mTLS).
    pub identity: Option<CertFiles>,
}

/// Validated, effective configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub source: String,
    pub listeners: Vec<ListenerSettings>,
    pub admin: Option<SocketAddr>,
    /// Recent requests the trace viewer keeps; 0: no viewer.
    pub viewer_capacity: usize,
    pub trace_link: Option<String>,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
    pub tracing: TracingSettings,
    pub export: ExportSettings,
    pub shutdown: ShutdownSettings,
    pub limits: LimitSettings,
    pub access_log: AccessLogSettings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogSettings {
    Off,
    On {
        format: AccessLogFormat,
        target: AccessLogTarget,
        /// Queued lines before drops.
        buffer: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Stderr,
    File(std::path::PathBuf),
}

#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub name: String,
    pub protocol: UpstreamProtocol,
    /// For `https://` endpoints (`Some` when there is one).
    pub tls: Option<ClientTlsSettings>,
    pub retries: u32,
    pub endpoints: Vec<Endpoint>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// The whole exchange, arrival to last response byte; `None`: no bound.
    pub total_timeout: Option<Duration>,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    pub balance: Balance,
    /// Zero: no periodic resolution.
    pub dns_refresh: Duration,
    pub outlier: OutlierSettings,
    pub health_check: Option<HealthCheckSettings>,
    pub retry_budget: RetryBudget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// Power of two choices on outstanding requests.
    LeastRequest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierSettings {
    /// 0: never eject.
    pub consecutive_failures: u32,
    pub ejection_time: Duration,
    pub max_ejected_percent: u8,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(30),
            max_ejected_percent: 50,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSettings {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    pub percent: u32,
    pub min_concurrency: u32,
}

/// How tracegate talks to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2: prior knowledge over cleartext, ALPN `h2` over TLS.
    Http2,
    /// ALPN offers `h2` and `http/1.1` (TLS); HTTP/1.1 over cleartext.
    Auto,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// An `http://host:port` or `https://host:port` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host:port`, as it goes into the upstream request URI.
    pub authority: http::uri::Authority,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Any,
    Exact(String),
    /// Stored without a trailing `/`, matched on segment boundaries.
    Prefix(String),
    /// Anchored to the whole path.
    Regex(Regex),
}

#[derive(Clone, Debug)]
pub enum HostMatch {
    /// Lowercase host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

#[derive(Clone, Debug)]
pub struct RouteSettings {
    /// `http.route`.
    pub name: String,
    pub path: PathMatch,
    pub host: Option<HostMatch>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Index into `Settings::upstreams`.
    pub upstream: usize,
    /// This route's ratio (its own, else the global one).
    pub ratio: f64,
    /// This route's slow threshold (its own, else the global one); `None`: off.
    pub slow_threshold: Option<Duration>,
    /// Never traced.
    pub excluded: bool,
    /// Static attributes on this route's spans.
    pub attributes: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct TracingSettings {
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    pub service_name: String,
    pub service_version: String,
    /// Resource attributes other than service name and version.
    pub resource_attributes: Vec<(String, String)>,
    pub trace_id_header: Option<HeaderName>,
    pub correlation_headers: Vec<HeaderName>,
    pub client_spans: bool,
    pub sampling: SamplingSettings,
    pub propagation: Propagation,
    pub baggage_attributes: Vec<String>,
    /// Opt-In SERVER span attributes to record.
    pub opt_in: crate::span::OptIn,
    pub capture: CaptureSettings,
    pub redact_query: Vec<String>,
    /// Static attributes on every span.
    pub attributes: Vec<(String, String)>,
}

/// Which headers become span attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureSettings {
    pub request: HeaderList,
    pub response: HeaderList,
    /// Sensitive headers recorded with their real value.
    pub reveal: Vec<HeaderName>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HeaderList {
    #[default]
    None,
    All,
    Some(Vec<HeaderName>),
}

/// Never recorded (only as `REDACTED`) unless revealed.
pub const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
pub const DEFAULT_REDACT_QUERY: [&str; 4] =
    ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// Downward-API variables that become Kubernetes resource attributes.
pub const K8S_ENV: [(&str, &str); 7] = [
    ("K8S_POD_NAME", "k8s.pod.name"),
    ("K8S_POD_UID", "k8s.pod.uid"),
    ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
    ("K8S_NODE_NAME", "k8s.node.name"),
    ("K8S_CONTAINER_NAME", "k8s.container.name"),
    ("K8S_DEPLOYMENT_NAME", "k8s.deployment.name"),
    ("K8S_CLUSTER_NAME", "k8s.cluster.name"),
];

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingSettings {
    pub ratio: f64,
    pub parent_based: bool,
    /// New sampled traces per second per process.
    pub rate_limit: Option<f64>,
    pub keep_errors: bool,
    pub slow_threshold: Option<Duration>,
    pub exclude_paths: Vec<String>,
}

pub const DEFAULT_EXCLUDE_PATHS: [&str; 4] = ["/healthz", "/readyz", "/livez", "/metrics"];
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_secs(1);

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings {
            ratio: 1.0,
            parent_based: true,
            rate_limit: None,
            keep_errors: true,
            slow_threshold: Some(DEFAULT_SLOW_THRESHOLD),
            exclude_paths: DEFAULT_EXCLUDE_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExportSettings {
    Disabled,
    Otlp(Box<OtlpSettings>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    pub protocol: Protocol,
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub gzip: bool,
    pub batch_size: usize,
    pub batch_delay: Duration,
    pub queue_limit: usize,
    pub queue_max_bytes: usize,
    /// Export requests in flight at once.
    pub max_concurrent_exports: usize,
    /// For an `https://` endpoint.
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    /// 0: no limit.
    pub max_connections: usize,
    pub max_request_headers: usize,
    pub max_request_header_bytes: usize,
    pub max_uri_length: usize,
    pub header_read_timeout: Duration,
    pub request_body_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    pub http2_server: Http2Server,
}

/// Which HTTP/2 server serves clients (`limits.http2_server`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Http2Server {
    /// hyper's (through `hyper_util`'s `auto` builder).
    Hyper,
    /// tracegate's own (`listen::http2`), the default.
    #[default]
    Native,
}

impl Http2Server {
    pub fn as_str(self) -> &'static str {
        match self {
            Http2Server::Hyper => "hyper",
            Http2Server::Native => "native",
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_connections: 10_000,
            max_request_headers: 100,
            max_request_header_bytes: 65_536,
            max_uri_length: 8192,
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 256,
            http2_server: Http2Server::Native,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownSettings {
    pub drain_delay: Duration,
    pub grace_period: Duration,
}

/// An IP address range (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Loopback by default: exposing tracegate (or its admin port) takes an explicit address.
pub const DEFAULT_LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
pub const DEFAULT_CORRELATION_HEADERS: [&str; 2] = ["x-request-id", "x-correlation-id"];

/// Parses and validates a config. `env` supplies the `OTEL_*` variables.
pub fn load(text: &str, source: &str, env: &Env) -> Result<Settings, ConfigErrors> {
    let (file, mut errors) = parse::parse_recovering(text, source);
    let mut v = validate::Validator::new(source);
    let settings = file.map(|f| v.settings(f, env));
    errors.append(&mut v.errors);
    match settings {
        Some(s) if errors.is_empty() => Ok(s),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Reads and loads a file.
pub fn load_file(path: &std::path::Path, env: &Env) -> Result<Settings, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            source: source.clone(),
            line: 0,
            column: 0,
            key: "file".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    load(&text, &source, env)
}

/// The zero-config sidecar: one listener, one catch-all route to one upstream.
pub fn sidecar(
    listen: &str,
    upstream: &str,
    admin: Option<&str>,
    env: &Env,
) -> Result<Settings, ConfigErrors> {
    let yaml = format!(
        "listeners:\n  - address: {}\nadmin:\n  address: {}\nupstreams:\n  - name: upstream\n    endpoints: [{}]\nroutes:\n  - name: /*\n    upstream: upstream\n",
        quote(listen),
        quote(&admin.map_or_else(|| DEFAULT_ADMIN.to_string(), str::to_string)),
        quote(upstream)
    );
    load(&yaml, "command line", env)
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests;
