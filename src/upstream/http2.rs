//! An endpoint's HTTP/2 connection (`protocol: http2`, h2c or TLS; `auto` over TLS where
//! the server chose `h2` by ALPN): one hyper `client::conn::http2` connection, shared by
//! every request to the endpoint (HTTP/2 multiplexes them; requests beyond the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` wait in hyper for a stream), replaced when it closes.
//!
//! Why not the engine's pool (as before): per request it hashed the URI's authority to find
//! the host's pool entry and took its lock; here the request loads the endpoint's sender
//! (an atomic load, no lock) and clones it.

#![allow(clippy::disallowed_types)] // The reaper's own state: see `Http2Slot::idle`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use http::Request;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::TokioExecutor;

use super::RequestBody;
use super::connect::Conn;
use super::conns::{ConnSettings, Unsent};
use crate::error::Failure;

/// The endpoint's HTTP/2 connection, when it has one.
pub struct Http2Slot {
    sender: ArcSwapOption<SendRequest<RequestBody>>,
    /// Orders connection attempts while there is no connection, so that the requests
    /// arriving meanwhile share the one that comes up instead of each opening its own (as
    /// the engine's pool did). Only taken on the way to a new connection. Holds how the
    /// last attempt failed, if it did: the requests that waited for it fail the same way
    /// at once, instead of each trying in turn (a blackholed endpoint would otherwise keep
    /// the last of them waiting one `connect_timeout` per request before it).
    pub gate: tokio::sync::Mutex<Option<Failure>>,
    /// Connection attempts finished, for a waiting request to tell whether one ended
    /// while it waited.
    pub attempts: AtomicU64,
    /// Requests sent so far, for `reap` to tell an idle connection.
    sent: AtomicU64,
    /// `reap`'s view: the count it last saw, and since when it has not moved. Only the
    /// upstream's background task takes it.
    idle: Mutex<(u64, Option<Instant>)>,
}

impl Http2Slot {
    pub fn new() -> Self {
        Http2Slot {
            sender: ArcSwapOption::empty(),
            gate: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            idle: Mutex::new((0, None)),
        }
    }

    /// The connection, if it is still open.
    pub fn live(&self) -> Option<SendRequest<RequestBody>> {
        match &*self.sender.load() {
            Some(s) if !s.is_closed() => Some(SendRequest::clone(s)),
            _ => None,
        }
    }

    /// Whether the endpoint has an open connection (without taking a handle to it).
    pub fn is_live(&self) -> bool {
        self.sender.load().as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Starts HTTP/2 over `io`; the connection becomes the endpoint's unless `max_idle` is
    /// 0 (a connection per request, as with HTTP/1.1).
    pub async fn handshake(
        &self,
        settings: &ConnSettings,
        io: Conn,
    ) -> Result<SendRequest<RequestBody>, Failure> {
        let (sender, conn) = Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| Failure::new(&e, true))?;
        tokio::spawn(async move {
            // Its errors reach the requests on it.
            let _ = conn.await;
        });
        if settings.max_idle > 0 {
            self.sender.store(Some(Arc::new(sender.clone())));
        }
        Ok(sender)
    }

    /// Sends `req` on `sender`; hands it back if the connection closed before taking it.
    pub async fn send(
        &self,
        mut sender: SendRequest<RequestBody>,
        mut req: Request<RequestBody>,
    ) -> Unsent {
        super::merge_added(&mut req);
        self.sent.fetch_add(1, Relaxed);
        match sender.try_send_request(req).await {
            Ok(resp) => Unsent::Done(Ok(resp.map(super::UpstreamBody::Engine))),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    self.forget_closed();
                    Unsent::Back(req)
                }
                None => Unsent::Done(Err(Failure::new(&e.into_error(), false))),
            },
        }
    }

    /// Lets go of the connection if it has closed (a new one replaces it).
    fn forget_closed(&self) {
        self.sender.rcu(|s| match s {
            Some(s) if s.is_closed() => None,
            other => other.clone(),
        });
    }

    /// Lets go of the connection once it has closed, or once no request has been sent on it
    /// for `idle_timeout` (requests still streaming on it keep it open until they end).
    /// `now`: the time of this pass.
    pub fn reap(&self, settings: &ConnSettings, now: Instant) {
        self.forget_closed();
        let sent = self.sent.load(Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.0 != sent || self.sender.load().is_none() {
            *idle = (sent, None);
            return;
        }
        let since = *idle.1.get_or_insert(now);
        if now.duration_since(since) >= settings.idle_timeout {
            self.sender.store(None);
            *idle = (sent, None);
        }
    }
}
