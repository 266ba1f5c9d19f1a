//! Errors that end an exchange, each knowing its side, its status and its `error.type`.

use std::error::Error as StdError;
use std::io;

use http::StatusCode;

/// Which side of the proxy failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// Why tracegate answered a request itself. One value sets the response status, the span's
/// `error.type` and its status description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matched the request.
    NoRoute,
    /// The request target is longer than `limits.max_uri_length`.
    UriTooLong,
    /// A request that could be read two ways (both `Content-Length` and
    /// `Transfer-Encoding`): refused, as a smuggling attempt.
    Ambiguous,
    /// The client paused its request body longer than `limits.request_body_timeout`.
    RequestBodyTimeout,
    /// A `CONNECT` asking for a tunnel (HTTP/1.1, or HTTP/2 without `:protocol`):
    /// tracegate forwards requests, it does not open tunnels (as nginx, 405).
    Tunnel,
    /// The upstream refused the TCP connection.
    ConnectionRefused,
    /// The TCP connection was not established within `connect_timeout`.
    ConnectTimeout,
    /// Any other failure to connect (DNS, unreachable network).
    ConnectFailed,
    /// The TLS handshake with an `https://` upstream failed (certificate not trusted, name
    /// mismatch, no common protocol).
    TlsFailed,
    /// The upstream closed or reset the connection before a complete response.
    ConnectionReset,
    /// No response headers within `request_timeout`.
    Timeout,
    /// The upstream sent something that is not valid HTTP.
    Protocol,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::Ambiguous => StatusCode::BAD_REQUEST,
            ProxyError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Tunnel => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ConnectTimeout | ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ConnectionRefused
            | ProxyError::ConnectFailed
            | ProxyError::TlsFailed
            | ProxyError::ConnectionReset
            | ProxyError::Protocol => StatusCode::BAD_GATEWAY,
        }
    }

    /// Low-cardinality `error.type`.
    pub fn error_type(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "route_not_found",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::Ambiguous => "malformed_request",
            ProxyError::RequestBodyTimeout => "request_body_timeout",
            ProxyError::Tunnel => "method_not_allowed",
            ProxyError::ConnectionRefused => "connection_refused",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::ConnectFailed => "connect_error",
            ProxyError::TlsFailed => "tls_handshake_failed",
            ProxyError::ConnectionReset => "connection_reset",
            ProxyError::Timeout => "timeout",
            ProxyError::Protocol => "upstream_protocol_error",
        }
    }

    pub fn side(self) -> Side {
        match self {
            ProxyError::NoRoute
            | ProxyError::UriTooLong
            | ProxyError::Ambiguous
            | ProxyError::RequestBodyTimeout
            | ProxyError::Tunnel => Side::Downstream,
            _ => Side::Upstream,
        }
    }

    /// Can a request that failed this way be sent again? When the connection could not be
    /// made nothing was sent: any method. A reset before any response: idempotent methods
    /// only (RFC 9110 9.2.2). A timeout: never (the upstream may still be working on it).
    pub fn retryable(self, method: &http::Method) -> bool {
        use http::Method;
        match self {
            ProxyError::ConnectionRefused
            | ProxyError::ConnectFailed
            | ProxyError::ConnectTimeout => true,
            ProxyError::ConnectionReset => matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            ),
            _ => false,
        }
    }

    /// Human text for the JSON body of the generated response.
    pub fn message(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route matches this request",
            ProxyError::UriTooLong => "the request target is too long",
            ProxyError::Ambiguous => "the request has both Content-Length and Transfer-Encoding",
            ProxyError::RequestBodyTimeout => "the request body did not arrive in time",
            ProxyError::Tunnel => "CONNECT tunnels are not offered here",
            ProxyError::ConnectionRefused => "the upstream refused the connection",
            ProxyError::ConnectTimeout => "the upstream did not accept a connection in time",
            ProxyError::ConnectFailed => "could not connect to the upstream",
            ProxyError::TlsFailed => "the TLS handshake with the upstream failed",
            ProxyError::ConnectionReset => "the upstream closed the connection before responding",
            ProxyError::Timeout => "the upstream did not respond in time",
            ProxyError::Protocol => "the upstream sent an invalid response",
        }
    }

    /// Classifies a failed upstream call from its error chain; `connecting`: the
    /// connection (TCP, TLS) was not made.
    pub fn classify(e: &(dyn StdError + 'static), connecting: bool) -> Self {
        let io_kind = io_kind(e);
        if source_chain(e).any(|s| s.downcast_ref::<crate::upstream::BodyPaused>().is_some()) {
            return ProxyError::RequestBodyTimeout;
        }
        if connecting {
            if source_chain(e).any(is_tls_error) {
                return ProxyError::TlsFailed;
            }
            return match io_kind {
                Some(io::ErrorKind::ConnectionRefused) => ProxyError::ConnectionRefused,
                Some(io::ErrorKind::TimedOut) => ProxyError::ConnectTimeout,
                _ => ProxyError::ConnectFailed,
            };
        }
        match io_kind {
            Some(
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof,
            ) => ProxyError::ConnectionReset,
            _ => {
                let closed = source_chain(e)
                    .filter_map(|s| s.downcast_ref::<hyper::Error>())
                    .any(|h| h.is_incomplete_message() || h.is_canceled() || h.is_closed());
                if closed {
                    ProxyError::ConnectionReset
                } else {
                    ProxyError::Protocol
                }
            }
        }
    }
}

/// A failed upstream call: its classification and the underlying error's text (for the
/// CLIENT span's `exception` event).
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: ProxyError,
    pub detail: String,
}

impl Failure {
    /// A failed call; `connecting`: the connection (TCP, TLS) was not made.
    pub fn new(e: &(dyn StdError + 'static), connecting: bool) -> Self {
        Failure {
            kind: ProxyError::classify(e, connecting),
            detail: describe(e),
        }
    }
}

/// Every message in an error's source chain, outermost first, repeats left out.
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    for s in source_chain(e) {
        let msg = s.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

fn source_chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(e);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

/// A rustls error, directly or wrapped in `io::Error`s (whose `source` skips their payload;
/// hyper-rustls wraps tokio-rustls's io error in another one).
fn is_tls_error(e: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        current = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn StdError + 'static));
    }
    false
}

fn io_kind(e: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    source_chain(e).find_map(|s| s.downcast_ref::<io::Error>().map(io::Error::kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_one_status_and_type() {
        let all = [
            ProxyError::NoRoute,
            ProxyError::UriTooLong,
            ProxyError::Ambiguous,
            ProxyError::RequestBodyTimeout,
            ProxyError::ConnectionRefused,
            ProxyError::ConnectTimeout,
            ProxyError::ConnectFailed,
            ProxyError::TlsFailed,
            ProxyError::ConnectionReset,
            ProxyError::Timeout,
            ProxyError::Protocol,
        ];
        for e in all {
            let s = e.status().as_u16();
            assert!(matches!(s, 400 | 404 | 408 | 414 | 502 | 504), "{e:?}");
            assert_eq!(e.side() == Side::Downstream, s < 500);
            assert!(!e.error_type().is_empty());
        }
        assert_eq!(ProxyError::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn describe_joins_the_source_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(describe(&e), "client error (Connect): Connection refused");
        assert_eq!(
            ProxyError::ConnectionRefused.status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
