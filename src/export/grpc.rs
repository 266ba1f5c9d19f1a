//! OTLP/gRPC on hyper's HTTP/2 client: one unary `Export` call a batch.
//!
//! The request is framed here (gRPC's five-byte prefix, then the message) and its parts go
//! to HTTP/2 as they are: the encoded spans are not copied into a codec's buffer first
//! (tonic's `Encoder` copied each ~220 KB batch once more, a fifth of the process's
//! last-level cache write misses under load, benches/README.md). HTTP/2's frames then
//! leave in one write a batch (`super::gather`) instead of sixteen, the spans written from
//! where the encoder put them (lent for the call: only the frames' heads are copied). The
//! answer's
//! `grpc-status` is read from its headers (a trailers-only answer) or its trailers, with
//! `grpc-message` and the `google.rpc.Status` details that may carry a `RetryInfo`.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;

use super::client::{
    Failure, MAX_ANSWER, Parts, Payload, USER_AGENT, https_connector, rejected_spans,
};
use super::gather::{Gather, Lent};
use crate::config::OtlpSettings;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// gRPC status codes this client tells apart or maps HTTP statuses to (the rest are named
/// for the log only).
const CANCELLED: u32 = 1;
const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const PERMISSION_DENIED: u32 = 7;
const RESOURCE_EXHAUSTED: u32 = 8;
const ABORTED: u32 = 10;
const OUT_OF_RANGE: u32 = 11;
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;
const DATA_LOSS: u32 = 15;
const UNAUTHENTICATED: u32 = 16;

/// The codes' names as gRPC spells them in its documentation (and tonic in its logs).
const NAMES: [&str; 17] = [
    "Ok",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

pub struct GrpcTransport {
    client: HyperClient<Gather<hyper_rustls::HttpsConnector<HttpConnector>>, Parts>,
    uri: http::Uri,
    /// The fixed headers and the configured metadata, sent with every call.
    headers: HeaderMap,
    gzip: bool,
    /// The batch being sent, lent to the connection (`super::gather`).
    lent: Lent,
}

impl GrpcTransport {
    /// Builds the transport; the first call connects (HTTP/2 with prior knowledge for
    /// `http://`, ALPN `h2` for `https://`).
    pub fn new(o: &OtlpSettings) -> Result<GrpcTransport, String> {
        let cannot = |e: &dyn std::fmt::Display| {
            format!("cannot build the grpc exporter for {}: {e}", o.endpoint)
        };
        let endpoint: http::Uri = o.endpoint.parse().map_err(|e| cannot(&e))?;
        let (Some(scheme), Some(authority)) = (endpoint.scheme(), endpoint.authority()) else {
            return Err(cannot(&"the endpoint needs a scheme and a host"));
        };
        let uri = http::Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(EXPORT_PATH)
            .build()
            .map_err(|e| cannot(&e))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &o.headers {
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                HeaderValue::from_str(v),
            ) else {
                return Err(format!("export header `{k}` is not valid gRPC metadata"));
            };
            headers.insert(name, value);
        }
        let fixed = [
            (header::CONTENT_TYPE, "application/grpc"),
            (header::TE, "trailers"),
            (header::USER_AGENT, USER_AGENT),
        ];
        for (name, value) in fixed {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if o.gzip {
            headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
            headers.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
        }
        let lent = Lent::default();
        let client = HyperClient::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(Gather(https_connector(o.tls.as_ref(), true)?, lent.clone()));
        Ok(GrpcTransport {
            client,
            uri,
            headers,
            gzip: o.gzip,
            lent,
        })
    }

    /// One call, answered within `left` (sent as `grpc-timeout`). Returns how many spans
    /// the collector said it rejected.
    pub async fn attempt(&self, payload: &Payload, left: Duration) -> Result<u64, Failure> {
        let body = if self.gzip {
            gzip_message(payload).map_err(|e| Failure::Permanent(format!("gzip: {e}")))?
        } else {
            message(payload)
        };
        let mut request = http::Request::post(self.uri.clone())
            .body(body)
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        *request.headers_mut() = self.headers.clone();
        request
            .headers_mut()
            .insert("grpc-timeout", grpc_timeout(left));
        // Until the answer is read (or the call is dropped): the spans go out from where
        // they are.
        let _lending = self.lent.lend(&payload.spans);
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|e| Failure::Retryable(format!("collector unreachable: {e}")))?;
        let (head, body) = answer.into_parts();
        // A trailers-only answer (or an error before any message) has the status here.
        if let Some(status) = Status::from(&head.headers) {
            return status.result(0);
        }
        if head.status != StatusCode::OK {
            return Err(http_failure(head.status));
        }
        let collected = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| Failure::Retryable(format!("collector answer cut short: {e}")))?;
        let status = collected.trailers().and_then(Status::from);
        let message = collected.to_bytes();
        match status {
            Some(status) => status.result(answer_rejected(&head.headers, &message)),
            None => Err(Failure::Permanent(
                "collector answered without a grpc-status".into(),
            )),
        }
    }
}

/// `grpc-timeout` in milliseconds (at most 8 digits, as the header allows).
fn grpc_timeout(left: Duration) -> HeaderValue {
    let ms = left.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).unwrap_or(HeaderValue::from_static("1m"))
}

/// `rejected_spans` of the answer's one message: a five-byte prefix (compressed flag,
/// length) then `ExportTraceServiceResponse`, gzip-compressed when the flag says so.
/// Unreadable: none rejected (the status already said the call succeeded).
fn answer_rejected(headers: &HeaderMap, message: &[u8]) -> u64 {
    let Some((&[flag, a, b, c, d], rest)) = message.split_first_chunk::<5>() else {
        return 0;
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    let Some(body) = rest.get(..len) else {
        return 0;
    };
    if flag == 0 {
        return rejected_spans(body);
    }
    // Compressed: only gzip was offered (`grpc-accept-encoding`).
    if headers
        .get("grpc-encoding")
        .is_none_or(|v| v.as_bytes() != b"gzip")
    {
        return 0;
    }
    let mut plain = Vec::new();
    match flate2::read::GzDecoder::new(body)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut plain)
    {
        Ok(_) => rejected_spans(&plain),
        Err(_) => 0,
    }
}

/// The gRPC specification's mapping of an HTTP status without a `grpc-status`.
fn http_failure(status: StatusCode) -> Failure {
    let code = match status.as_u16() {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 502..=504 => UNAVAILABLE,
        _ => UNKNOWN,
    };
    Status {
        code,
        message: format!("HTTP {status}"),
        details: Vec::new(),
    }
    .failure()
}

/// A call's outcome as the collector stated it.
struct Status {
    code: u32,
    message: String,
    /// `grpc-status-details-bin`: a `google.rpc.Status`.
    details: Vec<u8>,
}

impl Status {
    fn from(headers: &HeaderMap) -> Option<Status> {
        let code = headers.get("grpc-status")?;
        // An unreadable status is not a success.
        let code = std::str::from_utf8(code.as_bytes())
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(UNKNOWN);
        let message = headers.get("grpc-message").map_or(String::new(), |m| {
            percent_encoding::percent_decode(m.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        });
        // Binary metadata is base64, with or without padding.
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|d| {
                let d = d.as_bytes();
                let d = d.strip_suffix(b"==").or(d.strip_suffix(b"=")).unwrap_or(d);
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(d)
                    .ok()
            })
            .unwrap_or_default();
        Some(Status {
            code,
            message,
            details,
        })
    }

    fn result(self, rejected: u64) -> Result<u64, Failure> {
        if self.code == 0 {
            Ok(rejected)
        } else {
            Err(self.failure())
        }
    }

    /// What the OTLP specification says to do about the code: retry (after the
    /// collector's `RetryInfo` delay when it gave one), or give the batch up.
    fn failure(self) -> Failure {
        let name = NAMES.get(self.code as usize).copied().unwrap_or("Unknown");
        let why = format!("collector answered {name}: {}", self.message);
        let asked = super::client::retry_delay(&self.details);
        match self.code {
            RESOURCE_EXHAUSTED => match asked {
                Some(d) => Failure::Throttled(d, why),
                None => Failure::Permanent(why),
            },
            UNAVAILABLE => match asked.filter(|d| !d.is_zero()) {
                Some(d) => Failure::Throttled(d, why),
                None => Failure::Retryable(why),
            },
            CANCELLED | DEADLINE_EXCEEDED | ABORTED | OUT_OF_RANGE | DATA_LOSS => {
                Failure::Retryable(why)
            }
            _ => Failure::Permanent(why),
        }
    }
}

/// The request body: gRPC's prefix with the resource and scope, then the spans' bytes as
/// the encoder left them.
fn message(p: &Payload) -> Parts {
    let mut first = BytesMut::with_capacity(5 + p.head.len());
    first.put_u8(0);
    first.put_u32((p.head.len() + p.spans.len()) as u32);
    first.put_slice(&p.head);
    Parts([first.freeze(), p.spans.clone()])
}

/// The request body compressed: the prefix flags it, gzip holds the whole message.
fn gzip_message(p: &Payload) -> std::io::Result<Parts> {
    let mut out = vec![1, 0, 0, 0, 0];
    let mut z = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    z.write_all(&p.head)?;
    z.write_all(&p.spans)?;
    out = z.finish()?;
    let len = (out.len() - 5) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Ok(Parts([Bytes::from(out), Bytes::new()]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body::Body as _;
    use std::task::{Context, Poll};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn payload() -> Payload {
        Payload {
            head: Bytes::from_static(b"\x0a\x03abc"),
            spans: Bytes::from_static(b"\x12\x04span\x12\x04more"),
        }
    }

    fn collect(m: Parts) -> Vec<u8> {
        let mut m = std::pin::pin!(m);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(f))) = m.as_mut().poll_frame(&mut cx) {
            out.extend_from_slice(&f.into_data().unwrap());
        }
        assert!(m.is_end_stream());
        out
    }

    #[test]
    fn a_message_is_the_prefix_then_the_parts_as_they_are() {
        let p = payload();
        let m = message(&p);
        assert_eq!(m.size_hint().exact(), Some(5 + 5 + 12));
        // The spans go out as the same `Bytes`, not a copy.
        assert_eq!(m.0[1].as_ptr(), p.spans.as_ptr());
        let body = collect(m);
        assert_eq!(&body[..5], &[0, 0, 0, 0, 17]);
        assert_eq!(&body[5..], b"\x0a\x03abc\x12\x04span\x12\x04more");
    }

    #[test]
    fn a_gzip_message_is_flagged_and_inflates_to_the_request() {
        let body = collect(gzip_message(&payload()).unwrap());
        assert_eq!(body[0], 1);
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, body.len() - 5);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[5..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"\x0a\x03abc\x12\x04span\x12\x04more");
    }

    /// `ExportTraceServiceResponse { partial_success { rejected_spans: 7 } }`.
    const REJECTED_7: &[u8] = b"\x0a\x02\x08\x07";

    #[test]
    fn the_answer_says_how_many_spans_were_rejected() {
        let mut framed = vec![0, 0, 0, 0, 4];
        framed.extend_from_slice(REJECTED_7);
        assert_eq!(answer_rejected(&HeaderMap::new(), &framed), 7);
        // Compressed, as `grpc-encoding` says.
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, REJECTED_7).unwrap();
        let z = z.finish().unwrap();
        let mut framed = vec![1];
        framed.extend_from_slice(&(z.len() as u32).to_be_bytes());
        framed.extend_from_slice(&z);
        let gzip = headers(&[("grpc-encoding", "gzip")]);
        assert_eq!(answer_rejected(&gzip, &framed), 7);
        // In an encoding not asked for, or cut short, or empty: nothing known rejected.
        assert_eq!(
            answer_rejected(&headers(&[("grpc-encoding", "zstd")]), &framed),
            0
        );
        assert_eq!(answer_rejected(&HeaderMap::new(), &[0, 0, 0, 0, 9, 1]), 0);
        assert_eq!(answer_rejected(&HeaderMap::new(), &[]), 0);
    }

    #[test]
    fn statuses_are_read_with_their_message_and_retry_delay() {
        assert!(Status::from(&HeaderMap::new()).is_none());
        let ok = Status::from(&headers(&[("grpc-status", "0")])).unwrap();
        assert!(matches!(ok.result(3), Ok(3)));

        // google.rpc.Status { details: [Any { type_url: RetryInfo, value: { retry_delay:
        // { seconds: 2 } } }] }, base64 with and without its padding.
        let mut any =
            b"\x0a\x28type.googleapis.com/google.rpc.RetryInfo\x12\x04\x0a\x02\x08\x02".to_vec();
        any.insert(0, any.len() as u8);
        any.insert(0, 0x1a);
        let padded = base64::engine::general_purpose::STANDARD.encode(&any);
        assert!(padded.ends_with('='));
        for details in [padded.as_str(), padded.trim_end_matches('=')] {
            let s = Status::from(&headers(&[
                ("grpc-status", "8"),
                ("grpc-message", "slow%20down%21"),
                ("grpc-status-details-bin", details),
            ]))
            .unwrap();
            assert_eq!(s.message, "slow down!");
            match s.failure() {
                Failure::Throttled(d, why) => {
                    assert_eq!(d, Duration::from_secs(2));
                    assert_eq!(why, "collector answered ResourceExhausted: slow down!");
                }
                f => panic!("{f:?}"),
            }
        }
        // Without a delay RESOURCE_EXHAUSTED is final; UNAVAILABLE is retried; a code
        // that is not a number is UNKNOWN, final.
        let code = |c: &str| {
            Status::from(&headers(&[("grpc-status", c)]))
                .unwrap()
                .failure()
        };
        assert!(matches!(code("8"), Failure::Permanent(_)));
        assert!(matches!(code("14"), Failure::Retryable(_)));
        for retried in ["1", "4", "10", "11", "15"] {
            assert!(matches!(code(retried), Failure::Retryable(_)), "{retried}");
        }
        for kept in ["3", "7", "12", "13", "16", "99"] {
            assert!(matches!(code(kept), Failure::Permanent(_)), "{kept}");
        }
        match code("x") {
            Failure::Permanent(why) => assert!(why.contains("Unknown"), "{why}"),
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn http_statuses_map_as_the_grpc_specification_says() {
        for s in [429, 502, 503, 504] {
            let f = http_failure(StatusCode::from_u16(s).unwrap());
            assert!(matches!(f, Failure::Retryable(_)), "{s}");
        }
        for (s, name) in [
            (400, "Internal"),
            (401, "Unauthenticated"),
            (403, "PermissionDenied"),
            (404, "Unimplemented"),
            (500, "Unknown"),
        ] {
            match http_failure(StatusCode::from_u16(s).unwrap()) {
                Failure::Permanent(why) => assert!(why.contains(name), "{s}: {why}"),
                f => panic!("{s}: {f:?}"),
            }
        }
    }

    #[test]
    fn grpc_timeout_is_whole_milliseconds_in_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(1 << 30)), "99999999m");
    }
}
