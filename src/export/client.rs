//! Sending encoded batches to the collector: OTLP/gRPC ([`super::grpc`]) and OTLP/HTTP
//! protobuf through hyper's pooled client, and the retry policy the OTLP specification asks
//! for around both.
//!
//! Retryable failures (gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED,
//! OUT_OF_RANGE, DATA_LOSS, RESOURCE_EXHAUSTED with a retry delay; HTTP 429, 502, 503, 504,
//! and connection errors) are tried again after an exponential backoff with jitter
//! (100 ms, doubling, plus up to 100 ms), at most 3 times, never waiting longer than
//! `max_wait` unless the collector asked for a longer pause, and never past the timeout.

use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;

use super::grpc::GrpcTransport;
use super::otlp::{Field, Reader};
use crate::config::{ClientTlsSettings, OtlpSettings, Protocol};

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_JITTER_MS: u64 = 100;
const MAX_RETRIES: u32 = 3;
/// The longest pause a collector's own retry delay (`Retry-After`, `RetryInfo`) gets.
const MAX_THROTTLE: Duration = Duration::from_secs(30);
/// The most of a collector's answer body read.
pub(super) const MAX_ANSWER: usize = 64 * 1024;

/// One `ExportTraceServiceRequest`: the head (resource and scope) and the spans' bytes.
/// Cloning shares the bytes: a retry sends the same request again.
#[derive(Clone, Debug)]
pub struct Payload {
    pub head: Bytes,
    pub spans: Bytes,
}

impl Payload {
    fn len(&self) -> usize {
        self.head.len() + self.spans.len()
    }
}

/// A request body of two parts, each sent as it is: a batch's bytes are not copied into
/// one buffer first (a retry sends the same `Bytes` again). Empty parts are skipped.
pub(super) struct Parts(pub(super) [Bytes; 2]);

impl Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.0.iter_mut().find(|p| !p.is_empty());
        Poll::Ready(next.map(|p| Ok(Frame::data(std::mem::take(p)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|p| p.len() as u64).sum())
    }
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug)]
pub(super) enum Failure {
    Retryable(String),
    /// The collector asked to wait this long first.
    Throttled(Duration, String),
    Permanent(String),
}

/// The collector's client, one per exporter.
pub struct Client {
    transport: Transport,
    /// Bounds an export, retries included.
    timeout: Duration,
}

enum Transport {
    Grpc(Box<GrpcTransport>),
    Http(Box<HttpTransport>),
}

struct HttpTransport {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Parts>,
    uri: http::Uri,
    headers: http::HeaderMap,
    gzip: bool,
}

impl Client {
    /// Builds the client (no connection yet: the first export connects). Must run inside a
    /// tokio runtime.
    pub fn new(o: &OtlpSettings) -> Result<Client, String> {
        let cannot = |e: &dyn std::fmt::Display| {
            format!(
                "cannot build the {} exporter for {}: {e}",
                o.protocol.as_str(),
                o.endpoint
            )
        };
        let transport = match o.protocol {
            Protocol::Grpc => Transport::Grpc(Box::new(GrpcTransport::new(o)?)),
            Protocol::HttpProtobuf => {
                let uri: http::Uri = o.endpoint.parse().map_err(|e| cannot(&e))?;
                let mut headers = http::HeaderMap::new();
                for (k, v) in &o.headers {
                    let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(k.as_bytes()),
                        http::HeaderValue::from_str(v),
                    ) else {
                        return Err(format!("export header `{k}` is not a valid HTTP header"));
                    };
                    headers.append(name, value);
                }
                let client = HyperClient::builder(hyper_util::rt::TokioExecutor::new())
                    .build(https_connector(o.tls.as_ref(), false)?);
                Transport::Http(Box::new(HttpTransport {
                    client,
                    uri,
                    headers,
                    gzip: o.gzip,
                }))
            }
        };
        Ok(Client {
            transport,
            timeout: o.timeout,
        })
    }

    /// Sends one request, retrying what may succeed later, within the exporter timeout.
    /// Returns how many spans the collector said it rejected (a partial success).
    pub async fn export(&self, payload: &Payload, max_wait: Duration) -> Result<u64, String> {
        let timeout = self.timeout;
        let started = Instant::now();
        let mut backoff = INITIAL_BACKOFF;
        let mut retries = 0;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let failure = match tokio::time::timeout(left, self.attempt(payload, left)).await {
                Ok(Ok(rejected)) => return Ok(rejected),
                Ok(Err(f)) => f,
                Err(_) => Failure::Retryable(format!("no answer within {timeout:?}")),
            };
            let (wait, why) = match failure {
                Failure::Permanent(why) => return Err(why),
                Failure::Retryable(why) => (backoff.saturating_add(jitter()).min(max_wait), why),
                Failure::Throttled(asked, why) => {
                    backoff = backoff.max(asked.min(MAX_THROTTLE));
                    (backoff.saturating_add(jitter()), why)
                }
            };
            if retries == MAX_RETRIES || wait >= timeout.saturating_sub(started.elapsed()) {
                return Err(why);
            }
            retries += 1;
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    async fn attempt(&self, payload: &Payload, left: Duration) -> Result<u64, Failure> {
        match &self.transport {
            Transport::Grpc(g) => g.attempt(payload, left).await,
            Transport::Http(h) => {
                let HttpTransport {
                    client,
                    uri,
                    headers,
                    gzip,
                } = &**h;
                let body = if *gzip {
                    let mut z = flate2::write::GzEncoder::new(
                        Vec::with_capacity(payload.len() / 4),
                        flate2::Compression::fast(),
                    );
                    let written = z
                        .write_all(&payload.head)
                        .and_then(|()| z.write_all(&payload.spans))
                        .and_then(|()| z.finish());
                    let z = written.map_err(|e| Failure::Permanent(format!("gzip: {e}")))?;
                    Parts([Bytes::from(z), Bytes::new()])
                } else {
                    // The spans go out as encoded, after the resource and scope.
                    Parts([payload.head.clone(), payload.spans.clone()])
                };
                let mut request = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .header(http::header::USER_AGENT, USER_AGENT)
                    .body(body)
                    .map_err(|e| Failure::Permanent(e.to_string()))?;
                if *gzip {
                    request.headers_mut().insert(
                        http::header::CONTENT_ENCODING,
                        http::HeaderValue::from_static("gzip"),
                    );
                }
                for (k, v) in headers.iter() {
                    request.headers_mut().append(k, v.clone());
                }
                let answer = client
                    .request(request)
                    .await
                    .map_err(|e| Failure::Retryable(format!("collector unreachable: {e}")))?;
                let status = answer.status();
                let retry_after = answer
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = Limited::new(answer.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if status.is_success() {
                    return Ok(rejected_spans(&body));
                }
                let why = format!("collector answered {status}");
                Err(match (status.as_u16(), retry_after) {
                    (429 | 503, Some(d)) => Failure::Throttled(d, why),
                    (429 | 502 | 503 | 504, _) => Failure::Retryable(why),
                    _ => Failure::Permanent(why),
                })
            }
        }
    }
}

pub(super) const USER_AGENT: &str = concat!("tracegate/", env!("CARGO_PKG_VERSION"));

fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(0..=MAX_JITTER_MS))
}

/// `google.rpc.RetryInfo.retry_delay` from a status's details (`google.rpc.Status`:
/// details = 3, each an `Any` with type_url = 1 and value = 2; RetryInfo: retry_delay = 1,
/// a Duration of seconds = 1 and nanos = 2).
pub(super) fn retry_delay(details: &[u8]) -> Option<Duration> {
    const RETRY_INFO: &[u8] = b"type.googleapis.com/google.rpc.RetryInfo";
    for field in Reader::new(details) {
        let Field::Bytes(3, any) = field else {
            continue;
        };
        let mut is_retry_info = false;
        let mut value: &[u8] = &[];
        for f in Reader::new(any) {
            match f {
                Field::Bytes(1, url) => is_retry_info = url == RETRY_INFO,
                Field::Bytes(2, v) => value = v,
                _ => {}
            }
        }
        if !is_retry_info {
            continue;
        }
        let duration = Reader::new(value).find_map(|f| match f {
            Field::Bytes(1, d) => Some(d),
            _ => None,
        })?;
        let (mut secs, mut nanos) = (0u64, 0u32);
        for f in Reader::new(duration) {
            match f {
                Field::Varint(1, s) => secs = s,
                Field::Varint(2, n) => nanos = u32::try_from(n).unwrap_or(0) % 1_000_000_000,
                _ => {}
            }
        }
        return Some(Duration::new(secs, nanos));
    }
    None
}

/// `ExportTraceServiceResponse.partial_success.rejected_spans` (fields 1 and 1).
pub(super) fn rejected_spans(answer: &[u8]) -> u64 {
    Reader::new(answer)
        .find_map(|f| match f {
            Field::Bytes(1, partial) => Some(partial),
            _ => None,
        })
        .and_then(|partial| {
            Reader::new(partial).find_map(|f| match f {
                Field::Varint(1, n) => Some(n),
                _ => None,
            })
        })
        .unwrap_or(0)
}

/// The exporter's connector: TLS for an `https://` endpoint, ALPN `h2` for gRPC (`h2`
/// true) or `http/1.1`.
pub(super) fn https_connector(
    t: Option<&ClientTlsSettings>,
    h2: bool,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let config = match t {
        Some(t) => crate::tls::client_config(t),
        None => crate::tls::unused_client_config(),
    }
    .map_err(|e| format!("export TLS: {e}"))?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match t.and_then(|t| t.server_name.as_deref()) {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| format!("export TLS server_name: {e}"))?,
            ))
        }
        None => builder,
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    Ok(if h2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}
