//! The connections of an endpoint that can only speak HTTP/1.1 (`protocol: http1`, or
//! `auto` over cleartext): hyper's own `client::conn::http1` connections, kept on the
//! endpoint itself. Endpoints where HTTP/2 may be negotiated go through hyper-util's pooled
//! client instead (`Upstream::client`).
//!
//! Why not the engine's pool for these too: per request it hashes the URI's authority to
//! find the host's pool, takes its lock, and spawns a task to give the connection back once
//! the response has been read. Here a request takes the endpoint's list (no lookup), picks a
//! connection whose previous exchange is over, and queues its request on it; the connection
//! never leaves the list while it works, so nothing has to give it back. Instructions per
//! request (`benches/instructions.sh`): 51.1k -> 46.2k with wrk's head, 63.8k -> 58.6k
//! with a browser's, 43.1k -> 38.2k with tracing off.
//!
//! What the engine's pool did and this keeps: a request queued on a kept connection that
//! closed before the request was written goes out again on a new connection; idle
//! connections are closed after `idle_timeout` and beyond `max_idle_per_endpoint`
//! (`reap`, from the upstream's background task); upgrades (WebSocket) take the connection
//! over. What it leaves out: racing a new connection against one coming free (a request
//! that finds none free connects at once, as Envoy's HTTP/1 pool does).

#![allow(clippy::disallowed_types)] // The list's lock: see `Http1Conns::conns`.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::Uri;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Builder, SendRequest};

use super::RequestBody;
use super::connect::Connector;
use crate::error::Failure;

/// One endpoint's HTTP/1.1 connections, busy and idle.
pub struct Http1Conns {
    /// What the connector connects to: `http[s]://authority/`.
    address: Uri,
    /// Every connection still open. A std mutex, held for a scan of the list and a
    /// channel send, never across an `.await` (as hyper-util's own pool does).
    conns: Mutex<Vec<Kept>>,
}

struct Kept {
    sender: SendRequest<RequestBody>,
    /// When `reap` first saw it idle; `None`: it has had a request since.
    idle_since: Option<Instant>,
}

/// What a request queued on a kept connection comes to; an error may hand it back.
type Sent = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>;

/// Connection settings shared by an upstream's endpoints.
pub struct Http1Settings {
    pub connector: Connector,
    /// 0: a connection serves one request and closes.
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl Http1Conns {
    pub fn new(authority: &http::uri::Authority, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let address = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Http1Conns {
            address,
            conns: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` (origin-form URI) on a free connection, or on a new one.
    pub async fn send(
        &self,
        settings: &Http1Settings,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, Failure> {
        let req = match self.on_free(req) {
            Ok(response) => match response.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    // The kept connection closed before the request went out (the upstream
                    // timed it out meanwhile): nothing was sent, a new connection takes it.
                    Some(req) => req,
                    None => return Err(Failure::new(&e.into_error(), false)),
                },
            },
            Err(req) => req,
        };
        let io = {
            use tower_service::Service;
            let mut connector = settings.connector.clone();
            connector
                .call(self.address.clone())
                .await
                .map_err(|e| Failure::new(&*e, true))?
        };
        let (mut sender, conn) = Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Failure::new(&e, true))?;
        tokio::spawn(async move {
            // Its errors reach the request waiting on it.
            let _ = conn.with_upgrades().await;
        });
        let response = sender.send_request(req);
        if settings.max_idle > 0 {
            self.lock().push(Kept {
                sender,
                idle_since: None,
            });
        }
        response.await.map_err(|e| Failure::new(&e, false))
    }

    /// Queues `req` on a connection whose previous exchange is over, the most recently
    /// added first; hands it back when there is none. One atomic load per connection
    /// passed over (at c=256, ~1k instructions per request); closed ones are left for
    /// `reap` to drop.
    #[allow(clippy::result_large_err)]
    fn on_free(
        &self,
        req: Request<RequestBody>,
    ) -> Result<impl Future<Output = Sent> + use<>, Request<RequestBody>> {
        let mut conns = self.lock();
        match conns.iter_mut().rev().find(|k| k.sender.is_ready()) {
            Some(kept) => {
                kept.idle_since = None;
                Ok(kept.sender.try_send_request(req))
            }
            None => Err(req),
        }
    }

    /// Closes the connections idle for longer than `idle_timeout`, and the oldest idle ones
    /// beyond `max_idle`; drops the closed ones. `now`: the time of this pass.
    pub fn reap(&self, settings: &Http1Settings, now: Instant) {
        let mut conns = self.lock();
        conns.retain_mut(|k| {
            if k.sender.is_closed() {
                return false;
            }
            if !k.sender.is_ready() {
                k.idle_since = None;
                return true;
            }
            let since = *k.idle_since.get_or_insert(now);
            now.duration_since(since) < settings.idle_timeout
        });
        let idle = conns.iter().filter(|k| k.idle_since.is_some()).count();
        if idle > settings.max_idle {
            // The list is oldest first: drop the oldest idle ones.
            let mut excess = idle - settings.max_idle;
            conns.retain(|k| {
                if excess > 0 && k.idle_since.is_some() {
                    excess -= 1;
                    return false;
                }
                true
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Http1Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Conns")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn request(path: &str) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("app"));
        req
    }

    /// Reads one request head from `s` and answers it with a keep-alive 200.
    async fn answer(s: &mut TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request arrived");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
    }

    /// hyper hands a request back (`TrySendError::take_message`) when the connection it
    /// was queued on closes before writing it. One thread fixes the order: the upstream
    /// closes the kept connection; the test's own future and the connection's task both
    /// wake in the same pass of the I/O driver, which polls the test's first; it queues the
    /// request on the connection, whose task then reads the end of the stream first.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_the_kept_connection_never_wrote_goes_out_on_a_new_one() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let yaml = format!(
            "upstreams:\n  - name: app\n    endpoints: [\"http://{addr}\"]\nroutes:\n  - upstream: app\n"
        );
        let s = crate::config::load(&yaml, "t.yaml", &crate::config::Env::default()).unwrap();
        let settings = Http1Settings {
            connector: Connector::new(&s.upstreams[0]).unwrap(),
            max_idle: 8,
            idle_timeout: Duration::from_secs(90),
        };
        let conns = Http1Conns::new(&addr.to_string().parse().unwrap(), false);

        let (first, mut kept) = tokio::join!(conns.send(&settings, request("/1")), async {
            let (mut s, _) = l.accept().await.unwrap();
            answer(&mut s).await;
            s
        });
        let body = http_body_util::BodyExt::collect(first.unwrap().into_body());
        assert_eq!(body.await.unwrap().to_bytes(), "ok");
        // The connection's task takes it back to idle.
        while !conns.lock()[0].sender.is_ready() {
            tokio::task::yield_now().await;
        }
        let (mut wake, woken) = tokio::net::UnixStream::pair().unwrap();
        wake.write_all(b"x").await.unwrap();
        kept.shutdown().await.unwrap();
        drop(kept);
        woken.readable().await.unwrap();
        // The new connection's server side, answered on a task of its own so a failed
        // send ends the test instead of leaving it waiting on `accept`.
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            answer(&mut s).await;
            s
        });
        let second = conns.send(&settings, request("/2")).await;
        assert_eq!(second.unwrap().status(), 200, "the request went out again");
        let _open = server.await.unwrap();
        conns.reap(&settings, Instant::now());
        assert_eq!(conns.lock().len(), 1, "the closed connection left the list");
    }
}
