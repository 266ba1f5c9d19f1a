//! An endpoint's HTTP/1.1 connections (`protocol: http1`, `auto` over cleartext, and `auto`
//! over TLS where the server chose HTTP/1.1): hyper's own `client::conn::http1`
//! connections, kept in a list on the endpoint ([`super::conns::Conns`] decides which
//! protocol a request takes).
//!
//! Why not the engine's pool: per request it hashes the URI's authority to find the host's
//! pool, takes its lock, and spawns a task to give the connection back once the response has
//! been read. Here a request takes the endpoint's list (no lookup), picks a connection whose
//! previous exchange is over, and queues its request on it; the connection never leaves the
//! list while it works, so nothing has to give it back. Instructions per request
//! (`benches/instructions.sh`): 51.1k -> 46.2k with wrk's head, 63.8k -> 58.6k with a
//! browser's, 43.1k -> 38.2k with tracing off.
//!
//! What the engine's pool did and this keeps: a request queued on a kept connection that
//! closed before the request was written goes out again on a new connection; idle
//! connections are closed after `idle_timeout` and beyond `max_idle_per_endpoint`
//! (`reap`, from the upstream's background task); upgrades (WebSocket) take the connection
//! over. What it leaves out: racing a new connection against one coming free (a request
//! that finds none free connects at once, as Envoy's HTTP/1 pool does).

#![allow(clippy::disallowed_types)] // The list's lock: see `Http1List::conns`.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Builder, SendRequest};

use super::RequestBody;
use super::connect::Conn;
use super::conns::{ConnSettings, Unsent};
use crate::error::Failure;

/// One endpoint's HTTP/1.1 connections, busy and idle.
#[derive(Default)]
pub struct Http1List {
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

impl Http1List {
    /// Sends `req` (origin-form URI) on a connection whose previous exchange is over; hands
    /// it back when there is none, or when the one it was queued on closed before writing
    /// it (the upstream timed it out meanwhile: nothing was sent).
    pub async fn send_kept(&self, req: Request<RequestBody>) -> Unsent {
        match self.on_free(req) {
            Ok(response) => match response.await {
                Ok(resp) => Unsent::Done(Ok(resp)),
                Err(mut e) => match e.take_message() {
                    Some(req) => Unsent::Back(req),
                    None => Unsent::Done(Err(Failure::new(&e.into_error(), false))),
                },
            },
            Err(req) => Unsent::Back(req),
        }
    }

    /// Sends `req` on a new HTTP/1.1 connection over `io`, kept for the next requests
    /// unless `max_idle` is 0.
    pub async fn send_new(
        &self,
        settings: &ConnSettings,
        io: Conn,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, Failure> {
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
    pub fn reap(&self, settings: &ConnSettings, now: Instant) {
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

    /// Each connection: whether it is free.
    #[cfg(test)]
    pub fn ready(&self) -> Vec<bool> {
        self.lock().iter().map(|k| k.sender.is_ready()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
